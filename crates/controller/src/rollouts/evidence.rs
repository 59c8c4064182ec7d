//! The judge's evidence kept with its rollout, so that a controller killed mid-step (or a new
//! leader) continues with what the judge had seen instead of starting over.
//!
//! The leader writes the whole [`Judge`] after every tick, fenced by its leadership like every
//! transition: a deposed leader cannot overwrite the new one's evidence. At most one tick of
//! data is lost in a crash; the counters in between are still counted, because the judge diffs
//! cumulative counters and the saved state holds the last ones it saw (a gateway restarted in
//! the meantime shows as a counter reset, which the judge skips).

use canary_core::judge::Judge;
use canary_store::{Txn, TxnOutcome, keys};

use super::Controller;

impl Controller {
    /// The saved judge of `rollout_id`, if there is one this code can read.
    pub(crate) async fn load_evidence(&self, service: &str, rollout_id: &str) -> Option<Judge> {
        let entry = match self.routing.store().get(&keys::judge(service, rollout_id)).await {
            Ok(entry) => entry?,
            Err(e) => {
                tracing::warn!(service, rollout = rollout_id, error = %e, "cannot read the judge's evidence");
                return None;
            }
        };
        match serde_json::from_slice(&entry.value) {
            Ok(judge) => Some(judge),
            Err(e) => {
                tracing::warn!(service, rollout = rollout_id, error = %e, "saved judge unreadable; starting over");
                None
            }
        }
    }

    /// Saves `judge` as the evidence of `rollout_id`; a failure only costs this tick's save.
    pub(crate) async fn save_evidence(&self, service: &str, rollout_id: &str, judge: &Judge) {
        let value = serde_json::to_vec(judge).expect("judges serialize");
        let mut txn = Txn::new().put(keys::judge(service, rollout_id), value);
        if let Some(fence) = self.fence.lock().expect("fence").clone() {
            txn = txn.require_revision(fence.key, fence.revision);
        }
        match self.routing.store().commit(txn).await {
            Ok(TxnOutcome::Committed { .. }) => {}
            Ok(TxnOutcome::Conflict { .. }) => tracing::warn!(service, "not the leader any more; evidence not saved"),
            Err(e) => tracing::warn!(service, error = %e, "cannot save the judge's evidence this tick"),
        }
    }

    /// Forgets the evidence of a rollout that ended.
    pub(crate) async fn drop_evidence(&self, service: &str, rollout_id: &str) {
        if let Err(e) = self.routing.store().delete(&keys::judge(service, rollout_id)).await {
            tracing::warn!(service, rollout = rollout_id, error = %e, "cannot delete the judge's evidence");
        }
    }
}
