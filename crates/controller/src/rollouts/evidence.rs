//! The judge's evidence kept with its rollout, so that a controller killed mid-step (or a new
//! leader) continues with what the judge had seen instead of starting over.
//!
//! The leader writes the whole [`Judge`] after every tick, fenced by its leadership like every
//! transition: a deposed leader cannot overwrite the new one's evidence. At most one tick of
//! data is lost in a crash; the counters in between are still counted, because the judge diffs
//! cumulative counters and the saved state holds the last ones it saw (a gateway restarted in
//! the meantime shows as a counter reset, which the judge skips). The team metrics' evidence
//! ([`TeamJudge`]) is kept the same way under a key of its own.

use canary_core::judge::Judge;
use canary_core::team::TeamJudge;
use canary_store::{Txn, TxnOutcome, keys};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Controller;

impl Controller {
    /// The saved judge of `rollout_id`, if there is one this code can read.
    pub(crate) async fn load_evidence(&self, service: &str, rollout_id: &str) -> Option<Judge> {
        self.load_saved(service, rollout_id, &keys::judge(service, rollout_id), "judge").await
    }

    /// Saves `judge` as the evidence of `rollout_id`; a failure only costs this tick's save.
    pub(crate) async fn save_evidence(&self, service: &str, rollout_id: &str, judge: &Judge) {
        self.save(service, keys::judge(service, rollout_id), judge).await;
    }

    /// The saved team metrics' judge of `rollout_id`, if there is one this code can read.
    pub(crate) async fn load_team_evidence(&self, service: &str, rollout_id: &str) -> Option<TeamJudge> {
        self.load_saved(service, rollout_id, &keys::team_judge(service, rollout_id), "team metrics' judge").await
    }

    /// Saves the team metrics' `judge` as evidence of `rollout_id`.
    pub(crate) async fn save_team_evidence(&self, service: &str, rollout_id: &str, judge: &TeamJudge) {
        self.save(service, keys::team_judge(service, rollout_id), judge).await;
    }

    /// Forgets the evidence of a rollout that ended.
    pub(crate) async fn drop_evidence(&self, service: &str, rollout_id: &str) {
        for key in [keys::judge(service, rollout_id), keys::team_judge(service, rollout_id)] {
            if let Err(e) = self.routing.store().delete(&key).await {
                tracing::warn!(service, rollout = rollout_id, error = %e, "cannot delete the judge's evidence");
            }
        }
    }

    async fn load_saved<T: DeserializeOwned>(
        &self,
        service: &str,
        rollout_id: &str,
        key: &str,
        what: &str,
    ) -> Option<T> {
        let entry = match self.routing.store().get(key).await {
            Ok(entry) => entry?,
            Err(e) => {
                tracing::warn!(service, rollout = rollout_id, error = %e, "cannot read the {what}'s evidence");
                return None;
            }
        };
        match serde_json::from_slice(&entry.value) {
            Ok(saved) => Some(saved),
            Err(e) => {
                tracing::warn!(service, rollout = rollout_id, error = %e, "saved {what} unreadable; starting over");
                None
            }
        }
    }

    async fn save<T: Serialize>(&self, service: &str, key: String, value: &T) {
        let value = serde_json::to_vec(value).expect("judges serialize");
        let txn = Txn::new().put(key, value).fenced(self.fence.lock().expect("fence").as_ref());
        match self.routing.store().commit(txn).await {
            Ok(TxnOutcome::Committed { .. }) => {}
            Ok(TxnOutcome::Conflict { .. }) => tracing::warn!(service, "not the leader any more; evidence not saved"),
            Err(e) => tracing::warn!(service, error = %e, "cannot save the judge's evidence this tick"),
        }
    }
}
