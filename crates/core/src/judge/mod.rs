//! The judge: anytime-valid comparisons of the canary against stable, so the controller may
//! look every second and the chance of rolling back a canary that is not worse stays at most α
//! over the whole rollout.
//!
//! # Input: what the gateway produces
//!
//! Once per tick (typically a second) the controller hands the judge one [`TickCounts`]:
//! **cumulative** counters since the rollout started, summed over all gateway replicas, per
//! version. The judge takes differences between ticks itself; a counter that goes down (a
//! gateway restarted) makes it skip that tick and continue from the new values.
//!
//! | field | meaning |
//! |---|---|
//! | `canaryWeight` | the weight in force during the tick (for the sample-ratio guard) |
//! | `requests` | requests answered by the version |
//! | `errors` | 5xx responses plus upstream failures (connect errors, timeouts, resets) |
//! | `newUsers` | users whose first request *in this rollout* went to this version |
//! | `latency` | histogram counts per bucket of [`crate::latency::LATENCY_BOUNDS_SECONDS`], `+Inf` last (27 counts, not cumulative over buckets) |
//! | `ranges[r]` | `requests`, `errors` and `slow` requests of the users in cohort range `r` ([`crate::cohort`]) |
//!
//! `ranges` has exactly [`JudgeConfig::ranges`] entries ([`crate::cohort::RANGES`] by default)
//! for both versions, or is empty. A request is *slow* when its latency bucket index is greater
//! than [`Judge::slow_bucket`], which is fixed when the judge is created (from stable's
//! baseline histogram) and must be passed to the gateway with the rollout. Requests without a
//! user key are counted in the range of the bucket the router used for them.
//!
//! # Why ranges
//!
//! Routing is sticky per user, so a heavy or flaky user puts all their errors on one version.
//! The plain count test assumes independent requests and then rolls back healthy canaries far
//! more often than α (the simulation measures it). Ranges hold disjoint users, so the spread of
//! the counts across ranges measures this clustering; the judge divides its evidence by that
//! factor ([`ranges`]). With a [`CohortBaseline`] — the same ranges counted before the rollout
//! under its salt — the error test compares each range with its own history instead
//! ([`cohort`]), so error-prone users cancel out rather than cost power.
//!
//! # Tests
//!
//! * errors and the latency tail: a mixture e-process on the canary's share of events given its
//!   observed share of requests ([`count`]), tail threshold from [`tail`];
//! * p50 and p90: time-uniform DKW bands ([`dkw`]);
//! * sample ratio: the same e-process on new users against the weight ([`srm`]) — a mismatch
//!   makes the judge ask for attention, never roll back.
//!
//! α is split across the rollback metrics ([`AlphaSplit`]); a union bound keeps the overall
//! false-rollback rate at most α. Verdicts and the step rule are in [`verdict`].
//!
//! # Use
//!
//! ```
//! use canary_core::judge::{Baseline, Judge, JudgeConfig, TickCounts, StepDecision};
//! use canary_core::latency::LATENCY_BUCKETS;
//!
//! let mut stable_history = [0u64; LATENCY_BUCKETS];
//! stable_history[8] = 9_900;
//! stable_history[12] = 100;
//! let baseline = Baseline::from_stable_histogram(&stable_history, 0.99);
//! let mut judge = Judge::new(JudgeConfig { ranges: 0, ..JudgeConfig::default() }, baseline)?;
//! let tick = TickCounts::default(); // from the gateways, every second
//! judge.observe(&tick)?;
//! assert_eq!(judge.decision(true), StepDecision::Hold); // no data yet
//! for verdict in judge.verdicts() {
//!     println!("{}", serde_json::to_string(&verdict).unwrap());
//! }
//! # Ok::<(), canary_core::judge::JudgeError>(())
//! ```

pub mod cohort;
mod config;
pub mod count;
pub mod dispersion;
pub mod dkw;
pub mod ranges;
pub mod rate;
pub mod srm;
pub mod tail;
pub mod verdict;

#[cfg(test)]
mod cohort_tests;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::latency::LATENCY_BUCKETS;
use crate::weight::Weight;

use cohort::{Adjustment, CohortRates};
use count::{CountEProcess, RatioInterval, log_threshold};
use dispersion::GroupDispersion;
use ranges::RangeDispersion;
use rate::rate_upper_bound;
use srm::SampleRatioGuard;
use tail::{TailThreshold, floored, slow_count, tail_threshold};

pub use cohort::CohortBaseline;
pub use config::{AlphaSplit, JudgeConfig, JudgeError, Tolerance, Tolerances};
pub use ranges::RangeCounts;

