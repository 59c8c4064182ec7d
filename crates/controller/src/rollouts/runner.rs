//! The loop that watches one active rollout: every tick it feeds the judge the counters since
//! the rollout (re)started, and turns the judge's step decision, the local breakers and the
//! step clock into commands.

use std::sync::Arc;

use canary_core::judge::{Baseline, Judge, Metric, MetricVerdict, StepDecision, TickCounts, Verdict};
use canary_core::latency::{LATENCY_BOUNDS_SECONDS, LATENCY_BUCKETS};
use canary_core::metrics::VersionCounts;
use canary_core::rollout::{Analysis, Command, Phase};

use super::{Controller, JudgeView, now_ms};
use crate::metrics_source::judge_counts;

/// The tail threshold used when stable has no latency history yet: 250 ms.
const FALLBACK_TAIL_SECONDS: f64 = 0.25;

/// The judge's baseline from stable's histogram; a fixed threshold when stable has none.
fn baseline(analysis: &Analysis, stable_histogram: &[u64; LATENCY_BUCKETS]) -> Baseline {
    let quantile = analysis.judge_config().tail_quantile;
    let from_history = Baseline::from_stable_histogram(stable_histogram, quantile);
    if from_history.tail().is_some() {
        return from_history;
    }
    let mut synthetic = [0u64; LATENCY_BUCKETS];
    let index = LATENCY_BOUNDS_SECONDS.partition_point(|&b| b < FALLBACK_TAIL_SECONDS);
    synthetic[index] = 1000;
    Baseline::from_stable_histogram(&synthetic, quantile)
}

/// The latency bucket above which a request is slow, fixed when the rollout begins.
pub fn slow_bucket(analysis: &Analysis, stable_histogram: &[u64; LATENCY_BUCKETS]) -> u8 {
    match Judge::new(analysis.judge_config(), baseline(analysis, stable_histogram)) {
        Ok(judge) => judge.slow_bucket() as u8,
        Err(_) => (LATENCY_BUCKETS - 2) as u8,
    }
}

/// A version's counters minus where they stood when the judge started.
fn since(now: &VersionCounts, start: &VersionCounts) -> VersionCounts {
    let sub = |a: u64, b: u64| a.saturating_sub(b);
    VersionCounts {
        responses: std::array::from_fn(|i| sub(now.responses[i], start.responses[i])),
        upstream_errors: std::array::from_fn(|i| sub(now.upstream_errors[i], start.upstream_errors[i])),
        latency_buckets: std::array::from_fn(|i| sub(now.latency_buckets[i], start.latency_buckets[i])),
        latency_sum_micros: sub(now.latency_sum_micros, start.latency_sum_micros),
        judge_errors: sub(now.judge_errors, start.judge_errors),
        new_sessions: sub(now.new_sessions, start.new_sessions),
        group_errors: std::array::from_fn(|i| sub(now.group_errors[i], start.group_errors[i])),
        group_slow: std::array::from_fn(|i| sub(now.group_slow[i], start.group_slow[i])),
    }
}

