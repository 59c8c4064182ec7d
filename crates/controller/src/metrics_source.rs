//! Where the judge's counts and the breakers' state come from: the gateway in this process, or
//! Prometheus for several gateways. Both speak core types, so another source (a vendor's query
//! API) implements the two traits without knowing the gateway.

use std::time::Duration;

use canary_core::cohort::RANGES;
use canary_core::judge::{RangeCounts, VersionCounts as JudgeCounts};
use canary_core::metrics::VersionCounts;

/// Why counters or breaker states could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// The source knows no such service.
    #[error("no service {0:?}")]
    NoService(String),
    /// The source did not answer, or answered with an error; try again next tick.
    #[error("metrics source unavailable: {0}")]
    Unavailable(String),
    /// The source answered something that cannot be read as counters.
    #[error("metrics source answered something unreadable: {0}")]
    Unreadable(String),
}

/// Cumulative counters of one version, as the judge wants them, with its counters per cohort
/// range under the salt `cohort` names (zeros where the gateways have not reported it).
pub fn judge_counts(counts: &VersionCounts, cohort: &str) -> JudgeCounts {
    let moved_away = counts.judge_errors.saturating_sub(counts.server_errors());
    JudgeCounts {
        requests: counts.requests() + moved_away,
        errors: counts.judge_errors,
        new_users: counts.new_sessions,
        latency: counts.latency_buckets,
        ranges: (0..RANGES)
            .map(|r| {
                counts.cohort(cohort).map_or_else(RangeCounts::default, |c| RangeCounts {
                    requests: c.requests[r],
                    errors: c.errors[r],
                    slow: c.slow[r],
                })
            })
            .collect(),
    }
}

/// A source of per-version counters.
#[async_trait::async_trait]
pub trait MetricsSource: Send + Sync {
    /// Cumulative counters of `version` of `service`, summed over every gateway.
    async fn counts(&self, service: &str, version: &str) -> Result<VersionCounts, MetricsError>;

    /// The counters of two versions as of one instant, so that neither is a scrape ahead of
    /// the other; by default, one read after the other.
    async fn counts_together(&self, service: &str, versions: [&str; 2]) -> Result<[VersionCounts; 2], MetricsError> {
        Ok([self.counts(service, versions[0]).await?, self.counts(service, versions[1]).await?])
    }

    /// How long before the moment of reading the counts may describe the gateways: counts read
    /// sooner than this (plus a tick) after the canary weight changed can still hold users the
    /// previous weight split. Zero for a source that reads live counters.
    fn staleness(&self) -> Duration {
        Duration::ZERO
    }
}

/// A source of the gateways' local breaker states.
#[async_trait::async_trait]
pub trait BreakerSource: Send + Sync {
    /// Why the canary's breaker is tripped on some gateway, if it is.
    async fn tripped(&self, service: &str) -> Result<Option<String>, MetricsError>;
}
