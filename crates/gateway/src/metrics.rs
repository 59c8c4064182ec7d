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
//! - `canary_judge_errors_total{service,version}`: what the judge counts as errors: 5xx
//!   responses plus requests re-sent elsewhere because this version took no connection;
//! - `canary_new_sessions_total{service,version}`: sessions that started on this version in the
//!   current rollout (the judge's sample-ratio guard);
//! - `canary_group_errors_total` / `canary_group_slow_total{service,version,group}`: judge errors
//!   and slow requests per user group (`bucket mod 64`), so the judge can see how errors cluster
//!   by user;
//! - `canary_retries_total{service,from_version,to_version}`: requests re-sent to stable because
//!   no canary address took the connection (nothing had been sent), or because the canary
//!   dropped a bodiless idempotent request before answering.

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
            UpstreamErrorKind::ConnectRefused | UpstreamErrorKind::ConnectTimeout | UpstreamErrorKind::ConnectOther
        )
    }
}

/// User groups (`bucket mod USER_GROUPS`) the judge's counters are split into.
pub const USER_GROUPS: usize = 64;

const GROUP_LABELS: [&str; USER_GROUPS] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17", "18", "19", "20",
    "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32", "33", "34", "35", "36", "37", "38", "39",
    "40", "41", "42", "43", "44", "45", "46", "47", "48", "49", "50", "51", "52", "53", "54", "55", "56", "57", "58",
    "59", "60", "61", "62", "63",
];

const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const REASONS: [&str; 3] = ["forced", "pinned", "bucket"];

/// Counters of one version of one service.
#[derive(Debug)]
pub struct VersionStats {
    responses: [AtomicU64; 5],
    upstream_errors: [AtomicU64; 6],
    decisions: [AtomicU64; 3],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS],
    latency_sum_micros: AtomicU64,
    judge_errors: AtomicU64,
    new_sessions: AtomicU64,
    group_errors: [AtomicU64; USER_GROUPS],
    group_slow: [AtomicU64; USER_GROUPS],
}

/// A point-in-time copy of a version's counters, for the judge and the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCounts {
    /// Responses by status class 1xx..5xx.
    pub responses: [u64; 5],
    /// Upstream failures by [`UpstreamErrorKind`] order.
    pub upstream_errors: [u64; 6],
    /// Latency histogram counts (not cumulative), last is `+Inf`.
    pub latency_buckets: [u64; LATENCY_BUCKETS],
    /// Sum of latencies in microseconds.
    pub latency_sum_micros: u64,
    /// 5xx responses plus requests re-sent elsewhere after this version took no connection.
    pub judge_errors: u64,
    /// Sessions that started on this version in the current rollout.
    pub new_sessions: u64,
    /// Judge errors per user group.
    pub group_errors: [u64; USER_GROUPS],
    /// Slow requests per user group.
    pub group_slow: [u64; USER_GROUPS],
}

