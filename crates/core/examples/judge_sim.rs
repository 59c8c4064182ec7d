//! Seeded simulation of the judge: false rollbacks of identical versions (A/A), how long a
//! healthy canary takes to be shown safe, and detection delays of real regressions, at 10 %
//! canary traffic unless a scenario says otherwise.
//!
//! Run: `cargo run --release -p canary-core --example judge_sim [-- --runs N] [--only TEXT]` (200 runs by
//! default; `--only stalls` runs the scenarios whose name contains "stalls", each with its usual seed)
//!
//! # Model
//!
//! Users are modelled one by one, because routing is sticky per user: each user has a bucket
//! (uniform in 0..10,000, canary when below the weight), a request rate, an error probability
//! and a latency scale. Requests of a user are a Poisson process, and errors and slow requests
//! are independent thinnings of it, so the counts of a (version, cohort range) cell in one tick
//! are exactly Poisson with the summed rates of its users. The simulation therefore draws four
//! Poisson counts per cell and tick (error/ok × slow/fast) instead of one event per request,
//! and updates a cell's rates only when a user changes version. Latency is log-normal (median
//! 50 ms unless a scenario says otherwise, σ 0.5) times the user's scale; a version's histogram
//! is its slow and fast totals spread over the buckets in proportion to its users' bucket
//! probabilities. 50 ms is a boundary of the judge's latency buckets, the hardest place for a
//! median to be shown safe; two scenarios move it off the boundary.
//!
//! * homogeneous: identical users, 1 % errors — equivalent to random per-request routing;
//! * sticky: request rates log-normal (σ 1.5: heavy users), 5 % of users fail 10 % of their
//!   requests and the rest 0.53 %, latency scale log-normal (σ 0.3) per user.
//!
//! After a weight step, users who moved to the canary follow after an exponential delay (mean
//! 5 min), as if their pin to stable expired: the observed request share lags the weight.
//! Each run draws a new population and a new baseline (10 minutes of stable-only traffic).
//!
//! Three judges see every run: the production one, the same with the cohort baseline (what the
//! gateways count per cohort range in the hour before the rollout, every user on stable, drawn
//! from the same users' rates), and the plain count test without dispersion correction.
//!
//! # Stalls
//!
//! Requests are not independent in time either: a process that stalls (a garbage collection, a
//! lock, a noisy neighbour taking the CPU) makes every request in flight slow at once. In the
//! scenarios with stalls, each version's process stalls at the ticks of its own Poisson process
//! (the two versions run the same code, so they share the mean interval, drawn per run from the
//! scenario's range, but stall independently). A stall lasts one tick and catches a share of
//! the version's requests in it (uniform in the scenario's range, per stall, every request
//! caught independently); a caught request takes the stall's latency (log-normal around the
//! scenario's median, σ 0.4) instead of its own, and may fail (a timeout). Stable's baseline
//! has its stalls too, so they take part in choosing the tail threshold, as they would.

#![allow(clippy::disallowed_types, reason = "a synchronous simulation timing itself; core has no async runtime")]

use std::time::Instant;

use canary_core::cohort::{RANGES, range_of};
use canary_core::judge::{Baseline, CohortBaseline, Judge, JudgeConfig, Metric, RangeCounts, StepDecision, TickCounts};
use canary_core::latency::{LATENCY_BOUNDS_SECONDS, LATENCY_BUCKETS};
use canary_core::weight::Weight;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution, Exp, LogNormal, Poisson};
use statrs::function::erf::erfc;

const HOUR: u32 = 3_600;
/// Median latency of most scenarios: exactly a bucket boundary of the judge's histogram.
const MEDIAN_SECONDS: f64 = 0.05;
const LATENCY_SIGMA: f64 = 0.5;
const STALL_LATENCY_SIGMA: f64 = 0.4;
const USERS_PER_RPS: f64 = 20.0;
const PIN_EXPIRY_MEAN_SECONDS: f64 = 300.0;
const BASELINE_SECONDS: f64 = 600.0;
/// How long the gateways counted the next rollout's cohort before it started (the time since
/// the previous rollout ended).
const COHORT_BASELINE_SECONDS: f64 = 3_600.0;
const SEED: u64 = 0x5EED_CA4A;
const DEFAULT_RUNS: usize = 200;

#[derive(Clone, Copy, PartialEq)]
enum Users {
    Homogeneous,
    Sticky,
}

/// How a version's process stalls.
#[derive(Clone, Copy)]
struct Stalls {
    /// Range of the mean seconds between stalls; each run draws one mean for both versions.
    mean_interval_seconds: (f64, f64),
    /// Range of the share of a version's requests in the tick that a stall catches.
    caught_share: (f64, f64),
    /// Median latency of a caught request.
    latency_median_seconds: f64,
    /// Probability that a caught request fails.
    failure_probability: f64,
}

