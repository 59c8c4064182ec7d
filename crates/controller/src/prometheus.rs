//! The judge's counters from Prometheus, for several gateways.
//!
//! Every gateway exports cumulative counters; Prometheus scrapes them all. The judge needs
//! exact counts, so this source never uses `rate()` or `increase()` (they extrapolate to the
//! window's edges): it reads the raw counter value of every series (one per gateway and label
//! set) at an instant aligned to the scrape interval, one interval back so the scrape has
//! landed, and keeps a running total per series. A value lower than the last one is a counter
//! reset (a gateway restarted): the total then continues from the last value plus the new one.
//! A gateway that disappears keeps its last total, so counts never go backwards.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use canary_core::cohort::{RANGES, range_from_label};
use canary_core::latency::{LATENCY_BOUNDS_SECONDS, LATENCY_BUCKETS};
use canary_core::metrics::{
    self as contract, BUCKET, CODE_CLASSES, CohortCounts, SUM, UpstreamErrorKind, VersionCounts, label as labels,
};
use serde::Deserialize;

use crate::metrics_source::{BreakerSource, MetricsError, MetricsSource};

/// The samples the judge's counts are read from, as a `__name__` pattern.
fn series_pattern() -> String {
    let duration = contract::REQUEST_DURATION.name;
    let names = [
        contract::REQUESTS.sample_names(),
        contract::UPSTREAM_ERRORS.sample_names(),
        contract::JUDGE_ERRORS.sample_names(),
        contract::NEW_SESSIONS.sample_names(),
        contract::RANGE_REQUESTS.sample_names(),
        contract::RANGE_ERRORS.sample_names(),
        contract::RANGE_SLOW.sample_names(),
        vec![format!("{duration}{BUCKET}"), format!("{duration}{SUM}")],
    ];
    names.concat().join("|")
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<AnswerData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AnswerData {
    result: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    metric: HashMap<String, String>,
    value: (f64, String),
}

/// A counter series' running total across resets.
#[derive(Debug, Default, Clone, Copy)]
struct Running {
    last: f64,
    carried: f64,
}

impl Running {
    fn observe(&mut self, value: f64) -> f64 {
        if value < self.last {
            self.carried += self.last;
        }
        self.last = value;
        self.carried + value
    }
}

/// Reads per-version counters from a Prometheus server.
pub struct PrometheusMetrics {
    url: String,
    interval: Duration,
    client: reqwest::Client,
    pattern: String,
    series: Mutex<HashMap<String, Running>>,
}

impl PrometheusMetrics {
    /// A source reading `url` (e.g. `http://127.0.0.1:9090`), whose scrape interval is `interval`.
    pub fn new(url: &str, interval: Duration) -> PrometheusMetrics {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("HTTP client");
        let url = url.trim_end_matches('/').to_owned();
        PrometheusMetrics { url, interval, client, pattern: series_pattern(), series: Mutex::default() }
    }

    /// The instant to read: the last scrape boundary that is a whole interval old.
    fn aligned_time(&self) -> f64 {
        let now = canary_core::clock::unix_secs_f64();
        let step = self.interval.as_secs_f64();
        (now / step).floor() * step - step
    }

    async fn query(&self, query: &str, time: Option<f64>) -> Result<Vec<Sample>, MetricsError> {
        let mut params = vec![("query", query.to_owned())];
        if let Some(time) = time {
            params.push(("time", format!("{time:.3}")));
        }
        let url = format!("{}/api/v1/query", self.url);
        let response = self
            .client
            .get(&url)
            .query(&params)
            .send()
            .await
            .map_err(|e| MetricsError::Unavailable(format!("{url}: {e}")))?;
        let answer: Answer = response.json().await.map_err(|e| MetricsError::Unreadable(format!("{url}: {e}")))?;
        if answer.status != "success" {
            return Err(MetricsError::Unavailable(format!("{url}: {}", answer.error.unwrap_or(answer.status))));
        }
        Ok(answer.data.map(|d| d.result).unwrap_or_default())
    }
}

fn label<'a>(sample: &'a Sample, name: &str) -> &'a str {
    sample.metric.get(name).map(String::as_str).unwrap_or("")
}