/// Distinct burst windows the canary's events of a count metric must fall in before that
/// metric may roll back.
pub const MIN_EVENT_WINDOWS: usize = 5;
/// Burst windows a count metric's rollback must not rest on: when this many or fewer hold most of
/// the canary's events, the harm must show without them too.
pub const MAX_BURSTS: usize = 3;
/// Distinct cohort ranges the canary's events of a count metric must come from before that
/// metric may roll back (or all the ranges the canary served, when it served fewer).
pub const MIN_EVENT_RANGES: usize = 3;
pub use verdict::{Interval, Metric, MetricVerdict, Reason, Samples, StepDecision, Verdict};

/// Cumulative counters of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionCounts {
    /// Requests answered.
    pub requests: u64,
    /// 5xx responses plus upstream failures.
    pub errors: u64,
    /// Users whose first request in this rollout went to this version.
    pub new_users: u64,
    /// Requests per latency bucket (`+Inf` last).
    pub latency: [u64; LATENCY_BUCKETS],
    /// Counters per cohort range; empty when the gateways do not report them.
    pub ranges: Vec<RangeCounts>,
}

impl Default for VersionCounts {
    fn default() -> VersionCounts {
        VersionCounts { requests: 0, errors: 0, new_users: 0, latency: [0; LATENCY_BUCKETS], ranges: Vec::new() }
    }
}

impl VersionCounts {
    /// `self − earlier`, or `None` if any counter went down (a counter reset).
    fn since(&self, earlier: &VersionCounts) -> Option<VersionCounts> {
        let mut latency = [0; LATENCY_BUCKETS];
        for (out, (now, before)) in latency.iter_mut().zip(self.latency.iter().zip(&earlier.latency)) {
            *out = now.checked_sub(*before)?;
        }
        let ranges = if earlier.ranges.is_empty() {
            self.ranges.clone()
        } else {
            self.ranges
                .iter()
                .zip(&earlier.ranges)
                .map(|(now, before)| {
                    Some(RangeCounts {
                        requests: now.requests.checked_sub(before.requests)?,
                        errors: now.errors.checked_sub(before.errors)?,
                        slow: now.slow.checked_sub(before.slow)?,
                    })
                })
                .collect::<Option<Vec<_>>>()?
        };
        Some(VersionCounts {
            requests: self.requests.checked_sub(earlier.requests)?,
            errors: self.errors.checked_sub(earlier.errors)?,
            new_users: self.new_users.checked_sub(earlier.new_users)?,
            latency,
            ranges,
        })
    }
}

/// One tick of input: cumulative counters per version since the rollout started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TickCounts {
    /// The canary weight in force during the tick.
    pub canary_weight: Weight,
    /// The canary's counters.
    pub canary: VersionCounts,
    /// Stable's counters.
    pub stable: VersionCounts,
}

/// What the judge knows before the rollout: the tail threshold from stable's own latency and,
/// when the gateways counted it, the canary cohort's own history.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    tail: Option<TailThreshold>,
    cohort: Option<CohortBaseline>,
}

impl Baseline {
    /// From stable's latency histogram over a recent window before the rollout (a few thousand
    /// requests or more), with the tail at `quantile` (use [`JudgeConfig::tail_quantile`]).
    pub fn from_stable_histogram(histogram: &[u64; LATENCY_BUCKETS], quantile: f64) -> Baseline {
        Baseline { tail: tail_threshold(histogram, quantile), cohort: None }
    }

    /// The same, with what the gateways counted per cohort range before the rollout under its
    /// salt. Too small a baseline is ignored ([`cohort::MIN_BASELINE_ERRORS`]).
    pub fn with_cohort(self, cohort: CohortBaseline) -> Baseline {
        Baseline { cohort: Some(cohort), ..self }
    }

    /// The tail threshold, if the histogram had a tail.
    pub fn tail(&self) -> Option<TailThreshold> {
        self.tail
    }
}

/// Running totals of one version since the rollout started.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Totals {
    requests: u64,
    errors: u64,
    slow: u64,
    /// Requests whose latency counted (all but those of warm-up ticks).
    #[serde(default)]
    timed: u64,
}