#[derive(Clone)]
struct Scenario {
    name: &'static str,
    rps: f64,
    users: Users,
    /// `(start second, weight in basis points)`, one entry per step.
    schedule: Vec<(u32, u16)>,
    canary_error_factor: f64,
    canary_latency_factor: f64,
    /// Median latency of a user with latency scale 1.
    median_seconds: f64,
    stalls: Option<Stalls>,
}

impl Scenario {
    fn is_aa(&self) -> bool {
        self.canary_error_factor == 1.0 && self.canary_latency_factor == 1.0
    }

    fn weight_at(&self, second: u32) -> u16 {
        self.schedule.iter().rev().find(|(start, _)| *start <= second).map_or(0, |s| s.1)
    }

    fn step_at(&self, second: u32) -> usize {
        self.schedule.iter().rposition(|(start, _)| *start <= second).unwrap_or(0)
    }
}

struct User {
    bucket: u16,
    rate: f64,
    error_probability: f64,
    /// Median of the user's own latency.
    median_seconds: f64,
    first_second: u32,
}

/// Expected per-second counts of one (version, cohort range) cell.
#[derive(Clone, Copy, Default)]
struct CellRates {
    error_slow: f64,
    error_fast: f64,
    ok_slow: f64,
    ok_fast: f64,
}

fn standard_normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// Probability of each latency bucket for a log-normal latency.
fn bucket_probabilities(median_seconds: f64, sigma: f64) -> [f64; LATENCY_BUCKETS] {
    let mut out = [0.0; LATENCY_BUCKETS];
    let mut below = 0.0;
    let log_median = median_seconds.ln();
    for (bucket, bound) in LATENCY_BOUNDS_SECONDS.iter().enumerate() {
        let cdf = standard_normal_cdf((bound.ln() - log_median) / sigma);
        out[bucket] = cdf - below;
        below = cdf;
    }
    out[LATENCY_BUCKETS - 1] = 1.0 - below;
    out
}

/// Poisson draw that is cheap for the small means of most cells.
fn poisson(rng: &mut StdRng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 30.0 {
        return Poisson::new(mean).unwrap().sample(rng) as u64;
    }
    let mut pmf = (-mean).exp();
    let mut cdf = pmf;
    let u: f64 = rng.random();
    let mut k = 0u64;
    while u > cdf && k < 1_000 {
        k += 1;
        pmf *= mean / k as f64;
        cdf += pmf;
    }
    k
}

fn binomial(rng: &mut StdRng, trials: u64, p: f64) -> u64 {
    if trials == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return trials;
    }
    if trials < 20 {
        return (0..trials).filter(|_| rng.random::<f64>() < p).count() as u64;
    }
    Binomial::new(trials, p).unwrap().sample(rng)
}

/// Spreads `total` over `weights` (a multinomial draw by conditional binomials).
fn spread(rng: &mut StdRng, total: u64, weights: &[f64], out: &mut [u64]) {
    let mut left = total;
    let mut mass: f64 = weights.iter().sum();
    for (slot, &w) in out.iter_mut().zip(weights) {
        if left == 0 || mass <= 0.0 {
            break;
        }
        let n = binomial(rng, left, (w / mass).min(1.0));
        *slot += n;
        left -= n;
        mass -= w;
    }
}

fn population(scenario: &Scenario, rng: &mut StdRng) -> Vec<User> {
    let count = (scenario.rps * USERS_PER_RPS).round() as usize;
    let heavy = LogNormal::new(0.0, 1.5).unwrap();
    let latency = LogNormal::new(0.0, 0.3).unwrap();
    let mut users: Vec<User> = (0..count)
        .map(|_| {
            let bucket = rng.random_range(0..10_000u16);
            match scenario.users {
                Users::Homogeneous => User {
                    bucket,
                    rate: 1.0,
                    error_probability: 0.01,
                    median_seconds: scenario.median_seconds,
                    first_second: 0,
                },
                Users::Sticky => User {
                    bucket,
                    rate: heavy.sample(rng),
                    error_probability: if rng.random::<f64>() < 0.05 { 0.10 } else { 0.0053 },
                    median_seconds: scenario.median_seconds * latency.sample(rng),
                    first_second: 0,
                },
            }
        })
        .collect();
    let total: f64 = users.iter().map(|u| u.rate).sum();
    for user in &mut users {
        user.rate *= scenario.rps / total;
        let first = Exp::new(user.rate).unwrap().sample(rng);
        user.first_second = first.min(f64::from(u32::MAX)) as u32;
    }
    users.sort_by_key(|u| u.first_second);
    users
}

/// The stalls of one run: both versions' processes follow it, each with its own stalls.
struct StallModel {
    stalls: Stalls,
    /// Chance that a version stalls in a tick (a Poisson process seen one tick at a time).
    per_tick: f64,
    /// Latency bucket probabilities of a caught request.
    buckets: [f64; LATENCY_BUCKETS],
    /// Chance that a caught request is slower than the judge's tail threshold.
    slow_probability: f64,
}

