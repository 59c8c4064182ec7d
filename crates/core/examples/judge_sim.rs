//! Seeded simulation of the judge: false rollbacks of identical versions (A/A) and detection
//! delays of real regressions, at 10 % canary traffic unless a scenario says otherwise.
//!
//! Run: `cargo run --release -p canary-core --example judge_sim [-- --runs N]`
//!
//! # Model
//!
//! Users are modelled one by one, because routing is sticky per user: each user has a bucket
//! (uniform in 0..10,000, canary when below the weight), a request rate, an error probability
//! and a latency scale. Requests of a user are a Poisson process, and errors and slow requests
//! are independent thinnings of it, so the counts of a (version, user group) cell in one tick
//! are exactly Poisson with the summed rates of its users. The simulation therefore draws four
//! Poisson counts per cell and tick (error/ok × slow/fast) instead of one event per request,
//! and updates a cell's rates only when a user changes version. Latency is log-normal (median
//! 50 ms, σ 0.5) times the user's scale; a version's histogram is its slow and fast totals
//! spread over the buckets in proportion to its users' bucket probabilities.
//!
//! * homogeneous: identical users, 1 % errors — equivalent to random per-request routing;
//! * sticky: request rates log-normal (σ 1.5: heavy users), 5 % of users fail 10 % of their
//!   requests and the rest 0.53 %, latency scale log-normal (σ 0.3) per user.
//!
//! After a weight step, users who moved to the canary follow after an exponential delay (mean
//! 5 min), as if their pin to stable expired: the observed request share lags the weight.
//! Each run draws a new population and a new baseline (10 minutes of stable-only traffic).

#[allow(clippy::disallowed_types, reason = "a synchronous simulation timing itself; core has no async runtime")]
use std::time::Instant;

use canary_core::judge::{Baseline, GroupCounts, Judge, JudgeConfig, Metric, TickCounts};
use canary_core::latency::{LATENCY_BOUNDS_SECONDS, LATENCY_BUCKETS};
use canary_core::weight::Weight;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution, Exp, LogNormal, Poisson};
use statrs::function::erf::erfc;

const GROUPS: usize = 64;
const HOUR: u32 = 3_600;
const MEDIAN_SECONDS: f64 = 0.05;
const LATENCY_SIGMA: f64 = 0.5;
const USERS_PER_RPS: f64 = 20.0;
const PIN_EXPIRY_MEAN_SECONDS: f64 = 300.0;
const BASELINE_SECONDS: f64 = 600.0;
const SEED: u64 = 0x5EED_CA4A;

#[derive(Clone, Copy, PartialEq)]
enum Users {
    Homogeneous,
    Sticky,
}

#[derive(Clone)]
struct Scenario {
    name: &'static str,
    rps: f64,
    users: Users,
    /// `(start second, weight in basis points)`.
    schedule: Vec<(u32, u16)>,
    canary_error_factor: f64,
    canary_latency_factor: f64,
}

impl Scenario {
    fn is_aa(&self) -> bool {
        self.canary_error_factor == 1.0 && self.canary_latency_factor == 1.0
    }
}

struct User {
    bucket: u16,
    rate: f64,
    error_probability: f64,
    latency_scale: f64,
    first_second: u32,
}

/// Expected per-second counts of one (version, group) cell.
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

