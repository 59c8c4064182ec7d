//! `canary_notify_*_total{sink}`: what each sink delivered, gave up on, retried and skipped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

/// The sinks' counters.
#[derive(Debug, Clone, Default)]
pub struct NotifyMetrics {
    delivered: Family<SinkLabel, Counter>,
    failed: Family<SinkLabel, Counter>,
    retries: Family<SinkLabel, Counter>,
    skipped: Family<SinkLabel, Counter>,
}

/// One of the counters.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outcome {
    Delivered,
    Failed,
    Retry,
    Skipped,
}

impl NotifyMetrics {
    /// Adds the counters to `/metrics`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("canary_notify_delivered", "Events a notification sink accepted", self.delivered.clone());
        registry.register(
            "canary_notify_failed",
            "Events a notification sink refused, or that failed their last attempt",
            self.failed.clone(),
        );
        registry.register("canary_notify_retries", "Attempts repeated after a failure, per sink", self.retries.clone());
        registry.register(
            "canary_notify_skipped",
            "Events older than the sink's replay window when it caught up, not sent",
            self.skipped.clone(),
        );
    }

    /// Shows every counter of `sink` at 0 before anything happened, so a dashboard sees it.
    pub(super) fn announce(&self, sink: &str) {
        for outcome in [Outcome::Delivered, Outcome::Failed, Outcome::Retry, Outcome::Skipped] {
            let _created = self.family(outcome).get_or_create(&SinkLabel { sink: sink.to_owned() });
        }
    }

    pub(super) fn count(&self, sink: &str, outcome: Outcome) {
        self.family(outcome).get_or_create(&SinkLabel { sink: sink.to_owned() }).inc();
    }

    fn family(&self, outcome: Outcome) -> &Family<SinkLabel, Counter> {
        match outcome {
            Outcome::Delivered => &self.delivered,
            Outcome::Failed => &self.failed,
            Outcome::Retry => &self.retries,
            Outcome::Skipped => &self.skipped,
        }
    }
}
