//! Transitions: starting a rollout under the service's lock, applying commands, and
//! persisting each transition with its event and routing in one transaction.

use std::sync::Arc;
use std::time::Duration;

use canary_core::RouteSpec;
use canary_core::api::{RolloutView, StartRollout, StepsInput, Update, UpdateKind};
use canary_core::config::{HumanDuration, VersionConfig};
use canary_core::rollout::{Analysis, Command, Phase, Rollout, Transition, check_steps, default_steps};
use canary_core::train::TrainRef;
use canary_store::{Revision, Txn, TxnOutcome, keys};

use super::{ATTEMPTS, Controller, now_ms, route_change, runner};
use crate::error::ControllerError;

/// One transition to persist: what the state machine produced, the routing it changes, and
/// the revisions the commit must still find.
pub(super) struct Commit {
    pub(super) transition: Transition,
    /// The routing as read, to change.
    pub(super) spec: RouteSpec,
    pub(super) spec_revision: Revision,
    /// The judge's slow threshold for the gateways, fixed when the rollout begins.
    pub(super) slow_bucket: Option<u8>,
    pub(super) rollout_revision: Revision,
    /// Only while this controller leads (the judge's commands).
    pub(super) fenced: bool,
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
        let (steps, analysis) = self.checked_plan(service, &request)?;
        let _serial = slot.transitions.lock().await;
        for _ in 0..ATTEMPTS {
            let now = now_ms();
            let opening = self.opening(service, &request, steps.clone(), analysis.clone(), now, None).await?;
            let first = if self.starts_staged(&opening.pending) { Command::Stage } else { Command::Begin };
            let (txn, commit) = opening.commit(Txn::new(), &first, now)?;
            match self.commit(service, txn, commit).await? {
                Some((rollout, revision)) => return self.started(rollout, revision),
                None => self.refuse_if_locked(service).await?,
            }
        }
        Err(ControllerError::Contended(keys::routing(service)))
    }

    /// Takes a rollout that just began into the live view of its service, starts its judge when
    /// this controller leads, and returns its view.
    pub(super) fn started(
        self: &Arc<Self>,
        rollout: Rollout,
        revision: Revision,
    ) -> Result<RolloutView, ControllerError> {
        let service = rollout.service.clone();
        self.slot(&service)?.live.lock().expect("live").active = Some((rollout, revision));
        if self.is_leading() {
            self.spawn_runner(&service);
        }
        self.view(&service, None)
    }

    /// The plan and the judge's settings `request` asks of `service`, checked.
    pub(super) fn checked_plan(
        &self,
        service: &str,
        request: &StartRollout,
    ) -> Result<(Vec<canary_core::rollout::Step>, Analysis), ControllerError> {
        let steps = plan(request.steps.clone())?;
        let mut analysis = request.analysis.clone().unwrap_or_default();
        self.resolve_team_metrics(service, &mut analysis)?;
        analysis.validate().map_err(|e| ControllerError::Invalid(e.to_string()))?;
        self.check_gate_names(service, &analysis)?;
        Ok((steps, analysis))
    }

    /// The record of a rollout of `request` on `service` and the routing it starts from.
    pub(super) async fn opening(
        &self,
        service: &str,
        request: &StartRollout,
        steps: Vec<canary_core::rollout::Step>,
        analysis: Analysis,
        now: u64,
        train: Option<TrainRef>,
    ) -> Result<Opening, ControllerError> {
        let (spec, spec_revision) = self.routing.current(service).await?;
        if spec.stable.version == request.version {
            return Err(ControllerError::Invalid(format!(
                "{service}: version {} is already the stable version",
                request.version.as_str()
            )));
        }
        let mut pending = pending_rollout(service, request, &spec, steps, analysis, now);
        pending.train = train;
        let baseline = self.stable_baseline(service, &spec).await;
        let slow_bucket = runner::slow_bucket(&pending.analysis, &baseline);
        Ok(Opening { pending, spec, spec_revision, slow_bucket })
    }

    /// After a start lost its commit: the refusal when another rollout holds the service's lock.
    pub(super) async fn refuse_if_locked(&self, service: &str) -> Result<(), ControllerError> {
        match self.routing.store().get(&keys::rollout_lock(service)).await? {
            Some(holder) => Err(ControllerError::RolloutInProgress {
                service: service.to_owned(),
                rollout: String::from_utf8_lossy(&holder.value).into_owned(),
            }),
            None => Ok(()),
        }
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
    /// still leads, so a deposed leader that has not noticed yet cannot move a rollout. A
    /// member of a release train moves with the whole train (a gate's event stays its own).
    pub(crate) async fn transition(
        &self,
        service: &str,
        command: Command,
        fenced: bool,
    ) -> Result<RolloutView, ControllerError> {
        let slot = self.slot(service)?.clone();
        let serial = slot.transitions.lock().await;
        for _ in 0..ATTEMPTS {
            if fenced && !self.is_leading() {
                return Err(ControllerError::NotLeader);
            }
            let (rollout, revision) =
                self.load_active(service).await?.ok_or_else(|| ControllerError::NoActiveRollout(service.to_owned()))?;
            if let Some(train) = rollout.train.as_ref().filter(|_| !matches!(command, Command::Gate(_))) {
                // The train takes every member's lock, this one's among them, in its own order.
                drop(serial);
                return self.transition_train(service, train, command, fenced).await;
            }
            let commit = self.next_commit(service, &rollout, revision, &command, fenced).await?;
            match self.commit(service, Txn::new(), commit).await? {
                Some((next, next_revision)) => return Ok(self.settle(service, next, next_revision)),
                None => {
                    self.refresh(service).await?;
                }
            }
        }
        Err(ControllerError::Contended(keys::rollouts(service)))
    }

    /// The commit of `command` applied to the active `rollout` of `service` (read at
    /// `revision`), with the routing as it stands.
    pub(super) async fn next_commit(
        &self,
        service: &str,
        rollout: &Rollout,
        revision: Revision,
        command: &Command,
        fenced: bool,
    ) -> Result<Commit, ControllerError> {
        let transition = rollout.apply(command, now_ms())?;
        let (spec, spec_revision) = self.routing.current(service).await?;
        let slow_bucket = spec.slow_bucket;
        Ok(Commit { transition, spec, spec_revision, slow_bucket, rollout_revision: revision, fenced })
    }

    /// Takes a committed transition into the live view of `service`: ends its judge and gates
    /// when the rollout ended (and starts its after-rollback hooks), and returns its view.
    pub(super) fn settle(&self, service: &str, next: Rollout, revision: Revision) -> RolloutView {
        let Ok(slot) = self.slot(service) else { return RolloutView::new(next, None) };
        let ended = next.phase.is_terminal();
        let view = {
            let mut live = slot.live.lock().expect("live");
            live.active = (!ended).then(|| (next.clone(), revision));
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
        view
    }

    /// Commits a transition with its event and routing, on top of `txn`; `Ok(None)` on a
    /// conflict.
    pub(super) async fn commit(
        &self,
        service: &str,
        txn: Txn,
        commit: Commit,
    ) -> Result<Option<(Rollout, Revision)>, ControllerError> {
        let (txn, staged) = self.stage(service, txn, commit)?;
        match self.routing.store().commit(txn).await? {
            TxnOutcome::Conflict { .. } => Ok(None),
            TxnOutcome::Committed { revision } => Ok(Some(self.finish(staged, revision).await)),
        }
    }

    /// Adds a transition's record, event and routing to `txn`, for one commit that may hold
    /// several (a release train's members). Ending a rollout releases its service's lock in the
    /// same commit; the record's revision, compared here, is what makes this writer the only one.
    pub(super) fn stage(&self, service: &str, txn: Txn, commit: Commit) -> Result<(Txn, Staged), ControllerError> {
        let Commit { transition, mut spec, spec_revision, slow_bucket, rollout_revision, fenced } = commit;
        let Transition { rollout, event, route } = transition;
        let entry = self.routing.service(service)?;
        let (fixed_salt, rollback_grace) = (entry.configured.salt.clone(), entry.rollback_grace);
        let settings =
            route_change::Settings { slow_bucket, fixed_salt: fixed_salt.as_deref(), now_ms: now_ms(), rollback_grace };
        route_change::apply(&mut spec, &route, &rollout, &settings);
        let routing_changed = route != canary_core::rollout::RouteChange::None;
        if routing_changed {
            spec.generation += 1;
        }
        let record_key = keys::rollout(service, &rollout.id);
        let mut txn = if rollout.phase.is_terminal() { txn.delete(keys::rollout_lock(service)) } else { txn };
        txn = txn
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
        Ok((txn, Staged { service: service.to_owned(), rollout, event, routing_changed }))
    }

    /// After a commit at `revision`: waits for the local gateway to follow a routing change, and
    /// tells the live views.
    pub(super) async fn finish(&self, staged: Staged, revision: Revision) -> (Rollout, Revision) {
        let Staged { service, rollout, event, routing_changed } = staged;
        if routing_changed {
            self.routing.wait_applied(revision).await;
        }
        tracing::info!(service, rollout = %rollout.id, phase = rollout.phase.name(), "{}", event.message);
        let view = RolloutView::new(rollout.clone(), None);
        let _ =
            self.updates.send(Update { kind: UpdateKind::Rollout, service, rollout: Some(view), event: Some(event) });
        (rollout, revision)
    }
}

/// A rollout about to begin: its pending record and the routing it starts from.
pub(super) struct Opening {
    pub(super) pending: Rollout,
    spec: RouteSpec,
    spec_revision: Revision,
    slow_bucket: u8,
}

impl Opening {
    /// Adds taking the service's rollout lock to `txn`, and the commit of the rollout's `first`
    /// command.
    pub(super) fn commit(self, txn: Txn, first: &Command, now: u64) -> Result<(Txn, Commit), ControllerError> {
        let Opening { pending, spec, spec_revision, slow_bucket } = self;
        let lock = keys::rollout_lock(&pending.service);
        let txn = txn.require_absent(lock.clone()).put(lock, pending.id.clone().into_bytes());
        let transition = pending.apply(first, now)?;
        let commit = Commit {
            transition,
            spec,
            spec_revision,
            slow_bucket: Some(slow_bucket),
            rollout_revision: 0,
            fenced: false,
        };
        Ok((txn, commit))
    }
}

/// A transition added to a transaction, and what is left to do once it committed.
pub(super) struct Staged {
    service: String,
    rollout: Rollout,
    event: canary_core::rollout::Event,
    routing_changed: bool,
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
        train: None,
    }
}
