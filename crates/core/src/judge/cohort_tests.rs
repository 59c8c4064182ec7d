//! The cohort baseline end to end: a canary cohort that holds an error-prone user.

use super::*;
use crate::cohort::RANGES;

/// Ranges `0..10` are the canary's (10 %); range 3 holds a user who fails 20 % of requests, the
/// rest fail 1 %.
fn range_error_rate(range: usize) -> f64 {
    if range == 3 { 0.2 } else { 0.01 }
}

fn cohort_baseline() -> CohortBaseline {
    let requests = vec![20_000; RANGES];
    let errors = (0..RANGES).map(|r| (range_error_rate(r) * 20_000.0) as u64).collect();
    CohortBaseline { requests, errors }
}

fn latency_baseline() -> Baseline {
    let mut histogram = [0u64; LATENCY_BUCKETS];
    histogram[8] = 9_900;
    histogram[12] = 100;
    Baseline::from_stable_histogram(&histogram, 0.99)
}

/// Ticks of 20 requests per range, errors at each range's rate times `canary_factor` on the
/// canary, rounded deterministically (the running remainder carries over).
struct CohortFeed {
    tick: TickCounts,
    remainders: Vec<f64>,
    canary_factor: f64,
}

impl CohortFeed {
    fn new(canary_factor: f64) -> CohortFeed {
        let mut tick = TickCounts { canary_weight: Weight::from_basis_points(1_000).unwrap(), ..TickCounts::default() };
        tick.canary.ranges = vec![RangeCounts::default(); RANGES];
        tick.stable.ranges = vec![RangeCounts::default(); RANGES];
        CohortFeed { tick, remainders: vec![0.0; RANGES], canary_factor }
    }

    fn next(&mut self) -> &TickCounts {
        for range in 0..RANGES {
            let canary = range < 10;
            let factor = if canary { self.canary_factor } else { 1.0 };
            self.remainders[range] += 20.0 * range_error_rate(range) * factor;
            let errors = self.remainders[range].floor() as u64;
            self.remainders[range] -= errors as f64;
            let counts = if canary { &mut self.tick.canary } else { &mut self.tick.stable };
            counts.requests += 20;
            counts.errors += errors;
            counts.new_users += 2;
            counts.latency[8] += 20;
            let cell = &mut counts.ranges[range];
            cell.requests += 20;
            cell.errors += errors;
        }
        &self.tick
    }
}

fn judge(with_cohort: bool) -> Judge {
    let config = JudgeConfig { min_requests_per_version: 1_000, ..JudgeConfig::default() };
    let baseline = if with_cohort { latency_baseline().with_cohort(cohort_baseline()) } else { latency_baseline() };
    let mut judge = Judge::new(config, baseline).unwrap();
    judge.begin_step();
    judge
}

fn errors_verdict(judge: &Judge) -> MetricVerdict {
    judge.verdicts().into_iter().find(|v| v.metric == Metric::Errors).unwrap()
}

#[test]
fn an_error_prone_user_in_the_canary_cohort_is_expected_not_blamed() {
    let (mut plain, mut adjusted) = (judge(false), judge(true));
    assert!(adjusted.uses_cohort_baseline() && !plain.uses_cohort_baseline());
    let mut feed = CohortFeed::new(1.0);
    for _ in 0..600 {
        let tick = feed.next().clone();
        plain.observe(&tick).unwrap();
        adjusted.observe(&tick).unwrap();
    }
    // Without the baseline the canary's errors are 2.9× stable's and only the dispersion keeps
    // that from a rollback; the canary is never shown safe.
    let raw = errors_verdict(&plain);
    assert!(raw.estimate.unwrap() > 2.5, "{raw:?}");
    assert_ne!(raw.verdict, Verdict::Pass, "{raw:?}");
    // Against its own history the canary cohort is as good as before: shown safe.
    let verdict = errors_verdict(&adjusted);
    assert!((verdict.estimate.unwrap() - 1.0).abs() < 0.05, "{verdict:?}");
    assert_eq!(verdict.verdict, Verdict::Pass, "{verdict:?}");
    assert_eq!(adjusted.rollback_reason(), None);
}

#[test]
fn a_doubled_error_rate_is_caught_against_the_cohort_s_history() {
    let mut judge = judge(true);
    let mut feed = CohortFeed::new(2.0);
    let mut rolled_back_at = None;
    for second in 0..600 {
        judge.observe(&feed.next().clone()).unwrap();
        if judge.rollback_reason().is_some() {
            rolled_back_at = Some(second);
            break;
        }
    }
    assert!(rolled_back_at.is_some(), "{:?}", errors_verdict(&judge));
    let verdict = errors_verdict(&judge);
    assert_eq!(verdict.verdict, Verdict::Worse);
    assert!((verdict.estimate.unwrap() - 2.0).abs() < 0.2, "{verdict:?}");
    let lower = verdict.interval.lower.unwrap();
    assert!(
        lower >= JudgeConfig::default().tolerances.errors.worse_above,
        "a rollback's interval excludes 'not worse': {verdict:?}"
    );
}

#[test]
fn a_judge_with_a_cohort_baseline_survives_its_json() {
    let mut judge = judge(true);
    let mut feed = CohortFeed::new(1.0);
    for _ in 0..50 {
        judge.observe(&feed.next().clone()).unwrap();
    }
    let restored: Judge = serde_json::from_str(&serde_json::to_string(&judge).unwrap()).unwrap();
    assert!(restored.uses_cohort_baseline());
    assert_eq!(serde_json::to_value(restored.verdicts()).unwrap(), serde_json::to_value(judge.verdicts()).unwrap());
}

#[test]
fn a_baseline_too_small_to_use_is_ignored() {
    let tiny = CohortBaseline { requests: vec![10; RANGES], errors: vec![0; RANGES] };
    let judge = Judge::new(JudgeConfig::default(), latency_baseline().with_cohort(tiny)).unwrap();
    assert!(!judge.uses_cohort_baseline());
}
