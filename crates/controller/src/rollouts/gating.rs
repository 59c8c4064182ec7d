//! Release gates in a rollout's life: what the policy's command becomes once the gates of its
//! moment have had their say, the before-start gates of a staged rollout, and the hooks after
//! a rollback.
//!
//! Only an automatic advance waits for gates: a `before-step` gate before each move to the next
//! step, a `before-promote` gate before the move past the last. Any other command (the judge's
//! rollback, a pause) stops the running gates and goes through as it is. A person's promote or
//! abort is not gated.

use std::sync::Arc;

use canary_core::gate::{GateConfig, GateView, GateWhen, OnFailure};
use canary_core::rollout::{Analysis, Command, Phase, Rollout};

use super::{Controller, Live};
use crate::error::ControllerError;
use crate::gates::{RunContext, StageOutcome, StageRun, after_rollback};

impl Controller {
    /// The gates of `rollout` that run at `when`.
    pub(super) fn gates_at(&self, rollout: &Rollout, when: GateWhen) -> Vec<GateConfig> {
        let Ok(entry) = self.routing.service(&rollout.service) else { return Vec::new() };
        let runs = |g: &&GateConfig| g.when == when && rollout.analysis.runs_gate(&g.name);
        entry.gates.iter().filter(runs).cloned().collect()
    }

    /// Refuses a rollout that names a gate its service does not have.
    pub(super) fn check_gate_names(&self, service: &str, analysis: &Analysis) -> Result<(), ControllerError> {
        let entry = self.routing.service(service)?;
        for name in analysis.gates.iter().flatten() {
            if !entry.gates.iter().any(|g| &g.name == name) {
                let known: Vec<&str> = entry.gates.iter().map(|g| g.name.as_str()).collect();
                let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                return Err(ControllerError::Invalid(format!(
                    "service {service:?} has no gate {name:?} (its gates: {known})"
                )));
            }
        }
        Ok(())
    }

    /// `command` once the gates have had their say: an advance waits (`None`) while the
    /// step's gates run, goes through once they all passed, and becomes a rollback or a pause
    /// when one failed.
    pub(super) async fn gated(self: &Arc<Self>, service: &str, rollout: &Rollout, command: Command) -> Option<Command> {
        if command != Command::Advance {
            self.stop_gates(service);
            return Some(command);
        }
        let when = if rollout.step + 1 < rollout.steps.len() { GateWhen::BeforeStep } else { GateWhen::BeforePromote };
        self.through_gates(service, rollout, when, command).await
    }

    /// `pass` once every gate of `when` passed at `rollout`'s current step; starts them when
    /// they have not run yet.
    async fn through_gates(
        self: &Arc<Self>,
        service: &str,
        rollout: &Rollout,
        when: GateWhen,
        pass: Command,
    ) -> Option<Command> {
        let gates = self.gates_at(rollout, when);
        if gates.is_empty() {
            return Some(pass);
        }
        let slot = self.slot(service).ok()?.clone();
        let outcome = {
            let live = slot.live.lock().expect("live");
            live.gates.as_ref().filter(|run| run.is_for(rollout, when)).map(StageRun::outcome)
        };
        match outcome {
            None => {
                let (spec, _) = self.routing.current(service).await.ok()?;
                let token = spec.force_token.as_deref().filter(|_| spec.rollout_id == rollout.id);
                let judge = slot.live.lock().expect("live").judge.clone();
                let entry = self.routing.service(service).ok()?;
                let context = RunContext::new(entry, token, rollout, judge.as_ref(), &self.settings.gates);
                let run = StageRun::start(self.clone(), rollout, when, gates, context);
                slot.live.lock().expect("live").gates = Some(run);
                None
            }
            Some(StageOutcome::Running) => None,
            Some(StageOutcome::Passed) => Some(pass),
            Some(StageOutcome::Failed { on_failure, reason }) => match on_failure {
                OnFailure::Pause if rollout.phase == Phase::Progressing => Some(Command::Pause(reason)),
                _ => Some(Command::Fail(reason)),
            },
        }
    }

    /// Kills the gates running for `service`, if any.
    fn stop_gates(&self, service: &str) {
        if let Ok(slot) = self.slot(service) {
            let stopped = slot.live.lock().expect("live").gates.take();
            drop(stopped);
        }
    }

    /// For a staged rollout (pending, its canary at 0 %): runs the before-start gates each
    /// tick until they pass and the rollout begins (`true`), or one fails and it is rolled back,
    /// or it ends or this controller stops leading (`false`).
    pub(super) async fn before_start(self: &Arc<Self>, service: &str) -> bool {
        let mut interval = tokio::time::interval(self.settings.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            if !self.is_leading() {
                return false;
            }
            let rollout = match self.refresh(service).await {
                Ok(Some(rollout)) => rollout,
                Ok(None) => return false,
                Err(e) => {
                    tracing::warn!(service, error = %e, "cannot read the rollout this tick; holding");
                    continue;
                }
            };
            if rollout.phase != Phase::Pending {
                return true;
            }
            let command = self.through_gates(service, &rollout, GateWhen::BeforeStart, Command::Begin).await;
            // A release train begins once every member's before-start gates have passed.
            let Some(command) = self.when_together(service, &rollout, command) else { continue };
            match self.transition(service, command, true).await {
                Ok(view) => return view.rollout.phase == Phase::Progressing,
                Err(e) => tracing::warn!(service, error = %e, "transition failed; retrying next tick"),
            }
        }
    }

    /// Whether `rollout` starts staged, for its before-start gates.
    pub(super) fn starts_staged(&self, rollout: &Rollout) -> bool {
        !self.gates_at(rollout, GateWhen::BeforeStart).is_empty()
    }

    /// Starts the after-rollback hooks of a rollout that was rolled back or aborted.
    pub(super) fn after_rollback(&self, rollout: &Rollout) {
        if !matches!(rollout.phase, Phase::Failed | Phase::Aborted) {
            return;
        }
        let gates = self.gates_at(rollout, GateWhen::AfterRollback);
        let Ok(entry) = self.routing.service(&rollout.service) else { return };
        if gates.is_empty() {
            return;
        }
        let context = RunContext::new(entry, None, rollout, None, &self.settings.gates);
        after_rollback(gates, context, rollout.step);
    }
}

/// The gate views of `live` that belong to rollout `id`.
pub(super) fn gate_views(live: &Live, id: &str) -> Vec<GateView> {
    live.gates.as_ref().filter(|run| run.rollout_id() == id).map(StageRun::views).unwrap_or_default()
}