fn series_key(sample: &Sample) -> String {
    let mut labels: Vec<_> = sample.metric.iter().collect();
    labels.sort();
    labels.into_iter().map(|(k, v)| format!("{k}={v},")).collect()
}

/// Adds one series' running total to the counts it belongs to.
fn add(counts: &mut VersionCounts, cumulative_le: &mut HashMap<String, f64>, sample: &Sample, total: f64) {
    let n = total.round() as u64;
    let name = label(sample, "__name__");
    let range = range_from_label(label(sample, labels::RANGE));
    let cohort = label(sample, labels::COHORT);
    if contract::REQUESTS.suffix_of(name).is_some() {
        if let Some(i) = CODE_CLASSES.iter().position(|c| *c == label(sample, labels::CODE_CLASS)) {
            counts.responses[i] += n;
        }
    } else if contract::UPSTREAM_ERRORS.suffix_of(name).is_some() {
        if let Some(kind) = UpstreamErrorKind::from_label(label(sample, labels::KIND)) {
            counts.upstream_errors[kind.index()] += n;
        }
    } else if contract::JUDGE_ERRORS.suffix_of(name).is_some() {
        counts.judge_errors += n;
    } else if contract::NEW_SESSIONS.suffix_of(name).is_some() {
        counts.new_sessions += n;
    } else if let Some(pick) = range_family(name) {
        if let Some(r) = range {
            pick(counts.cohort_mut(cohort))[r] += n;
        }
    } else {
        match contract::REQUEST_DURATION.suffix_of(name) {
            Some(SUM) => counts.latency_sum_micros += (total * 1e6).round() as u64,
            Some(BUCKET) => *cumulative_le.entry(label(sample, labels::LE).to_owned()).or_default() += total,
            _ => {}
        }
    }
}

/// Which per-range array a sample of a range family adds to.
fn range_family(name: &str) -> Option<fn(&mut CohortCounts) -> &mut [u64; RANGES]> {
    if contract::RANGE_REQUESTS.suffix_of(name).is_some() {
        Some(|c| &mut c.requests)
    } else if contract::RANGE_ERRORS.suffix_of(name).is_some() {
        Some(|c| &mut c.errors)
    } else if contract::RANGE_SLOW.suffix_of(name).is_some() {
        Some(|c| &mut c.slow)
    } else {
        None
    }
}

/// Turns cumulative `le` totals into per-bucket counts with the fixed bounds.
fn buckets(cumulative_le: &HashMap<String, f64>) -> [u64; LATENCY_BUCKETS] {
    let at = |le: f64| {
        cumulative_le
            .iter()
            .find(|(k, _)| k.parse::<f64>().is_ok_and(|b| (b - le).abs() < 1e-9) || (le.is_infinite() && *k == "+Inf"))
            .map_or(0.0, |(_, v)| *v)
    };
    let mut out = [0u64; LATENCY_BUCKETS];
    let mut below = 0.0;
    for (i, slot) in out.iter_mut().enumerate() {
        let bound = LATENCY_BOUNDS_SECONDS.get(i).copied().unwrap_or(f64::INFINITY);
        let cumulative = at(bound).max(below);
        *slot = (cumulative - below).round() as u64;
        below = cumulative;
    }
    out
}

