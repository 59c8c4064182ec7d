//! Per-service, per-version request metrics, kept in plain atomics.
//!
//! The hot path only increments relaxed atomics that the routing snapshot already points at:
//! no label lookup, no lock, no allocation. A [`Collector`] turns them into the Prometheus
//! text format at scrape time, with the names, labels and label values of the contract in
//! [`canary_core::metrics`], which the controller reads them back with. Counters never reset,
//! so the judge and Prometheus can both take differences.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use canary_core::Reason;
use canary_core::cohort::{RANGES, range_label, range_of};
use canary_core::latency::{LATENCY_BOUNDS_SECONDS, LATENCY_BUCKETS, bucket_index};
use canary_core::metrics::{
    self as contract, CODE_CLASSES, CohortCounts, Family, MetricKind, UpstreamErrorKind, VersionCounts, code_class,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

/// Counters of one version of one service.
#[derive(Debug)]
pub struct VersionStats {
    responses: [AtomicU64; CODE_CLASSES.len()],
    upstream_errors: [AtomicU64; UpstreamErrorKind::ALL.len()],
    decisions: [AtomicU64; Reason::ALL.len()],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS],
    latency_sum_micros: AtomicU64,
    judge_errors: AtomicU64,
    new_sessions: AtomicU64,
    connections: [AtomicU64; contract::CONNECTION_USES.len()],
    /// The key hash of the user behind the latest error, and how often it changed: the
    /// breaker's evidence that failures come from more than one user.
    last_failing_user: AtomicU64,
    failing_user_changes: AtomicU64,
}

/// One version's counters per cohort range, under one salt: a routing snapshot points at the
/// set of its salt, so a new salt starts new counters and the old ones stop moving.
#[derive(Debug)]
pub struct RangeStats {
    cohort: String,
    requests: [AtomicU64; RANGES],
    errors: [AtomicU64; RANGES],
    slow: [AtomicU64; RANGES],
}

impl RangeStats {
    fn new(cohort: &str) -> RangeStats {
        RangeStats {
            cohort: cohort.to_owned(),
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            slow: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The cohort id these counters belong to.
    pub fn cohort(&self) -> &str {
        &self.cohort
    }

    /// Records one request of the user in `bucket`.
    #[inline]
    pub fn record(&self, bucket: u16, error: bool, slow: bool) {
        let range = range_of(bucket);
        self.requests[range].fetch_add(1, Relaxed);
        if error {
            self.errors[range].fetch_add(1, Relaxed);
        }
        if slow {
            self.slow[range].fetch_add(1, Relaxed);
        }
    }

    /// A copy of the counters.
    pub fn counts(&self) -> CohortCounts {
        let load = |counters: &[AtomicU64; RANGES]| std::array::from_fn(|i| counters[i].load(Relaxed));
        CohortCounts {
            cohort: self.cohort.clone(),
            requests: load(&self.requests),
            errors: load(&self.errors),
            slow: load(&self.slow),
        }
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
            connections: Default::default(),
            last_failing_user: AtomicU64::new(0),
            failing_user_changes: AtomicU64::new(0),
        }
    }
}

/// What one finished request tells the judge, besides its status and latency.
#[derive(Debug, Clone, Copy)]
pub struct JudgeFacts {
    /// The user's bucket (its cohort range is `bucket / 100`).
    pub bucket: u16,
    /// The hash of the user's key: the breaker counts whose failures it sees.
    pub key_hash: u64,
    /// Latency bucket index above which the request is slow, if a rollout set one.
    pub slow_bucket: Option<u8>,
}

/// The upstream failures one request met on one version, counted while it runs and added to
/// the version's counters when it is recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamErrorTally([u16; UpstreamErrorKind::ALL.len()]);

impl UpstreamErrorTally {
    /// Notes one failure.
    #[inline]
    pub fn note(&mut self, kind: UpstreamErrorKind) {
        let n = &mut self.0[kind.index()];
        *n = n.saturating_add(1);
    }
}

impl VersionStats {
    /// Records one response with its status and time to response head, here and in the
    /// version's counters per cohort range.
    #[inline]
    pub fn record_response(&self, ranges: &RangeStats, status: u16, micros: u64, judge: JudgeFacts) {
        self.responses[code_class(status)].fetch_add(1, Relaxed);
        let latency_bucket = bucket_index(micros);
        self.latency_buckets[latency_bucket].fetch_add(1, Relaxed);
        self.latency_sum_micros.fetch_add(micros, Relaxed);
        let error = status >= 500;
        if error {
            self.judge_errors.fetch_add(1, Relaxed);
            self.note_failing_user(judge.key_hash);
        }
        let slow = judge.slow_bucket.is_some_and(|slow| latency_bucket > usize::from(slow));
        ranges.record(judge.bucket, error, slow);
    }

