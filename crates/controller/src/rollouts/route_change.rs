//! How a rollout transition changes a service's routing spec.

use canary_core::RouteSpec;
use canary_core::Weight;
use canary_core::rollout::{Rollout, RouteChange};
use canary_core::spec::DrainingSpec;

/// Applies a transition's routing change to `spec` (without bumping its generation).
pub fn apply(spec: &mut RouteSpec, change: &RouteChange, rollout: &Rollout, slow_bucket: Option<u8>, now_ms: u64) {
    match change {
        RouteChange::None => {}
        RouteChange::Canary { weight } => {
            spec.rollout_id = rollout.id.clone();
            spec.canary = Some(rollout.canary.clone());
            spec.weight = *weight;
            spec.slow_bucket = slow_bucket;
        }
        RouteChange::Weight(weight) => spec.weight = *weight,
        RouteChange::Promote => {
            if let Some(canary) = spec.canary.take() {
                let old = std::mem::replace(&mut spec.stable, canary);
                let until = now_ms / 1000 + rollout.drain.0.as_secs();
                spec.draining = (!rollout.drain.0.is_zero()).then_some(DrainingSpec { version: old, until });
            }
            spec.weight = Weight::ZERO;
        }
        RouteChange::RemoveCanary => {
            spec.canary = None;
            spec.weight = Weight::ZERO;
        }
    }
}
