//! Types of the admin API, shared by the server and the CLI.
//!
//! Every response, success or error, is one [`Envelope`]:
//! `{"code", "clientMessage", "systemMessage", "data"}`.

mod rollouts;
mod trains;

pub use rollouts::{JudgeView, RolloutView, StartRollout, StepsInput, Update, UpdateKind};
pub use trains::{StartTrain, TrainMember, TrainView};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::{Upstreams, VersionName};
use crate::weight::Weight;

/// The outcome class of an API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    /// It worked.
    Ok,
    /// The request was malformed or a value was out of range.
    InvalidArgument,
    /// The named service or rollout does not exist.
    NotFound,
    /// The service already has an active rollout.
    RolloutInProgress,
    /// The state does not allow this action now.
    FailedPrecondition,
    /// No or a wrong bearer token.
    Unauthenticated,
    /// The caller may not do this: a read token asked for a change, or a page of another site
    /// sent the request.
    PermissionDenied,
    /// The request named a host this admin listener does not answer to (DNS rebinding).
    MisdirectedRequest,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// Something broke inside.
    Internal,
    /// A dependency (the store) is unavailable.
    Unavailable,
}

impl Code {
    /// The HTTP status that goes with the code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Ok => 200,
            Code::InvalidArgument => 400,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::NotFound => 404,
            Code::MethodNotAllowed => 405,
            Code::RolloutInProgress | Code::FailedPrecondition => 409,
            Code::UnsupportedMediaType => 415,
            Code::MisdirectedRequest => 421,
            Code::Internal => 500,
            Code::Unavailable => 503,
        }
    }
}

/// The one response shape of the admin API.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    /// Machine-readable outcome.
    pub code: Code,
    /// Short text fit to show a person.
    pub client_message: String,
    /// Detail for logs and operators.
    pub system_message: String,
    /// The payload, `null` on errors.
    #[schema(required = true)]
    pub data: Option<T>,
}

/// Body of `PUT /api/v1/services/{name}/weight`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetWeight {
    /// Percent of users on the canary.
    pub weight: Weight,
}

/// Body of `PUT /api/v1/services/{name}/canary`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCanary {
    /// The canary's version name.
    pub version: VersionName,
    /// Its addresses.
    pub upstreams: Upstreams,
    /// Optional starting weight (default: keep the current weight, or 0 for a new canary).
    #[serde(default)]
    pub weight: Option<Weight>,
}

/// One version as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VersionView {
    /// Version name.
    pub version: String,
    /// Its addresses.
    pub upstreams: Vec<String>,
}

/// A service's current routing, as `GET /api/v1/services/{name}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    /// Service name.
    pub name: String,
    /// Address the gateway listens on.
    pub listen: String,
    /// The rollout id pins name.
    pub rollout_id: String,
    /// The stable version.
    pub stable: VersionView,
    /// The canary, if any.
    pub canary: Option<VersionView>,
    /// Percent of users on the canary.
    pub weight: f64,
    /// Whether the local breaker currently keeps traffic off the canary.
    pub canary_tripped: bool,
    /// Why the breaker tripped, while it is tripped.
    pub trip_reason: Option<String>,
    /// The previous stable, while it still serves pinned sessions.
    pub draining: Option<String>,
    /// The canary last rolled back, while the pages it served may still load from it
    /// (`rollback_grace`).
    #[serde(default)]
    pub retired: Option<String>,
    /// Bumped on every routing change.
    pub generation: u64,
}
