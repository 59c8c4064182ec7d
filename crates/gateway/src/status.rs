//! Per-service state a scrape should see besides the request counters: whether the local
//! breaker holds the canary off, and which routing the gateway serves. Controllers reading
//! Prometheus learn about a tripped breaker on any gateway from `canary_breaker_open`.

use std::sync::Arc;

use canary_core::metrics::{BREAKER_OPEN, ROUTING_GENERATION, WEIGHT_PERCENT};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::gauge::ConstGauge;

use crate::metrics::encode_family;
use crate::service::Service;

/// Encodes the services' routing state at scrape time.
#[derive(Debug)]
pub struct ServiceStatus(pub Vec<Arc<Service>>);

fn gauge<V>(encoder: MetricEncoder<'_>, value: V) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: EncodeMetric,
{
    ConstGauge::new(value).encode(encoder)
}

impl Collector for ServiceStatus {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let services = &self.0;
        let breaker = services.iter().map(|s| ([s.name()], i64::from(!s.canary_open() && s.route().canary.is_some())));
        encode_family(&mut encoder, &BREAKER_OPEN, breaker, gauge)?;
        let generation = services.iter().map(|s| ([s.name()], s.route().spec.generation as i64));
        encode_family(&mut encoder, &ROUTING_GENERATION, generation, gauge)?;
        let weight = services.iter().map(|s| ([s.name()], s.route().spec.weight.percent()));
        encode_family(&mut encoder, &WEIGHT_PERCENT, weight, gauge)
    }
}
