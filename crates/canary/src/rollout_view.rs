//! A rollout as a person reads it: the admin API's [`RolloutView`] (and the [`Rollout`] records
//! of a history) rendered as text lines, which `status`, `list`, `history` and the live display
//! ([`crate::live_view`]) all draw from.
//!
//! `canary rollout status --watch` and `canary demo` draw the same lines from the same view, so
//! the demo shows exactly what an operator watching a real rollout sees.

use canary_core::api::RolloutView;
use canary_core::gate::GateStatus;
use canary_core::judge::Verdict;
use canary_core::rollout::{Phase, Rollout};

use crate::verdict_text::{decision_words, sentence, trimmed, verdict_name};

/// A phase as the CLI names it: `failed` reads `rolled back`.
pub fn phase_words(phase: Phase) -> &'static str {
    match phase {
        Phase::Failed => "rolled back",
        other => other.name(),
    }
}

/// `v1 → v2`.
pub fn versions(r: &Rollout) -> String {
    format!("{} → {}", r.stable.version.as_str(), r.canary.version.as_str())
}

/// `2/5`: the current step and the number of steps.
pub fn step_of(r: &Rollout) -> String {
    format!("{}/{}", (r.step + 1).min(r.steps.len()), r.steps.len())
}

/// `web: v1 → v2 (rollout web-18c…) progressing`, and `, in release train train-18c… with api`
/// for a train's member.
pub fn headline(r: &Rollout) -> String {
    let train = r.train.as_ref().map_or_else(String::new, |t| {
        let others: Vec<&str> = t.services.iter().map(String::as_str).filter(|s| *s != r.service).collect();
        format!(", in release train {} with {}", t.id, others.join(", "))
    });
    format!("{}: {} (rollout {}) {}{train}", r.service, versions(r), r.id, phase_words(r.phase))
}

/// `step 3 of 5 at 25%, held 3.2s of 5s, canary served 24.1% of requests, judge: hold`.
pub fn step_line(view: &RolloutView) -> String {
    let r = &view.rollout;
    let (step, total, over) = (r.step + 1, r.steps.len(), r.phase.is_terminal());
    let mut line = if over {
        format!("stopped at step {step} of {total}; canary weight now {}", percent(view.weight))
    } else {
        format!("step {step} of {total} at {}", percent(view.weight))
    };
    if !over && view.hold_seconds > 0.0 {
        line.push_str(&format!(", held {:.1}s of {:.0}s", view.held_seconds, view.hold_seconds));
    }
    if let Some(judge) = &view.judge {
        if let Some(share) = judge.observed_canary_share {
            line.push_str(&format!(", canary served {share:.1}% of requests"));
        }
        line.push_str(&format!(", judge: {}", decision_words(judge.decision)));
    }
    line
}

/// The plan with the current step marked: `1%/5s ✓ → 5%/5s ✓ → [25%/5s] → approve → 100%`
/// (`[approve]` while the rollout waits there).
pub fn plan_line(r: &Rollout) -> String {
    let over = r.phase.is_terminal();
    let waiting = r.phase == Phase::AwaitingApproval;
    let mut steps: Vec<String> = Vec::new();
    for (i, s) in r.steps.iter().enumerate() {
        let text =
            if s.hold.0.is_zero() { s.weight.to_string() } else { format!("{}/{}", s.weight, String::from(s.hold)) };
        let done = i < r.step || (r.phase == Phase::Promoted && i == r.step);
        steps.push(if i == r.step && !over && !waiting {
            format!("[{text}]")
        } else if done || (i == r.step && waiting) {
            format!("{text} ✓")
        } else {
            text
        });
        if s.approve {
            steps.push(if i == r.step && waiting { "[approve]".to_owned() } else { "approve".to_owned() });
        }
    }
    format!("plan: {}", steps.join(" → "))
}

/// One sentence per metric the judge tests.
pub fn verdict_lines(view: &RolloutView) -> Vec<String> {
    let Some(judge) = &view.judge else { return Vec::new() };
    let mut lines: Vec<String> = judge.verdicts.iter().map(|v| sentence(v, judge.tail_threshold_seconds)).collect();
    if judge.cohort_baseline {
        lines.push("(error rates are compared with the same users' own rates before the rollout)".to_owned());
    }
    lines
}

/// How it ended, or why it is paused: `promoted: …`, `rolled back …`, `aborted: …`, `paused: …`.
pub fn outcome_line(r: &Rollout) -> Option<String> {
    let why = because(r);
    match r.phase {
        Phase::Promoted => Some(format!("promoted: {} is the new stable{why}", r.canary.version.as_str())),
        Phase::Failed => Some(format!("rolled back automatically{why}")),
        Phase::Aborted => Some(format!("aborted{why}")),
        Phase::Paused => Some(format!("paused{why}")),
        Phase::AwaitingApproval => Some(format!(
            "waiting for approval at {}: canary rollout approve {} [--reason …] or reject {}",
            r.steps[r.step].weight, r.service, r.service
        )),
        Phase::Pending | Phase::Progressing => None,
    }
}

