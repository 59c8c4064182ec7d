//! The routing of every service, kept in the store and applied to the local gateway.
//!
//! The store is the source of truth once a service has been seen: the first start writes the
//! configured routing; later starts adopt what is stored (so a restart, or `kill -9`, resumes
//! the weights and canaries that were in force). Every change is a compare-and-swap on the
//! routing key's revision, then applied to the local gateway at once; other gateways follow the
//! key through a watch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use canary_core::{RouteError, RouteSpec};
use canary_gateway::{Gateway, Service};
use canary_store::{CasOutcome, Revision, Store, keys};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::error::ControllerError;

/// Attempts at a read-modify-write before giving up on a contended key.
const CAS_ATTEMPTS: usize = 16;

/// Whether the store answers, as the gateway's probe last saw it.
#[derive(Debug, Default)]
pub struct StoreHealth {
    up: AtomicBool,
    probed: AtomicBool,
    last_ok_ms: AtomicU64,
}

impl StoreHealth {
    /// Whether the last probe succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Seconds since the store last answered, if it ever did.
    pub fn seconds_since_ok(&self) -> Option<f64> {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        (last > 0).then(|| now_ms().saturating_sub(last) as f64 / 1000.0)
    }

    /// A line for `/readyz`.
    pub fn describe(&self) -> String {
        if !self.probed.load(Ordering::Relaxed) || self.is_up() {
            return "store reachable".into();
        }
        match self.seconds_since_ok() {
            Some(s) => format!("store unreachable for {s:.0}s; serving the last routing"),
            None => "store unreachable since start; serving the configured routing".into(),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Collector for StoreHealth {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let up = encoder.encode_descriptor(
            "canary_store_up",
            "1 while the store answers; 0 while the gateway serves its last routing (fail static)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(self.is_up())).encode(up)?;
        let seen = encoder.encode_descriptor(
            "canary_store_last_ok_timestamp_seconds",
            "When the store last answered (unix seconds)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.last_ok_ms.load(Ordering::Relaxed) as f64 / 1000.0).encode(seen)
    }
}

/// Reads and writes the services' routing.
#[derive(Clone)]
pub struct Routing {
    store: Arc<dyn Store>,
    gateway: Arc<Gateway>,
    health: Arc<StoreHealth>,
}

impl Routing {
    /// Routing over `store`, applied to `gateway`.
    pub fn new(store: Arc<dyn Store>, gateway: Arc<Gateway>) -> Routing {
        Routing { store, gateway, health: Arc::default() }
    }

    /// The store's health as the probe sees it.
    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// Probes the store every second until the task is dropped.
    pub async fn probe(self) {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let answered = matches!(
                tokio::time::timeout(Duration::from_secs(1), self.store.get(keys::PIN_SECRET)).await,
                Ok(Ok(_))
            );
            if answered {
                self.health.last_ok_ms.store(now_ms(), Ordering::Relaxed);
            } else if self.health.is_up() || !self.health.probed.load(Ordering::Relaxed) {
                tracing::warn!("the store does not answer; serving the last routing");
            }
            self.health.up.store(answered, Ordering::Relaxed);
            self.health.probed.store(true, Ordering::Relaxed);
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The local gateway.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// A service of the local gateway.
    pub fn service(&self, name: &str) -> Result<&Arc<Service>, ControllerError> {
        self.gateway.service(name).ok_or_else(|| ControllerError::NoService(name.to_owned()))
    }

    /// Adopts every stored routing, or stores the configured one where none is stored yet.
    pub async fn sync_at_start(&self) -> Result<(), ControllerError> {
        for service in self.gateway.services() {
            let key = keys::routing(service.name());
            match self.store.get(&key).await? {
                Some(entry) => match serde_json::from_slice::<RouteSpec>(&entry.value) {
                    Ok(spec) => {
                        if let Err(e) = service.apply(spec) {
                            tracing::error!(service = service.name(), error = %e, "stored routing refused; keeping the configured one");
                        }
                    }
                    Err(e) => {
                        tracing::error!(service = service.name(), error = %e, "stored routing unreadable; keeping the configured one")
                    }
                },
                None => {
                    let spec = service.route().spec.clone();
                    let value = serde_json::to_vec(&spec).expect("route specs serialize");
                    if let CasOutcome::Lost { current: Some(entry) } =
                        self.store.compare_and_swap(&key, 0, value).await?
                        && let Ok(spec) = serde_json::from_slice::<RouteSpec>(&entry.value)
                    {
                        let _ = service.apply(spec);
                    }
                }
            }
        }
        Ok(())
    }

    /// The stored routing of `service` and its revision (0 when none is stored).
    pub async fn current(&self, service: &str) -> Result<(RouteSpec, Revision), ControllerError> {
        let local = self.service(service)?;
        match self.store.get(&keys::routing(service)).await? {
            Some(entry) => {
                let spec = serde_json::from_slice(&entry.value).map_err(|e| {
                    ControllerError::Invalid(format!("stored routing of {service:?} is unreadable: {e}"))
                })?;
                Ok((spec, entry.revision))
            }
            None => Ok((local.route().spec.clone(), 0)),
        }
    }

    /// Changes `service`'s routing with `change`, durably, then applies it locally.
    pub async fn change(
        &self,
        service: &str,
        change: impl Fn(&mut RouteSpec) -> Result<(), RouteError>,
    ) -> Result<RouteSpec, ControllerError> {
        let local = self.service(service)?.clone();
        for _ in 0..CAS_ATTEMPTS {
            let (mut spec, revision) = self.current(service).await?;
            change(&mut spec)?;
            spec.generation += 1;
            spec.check().map_err(RouteError::from)?;
            let value = serde_json::to_vec(&spec).expect("route specs serialize");
            if self.store.compare_and_swap(&keys::routing(service), revision, value).await?.won() {
                local.apply(spec.clone())?;
                return Ok(spec);
            }
        }
        Err(ControllerError::Contended(keys::routing(service)))
    }

    /// Applies a spec that was just committed by a transaction.
    pub fn apply_local(&self, service: &str, spec: RouteSpec) -> Result<(), ControllerError> {
        self.service(service)?.apply(spec)?;
        Ok(())
    }

    /// Follows every stored routing change until the task is dropped: how a gateway picks up
    /// what another process wrote. Keeps the last good routing while the store is away.
    pub async fn follow(self) {
        let mut follower = canary_store::PrefixFollower::new(self.store.clone(), keys::SERVICES);
        loop {
            match follower.next().await {
                Ok(events) => {
                    for event in events {
                        let Some(name) =
                            event.key.strip_prefix(keys::SERVICES).and_then(|k| k.strip_suffix("/routing"))
                        else {
                            continue;
                        };
                        let Some(service) = self.gateway.service(name) else { continue };
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
                Err(e) => tracing::warn!(error = %e, "routing watch interrupted; serving the last routing"),
            }
        }
    }
}
