//! Sticky Canary's control plane: the rollout controller, the routing it keeps in the store,
//! and the admin API over both.

pub mod api;
pub mod dashboard;
pub mod error;
pub mod gates;
pub mod metrics_source;
pub mod notify;
pub mod prometheus;
pub mod rollouts;
pub mod routing;
pub mod service_views;
pub mod team_metrics;

pub use api::{AppState, router};
pub use error::ControllerError;
pub use rollouts::{Controller, ControllerSettings};
pub use routing::Routing;
