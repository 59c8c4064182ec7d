//! The judge end to end on hand-made ticks.

use super::*;

/// A baseline whose tail threshold is the 10 ms boundary (bucket 8): 1 % of stable is slower.
fn baseline() -> Baseline {
    let mut histogram = [0u64; LATENCY_BUCKETS];
    histogram[8] = 9_900;
    histogram[12] = 100;
    Baseline::from_stable_histogram(&histogram, 0.99)
}

/// The mechanics without the latency floor, which would hide the millisecond tails used here.
fn config() -> JudgeConfig {
    JudgeConfig { ranges: 0, min_requests_per_version: 1_000, latency_floor_seconds: 0.0, ..JudgeConfig::default() }
}

/// Accumulates per-tick increments into the cumulative counters the judge expects.
struct Feed {
    tick: TickCounts,
}

impl Feed {
    fn new(weight_bp: u16) -> Feed {
        let canary_weight = Weight::from_basis_points(weight_bp).unwrap();
        Feed { tick: TickCounts { canary_weight, ..TickCounts::default() } }
    }

    /// One tick: `(requests, errors, slow)` per version; fast requests land in bucket 8, slow
    /// ones in bucket 12; one new user per ten requests.
    fn add(&mut self, canary: (u64, u64, u64), stable: (u64, u64, u64)) -> &TickCounts {
        for (counts, (requests, errors, slow)) in [(&mut self.tick.canary, canary), (&mut self.tick.stable, stable)] {
            counts.requests += requests;
            counts.errors += errors;
            counts.new_users += requests / 10;
            counts.latency[8] += requests - slow;
            counts.latency[12] += slow;
        }
        &self.tick
    }
}