impl StallModel {
    fn draw(scenario: &Scenario, rng: &mut StdRng) -> Option<StallModel> {
        let stalls = scenario.stalls?;
        let (low, high) = stalls.mean_interval_seconds;
        let mean_interval = low + (high - low) * rng.random::<f64>();
        Some(StallModel {
            stalls,
            per_tick: 1.0 - (-1.0 / mean_interval).exp(),
            buckets: bucket_probabilities(stalls.latency_median_seconds, STALL_LATENCY_SIGMA),
            slow_probability: 0.0,
        })
    }

    /// The share of one version's requests caught in this tick: 0 unless its process stalls.
    fn caught_share(&self, rng: &mut StdRng) -> f64 {
        if rng.random::<f64>() >= self.per_tick {
            return 0.0;
        }
        let (low, high) = self.stalls.caught_share;
        low + (high - low) * rng.random::<f64>()
    }

    fn set_slow_bucket(&mut self, slow_bucket: usize) {
        self.slow_probability = self.buckets[slow_bucket + 1..].iter().sum();
    }
}

/// The per-second cell rates and histogram intensities of both versions (0 = stable).
struct Traffic {
    cells: [Vec<CellRates>; 2],
    histogram: [[f64; LATENCY_BUCKETS]; 2],
    slow_bucket: usize,
}

impl Traffic {
    fn apply(&mut self, scenario: &Scenario, user: &User, version: usize, sign: f64) {
        let (error_factor, latency_factor) =
            if version == 1 { (scenario.canary_error_factor, scenario.canary_latency_factor) } else { (1.0, 1.0) };
        let p = (user.error_probability * error_factor).min(1.0);
        let buckets = bucket_probabilities(user.median_seconds * latency_factor, LATENCY_SIGMA);
        let slow: f64 = buckets[self.slow_bucket + 1..].iter().sum();
        let cell = &mut self.cells[version][range_of(user.bucket)];
        let r = sign * user.rate;
        cell.error_slow += r * p * slow;
        cell.error_fast += r * p * (1.0 - slow);
        cell.ok_slow += r * (1.0 - p) * slow;
        cell.ok_fast += r * (1.0 - p) * (1.0 - slow);
        for (total, b) in self.histogram[version].iter_mut().zip(buckets) {
            *total += r * b;
        }
    }
}

/// Stable's histogram over the baseline window, stalls included, and the threshold from it.
fn baseline(scenario: &Scenario, users: &[User], stalls: Option<&StallModel>, rng: &mut StdRng) -> Baseline {
    let mut intensity = [0.0; LATENCY_BUCKETS];
    for user in users {
        for (total, b) in intensity.iter_mut().zip(bucket_probabilities(user.median_seconds, LATENCY_SIGMA)) {
            *total += user.rate * b;
        }
    }
    // A stall catching a share s of a second's requests takes s seconds' worth of traffic
    // from the ordinary latencies and gives it the stall's.
    let caught_seconds: f64 = stalls.map_or(0.0, |model| {
        let ticks = binomial(rng, BASELINE_SECONDS as u64, model.per_tick);
        let (low, high) = model.stalls.caught_share;
        (0..ticks).map(|_| low + (high - low) * rng.random::<f64>()).sum()
    });
    let mut histogram = [0u64; LATENCY_BUCKETS];
    for (count, rate) in histogram.iter_mut().zip(intensity) {
        *count = poisson(rng, rate * (BASELINE_SECONDS - caught_seconds));
    }
    if let Some(model) = stalls {
        let caught = poisson(rng, scenario.rps * caught_seconds);
        spread(rng, caught, &model.buckets, &mut histogram);
    }
    Baseline::from_stable_histogram(&histogram, JudgeConfig::default().tail_quantile)
}

/// What the gateways counted per cohort range while every user was on stable, over
/// [`COHORT_BASELINE_SECONDS`] before the rollout.
fn cohort_baseline(users: &[User], rng: &mut StdRng) -> CohortBaseline {
    let (mut requests, mut errors) = (vec![0.0; RANGES], vec![0.0; RANGES]);
    for user in users {
        requests[range_of(user.bucket)] += user.rate;
        errors[range_of(user.bucket)] += user.rate * user.error_probability;
    }
    let draw = |rng: &mut StdRng, rates: Vec<f64>| -> Vec<u64> {
        rates.into_iter().map(|rate| poisson(rng, rate * COHORT_BASELINE_SECONDS)).collect()
    };
    CohortBaseline { requests: draw(rng, requests), errors: draw(rng, errors) }
}

/// One cell's requests in one tick.
#[derive(Default)]
struct CellDraw {
    errors: u64,
    /// Requests that kept their own latency, slower and not slower than the threshold.
    own_slow: u64,
    own_fast: u64,
    /// Requests caught by a stall, slower and not slower than the threshold.
    caught_slow: u64,
    caught_fast: u64,
}

