//! What a rollout does next on its own: the judge's decision, the gateways' breakers and the
//! step clock turned into one [`Command`], or none.
//!
//! This is the policy half of the controller's runner, kept pure beside [`Rollout::apply`] so
//! that every rule is a case in a unit test: the runner reads metrics, calls [`next_command`],
//! and applies what it returns. A new input (a release gate, an external alarm) is one more
//! field of [`Signals`] and one more rule here.
//!
//! The rules, first match wins:
//! 1. a gateway's local breaker tripped → fail, in `progressing`, `paused` and
//!    `awaitingApproval` (a pause holds the plan, not the safety net: a dead canary is rolled
//!    back even while a person looks);
//! 2. `awaitingApproval`: the judge says roll back → fail (a canary shown worse is rolled back
//!    while it waits for a person), else nothing;
//! 3. anything else but `progressing` → nothing;
//! 4. the judge says roll back → fail, with the failing metric in words;
//! 5. the judge says advance → advance;
//! 6. the users' split does not match the weight → pause for a person;
//! 7. a final step at 100 % whose hold passed with its minimum of canary requests and no metric
//!    against it → advance (promote): stable only keeps its pinned sessions there, so the
//!    judge's "enough samples of both versions in this step" may never come;
//! 8. the hold passed longer ago than `max_step_wait` and the judge still cannot decide → pause,
//!    naming the team metrics whose queries answered nothing ([`crate::team`]): no data holds a
//!    step and pauses it, never rolls back.
//!
//! An advance out of a step marked `approve` becomes "await approval": the rollout holds its
//! weight, still judged (rule 2), until a person approves or rejects it.
//!
//! In observe mode (a dry run, [`crate::rollout::Analysis::observe`]) rules 4–8 give way to one:
//! the hold passed → advance (still through an approval), and rule 2 never rolls back. The judge's verdicts are still computed and shown, so a team sees
//! what it would have done before letting it act; rule 1 stays, because a breaker trip is a
//! canary that fails hard, not a statistical judgement.

use crate::config::HumanDuration;
use crate::judge::{Metric, MetricVerdict, Samples, StepDecision, Verdict};
use crate::rollout::{Command, Phase, Rollout};
use crate::team;
use crate::weight::Weight;

/// How the reason of a rollback a local breaker caused begins: the canary failed hard, so it
/// gets no grace for its open pages ([`crate::spec::RetiredSpec`]).
pub const BREAKER_TRIPPED: &str = "local breaker tripped";

/// What the judge concluded this tick.
#[derive(Debug, Clone, Copy)]
pub struct Judgement<'a> {
    /// The step decision.
    pub decision: StepDecision,
    /// Every metric's verdict, to explain a rollback.
    pub verdicts: &'a [MetricVerdict],
    /// The metric that rejected first, if one did.
    pub rollback_metric: Option<Metric>,
}

/// Everything besides the judge that a decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Signals<'a> {
    /// Unix ms now.
    pub now_ms: u64,
    /// Why a gateway's local breaker tripped on the canary, if one did.
    pub breaker_tripped: Option<&'a str>,
    /// Canary requests served since the current step began.
    pub canary_requests_in_step: u64,
}

/// The command the rollout should get now, if any.
pub fn next_command(rollout: &Rollout, judgement: &Judgement<'_>, signals: &Signals<'_>) -> Option<Command> {
    if let Some(why) = signals.breaker_tripped
        && matches!(rollout.phase, Phase::Progressing | Phase::Paused | Phase::AwaitingApproval)
    {
        return Some(Command::Fail(format!("{BREAKER_TRIPPED}: {why}")));
    }
    match rollout.phase {
        Phase::AwaitingApproval => {
            let worse = judgement.decision == StepDecision::Rollback && !rollout.analysis.observe;
            worse.then(|| Command::Fail(explain(judgement.verdicts, judgement.rollback_metric)))
        }
        Phase::Progressing => {
            let command = progressing_command(rollout, judgement, signals)?;
            let needs_approval = command == Command::Advance && rollout.steps[rollout.step].approve;
            Some(if needs_approval { Command::AwaitApproval } else { command })
        }
        _ => None,
    }
}

