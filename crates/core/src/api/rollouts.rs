//! The rollout types of the admin API: the body that starts a rollout, the view of a rollout
//! with the judge's latest look, and the changes pushed to live views. The server serializes
//! them and the CLI reads them back as the same types.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::unix_ms;
use crate::config::{HumanDuration, Upstreams, VersionName};
use crate::judge::{MetricVerdict, StepDecision};
use crate::rollout::{Analysis, Event, Rollout, Step};

/// Body of `POST /api/v1/services/{name}/rollouts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartRollout {
    /// The canary's version name.
    pub version: VersionName,
    /// The canary's addresses.
    pub upstreams: Upstreams,
    /// The plan, as a list or as text like `"1%/30s,5%/1m,100%"`; default `1%/30s → 5%/1m →
    /// 25%/2m → 50%/2m → 100%`.
    #[serde(default)]
    pub steps: Option<StepsInput>,
    /// How long the old stable serves its pinned sessions after promotion (default 10m).
    #[serde(default)]
    pub drain: Option<HumanDuration>,
    /// How long a step may stay inconclusive after its hold before pausing (default 10m).
    #[serde(default)]
    pub max_step_wait: Option<HumanDuration>,
    /// Judge settings.
    #[serde(default)]
    pub analysis: Option<Analysis>,
}

/// Steps as a list or as text.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StepsInput {
    /// `"1%/30s,5%/1m,100%"`.
    Text(String),
    /// `[{"weight": 1, "hold": "30s"}, …]`.
    List(Vec<Step>),
}

/// A rollout as the API shows it: the record plus what the judge sees now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// The durable record.
    #[serde(flatten)]
    pub rollout: Rollout,
    /// Canary weight now, in percent.
    pub weight: f64,
    /// Hold time spent in the current step.
    pub held_seconds: f64,
    /// Hold time the current step needs.
    pub hold_seconds: f64,
    /// The judge's latest view, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeView>,
    /// The release gates of the current step, while the rollout is not over ([`crate::gate`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<crate::gate::GateView>,
}

/// What the judge says at the latest tick.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JudgeView {
    /// The step decision.
    pub decision: StepDecision,
    /// One verdict per metric.
    pub verdicts: Vec<MetricVerdict>,
    /// Share of the rollout's requests the canary served, in percent.
    pub observed_canary_share: Option<f64>,
    /// The latency that counts as slow (from stable's p99 before the rollout), in seconds.
    pub tail_threshold_seconds: f64,
    /// Whether the error test compares the canary's users with their own history before the
    /// rollout (the cohort baseline), so its estimate is the adjusted ratio.
    #[serde(default)]
    pub cohort_baseline: bool,
    /// Unix ms of the tick.
    pub at_ms: u64,
}

/// What an [`Update`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UpdateKind {
    /// A transition of the rollout.
    Rollout,
    /// The judge looked again.
    Tick,
    /// The service's routing changed by hand.
    Routing,
}

/// A change pushed to live views (dashboard, `status --watch`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Update {
    /// What it is about.
    pub kind: UpdateKind,
    /// The service.
    pub service: String,
    /// The rollout's view, for `rollout` and `tick`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
    /// The event, for `rollout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
}

impl RolloutView {
    /// The view of `rollout` now, with the judge's latest look while it is not over.
    pub fn new(rollout: Rollout, judge: Option<JudgeView>) -> RolloutView {
        let now = unix_ms();
        let hold = rollout.steps.get(rollout.step).map_or(0.0, |s| s.hold.0.as_secs_f64());
        RolloutView {
            weight: rollout.weight().percent(),
            held_seconds: rollout.held_ms(now) as f64 / 1000.0,
            hold_seconds: hold,
            judge: if rollout.phase.is_terminal() { None } else { judge },
            gates: Vec::new(),
            rollout,
        }
    }
}