impl CellDraw {
    fn requests(&self) -> u64 {
        self.own_slow + self.own_fast + self.caught_slow + self.caught_fast
    }

    fn slow(&self) -> u64 {
        self.own_slow + self.caught_slow
    }
}

/// Draws one cell; `stall` is the stall model and the share it catches in this tick, if any.
fn draw_cell(rng: &mut StdRng, rates: &CellRates, stall: Option<(&StallModel, f64)>) -> CellDraw {
    let mut error_slow = poisson(rng, rates.error_slow);
    let mut error_fast = poisson(rng, rates.error_fast);
    let mut ok_slow = poisson(rng, rates.ok_slow);
    let mut ok_fast = poisson(rng, rates.ok_fast);
    let mut draw = CellDraw::default();
    if let Some((model, share)) = stall {
        let mut catch = |count: &mut u64| {
            let caught = binomial(rng, *count, share);
            *count -= caught;
            caught
        };
        let caught_errors = catch(&mut error_slow) + catch(&mut error_fast);
        let caught_ok = catch(&mut ok_slow) + catch(&mut ok_fast);
        let timed_out = binomial(rng, caught_ok, model.stalls.failure_probability);
        let caught = caught_errors + caught_ok;
        draw.caught_slow = binomial(rng, caught, model.slow_probability);
        draw.caught_fast = caught - draw.caught_slow;
        draw.errors = caught_errors + timed_out;
    }
    draw.errors += error_slow + error_fast;
    draw.own_slow = error_slow + ok_slow;
    draw.own_fast = error_fast + ok_fast;
    draw
}

/// The traffic of one run, tick by tick: who is on which version, and the counters it makes.
struct Simulation<'a> {
    scenario: &'a Scenario,
    rng: StdRng,
    users: Vec<User>,
    traffic: Traffic,
    stalls: Option<StallModel>,
    on_canary: Vec<bool>,
    /// Users who move at later steps, with the second their pin to stable expires.
    moves: Vec<(u32, usize)>,
    next_move: usize,
    next_new_user: usize,
    tick: TickCounts,
}

impl<'a> Simulation<'a> {
    fn new(scenario: &'a Scenario, users: Vec<User>, stalls: Option<StallModel>, judge: &Judge, rng: StdRng) -> Self {
        let mut stalls = stalls;
        if let Some(model) = &mut stalls {
            model.set_slow_bucket(judge.slow_bucket());
        }
        let mut traffic = Traffic {
            cells: [vec![CellRates::default(); RANGES], vec![CellRates::default(); RANGES]],
            histogram: [[0.0; LATENCY_BUCKETS]; 2],
            slow_bucket: judge.slow_bucket(),
        };
        let initial = scenario.weight_at(0);
        let on_canary: Vec<bool> = users.iter().map(|u| u.bucket < initial).collect();
        for (user, &canary) in users.iter().zip(&on_canary) {
            traffic.apply(scenario, user, usize::from(canary), 1.0);
        }
        let mut tick = TickCounts::default();
        tick.canary.ranges = vec![RangeCounts::default(); RANGES];
        tick.stable.ranges = vec![RangeCounts::default(); RANGES];
        let mut simulation = Simulation {
            scenario,
            rng,
            users,
            traffic,
            stalls,
            on_canary,
            moves: Vec::new(),
            next_move: 0,
            next_new_user: 0,
            tick,
        };
        simulation.plan_moves();
        simulation
    }

    fn plan_moves(&mut self) {
        let expiry = Exp::new(1.0 / PIN_EXPIRY_MEAN_SECONDS).unwrap();
        for window in self.scenario.schedule.windows(2) {
            let ((_, from), (start, to)) = (window[0], window[1]);
            for (index, user) in self.users.iter().enumerate() {
                if (from..to).contains(&user.bucket) {
                    self.moves.push((start + expiry.sample(&mut self.rng) as u32, index));
                }
            }
        }
        self.moves.sort_unstable();
    }

    /// Moves users whose pin expired, sets the weight and routes first-time users.
    fn route(&mut self, second: u32) {
        while self.next_move < self.moves.len() && self.moves[self.next_move].0 <= second {
            let index = self.moves[self.next_move].1;
            if !self.on_canary[index] {
                self.traffic.apply(self.scenario, &self.users[index], 0, -1.0);
                self.traffic.apply(self.scenario, &self.users[index], 1, 1.0);
                self.on_canary[index] = true;
            }
            self.next_move += 1;
        }
        let weight = self.scenario.weight_at(second);
        self.tick.canary_weight = Weight::from_basis_points(weight).unwrap();
        while self.next_new_user < self.users.len() && self.users[self.next_new_user].first_second <= second {
            // A new user has no pin: the bucket hash alone routes them.
            if self.users[self.next_new_user].bucket < weight {
                self.tick.canary.new_users += 1;
            } else {
                self.tick.stable.new_users += 1;
            }
            self.next_new_user += 1;
        }
    }

