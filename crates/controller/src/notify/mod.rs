//! Delivering notifications: one background task per `[[notify]]` sink follows the store's
//! event log and posts each event it wants, while this controller leads.
//!
//! Why it looks like this:
//! - **Never in the way of a rollback.** Transitions commit their event and go on; the sinks
//!   read the log afterwards, on their own tasks, so a slow or dead receiver delays nothing.
//! - **Nothing lost to a restart.** Each sink keeps a cursor in the store (the last event it is
//!   done with, by commit revision). A new leader, or this one after a restart, lists the log,
//!   sends what comes after the cursor (up to the sink's `replay` window back) and then
//!   watches for new events.
//! - **Only the leader sends**, so several controllers do not each post every event; a
//!   leader that loses its lease stops before its next attempt. Delivery is at least once: an
//!   event whose cursor was not saved is sent again, with the same `id`.
//! - **Retries with back-off** ([`canary_core::notify::Backoff`]) on silence, `5xx`, `408` and
//!   `429`; other answers, and the last failed attempt, count as failed and move on.

mod metrics;
mod send;
mod sink;

use std::sync::Arc;

use canary_core::notify::SinkConfig;

pub use metrics::NotifyMetrics;

use crate::Controller;

/// Starts one delivery task per sink; they run until aborted.
pub fn spawn(
    controller: &Arc<Controller>,
    sinks: &[SinkConfig],
    metrics: &NotifyMetrics,
) -> Vec<tokio::task::JoinHandle<()>> {
    sinks
        .iter()
        .map(|config| {
            let sink = sink::Sink::new(config.clone(), controller.clone(), metrics.clone());
            tokio::spawn(sink.run())
        })
        .collect()
}
