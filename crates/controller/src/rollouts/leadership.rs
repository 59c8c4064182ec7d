//! Leadership: campaigning among the controllers that share the store, running the judges of
//! active rollouts while leading, and stopping them when the leadership is lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Controller, LeadingGauge, runner};

impl Controller {
    /// Whether this controller leads: only the leader runs the judges and moves rollouts on its
    /// own; any controller accepts requests from people, guarded by the store.
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Campaigns for leadership among the controllers sharing the store, forever. While leading
    /// it picks up every active rollout (after a restart, a takeover, or one started through
    /// another controller) and runs its judge; on losing the lease it stops them at once.
    pub async fn lead(self: Arc<Self>, candidate: String, ttl: Duration) {
        loop {
            let mut leadership = match self.routing.store().campaign("controller", &candidate, ttl).await {
                Ok(leadership) => leadership,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot campaign for leadership; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            *self.fence.lock().expect("fence") = leadership.fence().cloned();
            self.leading.store(true, Ordering::Relaxed);
            tracing::info!(candidate, "leading the controllers");
            let scanner = tokio::spawn(self.clone().adopt_active_rollouts());
            leadership.lost().await;
            self.leading.store(false, Ordering::Relaxed);
            *self.fence.lock().expect("fence") = None;
            scanner.abort();
            for slot in self.slots.values() {
                let mut live = slot.live.lock().expect("live");
                if let Some(runner) = live.runner.take() {
                    runner.abort();
                }
                // The new leader runs the gates again; this one's processes must not go on.
                live.gates = None;
            }
            tracing::warn!(candidate, "lost the leadership; rollouts are left to the new leader");
        }
    }

    /// `canary_controller_leading` for `/metrics`.
    pub fn leadership_gauge(&self) -> LeadingGauge {
        LeadingGauge(self.leading.clone())
    }

    /// Starts campaigning in the background as this process (`host-pid`), with a 5 s lease.
    pub fn spawn_leader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let candidate = format!("{}-{}", host.trim(), std::process::id());
        tokio::spawn(self.clone().lead(candidate, Duration::from_secs(5)))
    }

    /// While leading: every tick, runs a judge for each active rollout that has none here.
    pub(super) async fn adopt_active_rollouts(self: Arc<Self>) {
        let mut interval = tokio::time::interval(self.settings.tick);
        loop {
            interval.tick().await;
            for service in self.slots.keys() {
                let running =
                    self.slots[service].live.lock().expect("live").runner.as_ref().is_some_and(|r| !r.is_finished());
                if running {
                    continue;
                }
                match self.refresh(service).await {
                    Ok(Some(rollout)) => {
                        tracing::info!(service, rollout = %rollout.id, phase = rollout.phase.name(), step = rollout.step, "running the judge of an active rollout");
                        self.spawn_runner(service);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(service, error = %e, "cannot read the active rollout"),
                }
            }
        }
    }

    pub(super) fn spawn_runner(self: &Arc<Self>, service: &str) {
        let Ok(slot) = self.slot(service) else { return };
        let handle = tokio::spawn(runner::run(self.clone(), service.to_owned()));
        let mut live = slot.live.lock().expect("live");
        if let Some(old) = live.runner.replace(handle) {
            old.abort();
        }
    }
}