    /// Adds one tick of requests to both versions' cumulative counters.
    fn draw_tick(&mut self) {
        for version in 0..2 {
            let stall = self.stalls.as_ref().map(|model| (model, model.caught_share(&mut self.rng)));
            let stall = stall.filter(|&(_, share)| share > 0.0);
            let counts = if version == 1 { &mut self.tick.canary } else { &mut self.tick.stable };
            let mut totals = CellDraw::default();
            for (range, rates) in counts.ranges.iter_mut().zip(&self.traffic.cells[version]) {
                let cell = draw_cell(&mut self.rng, rates, stall);
                range.requests += cell.requests();
                range.errors += cell.errors;
                range.slow += cell.slow();
                counts.requests += cell.requests();
                counts.errors += cell.errors;
                totals.own_slow += cell.own_slow;
                totals.own_fast += cell.own_fast;
                totals.caught_slow += cell.caught_slow;
                totals.caught_fast += cell.caught_fast;
            }
            let split = self.traffic.slow_bucket + 1;
            let intensity = &self.traffic.histogram[version];
            let (fast_buckets, slow_buckets) = counts.latency.split_at_mut(split);
            spread(&mut self.rng, totals.own_fast, &intensity[..split], fast_buckets);
            spread(&mut self.rng, totals.own_slow, &intensity[split..], slow_buckets);
            if let Some((model, _)) = stall {
                spread(&mut self.rng, totals.caught_fast, &model.buckets[..split], fast_buckets);
                spread(&mut self.rng, totals.caught_slow, &model.buckets[split..], slow_buckets);
            }
        }
    }
}

/// What one run showed. Seconds count from the start, or from the step's start for safety.
struct RunResult {
    /// First second each judge rolled back (`None`: never within the hour), and the metric.
    corrected: Option<(u32, Metric)>,
    plain: Option<(u32, Metric)>,
    cohort: Option<(u32, Metric)>,
    /// Whether the sample-ratio guard fired.
    mismatch: bool,
    /// Per step: seconds from its start until `decision(true)` was first `Advance`.
    safe_after: Vec<Option<u32>>,
    /// The same for the judge with the cohort baseline.
    cohort_safe_after: Vec<Option<u32>>,
}

/// The judge as configured for production without and with the cohort baseline, and the
/// same without the dispersion correction.
struct Judges {
    corrected: Judge,
    plain: Judge,
    cohort: Judge,
    result: RunResult,
    step: usize,
    step_start: u32,
}

impl Judges {
    fn new(baseline: Baseline, cohort: CohortBaseline, steps: usize) -> Judges {
        let corrected_config = JudgeConfig::default();
        let plain_config = JudgeConfig { correct_dispersion: false, ..corrected_config };
        let mut corrected = Judge::new(corrected_config, baseline.clone()).expect("baseline has a tail");
        corrected.begin_step();
        let mut with_cohort =
            Judge::new(corrected_config, baseline.clone().with_cohort(cohort)).expect("baseline has a tail");
        with_cohort.begin_step();
        Judges {
            corrected,
            plain: Judge::new(plain_config, baseline).expect("baseline has a tail"),
            cohort: with_cohort,
            result: RunResult {
                corrected: None,
                plain: None,
                cohort: None,
                mismatch: false,
                safe_after: vec![None; steps],
                cohort_safe_after: vec![None; steps],
            },
            step: 0,
            step_start: 0,
        }
    }

    fn observe(&mut self, tick: &TickCounts, second: u32, step: usize) {
        if step != self.step {
            self.step = step;
            self.step_start = second;
            self.corrected.begin_step();
            self.cohort.begin_step();
        }
        for (judge, outcome) in [
            (&mut self.corrected, &mut self.result.corrected),
            (&mut self.plain, &mut self.result.plain),
            (&mut self.cohort, &mut self.result.cohort),
        ] {
            if outcome.is_none() {
                judge.observe(tick).expect("ticks are well formed");
                if let Some(metric) = judge.rollback_reason() {
                    *outcome = Some((second + 1, metric));
                }
            }
        }
        self.result.mismatch |= self.corrected.sample_ratio_mismatch();
        for (judge, safe) in [
            (&self.corrected, &mut self.result.safe_after[step]),
            (&self.cohort, &mut self.result.cohort_safe_after[step]),
        ] {
            if safe.is_none() && judge.decision(true) == StepDecision::Advance {
                *safe = Some(second + 1 - self.step_start);
            }
        }
    }

    fn all_rolled_back(&self) -> bool {
        self.result.corrected.is_some() && self.result.plain.is_some() && self.result.cohort.is_some()
    }
}

