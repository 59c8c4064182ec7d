//! What the controller shows: the active rollout as the store has it, its view with the
//! judge's latest look, the history and the event log.

use canary_core::api::{JudgeView, RolloutView, Update, UpdateKind};
use canary_core::rollout::{Event, Rollout};
use canary_store::{Revision, keys};

use super::{Controller, decode, decode_rollout};
use crate::error::ControllerError;

impl Controller {
    /// Reads the active rollout of `service` from the store into the live view.
    pub async fn refresh(&self, service: &str) -> Result<Option<Rollout>, ControllerError> {
        let active = self.load_active(service).await?;
        let slot = self.slot(service)?;
        let mut live = slot.live.lock().expect("live");
        if active.is_none() {
            live.judge = None;
        }
        live.active = active.clone();
        Ok(active.map(|(r, _)| r))
    }

    /// The active rollout of `service` and its record's revision, as the store has it.
    pub(super) async fn load_active(&self, service: &str) -> Result<Option<(Rollout, Revision)>, ControllerError> {
        self.slot(service)?;
        let store = self.routing.store();
        let Some(lock) = store.get(&keys::rollout_lock(service)).await? else { return Ok(None) };
        let id = String::from_utf8_lossy(&lock.value).into_owned();
        let Some(entry) = store.get(&keys::rollout(service, &id)).await? else { return Ok(None) };
        let rollout = decode_rollout(&entry.value)?;
        Ok((!rollout.phase.is_terminal()).then_some((rollout, entry.revision)))
    }

    /// The active rollout of `service` as this controller last saw it.
    pub fn active(&self, service: &str) -> Result<Option<Rollout>, ControllerError> {
        let live = self.slot(service)?.live.lock().expect("live");
        Ok(live.active.as_ref().map(|(r, _)| r.clone()))
    }

    /// The active rollout's view, or the latest one's when `id` is `None` and none is active.
    pub fn view(&self, service: &str, rollout: Option<Rollout>) -> Result<RolloutView, ControllerError> {
        let live = self.slot(service)?.live.lock().expect("live");
        let rollout = rollout
            .or_else(|| live.active.as_ref().map(|(r, _)| r.clone()))
            .ok_or_else(|| ControllerError::NoActiveRollout(service.to_owned()))?;
        let mut view = RolloutView::new(rollout, live.judge.clone());
        view.gates = super::gating::gate_views(&live, &view.rollout.id);
        Ok(view)
    }

    /// The active rollout, or else the most recent one.
    pub async fn current_or_latest(&self, service: &str) -> Result<RolloutView, ControllerError> {
        if let Some(active) = self.refresh(service).await? {
            return self.view(service, Some(active));
        }
        let latest = self.history(service).await?.into_iter().last();
        match latest {
            Some(r) => Ok(RolloutView::new(r, None)),
            None => Err(ControllerError::NoActiveRollout(service.to_owned())),
        }
    }

    /// Every rollout of `service`, oldest first.
    pub async fn history(&self, service: &str) -> Result<Vec<Rollout>, ControllerError> {
        self.slot(service)?;
        let listing = self.routing.store().list(&keys::rollouts(service)).await?;
        listing.entries.iter().map(|e| decode_rollout(&e.value)).collect()
    }

    /// The event log of `service`, oldest first, at most the last `limit`.
    pub async fn events(&self, service: &str, limit: usize) -> Result<Vec<Event>, ControllerError> {
        self.slot(service)?;
        let listing = self.routing.store().list(&keys::events(service)).await?;
        let skip = listing.entries.len().saturating_sub(limit);
        listing.entries[skip..].iter().map(|e| decode(&e.value, "event")).collect()
    }

    pub(super) fn set_judge_view(&self, service: &str, view: JudgeView) {
        let Ok(slot) = self.slot(service) else { return };
        let rollout = {
            let mut live = slot.live.lock().expect("live");
            live.judge = Some(view.clone());
            live.active.as_ref().map(|(r, _)| (r.clone(), super::gating::gate_views(&live, &r.id)))
        };
        if let Some((rollout, gates)) = rollout {
            let mut rollout = RolloutView::new(rollout, Some(view));
            rollout.gates = gates;
            let _ = self.updates.send(Update {
                kind: UpdateKind::Tick,
                service: service.to_owned(),
                rollout: Some(rollout),
                event: None,
            });
        }
    }
}