impl PrometheusMetrics {
    /// The cumulative counters of `version` as Prometheus had them at `time` (Unix seconds).
    async fn counts_at(&self, service: &str, version: &str, time: f64) -> Result<VersionCounts, MetricsError> {
        let (pattern, service_label, version_label) = (&self.pattern, labels::SERVICE, labels::VERSION);
        let query = format!("{{__name__=~\"{pattern}\",{service_label}=\"{service}\",{version_label}=\"{version}\"}}");
        let samples = self.query(&query, Some(time)).await?;
        let mut counts = VersionCounts::default();
        let mut cumulative_le = HashMap::new();
        let mut series = self.series.lock().expect("series");
        for sample in &samples {
            let Ok(value) = sample.value.1.parse::<f64>() else { continue };
            let total = series.entry(series_key(sample)).or_default().observe(value);
            add(&mut counts, &mut cumulative_le, sample, total);
        }
        // Series of this version not in this answer (a gateway that went away) keep their total.
        let prefix_service = format!("{}={service},", labels::SERVICE);
        let prefix_version = format!("{}={version},", labels::VERSION);
        let seen: std::collections::HashSet<String> = samples.iter().map(series_key).collect();
        for (key, running) in series.iter() {
            if seen.contains(key) || !key.contains(&prefix_service) || !key.contains(&prefix_version) {
                continue;
            }
            let labels: HashMap<String, String> =
                key.split(',').filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))).collect();
            let ghost = Sample { metric: labels, value: (0.0, String::new()) };
            add(&mut counts, &mut cumulative_le, &ghost, running.carried + running.last);
        }
        counts.latency_buckets = buckets(&cumulative_le);
        Ok(counts)
    }
}

#[async_trait::async_trait]
impl MetricsSource for PrometheusMetrics {
    async fn counts(&self, service: &str, version: &str) -> Result<VersionCounts, MetricsError> {
        self.counts_at(service, version, self.aligned_time()).await
    }

    /// Both at the same aligned instant: read one after the other, a scrape boundary can fall
    /// in between and put the second version a whole interval ahead, which the judge would take
    /// as a second in which only that version got users.
    async fn counts_together(&self, service: &str, versions: [&str; 2]) -> Result<[VersionCounts; 2], MetricsError> {
        let time = self.aligned_time();
        Ok([self.counts_at(service, versions[0], time).await?, self.counts_at(service, versions[1], time).await?])
    }

    /// A read shows each gateway's last scrape before an instant one interval back, aligned
    /// down to the interval: a scrape up to three intervals old.
    fn staleness(&self) -> Duration {
        self.interval * 3
    }
}

