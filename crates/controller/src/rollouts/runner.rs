//! The loop that watches one active rollout: every tick it feeds the judge the counters since
//! the rollout (re)started and applies what [`canary_core::policy::next_command`] makes of the
//! judge's decision, the local breakers and the step clock.

use std::sync::Arc;

use canary_core::Weight;
use canary_core::judge::{Baseline, CohortBaseline, Judge, MetricVerdict, StepDecision, TickCounts};
use canary_core::latency::{LATENCY_BOUNDS_SECONDS, LATENCY_BUCKETS};
use canary_core::policy::{Judgement, Signals, next_command};
use canary_core::rollout::{Analysis, Command, Rollout};

use canary_core::api::JudgeView;

use super::team::TeamJudging;
use super::{Controller, now_ms};
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

/// The two versions a judge compares, by name, and the cohort id of the rollout's salt.
struct Versions {
    stable: String,
    canary: String,
    cohort: String,
}

impl Versions {
    /// Both versions' cumulative counters, as the judge reads them.
    async fn read(&self, controller: &Controller, service: &str, weight: Weight) -> Option<TickCounts> {
        let Ok([stable, canary]) = controller.metrics().counts_together(service, [&self.stable, &self.canary]).await
        else {
            return None;
        };
        let (canary, stable) = (judge_counts(&canary, &self.cohort), judge_counts(&stable, &self.cohort));
        Some(TickCounts { canary_weight: weight, canary, stable })
    }
}

/// The judge of one rollout and the versions it reads.
struct Judging {
    judge: Judge,
    rollout_id: String,
    versions: Versions,
    team: TeamJudging,
}

impl Judging {
    /// The rollout's saved judge, or a new one primed with the counters as they stand; `None`
    /// when the rollout has ended or cannot be judged yet (the leader's adopter starts a new
    /// runner on its next tick).
    async fn start(controller: &Arc<Controller>, service: &str) -> Option<Judging> {
        let rollout = controller.active(service).ok().flatten()?;
        let (spec, _) = controller.routing.current(service).await.ok()?;
        let versions = Versions {
            stable: rollout.stable.version.as_str().to_owned(),
            canary: rollout.canary.version.as_str().to_owned(),
            cohort: canary_core::cohort::cohort_id(spec.salt_in_force()),
        };
        let judge = match controller.load_evidence(service, &rollout.id).await {
            Some(judge) => {
                tracing::info!(service, rollout = %rollout.id, "continuing with the judge's saved evidence");
                judge
            }
            None => fresh_judge(controller, service, &rollout, &versions).await?,
        };
        let team = TeamJudging::start(controller, service, &rollout).await?;
        Some(Judging { judge, rollout_id: rollout.id, versions, team })
    }

    /// Feeds the judge this tick's counters; `false` when they could not be read or were refused.
    async fn observe(&mut self, controller: &Controller, service: &str, rollout: &Rollout) -> bool {
        self.judge.enter_step(rollout.step);
        self.judge.set_leads_to_full(rollout.step_leads_to_full());
        let Some(tick) = self.versions.read(controller, service, rollout.weight()).await else {
            tracing::warn!(service, "counters unavailable this tick; holding");
            return false;
        };
        let warming = rollout.analysis.warming_up(rollout.step_started_ms, now_ms());
        let observed = if settling(controller, rollout) {
            self.judge.prime(&tick);
            Ok(())
        } else if warming {
            self.judge.observe_warming_up(&tick)
        } else {
            self.judge.observe(&tick)
        };
        if let Err(e) = observed {
            tracing::warn!(service, error = %e, "judge refused a tick");
            return false;
        }
        controller.save_evidence(service, &self.rollout_id, &self.judge).await;
        true
    }
}

