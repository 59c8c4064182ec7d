use serde_json::json;

use super::*;
use crate::team::{Counts, TeamMetricName, explain, no_data};

fn metric(value: serde_json::Value) -> TeamMetric {
    serde_json::from_value(value).unwrap()
}

fn failures() -> TeamMetric {
    metric(json!({
        "name": "checkout_failures", "kind": "ratio", "direction": "lower-is-better",
        "events": "sum(checkouts_total{version=\"{version}\",outcome=\"failed\"})",
        "trials": "sum(checkouts_total{version=\"{version}\"})",
    }))
}

fn p99() -> TeamMetric {
    metric(json!({
        "name": "checkout_p99", "kind": "value", "direction": "lower-is-better", "margin": 0.2,
        "query": "app_p99_seconds{version=\"{version}\"}",
    }))
}

fn judge(metrics: Vec<TeamMetric>) -> TeamJudge {
    let analysis = Analysis {
        min_requests_for_rollback: 100,
        min_requests_per_version: 500,
        team_metrics: Some(metrics),
        ..Analysis::default()
    };
    TeamJudge::new(&analysis).unwrap()
}

/// Feeds `ticks` looks of 100 canary and 900 stable trials with the given failures per look,
/// continuing from `at` (the cumulative counts so far), to every ratio metric of `judge`.
fn feed(judge: &mut TeamJudge, at: &mut (Counts, Counts), ticks: u64, canary_failures: u64, stable_failures: u64) {
    for _ in 0..ticks {
        at.0 = Counts { events: at.0.events + canary_failures, trials: at.0.trials + 100 };
        at.1 = Counts { events: at.1.events + stable_failures, trials: at.1.trials + 900 };
        let readings = judge.metrics().map(|_| Reading::Counts { canary: at.0, stable: at.1 }).collect();
        judge.observe(0, false, readings);
    }
}

#[test]
fn a_ratio_metric_shown_worse_rolls_back_naming_itself() {
    let mut judge = judge(vec![failures()]);
    let mut at = (Counts::default(), Counts::default());
    feed(&mut judge, &mut at, 3, 5, 9);
    assert_eq!(judge.decide(StepDecision::Hold), StepDecision::Hold, "before 100 trials per version: no rollback");
    feed(&mut judge, &mut at, 40, 5, 9);
    assert_eq!(judge.rollback_reason(), Some("checkout_failures"));
    assert_eq!(judge.decide(StepDecision::Advance), StepDecision::Rollback);
    assert_eq!(judge.decide(StepDecision::NeedsAttention), StepDecision::Rollback);
    let verdict = &judge.verdicts()[0];
    assert_eq!(
        (verdict.metric, verdict.verdict, verdict.reason),
        (Metric::Team, Verdict::Worse, Reason::EvidenceOfHarm)
    );
    assert_eq!(verdict.name(), "checkout_failures");
    let text = explain(verdict).unwrap();
    assert!(
        text.starts_with("team metric checkout_failures: canary 5.00% (210/4200) against stable's 1.00%"),
        "{text}"
    );
    assert!(text.contains("5.00× (at least"), "{text}");
}

#[test]
fn an_observing_metric_is_shown_but_never_acts() {
    let mut judge = judge(vec![TeamMetric { observe: true, ..failures() }]);
    let mut at = (Counts::default(), Counts::default());
    feed(&mut judge, &mut at, 60, 5, 9);
    assert_eq!(judge.verdicts()[0].verdict, Verdict::Worse);
    assert_eq!(judge.rollback_reason(), None);
    assert_eq!(judge.decide(StepDecision::Advance), StepDecision::Advance);
}

#[test]
fn no_data_holds_the_step_and_never_rolls_back() {
    let mut judge = judge(vec![failures(), p99()]);
    for _ in 0..100 {
        let readings = vec![
            Reading::NoData("stable's events: the query returned nothing".into()),
            Reading::NoData("the canary's value: Prometheus at http://127.0.0.1:9 is unreachable".into()),
        ];
        judge.observe(0, true, readings);
    }
    assert_eq!(judge.rollback_reason(), None);
    assert_eq!(judge.decide(StepDecision::Advance), StepDecision::Hold);
    let verdicts = judge.verdicts();
    assert!(verdicts.iter().all(|v| (v.verdict, v.reason) == (Verdict::Inconclusive, Reason::NoData)));
    assert_eq!(
        no_data(&verdicts).unwrap(),
        "no data from team metric checkout_failures (stable's events: the query returned nothing); \
         no data from team metric checkout_p99 (the canary's value: Prometheus at http://127.0.0.1:9 is unreachable)"
    );
}

