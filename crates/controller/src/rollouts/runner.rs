//! The loop that watches one active rollout: every tick it feeds the judge the counters since
//! the rollout (re)started and applies what [`canary_core::policy::next_command`] makes of the
//! judge's decision, the local breakers and the step clock.

use std::sync::Arc;

use canary_core::judge::{Baseline, Judge, MetricVerdict, StepDecision, TickCounts};
use canary_core::latency::{LATENCY_BOUNDS_SECONDS, LATENCY_BUCKETS};
use canary_core::policy::{Judgement, Signals, next_command};
use canary_core::rollout::{Analysis, Command, Rollout};
use canary_gateway::VersionCounts;

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

/// The judge of one rollout with where the counters stood when it started.
struct Judging {
    judge: Judge,
    stable_version: String,
    canary_version: String,
    stable_start: VersionCounts,
    canary_start: VersionCounts,
    /// The step the judge last saw, and the canary's requests when that step began.
    step: usize,
    step_start_canary: u64,
}

impl Judging {
    /// Reads the starting counters and builds the judge; `None` when the rollout has ended
    /// or cannot be judged yet (the leader's adopter starts a new runner on its next tick).
    async fn start(controller: &Arc<Controller>, service: &str) -> Option<Judging> {
        let rollout = controller.active(service).ok().flatten()?;
        let stable_version = rollout.stable.version.as_str().to_owned();
        let canary_version = rollout.canary.version.as_str().to_owned();
        let metrics = controller.metrics();
        let (Ok(stable_start), Ok(canary_start)) =
            (metrics.counts(service, &stable_version).await, metrics.counts(service, &canary_version).await)
        else {
            tracing::warn!(service, "cannot read counters to start the judge; retrying next tick");
            return None;
        };
        let analysis = rollout.analysis;
        let judge = match Judge::new(analysis.judge_config(), baseline(&analysis, &stable_start.latency_buckets)) {
            Ok(judge) => judge,
            Err(e) => {
                let _ = controller.transition(service, Command::Pause(format!("judge cannot start: {e}")), true).await;
                return None;
            }
        };
        Some(Judging {
            judge,
            stable_version,
            canary_version,
            stable_start,
            canary_start,
            step: rollout.step,
            step_start_canary: 0,
        })
    }

    /// Feeds the judge this tick's counters; `None` when they could not be read or were refused.
    async fn observe(&mut self, controller: &Controller, service: &str, rollout: &Rollout) -> Option<TickCounts> {
        let entered_step = rollout.step != self.step;
        if entered_step {
            self.step = rollout.step;
            self.judge.begin_step();
        }
        let metrics = controller.metrics();
        let (Ok(stable), Ok(canary)) =
            (metrics.counts(service, &self.stable_version).await, metrics.counts(service, &self.canary_version).await)
        else {
            tracing::warn!(service, "counters unavailable this tick; holding");
            return None;
        };
        let tick = TickCounts {
            canary_weight: rollout.weight(),
            canary: judge_counts(&since(&canary, &self.canary_start)),
            stable: judge_counts(&since(&stable, &self.stable_start)),
        };
        if entered_step {
            self.step_start_canary = tick.canary.requests;
        }
        if let Err(e) = self.judge.observe(&tick) {
            tracing::warn!(service, error = %e, "judge refused a tick");
            return None;
        }
        Some(tick)
    }
}

/// Watches the active rollout of `service` until it ends: each tick reads the counters, asks
/// the pure policy what to do, and applies its command.
pub async fn run(controller: Arc<Controller>, service: String) {
    let Some(mut judging) = Judging::start(&controller, &service).await else { return };
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
        let Some(tick) = judging.observe(&controller, &service, &rollout).await else { continue };
        let now = now_ms();
        let decision = judging.judge.decision(rollout.hold_passed(now));
        let verdicts = judging.judge.verdicts();
        publish_view(&controller, &service, &judging.judge, &tick, decision, &verdicts, now);
        let breaker = controller.metrics().breaker_tripped(&service).await.ok().flatten();
        let judgement = Judgement { decision, verdicts: &verdicts, rollback_metric: judging.judge.rollback_reason() };
        let signals = Signals {
            now_ms: now,
            breaker_tripped: breaker.as_deref(),
            canary_requests_in_step: tick.canary.requests.saturating_sub(judging.step_start_canary),
        };
        let Some(command) = next_command(&rollout, &judgement, &signals) else { continue };
        match controller.transition(&service, command, true).await {
            Ok(view) if view.rollout.phase.is_terminal() => return,
            Ok(_) => {}
            Err(e) => tracing::warn!(service, error = %e, "transition failed; retrying next tick"),
        }
    }
}

/// Shows this tick's verdicts in the API, the CLI and the dashboard.
fn publish_view(
    controller: &Controller,
    service: &str,
    judge: &Judge,
    tick: &TickCounts,
    decision: StepDecision,
    verdicts: &[MetricVerdict],
    at_ms: u64,
) {
    let total = tick.canary.requests + tick.stable.requests;
    controller.set_judge_view(
        service,
        JudgeView {
            decision,
            verdicts: verdicts.to_vec(),
            observed_canary_share: (total > 0).then(|| 100.0 * tick.canary.requests as f64 / total as f64),
            tail_threshold_seconds: judge.tail_threshold_seconds(),
            at_ms,
        },
    );
}
