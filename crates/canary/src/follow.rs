//! The local gateway follows the routing in the store, the same way every other gateway does:
//! routing reaches gateways by one path only.

use std::sync::Arc;

use canary_core::RouteSpec;
use canary_gateway::Gateway;
use canary_store::{PrefixFollower, Revision, Store, WatchEvent, keys};
use tokio::sync::watch;

/// Follows the services' routing in the store into `gateway`.
pub struct RoutingFollower {
    follower: PrefixFollower,
    gateway: Arc<Gateway>,
    applied: watch::Sender<Revision>,
}

impl RoutingFollower {
    /// A follower of `store` for `gateway`, and the revision up to which it has applied routing.
    pub fn new(store: Arc<dyn Store>, gateway: Arc<Gateway>) -> (RoutingFollower, watch::Receiver<Revision>) {
        let (applied, seen) = watch::channel(0);
        (RoutingFollower { follower: PrefixFollower::new(store, keys::SERVICES), gateway, applied }, seen)
    }

    /// Applies what the store holds now (before the listeners open, so the first request is
    /// routed as stored); an unreachable store leaves the configured routing in place.
    pub async fn adopt(&mut self) {
        self.step().await;
    }

    /// Follows every change until the task is dropped; keeps the last good routing while the
    /// store is away (fail static).
    pub async fn run(mut self) {
        loop {
            self.step().await;
        }
    }

    async fn step(&mut self) {
        match self.follower.next().await {
            Ok(events) => {
                for event in &events {
                    self.apply(event);
                }
                self.applied.send_replace(self.follower.revision());
            }
            Err(e) => tracing::warn!(error = %e, "routing watch interrupted; serving the last routing"),
        }
    }

    fn apply(&self, event: &WatchEvent) {
        let Some(name) = event.key.strip_prefix(keys::SERVICES).and_then(|k| k.strip_suffix("/routing")) else {
            return;
        };
        let Some(service) = self.gateway.service(name) else { return };
        match serde_json::from_slice::<RouteSpec>(&event.value) {
            Ok(spec) => {
                if let Err(e) = service.apply(spec) {
                    tracing::error!(service = name, error = %e, "refused a stored routing");
                }
            }
            Err(e) => tracing::error!(service = name, error = %e, "unreadable stored routing"),
        }
    }
}
