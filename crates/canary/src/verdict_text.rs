//! The judge's verdicts as a person reads them: one sentence per metric, with the numbers
//! behind it and the tolerance it is judged against.

use canary_core::judge::{Metric, MetricVerdict, Reason, StepDecision, Tolerance, Verdict};
use canary_core::policy::metric_words;
use canary_core::team::{Direction, TeamMetricKind};

/// `error rate`, `share > 12.0ms`, `median latency`, `p90 latency`, `user split`: the slow share
/// is named by the threshold that makes a request slow.
pub fn metric_name(metric: Metric, tail_threshold_seconds: f64) -> String {
    match metric {
        Metric::LatencyTail => format!("share > {}", seconds(tail_threshold_seconds)),
        other => metric_words(other).to_owned(),
    }
}

/// The name a verdict goes by: a team metric's own name, else [`metric_name`].
pub fn verdict_name(v: &MetricVerdict, tail_threshold_seconds: f64) -> String {
    match &v.team {
        Some(team) => team.name.clone(),
        None => metric_name(v.metric, tail_threshold_seconds),
    }
}

/// `advance`, `hold`, `roll back`, `needs a person`.
pub fn decision_words(decision: StepDecision) -> &'static str {
    match decision {
        StepDecision::Advance => "advance",
        StepDecision::Hold => "hold",
        StepDecision::Rollback => "roll back",
        StepDecision::NeedsAttention => "needs a person",
    }
}

/// `ok`, `WORSE`, `not yet known`.
pub fn verdict_words(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "ok",
        Verdict::Worse => "WORSE",
        Verdict::Inconclusive => "not yet known",
    }
}

/// `error rate      not yet known  not yet shown within 2× (or +0.5 points); collecting; canary
/// 1.05× stable (98% interval 0.42×–2.6×), 3/400 canary vs 30/4000 stable, evidence 0.70 of 50 to
/// roll back`.
pub fn sentence(v: &MetricVerdict, tail_threshold_seconds: f64) -> String {
    let what = verdict_name(v, tail_threshold_seconds);
    let verdict = verdict_words(v.verdict);
    let numbers = if v.team.as_ref().is_some_and(|t| t.kind == TeamMetricKind::Value) {
        value_words(v)
    } else {
        numbers_words(v)
    };
    let sep = if numbers.is_empty() { "" } else { "; " };
    let observes = v.tolerance.is_some_and(|t| t.observe) || v.team.as_ref().is_some_and(|t| t.observe);
    let dry_run = if observes { "; dry run: it never acts" } else { "" };
    format!("{what:<15} {verdict:<14} {}{sep}{numbers}{dry_run}", reason_words(v))
}

/// Why the metric has its verdict, with the tolerance where it is what the judge waits for.
fn reason_words(v: &MetricVerdict) -> String {
    let within = v.tolerance.map_or_else(|| "its tolerance".to_owned(), tolerance_words);
    match v.reason {
        Reason::NotEnoughData => {
            format!("needs more data (canary {} / stable {} requests)", v.canary.requests, v.stable.requests)
        }
        Reason::EvidenceOfHarm => "evidence the canary is worse".to_owned(),
        Reason::ShownSafe => format!("shown within {within}"),
        Reason::NotYetShownSafe => format!("not yet shown within {within}; collecting"),
        Reason::SampleRatioMismatch => "users do not split as the weight says".to_owned(),
        Reason::SampleRatioConsistent => "users split as the weight says".to_owned(),
        Reason::NoData => match v.team.as_ref().and_then(|t| t.no_data.as_deref()) {
            Some(why) => format!("no data ({why}); holding"),
            None => "no data from its query; holding".to_owned(),
        },
        Reason::AfterHold => "judged once the step's hold has passed".to_owned(),
        Reason::WithinMargin => format!("within {} of stable's", margin_words(v)),
        Reason::BeyondMargin => format!("worse than stable's by more than {}", margin_words(v)),
    }
}

/// `2×`, or `2× (or +0.5 points)` when a count is also safe close enough to stable's rate.
fn tolerance_words(t: Tolerance) -> String {
    let ratio = format!("{}×", trimmed(t.safe_below));
    if t.absolute > 0.0 {
        let points = trimmed(100.0 * t.absolute);
        let unit = if points == "1" { "point" } else { "points" };
        format!("{ratio} (or +{points} {unit})")
    } else {
        ratio
    }
}

/// `canary 6.10× stable (98% interval 2.30×–15.2×), 24/400 canary vs 40/4000 stable, evidence 230
/// of 50 to roll back`: whichever of these the metric has.
fn numbers_words(v: &MetricVerdict) -> String {
    let head = match (estimate_words(v), interval_words(v)) {
        (Some(estimate), Some(interval)) => Some(format!("{estimate} ({interval})")),
        (estimate, interval) => estimate.or(interval),
    };
    [head, counts_words(v), evidence_words(v)].into_iter().flatten().collect::<Vec<_>>().join(", ")
}