/// `: the reason`, or nothing.
fn because(r: &Rollout) -> String {
    r.reason.as_deref().map(|reason| format!(": {reason}")).unwrap_or_default()
}

/// The judge's latest word in a few words, or how the rollout ended:
/// `advance: every metric ok`, `hold: not yet known: p90 latency`, `roll back: WORSE: error rate`,
/// `rolled back: …`.
pub fn judge_words(view: &RolloutView) -> String {
    let r = &view.rollout;
    let Some(judge) = view.judge.as_ref().filter(|_| !r.phase.is_terminal()) else {
        return match r.phase {
            Phase::Promoted => "promoted".to_owned(),
            Phase::Failed => format!("rolled back{}", because(r)),
            _ => outcome_line(r).unwrap_or_else(|| "judge has not looked yet".to_owned()),
        };
    };
    let names = |verdict: Verdict| {
        let names: Vec<String> = judge
            .verdicts
            .iter()
            .filter(|v| v.verdict == verdict)
            .map(|v| verdict_name(v, judge.tail_threshold_seconds))
            .collect();
        (!names.is_empty()).then(|| names.join(", "))
    };
    let detail = match (names(Verdict::Worse), names(Verdict::Inconclusive)) {
        (Some(worse), _) => format!("WORSE: {worse}"),
        (None, Some(unknown)) => format!("not yet known: {unknown}"),
        (None, None) => "every metric ok".to_owned(),
    };
    format!("{}: {detail}", decision_words(judge.decision))
}

/// The release gates of the current step: `step 2 waiting on gate e2e (shard 2/3 running,
/// 41 s)`, `gate e2e passed in 12.0 s: 30 tests: …`, or the failure and its failed tests.
pub fn gate_lines(view: &RolloutView, now_ms: u64) -> Vec<String> {
    let mut out = Vec::new();
    for gate in &view.gates {
        match gate.status {
            GateStatus::Running if view.rollout.phase == Phase::Pending => {
                out.push(format!("before the first step {}", gate.waiting_line(now_ms)));
            }
            GateStatus::Running => out.push(format!("step {} {}", gate.step + 1, gate.waiting_line(now_ms))),
            GateStatus::Passed => out.push(gate.outcome_line()),
            GateStatus::Failed => {
                out.push(format!("gate {} failed", gate.name));
                let report = gate.report.as_ref();
                out.extend(report.map(|r| format!("  {}", r.line())));
                for test in report.map(|r| r.failed.as_slice()).unwrap_or_default() {
                    let message = test.message.lines().next().unwrap_or_default();
                    out.push(format!("  ✗ {}: {message}", test.name));
                }
                out.extend(gate.message.as_ref().map(|m| format!("  {m}")));
                out.extend(gate.output_file.as_ref().map(|f| format!("  output: {f}")));
            }
        }
    }
    out
}

/// Everything, as plain lines.
pub fn lines(view: &RolloutView) -> Vec<String> {
    let r = &view.rollout;
    let mut out = vec![headline(r), plan_line(r), step_line(view)];
    out.extend(verdict_lines(view).into_iter().map(|l| format!("  {l}")));
    out.extend(gate_lines(view, canary_core::clock::unix_ms()));
    out.extend(outcome_line(r));
    out
}

/// `25%`, `0.5%`, `12.25%`.
pub fn percent(weight: f64) -> String {
    format!("{}%", trimmed(weight))
}

#[cfg(test)]
pub(crate) mod tests {
    use canary_core::judge::StepDecision;

    use super::*;