/// Whether counts read now may still hold users the weight before the current step's split:
/// a source that lags (Prometheus) shows the gateways as they were seconds ago, and judged
/// against the new weight those users look like a split mismatch. Such counts only move the
/// judge's starting point.
fn settling(controller: &Controller, rollout: &Rollout) -> bool {
    let staleness = controller.metrics().staleness();
    let window = u64::try_from((staleness + controller.settings.tick).as_millis()).unwrap_or(u64::MAX);
    !staleness.is_zero() && now_ms().saturating_sub(rollout.step_started_ms) < window
}

/// A judge for a rollout that has none yet, primed with the counters as they stand.
async fn fresh_judge(controller: &Controller, service: &str, rollout: &Rollout, versions: &Versions) -> Option<Judge> {
    let Some(start) = versions.read(controller, service, rollout.weight()).await else {
        tracing::warn!(service, "cannot read counters to start the judge; retrying next tick");
        return None;
    };
    let analysis = &rollout.analysis;
    // What stable served under the rollout's salt before it began: the canary cohort's history.
    let cohort = CohortBaseline::from_ranges([start.stable.ranges.as_slice()]);
    let baseline = baseline(analysis, &start.stable.latency).with_cohort(cohort);
    match Judge::new(analysis.judge_config(), baseline) {
        Ok(mut judge) => {
            judge.prime(&start);
            Some(judge)
        }
        Err(e) => {
            let _ = controller.transition(service, Command::Pause(format!("judge cannot start: {e}")), true).await;
            None
        }
    }
}

/// Watches the active rollout of `service` until it ends: each tick reads the counters, asks
/// the pure policy what to do, and applies its command.
pub async fn run(controller: Arc<Controller>, service: String) {
    if !controller.before_start(&service).await {
        return;
    }
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
            Ok(None) => {
                // Ended elsewhere: by a person, another controller, or with its release train.
                controller.drop_evidence(&service, &judging.rollout_id).await;
                return;
            }
            Err(e) => {
                tracing::warn!(service, error = %e, "cannot read the rollout this tick; holding");
                continue;
            }
        };
        if !judging.observe(&controller, &service, &rollout).await {
            continue;
        }
        let now = now_ms();
        let hold_passed = rollout.hold_passed(now);
        judging.team.observe(&controller, &rollout, hold_passed).await;
        let decision = judging.team.decide(judging.judge.decision(hold_passed));
        let verdicts = [judging.judge.verdicts(), judging.team.verdicts()].concat();
        publish_view(&controller, &service, &judging.judge, decision, &verdicts, now);
        let breaker = controller.tripped(&service).await;
        let rollback_metric = judging.judge.rollback_reason().or(judging.team.rollback_metric());
        let judgement = Judgement { decision, verdicts: &verdicts, rollback_metric };
        let signals = Signals {
            now_ms: now,
            breaker_tripped: breaker.as_deref(),
            canary_requests_in_step: judging.judge.requests_in_step().0,
        };
        let command = match next_command(&rollout, &judgement, &signals) {
            Some(command) => controller.gated(&service, &rollout, command).await,
            None => None,
        };
        let Some(command) = controller.when_together(&service, &rollout, command) else { continue };
        match controller.transition(&service, command, true).await {
            Ok(view) if view.rollout.phase.is_terminal() => {
                controller.drop_evidence(&service, &judging.rollout_id).await;
                return;
            }
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
    decision: StepDecision,
    verdicts: &[MetricVerdict],
    at_ms: u64,
) {
    let requests = |v: Option<&MetricVerdict>| v.map_or((0, 0), |v| (v.canary.requests, v.stable.requests));
    let (canary, stable) = requests(verdicts.first());
    let total = canary + stable;
    controller.set_judge_view(
        service,
        JudgeView {
            decision,
            verdicts: verdicts.to_vec(),
            observed_canary_share: (total > 0).then(|| 100.0 * canary as f64 / total as f64),
            tail_threshold_seconds: judge.tail_threshold_seconds(),
            cohort_baseline: judge.uses_cohort_baseline(),
            at_ms,
        },
    );
}
