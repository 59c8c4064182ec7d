//! Transitions: starting a rollout under the service's lock, applying commands, and
//! persisting each transition with its event and routing in one transaction.

use std::sync::Arc;
use std::time::Duration;

use canary_core::RouteSpec;
use canary_core::api::{RolloutView, StartRollout, StepsInput, Update, UpdateKind};
use canary_core::config::{HumanDuration, VersionConfig};
use canary_core::rollout::{Analysis, Command, Phase, Rollout, Transition, check_steps, default_steps};
use canary_store::{Revision, Txn, TxnOutcome, keys};

use super::{ATTEMPTS, Controller, now_ms, route_change, runner};
use crate::error::ControllerError;

/// One transition to persist: what the state machine produced, the routing it changes, and
/// the revisions the commit must still find.
struct Commit {
    transition: Transition,
    /// The routing as read, to change.
    spec: RouteSpec,
    spec_revision: Revision,
    /// The judge's slow threshold for the gateways, fixed when the rollout begins.
    slow_bucket: Option<u8>,
    rollout_revision: Revision,
    /// Only while this controller leads (the judge's commands).
    fenced: bool,
}

impl Controller {
    /// Refuses a hand-made routing change while a rollout owns the routing.
    pub async fn ensure_no_rollout(&self, service: &str) -> Result<(), ControllerError> {
        match self.load_active(service).await? {
            Some((r, _)) => Err(ControllerError::RolloutInProgress { service: service.to_owned(), rollout: r.id }),
            None => Ok(()),
        }
    }

    /// Starts a rollout; refused while another one of the service is active.
    pub async fn start(self: &Arc<Self>, service: &str, request: StartRollout) -> Result<RolloutView, ControllerError> {
        let slot = self.slot(service)?.clone();
        let steps = plan(request.steps.clone())?;
        let mut analysis = request.analysis.clone().unwrap_or_default();
        self.resolve_team_metrics(service, &mut analysis)?;
        analysis.validate().map_err(|e| ControllerError::Invalid(e.to_string()))?;
        self.check_gate_names(service, &analysis)?;
        let _serial = slot.transitions.lock().await;
        for _ in 0..ATTEMPTS {
            let (spec, spec_revision) = self.routing.current(service).await?;
            if spec.stable.version == request.version {
                return Err(ControllerError::Invalid(format!(
                    "version {} is already the stable version",
                    request.version.as_str()
                )));
            }
            let now = now_ms();
            let pending = pending_rollout(service, &request, &spec, steps.clone(), analysis.clone(), now);
            let baseline = self.stable_baseline(service, &spec).await;
            let slow_bucket = runner::slow_bucket(&pending.analysis, &baseline);
            let lock = keys::rollout_lock(service);
            let txn = Txn::new().require_absent(lock.clone()).put(lock.clone(), pending.id.clone().into_bytes());
            let first = if self.starts_staged(&pending) { Command::Stage } else { Command::Begin };
            let transition = pending.apply(&first, now)?;
            let commit = Commit {
                transition,
                spec,
                spec_revision,
                slow_bucket: Some(slow_bucket),
                rollout_revision: 0,
                fenced: false,
            };
            match self.commit(service, txn, commit).await? {
                Some((rollout, revision)) => {
                    slot.live.lock().expect("live").active = Some((rollout, revision));
                    if self.is_leading() {
                        self.spawn_runner(service);
                    }
                    return self.view(service, None);
                }
                None => {
                    if let Some(holder) = self.routing.store().get(&lock).await? {
                        return Err(ControllerError::RolloutInProgress {
                            service: service.to_owned(),
                            rollout: String::from_utf8_lossy(&holder.value).into_owned(),
                        });
                    }
                }
            }
        }
        Err(ControllerError::Contended(keys::routing(service)))
    }

    /// Stable's latency histogram so far, the judge's baseline for the tail threshold.
    pub(super) async fn stable_baseline(
        &self,
        service: &str,
        spec: &RouteSpec,
    ) -> [u64; canary_core::latency::LATENCY_BUCKETS] {
        match self.metrics.counts(service, spec.stable.version.as_str()).await {
            Ok(counts) => counts.latency_buckets,
            Err(e) => {
                tracing::warn!(service, error = %e, "no stable latency baseline");
                [0; canary_core::latency::LATENCY_BUCKETS]
            }
        }
    }

    /// Applies a person's `command` to the active rollout of `service`.
    pub async fn act(&self, service: &str, command: Command) -> Result<RolloutView, ControllerError> {
        self.transition(service, command, false).await
    }