/// Probability of each latency bucket for a user with this latency scale.
fn bucket_probabilities(scale: f64) -> [f64; LATENCY_BUCKETS] {
    let mut out = [0.0; LATENCY_BUCKETS];
    let mut below = 0.0;
    let log_median = (MEDIAN_SECONDS * scale).ln();
    for (bucket, bound) in LATENCY_BOUNDS_SECONDS.iter().enumerate() {
        let cdf = standard_normal_cdf((bound.ln() - log_median) / LATENCY_SIGMA);
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
                Users::Homogeneous => {
                    User { bucket, rate: 1.0, error_probability: 0.01, latency_scale: 1.0, first_second: 0 }
                }
                Users::Sticky => User {
                    bucket,
                    rate: heavy.sample(rng),
                    error_probability: if rng.random::<f64>() < 0.05 { 0.10 } else { 0.0053 },
                    latency_scale: latency.sample(rng),
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
        let buckets = bucket_probabilities(user.latency_scale * latency_factor);
        let slow: f64 = buckets[self.slow_bucket + 1..].iter().sum();
        let cell = &mut self.cells[version][usize::from(user.bucket) % GROUPS];
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

fn baseline(users: &[User], rng: &mut StdRng) -> Baseline {
    let mut intensity = [0.0; LATENCY_BUCKETS];
    for user in users {
        for (total, b) in intensity.iter_mut().zip(bucket_probabilities(user.latency_scale)) {
            *total += user.rate * b;
        }
    }
    let mut histogram = [0u64; LATENCY_BUCKETS];
    for (count, rate) in histogram.iter_mut().zip(intensity) {
        *count = poisson(rng, rate * BASELINE_SECONDS);
    }
    Baseline::from_stable_histogram(&histogram, JudgeConfig::default().tail_quantile)
}

/// First second each judge rolled back (`None`: never within the hour), the metric, and
/// whether the sample-ratio guard fired.
struct RunResult {
    corrected: Option<(u32, Metric)>,
    plain: Option<(u32, Metric)>,
    mismatch: bool,
}

fn run(scenario: &Scenario, seed: u64) -> RunResult {
    let mut rng = StdRng::seed_from_u64(seed);
    let users = population(scenario, &mut rng);
    let baseline = baseline(&users, &mut rng);
    let corrected_config = JudgeConfig { user_groups: GROUPS, ..JudgeConfig::default() };
    let plain_config = JudgeConfig { correct_dispersion: false, ..corrected_config };
    let mut corrected = Judge::new(corrected_config, baseline).expect("baseline has a tail");
    let mut plain = Judge::new(plain_config, baseline).expect("baseline has a tail");
    let mut traffic = Traffic {
        cells: [vec![CellRates::default(); GROUPS], vec![CellRates::default(); GROUPS]],
        histogram: [[0.0; LATENCY_BUCKETS]; 2],
        slow_bucket: corrected.slow_bucket(),
    };
    let weight_at = |second: u32| scenario.schedule.iter().rev().find(|(start, _)| *start <= second).map_or(0, |s| s.1);
    let initial = weight_at(0);
    let mut on_canary: Vec<bool> = users.iter().map(|u| u.bucket < initial).collect();
    for (user, &canary) in users.iter().zip(&on_canary) {
        traffic.apply(scenario, user, usize::from(canary), 1.0);
    }
    // Users who move at later steps, with the second their pin to stable expires.
    let mut moves: Vec<(u32, usize)> = Vec::new();
    for window in scenario.schedule.windows(2) {
        let ((_, from), (start, to)) = (window[0], window[1]);
        let expiry = Exp::new(1.0 / PIN_EXPIRY_MEAN_SECONDS).unwrap();
        for (index, user) in users.iter().enumerate() {
            if (from..to).contains(&user.bucket) {
                moves.push((start + expiry.sample(&mut rng) as u32, index));
            }
        }
    }
    moves.sort_unstable();
    let mut next_move = 0;
    let mut next_new_user = 0;

    let mut tick = TickCounts::default();
    tick.canary.groups = vec![GroupCounts::default(); GROUPS];
    tick.stable.groups = vec![GroupCounts::default(); GROUPS];
    let mut result = RunResult { corrected: None, plain: None, mismatch: false };
    let stop_early = !scenario.is_aa();
    for second in 0..HOUR {
        while next_move < moves.len() && moves[next_move].0 <= second {
            let index = moves[next_move].1;
            if !on_canary[index] {
                traffic.apply(scenario, &users[index], 0, -1.0);
                traffic.apply(scenario, &users[index], 1, 1.0);
                on_canary[index] = true;
            }
            next_move += 1;
        }
        let weight = weight_at(second);
        tick.canary_weight = Weight::from_basis_points(weight).unwrap();
        while next_new_user < users.len() && users[next_new_user].first_second <= second {
            // A new user has no pin: the bucket hash alone routes them.
            if users[next_new_user].bucket < weight {
                tick.canary.new_users += 1;
            } else {
                tick.stable.new_users += 1;
            }
            next_new_user += 1;
        }
        for version in 0..2 {
            let counts = if version == 1 { &mut tick.canary } else { &mut tick.stable };
            let (mut slow_total, mut fast_total) = (0, 0);
            for (group, rates) in counts.groups.iter_mut().zip(&traffic.cells[version]) {
                let error_slow = poisson(&mut rng, rates.error_slow);
                let error_fast = poisson(&mut rng, rates.error_fast);
                let ok_slow = poisson(&mut rng, rates.ok_slow);
                let ok_fast = poisson(&mut rng, rates.ok_fast);
                let (slow, errors) = (error_slow + ok_slow, error_slow + error_fast);
                let requests = slow + error_fast + ok_fast;
                group.errors += errors;
                group.slow += slow;
                counts.requests += requests;
                counts.errors += errors;
                slow_total += slow;
                fast_total += requests - slow;
            }
            let split = traffic.slow_bucket + 1;
            let intensity = &traffic.histogram[version];
            let (fast_buckets, slow_buckets) = counts.latency.split_at_mut(split);
            spread(&mut rng, fast_total, &intensity[..split], fast_buckets);
            spread(&mut rng, slow_total, &intensity[split..], slow_buckets);
        }
        for (judge, outcome) in [(&mut corrected, &mut result.corrected), (&mut plain, &mut result.plain)] {
            if outcome.is_none() {
                judge.observe(&tick).expect("ticks are well formed");
                if let Some(metric) = judge.rollback_reason() {
                    *outcome = Some((second + 1, metric));
                }
            }
        }
        result.mismatch |= corrected.sample_ratio_mismatch();
        if stop_early && result.corrected.is_some() && result.plain.is_some() {
            break;
        }
    }
    result
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

fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Errors => "errors",
        Metric::LatencyTail => "tail",
        Metric::LatencyP50 => "p50",
        Metric::LatencyP90 => "p90",
        Metric::SampleRatio => "srm",
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

fn main() {
    let mut runs = 1_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--runs" {
            runs = args.next().and_then(|v| v.parse().ok()).expect("--runs takes a number");
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let steady = vec![(0, 1_000)];
    let steps = vec![(0, 100), (720, 500), (1_440, 1_000), (2_160, 2_500), (2_880, 5_000)];
    let aa = |name, rps, users, schedule: &Vec<(u32, u16)>| Scenario {
        name,
        rps,
        users,
        schedule: schedule.clone(),
        canary_error_factor: 1.0,
        canary_latency_factor: 1.0,
    };
    let regression = |name, users, error, latency| Scenario {
        name,
        rps: 100.0,
        users,
        schedule: steady.clone(),
        canary_error_factor: error,
        canary_latency_factor: latency,
    };
    let scenarios = vec![
        aa("A/A homogeneous, 10 rps", 10.0, Users::Homogeneous, &steady),
        aa("A/A homogeneous, 100 rps", 100.0, Users::Homogeneous, &steady),
        aa("A/A homogeneous, 1000 rps", 1_000.0, Users::Homogeneous, &steady),
        aa("A/A sticky heterogeneous, 10 rps", 10.0, Users::Sticky, &steady),
        aa("A/A sticky heterogeneous, 100 rps", 100.0, Users::Sticky, &steady),
        aa("A/A sticky heterogeneous, 1000 rps", 1_000.0, Users::Sticky, &steady),
        aa("A/A sticky heterogeneous, 100 rps, steps 1→5→10→25→50 %", 100.0, Users::Sticky, &steps),
        regression("errors 1 % → 5 %, homogeneous", Users::Homogeneous, 5.0, 1.0),
        regression("errors 1 % → 2 %, homogeneous", Users::Homogeneous, 2.0, 1.0),
        regression("latency ×1.5, homogeneous", Users::Homogeneous, 1.0, 1.5),
        regression("errors ×5, sticky heterogeneous", Users::Sticky, 5.0, 1.0),
        regression("errors ×2, sticky heterogeneous", Users::Sticky, 2.0, 1.0),
        regression("latency ×1.5, sticky heterogeneous", Users::Sticky, 1.0, 1.5),
    ];
    println!("judge_sim: {runs} runs per scenario, {threads} threads, seed {SEED:#x}\n");
    println!("| scenario | false rollbacks (corrected) | first metric | plain count test | SRM flags |");
    println!("|---|---|---|---|---|");
    let mut detection_rows = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        #[allow(clippy::disallowed_types, reason = "wall time of a synchronous simulation run")]
        let started = Instant::now();
        let results = run_all(scenario, index as u64, runs, threads);
        let corrected: Vec<_> = results.iter().map(|r| r.corrected).collect();
        let plain: Vec<_> = results.iter().map(|r| r.plain).collect();
        let elapsed = started.elapsed().as_secs_f64();
        if scenario.is_aa() {
            let fired = corrected.iter().flatten().count();
            let plain_fired = plain.iter().flatten().count();
            let mismatches = results.iter().filter(|r| r.mismatch).count();
            println!(
                "| {} | {fired}/{runs} | {} | {plain_fired}/{runs} | {mismatches}/{runs} |",
                scenario.name,
                by_metric(&corrected),
            );
        } else {
            let target = if scenario.canary_latency_factor != 1.0 { Metric::LatencyTail } else { Metric::Errors };
            let any = delays(&corrected, None);
            let own = delays(&corrected, Some(target));
            let plain_any = delays(&plain, None);
            detection_rows.push(format!(
                "| {} | {}/{runs} | {} | {} | {} ({}) | {} | {} |",
                scenario.name,
                any.len(),
                show(percentile(&any, 0.5)),
                show(percentile(&any, 0.95)),
                by_metric(&corrected),
                metric_name(target),
                show(percentile(&own, 0.5)),
                show(percentile(&plain_any, 0.5)),
            ));
        }
        eprintln!("  {} done in {elapsed:.1} s", scenario.name);
    }
    println!("\nDetection at 100 rps, 10 % canary (delay = seconds from the start to the rollback):\n");
    println!(
        "| scenario | detected within 1 h | median | p95 | first metric | median, that metric alone fired first | plain test median |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in detection_rows {
        println!("{row}");
    }
}
