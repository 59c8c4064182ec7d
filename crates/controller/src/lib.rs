//! Sticky Canary's control plane: the admin API over a running gateway.

pub mod api;

pub use api::{AppState, router};
