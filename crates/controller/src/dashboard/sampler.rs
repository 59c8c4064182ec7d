//! Metric ticks for the dashboard's charts: once a second, per service and version, the
//! requests per second, the error rate and the p50/p99 latency of that second.
//!
//! The sampler reads the same cumulative counters the judge reads (this process's gateway, or
//! Prometheus' sum over every gateway) and takes differences, so it never touches the hot path
//! and a controller of several gateways draws the whole fleet. Errors are counted the way the judge counts them (5xx responses plus
//! requests the version took no connection for), so a chart and a verdict never disagree about
//! what an error is. Quantiles come from the histogram bucket deltas, interpolated linearly
//! inside the bucket the rank falls in (as Prometheus' `histogram_quantile` does); they are
//! estimates whose error is bounded by the bucket widths of `canary_core::latency`.
//!
//! The last [`HISTORY`] ticks are kept so a page opened mid-rollout draws the charts from the
//! start of the rollout rather than from the moment it connected.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::Controller;
use crate::service_views::service_view;
use canary_core::api::ServiceView;
use canary_core::clock::unix_ms;
use canary_core::latency::{LATENCY_BOUNDS_SECONDS, LATENCY_BUCKETS};
use canary_core::metrics::VersionCounts;

use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Ticks kept for pages that connect later: 15 minutes at one a second.
pub const HISTORY: usize = 900;

/// How often the sampler looks.
pub const PERIOD: Duration = Duration::from_secs(1);

/// One version of one service over one sampling period.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// The service.
    pub service: String,
    /// The version.
    pub version: String,
    /// What the version is in the routing now: `stable`, `canary` or `draining`.
    pub role: &'static str,
    /// Requests finished in the period (responses plus requests moved to another version).
    pub requests: u64,
    /// Of those, errors as the judge counts them.
    pub errors: u64,
    /// Requests per second.
    pub rps: f64,
    /// `errors / requests`; `None` without requests.
    pub error_rate: Option<f64>,
    /// Median time to response head, seconds; `None` without responses.
    pub p50: Option<f64>,
    /// 99th percentile time to response head, seconds; `None` without responses.
    pub p99: Option<f64>,
}

/// Every point of one sampling instant.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tick {
    /// Unix ms of the sample.
    pub at_ms: u64,
    /// One point per service and routable version.
    pub points: Vec<Point>,
}

/// What the sampler pushes to live views.
#[derive(Debug, Clone)]
pub enum SamplerEvent {
    /// A new tick.
    Metrics(Arc<Tick>),
    /// A service's routing view changed (weight, canary, breaker) outside a rollout transition.
    Routing(Box<ServiceView>),
}

/// The quantile `q` (0..1) of a histogram of per-bucket counts with the fixed latency bounds.
///
/// Linear inside the bucket; the `+Inf` bucket answers its lower bound, the largest finite one.
pub fn quantile(buckets: &[u64; LATENCY_BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { LATENCY_BOUNDS_SECONDS[i - 1] };
            let Some(&upper) = LATENCY_BOUNDS_SECONDS.get(i) else { return Some(lower) };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * within);
        }
        below += n;
    }
    LATENCY_BOUNDS_SECONDS.last().copied()
}

/// The point for `now` counters after `before`, `seconds` apart.
pub fn point(
    service: &str,
    version: &str,
    role: &'static str,
    before: &VersionCounts,
    now: &VersionCounts,
    seconds: f64,
) -> Point {
    let responses = now.requests().saturating_sub(before.requests());
    let judge_errors = now.judge_errors.saturating_sub(before.judge_errors);
    let server_errors = now.server_errors().saturating_sub(before.server_errors());
    // Requests re-sent elsewhere are errors of this version that sent no response from it.
    let requests = responses + judge_errors.saturating_sub(server_errors);
    let buckets: [u64; LATENCY_BUCKETS] =
        std::array::from_fn(|i| now.latency_buckets[i].saturating_sub(before.latency_buckets[i]));
    Point {
        service: service.to_owned(),
        version: version.to_owned(),
        role,
        requests,
        errors: judge_errors,
        rps: if seconds > 0.0 { requests as f64 / seconds } else { 0.0 },
        error_rate: (requests > 0).then(|| judge_errors as f64 / requests as f64),
        p50: quantile(&buckets, 0.50),
        p99: quantile(&buckets, 0.99),
    }
}

/// Samples the gateway's counters every second and keeps the recent ticks.
pub struct Sampler {
    history: Mutex<VecDeque<Arc<Tick>>>,
    events: broadcast::Sender<SamplerEvent>,
}

impl Sampler {
    /// A sampler with no history; [`Sampler::spawn`] starts it.
    pub fn new() -> Arc<Sampler> {
        let (events, _) = broadcast::channel(256);
        Arc::new(Sampler { history: Mutex::new(VecDeque::with_capacity(HISTORY)), events })
    }

