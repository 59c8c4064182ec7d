//! Where the judge's counts come from. The default reads the local gateway's counters.

use std::sync::Arc;

use canary_core::judge::{GroupCounts, VersionCounts as JudgeCounts};
use canary_core::metrics::VersionCounts;
use canary_gateway::Gateway;

/// Cumulative counters of one version, as the judge wants them.
pub fn judge_counts(counts: &VersionCounts) -> JudgeCounts {
    let moved_away = counts.judge_errors.saturating_sub(counts.server_errors());
    JudgeCounts {
        requests: counts.requests() + moved_away,
        errors: counts.judge_errors,
        new_users: counts.new_sessions,
        latency: counts.latency_buckets,
        groups: counts
            .group_errors
            .iter()
            .zip(&counts.group_slow)
            .map(|(&errors, &slow)| GroupCounts { errors, slow })
            .collect(),
    }
}

/// A source of per-version counters.
#[async_trait::async_trait]
pub trait MetricsSource: Send + Sync {
    /// Cumulative counters of `version` of `service`, summed over every gateway.
    async fn counts(&self, service: &str, version: &str) -> Result<VersionCounts, String>;

    /// Why the canary's breaker is tripped on some gateway, if it is.
    async fn breaker_tripped(&self, service: &str) -> Result<Option<String>, String>;
}

/// The counters of the gateway in this process.
pub struct LocalMetrics(pub Arc<Gateway>);

#[async_trait::async_trait]
impl MetricsSource for LocalMetrics {
    async fn counts(&self, service: &str, version: &str) -> Result<VersionCounts, String> {
        Ok(self.0.metrics().counts(service, version).unwrap_or_default())
    }

    async fn breaker_tripped(&self, service: &str) -> Result<Option<String>, String> {
        let service = self.0.service(service).ok_or_else(|| format!("no service {service:?}"))?;
        Ok(if service.canary_open() { None } else { Some(service.trip_reason().unwrap_or_default()) })
    }
}