    /// Records a user's first assignment to this version by the bucket rule in this rollout.
    #[inline]
    pub fn record_new_session(&self) {
        self.new_sessions.fetch_add(1, Relaxed);
    }

    /// Records a request this version lost to another: the judge counts it as this
    /// version's request and error.
    #[inline]
    pub fn record_moved_away(&self, ranges: &RangeStats, judge: JudgeFacts) {
        self.judge_errors.fetch_add(1, Relaxed);
        self.note_failing_user(judge.key_hash);
        ranges.record(judge.bucket, true, false);
    }

    /// Notes that a request of the user with `key_hash` failed on this version.
    #[inline]
    fn note_failing_user(&self, key_hash: u64) {
        if self.last_failing_user.swap(key_hash, Relaxed) != key_hash {
            self.failing_user_changes.fetch_add(1, Relaxed);
        }
    }

    /// How often the user behind this version's latest error changed. Two changes within a
    /// window mean failures of at least two users in it.
    pub fn failing_user_changes(&self) -> u64 {
        self.failing_user_changes.load(Relaxed)
    }

    /// Records the upstream failures of one request.
    #[inline]
    pub fn record_upstream_errors(&self, tally: &UpstreamErrorTally) {
        for (counter, n) in self.upstream_errors.iter().zip(tally.0) {
            if n != 0 {
                counter.fetch_add(u64::from(n), Relaxed);
            }
        }
    }

    /// Records an upstream exchange over a pooled (`reused`) or a new connection.
    #[inline]
    pub fn record_connection(&self, reused: bool) {
        self.connections[usize::from(!reused)].fetch_add(1, Relaxed);
    }

    /// Records why a request went to this version.
    #[inline]
    pub fn record_decision(&self, reason: Reason) {
        self.decisions[reason.index()].fetch_add(1, Relaxed);
    }

    /// A copy of the counters.
    pub fn counts(&self) -> VersionCounts {
        let load = |counters: &[AtomicU64], i: usize| counters[i].load(Relaxed);
        VersionCounts {
            responses: std::array::from_fn(|i| load(&self.responses, i)),
            upstream_errors: std::array::from_fn(|i| load(&self.upstream_errors, i)),
            latency_buckets: std::array::from_fn(|i| load(&self.latency_buckets, i)),
            latency_sum_micros: self.latency_sum_micros.load(Relaxed),
            judge_errors: self.judge_errors.load(Relaxed),
            new_sessions: self.new_sessions.load(Relaxed),
            cohorts: Vec::new(),
        }
    }
}

type RetryKey = (String, String, String);

/// Every version's counters, created on first use and kept for the process's life.
#[derive(Debug, Default)]
pub struct MetricsRegistry {
    versions: Mutex<BTreeMap<(String, String), Arc<VersionStats>>>,
    /// Each version's counters per cohort range under its current salt.
    ranges: Mutex<BTreeMap<(String, String), Arc<RangeStats>>>,
    retries: Mutex<BTreeMap<RetryKey, Arc<AtomicU64>>>,
}

impl MetricsRegistry {
    /// The counters of `version` of `service`.
    pub fn version(&self, service: &str, version: &str) -> Arc<VersionStats> {
        let mut map = self.versions.lock().expect("metrics lock");
        map.entry((service.to_owned(), version.to_owned())).or_default().clone()
    }

