//! Errors of the control plane, mapped to the API envelope in one place (`api::envelope`).

use canary_core::RouteError;
use canary_core::rollout::TransitionError;
use canary_store::StoreError;

/// Why a control-plane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// No such service.
    #[error("service {0:?} is not configured")]
    NoService(String),
    /// The service has an active rollout.
    #[error("service {service:?} already has an active rollout ({rollout})")]
    RolloutInProgress {
        /// The service.
        service: String,
        /// The active rollout's id.
        rollout: String,
    },
    /// The service has no active rollout.
    #[error("service {0:?} has no active rollout")]
    NoActiveRollout(String),
    /// No service has a rollout of this release train.
    #[error("no release train {0:?}")]
    NoTrain(String),
    /// The command does not fit the rollout's phase.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The request breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// A routing change was refused.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A record in the store cannot be read or makes no sense: the server's fault, never the
    /// caller's.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Another controller changed the same record too many times in a row.
    #[error("gave up after repeated conflicting writes to {0}")]
    Contended(String),
    /// This controller is not the leader.
    #[error("this controller is not the leader; send the request to the leader")]
    NotLeader,
}
