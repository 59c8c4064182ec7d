//! Per-service state a scrape should see besides the request counters: whether the local
//! breaker holds the canary off, and which routing the gateway serves. Controllers reading
//! Prometheus learn about a tripped breaker on any gateway from `canary_breaker_open`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::service::Service;

/// Encodes the services' routing state at scrape time.
#[derive(Debug)]
pub struct ServiceStatus(pub Vec<Arc<Service>>);

impl Collector for ServiceStatus {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "canary_breaker_open",
                "1 while this gateway's local breaker keeps traffic off the service's canary",
                None,
                MetricType::Gauge,
            )?;
            for s in &self.0 {
                let open = i64::from(!s.canary_open() && s.route().canary.is_some());
                ConstGauge::new(open).encode(family.encode_family(&[("service", s.name())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "canary_routing_generation",
                "Generation of the routing this gateway serves (rises with every change)",
                None,
                MetricType::Gauge,
            )?;
            for s in &self.0 {
                let generation = s.route().spec.generation as i64;
                ConstGauge::new(generation).encode(family.encode_family(&[("service", s.name())])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "canary_weight_percent",
            "Share of users this gateway sends to the canary",
            None,
            MetricType::Gauge,
        )?;
        for s in &self.0 {
            let weight = s.route().spec.weight.percent();
            ConstGauge::new(weight).encode(family.encode_family(&[("service", s.name())])?)?;
        }
        Ok(())
    }
}
