//! Release trains: one rollout per member service, started, moved and ended together in single
//! store transactions, so a train is never half promoted or half rolled back.
//!
//! Each member keeps its own judge (its runner); what they decide meets here. A rollback, a
//! pause or a person's action on any member applies to every member in one commit. A step
//! advances only once every member's runner has said "advance" at the state it stands in
//! ([`canary_core::train::advance_together`]).

use std::sync::Arc;

use canary_core::api::{RolloutView, StartTrain, TrainView};
use canary_core::rollout::{Command, Rollout};
use canary_core::train::{Readiness, TrainRef, advance_together, check_members, member_command, train_salt};
use canary_store::{Txn, TxnOutcome, keys};

use super::{ATTEMPTS, Controller, Slot, now_ms};
use crate::error::ControllerError;

impl Controller {
    /// Starts a release train: every member's rollout begins in one commit, under one salt, or
    /// none does (another rollout of any member refuses the whole train).
    pub async fn start_train(self: &Arc<Self>, request: StartTrain) -> Result<TrainView, ControllerError> {
        let services: Vec<String> = request.members.iter().map(|m| m.service.clone()).collect();
        check_members(&services).map_err(ControllerError::Invalid)?;
        let mut plans = Vec::new();
        for member in &request.members {
            let member_request = request.member_request(member);
            let (steps, mut analysis) = self.checked_plan(&member.service, &member_request)?;
            // Any member's rollback rolls back all: each judge gets its share of the train's α.
            analysis.alpha /= services.len() as f64;
            plans.push((member_request, steps, analysis));
        }
        let slots = self.train_slots(&services)?;
        let serials = lock_in_order(&slots).await;
        for _ in 0..ATTEMPTS {
            let now = now_ms();
            let train = self.new_train(&services, now)?;
            let mut openings = Vec::new();
            for (member, (member_request, steps, analysis)) in request.members.iter().zip(&plans) {
                let (steps, analysis, train) = (steps.clone(), analysis.clone(), Some(train.clone()));
                openings.push(self.opening(&member.service, member_request, steps, analysis, now, train).await?);
            }
            // Before-start gates of any member hold every member at 0 % until all have passed.
            let staged = openings.iter().any(|o| self.starts_staged(&o.pending));
            let first = if staged { Command::Stage } else { Command::Begin };
            let mut txn = Txn::new();
            let mut all_staged = Vec::new();
            for opening in openings {
                let service = opening.pending.service.clone();
                let (with_lock, commit) = opening.commit(txn, &first, now)?;
                let (next, staged) = self.stage(&service, with_lock, commit)?;
                txn = next;
                all_staged.push(staged);
            }
            match self.routing.store().commit(txn).await? {
                TxnOutcome::Committed { revision } => {
                    let mut members = Vec::new();
                    for staged in all_staged {
                        let (rollout, revision) = self.finish(staged, revision).await;
                        members.push(self.started(rollout, revision)?);
                    }
                    drop(serials);
                    return Ok(TrainView { id: train.id, members });
                }
                TxnOutcome::Conflict { .. } => {
                    for service in &services {
                        self.refuse_if_locked(service).await?;
                    }
                }
            }
        }
        Err(ControllerError::Contended(keys::routing(&services[0])))
    }

    /// A new train over `services`: its id and the salt every member's buckets use.
    fn new_train(&self, services: &[String], now: u64) -> Result<TrainRef, ControllerError> {
        let id = format!("train-{now:x}");
        let mut fixed = Vec::new();
        for service in services {
            fixed.push((service.as_str(), self.routing.service(service)?.configured.salt.as_deref()));
        }
        let drawn = format!("{id}-s{:016x}", rand::random::<u64>());
        let salt = train_salt(&fixed, drawn).map_err(ControllerError::Invalid)?;
        Ok(TrainRef { id, salt, services: services.to_vec() })
    }

    /// The slots of `services`, in name order: every path that locks several takes them in this
    /// order, so two of them never wait on each other.
    fn train_slots(&self, services: &[String]) -> Result<Vec<Arc<Slot>>, ControllerError> {
        let mut names: Vec<&String> = services.iter().collect();
        names.sort();
        names.into_iter().map(|s| self.slot(s).cloned()).collect()
    }

