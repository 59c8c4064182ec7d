//! Everything one `canary serve` process runs, assembled from a configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use canary_controller::api::Listeners;
use canary_controller::prometheus::PrometheusMetrics;
use canary_controller::routing::{ServiceEntry, StoreHealth};
use canary_controller::{Controller, ControllerSettings, Routing};
use canary_core::admin::Access;
use canary_core::config::{Config, MetricsConfig, StoreConfig};
use canary_core::pin::PinSecret;
use canary_gateway::{Gateway, InheritedSockets, Running};
use canary_store::{Revision, Store};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin_listener::{self, Timeouts};
use crate::cli::Role;
use crate::follow::RoutingFollower;
use crate::handover::{self, Inherited};
use crate::local_metrics::LocalMetrics;
use crate::serve::{admin_tokens, open_store, open_store_when_released, pin_key};

/// Everything one `canary serve` process runs, built from a configuration: the store, the
/// gateway with its listeners and local breakers (unless the role is `controller`), its routing
/// follower, the rollout controller and the admin listener. `canary demo` builds the same stack
/// around its demo upstreams, so what the demo shows is what `serve` does.
pub struct Stack {
    /// The data plane, unless this process only leads rollouts.
    pub gateway: Option<Arc<Gateway>>,
    /// The rollout controller.
    pub controller: Arc<Controller>,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    admin: TcpListener,
    /// A copy of the admin listener, for a process that takes over from this one.
    admin_copy: std::net::TcpListener,
    admin_timeouts: Timeouts,
    drain: Duration,
    state: canary_controller::AppState,
    running: Option<Running>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A started gateway: its listeners, the tasks that keep it (breakers, the routing follower),
/// and the store revision up to which it has applied routing.
struct LocalGateway {
    gateway: Arc<Gateway>,
    running: Running,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    applied: watch::Receiver<Revision>,
}

impl LocalGateway {
    /// Builds the gateway, adopts the stored routing, then opens its listeners.
    async fn start(
        config: &Config,
        pins: PinSecret,
        store: Arc<dyn Store>,
        inherited: &mut InheritedSockets,
    ) -> anyhow::Result<LocalGateway> {
        let gateway = Arc::new(Gateway::new(config, pins)?);
        let (mut follower, applied) = RoutingFollower::new(store, gateway.clone());
        follower.adopt().await;
        let running = gateway.start_on(inherited)?;
        let mut tasks = gateway.spawn_breakers();
        tasks.push(tokio::spawn(follower.run()));
        Ok(LocalGateway { gateway, running, tasks, applied })
    }

    /// Where each service's listener is bound.
    fn listeners(&self) -> BTreeMap<String, String> {
        let bound = self.gateway.services().iter().filter_map(|s| Some((s.name().to_owned(), s.bound()?.to_string())));
        bound.collect()
    }
}

/// The gateway's listeners as `/readyz` sees them.
struct GatewayListeners(Option<Arc<Gateway>>);

impl Listeners for GatewayListeners {
    fn not_listening(&self) -> Vec<String> {
        let Some(gateway) = &self.0 else { return Vec::new() };
        gateway.services().iter().filter(|s| s.bound().is_none()).map(|s| s.name().to_owned()).collect()
    }
}

impl Stack {
    /// Opens the store, starts the gateway's listeners and breakers, resumes stored rollouts and
    /// binds the admin listener (served by [`Stack::run`]).
    pub async fn start(config: &Config, base: &Path) -> anyhow::Result<Stack> {
        Stack::start_as(config, base, Role::All, Inherited::default()).await
    }