/// The judge of one rollout. Cheap per tick: `O(grid + ranges + buckets)`.
///
/// It serializes whole (settings, threshold, evidence and the last counters seen), so the
/// controller can keep it with the rollout and a restarted or new leader continues with the
/// evidence gathered so far instead of starting over.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Judge {
    config: JudgeConfig,
    tail: TailThreshold,
    last: TickCounts,
    errors: CountEvidence,
    slow: CountEvidence,
    canary_latency: [u64; LATENCY_BUCKETS],
    stable_latency: [u64; LATENCY_BUCKETS],
    sample_ratio: SampleRatioGuard,
    canary: Totals,
    stable: Totals,
    step_start: (u64, u64),
    /// The rollout step [`Judge::enter_step`] last saw.
    step: Option<usize>,
    /// Metrics that have crossed their threshold, in the order they did.
    rejected: Vec<Metric>,
    counter_resets: u64,
    /// Ticks that carried data, for the burst windows.
    ticks: u64,
    /// The cohort baseline's per-range rates and the requests each version served per range.
    cohort: Option<CohortState>,
    /// Whether the current step leads to full traffic, where safety is shown at `safe_below`
    /// itself rather than with the early steps' margin.
    #[serde(default = "leads_to_full_by_default")]
    leads_to_full: bool,
}

fn leads_to_full_by_default() -> bool {
    true
}

/// The cohort baseline in use, and what it needs to say how sure it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CohortState {
    rates: CohortRates,
    canary_requests: Vec<u64>,
    stable_requests: Vec<u64>,
}

impl CohortState {
    fn new(baseline: Option<&CohortBaseline>, ranges: usize) -> Option<CohortState> {
        let rates = baseline?.rates()?;
        (ranges == crate::cohort::RANGES).then(|| CohortState {
            rates,
            canary_requests: vec![0; ranges],
            stable_requests: vec![0; ranges],
        })
    }

    fn adjustment(&self) -> Adjustment {
        self.rates.adjustment(&self.canary_requests, &self.stable_requests)
    }
}

/// What a count metric's verdict is computed from.
struct CountParts<'a> {
    evidence: &'a CountEvidence,
    tolerance: Tolerance,
    /// Canary's and stable's events.
    events: (u64, u64),
    /// The requests those events are out of.
    trials: (u64, u64),
}

/// One count metric's evidence: the e-process and the two ways its events cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CountEvidence {
    process: CountEProcess,
    /// By cohort range: heavy or flaky users on one version.
    by_users: RangeDispersion,
    /// By time window: bursts, when a stalled process makes many requests fail or slow at once.
    by_time: GroupDispersion,
}

impl CountEvidence {
    fn new(config: &JudgeConfig) -> CountEvidence {
        let (ranges, windows) = if config.correct_dispersion { (config.ranges, config.burst_windows) } else { (0, 0) };
        CountEvidence {
            process: CountEProcess::new(config.prior_scale),
            by_users: RangeDispersion::new(ranges),
            by_time: GroupDispersion::new(windows),
        }
    }

    /// The factor the evidence is divided by: the worse of the two clusterings.
    fn dispersion(&self) -> f64 {
        self.by_users.factor().max(self.by_time.factor())
    }

    fn observe(&mut self, canary: u64, stable: u64, share: f64, tick: u64) {
        self.process.observe(canary, stable, share);
        if !self.by_time.is_empty() {
            self.by_time.observe((tick % self.by_time.len() as u64) as usize, canary, stable, share);
        }
    }
}

impl Judge {
    /// A judge for a new rollout.
    pub fn new(config: JudgeConfig, baseline: Baseline) -> Result<Judge, JudgeError> {
        config.validate()?;
        let tail = baseline.tail.ok_or(JudgeError::NoTailThreshold)?;
        let tail = floored(tail, config.latency_floor_seconds);
        let cohort = CohortState::new(baseline.cohort.as_ref(), config.ranges);
        Ok(Judge {
            config,
            tail,
            last: TickCounts::default(),
            errors: CountEvidence::new(&config),
            slow: CountEvidence::new(&config),
            canary_latency: [0; LATENCY_BUCKETS],
            stable_latency: [0; LATENCY_BUCKETS],
            sample_ratio: SampleRatioGuard::new(config.sample_ratio_alpha, config.prior_scale),
            canary: Totals::default(),
            stable: Totals::default(),
            step_start: (0, 0),
            step: None,
            rejected: Vec::new(),
            counter_resets: 0,
            ticks: 0,
            cohort,
            leads_to_full: true,
        })
    }

    /// Forgets all data, for the next rollout with the same settings and threshold (and no
    /// cohort baseline: the next rollout has its own cohort).
    pub fn reset(&mut self) {
        let baseline = Baseline { tail: Some(self.tail), cohort: None };
        *self = Judge::new(self.config, baseline).expect("settings were valid at creation");
    }

