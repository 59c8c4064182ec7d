//! The summary: outcomes per scenario, false rollbacks (A/A) or detections with a 95 % Wilson
//! interval, times to rollback, and why rollouts paused.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::record::{Outcome, Record};

/// z for a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The 95 % Wilson score interval of a proportion `k / n`, as (lower, upper).
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The `q` quantile (0–1) of `values` by nearest rank; `None` when empty.
pub fn nearest_rank(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// Prints the summary of a results file.
pub fn print_file(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let records = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| format!("{}:{}: not a result", path.display(), i + 1))
        })
        .collect::<anyhow::Result<Vec<Record>>>()?;
    print!("{}", render(&records));
    Ok(())
}

/// The summary of `records`, grouped by scenario in the order they first appear.
pub fn render(records: &[Record]) -> String {
    if records.is_empty() {
        return "no rollout was recorded\n".into();
    }
    let mut order: Vec<&str> = Vec::new();
    for record in records {
        if !order.contains(&record.scenario.as_str()) {
            order.push(&record.scenario);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:>5} {:>8} {:>11} {:>6} {:>7} {:>10}",
        "scenario", "ended", "promoted", "rolled back", "paused", "aborted", "unfinished"
    );
    let groups: Vec<(&str, Vec<&Record>)> =
        order.iter().map(|s| (*s, records.iter().filter(|r| r.scenario == *s).collect())).collect();
    for (scenario, group) in &groups {
        let count = |o: Outcome| group.iter().filter(|r| r.outcome == o).count();
        let ended = group.len() - count(Outcome::Unfinished);
        let _ = writeln!(
            out,
            "{scenario:<12} {ended:>5} {:>8} {:>11} {:>6} {:>7} {:>10}",
            count(Outcome::Promoted),
            count(Outcome::Failed),
            count(Outcome::Paused),
            count(Outcome::Aborted),
            count(Outcome::Unfinished)
        );
    }
    for (scenario, group) in &groups {
        out.push('\n');
        out.push_str(&scenario_details(scenario, group));
    }
    out
}

fn scenario_details(scenario: &str, group: &[&Record]) -> String {
    let mut out = String::new();
    let first = group[0];
    let _ = writeln!(out, "{scenario} (plan {}, {} req/s per service, {} users):", first.plan, first.rps, first.users);
    let ended: Vec<&&Record> = group.iter().filter(|r| r.outcome != Outcome::Unfinished).collect();
    let failed: Vec<&&Record> = ended.iter().copied().filter(|r| r.outcome == Outcome::Failed).collect();
    let (k, n) = (failed.len(), ended.len());
    let (low, high) = wilson(k, n);
    let what = if scenario.starts_with('x') { "detections" } else { "false rollbacks" };
    let share = if n == 0 { 0.0 } else { 100.0 * k as f64 / n as f64 };
    let _ = writeln!(
        out,
        "  {what}: {k}/{n} = {share:.1} % (95 % Wilson interval {:.1}–{:.1} %)",
        100.0 * low,
        100.0 * high
    );
    let times =
        |outcome: Outcome| -> Vec<f64> { ended.iter().filter(|r| r.outcome == outcome).map(|r| r.seconds).collect() };
    for (label, outcome) in [("rollback", Outcome::Failed), ("promotion", Outcome::Promoted)] {
        let seconds = times(outcome);
        if let (Some(median), Some(p90)) = (nearest_rank(&seconds, 0.5), nearest_rank(&seconds, 0.9)) {
            let _ = writeln!(out, "  time to {label}: median {median:.1} s, p90 {p90:.1} s");
        }
    }
    let by_metric = tally(failed.iter().map(|r| r.failing_metric.clone().unwrap_or_else(|| "unknown".into())));
    if !by_metric.is_empty() {
        let _ = writeln!(out, "  rolled back by: {}", join(&by_metric));
    }
    let paused: Vec<&&Record> = ended.iter().copied().filter(|r| r.outcome == Outcome::Paused).collect();
    for (reason, times) in tally(paused.iter().map(|r| r.reason.clone().unwrap_or_else(|| "no reason".into()))) {
        let _ = writeln!(out, "  paused {times}× (aborted by the harness): {reason}");
    }
    let holding = tally(paused.iter().flat_map(|r| r.not_shown_safe.iter().cloned()));
    if !holding.is_empty() {
        let _ = writeln!(out, "  not shown safe when paused: {}", join(&holding));
    }
    out
}

fn tally(items: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_insert(0) += 1;
    }
    counts
}

fn join(counts: &BTreeMap<String, usize>) -> String {
    counts.iter().map(|(what, n)| format!("{what} {n}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(scenario: &str, outcome: Outcome, seconds: f64, metric: Option<&str>, reason: Option<&str>) -> Record {
        Record {
            scenario: scenario.into(),
            service: "svc-1".into(),
            rollout: "svc-1-1".into(),
            version: "v2-1".into(),
            outcome,
            reason: reason.map(str::to_owned),
            seconds,
            step: 1,
            canary_requests: Some(100),
            stable_requests: Some(1000),
            canary_errors: Some(1),
            stable_errors: Some(10),
            errors_e_value: Some(1.0),
            errors_dispersion: Some(1.0),
            canary_new_users: Some(5),
            stable_new_users: Some(95),
            observed_canary_share: Some(9.0),
            tail_threshold_seconds: Some(0.01),
            cohort_baseline: Some(false),
            failing_metric: metric.map(str::to_owned),
            not_shown_safe: Vec::new(),
            plan: "5%/10s,100%".into(),
            rps: 50.0,
            users: 2000,
        }
    }

    #[test]
    fn wilson_matches_published_values() {
        // Newcombe (1998), table I: 0/10 → 0–0.2775, 1/29 → 0.0061–0.1718.
        let (low, high) = wilson(0, 10);
        assert!(low == 0.0 && (high - 0.2775).abs() < 5e-4, "{low} {high}");
        let (low, high) = wilson(1, 29);
        assert!((low - 0.0061).abs() < 5e-4 && (high - 0.1718).abs() < 5e-4, "{low} {high}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let values = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(nearest_rank(&values, 0.5), Some(3.0));
        assert_eq!(nearest_rank(&values, 0.9), Some(5.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn the_summary_counts_false_rollbacks_detections_and_pauses() {
        let srm = "users do not split as the weight says (sample-ratio mismatch)";
        let records = vec![
            record("aa", Outcome::Promoted, 40.0, None, None),
            record("aa", Outcome::Failed, 12.0, Some("latencyTail"), Some("canary share of slow requests …")),
            record("aa", Outcome::Paused, 8.0, None, Some(srm)),
            record("aa", Outcome::Unfinished, 3.0, None, None),
            record("x5", Outcome::Failed, 10.0, Some("errors"), None),
            record("x5", Outcome::Failed, 30.0, Some("errors"), None),
        ];
        let text = render(&records);
        assert!(text.contains("false rollbacks: 1/3 = 33.3 %"), "{text}");
        assert!(text.contains("detections: 2/2 = 100.0 %"), "{text}");
        assert!(text.contains("time to rollback: median 10.0 s, p90 30.0 s"), "{text}");
        assert!(text.contains(&format!("paused 1× (aborted by the harness): {srm}")), "{text}");
        assert!(text.contains("rolled back by: latencyTail 1"), "{text}");
        let aa_row = text.lines().nth(1).unwrap();
        assert_eq!(aa_row.split_whitespace().collect::<Vec<_>>(), ["aa", "3", "1", "1", "1", "0", "1"]);
    }
}