fn run(scenario: &Scenario, seed: u64) -> RunResult {
    let mut rng = StdRng::seed_from_u64(seed);
    let users = population(scenario, &mut rng);
    let stalls = StallModel::draw(scenario, &mut rng);
    let baseline = baseline(scenario, &users, stalls.as_ref(), &mut rng);
    let cohort = cohort_baseline(&users, &mut rng);
    let mut judges = Judges::new(baseline, cohort, scenario.schedule.len());
    let mut simulation = Simulation::new(scenario, users, stalls, &judges.corrected, rng);
    for second in 0..HOUR {
        simulation.route(second);
        simulation.draw_tick();
        judges.observe(&simulation.tick, second, scenario.step_at(second));
        if !scenario.is_aa() && judges.all_rolled_back() {
            break;
        }
    }
    judges.result
}

fn run_all(scenario: &Scenario, index: u64, runs: usize, threads: usize) -> Vec<RunResult> {
    let mut results: Vec<(usize, RunResult)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                scope.spawn(move || {
                    (worker..runs)
                        .step_by(threads)
                        .map(|r| (r, run(scenario, SEED ^ (index << 32) ^ r as u64)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    results.sort_by_key(|(r, _)| *r);
    results.into_iter().map(|(_, result)| result).collect()
}

fn percentile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The Wilson score interval at 95 % for `successes` of `trials`.
fn wilson(successes: usize, trials: usize) -> (f64, f64) {
    const Z: f64 = 1.96;
    let (k, n) = (successes as f64, trials as f64);
    let centre = (k + Z * Z / 2.0) / (n + Z * Z);
    let half = Z / (n + Z * Z) * (k * (n - k) / n + Z * Z / 4.0).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Errors => "errors",
        Metric::LatencyTail => "tail",
        Metric::LatencyP50 => "p50",
        Metric::LatencyP90 => "p90",
        Metric::SampleRatio => "srm",
        Metric::Team => "team",
    }
}

/// `errors 3, tail 1` — which metrics fired first.
fn by_metric(outcomes: &[Option<(u32, Metric)>]) -> String {
    let mut parts = Vec::new();
    for metric in Metric::ROLLBACK {
        let n = outcomes.iter().filter(|o| o.is_some_and(|(_, m)| m == metric)).count();
        if n > 0 {
            parts.push(format!("{} {n}", metric_name(metric)));
        }
    }
    if parts.is_empty() { "—".to_string() } else { parts.join(", ") }
}

fn delays(outcomes: &[Option<(u32, Metric)>], only: Option<Metric>) -> Vec<u32> {
    let mut out: Vec<u32> =
        outcomes.iter().flatten().filter(|(_, m)| only.is_none_or(|o| o == *m)).map(|(s, _)| *s).collect();
    out.sort_unstable();
    out
}

fn show(value: Option<u32>) -> String {
    value.map_or("—".to_string(), |v| format!("{v} s"))
}

/// Sorted seconds until safety in step `step`, over the runs that got there.
fn safety_times(results: &[RunResult], step: usize, cohort: bool) -> Vec<u32> {
    let pick = |r: &RunResult| if cohort { r.cohort_safe_after[step] } else { r.safe_after[step] };
    let mut out: Vec<u32> = results.iter().filter_map(pick).collect();
    out.sort_unstable();
    out
}

fn aa_row(scenario: &Scenario, results: &[RunResult]) -> String {
    let runs = results.len();
    let corrected: Vec<_> = results.iter().map(|r| r.corrected).collect();
    let fired = corrected.iter().flatten().count();
    let plain_fired = results.iter().filter(|r| r.plain.is_some()).count();
    let mismatches = results.iter().filter(|r| r.mismatch).count();
    let (low, high) = wilson(fired, runs);
    let safe = safety_times(results, 0, false);
    let alpha = JudgeConfig::default().alpha;
    let cohort: Vec<_> = results.iter().map(|r| r.cohort).collect();
    let cohort_fired = cohort.iter().flatten().count();
    let (cohort_low, cohort_high) = wilson(cohort_fired, runs);
    let cohort_safe = safety_times(results, 0, true);
    format!(
        "| {} | {fired}/{runs} ({:.1} %) | {:.1}–{:.1} % | {} | {} | {} | {plain_fired}/{runs} | {mismatches}/{runs} | {} | {} | {}/{runs} | {cohort_fired}/{runs} ({:.1}–{:.1} %) {} | {} | {}/{runs} |",
        scenario.name,
        100.0 * fired as f64 / runs as f64,
        100.0 * low,
        100.0 * high,
        if (fired as f64) <= alpha * runs as f64 { "yes" } else { "**no**" },
        by_metric(&corrected),
        show(percentile(&delays(&corrected, None), 0.5)),
        show(percentile(&safe, 0.5)),
        show(percentile(&safe, 0.95)),
        runs - safe.len(),
        100.0 * cohort_low,
        100.0 * cohort_high,
        by_metric(&cohort),
        show(percentile(&cohort_safe, 0.5)),
        runs - cohort_safe.len(),
    )
}

fn detection_row(scenario: &Scenario, results: &[RunResult]) -> String {
    let runs = results.len();
    let corrected: Vec<_> = results.iter().map(|r| r.corrected).collect();
    let plain: Vec<_> = results.iter().map(|r| r.plain).collect();
    let target = if scenario.canary_latency_factor != 1.0 { Metric::LatencyTail } else { Metric::Errors };
    let any = delays(&corrected, None);
    let own = delays(&corrected, Some(target));
    let plain_any = delays(&plain, None);
    let shown_safe = results.iter().filter(|r| r.safe_after.iter().any(Option::is_some)).count();
    let cohort: Vec<_> = results.iter().map(|r| r.cohort).collect();
    let cohort_any = delays(&cohort, None);
    let cohort_safe = results.iter().filter(|r| r.cohort_safe_after.iter().any(Option::is_some)).count();
    format!(
        "| {} | {}/{runs} | {} | {} | {} ({}) | {} | {} | {shown_safe}/{runs} | {}/{runs} | {} | {} | {} | {cohort_safe}/{runs} |",
        scenario.name,
        any.len(),
        show(percentile(&any, 0.5)),
        show(percentile(&any, 0.95)),
        by_metric(&corrected),
        metric_name(target),
        show(percentile(&own, 0.5)),
        show(percentile(&plain_any, 0.5)),
        cohort_any.len(),
        show(percentile(&cohort_any, 0.5)),
        show(percentile(&cohort_any, 0.95)),
        by_metric(&cohort),
    )
}

/// One row per step: how often, and how soon after the step began, it was shown safe.
fn step_rows(scenario: &Scenario, results: &[RunResult]) -> Vec<String> {
    let runs = results.len();
    scenario
        .schedule
        .iter()
        .enumerate()
        .map(|(step, &(start, weight))| {
            let end = scenario.schedule.get(step + 1).map_or(HOUR, |next| next.0);
            let safe = safety_times(results, step, false);
            let cohort_safe = safety_times(results, step, true);
            format!(
                "| {} | {} % | {}–{} min | {}/{runs} | {} | {} | {}/{runs} | {} |",
                scenario.name,
                f64::from(weight) / 100.0,
                start / 60,
                end / 60,
                safe.len(),
                show(percentile(&safe, 0.5)),
                show(percentile(&safe, 0.95)),
                cohort_safe.len(),
                show(percentile(&cohort_safe, 0.5)),
            )
        })
        .collect()
}

/// A process that stalls now and then (a garbage collection, a lock): every 20–60 s, catching
/// 30–100 % of the tick's requests at about 400 ms.
const PROCESS_STALLS: Stalls = Stalls {
    mean_interval_seconds: (20.0, 60.0),
    caught_share: (0.3, 1.0),
    latency_median_seconds: 0.4,
    failure_probability: 0.0,
};

/// The same stalls, and a fifth of the caught requests time out.
const STALLS_WITH_TIMEOUTS: Stalls = Stalls { failure_probability: 0.2, ..PROCESS_STALLS };

/// A CPU-hungry neighbour: short stalls every 3–8 s, catching 10–40 % at about 120 ms.
const NOISY_NEIGHBOUR: Stalls = Stalls {
    mean_interval_seconds: (3.0, 8.0),
    caught_share: (0.1, 0.4),
    latency_median_seconds: 0.12,
    failure_probability: 0.0,
};

/// Every scenario, in a fixed order: a scenario's seeds depend on its place in the list, so
/// new scenarios go at the end and leave the others' draws as they were.
fn scenarios() -> Vec<Scenario> {
    let steady = vec![(0, 1_000)];
    let steps = vec![(0, 100), (720, 500), (1_440, 1_000), (2_160, 2_500), (2_880, 5_000)];
    let aa = |name, rps, users, schedule: &Vec<(u32, u16)>, stalls| Scenario {
        name,
        rps,
        users,
        schedule: schedule.clone(),
        canary_error_factor: 1.0,
        canary_latency_factor: 1.0,
        median_seconds: MEDIAN_SECONDS,
        stalls,
    };
    let with_median = |median_seconds, scenario: Scenario| Scenario { median_seconds, ..scenario };
    let regression = |name, users, error, latency, stalls| Scenario {
        name,
        rps: 100.0,
        users,
        schedule: steady.clone(),
        canary_error_factor: error,
        canary_latency_factor: latency,
        median_seconds: MEDIAN_SECONDS,
        stalls,
    };
    vec![
        aa("A/A homogeneous, 10 rps", 10.0, Users::Homogeneous, &steady, None),
        aa("A/A homogeneous, 100 rps", 100.0, Users::Homogeneous, &steady, None),
        aa("A/A homogeneous, 1000 rps", 1_000.0, Users::Homogeneous, &steady, None),
        aa("A/A sticky heterogeneous, 10 rps", 10.0, Users::Sticky, &steady, None),
        aa("A/A sticky heterogeneous, 100 rps", 100.0, Users::Sticky, &steady, None),
        aa("A/A sticky heterogeneous, 1000 rps", 1_000.0, Users::Sticky, &steady, None),
        aa("A/A sticky heterogeneous, 100 rps, steps 1→5→10→25→50 %", 100.0, Users::Sticky, &steps, None),
        regression("errors 1 % → 5 %, homogeneous", Users::Homogeneous, 5.0, 1.0, None),
        regression("errors 1 % → 2 %, homogeneous", Users::Homogeneous, 2.0, 1.0, None),
        regression("latency ×1.5, homogeneous", Users::Homogeneous, 1.0, 1.5, None),
        regression("errors ×5, sticky heterogeneous", Users::Sticky, 5.0, 1.0, None),
        regression("errors ×2, sticky heterogeneous", Users::Sticky, 2.0, 1.0, None),
        regression("latency ×1.5, sticky heterogeneous", Users::Sticky, 1.0, 1.5, None),
        aa("A/A homogeneous, 100 rps, stalls", 100.0, Users::Homogeneous, &steady, Some(PROCESS_STALLS)),
        aa("A/A sticky heterogeneous, 100 rps, stalls", 100.0, Users::Sticky, &steady, Some(PROCESS_STALLS)),
        aa(
            "A/A sticky heterogeneous, 100 rps, stalls with timeouts",
            100.0,
            Users::Sticky,
            &steady,
            Some(STALLS_WITH_TIMEOUTS),
        ),
        aa("A/A sticky heterogeneous, 100 rps, noisy neighbour", 100.0, Users::Sticky, &steady, Some(NOISY_NEIGHBOUR)),
        regression("errors 1 % → 5 %, homogeneous, stalls", Users::Homogeneous, 5.0, 1.0, Some(PROCESS_STALLS)),
        regression("latency ×1.5, homogeneous, stalls", Users::Homogeneous, 1.0, 1.5, Some(PROCESS_STALLS)),
        with_median(0.06, aa("A/A homogeneous, 100 rps, median 60 ms", 100.0, Users::Homogeneous, &steady, None)),
        with_median(0.035, aa("A/A homogeneous, 100 rps, median 35 ms", 100.0, Users::Homogeneous, &steady, None)),
    ]
}

/// What the command line asks for: runs per scenario, and which scenarios.
struct Args {
    runs: usize,
    /// Only scenarios whose name contains this (each keeps its own seed).
    only: Option<String>,
}

fn args() -> Args {
    let mut parsed = Args { runs: DEFAULT_RUNS, only: None };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                parsed.runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--runs takes a positive number");
            }
            "--only" => parsed.only = Some(args.next().expect("--only takes part of a scenario's name")),
            _ => panic!("unknown argument {arg:?}; the arguments are --runs N and --only TEXT"),
        }
    }
    parsed
}

