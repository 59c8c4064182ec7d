//! Per-service, per-version request metrics, kept in plain atomics.
//!
//! The hot path only increments relaxed atomics that the routing snapshot already points at:
//! no label lookup, no lock, no allocation. A [`Collector`] turns them into the Prometheus
//! text format at scrape time. Counters never reset, so the judge and Prometheus can both take
//! differences.
//!
//! Names:
//! - `canary_requests_total{service,version,code_class}`: responses sent, by status class;
//!   gateway-made 502/504 count against the version that failed;
//! - `canary_upstream_errors_total{service,version,kind}`: failed upstream exchanges, `kind` one
//!   of [`UpstreamErrorKind`];
//! - `canary_request_duration_seconds{service,version}`: time to the response head, a histogram
//!   with the fixed bounds of `canary_core::latency`;
//! - `canary_routing_decisions_total{service,version,reason}`: why requests went where they went;
//! - `canary_retries_total{service,from_version,to_version}`: requests re-sent to stable because
//!   no canary address took the connection, so nothing had been sent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use canary_core::Reason;
use canary_core::latency::{LATENCY_BOUNDS_SECONDS, LATENCY_BUCKETS, bucket_index};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

/// Why an exchange with an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The upstream refused the connection.
    ConnectRefused,
    /// Connecting took longer than `connect_timeout`.
    ConnectTimeout,
    /// Connecting failed otherwise (unreachable, DNS).
    ConnectOther,
    /// No response head within `request_timeout`.
    Timeout,
    /// The connection was reset or closed mid-exchange.
    Reset,
    /// Any other protocol failure.
    Protocol,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 6] = [
        UpstreamErrorKind::ConnectRefused,
        UpstreamErrorKind::ConnectTimeout,
        UpstreamErrorKind::ConnectOther,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Protocol,
    ];

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamErrorKind::ConnectRefused => "connect_refused",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::ConnectOther => "connect_other",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Protocol => "protocol",
        }
    }

    /// Whether the request never reached the upstream, so re-sending it elsewhere is safe.
    pub fn before_request_sent(self) -> bool {
        matches!(
            self,
            UpstreamErrorKind::ConnectRefused
                | UpstreamErrorKind::ConnectTimeout
                | UpstreamErrorKind::ConnectOther
        )
    }
}

const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const REASONS: [&str; 3] = ["forced", "pinned", "bucket"];

/// Counters of one version of one service.
#[derive(Debug, Default)]
pub struct VersionStats {
    responses: [AtomicU64; 5],
    upstream_errors: [AtomicU64; 6],
    decisions: [AtomicU64; 3],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS],
    latency_sum_micros: AtomicU64,
}

/// A point-in-time copy of a version's counters, for the judge and the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionCounts {
    /// Responses by status class 1xx..5xx.
    pub responses: [u64; 5],
    /// Upstream failures by [`UpstreamErrorKind`] order.
    pub upstream_errors: [u64; 6],
    /// Latency histogram counts (not cumulative), last is `+Inf`.
    pub latency_buckets: [u64; LATENCY_BUCKETS],
    /// Sum of latencies in microseconds.
    pub latency_sum_micros: u64,
}

impl VersionCounts {
    /// All responses sent.
    pub fn requests(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// 5xx responses (gateway-made ones included).
    pub fn server_errors(&self) -> u64 {
        self.responses[4]
    }
}

impl VersionStats {
    /// Records one response with its status and time to response head.
    #[inline]
    pub fn record_response(&self, status: u16, micros: u64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
        self.latency_buckets[bucket_index(micros)].fetch_add(1, Relaxed);
        self.latency_sum_micros.fetch_add(micros, Relaxed);
    }

    /// Records a failed upstream exchange.
    #[inline]
    pub fn record_upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// Records why a request went to this version.
    #[inline]
    pub fn record_decision(&self, reason: Reason) {
        let i = match reason {
            Reason::Forced => 0,
            Reason::Pinned => 1,
            Reason::Bucket => 2,
        };
        self.decisions[i].fetch_add(1, Relaxed);
    }

    /// A copy of the counters.
    pub fn counts(&self) -> VersionCounts {
        VersionCounts {
            responses: std::array::from_fn(|i| self.responses[i].load(Relaxed)),
            upstream_errors: std::array::from_fn(|i| self.upstream_errors[i].load(Relaxed)),
            latency_buckets: std::array::from_fn(|i| self.latency_buckets[i].load(Relaxed)),
            latency_sum_micros: self.latency_sum_micros.load(Relaxed),
        }
    }
}

type RetryKey = (String, String, String);

/// Every version's counters, created on first use and kept for the process's life.
#[derive(Debug, Default)]
pub struct MetricsRegistry {
    versions: Mutex<BTreeMap<(String, String), Arc<VersionStats>>>,
    retries: Mutex<BTreeMap<RetryKey, Arc<AtomicU64>>>,
}

impl MetricsRegistry {
    /// The counters of `version` of `service`.
    pub fn version(&self, service: &str, version: &str) -> Arc<VersionStats> {
        let mut map = self.versions.lock().expect("metrics lock");
        map.entry((service.to_owned(), version.to_owned()))
            .or_default()
            .clone()
    }