    /// Whether the error test compares the canary cohort with its own history.
    pub fn uses_cohort_baseline(&self) -> bool {
        self.cohort.is_some()
    }

    /// The settings.
    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    /// Index of the last fast latency bucket: the gateway counts a request as slow (per group)
    /// when its bucket index is greater.
    pub fn slow_bucket(&self) -> usize {
        self.tail.bucket
    }

    /// The tail threshold `x*` in seconds.
    pub fn tail_threshold_seconds(&self) -> f64 {
        self.tail.bound_seconds
    }

    /// How many times the counters went down (gateway restarts) and a tick was skipped.
    pub fn counter_resets(&self) -> u64 {
        self.counter_resets
    }

    /// Adds one tick of cumulative counters.
    pub fn observe(&mut self, tick: &TickCounts) -> Result<(), JudgeError> {
        self.observe_tick(tick, true)
    }

    /// Adds one tick of a canary that is warming up: its requests and errors count, their
    /// latencies do not. A process that just got traffic (new, or idle until a weight step) is
    /// slower for its first seconds — cold caches, new connections, a runtime waking up — and a
    /// handful of slow requests at a small weight carries a lot of evidence. Which ticks are
    /// warm-up depends only on the clock, never on the data, so the tests stay valid.
    pub fn observe_warming_up(&mut self, tick: &TickCounts) -> Result<(), JudgeError> {
        self.observe_tick(tick, false)
    }

    fn observe_tick(&mut self, tick: &TickCounts, timed: bool) -> Result<(), JudgeError> {
        for (version, counts) in [("canary", &tick.canary), ("stable", &tick.stable)] {
            if counts.ranges.len() != self.config.ranges && !counts.ranges.is_empty() {
                return Err(JudgeError::RangeCount { version, expected: self.config.ranges, got: counts.ranges.len() });
            }
        }
        let deltas = tick.canary.since(&self.last.canary).zip(tick.stable.since(&self.last.stable));
        self.last = tick.clone();
        let Some((canary, stable)) = deltas else {
            self.counter_resets += 1;
            // A restarted gateway forgets which users it has seen and counts them all as new
            // again, in a burst whose split depends on which ticks it straddles: the guard's
            // evidence about the split starts over rather than take it in.
            self.sample_ratio = SampleRatioGuard::new(self.config.sample_ratio_alpha, self.config.prior_scale);
            return Ok(());
        };
        self.add(&canary, &stable, tick.canary_weight, timed);
        Ok(())
    }

    fn add(&mut self, canary: &VersionCounts, stable: &VersionCounts, weight: Weight, timed: bool) {
        let requests = canary.requests + stable.requests;
        let share = if requests == 0 { 0.0 } else { canary.requests as f64 / requests as f64 };
        let canary_slow = if timed { slow_count(&canary.latency, self.tail.bucket) } else { 0 };
        let stable_slow = if timed { slow_count(&stable.latency, self.tail.bucket) } else { 0 };
        self.ticks += 1;
        let error_share = self.add_ranges(canary, stable, timed).unwrap_or(share);
        self.errors.observe(canary.errors, stable.errors, error_share, self.ticks);
        if timed {
            self.slow.observe(canary_slow, stable_slow, share, self.ticks);
            self.add_latency(canary, stable);
        }
        self.sample_ratio.observe(canary.new_users, stable.new_users, weight.percent() / 100.0);
        for (totals, counts, slow) in [(&mut self.canary, canary, canary_slow), (&mut self.stable, stable, stable_slow)]
        {
            totals.requests += counts.requests;
            totals.errors += counts.errors;
            totals.slow += slow;
            if timed {
                totals.timed += counts.requests;
            }
        }
        self.check_rejections();
    }

    fn add_latency(&mut self, canary: &VersionCounts, stable: &VersionCounts) {
        for (total, new) in self.canary_latency.iter_mut().zip(&canary.latency) {
            *total += new;
        }
        for (total, new) in self.stable_latency.iter_mut().zip(&stable.latency) {
            *total += new;
        }
    }