    /// Applies `command`; `fenced` transitions (the judge's) commit only while this controller
    /// still leads, so a deposed leader that has not noticed yet cannot move a rollout.
    pub(crate) async fn transition(
        &self,
        service: &str,
        command: Command,
        fenced: bool,
    ) -> Result<RolloutView, ControllerError> {
        let slot = self.slot(service)?.clone();
        let _serial = slot.transitions.lock().await;
        for _ in 0..ATTEMPTS {
            if fenced && !self.is_leading() {
                return Err(ControllerError::NotLeader);
            }
            let (rollout, revision) =
                self.load_active(service).await?.ok_or_else(|| ControllerError::NoActiveRollout(service.to_owned()))?;
            let transition = rollout.apply(&command, now_ms())?;
            let (spec, spec_revision) = self.routing.current(service).await?;
            let slow_bucket = spec.slow_bucket;
            // Ending a rollout releases the service's lock in the same commit; the record's
            // revision, compared in `commit`, is what makes this writer the only one.
            let txn = if transition.rollout.phase.is_terminal() {
                Txn::new().delete(keys::rollout_lock(service))
            } else {
                Txn::new()
            };
            let commit = Commit { transition, spec, spec_revision, slow_bucket, rollout_revision: revision, fenced };
            match self.commit(service, txn, commit).await? {
                Some((next, next_revision)) => {
                    let ended = next.phase.is_terminal();
                    let view = {
                        let mut live = slot.live.lock().expect("live");
                        live.active = (!ended).then(|| (next.clone(), next_revision));
                        if ended {
                            live.judge = None;
                            // Dropping the run kills its processes.
                            live.gates = None;
                        }
                        let mut view = RolloutView::new(next, live.judge.clone());
                        view.gates = super::gating::gate_views(&live, &view.rollout.id);
                        view
                    };
                    if ended {
                        self.after_rollback(&view.rollout);
                    }
                    return Ok(view);
                }
                None => {
                    self.refresh(service).await?;
                }
            }
        }
        Err(ControllerError::Contended(keys::rollouts(service)))
    }

    /// Commits a transition with its event and routing, on top of `txn`; `Ok(None)` on a
    /// conflict.
    async fn commit(
        &self,
        service: &str,
        txn: Txn,
        commit: Commit,
    ) -> Result<Option<(Rollout, Revision)>, ControllerError> {
        let Commit { transition, mut spec, spec_revision, slow_bucket, rollout_revision, fenced } = commit;
        let Transition { rollout, event, route } = transition;
        let now = now_ms();
        let entry = self.routing.service(service)?;
        let (fixed_salt, rollback_grace) = (entry.configured.salt.clone(), entry.rollback_grace);
        let settings =
            route_change::Settings { slow_bucket, fixed_salt: fixed_salt.as_deref(), now_ms: now, rollback_grace };
        route_change::apply(&mut spec, &route, &rollout, &settings);
        let routing_changed = route != canary_core::rollout::RouteChange::None;
        if routing_changed {
            spec.generation += 1;
        }
        let record_key = keys::rollout(service, &rollout.id);
        let mut txn = txn
            .require_revision(record_key.clone(), rollout_revision)
            .put(record_key, serde_json::to_vec(&rollout).expect("rollouts serialize"))
            .put(
                keys::rollout_event(service, &rollout.id, event.seq),
                serde_json::to_vec(&event).expect("events serialize"),
            );
        if fenced {
            txn = txn.fenced(self.fence.lock().expect("fence").as_ref());
        }
        if routing_changed {
            txn = txn
                .require_revision(keys::routing(service), spec_revision)
                .put(keys::routing(service), serde_json::to_vec(&spec).expect("route specs serialize"));
        }
        match self.routing.store().commit(txn).await? {
            TxnOutcome::Conflict { .. } => Ok(None),
            TxnOutcome::Committed { revision } => {
                if routing_changed {
                    self.routing.wait_applied(revision).await;
                }
                tracing::info!(service, rollout = %rollout.id, phase = rollout.phase.name(), "{}", event.message);
                let view = RolloutView::new(rollout.clone(), None);
                let _ = self.updates.send(Update {
                    kind: UpdateKind::Rollout,
                    service: service.to_owned(),
                    rollout: Some(view),
                    event: Some(event),
                });
                Ok(Some((rollout, revision)))
            }
        }
    }
}

/// The plan a start request asks for, checked; the default plan when it names none.
fn plan(steps: Option<StepsInput>) -> Result<Vec<canary_core::rollout::Step>, ControllerError> {
    match steps {
        None => Ok(default_steps()),
        Some(StepsInput::Text(text)) => canary_core::rollout::parse_steps(&text).map_err(ControllerError::Invalid),
        Some(StepsInput::List(steps)) => {
            check_steps(&steps).map_err(ControllerError::Invalid)?;
            Ok(steps)
        }
    }
}

/// The record of a rollout of `request` from `spec`'s stable, before it begins.
fn pending_rollout(
    service: &str,
    request: &StartRollout,
    spec: &RouteSpec,
    steps: Vec<canary_core::rollout::Step>,
    analysis: Analysis,
    now: u64,
) -> Rollout {
    const TEN_MINUTES: HumanDuration = HumanDuration(Duration::from_secs(600));
    Rollout {
        id: format!("{service}-{now:x}"),
        service: service.to_owned(),
        stable: spec.stable.clone(),
        canary: VersionConfig { version: request.version.clone(), upstreams: request.upstreams.clone() },
        steps,
        drain: request.drain.unwrap_or(TEN_MINUTES),
        max_step_wait: request.max_step_wait.unwrap_or(TEN_MINUTES),
        analysis,
        phase: Phase::Pending,
        step: 0,
        step_started_ms: now,
        step_banked_ms: 0,
        created_ms: now,
        updated_ms: now,
        transitions: 0,
        reason: None,
    }
}