    /// The counter of retries from one version to another.
    pub fn retries(&self, service: &str, from: &str, to: &str) -> Arc<AtomicU64> {
        let mut map = self.retries.lock().expect("metrics lock");
        map.entry((service.to_owned(), from.to_owned(), to.to_owned()))
            .or_default()
            .clone()
    }

    /// A copy of one version's counters, if it ever existed.
    pub fn counts(&self, service: &str, version: &str) -> Option<VersionCounts> {
        let map = self.versions.lock().expect("metrics lock");
        map.get(&(service.to_owned(), version.to_owned()))
            .map(|s| s.counts())
    }
}

impl Collector for MetricsRegistry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let versions: Vec<_> = {
            let map = self.versions.lock().expect("metrics lock");
            map.iter()
                .map(|((s, v), stats)| (s.clone(), v.clone(), stats.clone()))
                .collect()
        };
        {
            let mut family = encoder.encode_descriptor(
                "canary_requests",
                "Responses sent to clients, by service, version and status class",
                None,
                MetricType::Counter,
            )?;
            for (service, version, stats) in &versions {
                for (class, n) in CODE_CLASSES.iter().zip(&stats.responses) {
                    let labels = [
                        ("service", service.as_str()),
                        ("version", version.as_str()),
                        ("code_class", class),
                    ];
                    ConstCounter::new(n.load(Relaxed)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "canary_upstream_errors",
                "Failed upstream exchanges, by service, version and kind",
                None,
                MetricType::Counter,
            )?;
            for (service, version, stats) in &versions {
                for kind in UpstreamErrorKind::ALL {
                    let n = stats.upstream_errors[kind as usize].load(Relaxed);
                    let labels = [
                        ("service", service.as_str()),
                        ("version", version.as_str()),
                        ("kind", kind.label()),
                    ];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "canary_routing_decisions",
                "Requests routed, by service, version and what decided (forced, pinned, bucket)",
                None,
                MetricType::Counter,
            )?;
            for (service, version, stats) in &versions {
                for (reason, n) in REASONS.iter().zip(&stats.decisions) {
                    let labels = [
                        ("service", service.as_str()),
                        ("version", version.as_str()),
                        ("reason", reason),
                    ];
                    ConstCounter::new(n.load(Relaxed)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "canary_request_duration_seconds",
                "Time from receiving a request to sending its response head",
                None,
                MetricType::Histogram,
            )?;
            for (service, version, stats) in &versions {
                let counts: Vec<u64> = stats
                    .latency_buckets
                    .iter()
                    .map(|b| b.load(Relaxed))
                    .collect();
                let mut cumulative = 0;
                let mut buckets = Vec::with_capacity(LATENCY_BUCKETS);
                for (i, n) in counts.iter().enumerate() {
                    cumulative += n;
                    let bound = LATENCY_BOUNDS_SECONDS
                        .get(i)
                        .copied()
                        .unwrap_or(f64::INFINITY);
                    buckets.push((bound, cumulative));
                }
                let sum = stats.latency_sum_micros.load(Relaxed) as f64 / 1e6;
                let labels = [("service", service.as_str()), ("version", version.as_str())];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum, cumulative, &buckets, None,
                    )?;
            }
        }
        let retries: Vec<_> = {
            let map = self.retries.lock().expect("metrics lock");
            map.iter()
                .map(|(k, v)| (k.clone(), v.load(Relaxed)))
                .collect()
        };
        let mut family = encoder.encode_descriptor(
            "canary_retries",
            "Requests re-sent to stable because no canary address took the connection (nothing had been sent)",
            None,
            MetricType::Counter,
        )?;
        for ((service, from, to), n) in &retries {
            let labels = [
                ("service", service.as_str()),
                ("from_version", from.as_str()),
                ("to_version", to.as_str()),
            ];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn scrape_shows_counts_and_cumulative_buckets() {
        let metrics = Arc::new(MetricsRegistry::default());
        let v2 = metrics.version("web", "v2");
        v2.record_response(200, 400);
        v2.record_response(503, 2_000);
        v2.record_upstream_error(UpstreamErrorKind::ConnectRefused);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(metrics.clone()));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"canary_requests_total{service="web",version="v2",code_class="2xx"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"canary_requests_total{service="web",version="v2",code_class="5xx"} 1"#
            )
        );
        assert!(text.contains(
            r#"canary_upstream_errors_total{service="web",version="v2",kind="connect_refused"} 1"#
        ));
        assert!(text.contains(
            r#"canary_request_duration_seconds_bucket{service="web",version="v2",le="0.0005"} 1"#
        ));
        assert!(text.contains(
            r#"canary_request_duration_seconds_bucket{service="web",version="v2",le="+Inf"} 2"#
        ));
        assert!(
            text.contains(r#"canary_request_duration_seconds_count{service="web",version="v2"} 2"#)
        );
    }
}