/// Rules 4–8 (or observe mode's one) for a progressing rollout.
fn progressing_command(rollout: &Rollout, judgement: &Judgement<'_>, signals: &Signals<'_>) -> Option<Command> {
    if rollout.analysis.observe {
        return rollout.hold_passed(signals.now_ms).then_some(Command::Advance);
    }
    match judgement.decision {
        StepDecision::Rollback => Some(Command::Fail(explain(judgement.verdicts, judgement.rollback_metric))),
        StepDecision::Advance => Some(Command::Advance),
        StepDecision::NeedsAttention => {
            Some(Command::Pause("users do not split as the weight says (sample-ratio mismatch)".into()))
        }
        StepDecision::Hold if final_step_may_promote(rollout, signals) => Some(Command::Advance),
        StepDecision::Hold => undecided_too_long(rollout, judgement.verdicts, signals.now_ms),
    }
}

/// Rule 7: a `Hold` means no metric rejected (any rejection makes the decision `Rollback`); the
/// earlier steps made the comparison.
fn final_step_may_promote(rollout: &Rollout, signals: &Signals<'_>) -> bool {
    let last_full = rollout.step + 1 == rollout.steps.len() && rollout.weight() == Weight::FULL;
    last_full
        && rollout.hold_passed(signals.now_ms)
        && signals.canary_requests_in_step >= rollout.analysis.min_requests_per_step
}

/// Rule 8, naming the team metrics that had no data.
fn undecided_too_long(rollout: &Rollout, verdicts: &[MetricVerdict], now_ms: u64) -> Option<Command> {
    let hold = duration_ms(rollout.steps[rollout.step].hold);
    let waited = rollout.held_ms(now_ms).saturating_sub(hold);
    (waited > duration_ms(rollout.max_step_wait)).then(|| {
        let mut why =
            format!("the judge could not decide within {} after the hold", String::from(rollout.max_step_wait));
        if let Some(missing) = team::no_data(verdicts) {
            why.push_str(&format!(": {missing}"));
        }
        Command::Pause(why)
    })
}

fn duration_ms(duration: HumanDuration) -> u64 {
    u64::try_from(duration.0.as_millis()).unwrap_or(u64::MAX)
}

/// A sentence for a person about the metric that failed, with the numbers behind it.
pub fn explain(verdicts: &[MetricVerdict], metric: Option<Metric>) -> String {
    // Several team metrics share `Metric::Team`: the one that failed is the one shown worse.
    let failed = verdicts.iter().find(|v| match metric {
        Some(Metric::Team) => v.metric == Metric::Team && v.verdict == Verdict::Worse,
        Some(metric) => v.metric == metric,
        None => v.verdict == Verdict::Worse,
    });
    let Some(v) = failed else {
        return "the judge found the canary worse than stable".into();
    };
    if let Some(text) = team::explain(v) {
        return text;
    }
    let what = metric_words(v.metric);
    let mut text = match (rate(&v.canary), rate(&v.stable)) {
        (Some(c), Some(s)) => format!("canary {what} {c} against stable's {s}"),
        _ => format!("canary {what} worse than stable's"),
    };
    match (v.estimate, v.interval.lower) {
        (Some(e), Some(l)) => text.push_str(&format!(", {e:.2}× (at least {l:.2}×)")),
        (None, Some(l)) => text.push_str(&format!(", at least {l:.2}×")),
        _ => {}
    }
    if let Some(e) = v.e_value {
        text.push_str(&format!("; evidence {e:.0} ≥ {:.0}", v.threshold));
    }
    text
}

/// What a metric measures, in the words of a sentence.
pub fn metric_words(metric: Metric) -> &'static str {
    match metric {
        Metric::Errors => "error rate",
        Metric::LatencyTail => "share of slow requests",
        Metric::LatencyP50 => "median latency",
        Metric::LatencyP90 => "p90 latency",
        Metric::SampleRatio => "user split",
        Metric::Team => "team metric",
    }
}

fn rate(samples: &Samples) -> Option<String> {
    let requests = samples.requests;
    samples.events.map(|e| format!("{:.2}% ({e}/{requests})", 100.0 * e as f64 / requests.max(1) as f64))
}

#[cfg(test)]
mod tests;
