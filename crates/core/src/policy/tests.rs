use super::*;
use crate::judge::{Interval, Reason};
use crate::rollout::{Analysis, fixture};
use crate::team::{Counts, Reading, TeamJudge, TeamMetric};

const HOLD_MS: u64 = 1_000;

/// A rollout begun at 0 ms and advanced `advances` times, at 0 ms each.
fn progressing(steps: &str, advances: usize) -> Rollout {
    let mut rollout = fixture(steps).apply(&Command::Begin, 0).unwrap().rollout;
    for _ in 0..advances {
        rollout = rollout.apply(&Command::Advance, 0).unwrap().rollout;
    }
    rollout
}

fn judged(decision: StepDecision) -> Judgement<'static> {
    Judgement { decision, verdicts: &[], rollback_metric: None }
}

fn at(now_ms: u64) -> Signals<'static> {
    Signals { now_ms, breaker_tripped: None, canary_requests_in_step: 0 }
}

fn errors_verdict() -> MetricVerdict {
    MetricVerdict {
        metric: Metric::Errors,
        verdict: Verdict::Worse,
        reason: Reason::EvidenceOfHarm,
        estimate: Some(3.2),
        interval: Interval { lower: Some(1.8), upper: None, level: 0.98 },
        e_value: Some(61.0),
        threshold: 50.0,
        alpha: 0.02,
        tolerance: Some(crate::judge::Tolerances::default().errors),
        dispersion: 1.0,
        canary: Samples { requests: 1000, events: Some(32) },
        stable: Samples { requests: 10_000, events: Some(100) },
        team: None,
    }
}

#[test]
fn a_tripped_breaker_fails_the_rollout_before_anything_else() {
    let rollout = progressing("10%/1s,100%", 0);
    let signals = Signals { breaker_tripped: Some("5 connections refused"), ..at(0) };
    let command = next_command(&rollout, &judged(StepDecision::Advance), &signals);
    assert_eq!(command, Some(Command::Fail("local breaker tripped: 5 connections refused".into())));
}

#[test]
fn a_tripped_breaker_fails_a_paused_rollout_too() {
    let paused = progressing("10%/1s,100%", 0).apply(&Command::Pause("look".into()), 10).unwrap().rollout;
    let signals = Signals { breaker_tripped: Some("refused"), ..at(20) };
    assert!(matches!(next_command(&paused, &judged(StepDecision::Hold), &signals), Some(Command::Fail(_))));
    assert_eq!(next_command(&paused, &judged(StepDecision::Rollback), &at(20)), None, "the judge waits for a person");
}

#[test]
fn only_a_progressing_rollout_acts_on_the_judge() {
    let pending = fixture("10%/1s,100%");
    for decision in [StepDecision::Rollback, StepDecision::Advance, StepDecision::NeedsAttention] {
        assert_eq!(next_command(&pending, &judged(decision), &at(0)), None);
    }
}

#[test]
fn the_judges_decision_becomes_the_command() {
    let rollout = progressing("10%/1s,100%", 0);
    assert_eq!(next_command(&rollout, &judged(StepDecision::Advance), &at(0)), Some(Command::Advance));
    let pause = next_command(&rollout, &judged(StepDecision::NeedsAttention), &at(0));
    assert!(matches!(pause, Some(Command::Pause(why)) if why.contains("sample-ratio")));
    assert_eq!(next_command(&rollout, &judged(StepDecision::Hold), &at(0)), None);
}

#[test]
fn a_rollback_names_the_metric_and_its_numbers() {
    let rollout = progressing("10%/1s,100%", 0);
    let verdicts = [errors_verdict()];
    let judgement =
        Judgement { decision: StepDecision::Rollback, verdicts: &verdicts, rollback_metric: Some(Metric::Errors) };
    let Some(Command::Fail(why)) = next_command(&rollout, &judgement, &at(0)) else { panic!("expected a rollback") };
    assert_eq!(
        why,
        "canary error rate 3.20% (32/1000) against stable's 1.00% (100/10000), 3.20× (at least 1.80×); evidence 61 ≥ 50"
    );
}

#[test]
fn the_final_full_step_promotes_once_held_with_enough_canary_requests() {
    let last = progressing("10%/1s,100%/1s", 1);
    let min = last.analysis.min_requests_per_step;
    let enough = Signals { canary_requests_in_step: min, ..at(HOLD_MS) };
    assert_eq!(next_command(&last, &judged(StepDecision::Hold), &enough), Some(Command::Advance));
    let early = Signals { canary_requests_in_step: min, ..at(HOLD_MS - 1) };
    assert_eq!(next_command(&last, &judged(StepDecision::Hold), &early), None, "hold not passed");
    let thin = Signals { canary_requests_in_step: min - 1, ..at(HOLD_MS) };
    assert_eq!(next_command(&last, &judged(StepDecision::Hold), &thin), None, "too few canary requests");
    let first = progressing("10%/1s,100%/1s", 0);
    assert_eq!(next_command(&first, &judged(StepDecision::Hold), &enough), None, "only the last step at 100 %");
}

#[test]
fn a_final_step_below_full_weight_waits_for_the_judge() {
    let last = progressing("10%/1s,50%/1s", 1);
    let signals = Signals { canary_requests_in_step: 1_000_000, ..at(HOLD_MS) };
    assert_eq!(next_command(&last, &judged(StepDecision::Hold), &signals), None);
}

#[test]
fn a_step_undecided_past_max_step_wait_pauses() {
    let rollout = progressing("10%/1s,100%", 0);
    let limit = HOLD_MS + duration_ms(rollout.max_step_wait);
    assert_eq!(next_command(&rollout, &judged(StepDecision::Hold), &at(limit)), None);
    let pause = next_command(&rollout, &judged(StepDecision::Hold), &at(limit + 1));
    assert_eq!(pause, Some(Command::Pause("the judge could not decide within 10m after the hold".into())));
}

