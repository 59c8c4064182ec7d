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
use canary_core::latency::{LATENCY_BOUNDS_SECONDS, LATENCY_BUCKETS, bucket_index};
use canary_core::metrics::{
    self as contract, CODE_CLASSES, Family, MetricKind, USER_GROUPS, UpstreamErrorKind, VersionCounts, code_class,
    group_label, user_group,
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
    group_errors: [AtomicU64; USER_GROUPS],
    group_slow: [AtomicU64; USER_GROUPS],
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
    /// Records one response with its status and time to response head.
    #[inline]
    pub fn record_response(&self, status: u16, micros: u64, judge: JudgeFacts) {
        self.responses[code_class(status)].fetch_add(1, Relaxed);
        let latency_bucket = bucket_index(micros);
        self.latency_buckets[latency_bucket].fetch_add(1, Relaxed);
        self.latency_sum_micros.fetch_add(micros, Relaxed);
        let group = user_group(judge.bucket);
        if status >= 500 {
            self.judge_errors.fetch_add(1, Relaxed);
            self.group_errors[group].fetch_add(1, Relaxed);
        }
        if judge.slow_bucket.is_some_and(|slow| latency_bucket > usize::from(slow)) {
            self.group_slow[group].fetch_add(1, Relaxed);
        }
    }

    /// Records a user's first assignment to this version by the bucket rule in this rollout.
    #[inline]
    pub fn record_new_session(&self) {
        self.new_sessions.fetch_add(1, Relaxed);
    }

    /// Records a request this version lost to another: the judge counts it as this
    /// version's error.
    #[inline]
    pub fn record_moved_away(&self, bucket: u16) {
        self.judge_errors.fetch_add(1, Relaxed);
        self.group_errors[user_group(bucket)].fetch_add(1, Relaxed);
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
            group_errors: std::array::from_fn(|i| load(&self.group_errors, i)),
            group_slow: std::array::from_fn(|i| load(&self.group_slow, i)),
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
        encode_family(e, &contract::GROUP_ERRORS, each(|s| &s.group_errors, group_label), counter)?;
        encode_family(e, &contract::GROUP_SLOW, each(|s| &s.group_slow, group_label), counter)?;
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
    fn scrape_shows_counts_and_cumulative_buckets() {
        let metrics = Arc::new(MetricsRegistry::default());
        let v2 = metrics.version("web", "v2");
        let facts = JudgeFacts { bucket: 65, slow_bucket: Some(0) };
        v2.record_response(200, 400, facts);
        v2.record_response(503, 2_000, facts);
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
    fn every_family_of_the_contract_is_scraped_with_its_labels() {
        let metrics = Arc::new(MetricsRegistry::default());
        let v1 = metrics.version("web", "v1");
        let facts = JudgeFacts { bucket: 130, slow_bucket: Some(0) };
        v1.record_decision(Reason::Pinned);
        v1.record_new_session();
        v1.record_response(502, 5_000, facts);
        v1.record_moved_away(130);
        metrics.retries("web", "v2", "v1").fetch_add(1, Relaxed);
        let text = scrape(&metrics);
        for line in [
            r#"canary_routing_decisions_total{service="web",version="v1",reason="pinned"} 1"#,
            r#"canary_routing_decisions_total{service="web",version="v1",reason="bucket"} 0"#,
            r#"canary_judge_errors_total{service="web",version="v1"} 2"#,
            r#"canary_new_sessions_total{service="web",version="v1"} 1"#,
            r#"canary_group_errors_total{service="web",version="v1",group="2"} 2"#,
            r#"canary_group_slow_total{service="web",version="v1",group="2"} 1"#,
            r#"canary_group_slow_total{service="web",version="v1",group="63"} 0"#,
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