/// `canary 6.10× stable`, or `canary users 1.02× the weight predicts` for the user split.
fn estimate_words(v: &MetricVerdict) -> Option<String> {
    let (subject, against) =
        if v.metric == Metric::SampleRatio { ("canary users", "the weight predicts") } else { ("canary", "stable") };
    v.estimate.map(|e| format!("{subject} {}× {against}", ratio(e)))
}

/// `98% interval 2.30×–15.2×`, or one end of it.
fn interval_words(v: &MetricVerdict) -> Option<String> {
    let level = format!("{:.0}%", 100.0 * v.interval.level);
    match (v.interval.lower, v.interval.upper) {
        (Some(l), Some(u)) => Some(format!("{level} interval {}×–{}×", ratio(l), ratio(u))),
        (Some(l), None) => Some(format!("{level} interval at least {}×", ratio(l))),
        (None, Some(u)) => Some(format!("{level} interval at most {}×", ratio(u))),
        (None, None) => None,
    }
}

/// `24/400 canary vs 40/4000 stable`, for metrics that count events; a higher-is-better team
/// ratio counts its misses, the trials without an event.
fn counts_words(v: &MetricVerdict) -> Option<String> {
    let (c, s) = (v.canary.events?, v.stable.events?);
    let misses = if v.team.as_ref().is_some_and(|t| t.direction == Direction::HigherIsBetter) { "misses " } else { "" };
    Some(format!("{misses}{c}/{} canary vs {s}/{} stable", v.canary.requests, v.stable.requests))
}

/// `canary 0.3 vs stable 0.2 (1.50×)`: a team value metric's latest values after the hold.
fn value_words(v: &MetricVerdict) -> String {
    let Some(team) = &v.team else { return String::new() };
    match (team.canary_value, team.stable_value) {
        (Some(c), Some(s)) => {
            let ratio_text = v.estimate.map(|e| format!(" ({}×)", ratio(e))).unwrap_or_default();
            format!("canary {} vs stable {}{ratio_text}", value(c), value(s))
        }
        _ => String::new(),
    }
}

/// `20% (lower is better)`.
fn margin_words(v: &MetricVerdict) -> String {
    let Some(team) = &v.team else { return "its margin".to_owned() };
    let better = match team.direction {
        Direction::LowerIsBetter => "lower is better",
        Direction::HigherIsBetter => "higher is better",
    };
    match team.margin {
        Some(m) => format!("{}% ({better})", trimmed(100.0 * m)),
        None => format!("its margin ({better})"),
    }
}

/// Four significant digits at most.
fn value(x: f64) -> String {
    if x == 0.0 {
        return "0".to_owned();
    }
    let decimals = (3 - x.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text }
}

/// `evidence 230 of 50 to roll back (α 0.02)`: the metric's share of the false-rollback budget
/// is what sets the threshold.
fn evidence_words(v: &MetricVerdict) -> Option<String> {
    // The user split only pauses a rollout for a person; it never rolls back.
    let action = if v.metric == Metric::SampleRatio { "pause" } else { "roll back" };
    let alpha = format!("{:.4}", v.alpha);
    let alpha = alpha.trim_end_matches('0');
    v.e_value.map(|e| format!("evidence {} of {} to {action} (α {alpha})", evidence(e), evidence(v.threshold)))
}

