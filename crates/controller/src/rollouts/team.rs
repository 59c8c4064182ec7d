//! The team's own metrics in a running rollout: which ones a new rollout is judged with, and,
//! every tick, their readings from Prometheus fed to the [`TeamJudge`], which is saved with the
//! rollout like the built-in judge.
//!
//! The runner asks the built-in judge first and this one second: a team metric shown worse
//! turns any decision into a rollback, and an advance waits until every acting team metric is
//! shown safe ([`TeamJudge::decide`]).

use canary_core::clock::unix_secs_f64;
use canary_core::judge::{Metric, MetricVerdict, StepDecision};
use canary_core::rollout::{Analysis, Command, Rollout};
use canary_core::team::{Reading, TeamJudge, check_team_metrics};

use super::Controller;
use crate::error::ControllerError;

impl Controller {
    /// Fills in the team metrics a new rollout is judged with — the service's configured ones
    /// unless the request named its own (or `[]`) — and checks that each can be asked.
    pub(super) fn resolve_team_metrics(&self, service: &str, analysis: &mut Analysis) -> Result<(), ControllerError> {
        let configured = &self.routing.service(service)?.team_metrics;
        let metrics = analysis.team_metrics.get_or_insert_with(|| configured.clone());
        check_team_metrics(metrics, self.team_queries.default_url().is_some()).map_err(ControllerError::Invalid)
    }
}

/// The team metrics' judge of one rollout, and what was last logged about each one's data.
pub(super) struct TeamJudging {
    judge: TeamJudge,
    /// Per metric, the no-data reason last logged (`None`: it had data).
    logged: Vec<Option<String>>,
}

impl TeamJudging {
    /// The rollout's saved team evidence, or a new judge of its team metrics; `None` when they
    /// cannot be judged, after pausing the rollout with the reason.
    pub(super) async fn start(controller: &Controller, service: &str, rollout: &Rollout) -> Option<TeamJudging> {
        let saved = if rollout.analysis.team().is_empty() {
            None
        } else {
            controller.load_team_evidence(service, &rollout.id).await
        };
        let judge = match saved {
            Some(judge) => judge,
            None => match TeamJudge::new(&rollout.analysis) {
                Ok(judge) => judge,
                Err(e) => {
                    let why = format!("team metrics cannot be judged: {e}");
                    let _ = controller.transition(service, Command::Pause(why), true).await;
                    return None;
                }
            },
        };
        let logged = judge.metrics().map(|_| None).collect();
        Some(TeamJudging { judge, logged })
    }

    /// Reads every team metric once, at one instant, and feeds the judge; then saves it.
    pub(super) async fn observe(&mut self, controller: &Controller, rollout: &Rollout, hold_passed: bool) {
        if self.judge.is_empty() {
            return;
        }
        let queries = controller.team_queries();
        let time = unix_secs_f64();
        let reads = self.judge.metrics().map(|metric| queries.read(metric, rollout, time));
        let readings = futures_util::future::join_all(reads).await;
        self.log(rollout, &readings);
        self.judge.observe(rollout.step, hold_passed, readings);
        controller.save_team_evidence(&rollout.service, &rollout.id, &self.judge).await;
    }

    /// Logs when a metric's data goes missing (once per reason) and when it comes back.
    fn log(&mut self, rollout: &Rollout, readings: &[Reading]) {
        for ((metric, logged), reading) in self.judge.metrics().zip(&mut self.logged).zip(readings) {
            let missing = match reading {
                Reading::NoData(why) => Some(why),
                _ => None,
            };
            if missing == logged.as_ref() {
                continue;
            }
            match missing {
                Some(why) => {
                    tracing::warn!(service = %rollout.service, metric = metric.name(), "no data: {why}; holding")
                }
                None => tracing::info!(service = %rollout.service, metric = metric.name(), "data again"),
            }
            *logged = missing.cloned();
        }
    }

    /// The built-in judge's `decision` with the team metrics taken in.
    pub(super) fn decide(&self, decision: StepDecision) -> StepDecision {
        self.judge.decide(decision)
    }

    /// The team metrics' verdicts, shown after the built-in ones.
    pub(super) fn verdicts(&self) -> Vec<MetricVerdict> {
        self.judge.verdicts()
    }

    /// [`Metric::Team`] when an acting team metric was shown worse.
    pub(super) fn rollback_metric(&self) -> Option<Metric> {
        self.judge.rollback_reason().map(|_| Metric::Team)
    }
}