impl Default for VersionCounts {
    fn default() -> VersionCounts {
        VersionCounts {
            responses: [0; 5],
            upstream_errors: [0; 6],
            latency_buckets: [0; LATENCY_BUCKETS],
            latency_sum_micros: 0,
            judge_errors: 0,
            new_sessions: 0,
            group_errors: [0; USER_GROUPS],
            group_slow: [0; USER_GROUPS],
        }
    }
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

impl Default for VersionStats {
    fn default() -> VersionStats {
        VersionStats {
            responses: Default::default(),
            upstream_errors: Default::default(),
            decisions: Default::default(),
            latency_buckets: Default::default(),
            latency_sum_micros: AtomicU64::new(0),
            judge_errors: AtomicU64::new(0),
            new_sessions: AtomicU64::new(0),
            group_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            group_slow: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// What one finished request tells the judge, besides its status and latency.
#[derive(Debug, Clone, Copy)]
pub struct JudgeFacts {
    /// The user's bucket (its group is `bucket mod USER_GROUPS`).
    pub bucket: u16,
    /// Latency bucket index above which the request is slow, if a rollout set one.
    pub slow_bucket: Option<u8>,
    /// Whether the request started the user's session in this rollout.
    pub new_session: bool,
}

impl VersionStats {
    /// Records one response with its status and time to response head.
    #[inline]
    pub fn record_response(&self, status: u16, micros: u64, judge: JudgeFacts) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
        let latency_bucket = bucket_index(micros);
        self.latency_buckets[latency_bucket].fetch_add(1, Relaxed);
        self.latency_sum_micros.fetch_add(micros, Relaxed);
        let group = usize::from(judge.bucket) % USER_GROUPS;
        if status >= 500 {
            self.judge_errors.fetch_add(1, Relaxed);
            self.group_errors[group].fetch_add(1, Relaxed);
        }
        if judge.slow_bucket.is_some_and(|slow| latency_bucket > usize::from(slow)) {
            self.group_slow[group].fetch_add(1, Relaxed);
        }
        if judge.new_session {
            self.new_sessions.fetch_add(1, Relaxed);
        }
    }

    /// Records a request this version took no connection for, re-sent to another version.
    #[inline]
    pub fn record_moved_away(&self, bucket: u16) {
        self.judge_errors.fetch_add(1, Relaxed);
        self.group_errors[usize::from(bucket) % USER_GROUPS].fetch_add(1, Relaxed);
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
            judge_errors: self.judge_errors.load(Relaxed),
            new_sessions: self.new_sessions.load(Relaxed),
            group_errors: std::array::from_fn(|i| self.group_errors[i].load(Relaxed)),
            group_slow: std::array::from_fn(|i| self.group_slow[i].load(Relaxed)),
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
        map.entry((service.to_owned(), version.to_owned())).or_default().clone()
    }

    /// The counter of retries from one version to another.
    pub fn retries(&self, service: &str, from: &str, to: &str) -> Arc<AtomicU64> {
        let mut map = self.retries.lock().expect("metrics lock");
        map.entry((service.to_owned(), from.to_owned(), to.to_owned())).or_default().clone()
    }

    /// A copy of one version's counters, if it ever existed.
    pub fn counts(&self, service: &str, version: &str) -> Option<VersionCounts> {
        let map = self.versions.lock().expect("metrics lock");
        map.get(&(service.to_owned(), version.to_owned())).map(|s| s.counts())
    }
}

impl Collector for MetricsRegistry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let versions: Vec<_> = {
            let map = self.versions.lock().expect("metrics lock");
            map.iter().map(|((s, v), stats)| (s.clone(), v.clone(), stats.clone())).collect()
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
                    let labels = [("service", service.as_str()), ("version", version.as_str()), ("code_class", class)];
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
                    let labels = [("service", service.as_str()), ("version", version.as_str()), ("kind", kind.label())];
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
                    let labels = [("service", service.as_str()), ("version", version.as_str()), ("reason", reason)];
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
                let counts: Vec<u64> = stats.latency_buckets.iter().map(|b| b.load(Relaxed)).collect();
                // The encoder accumulates the per-bucket counts itself.
                let buckets: Vec<(f64, u64)> = counts
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (LATENCY_BOUNDS_SECONDS.get(i).copied().unwrap_or(f64::INFINITY), *n))
                    .collect();
                let total: u64 = counts.iter().sum();
                let sum = stats.latency_sum_micros.load(Relaxed) as f64 / 1e6;
                let labels = [("service", service.as_str()), ("version", version.as_str())];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, total, &buckets, None)?;
            }
        }
        for (name, help, pick) in [
            (
                "canary_judge_errors",
                "5xx responses plus requests re-sent elsewhere because the version took no connection",
                0,
            ),
            ("canary_new_sessions", "Sessions that started on the version in the current rollout", 1),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (service, version, stats) in &versions {
                let n = if pick == 0 { &stats.judge_errors } else { &stats.new_sessions };
                let labels = [("service", service.as_str()), ("version", version.as_str())];
                ConstCounter::new(n.load(Relaxed)).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, slow) in [
            ("canary_group_errors", "Judge errors per user group (bucket mod 64)", false),
            (
                "canary_group_slow",
                "Requests slower than the rollout's tail threshold, per user group (bucket mod 64)",
                true,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (service, version, stats) in &versions {
                let counters = if slow { &stats.group_slow } else { &stats.group_errors };
                for (group, n) in counters.iter().enumerate() {
                    let group = GROUP_LABELS[group];
                    let labels = [("service", service.as_str()), ("version", version.as_str()), ("group", group)];
                    ConstCounter::new(n.load(Relaxed)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let retries: Vec<_> = {
            let map = self.retries.lock().expect("metrics lock");
            map.iter().map(|(k, v)| (k.clone(), v.load(Relaxed))).collect()
        };
        let mut family = encoder.encode_descriptor(
            "canary_retries",
            "Requests re-sent to stable: no canary address took the connection, or the canary dropped a bodiless GET/HEAD/OPTIONS before answering",
            None,
            MetricType::Counter,
        )?;
        for ((service, from, to), n) in &retries {
            let labels = [("service", service.as_str()), ("from_version", from.as_str()), ("to_version", to.as_str())];
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
        let facts = JudgeFacts { bucket: 65, slow_bucket: Some(0), new_session: true };
        v2.record_response(200, 400, facts);
        v2.record_response(503, 2_000, facts);
        v2.record_upstream_error(UpstreamErrorKind::ConnectRefused);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(metrics.clone()));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(text.contains(r#"canary_requests_total{service="web",version="v2",code_class="2xx"} 1"#), "{text}");
        assert!(text.contains(r#"canary_requests_total{service="web",version="v2",code_class="5xx"} 1"#));
        assert!(text.contains(r#"canary_upstream_errors_total{service="web",version="v2",kind="connect_refused"} 1"#));
        assert!(text.contains(r#"canary_request_duration_seconds_bucket{service="web",version="v2",le="0.0005"} 1"#));
        assert!(
            text.contains(r#"canary_request_duration_seconds_bucket{service="web",version="v2",le="+Inf"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"canary_request_duration_seconds_count{service="web",version="v2"} 2"#));
    }
}