    /// Adds one tick's per-range counts to the dispersion sums (and the cohort's request mix);
    /// with a cohort baseline, returns the canary's share of the tick's expected errors.
    fn add_ranges(&mut self, canary: &VersionCounts, stable: &VersionCounts, timed: bool) -> Option<f64> {
        let ranges = canary.ranges.iter().zip(&stable.ranges).enumerate();
        let (mut canary_expected, mut stable_expected) = (0.0, 0.0);
        for (range, (c, s)) in ranges {
            let expected = |requests| match &self.cohort {
                Some(cohort) => cohort.rates.expected(range, requests),
                None => requests as f64,
            };
            let (c_expected, s_expected) = (expected(c.requests), expected(s.requests));
            canary_expected += c_expected;
            stable_expected += s_expected;
            if !self.errors.by_users.is_empty() {
                self.errors.by_users.observe(range, (c.errors, c_expected), (s.errors, s_expected));
                if timed {
                    self.slow.by_users.observe(range, (c.slow, c.requests as f64), (s.slow, s.requests as f64));
                }
            }
            if let Some(cohort) = &mut self.cohort {
                cohort.canary_requests[range] += c.requests;
                cohort.stable_requests[range] += s.requests;
            }
        }
        let expected = canary_expected + stable_expected;
        (self.cohort.is_some() && expected > 0.0).then(|| canary_expected / expected)
    }

    /// How the error test's tolerances and estimate are adjusted for the cohort's history.
    fn adjustment(&self, metric: Metric) -> Adjustment {
        match (&self.cohort, metric) {
            (Some(cohort), Metric::Errors) => cohort.adjustment(),
            _ => Adjustment::NONE,
        }
    }

    /// The metric's α.
    fn alpha_of(&self, metric: Metric) -> f64 {
        let split = self.config.alpha_split;
        self.config.alpha
            * match metric {
                Metric::Errors => split.errors,
                Metric::LatencyTail => split.latency_tail,
                Metric::LatencyP50 => split.latency_p50,
                Metric::LatencyP90 => split.latency_p90,
                Metric::SampleRatio => return self.config.sample_ratio_alpha,
                // Team metrics are judged by `crate::team`, with α of their own.
                Metric::Team => return 0.0,
            }
    }

    fn quantile_comparison(&self, metric: Metric) -> dkw::QuantileComparison {
        let quantile = if metric == Metric::LatencyP50 { 0.5 } else { 0.9 };
        let dispersion = self.slow.dispersion();
        dkw::compare_quantile(
            &dkw::Histograms { canary: &self.canary_latency, stable: &self.stable_latency },
            quantile,
            self.alpha_of(metric),
            (self.canary.timed as f64 / dispersion, self.stable.timed as f64 / dispersion),
            &dkw::Practical {
                tolerance: self.for_this_step(self.config.tolerances.latency_quantiles),
                floor_seconds: self.config.latency_floor_seconds,
            },
        )
    }