#[test]
fn observe_mode_never_acts_on_the_judge_and_advances_on_the_hold() {
    let mut rollout = progressing("10%/1s,100%", 0);
    rollout.analysis.observe = true;
    let verdicts = [errors_verdict()];
    let rollback =
        Judgement { decision: StepDecision::Rollback, verdicts: &verdicts, rollback_metric: Some(Metric::Errors) };
    assert_eq!(next_command(&rollout, &rollback, &at(HOLD_MS - 1)), None, "no rollback, hold not passed");
    assert_eq!(next_command(&rollout, &rollback, &at(HOLD_MS)), Some(Command::Advance), "the hold alone advances");
    let attention = judged(StepDecision::NeedsAttention);
    assert_eq!(next_command(&rollout, &attention, &at(HOLD_MS)), Some(Command::Advance));
    let late = HOLD_MS + duration_ms(rollout.max_step_wait) + 1;
    assert_eq!(next_command(&rollout, &judged(StepDecision::Hold), &at(late)), Some(Command::Advance));
    let signals = Signals { breaker_tripped: Some("refused"), ..at(0) };
    assert!(matches!(next_command(&rollout, &rollback, &signals), Some(Command::Fail(_))), "the breaker still acts");
}

/// The verdicts of two team ratio metrics: `refunds` passes its looks, `checkout_failures` gets
/// `reading` for each.
fn team_verdicts(reading: impl Fn(u64) -> Reading) -> Vec<MetricVerdict> {
    let ratio = |name: &str| -> TeamMetric {
        serde_json::from_value(serde_json::json!({
            "name": name, "kind": "ratio", "direction": "lower-is-better",
            "events": "failed{version=\"{version}\"}", "trials": "all{version=\"{version}\"}",
        }))
        .unwrap()
    };
    let analysis = Analysis {
        min_requests_per_version: 100,
        team_metrics: Some(vec![ratio("refunds"), ratio("checkout_failures")]),
        ..Analysis::default()
    };
    let mut judge = TeamJudge::new(&analysis).unwrap();
    for t in 0..60 {
        let healthy = Counts { events: t, trials: 100 * t };
        let stable = Counts { events: 9 * t, trials: 900 * t };
        judge.observe(0, true, vec![Reading::Counts { canary: healthy, stable }, reading(t)]);
    }
    judge.verdicts()
}

#[test]
fn a_team_metric_rollback_names_the_one_shown_worse() {
    let rollout = progressing("10%/1s,100%", 0);
    let verdicts = team_verdicts(|t| Reading::Counts {
        canary: Counts { events: 5 * t, trials: 100 * t },
        stable: Counts { events: 9 * t, trials: 900 * t },
    });
    let judgement =
        Judgement { decision: StepDecision::Rollback, verdicts: &verdicts, rollback_metric: Some(Metric::Team) };
    let Some(Command::Fail(why)) = next_command(&rollout, &judgement, &at(0)) else { panic!("expected a rollback") };
    assert!(why.starts_with("team metric checkout_failures: canary 5.00% (295/5900) against stable's 1.00%"), "{why}");
}

#[test]
fn a_step_without_team_data_pauses_naming_the_metric_and_never_rolls_back() {
    let rollout = progressing("10%/1s,100%", 0);
    let verdicts = team_verdicts(|_| Reading::NoData("stable's events: the query returned nothing".into()));
    let judgement = Judgement { decision: StepDecision::Hold, verdicts: &verdicts, rollback_metric: None };
    let limit = HOLD_MS + duration_ms(rollout.max_step_wait);
    assert_eq!(next_command(&rollout, &judgement, &at(limit)), None, "the step holds");
    assert_eq!(
        next_command(&rollout, &judgement, &at(limit + 1)),
        Some(Command::Pause(
            "the judge could not decide within 10m after the hold: no data from team metric checkout_failures \
             (stable's events: the query returned nothing)"
                .into()
        ))
    );
}

#[test]
fn an_advance_out_of_an_approval_step_waits_for_a_person() {
    let rollout = progressing("10%/1s,approve,100%", 0);
    assert_eq!(next_command(&rollout, &judged(StepDecision::Advance), &at(HOLD_MS)), Some(Command::AwaitApproval));
    let waiting = rollout.apply(&Command::AwaitApproval, HOLD_MS).unwrap().rollout;
    for decision in [StepDecision::Advance, StepDecision::Hold, StepDecision::NeedsAttention] {
        assert_eq!(next_command(&waiting, &judged(decision), &at(60 * HOLD_MS)), None, "{decision:?}");
    }
}

#[test]
fn a_worse_canary_is_rolled_back_while_it_waits_for_approval() {
    let waiting = progressing("10%/1s,approve,100%", 0).apply(&Command::AwaitApproval, HOLD_MS).unwrap().rollout;
    let verdicts = [errors_verdict()];
    let judgement =
        Judgement { decision: StepDecision::Rollback, verdicts: &verdicts, rollback_metric: Some(Metric::Errors) };
    let Some(Command::Fail(why)) = next_command(&waiting, &judgement, &at(2 * HOLD_MS)) else {
        panic!("a worse canary must roll back while waiting")
    };
    assert!(why.contains("error rate"), "{why}");
    let signals = Signals { breaker_tripped: Some("refused"), ..at(2 * HOLD_MS) };
    assert!(matches!(next_command(&waiting, &judged(StepDecision::Hold), &signals), Some(Command::Fail(_))));
}
