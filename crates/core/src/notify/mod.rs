//! Notifications: every rollout event sent to webhooks (one signed JSON object per event) and
//! to chat (a Slack incoming-webhook message), in the background.
//!
//! The parts here are pure: the `[[notify]]` configuration ([`config`]), the names events go
//! by and a sink's filter ([`events`]), what a sink is sent ([`payload`]), and the rules of
//! delivery: retries, back-off and the delivered cursor ([`delivery`]). The controller follows
//! the store's event log and sends; a rollout's transition never waits for a delivery.

pub mod config;
pub mod delivery;
pub mod events;
pub mod payload;

pub use config::{SinkConfig, SinkKind, check_sinks};
pub use delivery::{Attempt, Backoff, Cursor};
pub use events::{EVENT_NAMES, EventFilter, EventName};
pub use payload::Notification;
