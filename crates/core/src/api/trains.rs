//! The release-train types of the admin API: the body that starts a train and the view of one.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rollouts::{RolloutView, StartRollout, StepsInput};
use crate::config::{HumanDuration, Upstreams, VersionName};
use crate::rollout::Analysis;

/// Body of `POST /api/v1/trains`: one rollout over several services, with one plan, one salt and
/// one verdict.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartTrain {
    /// Each service's canary; two or more services, each once.
    pub members: Vec<TrainMember>,
    /// The plan every member follows, as in a rollout.
    #[serde(default)]
    pub steps: Option<StepsInput>,
    /// How long each old stable serves its pinned sessions after promotion (default 10m).
    #[serde(default)]
    pub drain: Option<HumanDuration>,
    /// How long a step may stay inconclusive after its hold before the train pauses (default 10m).
    #[serde(default)]
    pub max_step_wait: Option<HumanDuration>,
    /// Judge settings, for every member (team metrics and gates stay each service's own when
    /// not set here).
    #[serde(default)]
    pub analysis: Option<Analysis>,
}

/// One service of a train and its canary.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainMember {
    /// The service.
    pub service: String,
    /// Its canary's version name.
    pub version: VersionName,
    /// Its canary's addresses.
    pub upstreams: Upstreams,
}

impl StartTrain {
    /// The rollout `member` would start on its own with this train's plan and settings.
    pub fn member_request(&self, member: &TrainMember) -> StartRollout {
        StartRollout {
            version: member.version.clone(),
            upstreams: member.upstreams.clone(),
            steps: self.steps.clone(),
            drain: self.drain,
            max_step_wait: self.max_step_wait,
            analysis: self.analysis.clone(),
        }
    }
}

/// A train as the API shows it: its members' rollouts, in the order it was started with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainView {
    /// The train's id.
    pub id: String,
    /// Every member's rollout.
    pub members: Vec<RolloutView>,
}
