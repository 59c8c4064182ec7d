//! The judge's counters and breaker status read from the gateway in this process, for a single
//! machine (`[metrics] source = "local"`).

use std::sync::Arc;

use canary_controller::metrics_source::{BreakerSource, MetricsError, MetricsSource};
use canary_core::metrics::VersionCounts;
use canary_gateway::Gateway;

/// The counters of the gateway in this process.
pub struct LocalMetrics(pub Arc<Gateway>);

#[async_trait::async_trait]
impl MetricsSource for LocalMetrics {
    async fn counts(&self, service: &str, version: &str) -> Result<VersionCounts, MetricsError> {
        Ok(self.0.metrics().counts(service, version).unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl BreakerSource for LocalMetrics {
    async fn tripped(&self, service: &str) -> Result<Option<String>, MetricsError> {
        let service = self.0.service(service).ok_or_else(|| MetricsError::NoService(service.to_owned()))?;
        Ok(if service.canary_open() { None } else { Some(service.trip_reason().unwrap_or_default()) })
    }
}