    /// Starts sampling `gateway`'s services on the current runtime, reading the counters from
    /// `metrics` (the gateway's own, or Prometheus' on a controller of several gateways); the
    /// task ends once the sampler is dropped.
    pub fn spawn(self: &Arc<Self>, controller: Arc<Controller>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(run(Arc::downgrade(self), controller))
    }

    /// Ticks and routing changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SamplerEvent> {
        self.events.subscribe()
    }

    /// The kept ticks, oldest first.
    pub fn history(&self) -> Vec<Arc<Tick>> {
        self.history.lock().expect("sampler history").iter().cloned().collect()
    }

    fn push(&self, tick: Tick) {
        let tick = Arc::new(tick);
        {
            let mut history = self.history.lock().expect("sampler history");
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(tick.clone());
        }
        let _ = self.events.send(SamplerEvent::Metrics(tick));
    }
}

async fn run(sampler: Weak<Sampler>, controller: Arc<Controller>) {
    let metrics = controller.metrics().clone();
    let mut last: HashMap<(String, String), (VersionCounts, Instant)> = HashMap::new();
    let mut views: HashMap<String, ServiceView> = HashMap::new();
    let mut interval = tokio::time::interval(PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let Some(sampler) = sampler.upgrade() else { return };
        let now = Instant::now();
        let mut points = Vec::new();
        for entry in controller.routing().services() {
            let name = entry.name.as_str();
            // A store that does not answer this second leaves a gap too.
            let Ok((spec, _)) = controller.routing().current(name).await else { continue };
            let versions = [
                Some((spec.stable.version.as_str(), "stable")),
                spec.canary.as_ref().map(|c| (c.version.as_str(), "canary")),
                spec.draining.as_ref().map(|d| (d.version.version.as_str(), "draining")),
            ];
            for (version, role) in versions.into_iter().flatten() {
                // A source that does not answer this second leaves a gap, not a false zero.
                let Ok(counts) = metrics.counts(name, version).await else { continue };
                let key = (name.to_owned(), version.to_owned());
                if let Some((before, then)) = last.get(&key) {
                    let seconds = now.duration_since(*then).as_secs_f64();
                    points.push(point(name, version, role, before, &counts, seconds));
                }
                last.insert(key, (counts, now));
            }
            let view = service_view(entry, &spec, controller.tripped(name).await);
            // The first look only records; a change after it is news.
            if views.get(name) != Some(&view) && views.insert(name.to_owned(), view.clone()).is_some() {
                let _ = sampler.events.send(SamplerEvent::Routing(Box::new(view)));
            }
        }
        sampler.push(Tick { at_ms: unix_ms(), points });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(pairs: &[(usize, u64)]) -> [u64; LATENCY_BUCKETS] {
        let mut buckets = [0; LATENCY_BUCKETS];
        for &(i, n) in pairs {
            buckets[i] = n;
        }
        buckets
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        assert_eq!(quantile(&[0; LATENCY_BUCKETS], 0.5), None);
        // 100 requests in (10 ms, 15 ms]: the median sits halfway through the bucket.
        let one_bucket = histogram(&[(9, 100)]);
        let p50 = quantile(&one_bucket, 0.5).unwrap();
        assert!((p50 - 0.0125).abs() < 1e-9, "{p50}");
        // 99 fast requests and 1 slow one: p50 is fast, p99 is the top of the fast bucket.
        let tail = histogram(&[(0, 99), (20, 1)]);
        assert!(quantile(&tail, 0.5).unwrap() <= 0.0005);
        assert!((quantile(&tail, 0.99).unwrap() - 0.0005).abs() < 1e-9);
        assert!(quantile(&tail, 1.0).unwrap() > 0.75);
        // Everything above the last bound: the largest finite bound, not infinity.
        assert_eq!(quantile(&histogram(&[(LATENCY_BUCKETS - 1, 5)]), 0.99), Some(30.0));
    }

    #[test]
    fn points_are_differences_per_second() {
        let before = VersionCounts { responses: [0, 100, 0, 0, 0], ..VersionCounts::default() };
        let mut now = before.clone();
        now.responses = [0, 118, 0, 0, 2];
        now.judge_errors = 3; // two 5xx and one request moved to stable
        now.latency_buckets[9] = 20;
        let p = point("web", "v2", "canary", &before, &now, 2.0);
        assert_eq!((p.requests, p.errors), (21, 3));
        assert!((p.rps - 10.5).abs() < 1e-9);
        assert!((p.error_rate.unwrap() - 3.0 / 21.0).abs() < 1e-9);
        assert!(p.p50.unwrap() > 0.01 && p.p99.unwrap() <= 0.015);
        let idle = point("web", "v2", "canary", &now, &now, 1.0);
        assert_eq!((idle.rps, idle.error_rate, idle.p50), (0.0, None, None));
    }
}