#[test]
fn not_enough_data_is_inconclusive_never_worse() {
    let mut judge = Judge::new(config(), baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    for _ in 0..5 {
        judge.observe(feed.add((10, 0, 0), (90, 1, 1))).unwrap();
    }
    assert_eq!(judge.rollback_reason(), None);
    for verdict in judge.verdicts().iter().filter(|v| v.metric != Metric::SampleRatio) {
        assert_eq!(verdict.verdict, Verdict::Inconclusive, "{verdict:?}");
        assert_eq!(verdict.reason, Reason::NotEnoughData);
    }
    assert_eq!(judge.decision(true), StepDecision::Hold);
}

#[test]
fn a_healthy_canary_passes_and_the_step_advances_after_the_hold() {
    let mut judge = Judge::new(config(), baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    judge.begin_step();
    for _ in 0..120 {
        judge.observe(feed.add((10, 0, 0), (90, 1, 1))).unwrap();
    }
    assert_eq!(judge.rollback_reason(), None);
    for verdict in judge.verdicts() {
        assert_eq!(verdict.verdict, Verdict::Pass, "{verdict:?}");
    }
    assert_eq!(judge.verdicts()[0].reason, Reason::ShownSafe);
    assert_eq!(judge.decision(false), StepDecision::Hold, "hold not over");
    assert_eq!(judge.decision(true), StepDecision::Advance);
    judge.begin_step();
    assert_eq!(judge.decision(true), StepDecision::Hold, "no data in the new step yet");
}

#[test]
fn a_canary_with_five_times_the_errors_is_rolled_back_and_stays_so() {
    let mut judge = Judge::new(config(), baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    let mut rolled_back_at = None;
    for second in 0..600 {
        // 10 % of the requests; canary 5 % errors, stable 1 %.
        let errors = u64::from(second % 2 == 0);
        judge.observe(feed.add((10, errors, 0), (90, 1, 1))).unwrap();
        if rolled_back_at.is_none() && judge.rollback_reason().is_some() {
            rolled_back_at = Some(second);
        }
    }
    let second = rolled_back_at.expect("a 5× error rate must be caught");
    assert!(second < 120, "caught only after {second} s");
    assert_eq!(judge.rollback_reason(), Some(Metric::Errors));
    assert_eq!(judge.decision(true), StepDecision::Rollback);
    let errors = &judge.verdicts()[0];
    assert_eq!(errors.verdict, Verdict::Worse);
    assert!(errors.e_value.unwrap() >= errors.threshold);
    // 5 % against 1/90.
    assert!((errors.estimate.unwrap() - 4.5).abs() < 1e-9);
    let worse_above = judge.config().tolerances.errors.worse_above;
    assert!(errors.interval.lower.unwrap() >= worse_above, "the reported bound agrees with the rollback");
    assert!(errors.interval.upper.unwrap() > 4.5);
}

#[test]
fn a_slower_tail_is_rolled_back_by_the_tail_test() {
    let mut judge = Judge::new(config(), baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    for _ in 0..300 {
        judge.observe(feed.add((10, 0, 1), (90, 0, 1))).unwrap();
    }
    assert_eq!(judge.rollback_reason(), Some(Metric::LatencyTail));
    assert_eq!(judge.slow_bucket(), 8);
}

#[test]
fn a_doubled_median_is_rolled_back_by_the_band_test() {
    let mut judge = Judge::new(config(), baseline()).unwrap();
    let canary_weight = Weight::from_basis_points(5_000).unwrap();
    let mut tick = TickCounts { canary_weight, ..TickCounts::default() };
    for _ in 0..100 {
        tick.canary.requests += 100;
        tick.canary.latency[7] += 100; // 5–7.5 ms, still below the tail threshold
        tick.stable.requests += 100;
        tick.stable.latency[5] += 100; // 3–4 ms
        judge.observe(&tick).unwrap();
    }
    assert_eq!(judge.rollback_reason(), Some(Metric::LatencyP50));
    let p50 = &judge.verdicts()[2];
    assert_eq!(p50.verdict, Verdict::Worse);
    assert!(p50.interval.lower.unwrap() > 1.0);
}

#[test]
fn a_user_split_off_the_weight_needs_attention_not_a_rollback() {
    let mut judge = Judge::new(config(), baseline()).unwrap();
    let canary_weight = Weight::from_basis_points(5_000).unwrap();
    let mut tick = TickCounts { canary_weight, ..TickCounts::default() };
    for _ in 0..300 {
        tick.canary.requests += 50;
        tick.canary.latency[8] += 50;
        tick.canary.new_users += 1;
        tick.stable.requests += 50;
        tick.stable.latency[8] += 50;
        tick.stable.new_users += 9;
        judge.observe(&tick).unwrap();
    }
    assert_eq!(judge.rollback_reason(), None);
    assert_eq!(judge.decision(true), StepDecision::NeedsAttention);
    let guard = judge.verdicts().pop().unwrap();
    assert_eq!(guard.verdict, Verdict::Inconclusive);
    assert_eq!(guard.reason, Reason::SampleRatioMismatch);
}

#[test]
fn counter_resets_skip_a_tick_instead_of_counting_negative_traffic() {
    let mut judge = Judge::new(config(), baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    judge.observe(feed.add((10, 0, 0), (90, 1, 1))).unwrap();
    let mut restarted = TickCounts::default();
    restarted.canary.requests = 3;
    restarted.canary.latency[8] = 3;
    judge.observe(&restarted).unwrap();
    assert_eq!(judge.counter_resets(), 1);
    assert_eq!(judge.verdicts()[0].canary.requests, 10);
}

#[test]
fn reset_forgets_the_previous_rollout() {
    let mut judge = Judge::new(config(), baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    for _ in 0..100 {
        judge.observe(feed.add((10, 5, 0), (90, 1, 0))).unwrap();
    }
    assert!(judge.rollback_reason().is_some());
    judge.reset();
    assert_eq!(judge.rollback_reason(), None);
    assert_eq!(judge.verdicts()[0].canary.requests, 0);
}

#[test]
fn wrong_range_counts_and_bad_settings_are_refused() {
    let mut judge = Judge::new(JudgeConfig { ranges: 4, ..JudgeConfig::default() }, baseline()).unwrap();
    let mut tick = TickCounts::default();
    tick.canary.ranges = vec![RangeCounts::default(); 3];
    let err = judge.observe(&tick).unwrap_err();
    assert_eq!(err, JudgeError::RangeCount { version: "canary", expected: 4, got: 3 });

    let bad = JudgeConfig { alpha: 1.5, ..JudgeConfig::default() };
    assert!(matches!(Judge::new(bad, baseline()), Err(JudgeError::InvalidConfig { key: "alpha", .. })));
    let empty = Baseline::from_stable_histogram(&[0; LATENCY_BUCKETS], 0.99);
    assert_eq!(Judge::new(config(), empty).unwrap_err(), JudgeError::NoTailThreshold);
}

#[test]
fn a_doubled_median_of_a_few_milliseconds_is_not_a_regression() {
    let mut judge = Judge::new(JudgeConfig { ranges: 0, ..JudgeConfig::default() }, baseline()).unwrap();
    let canary_weight = Weight::from_basis_points(5_000).unwrap();
    let mut tick = TickCounts { canary_weight, ..TickCounts::default() };
    for _ in 0..100 {
        tick.canary.requests += 100;
        tick.canary.latency[7] += 100; // 5–7.5 ms
        tick.stable.requests += 100;
        tick.stable.latency[5] += 100; // 3–4 ms
        judge.observe(&tick).unwrap();
    }
    assert_eq!(judge.rollback_reason(), None, "below the 25 ms floor");
    assert_eq!(judge.slow_bucket(), 11, "the tail threshold is raised to 30 ms");
    assert_eq!(judge.decision(true), StepDecision::Advance);
}

#[test]
fn nothing_rolls_back_before_the_minimum_sample() {
    let mut judge = Judge::new(config(), baseline()).unwrap();
    let mut feed = Feed::new(5_000);
    // 3 slow of the canary's first 12 requests, none of stable's: a huge ratio on no data.
    judge.observe(feed.add((12, 0, 3), (12, 0, 0))).unwrap();
    assert_eq!(judge.rollback_reason(), None);
    for _ in 0..20 {
        judge.observe(feed.add((10, 0, 3), (10, 0, 0))).unwrap();
    }
    assert_eq!(judge.rollback_reason(), Some(Metric::LatencyTail), "caught once the sample is there");
}

#[test]
fn a_canary_three_times_worse_is_never_passed_on_diluted_evidence() {
    let config = JudgeConfig { min_requests_per_version: 200, ..config() };
    let mut judge = Judge::new(config, baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    for second in 0..30 {
        let errors = u64::from(second % 3 == 0); // 3.3 % against stable's 1.1 %
        judge.observe(feed.add((10, errors, 0), (90, 1, 0))).unwrap();
    }
    let errors = &judge.verdicts()[0];
    assert_ne!(errors.verdict, Verdict::Pass, "{errors:?}");
    assert_ne!(judge.decision(true), StepDecision::Advance);
}

/// A canary whose slow requests come in bursts: every fifth minute one tick where all of its
/// requests are slow (a stalled process), against stable's steady 1 %.
fn bursty_judge(burst_windows: usize) -> Judge {
    let tolerances = Tolerances {
        latency_tail: Tolerance { worse_above: 1.0, ..Tolerances::default().latency_tail },
        ..Tolerances::default()
    };
    let mut judge = Judge::new(JudgeConfig { burst_windows, tolerances, ..config() }, baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    for second in 0..300 {
        let canary_slow = if second % 60 == 30 { 10 } else { 0 };
        judge.observe(feed.add((10, 0, canary_slow), (90, 0, u64::from(second % 10 < 9)))).unwrap();
    }
    judge
}

#[test]
fn slow_requests_that_come_in_bursts_count_as_what_they_are() {
    assert_eq!(bursty_judge(0).rollback_reason(), Some(Metric::LatencyTail), "independent events would reject");
    let judge = bursty_judge(32);
    assert_eq!(judge.rollback_reason(), None);
    assert!(judge.verdicts()[1].dispersion > 2.0, "{:?}", judge.verdicts()[1]);
}

#[test]
fn a_non_inferiority_margin_holds_the_step_until_the_interval_is_narrow() {
    // The slow share: no slow requests anywhere, so neither the ratio nor, without the absolute
    // tolerance, anything else shows the canary safe.
    let strict = Tolerances {
        latency_tail: Tolerance { absolute: 0.0, ..Tolerances::default().latency_tail },
        ..Tolerances::default()
    };
    let mut judge = Judge::new(JudgeConfig { tolerances: strict, ..config() }, baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    for _ in 0..120 {
        judge.observe(feed.add((10, 0, 0), (90, 1, 0))).unwrap();
    }
    let verdicts = judge.verdicts();
    assert_eq!(verdicts[0].verdict, Verdict::Pass, "{:?}", verdicts[0]);
    assert_eq!(verdicts[1].verdict, Verdict::Inconclusive, "{:?}", verdicts[1]);
    assert_eq!(verdicts[1].reason, Reason::NotYetShownSafe);
    assert_eq!(judge.decision(true), StepDecision::Hold);

    // With the default absolute tolerance, 1,200 canary requests without a slow one show its
    // slow share below 1 %.
    let mut judge = Judge::new(config(), baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    for _ in 0..120 {
        judge.observe(feed.add((10, 0, 0), (90, 1, 0))).unwrap();
    }
    assert_eq!(judge.decision(true), StepDecision::Advance);
}

#[test]
fn verdicts_serialize_in_camel_case() {
    let judge = Judge::new(config(), baseline()).unwrap();
    let json = serde_json::to_value(judge.verdicts()).unwrap();
    let errors = &json[0];
    assert_eq!(errors["metric"], "errors");
    assert_eq!(errors["verdict"], "inconclusive");
    assert_eq!(errors["reason"], "notEnoughData");
    assert!(errors["eValue"].is_number());
    assert!(errors["interval"]["level"].is_number());
    assert!(errors["canary"]["requests"].is_number());
    assert_eq!(json[4]["metric"], "sampleRatio");
}

#[test]
fn a_metric_in_observe_mode_is_judged_but_never_acts() {
    let tolerances =
        Tolerances { errors: Tolerance { observe: true, ..Tolerances::default().errors }, ..Tolerances::default() };
    let mut judge = Judge::new(JudgeConfig { tolerances, ..config() }, baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    judge.begin_step();
    for second in 0..300 {
        let errors = u64::from(second % 2 == 0); // 5 % against 1.1 %
        judge.observe(feed.add((10, errors, 0), (90, 1, 1))).unwrap();
    }
    assert_eq!(judge.verdicts()[0].verdict, Verdict::Worse, "the verdict is still recorded");
    assert_eq!(judge.rollback_reason(), None);
    assert_eq!(judge.decision(true), StepDecision::Advance, "the other metrics decide");
}

#[test]
fn a_judge_read_back_from_its_json_continues_with_its_evidence() {
    let mut judge = Judge::new(JudgeConfig { ranges: 4, ..config() }, baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    let ranges = |requests, errors| vec![RangeCounts { requests: requests / 4, errors, slow: 0 }; 4];
    judge.enter_step(2);
    for second in 0..60u64 {
        let tick = feed.add((10, u64::from(second % 2 == 0), 0), (90, 1, 1)).clone();
        let tick = TickCounts {
            canary: VersionCounts { ranges: ranges(tick.canary.requests, tick.canary.errors), ..tick.canary },
            stable: VersionCounts { ranges: ranges(tick.stable.requests, tick.stable.errors), ..tick.stable },
            ..tick
        };
        judge.observe(&tick).unwrap();
    }
    let json = serde_json::to_string(&judge).unwrap();
    let mut restored: Judge = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_value(restored.verdicts()).unwrap(), serde_json::to_value(judge.verdicts()).unwrap());
    assert_eq!(restored.requests_in_step(), judge.requests_in_step());
    restored.enter_step(2);
    assert_eq!(restored.requests_in_step(), judge.requests_in_step(), "the same step does not restart");
    // Both go on from the same counters and stay in step.
    let next = feed.add((10, 1, 0), (90, 1, 1)).clone();
    judge.observe(&next).unwrap();
    restored.observe(&next).unwrap();
    assert_eq!(serde_json::to_value(restored.verdicts()).unwrap(), serde_json::to_value(judge.verdicts()).unwrap());
    assert_eq!(restored.rollback_reason(), judge.rollback_reason());
}

#[test]
fn priming_takes_the_counters_as_the_start_without_counting_them() {
    let mut judge = Judge::new(config(), baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    let history = feed.add((5_000, 2_000, 0), (5_000, 10, 0)).clone();
    judge.prime(&history);
    judge.observe(feed.add((10, 0, 0), (90, 1, 0))).unwrap();
    let errors = &judge.verdicts()[0];
    assert_eq!((errors.canary.requests, errors.canary.events), (10, Some(0)));
    assert_eq!(judge.rollback_reason(), None);
}

#[test]
fn a_counter_reset_starts_the_split_guard_over() {
    let mut judge = Judge::new(config(), baseline()).unwrap();
    let canary_weight = Weight::from_basis_points(5_000).unwrap();
    let mut tick = TickCounts { canary_weight, ..TickCounts::default() };
    for _ in 0..100 {
        tick.canary.requests += 50;
        tick.canary.latency[8] += 50;
        tick.canary.new_users += 4;
        tick.stable.requests += 50;
        tick.stable.latency[8] += 50;
        tick.stable.new_users += 6;
        judge.observe(&tick).unwrap();
    }
    let users = |judge: &Judge| judge.verdicts().pop().unwrap().canary.requests;
    assert!(users(&judge) > 0);
    let mut restarted = TickCounts { canary_weight, ..TickCounts::default() };
    restarted.stable.requests = 1;
    judge.observe(&restarted).unwrap();
    assert_eq!(users(&judge), 0, "the guard forgot the split it had seen");
    assert!(judge.verdicts()[0].canary.requests > 0, "the metrics keep their evidence");
}

#[test]
fn one_stall_is_not_taken_for_many_slow_requests() {
    let tolerances = Tolerances {
        latency_tail: Tolerance { worse_above: 1.0, ..Tolerances::default().latency_tail },
        ..Tolerances::default()
    };
    let stall = |burst_windows| {
        let mut judge = Judge::new(JudgeConfig { burst_windows, tolerances, ..config() }, baseline()).unwrap();
        let mut feed = Feed::new(1_000);
        for second in 0..120 {
            // One tick in which a stall made all 60 queued canary requests slow at once, against
            // stable's steady 1 %.
            let canary = if second == 60 { (60, 0, 60) } else { (10, 0, 0) };
            judge.observe(feed.add(canary, (90, 0, u64::from(second % 10 < 9)))).unwrap();
        }
        judge.rollback_reason()
    };
    assert_eq!(stall(0), Some(Metric::LatencyTail), "read as independent slow requests, it rolls back");
    assert_eq!(stall(32), None, "events in one window cannot show how they cluster: no rollback");
}

#[test]
fn a_warming_canary_s_slow_requests_do_not_count_but_its_errors_do() {
    let mut judge = Judge::new(config(), baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    for _ in 0..30 {
        // A cold canary: every request slow, and errors.
        judge.observe_warming_up(feed.add((10, 1, 10), (90, 1, 1))).unwrap();
    }
    assert_eq!(judge.rollback_reason(), Some(Metric::Errors), "errors of a warming canary count");
    let tail = judge.verdicts().into_iter().find(|v| v.metric == Metric::LatencyTail).unwrap();
    assert_eq!((tail.canary.requests, tail.canary.events), (0, Some(0)), "{tail:?}");

    let mut judge = Judge::new(config(), baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    for _ in 0..30 {
        judge.observe_warming_up(feed.add((10, 0, 10), (90, 1, 1))).unwrap();
    }
    for _ in 0..30 {
        judge.observe(feed.add((10, 0, 0), (90, 1, 1))).unwrap();
    }
    assert_eq!(judge.rollback_reason(), None, "the slow start is forgotten, the warm canary is fine");
    let tail = judge.verdicts().into_iter().find(|v| v.metric == Metric::LatencyTail).unwrap();
    assert_eq!((tail.canary.requests, tail.canary.events), (300, Some(0)), "{tail:?}");
}

/// Ticks until the judge first advances a healthy canary (1 % errors on both sides, 10 % of
/// the traffic), the hold long over; `None` if it never does within 20 minutes of ticks.
fn ticks_to_advance(leads_to_full: bool) -> Option<usize> {
    let mut judge = Judge::new(JudgeConfig { min_requests_per_version: 200, ..config() }, baseline()).unwrap();
    judge.set_leads_to_full(leads_to_full);
    let mut feed = Feed::new(1_000);
    judge.begin_step();
    (1..=1_200).find(|second| {
        let canary_errors = u64::from(second % 10 == 0);
        let stable_errors = u64::from(second % 10 < 9);
        judge.observe(feed.add((10, canary_errors, 0), (90, stable_errors, 1))).unwrap();
        judge.decision(true) == StepDecision::Advance
    })
}

#[test]
fn an_early_step_needs_less_proof_than_the_step_to_full_traffic() {
    let early = ticks_to_advance(false).expect("an early step advances a healthy canary");
    let to_full = ticks_to_advance(true).expect("the step to full traffic advances it too, later");
    assert!(early * 3 / 2 <= to_full, "early step after {early} ticks, the step to full traffic after {to_full}");
}

#[test]
fn the_early_step_margin_is_shown_in_the_verdict_and_never_lets_a_rollback_through() {
    let mut judge = Judge::new(JudgeConfig { min_requests_per_version: 200, ..config() }, baseline()).unwrap();
    judge.set_leads_to_full(false);
    let mut feed = Feed::new(1_000);
    for _ in 0..200 {
        judge.observe(feed.add((10, 1, 0), (90, 1, 1))).unwrap(); // 10 % errors against 1.1 %
    }
    let errors = &judge.verdicts()[0];
    assert_eq!(errors.tolerance.unwrap().safe_below, 2.0 * config::DEFAULT_EARLY_STEP_MARGIN, "{errors:?}");
    assert_eq!(errors.tolerance.unwrap().worse_above, 1.25, "harm is judged the same on every step");
    assert_eq!(judge.decision(true), StepDecision::Rollback);
}

/// Ticks where the canary serves ranges `0..10` and stable the other 90; `canary_errors(range)`
/// gives each canary range's requests and errors per tick, stable ranges serve 10 requests a
/// tick with an error every tenth tick (in turns, so that they make no burst).
fn ranged_judge(ticks: u64, canary: impl Fn(usize) -> (u64, u64)) -> Judge {
    ranged_judge_by_tick(ticks, |range, _| canary(range))
}

/// [`ranged_judge`] with the canary's counts per range and tick.
fn ranged_judge_by_tick(ticks: u64, canary: impl Fn(usize, u64) -> (u64, u64)) -> Judge {
    let config = JudgeConfig { min_requests_per_version: 200, latency_floor_seconds: 0.0, ..JudgeConfig::default() };
    let mut judge = Judge::new(config, baseline()).unwrap();
    let mut tick = TickCounts { canary_weight: Weight::from_basis_points(1_000).unwrap(), ..TickCounts::default() };
    tick.canary.ranges = vec![RangeCounts::default(); crate::cohort::RANGES];
    tick.stable.ranges = vec![RangeCounts::default(); crate::cohort::RANGES];
    for t in 0..ticks {
        for range in 0..crate::cohort::RANGES {
            let (requests, errors, counts) = if range < 10 {
                let (requests, errors) = canary(range, t);
                (requests, errors, &mut tick.canary)
            } else {
                (10, u64::from((t + range as u64).is_multiple_of(10)), &mut tick.stable)
            };
            counts.requests += requests;
            counts.errors += errors;
            counts.new_users += requests.min(1);
            counts.latency[8] += requests;
            counts.ranges[range].requests += requests;
            counts.ranges[range].errors += errors;
        }
        judge.observe(&tick).unwrap();
    }
    judge
}

#[test]
fn one_error_prone_user_who_is_most_of_the_canary_is_no_reason_to_roll_back() {
    // Range 3 holds one heavy user who fails a request in ten; two other users of the canary
    // send a little and fail nothing yet: 9 % errors against stable's 1 %, all from one range.
    let one_user = ranged_judge(20, |range| match range {
        3 => (20, 2),
        5 | 7 => (1, 0),
        _ => (0, 0),
    });
    let errors = &one_user.verdicts()[0];
    assert!(errors.canary.events.unwrap() >= 40 && errors.e_value.unwrap() > 50.0, "{errors:?}");
    assert_eq!(one_user.rollback_reason(), None, "{errors:?}");

    // Errors from users in every canary range are a regression.
    let many_users = ranged_judge(20, |range| (if range == 3 { 11 } else { 2 }, u64::from(range < 10)));
    assert_eq!(many_users.rollback_reason(), Some(Metric::Errors), "{:?}", many_users.verdicts()[0]);
}

#[test]
fn a_heavy_error_prone_user_among_a_handful_of_canary_users_is_no_reason_to_roll_back() {
    // Through the real system at 10 %, with returning users held on stable by their pins: five
    // users on the canary in 45 s, one of them heavy and failing a request in ten; the other
    // four made two ordinary errors between them (three ranges with errors, as the rule asks).
    let handful = |range: usize, tick: u64| match range {
        3 => (11, 1),
        5 | 7 => (1, u64::from(tick == 20 + range as u64)),
        0 | 9 => (1, 0),
        _ => (0, 0),
    };
    let one_heavy_user = ranged_judge_by_tick(45, handful);
    let errors = &one_heavy_user.verdicts()[0];
    assert!(errors.e_value.unwrap() > 1e3, "the canary as a whole looks far worse: {errors:?}");
    assert_eq!(one_heavy_user.rollback_reason(), None, "{errors:?}");

    // The same five users all failing a request in ten: a regression, on every one of them.
    let regression = ranged_judge_by_tick(45, |range, tick| match handful(range, tick) {
        (0, _) => (0, 0),
        (1, _) => (1, u64::from((tick + range as u64).is_multiple_of(10))),
        heavy => heavy,
    });
    assert_eq!(regression.rollback_reason(), Some(Metric::Errors), "{:?}", regression.verdicts()[0]);
}

#[test]
fn a_heavy_error_prone_user_beside_ordinary_errors_is_no_reason_to_roll_back() {
    // Range 3 holds one heavy user who fails a request in ten and sends most of the canary's
    // requests; the other nine ranges are ordinary users failing as often as stable's users.
    let ordinary = |range: usize, tick: u64| (4, u64::from((tick + range as u64).is_multiple_of(25)));
    let heavy = |range: usize, tick: u64| if range == 3 { (60, 6) } else { ordinary(range, tick) };
    let one_heavy_user = ranged_judge_by_tick(10, heavy);
    let errors = &one_heavy_user.verdicts()[0];
    assert!(errors.estimate.unwrap() > 5.0, "the canary as a whole looks far worse: {errors:?}");
    assert_eq!(one_heavy_user.rollback_reason(), None, "{errors:?}");

    // The same, with every other range failing one request in ten too: a regression.
    let regression =
        ranged_judge_by_tick(
            10,
            |range, tick| if range == 3 { (60, 6) } else { (4, u64::from((tick + range as u64) % 5 < 2)) },
        );
    assert_eq!(regression.rollback_reason(), Some(Metric::Errors), "{:?}", regression.verdicts()[0]);
}

/// 100 one-second ticks at 10 %: stable's 90 requests a tick are slow once in ten ticks, and
/// the canary's 10 requests a tick are slow on the ticks `slow` names, that many at once.
fn stalling_judge(slow: impl Fn(u64) -> u64) -> Judge {
    let mut judge = Judge::new(JudgeConfig { burst_windows: 32, ..config() }, baseline()).unwrap();
    let mut feed = Feed::new(1_000);
    for tick in 0..100 {
        judge.observe(feed.add((10, 0, slow(tick)), (90, 0, u64::from(tick % 10 == 0)))).unwrap();
    }
    judge
}

#[test]
fn a_canary_that_stalled_three_times_while_stable_did_not_is_no_reason_to_roll_back() {
    // Stalls come per process and are few: three of the canary's and none of stable's in
    // 100 s happens by chance, and each made most of the canary's queued requests slow.
    let stalls = stalling_judge(|tick| match tick {
        20 => 8,
        45 => 6,
        70 => 10,
        15 | 55 => 1,
        _ => 0,
    });
    let tail = &stalls.verdicts()[1];
    assert!(tail.estimate.unwrap() > 5.0, "the canary's tail as a whole looks far worse: {tail:?}");
    assert_eq!(stalls.rollback_reason(), None, "{tail:?}");

    // A slower tail that is there all the time: the same number of slow requests, spread.
    let regression = stalling_judge(|tick| u64::from(tick % 4 == 0));
    assert_eq!(regression.rollback_reason(), Some(Metric::LatencyTail), "{:?}", regression.verdicts()[1]);
}
