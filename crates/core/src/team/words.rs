//! Team metrics' verdicts in words, for the reason a rollout is rolled back or paused with.

use super::definition::{Direction, TeamMetricKind};
use crate::judge::{MetricVerdict, Reason, Samples};

/// A sentence about a team metric's verdict with the numbers behind it; `None` for a built-in
/// metric's verdict.
///
/// `team metric checkout_failures: canary 2.10% (21/1000) against stable's 0.50% (50/10000),
/// 4.20× (at least 1.80×); evidence 300 ≥ 100`, or for a value metric `team metric checkout_p99:
/// canary 0.52 against stable's 0.31, 1.68× (margin 20%, lower is better)`.
pub fn explain(v: &MetricVerdict) -> Option<String> {
    let team = v.team.as_ref()?;
    let name = &team.name;
    if team.kind == TeamMetricKind::Value {
        let mut text = match (team.canary_value, team.stable_value) {
            (Some(c), Some(s)) => format!("team metric {name}: canary {} against stable's {}", number(c), number(s)),
            _ => format!("team metric {name}: no value after the hold yet"),
        };
        if let Some(e) = v.estimate {
            text.push_str(&format!(", {e:.2}×"));
        }
        let margin = team.margin.map_or(String::new(), |m| format!("margin {}%, ", number(100.0 * m)));
        text.push_str(&format!(" ({margin}{})", direction_words(team.direction)));
        return Some(text);
    }
    let misses = if team.direction == Direction::HigherIsBetter { "misses " } else { "" };
    let mut text = match (rate(&v.canary), rate(&v.stable)) {
        (Some(c), Some(s)) => format!("team metric {name}: canary {misses}{c} against stable's {s}"),
        _ => format!("team metric {name}: canary worse than stable"),
    };
    match (v.estimate, v.interval.lower) {
        (Some(e), Some(l)) => text.push_str(&format!(", {e:.2}× (at least {l:.2}×)")),
        (None, Some(l)) => text.push_str(&format!(", at least {l:.2}×")),
        _ => {}
    }
    if let Some(e) = v.e_value {
        text.push_str(&format!("; evidence {} ≥ {:.0}", evidence(e), v.threshold));
    }
    Some(text)
}

/// `no data from team metric checkout_failures (stable's events: the query returned nothing)`
/// for every acting team metric whose latest look had no data; `None` when there is none.
pub fn no_data(verdicts: &[MetricVerdict]) -> Option<String> {
    let missing: Vec<String> = verdicts
        .iter()
        .filter(|v| v.reason == Reason::NoData)
        .filter_map(|v| v.team.as_ref().filter(|team| !team.observe))
        .map(|team| match &team.no_data {
            Some(why) => format!("no data from team metric {} ({why})", team.name),
            None => format!("no data from team metric {}", team.name),
        })
        .collect();
    (!missing.is_empty()).then(|| missing.join("; "))
}

/// `230`, or `2.6e24` for evidence far past any threshold.
fn evidence(e: f64) -> String {
    if e >= 1e6 { format!("{e:.1e}") } else { format!("{e:.0}") }
}

fn direction_words(direction: Direction) -> &'static str {
    match direction {
        Direction::LowerIsBetter => "lower is better",
        Direction::HigherIsBetter => "higher is better",
    }
}

fn rate(samples: &Samples) -> Option<String> {
    let trials = samples.requests;
    samples.events.map(|e| format!("{:.2}% ({e}/{trials})", 100.0 * e as f64 / trials.max(1) as f64))
}

/// Four significant digits at most, without trailing zeros.
fn number(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (3 - x.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text }
}