/// `12.25`, `0.5`, `2`: two decimals at most, without trailing zeros.
pub fn trimmed(x: f64) -> String {
    let text = format!("{x:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn ratio(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn evidence(e: f64) -> String {
    if e >= 1e6 {
        format!("{e:.1e}")
    } else if e >= 10.0 {
        format!("{e:.0}")
    } else {
        format!("{e:.2}")
    }
}

fn seconds(s: f64) -> String {
    if s < 1.0 { format!("{:.1}ms", s * 1000.0) } else { format!("{s:.2}s") }
}

#[cfg(test)]
mod tests {
    use canary_core::judge::verdict::TeamDetail;
    use canary_core::judge::{Interval, Samples, Tolerances};

    use super::*;

    fn errors(verdict: Verdict, reason: Reason) -> MetricVerdict {
        MetricVerdict {
            metric: Metric::Errors,
            verdict,
            reason,
            estimate: Some(1.05),
            interval: Interval { lower: Some(0.42), upper: Some(2.6), level: 0.98 },
            e_value: Some(0.7),
            threshold: 50.0,
            alpha: 0.02,
            tolerance: Some(Tolerances::default().errors),
            dispersion: 1.0,
            canary: Samples { requests: 400, events: Some(3) },
            stable: Samples { requests: 4000, events: Some(30) },
            team: None,
        }
    }

    #[test]
    fn a_metric_still_collecting_names_the_tolerance_it_must_be_shown_within() {
        assert_eq!(
            sentence(&errors(Verdict::Inconclusive, Reason::NotYetShownSafe), 0.01),
            "error rate      not yet known  not yet shown within 2× (or +0.5 points); collecting; \
             canary 1.05× stable (98% interval 0.42×–2.60×), 3/400 canary vs 30/4000 stable, \
             evidence 0.70 of 50 to roll back (α 0.02)"
        );
        let mut p90 = errors(Verdict::Pass, Reason::ShownSafe);
        p90.metric = Metric::LatencyP90;
        (p90.tolerance, p90.e_value) = (Some(Tolerances::default().latency_quantiles), None);
        (p90.canary.events, p90.stable.events) = (None, None);
        assert_eq!(
            sentence(&p90, 0.01),
            "p90 latency     ok             shown within 1.5×; canary 1.05× stable (98% interval 0.42×–2.60×)"
        );
        let mut tail = errors(Verdict::Pass, Reason::ShownSafe);
        (tail.metric, tail.tolerance) = (Metric::LatencyTail, Some(Tolerances::default().latency_tail));
        assert!(sentence(&tail, 0.012).starts_with("share > 12.0ms  ok             shown within 2× (or +1 point);"));
    }

    #[test]
    fn a_dry_run_metric_says_it_never_acts() {
        let mut v = errors(Verdict::Worse, Reason::EvidenceOfHarm);
        v.tolerance = v.tolerance.map(|t| Tolerance { observe: true, ..t });
        let text = sentence(&v, 0.01);
        assert!(text.starts_with("error rate      WORSE          evidence the canary is worse; "), "{text}");
        assert!(text.ends_with("to roll back (α 0.02); dry run: it never acts"), "{text}");
    }

    fn team(kind: TeamMetricKind, direction: Direction) -> TeamDetail {
        TeamDetail {
            name: "checkout_success".into(),
            kind,
            direction,
            observe: false,
            margin: None,
            canary_value: None,
            stable_value: None,
            no_data: None,
        }
    }

    #[test]
    fn a_team_ratio_goes_by_its_name_and_counts_its_misses() {
        let mut v = errors(Verdict::Inconclusive, Reason::NotYetShownSafe);
        (v.metric, v.team) = (Metric::Team, Some(team(TeamMetricKind::Ratio, Direction::HigherIsBetter)));
        v.tolerance = v.tolerance.map(|t| Tolerance { absolute: 0.0, ..t });
        let text = sentence(&v, 0.01);
        assert!(
            text.starts_with(
                "checkout_success not yet known  not yet shown within 2×; collecting; canary 1.05× stable"
            ),
            "{text}"
        );
        assert!(text.contains("misses 3/400 canary vs 30/4000 stable"), "{text}");
        v.reason = Reason::NoData;
        v.team.as_mut().unwrap().no_data = Some("stable's events: the query returned nothing".into());
        assert!(sentence(&v, 0.01).contains("no data (stable's events: the query returned nothing); holding"));
    }

    #[test]
    fn a_team_value_shows_its_latest_values_and_margin() {
        let detail = TeamDetail {
            name: "checkout_p99".into(),
            margin: Some(0.2),
            canary_value: Some(0.3),
            stable_value: Some(0.2),
            ..team(TeamMetricKind::Value, Direction::LowerIsBetter)
        };
        let v = MetricVerdict {
            metric: Metric::Team,
            verdict: Verdict::Worse,
            reason: Reason::BeyondMargin,
            estimate: Some(1.5),
            interval: Interval { lower: None, upper: None, level: 0.0 },
            e_value: None,
            threshold: 0.0,
            alpha: 0.0,
            tolerance: None,
            dispersion: 1.0,
            canary: Samples { requests: 0, events: None },
            stable: Samples { requests: 0, events: None },
            team: Some(detail),
        };
        assert_eq!(
            sentence(&v, 0.01),
            "checkout_p99    WORSE          worse than stable's by more than 20% (lower is better); \
             canary 0.3 vs stable 0.2 (1.50×)"
        );
    }

    #[test]
    fn the_user_split_pauses_and_compares_with_the_weight() {
        let v = MetricVerdict {
            metric: Metric::SampleRatio,
            verdict: Verdict::Worse,
            reason: Reason::SampleRatioMismatch,
            estimate: Some(0.5),
            interval: Interval { lower: None, upper: Some(0.8), level: 0.99 },
            e_value: Some(2.5e6),
            threshold: 1000.0,
            alpha: 0.001,
            tolerance: None,
            dispersion: 1.0,
            canary: Samples { requests: 50, events: None },
            stable: Samples { requests: 950, events: None },
            team: None,
        };
        assert_eq!(
            sentence(&v, 0.01),
            "user split      WORSE          users do not split as the weight says; canary users 0.50× the weight \
             predicts (99% interval at most 0.80×), evidence 2.5e6 of 1000 to pause (α 0.001)"
        );
        assert_eq!(decision_words(StepDecision::NeedsAttention), "needs a person");
    }
}