#[async_trait::async_trait]
impl BreakerSource for PrometheusMetrics {
    async fn tripped(&self, service: &str) -> Result<Option<String>, MetricsError> {
        let (breaker, service_label) = (contract::BREAKER_OPEN.name, labels::SERVICE);
        let samples = self.query(&format!("{breaker}{{{service_label}=\"{service}\"}} == 1"), None).await?;
        if samples.is_empty() {
            return Ok(None);
        }
        let instances: Vec<&str> = samples.iter().map(|s| label(s, "instance")).collect();
        Ok(Some(format!("open on {} gateway(s): {}", instances.len(), instances.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_reset_continues_the_total() {
        let mut r = Running::default();
        assert_eq!(r.observe(10.0), 10.0);
        assert_eq!(r.observe(15.0), 15.0);
        assert_eq!(r.observe(3.0), 18.0, "restart: 15 before, 3 since");
        assert_eq!(r.observe(5.0), 20.0);
    }

    fn sample(name: &str, labels: &[(&str, &str)]) -> Sample {
        let metric = [("__name__", name)].iter().chain(labels).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Sample { metric, value: (0.0, String::new()) }
    }

    #[test]
    fn the_query_asks_for_the_judge_s_samples() {
        let pattern = series_pattern();
        let names: Vec<&str> = pattern.split('|').collect();
        assert_eq!(
            names,
            [
                "canary_requests_total",
                "canary_upstream_errors_total",
                "canary_judge_errors_total",
                "canary_new_sessions_total",
                "canary_range_requests_total",
                "canary_range_errors_total",
                "canary_range_slow_total",
                "canary_request_duration_seconds_bucket",
                "canary_request_duration_seconds_sum",
            ]
        );
    }

    #[test]
    fn samples_land_in_the_counts_their_labels_name() {
        let mut counts = VersionCounts::default();
        let mut le = HashMap::new();
        add(&mut counts, &mut le, &sample("canary_requests_total", &[("code_class", "5xx")]), 3.0);
        add(&mut counts, &mut le, &sample("canary_requests_total", &[("code_class", "6xx")]), 1.0);
        add(&mut counts, &mut le, &sample("canary_upstream_errors_total", &[("kind", "reset")]), 2.0);
        add(&mut counts, &mut le, &sample("canary_judge_errors_total", &[]), 5.0);
        add(&mut counts, &mut le, &sample("canary_range_slow_total", &[("cohort", "c1"), ("range", "7")]), 4.0);
        add(&mut counts, &mut le, &sample("canary_range_errors_total", &[("cohort", "c1"), ("range", "100")]), 9.0);
        add(&mut counts, &mut le, &sample("canary_range_requests_total", &[("cohort", "c0"), ("range", "7")]), 8.0);
        add(&mut counts, &mut le, &sample("canary_request_duration_seconds_sum", &[]), 0.5);
        add(&mut counts, &mut le, &sample("canary_request_duration_seconds_bucket", &[("le", "+Inf")]), 6.0);
        assert_eq!(counts.responses, [0, 0, 0, 0, 3], "an unknown class is skipped");
        assert_eq!(counts.upstream_errors, [0, 0, 0, 0, 2, 0]);
        assert_eq!(counts.judge_errors, 5);
        assert_eq!(counts.cohort("c1").unwrap().slow[7], 4);
        assert_eq!(counts.cohort("c1").unwrap().errors.iter().sum::<u64>(), 0, "range 100 does not exist");
        assert_eq!(counts.cohort("c0").unwrap().requests[7], 8, "each salt has its own counters");
        assert_eq!(counts.latency_sum_micros, 500_000);
        assert_eq!(le.get("+Inf"), Some(&6.0));
    }

    /// A Prometheus that answers every query with no samples, slowly, and keeps the instants
    /// it was asked about.
    async fn slow_prometheus(delay: Duration) -> (String, std::sync::Arc<Mutex<Vec<String>>>) {
        use axum::extract::{Query, State};
        let asked = std::sync::Arc::new(Mutex::new(Vec::new()));
        let answer = move |State(asked): State<std::sync::Arc<Mutex<Vec<String>>>>,
                           Query(params): Query<HashMap<String, String>>| async move {
            asked.lock().unwrap().push(params.get("time").cloned().unwrap_or_default());
            tokio::time::sleep(delay).await;
            axum::Json(serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": []}}))
        };
        let app = axum::Router::new().route("/api/v1/query", axum::routing::get(answer)).with_state(asked.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, asked)
    }

    #[tokio::test]
    async fn both_versions_are_read_at_one_instant_even_when_a_scrape_boundary_passes() {
        // Each answer takes longer than the interval, so a second read would ask a later one.
        let interval = Duration::from_millis(100);
        let (url, asked) = slow_prometheus(interval * 2).await;
        let source = PrometheusMetrics::new(&url, interval);
        source.counts_together("web", ["v1", "v2"]).await.unwrap();
        let asked = asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 2);
        assert_eq!(asked[0], asked[1], "stable and the canary read at different instants");
    }

    #[test]
    fn cumulative_buckets_become_per_bucket_counts() {
        let mut le = HashMap::new();
        le.insert("0.0005".to_owned(), 2.0);
        le.insert("0.001".to_owned(), 5.0);
        for b in &LATENCY_BOUNDS_SECONDS[2..] {
            le.insert(format!("{b}"), 5.0);
        }
        le.insert("+Inf".to_owned(), 6.0);
        let out = buckets(&le);
        assert_eq!(out[0], 2);
        assert_eq!(out[1], 3);
        assert_eq!(out[LATENCY_BUCKETS - 1], 1);
        assert_eq!(out.iter().sum::<u64>(), 6);
    }
}