/// A sentence for a person about the metric that failed, with the numbers behind it.
fn explain(verdicts: &[MetricVerdict], metric: Option<Metric>) -> String {
    let Some(v) =
        verdicts.iter().find(|v| Some(v.metric) == metric || (metric.is_none() && v.verdict == Verdict::Worse))
    else {
        return "the judge found the canary worse than stable".into();
    };
    let what = match v.metric {
        Metric::Errors => "error rate",
        Metric::LatencyTail => "share of slow requests",
        Metric::LatencyP50 => "median latency",
        Metric::LatencyP90 => "p90 latency",
        Metric::SampleRatio => "user split",
    };
    let rate = |s: &canary_core::judge::Samples| {
        s.events.map(|e| format!("{:.2}% ({e}/{})", 100.0 * e as f64 / s.requests.max(1) as f64, s.requests))
    };
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

/// Watches the active rollout of `service` until it ends.
pub async fn run(controller: Arc<Controller>, service: String) {
    let Some(rollout) = controller.active(&service).ok().flatten() else { return };
    let stable_version = rollout.stable.version.as_str().to_owned();
    let canary_version = rollout.canary.version.as_str().to_owned();
    let read = |version: String| {
        let controller = controller.clone();
        let service = service.clone();
        async move { controller.metrics.counts(&service, &version).await }
    };
    let (Ok(stable_start), Ok(canary_start)) = (read(stable_version.clone()).await, read(canary_version.clone()).await)
    else {
        tracing::error!(service, "cannot read counters; the rollout is held until the controller restarts");
        return;
    };
    let analysis = rollout.analysis;
    let mut judge = match Judge::new(analysis.judge_config(), baseline(&analysis, &stable_start.latency_buckets)) {
        Ok(judge) => judge,
        Err(e) => {
            let _ = controller.transition(&service, Command::Pause(format!("judge cannot start: {e}")), true).await;
            return;
        }
    };
    let mut step = rollout.step;
    let mut step_start_canary = 0u64;
    let mut interval = tokio::time::interval(controller.settings.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        if !controller.is_leading() {
            return;
        }
        let rollout = match controller.refresh(&service).await {
            Ok(Some(rollout)) => rollout,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(service, error = %e, "cannot read the rollout this tick; holding");
                continue;
            }
        };
        let entered_step = rollout.step != step;
        if entered_step {
            step = rollout.step;
            judge.begin_step();
        }
        let (Ok(stable), Ok(canary)) = (read(stable_version.clone()).await, read(canary_version.clone()).await) else {
            tracing::warn!(service, "counters unavailable this tick; holding");
            continue;
        };
        let tick = TickCounts {
            canary_weight: rollout.weight(),
            canary: judge_counts(&since(&canary, &canary_start)),
            stable: judge_counts(&since(&stable, &stable_start)),
        };
        if entered_step {
            step_start_canary = tick.canary.requests;
        }
        if let Err(e) = judge.observe(&tick) {
            tracing::warn!(service, error = %e, "judge refused a tick");
            continue;
        }
        let now = now_ms();
        let mut decision = judge.decision(rollout.hold_passed(now));
        // At a final 100 % step stable only keeps its pinned sessions, so the judge's "enough
        // samples of both versions in this step" may never come. Promotion then needs the hold,
        // the step's minimum of canary requests and no metric against it (a `Hold` means none has
        // rejected: any rejection makes the decision `Rollback`); the earlier steps made the
        // comparison.
        let last_full = rollout.step + 1 == rollout.steps.len() && rollout.weight() == canary_core::Weight::FULL;
        if last_full
            && decision == StepDecision::Hold
            && rollout.hold_passed(now)
            && tick.canary.requests.saturating_sub(step_start_canary) >= analysis.min_requests_per_step
        {
            decision = StepDecision::Advance;
        }
        let verdicts = judge.verdicts();
        let total = tick.canary.requests + tick.stable.requests;
        controller.set_judge_view(
            &service,
            JudgeView {
                decision,
                verdicts: verdicts.clone(),
                observed_canary_share: (total > 0).then(|| 100.0 * tick.canary.requests as f64 / total as f64),
                tail_threshold_seconds: judge.tail_threshold_seconds(),
                at_ms: now,
            },
        );
        if rollout.phase != Phase::Progressing {
            continue;
        }
        let command = match controller.metrics.breaker_tripped(&service).await {
            Ok(Some(why)) => Some(Command::Fail(format!("local breaker tripped: {why}"))),
            _ => match decision {
                StepDecision::Rollback => Some(Command::Fail(explain(&verdicts, judge.rollback_reason()))),
                StepDecision::Advance => Some(Command::Advance),
                StepDecision::NeedsAttention => {
                    Some(Command::Pause("users do not split as the weight says (sample-ratio mismatch)".into()))
                }
                StepDecision::Hold => {
                    let hold = rollout.steps[rollout.step].hold.0.as_millis() as u64;
                    let waited = rollout.held_ms(now).saturating_sub(hold);
                    (waited > rollout.max_step_wait.0.as_millis() as u64).then(|| {
                        Command::Pause(format!(
                            "the judge could not decide within {} after the hold",
                            humanize(rollout.max_step_wait.0)
                        ))
                    })
                }
            },
        };
        if let Some(command) = command {
            match controller.transition(&service, command, true).await {
                Ok(view) if view.rollout.phase.is_terminal() => return,
                Ok(_) => {}
                Err(e) => tracing::warn!(service, error = %e, "transition failed; retrying next tick"),
            }
        }
    }
}

fn humanize(d: std::time::Duration) -> String {
    String::from(canary_core::config::HumanDuration(d))
}