    /// The counters per cohort range of `version` of `service` under the salt `cohort` names:
    /// the current set if its salt is the same, else a new one that replaces it.
    pub fn ranges(&self, service: &str, version: &str, cohort: &str) -> Arc<RangeStats> {
        let mut map = self.ranges.lock().expect("metrics lock");
        let entry =
            map.entry((service.to_owned(), version.to_owned())).or_insert_with(|| Arc::new(RangeStats::new(cohort)));
        if entry.cohort != cohort {
            *entry = Arc::new(RangeStats::new(cohort));
        }
        entry.clone()
    }

    /// The counter of retries from one version to another.
    pub fn retries(&self, service: &str, from: &str, to: &str) -> Arc<AtomicU64> {
        let mut map = self.retries.lock().expect("metrics lock");
        map.entry((service.to_owned(), from.to_owned(), to.to_owned())).or_default().clone()
    }

    /// A copy of one version's counters with its current counters per cohort range, if it
    /// ever existed.
    pub fn counts(&self, service: &str, version: &str) -> Option<VersionCounts> {
        let key = (service.to_owned(), version.to_owned());
        let mut counts = self.versions.lock().expect("metrics lock").get(&key).map(|s| s.counts())?;
        let ranges = self.ranges.lock().expect("metrics lock").get(&key).cloned();
        counts.cohorts.extend(ranges.map(|r| r.counts()));
        Some(counts)
    }
}

/// Encodes one family of the contract: its descriptor, then one sample per row, each row's
/// label values in the order of the family's label names.
pub(crate) fn encode_family<'v, const N: usize, V>(
    encoder: &mut DescriptorEncoder,
    family: &Family<N>,
    rows: impl IntoIterator<Item = ([&'v str; N], V)>,
    mut sample: impl FnMut(MetricEncoder<'_>, V) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let kind = match family.kind {
        MetricKind::Counter => MetricType::Counter,
        MetricKind::Gauge => MetricType::Gauge,
        MetricKind::Histogram => MetricType::Histogram,
    };
    let mut descriptor = encoder.encode_descriptor(family.name, family.help, None, kind)?;
    for (values, value) in rows {
        let labels: [(&str, &str); N] = std::array::from_fn(|i| (family.labels[i], values[i]));
        sample(descriptor.encode_family(&labels)?, value)?;
    }
    Ok(())
}

fn counter(encoder: MetricEncoder<'_>, n: u64) -> Result<(), std::fmt::Error> {
    ConstCounter::new(n).encode(encoder)
}

/// One version's counters with its labels, copied out of the registry's lock for a scrape.
struct Scraped {
    service: String,
    version: String,
    stats: Arc<VersionStats>,
}

impl Scraped {
    /// Rows of `[service, version, extra]`, one per counter of `counters`, labelled in order.
    fn split<'s>(
        &'s self,
        counters: &'s [AtomicU64],
        extra: impl Fn(usize) -> &'s str + 's,
    ) -> impl Iterator<Item = ([&'s str; 3], u64)> + 's {
        counters.iter().enumerate().map(move |(i, n)| ([&*self.service, &*self.version, extra(i)], n.load(Relaxed)))
    }

    fn pair(&self) -> [&str; 2] {
        [&self.service, &self.version]
    }

    /// The latency histogram as the encoder wants it: per-bucket counts with upper bounds
    /// (it accumulates them itself), the sum in seconds and the count.
    fn histogram(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let buckets: Vec<(f64, u64)> = (self.stats.latency_buckets.iter().enumerate())
            .map(|(i, n)| (LATENCY_BOUNDS_SECONDS.get(i).copied().unwrap_or(f64::INFINITY), n.load(Relaxed)))
            .collect();
        let total = buckets.iter().map(|(_, n)| n).sum();
        (buckets, self.stats.latency_sum_micros.load(Relaxed) as f64 / 1e6, total)
    }
}

impl MetricsRegistry {
    fn scraped(&self) -> Vec<Scraped> {
        let map = self.versions.lock().expect("metrics lock");
        map.iter()
            .map(|((service, version), stats)| Scraped {
                service: service.clone(),
                version: version.clone(),
                stats: stats.clone(),
            })
            .collect()
    }
}

/// Picks one of a version's per-range counter arrays.
type RangeCounters = fn(&RangeStats) -> &[AtomicU64; RANGES];

impl MetricsRegistry {
    /// The three families per cohort range, one row per (service, version, range).
    fn encode_ranges(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ranges: Vec<((String, String), Arc<RangeStats>)> =
            self.ranges.lock().expect("metrics lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let families: [(&Family<4>, RangeCounters); 3] = [
            (&contract::RANGE_REQUESTS, |r| &r.requests),
            (&contract::RANGE_ERRORS, |r| &r.errors),
            (&contract::RANGE_SLOW, |r| &r.slow),
        ];
        for (family, pick) in families {
            let rows = ranges.iter().flat_map(|((service, version), stats)| {
                pick(stats).iter().enumerate().map(move |(range, n)| {
                    ([&**service, &**version, &*stats.cohort, range_label(range)], n.load(Relaxed))
                })
            });
            encode_family(encoder, family, rows, counter)?;
        }
        Ok(())
    }
}

impl Collector for MetricsRegistry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let versions = self.scraped();
        let e = &mut encoder;
        let each = |pick: fn(&VersionStats) -> &[AtomicU64], extra: fn(usize) -> &'static str| {
            versions.iter().flat_map(move |v| v.split(pick(&v.stats), extra))
        };
        encode_family(e, &contract::REQUESTS, each(|s| &s.responses, |i| CODE_CLASSES[i]), counter)?;
        let kind = |i: usize| UpstreamErrorKind::ALL[i].as_str();
        encode_family(e, &contract::UPSTREAM_ERRORS, each(|s| &s.upstream_errors, kind), counter)?;
        let reason = |i: usize| Reason::ALL[i].as_str();
        encode_family(e, &contract::ROUTING_DECISIONS, each(|s| &s.decisions, reason), counter)?;
        let histograms = versions.iter().map(|v| (v.pair(), v.histogram()));
        encode_family(e, &contract::REQUEST_DURATION, histograms, |mut sample, (buckets, sum, count)| {
            sample.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
        })?;
        let judge_errors = versions.iter().map(|v| (v.pair(), v.stats.judge_errors.load(Relaxed)));
        encode_family(e, &contract::JUDGE_ERRORS, judge_errors, counter)?;
        let new_sessions = versions.iter().map(|v| (v.pair(), v.stats.new_sessions.load(Relaxed)));
        encode_family(e, &contract::NEW_SESSIONS, new_sessions, counter)?;
        let uses = |i: usize| contract::CONNECTION_USES[i];
        encode_family(e, &contract::UPSTREAM_CONNECTIONS, each(|s| &s.connections, uses), counter)?;
        self.encode_ranges(e)?;
        let retries: Vec<(RetryKey, u64)> = {
            let map = self.retries.lock().expect("metrics lock");
            map.iter().map(|(k, v)| (k.clone(), v.load(Relaxed))).collect()
        };
        let rows = retries.iter().map(|((service, from, to), n)| ([&**service, &**from, &**to], *n));
        encode_family(e, &contract::RETRIES, rows, counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn scrape(metrics: &Arc<MetricsRegistry>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(metrics.clone()));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn a_change_of_failing_user_is_counted() {
        let stats = VersionStats::default();
        let ranges = RangeStats::new("c1");
        for (key_hash, status) in [(7, 503), (7, 500), (5, 200), (7, 502), (9, 503), (9, 503)] {
            stats.record_response(&ranges, status, 1_000, JudgeFacts { bucket: 1, key_hash, slow_bucket: None });
        }
        stats.record_moved_away(&ranges, JudgeFacts { bucket: 1, key_hash: 7, slow_bucket: None });
        assert_eq!(stats.failing_user_changes(), 3, "to 7, to 9, back to 7; a success changes nothing");
    }

    #[test]
    fn scrape_shows_counts_and_cumulative_buckets() {
        let metrics = Arc::new(MetricsRegistry::default());
        let v2 = metrics.version("web", "v2");
        let ranges = metrics.ranges("web", "v2", "c1");
        let facts = JudgeFacts { bucket: 65, key_hash: 1, slow_bucket: Some(0) };
        v2.record_response(&ranges, 200, 400, facts);
        v2.record_response(&ranges, 503, 2_000, facts);
        let mut tally = UpstreamErrorTally::default();
        tally.note(UpstreamErrorKind::ConnectRefused);
        v2.record_upstream_errors(&tally);
        let text = scrape(&metrics);
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

    #[test]
    fn a_new_salt_starts_new_range_counters_and_the_old_ones_leave_the_scrape() {
        let metrics = Arc::new(MetricsRegistry::default());
        let facts = JudgeFacts { bucket: 250, key_hash: 1, slow_bucket: None };
        let old = metrics.ranges("web", "v1", "old");
        metrics.version("web", "v1").record_response(&old, 200, 100, facts);
        assert!(Arc::ptr_eq(&old, &metrics.ranges("web", "v1", "old")), "the same salt keeps its counters");
        let new = metrics.ranges("web", "v1", "new");
        metrics.version("web", "v1").record_response(&new, 500, 100, facts);
        let counts = metrics.counts("web", "v1").unwrap();
        assert_eq!(counts.cohorts.len(), 1);
        assert_eq!((counts.cohorts[0].requests[2], counts.cohorts[0].errors[2]), (1, 1));
        let text = scrape(&metrics);
        assert!(text.contains(r#"canary_range_requests_total{service="web",version="v1",cohort="new",range="2"} 1"#));
        assert!(!text.contains(r#"cohort="old""#), "{text}");
    }

    #[test]
    fn every_family_of_the_contract_is_scraped_with_its_labels() {
        let metrics = Arc::new(MetricsRegistry::default());
        let v1 = metrics.version("web", "v1");
        let ranges = metrics.ranges("web", "v1", "c1");
        let facts = JudgeFacts { bucket: 130, key_hash: 1, slow_bucket: Some(0) };
        v1.record_decision(Reason::Pinned);
        v1.record_new_session();
        v1.record_connection(true);
        v1.record_connection(true);
        v1.record_connection(false);
        v1.record_response(&ranges, 502, 5_000, facts);
        v1.record_moved_away(&ranges, facts);
        metrics.retries("web", "v2", "v1").fetch_add(1, Relaxed);
        let text = scrape(&metrics);
        for line in [
            r#"canary_routing_decisions_total{service="web",version="v1",reason="pinned"} 1"#,
            r#"canary_routing_decisions_total{service="web",version="v1",reason="bucket"} 0"#,
            r#"canary_judge_errors_total{service="web",version="v1"} 2"#,
            r#"canary_new_sessions_total{service="web",version="v1"} 1"#,
            r#"canary_upstream_connections_total{service="web",version="v1",connection="pooled"} 2"#,
            r#"canary_upstream_connections_total{service="web",version="v1",connection="new"} 1"#,
            r#"canary_range_requests_total{service="web",version="v1",cohort="c1",range="1"} 2"#,
            r#"canary_range_errors_total{service="web",version="v1",cohort="c1",range="1"} 2"#,
            r#"canary_range_slow_total{service="web",version="v1",cohort="c1",range="1"} 1"#,
            r#"canary_range_slow_total{service="web",version="v1",cohort="c1",range="99"} 0"#,
            r#"canary_retries_total{service="web",from_version="v2",to_version="v1"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        for (name, help) in [
            ("canary_requests_total", contract::REQUESTS.help),
            ("canary_retries_total", contract::RETRIES.help),
            ("canary_request_duration_seconds", contract::REQUEST_DURATION.help),
        ] {
            assert!(text.contains(&format!("# HELP {name} {help}\n")), "no help for {name}");
        }
    }
}