    /// Applies `command`, decided for member `origin`, to every active member of `train` in one
    /// commit; returns `origin`'s view.
    pub(super) async fn transition_train(
        &self,
        origin: &str,
        train: &TrainRef,
        command: Command,
        fenced: bool,
    ) -> Result<RolloutView, ControllerError> {
        let slots = self.train_slots(&train.services)?;
        let serials = lock_in_order(&slots).await;
        for _ in 0..ATTEMPTS {
            if fenced && !self.is_leading() {
                return Err(ControllerError::NotLeader);
            }
            let members = self.active_members(train).await?;
            if !members.iter().any(|(r, _)| r.service == origin) {
                return Err(ControllerError::NoActiveRollout(origin.to_owned()));
            }
            // Two members' runners can both find the train ready in the same tick; the second
            // must not move it once more from the state the first one just left.
            if moves_on(&command) && !self.all_ready(&members) {
                return self.view(origin, None);
            }
            let mut txn = Txn::new();
            let mut all_staged = Vec::new();
            for (rollout, revision) in &members {
                let command = member_command(&command, origin, &rollout.service);
                let commit = self.next_commit(&rollout.service, rollout, *revision, &command, fenced).await?;
                let (next, staged) = self.stage(&rollout.service, txn, commit)?;
                txn = next;
                all_staged.push(staged);
            }
            match self.routing.store().commit(txn).await? {
                TxnOutcome::Committed { revision } => {
                    let mut origin_view = None;
                    for staged in all_staged {
                        let (next, revision) = self.finish(staged, revision).await;
                        let service = next.service.clone();
                        let view = self.settle(&service, next, revision);
                        if service == origin {
                            origin_view = Some(view);
                        }
                    }
                    drop(serials);
                    return origin_view.ok_or_else(|| ControllerError::NoActiveRollout(origin.to_owned()));
                }
                TxnOutcome::Conflict { .. } => {
                    for service in &train.services {
                        self.refresh(service).await?;
                    }
                }
            }
        }
        Err(ControllerError::Contended(keys::rollouts(origin)))
    }

    /// Whether every member's runner said "move on" at the state the member's record is in.
    fn all_ready(&self, members: &[(Rollout, canary_store::Revision)]) -> bool {
        members.iter().all(|(rollout, _)| {
            self.slot(&rollout.service)
                .is_ok_and(|slot| slot.live.lock().expect("live").ready_at == Some(rollout.transitions))
        })
    }

    /// The members of `train` whose rollout is still active, with their records' revisions.
    async fn active_members(
        &self,
        train: &TrainRef,
    ) -> Result<Vec<(Rollout, canary_store::Revision)>, ControllerError> {
        let mut members = Vec::new();
        for service in &train.services {
            if let Some((rollout, revision)) = self.load_active(service).await?
                && rollout.train.as_ref().is_some_and(|t| t.id == train.id)
            {
                members.push((rollout, revision));
            }
        }
        Ok(members)
    }

    /// `command` if the runner of `service` may apply it to `rollout` now: a command that moves
    /// a train on ([`moves_on`]) waits until every member's runner says the same; the runner's
    /// word is noted either way.
    pub(super) fn when_together(&self, service: &str, rollout: &Rollout, command: Option<Command>) -> Option<Command> {
        let ready = command.as_ref().is_some_and(moves_on);
        let together = self.ready_together(service, rollout, ready);
        command.filter(|_| together || !ready)
    }

    /// Notes whether the runner of `service` would move `rollout` on now, and says whether the
    /// whole train may.
    fn ready_together(&self, service: &str, rollout: &Rollout, ready: bool) -> bool {
        let Ok(slot) = self.slot(service) else { return false };
        slot.live.lock().expect("live").ready_at = ready.then_some(rollout.transitions);
        let Some(train) = &rollout.train else { return ready };
        let mut members = Vec::new();
        for member in &train.services {
            let Ok(slot) = self.slot(member) else { return false };
            let live = slot.live.lock().expect("live");
            let Some((active, _)) = &live.active else { return false };
            members.push(Readiness {
                step: active.step,
                state: active.transitions,
                ready_at: live.ready_at.filter(|_| active.train.as_ref().is_some_and(|t| t.id == train.id)),
            });
        }
        advance_together(&members)
    }

    /// The train `id` as its members' rollouts stand: the active ones, else the latest.
    pub async fn train_view(&self, id: &str) -> Result<TrainView, ControllerError> {
        let mut members = Vec::new();
        for service in self.slots.keys() {
            let Ok(view) = self.current_or_latest(service).await else { continue };
            if view.rollout.train.as_ref().is_some_and(|t| t.id == id) {
                members.push(view);
            }
        }
        let Some(order) = members.first().and_then(|m| m.rollout.train.clone()) else {
            return Err(ControllerError::NoTrain(id.to_owned()));
        };
        members.sort_by_key(|m| order.services.iter().position(|s| *s == m.rollout.service));
        Ok(TrainView { id: id.to_owned(), members })
    }
}

/// Takes the transition locks of `slots`, in their order.
async fn lock_in_order(slots: &[Arc<Slot>]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
    let mut serials = Vec::with_capacity(slots.len());
    for slot in slots {
        serials.push(slot.transitions.lock().await);
    }
    serials
}

/// The commands that move a train on only once every member said so.
fn moves_on(command: &Command) -> bool {
    matches!(command, Command::Advance | Command::AwaitApproval | Command::Begin)
}