fn main() {
    let Args { runs, only } = args();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let (mut aa_rows, mut detection_rows, mut per_step_rows) = (Vec::new(), Vec::new(), Vec::new());
    let chosen = |scenario: &Scenario| only.as_ref().is_none_or(|text| scenario.name.contains(text.as_str()));
    for (index, scenario) in scenarios().iter().enumerate().filter(|(_, s)| chosen(s)) {
        let scenario_started = Instant::now();
        let results = run_all(scenario, index as u64, runs, threads);
        if scenario.is_aa() {
            aa_rows.push(aa_row(scenario, &results));
        } else {
            detection_rows.push(detection_row(scenario, &results));
        }
        if scenario.schedule.len() > 1 {
            per_step_rows.extend(step_rows(scenario, &results));
        }
        eprintln!("  {} done in {:.1} s", scenario.name, scenario_started.elapsed().as_secs_f64());
    }
    println!("judge_sim: {runs} runs per scenario, {threads} threads, seed {SEED:#x}\n");
    println!("A/A (identical versions; shown safe = seconds until `decision(true)` is first `Advance`):\n");
    println!(
        "| scenario | false rollbacks | 95 % interval (Wilson) | ≤ α | first metric | at (median) | plain count test | SRM flags | shown safe: median | p95 | never safe within 1 h | cohort baseline: false rollbacks (95 %) | shown safe: median | never safe |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    aa_rows.iter().for_each(|row| println!("{row}"));
    println!("\nSteps (seconds from the step's start until it is shown safe):\n");
    println!(
        "| scenario | weight | minutes | shown safe within the step | median | p95 | cohort baseline: shown safe | median |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    per_step_rows.iter().for_each(|row| println!("{row}"));
    println!("\nDetection at 100 rps, 10 % canary (delay = seconds from the start to the rollback):\n");
    println!(
        "| scenario | detected within 1 h | median | p95 | first metric | median, that metric alone fired first | plain test median | shown safe before a rollback | cohort baseline: detected | median | p95 | first metric | shown safe before a rollback |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    detection_rows.iter().for_each(|row| println!("{row}"));
    eprintln!("judge_sim: {:.0} s in all", started.elapsed().as_secs_f64());
}
