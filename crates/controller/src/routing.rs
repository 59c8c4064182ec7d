//! The routing of every service, kept in the store: the one path by which routing reaches
//! gateways, the one in this process included.
//!
//! The store is the source of truth once a service has been seen: the first start writes the
//! configured routing; later starts adopt what is stored (so a restart, or `kill -9`, resumes
//! the weights and canaries that were in force). Every change is a compare-and-swap on the
//! routing key's revision. Gateways follow the key through a watch; when this process runs one,
//! a change waits (briefly) until that gateway has applied it, so an API call that returns has
//! taken effect here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use canary_core::clock::unix_ms as now_ms;
use canary_core::config::Config;
use canary_core::team::TeamMetric;
use canary_core::{RouteError, RouteSpec};
use canary_store::{CasOutcome, Revision, Store, keys};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::sync::watch;

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

/// How long a change waits for the local gateway to apply it before answering anyway.
const LOCAL_APPLY_WAIT: Duration = Duration::from_secs(2);

/// A configured service as the control plane knows it.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// Its name.
    pub name: String,
    /// Where its gateway listener is (the bound address once known, else the configured one).
    pub listen: String,
    /// The routing in the configuration, stored on the first start.
    pub configured: RouteSpec,
    /// The team's own metrics its rollouts are judged with unless they name their own.
    pub team_metrics: Vec<TeamMetric>,
    /// Its release gates.
    pub gates: Vec<canary_core::gate::GateConfig>,
    /// Whether its listener speaks TLS.
    pub tls: bool,
    /// How long a rolled-back canary still serves the pages it served (`rollback_grace`).
    pub rollback_grace: Duration,
}

impl ServiceEntry {
    /// The entries of every service of `config`.
    pub fn from_config(config: &Config) -> Vec<ServiceEntry> {
        config
            .services
            .iter()
            .map(|service| ServiceEntry {
                name: service.name.as_str().to_owned(),
                listen: service.listen.to_string(),
                configured: RouteSpec::from_config(service),
                team_metrics: service.metrics.clone(),
                gates: service.gates.clone(),
                tls: service.tls.is_some(),
                rollback_grace: service.rollback_grace.0,
            })
            .collect()
    }
}

/// Reads and writes the services' routing.
#[derive(Clone)]
pub struct Routing {
    store: Arc<dyn Store>,
    /// In configuration order, which is the order people see them in.
    services: Arc<Vec<ServiceEntry>>,
    health: Arc<StoreHealth>,
    /// The store revision up to which a gateway in this process has applied routing, if one runs.
    applied: Option<watch::Receiver<Revision>>,
}

impl Routing {
    /// Routing of `services` over `store`.
    pub fn new(store: Arc<dyn Store>, services: Vec<ServiceEntry>) -> Routing {
        Routing { store, services: Arc::new(services), health: Arc::default(), applied: None }
    }

    /// The same, with the listen addresses the gateway actually bound (port 0 in tests).
    pub fn with_listeners(mut self, bound: &BTreeMap<String, String>) -> Routing {
        let mut services = (*self.services).clone();
        for entry in &mut services {
            if let Some(addr) = bound.get(&entry.name) {
                entry.listen.clone_from(addr);
            }
        }
        self.services = Arc::new(services);
        self
    }

    /// The same, waiting after each change until the local gateway reports (through `applied`)
    /// that it has applied the change's revision.
    pub fn with_local_gateway(mut self, applied: watch::Receiver<Revision>) -> Routing {
        self.applied = Some(applied);
        self
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

    /// Every configured service, in configuration order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.iter()
    }

    /// A configured service.
    pub fn service(&self, name: &str) -> Result<&ServiceEntry, ControllerError> {
        self.services.iter().find(|s| s.name == name).ok_or_else(|| ControllerError::NoService(name.to_owned()))
    }

    /// Stores the configured routing of every service that has none stored yet.
    pub async fn sync_at_start(&self) -> Result<(), ControllerError> {
        for entry in self.services.iter() {
            let value = serde_json::to_vec(&entry.configured).expect("route specs serialize");
            self.store.compare_and_swap(&keys::routing(&entry.name), 0, value).await?;
        }
        Ok(())
    }

    /// Stores the configured upstreams of each service's stable version where the stored
    /// routing still runs that version elsewhere: the file says where its stable version runs,
    /// so a restart or a reload with a changed upstream list applies it. Canaries, weights and
    /// other versions stay as the store has them.
    pub async fn sync_stable_upstreams(&self) -> Result<(), ControllerError> {
        for entry in self.services.iter() {
            let configured = &entry.configured.stable;
            let (stored, _) = self.current(&entry.name).await?;
            if stored.stable.version != configured.version || stored.stable.upstreams == configured.upstreams {
                continue;
            }
            self.change(&entry.name, |spec| {
                if spec.stable.version == configured.version {
                    spec.stable.upstreams = configured.upstreams.clone();
                }
                Ok(())
            })
            .await?;
            tracing::info!(service = %entry.name, version = %configured.version.as_str(), "stable's upstreams are now the configured ones");
        }
        Ok(())
    }

    /// The stored routing of `service` and its revision (the configured one and 0 when none is
    /// stored).
    pub async fn current(&self, service: &str) -> Result<(RouteSpec, Revision), ControllerError> {
        let entry = self.service(service)?;
        match self.store.get(&keys::routing(service)).await? {
            Some(stored) => {
                let spec = serde_json::from_slice(&stored.value).map_err(|e| {
                    ControllerError::Corrupt(format!("stored routing of {service:?} is unreadable: {e}"))
                })?;
                Ok((spec, stored.revision))
            }
            None => Ok((entry.configured.clone(), 0)),
        }
    }

    /// Changes `service`'s routing with `change`, durably; returns the new routing once the local
    /// gateway (if any) applies it.
    pub async fn change(
        &self,
        service: &str,
        change: impl Fn(&mut RouteSpec) -> Result<(), RouteError>,
    ) -> Result<RouteSpec, ControllerError> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut spec, revision) = self.current(service).await?;
            change(&mut spec)?;
            spec.generation += 1;
            spec.check().map_err(RouteError::from)?;
            let value = serde_json::to_vec(&spec).expect("route specs serialize");
            if let CasOutcome::Won { revision } =
                self.store.compare_and_swap(&keys::routing(service), revision, value).await?
            {
                self.wait_applied(revision).await;
                return Ok(spec);
            }
        }
        Err(ControllerError::Contended(keys::routing(service)))
    }

    /// Waits until the local gateway has applied routing up to `revision` (a bounded wait: the
    /// store is the truth, and the gateway catches up on its own).
    pub async fn wait_applied(&self, revision: Revision) {
        let Some(mut applied) = self.applied.clone() else { return };
        let caught_up = tokio::time::timeout(LOCAL_APPLY_WAIT, applied.wait_for(|&seen| seen >= revision)).await;
        if !matches!(caught_up, Ok(Ok(_))) {
            tracing::warn!(revision, "the local gateway has not applied the routing yet; answering anyway");
        }
    }
}