    /// The count metric's evidence, tolerance, events and the trials they are out of.
    fn count_parts(&self, metric: Metric) -> CountParts<'_> {
        let tolerances = self.config.tolerances;
        let (canary, stable) = (&self.canary, &self.stable);
        match metric {
            Metric::Errors => CountParts {
                evidence: &self.errors,
                tolerance: self.for_this_step(tolerances.errors),
                events: (canary.errors, stable.errors),
                trials: (canary.requests, stable.requests),
            },
            _ => CountParts {
                evidence: &self.slow,
                tolerance: self.for_this_step(tolerances.latency_tail),
                events: (canary.slow, stable.slow),
                trials: (canary.timed, stable.timed),
            },
        }
    }

    /// Whether the canary's events of a count metric are spread over enough ticks to say how
    /// they cluster in time: until then one stall (every request in flight slow at once) would
    /// be read as many independent slow requests. Off with the burst windows.
    fn spread_in_time(evidence: &CountEvidence) -> bool {
        evidence.by_time.is_empty() || evidence.by_time.groups_with_canary_events() >= MIN_EVENT_WINDOWS
    }

    /// Whether the canary's events of a count metric come from enough cohort ranges — groups of
    /// different users — to say how they cluster by user: until then one heavy, error-prone user
    /// who is most of the canary's traffic would be read as the canary's rate (the ranges cannot
    /// show that one user's range carries most of both the exposure and the events). A canary
    /// that serves fewer ranges (a 1 % step) needs them all. Off without ranges, and when the
    /// gateways report none (the counts then say nothing about users).
    fn spread_over_users(evidence: &CountEvidence) -> bool {
        let (with_events, exposed) = evidence.by_users.canary_spread();
        exposed == 0 || with_events >= MIN_EVENT_RANGES.min(exposed)
    }

    /// Whether a count metric's harm still shows without a canary range that holds most of its
    /// events. A regression reaches every group of users; one heavy, error-prone user is one
    /// range. With few users on the canary (returning users held on stable by their pins, early
    /// in a step) that user can be most of its events while a few ordinary errors come from
    /// other ranges, and the canary's ranges are too few to show the spread as dispersion. The
    /// same test on the rest, from its totals; a veto only, so it costs power, never validity.
    fn holds_without_dominant_range(&self, evidence: &CountEvidence, worse_above: f64, threshold: f64) -> bool {
        let Some(dominant) = evidence.by_users.dominant_canary_range() else { return true };
        let rest = evidence.by_users.without_canary_range(dominant);
        let ((canary_events, canary_exposure), (stable_events, stable_exposure)) = rest.totals();
        let share = canary_exposure / (canary_exposure + stable_exposure);
        let dispersion = rest.factor().max(evidence.by_time.factor());
        let totals = (canary_events.round() as u64, stable_events.round() as u64, share);
        self.rejects_from_totals(totals, dispersion, worse_above, threshold)
    }

    /// Whether a count metric's harm still shows without the few burst windows that hold most
    /// of its events. A regression is there all the time; a stall (a process that makes every
    /// request in flight slow at once) is one tick, and stalls are few: a canary that stalled
    /// three times while stable happened not to is no evidence, yet their slow requests are
    /// many. Early in a step the windows are too few to show that as dispersion. The same test
    /// on the other windows, from their totals; a veto only, so it costs power, never validity.
    fn holds_without_largest_bursts(&self, evidence: &CountEvidence, worse_above: f64, threshold: f64) -> bool {
        let Some(bursts) = evidence.by_time.largest_canary_groups(MAX_BURSTS) else { return true };
        let rest = evidence.by_time.without_groups(&bursts);
        let dispersion = rest.factor().max(evidence.by_users.factor());
        self.rejects_from_totals(rest.totals(), dispersion, worse_above, threshold)
    }

    /// The count test on one observation of `(canary events, stable events, canary share)`.
    fn rejects_from_totals(&self, totals: (u64, u64, f64), dispersion: f64, worse_above: f64, threshold: f64) -> bool {
        let (canary, stable, share) = totals;
        let mut process = CountEProcess::new(self.config.prior_scale);
        process.observe(canary, stable, share);
        process.log_e_value_above(worse_above, dispersion) >= threshold
    }

    /// Whether both versions have served enough requests for a rollback on statistical grounds.
    fn may_roll_back(&self) -> bool {
        let minimum = self.config.min_requests_for_rollback;
        self.canary.requests >= minimum && self.stable.requests >= minimum
    }

    /// Marks metrics whose evidence crossed the threshold on this tick. Rejection is final:
    /// the guarantee is about the first crossing, and a canary once shown worse stays rolled back.
    fn check_rejections(&mut self) {
        if !self.may_roll_back() {
            return;
        }
        let crossed = |judge: &Judge, metric: Metric| match metric {
            Metric::Errors | Metric::LatencyTail => {
                let CountParts { evidence, tolerance, .. } = judge.count_parts(metric);
                let worse_above = tolerance.worse_above * judge.adjustment(metric).margin;
                let threshold = log_threshold(judge.alpha_of(metric));
                let log_e = evidence.process.log_e_value_above(worse_above, evidence.dispersion());
                Judge::spread_in_time(evidence)
                    && Judge::spread_over_users(evidence)
                    && log_e >= threshold
                    && judge.holds_without_dominant_range(evidence, worse_above, threshold)
                    && judge.holds_without_largest_bursts(evidence, worse_above, threshold)
            }
            Metric::LatencyP50 | Metric::LatencyP90 => judge.quantile_comparison(metric).worse,
            Metric::SampleRatio | Metric::Team => false,
        };
        for metric in Metric::ROLLBACK {
            if !self.rejected.contains(&metric) && crossed(self, metric) {
                self.rejected.push(metric);
            }
        }
    }

    /// The first metric that showed the canary worse and may act (not in observe mode), if any.
    /// Cheap: use it every tick.
    pub fn rollback_reason(&self) -> Option<Metric> {
        self.rejected.iter().copied().find(|&metric| self.acts(metric))
    }

    /// Whether `metric`'s verdict may roll back or hold a step (it is not in observe mode).
    fn acts(&self, metric: Metric) -> bool {
        let tolerances = self.config.tolerances;
        let tolerance = match metric {
            Metric::Errors => tolerances.errors,
            Metric::LatencyTail => tolerances.latency_tail,
            Metric::LatencyP50 | Metric::LatencyP90 => tolerances.latency_quantiles,
            Metric::SampleRatio | Metric::Team => return true,
        };
        !tolerance.observe
    }

    /// Whether the sample-ratio guard has flagged a mismatch.
    pub fn sample_ratio_mismatch(&self) -> bool {
        self.sample_ratio.mismatch()
    }

    /// Starts counting the per-step minimum sample from now (call when a step begins).
    pub fn begin_step(&mut self) {
        self.step_start = (self.canary.requests, self.stable.requests);
    }

    /// Tells the judge which rollout step is in force; a different one than last time begins a
    /// step ([`Judge::begin_step`]). Kept in the judge, so a restored judge knows its step.
    pub fn enter_step(&mut self, step: usize) {
        if self.step != Some(step) {
            self.step = Some(step);
            self.begin_step();
        }
    }

    /// Tells the judge whether the current step leads to full traffic (the default): only then
    /// must safety be shown at the tolerances themselves; an earlier step shows it within
    /// `early_step_margin` of them.
    pub fn set_leads_to_full(&mut self, leads_to_full: bool) {
        self.leads_to_full = leads_to_full;
    }

    /// A tolerance as the current step applies it: `safe_below` and `absolute` widened by the
    /// early-step margin unless the step leads to full traffic.
    fn for_this_step(&self, tolerance: Tolerance) -> Tolerance {
        if self.leads_to_full {
            return tolerance;
        }
        let margin = self.config.early_step_margin;
        Tolerance { safe_below: tolerance.safe_below * margin, absolute: tolerance.absolute * margin, ..tolerance }
    }

    /// Requests of (canary, stable) since the current step began.
    pub fn requests_in_step(&self) -> (u64, u64) {
        (self.canary.requests - self.step_start.0, self.stable.requests - self.step_start.1)
    }

    /// Takes `tick` as where the counters stand when judging starts, without counting it: the
    /// next [`Judge::observe`] adds only what came after. Gateways' counters are cumulative since
    /// they started, not since the rollout did.
    pub fn prime(&mut self, tick: &TickCounts) {
        self.last = tick.clone();
    }

    fn enough_data(&self) -> bool {
        let minimum = self.config.min_requests_per_version;
        self.canary.requests >= minimum && self.stable.requests >= minimum
    }

    /// Every metric's verdict with its numbers. Computes the confidence intervals, which costs
    /// `O(grid²)`: call it when reporting, not on every tick of a simulation.
    pub fn verdicts(&self) -> Vec<MetricVerdict> {
        let mut out = vec![
            self.count_verdict(Metric::Errors),
            self.count_verdict(Metric::LatencyTail),
            self.quantile_verdict(Metric::LatencyP50),
            self.quantile_verdict(Metric::LatencyP90),
        ];
        out.push(self.sample_ratio_verdict());
        out
    }

    /// The step rule: roll back on any `Worse`; ask for attention on a sample-ratio mismatch;
    /// advance when `hold_elapsed`, both versions served the per-step minimum since
    /// [`Judge::begin_step`] and every rollback metric passes; otherwise hold.
    pub fn decision(&self, hold_elapsed: bool) -> StepDecision {
        if self.rollback_reason().is_some() {
            return StepDecision::Rollback;
        }
        if self.sample_ratio_mismatch() {
            return StepDecision::NeedsAttention;
        }
        let minimum = self.config.min_requests_per_step;
        let (canary_in_step, stable_in_step) = self.requests_in_step();
        let step_samples = canary_in_step >= minimum && stable_in_step >= minimum;
        if !(hold_elapsed && step_samples && self.enough_data()) {
            return StepDecision::Hold;
        }
        // Promote on evidence of safety, not on the absence of evidence of harm.
        let all_safe = Metric::ROLLBACK.iter().all(|&metric| !self.acts(metric) || self.shown_safe(metric));
        if all_safe { StepDecision::Advance } else { StepDecision::Hold }
    }

    /// Whether `metric` is shown within its tolerance (anytime-valid, at the metric's α).
    fn shown_safe(&self, metric: Metric) -> bool {
        match metric {
            Metric::Errors | Metric::LatencyTail => {
                let CountParts { evidence, tolerance, events: (canary_events, stable_events), trials } =
                    self.count_parts(metric);
                let alpha = self.alpha_of(metric);
                let dispersion = evidence.dispersion();
                let adjustment = self.adjustment(metric);
                let safe_below = tolerance.safe_below / adjustment.margin;
                let by_ratio = evidence.process.log_e_value_below(safe_below, dispersion) >= log_threshold(alpha);
                let stable_rate = stable_events as f64 / trials.1.max(1) as f64;
                // The canary's own rate, as if its users were as error-prone as stable's (with the
                // baseline's doubt counted against it).
                let canary_bound = rate_upper_bound(canary_events, trials.0, alpha, dispersion)
                    / (adjustment.ratio / adjustment.margin);
                let by_rate = tolerance.absolute > 0.0 && canary_bound <= stable_rate + tolerance.absolute;
                by_ratio || by_rate
            }
            Metric::LatencyP50 | Metric::LatencyP90 => self.quantile_comparison(metric).safe,
            Metric::SampleRatio | Metric::Team => true,
        }
    }

    fn verdict_without_rejection(&self, metric: Metric) -> (Verdict, Reason) {
        if !self.enough_data() {
            return (Verdict::Inconclusive, Reason::NotEnoughData);
        }
        if self.shown_safe(metric) {
            (Verdict::Pass, Reason::ShownSafe)
        } else {
            (Verdict::Inconclusive, Reason::NotYetShownSafe)
        }
    }

    fn count_verdict(&self, metric: Metric) -> MetricVerdict {
        let CountParts { evidence, tolerance, events: (canary_events, stable_events), trials } =
            self.count_parts(metric);
        let (process, dispersion) = (&evidence.process, evidence.dispersion());
        let alpha = self.alpha_of(metric);
        let adjustment = self.adjustment(metric);
        let interval = RatioInterval {
            lower: process.lower_bound(alpha, dispersion).map(|r| r / adjustment.margin),
            upper: process.upper_bound(alpha, dispersion).map(|r| r * adjustment.margin),
        };
        let (verdict, reason) = if self.rejected.contains(&metric) {
            (Verdict::Worse, Reason::EvidenceOfHarm)
        } else {
            self.verdict_without_rejection(metric)
        };
        let rate = |events: u64, requests: u64| events as f64 / requests as f64;
        let estimate = (trials.0 > 0 && stable_events > 0)
            .then(|| rate(canary_events, trials.0) / rate(stable_events, trials.1) / adjustment.ratio);
        MetricVerdict {
            metric,
            verdict,
            reason,
            estimate,
            interval: to_interval(interval, 1.0 - 2.0 * alpha),
            e_value: Some(
                process.log_e_value_above(tolerance.worse_above * adjustment.margin, dispersion).exp().min(f64::MAX),
            ),
            threshold: 1.0 / alpha,
            alpha,
            tolerance: Some(tolerance),
            dispersion,
            canary: Samples { requests: trials.0, events: Some(canary_events) },
            stable: Samples { requests: trials.1, events: Some(stable_events) },
            team: None,
        }
    }

    fn quantile_verdict(&self, metric: Metric) -> MetricVerdict {
        let alpha = self.alpha_of(metric);
        let comparison = self.quantile_comparison(metric);
        let (verdict, reason) = if self.rejected.contains(&metric) {
            (Verdict::Worse, Reason::EvidenceOfHarm)
        } else {
            self.verdict_without_rejection(metric)
        };
        MetricVerdict {
            metric,
            verdict,
            reason,
            estimate: comparison.estimate,
            interval: to_interval(comparison.interval, 1.0 - alpha),
            e_value: None,
            threshold: 1.0 / alpha,
            alpha,
            tolerance: Some(self.for_this_step(self.config.tolerances.latency_quantiles)),
            dispersion: self.slow.dispersion(),
            canary: Samples { requests: self.canary.timed, events: None },
            stable: Samples { requests: self.stable.timed, events: None },
            team: None,
        }
    }

    fn sample_ratio_verdict(&self) -> MetricVerdict {
        let guard = &self.sample_ratio;
        let (verdict, reason) = if guard.mismatch() {
            (Verdict::Inconclusive, Reason::SampleRatioMismatch)
        } else {
            (Verdict::Pass, Reason::SampleRatioConsistent)
        };
        let (canary_users, stable_users) = guard.users();
        MetricVerdict {
            metric: Metric::SampleRatio,
            verdict,
            reason,
            estimate: guard.estimate(),
            interval: to_interval(guard.interval(), 1.0 - guard.alpha()),
            e_value: Some(guard.log_e_value().exp().min(f64::MAX)),
            threshold: 1.0 / guard.alpha(),
            alpha: guard.alpha(),
            tolerance: None,
            dispersion: 1.0,
            canary: Samples { requests: canary_users, events: None },
            stable: Samples { requests: stable_users, events: None },
            team: None,
        }
    }
}

fn to_interval(interval: RatioInterval, level: f64) -> Interval {
    Interval { lower: interval.lower, upper: interval.upper, level }
}