    /// A progressing rollout at its second step, as the admin API sends it (with a field this
    /// CLI does not know, which it ignores), whose judge says roll back.
    pub(crate) fn view() -> RolloutView {
        serde_json::from_str(
            r#"{
                "id": "web-1", "service": "web",
                "stable": {"version": "v1", "upstreams": ["127.0.0.1:1"]},
                "canary": {"version": "v2", "upstreams": ["127.0.0.1:2"]},
                "steps": [{"weight": 1.0, "hold": "5s"}, {"weight": 25.0, "hold": "5s"}, {"weight": 100.0, "hold": "0s"}],
                "drain": "10m", "maxStepWait": "10m",
                "phase": "progressing", "step": 1, "stepStartedMs": 0, "stepBankedMs": 0,
                "createdMs": 0, "updatedMs": 0, "transitions": 2, "reason": null, "somethingNew": true,
                "weight": 25.0, "heldSeconds": 2.5, "holdSeconds": 5.0,
                "judge": {
                    "decision": "rollback", "observedCanaryShare": 24.3, "tailThresholdSeconds": 0.01, "atMs": 0,
                    "verdicts": [{
                        "metric": "errors", "verdict": "worse", "reason": "evidenceOfHarm", "estimate": 6.1,
                        "interval": {"lower": 2.3, "upper": 15.2, "level": 0.98}, "eValue": 230.0, "threshold": 50.0,
                        "alpha": 0.02, "tolerance": {"worseAbove": 1.25, "safeBelow": 2.0, "absolute": 0.005},
                        "dispersion": 1.0,
                        "canary": {"requests": 400, "events": 24}, "stable": {"requests": 4000, "events": 40}
                    }, {
                        "metric": "latencyP50", "verdict": "inconclusive", "reason": "notEnoughData", "estimate": null,
                        "interval": {"lower": null, "upper": null, "level": 0.9925}, "eValue": null, "threshold": 133.3,
                        "alpha": 0.0075, "tolerance": {"worseAbove": 1.2, "safeBelow": 1.5}, "dispersion": 1.0,
                        "canary": {"requests": 40, "events": null}, "stable": {"requests": 4000, "events": null}
                    }]
                }
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn a_view_reads_as_sentences() {
        let v = view();
        assert_eq!(headline(&v.rollout), "web: v1 → v2 (rollout web-1) progressing");
        let services = vec!["web".to_owned(), "api".to_owned(), "auth".to_owned()];
        let train = canary_core::train::TrainRef { id: "train-1".into(), salt: "s".into(), services };
        let member = Rollout { train: Some(train), ..v.rollout.clone() };
        assert_eq!(
            headline(&member),
            "web: v1 → v2 (rollout web-1) progressing, in release train train-1 with api, auth"
        );
        assert_eq!(plan_line(&v.rollout), "plan: 1%/5s ✓ → [25%/5s] → 100%");
        assert_eq!(
            step_line(&v),
            "step 2 of 3 at 25%, held 2.5s of 5s, canary served 24.3% of requests, judge: roll back"
        );
        let lines = verdict_lines(&v);
        assert_eq!(
            lines[0],
            "error rate      WORSE          evidence the canary is worse; canary 6.10× stable \
             (98% interval 2.30×–15.2×), 24/400 canary vs 40/4000 stable, evidence 230 of 50 to roll back (α 0.02)"
        );
        assert_eq!(lines[1], "median latency  not yet known  needs more data (canary 40 / stable 4000 requests)");
        assert_eq!(judge_words(&v), "roll back: WORSE: error rate");
    }

    #[test]
    fn the_judge_in_a_few_words() {
        let mut v = view();
        let judge = v.judge.as_mut().unwrap();
        judge.decision = StepDecision::Hold;
        judge.verdicts[0].verdict = Verdict::Pass;
        assert_eq!(judge_words(&v), "hold: not yet known: median latency");
        v.judge.as_mut().unwrap().verdicts[1].verdict = Verdict::Pass;
        v.judge.as_mut().unwrap().decision = StepDecision::Advance;
        assert_eq!(judge_words(&v), "advance: every metric ok");
        v.judge = None;
        assert_eq!(judge_words(&v), "judge has not looked yet");
        v.rollout.phase = Phase::Aborted;
        v.rollout.reason = Some("wrong build".into());
        assert_eq!(judge_words(&v), "aborted: wrong build");
        v.rollout.phase = Phase::Failed;
        v.rollout.reason = Some("canary error rate 6.1× stable's".into());
        assert_eq!(judge_words(&v), "rolled back: canary error rate 6.1× stable's");
    }

    #[test]
    fn gates_read_as_lines() {
        use canary_core::gate::{FailedTest, GateKind, GateView, GateWhen, JunitSummary, ShardStatus};
        let mut v = view();
        let mut gate = GateView::start("e2e", GateKind::Command, GateWhen::BeforeStep, 1, 3, 1_000);
        gate.shards[0].status = ShardStatus::Passed;
        gate.shards[2].status = ShardStatus::Passed;
        v.gates = vec![gate.clone()];
        assert_eq!(gate_lines(&v, 42_000), ["step 2 waiting on gate e2e (shard 2/3 running, 41 s)"]);
        gate.shards[1].status = ShardStatus::Failed;
        let failed = FailedTest { name: "checkout › pays".into(), message: "expected 200\nat line 3".into() };
        gate.report = Some(JunitSummary { tests: 30, failures: 1, failed: vec![failed], ..JunitSummary::default() });
        gate.finish(43_000);
        v.gates = vec![gate];
        assert_eq!(
            gate_lines(&v, 50_000),
            ["gate e2e failed", "  30 tests: 29 passed, 1 failed, 0 skipped", "  ✗ checkout › pays: expected 200"]
        );
    }

    #[test]
    fn a_finished_rollout_says_how_it_ended() {
        let mut v = view();
        v.rollout.phase = Phase::Failed;
        v.rollout.reason = Some("canary error rate 6.1× stable's".into());
        assert!(v.rollout.phase.is_terminal());
        assert_eq!(outcome_line(&v.rollout).unwrap(), "rolled back automatically: canary error rate 6.1× stable's");
        assert!(headline(&v.rollout).ends_with("rolled back"));
        assert_eq!(plan_line(&v.rollout), "plan: 1%/5s ✓ → 25%/5s → 100%");
        (v.weight, v.judge) = (0.0, None);
        assert_eq!(step_line(&v), "stopped at step 2 of 3; canary weight now 0%");
        v.rollout.phase = Phase::Promoted;
        v.rollout.step = 2;
        assert_eq!(plan_line(&v.rollout), "plan: 1%/5s ✓ → 25%/5s ✓ → 100% ✓");
        assert_eq!(percent(12.5), "12.5%");
        assert_eq!(percent(100.0), "100%");
    }
}