    /// Like [`Stack::start`], for one role: a `gateway` serves traffic and follows the store;
    /// a `controller` runs no gateway at all and campaigns to lead the rollouts; `all` does both.
    /// `inherited` sockets are served instead of binding new ones; with any, the store may be
    /// held a while longer by the process they came from, and opening it is retried.
    pub async fn start_as(config: &Config, base: &Path, role: Role, inherited: Inherited) -> anyhow::Result<Stack> {
        let Inherited { admin: inherited_admin, services: mut inherited_services } = inherited;
        let taking_over = inherited_admin.is_some();
        let store = if taking_over {
            open_store_when_released(config, base).await?
        } else {
            open_store(&config.store, base).await?
        };
        let pins = pin_key(config, store.as_ref()).await?;
        let access = Access::new(&config.admin, admin_tokens(config)?);
        let mut routing = Routing::new(store.clone(), ServiceEntry::from_config(config));
        routing.sync_at_start().await.context("cannot read the stored routing")?;
        routing.sync_stable_upstreams().await.context("cannot store the configured stable upstreams")?;
        let local = match role {
            Role::Controller => None,
            Role::Gateway | Role::All => {
                Some(LocalGateway::start(config, pins, store.clone(), &mut inherited_services).await?)
            }
        };
        let mut tasks = vec![tokio::spawn(routing.clone().probe())];
        if let Some(local) = &local {
            routing = routing.with_listeners(&local.listeners()).with_local_gateway(local.applied.clone());
        }
        let health = routing.health().clone();
        let gateway = local.as_ref().map(|l| l.gateway.clone());
        let controller = controller(config, base, routing, gateway.as_ref())?;
        let notify_metrics = canary_controller::notify::NotifyMetrics::default();
        if role != Role::Gateway {
            tasks.push(controller.spawn_leader());
            tasks.extend(canary_controller::notify::spawn(&controller, &config.notify, &notify_metrics));
        }
        let admin = match inherited_admin {
            Some(admin) => admin,
            None => std::net::TcpListener::bind(config.admin.listen)
                .with_context(|| format!("admin: cannot listen on {}", config.admin.listen))?,
        };
        admin.set_nonblocking(true)?;
        let admin_copy = admin.try_clone()?;
        let admin = TcpListener::from_std(admin)?;
        let admin_addr = admin.local_addr()?;
        let mut registry = registry(gateway.as_ref(), health, &controller);
        notify_metrics.register(&mut registry);
        let state = canary_controller::AppState {
            controller: controller.clone(),
            access: Arc::new(access),
            registry: Arc::new(registry),
            listeners: Arc::new(GatewayListeners(gateway.clone())),
        };
        let running = local.map(|local| {
            tasks.extend(local.tasks);
            local.running
        });
        let admin_timeouts =
            Timeouts { header_read: config.admin.header_read_timeout.0, idle: config.admin.idle_timeout.0 };
        let drain = config.gateway.shutdown_timeout.0;
        Ok(Stack { gateway, controller, admin_addr, admin, admin_copy, admin_timeouts, drain, state, running, tasks })
    }

    /// Copies of every listening socket, admin first, for a process that takes over.
    pub fn handover_sockets(&self) -> anyhow::Result<Vec<(String, std::net::TcpListener)>> {
        let services = self.running.as_ref().map_or(&[][..], |running| running.listening());
        handover::sockets(self.admin_copy.try_clone()?, services)
    }

    /// Serves the admin API until `stop` completes, then stops the gateway, letting in-flight
    /// requests finish.
    pub async fn run(self, stop: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Stack { admin, admin_timeouts, drain, state, running, tasks, .. } = self;
        admin_listener::serve(admin, canary_controller::router(state), admin_timeouts, stop, drain).await;
        tracing::info!("stopping: draining in-flight requests");
        for task in tasks {
            task.abort();
        }
        if let Some(running) = running {
            tokio::task::spawn_blocking(move || running.shutdown()).await?;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The controller, reading counters and breakers from this process's gateway or Prometheus.
fn controller(
    config: &Config,
    base: &Path,
    routing: Routing,
    gateway: Option<&Arc<Gateway>>,
) -> anyhow::Result<Arc<Controller>> {
    let settings = ControllerSettings {
        tick: config.controller.tick.0,
        prometheus_url: config.prometheus_url().map(str::to_owned),
        gates: gate_settings(config, base),
    };
    Ok(match (&config.metrics, gateway) {
        (MetricsConfig::Prometheus { url, scrape_interval }, _) => {
            let source = Arc::new(PrometheusMetrics::new(url, scrape_interval.0));
            Controller::new(routing, source.clone(), source, settings)
        }
        (MetricsConfig::Local, Some(gateway)) => {
            let source = Arc::new(LocalMetrics(gateway.clone()));
            Controller::new(routing, source.clone(), source, settings)
        }
        (MetricsConfig::Local, None) => bail!(
            "--role controller has no gateway of its own to count requests: set [metrics] source = \"prometheus\""
        ),
    })
}

/// Gates run in the config file's folder and write their output beside the embedded store (or
/// in `canary-data/` there with etcd).
fn gate_settings(config: &Config, base: &Path) -> canary_controller::gates::GateSettings {
    let data = match &config.store {
        StoreConfig::Embedded { path } => {
            let path = if path.is_absolute() { path.clone() } else { base.join(path) };
            path.parent().map_or_else(|| base.to_path_buf(), Path::to_path_buf)
        }
        StoreConfig::Etcd { .. } => base.join("canary-data"),
    };
    canary_controller::gates::GateSettings { work_dir: base.to_path_buf(), output_dir: data.join("gates") }
}

/// Everything `/metrics` exposes.
fn registry(gateway: Option<&Arc<Gateway>>, health: Arc<StoreHealth>, controller: &Arc<Controller>) -> Registry {
    let mut registry = Registry::default();
    if let Some(gateway) = gateway {
        registry.register_collector(Box::new(gateway.metrics().clone()));
        registry.register_collector(Box::new(gateway.status()));
    }
    registry.register_collector(Box::new(health));
    registry.register_collector(Box::new(controller.leadership_gauge()));
    registry.register_collector(Box::new(controller.verdict_metrics()));
    canary_controller::dashboard::register_metrics(&mut registry);
    registry
}