#[test]
fn an_advance_waits_until_every_team_metric_is_shown_safe() {
    let mut judge = judge(vec![failures()]);
    let mut at = (Counts::default(), Counts::default());
    feed(&mut judge, &mut at, 4, 1, 9);
    assert_eq!(judge.verdicts()[0].reason, Reason::NotEnoughData);
    assert_eq!(judge.decide(StepDecision::Advance), StepDecision::Hold);
    feed(&mut judge, &mut at, 400, 1, 9);
    assert_eq!((judge.verdicts()[0].verdict, judge.verdicts()[0].reason), (Verdict::Pass, Reason::ShownSafe));
    assert_eq!(judge.decide(StepDecision::Advance), StepDecision::Advance);
    assert_eq!(judge.decide(StepDecision::Hold), StepDecision::Hold, "the built-in judge still decides the rest");
}

#[test]
fn a_value_metric_is_judged_after_each_hold_on_the_latest_value() {
    let mut judge = judge(vec![p99()]);
    let values = |canary: f64, stable: f64| vec![Reading::Values { canary, stable }];
    judge.observe(0, false, values(0.9, 0.2));
    assert_eq!(judge.verdicts()[0].reason, Reason::AfterHold, "a value before the hold is not judged");
    assert_eq!(judge.decide(StepDecision::Advance), StepDecision::Hold);
    judge.observe(0, true, values(0.22, 0.2));
    let verdict = &judge.verdicts()[0];
    assert_eq!((verdict.verdict, verdict.reason), (Verdict::Pass, Reason::WithinMargin));
    assert_eq!(verdict.team.as_ref().unwrap().canary_value, Some(0.22));
    assert_eq!(judge.decide(StepDecision::Advance), StepDecision::Advance);
    judge.observe(1, false, values(0.22, 0.2));
    assert_eq!(judge.verdicts()[0].reason, Reason::AfterHold, "the next step is judged after its own hold");
    judge.observe(1, true, values(0.3, 0.2));
    assert_eq!(judge.rollback_reason(), Some("checkout_p99"));
    let verdict = &judge.verdicts()[0];
    assert_eq!((verdict.verdict, verdict.reason), (Verdict::Worse, Reason::BeyondMargin));
    assert_eq!(
        explain(verdict).unwrap(),
        "team metric checkout_p99: canary 0.3 against stable's 0.2, 1.50× (margin 20%, lower is better)"
    );
    judge.observe(2, false, values(0.2, 0.2));
    assert_eq!(judge.verdicts()[0].verdict, Verdict::Worse, "shown worse stays worse");
}

#[test]
fn the_evidence_continues_after_a_round_trip_through_json() {
    let mut judge = judge(vec![failures(), p99()]);
    let mut at = (Counts::default(), Counts::default());
    let feed_both = |judge: &mut TeamJudge, at: &mut (Counts, Counts), ticks: u64| {
        for _ in 0..ticks {
            at.0 = Counts { events: at.0.events + 4, trials: at.0.trials + 100 };
            at.1 = Counts { events: at.1.events + 9, trials: at.1.trials + 900 };
            let readings =
                vec![Reading::Counts { canary: at.0, stable: at.1 }, Reading::Values { canary: 0.2, stable: 0.2 }];
            judge.observe(0, true, readings);
        }
    };
    feed_both(&mut judge, &mut at, 20);
    let saved = serde_json::to_string(&judge).unwrap();
    let mut restored: TeamJudge = serde_json::from_str(&saved).unwrap();
    feed_both(&mut judge, &mut at.clone(), 20);
    feed_both(&mut restored, &mut at, 20);
    assert_eq!(restored.verdicts(), judge.verdicts());
    assert_eq!(restored.rollback_reason(), Some("checkout_failures"));
    assert!(restored.verdicts()[0].canary.requests > 2000, "the trials before the save still count");
}

#[test]
fn ratio_metrics_take_their_alpha_from_the_rollouts_budget() {
    let second = TeamMetric { name: TeamMetricName::try_from("refunds".to_owned()).unwrap(), ..failures() };
    let analysis = Analysis { team_metrics: Some(vec![failures(), second, p99()]), ..Analysis::default() };
    assert!((analysis.judge_config().alpha - 0.04).abs() < 1e-12, "the built-ins keep 80 % of 0.05");
    let judge = TeamJudge::new(&analysis).unwrap();
    assert!((judge.settings().alpha - 0.005).abs() < 1e-12, "two ratio metrics share the other 20 %");
    let verdicts = judge.verdicts();
    assert!((verdicts[0].alpha - 0.005).abs() < 1e-12 && (verdicts[0].threshold - 200.0).abs() < 1e-9);
    assert_eq!(verdicts[2].alpha, 0.0, "a value metric has no α");
    assert_eq!(Analysis::default().judge_config().alpha, 0.05, "without team metrics nothing changes");
}

#[test]
fn a_metric_that_cannot_be_judged_is_refused_with_its_name() {
    let broken = TeamMetric { trials: None, ..failures() };
    let analysis = Analysis { team_metrics: Some(vec![broken]), ..Analysis::default() };
    assert!(TeamJudge::new(&analysis).unwrap_err().contains("checkout_failures"));
}
