//! `canary serve` and `canary validate`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use canary_controller::metrics_source::LocalMetrics;
use canary_controller::{Controller, ControllerSettings, Routing};
use canary_core::config::{Config, StoreConfig};
use canary_core::pin::PinKey;
use canary_gateway::{Gateway, Running};
use canary_store::{CasOutcome, EtcdOptions, EtcdStore, RedbStore, Store, keys};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::cli::{ServeArgs, ValidateArgs};

/// Checks a configuration file; prints what is wrong and fails, or a one-line summary.
pub fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config).with_context(|| format!("{} is not valid", args.config.display()))?;
    println!(
        "{} is valid: {} service(s), admin on {}",
        args.config.display(),
        config.services.len(),
        config.admin.listen
    );
    Ok(())
}

/// Runs the gateway, the controller and the admin listener until SIGTERM or Ctrl-C, then drains.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logs(&args.log);
    let config = Config::load(&args.config).with_context(|| format!("{} is not valid", args.config.display()))?;
    if config.services.is_empty() {
        bail!("{}: no [[service]] is configured", args.config.display());
    }
    let base = args.config.parent().unwrap_or(Path::new(".")).to_path_buf();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(config, &base))
}

/// Opens the configured store; a relative embedded path is taken from `base`.
pub async fn open_store(config: &StoreConfig, base: &Path) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match config {
        StoreConfig::Embedded { path } => {
            let path = if path.is_absolute() { path.clone() } else { base.join(path) };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            Arc::new(RedbStore::open(&path).with_context(|| format!("cannot open the store {}", path.display()))?)
        }
        StoreConfig::Etcd { endpoints } => Arc::new(
            EtcdStore::connect(endpoints, EtcdOptions::default())
                .await
                .with_context(|| format!("cannot reach etcd at {}", endpoints.join(", ")))?,
        ),
    })
}

/// Starts everything for `config` and serves until a stop signal.
pub async fn serve(config: Config, base: &Path) -> anyhow::Result<()> {
    let stack = Stack::start(&config, base).await?;
    for service in stack.gateway.services() {
        if let Some(addr) = service.bound() {
            println!("listening service {} http://{addr}", service.name());
        }
    }
    println!("listening admin http://{}", stack.admin_addr);
    stack.run(stop_signal()).await
}

/// Everything one `canary serve` process runs, built from a configuration: the store, the
/// gateway with its listeners and local breakers, the routing that follows the store, the
/// rollout controller and the admin listener. `canary demo` builds the same stack around its
/// demo upstreams, so what the demo shows is what `serve` does.
pub struct Stack {
    /// The data plane.
    pub gateway: Arc<Gateway>,
    /// The rollout controller.
    pub controller: Arc<Controller>,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    admin: TcpListener,
    state: canary_controller::AppState,
    running: Running,
    /// Background tasks that live as long as the stack: breakers, the leader campaign.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    follower: tokio::task::JoinHandle<()>,
}

impl Stack {
    /// Opens the store, starts the gateway's listeners and breakers, campaigns to lead the
    /// rollouts and binds the admin listener (served by [`Stack::run`]).
    pub async fn start(config: &Config, base: &Path) -> anyhow::Result<Stack> {
        let store = open_store(&config.store, base).await?;
        let pins = pin_key(config, store.as_ref()).await?;
        let token = admin_token(config)?;
        let gateway = Arc::new(Gateway::new(config, pins)?);
        let routing = Routing::new(store.clone(), gateway.clone());
        routing.sync_at_start().await.context("cannot read the stored routing")?;
        let running = gateway.start()?;
        let mut tasks = gateway.spawn_breakers();
        let follower = tokio::spawn(routing.clone().follow());
        let metrics = Arc::new(LocalMetrics(gateway.clone()));
        let controller = Controller::new(routing, metrics, ControllerSettings { tick: config.controller.tick.0 });
        tasks.push(controller.spawn_leader());
        let admin = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("admin: cannot listen on {}", config.admin.listen))?;
        let admin_addr = admin.local_addr()?;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(gateway.metrics().clone()));
        canary_controller::dashboard::register_metrics(&mut registry);
        let state = canary_controller::AppState {
            gateway: gateway.clone(),
            controller: controller.clone(),
            token,
            registry: Arc::new(registry),
        };
        Ok(Stack { gateway, controller, admin_addr, admin, state, running, tasks, follower })
    }

    /// Serves the admin API until `stop` completes, then stops the gateway, letting in-flight
    /// requests finish.
    pub async fn run(self, stop: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Stack { admin, state, running, tasks, follower, .. } = self;
        axum::serve(admin, canary_controller::router(state)).with_graceful_shutdown(stop).await?;
        tracing::info!("stopping: draining in-flight requests");
        follower.abort();
        for task in tasks {
            task.abort();
        }
        tokio::task::spawn_blocking(move || running.shutdown()).await?;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The pin secret: configured, or else the one stored for every gateway (made on first start).
async fn pin_key(config: &Config, store: &dyn Store) -> anyhow::Result<PinKey> {
    let secret = match (&config.gateway.pin_secret, &config.gateway.pin_secret_file) {
        (Some(secret), _) => secret.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("[gateway] pin_secret_file: cannot read {}", path.display()))?
            .trim_end()
            .to_owned(),
        (None, None) => {
            let fresh: [u8; 32] = rand::random();
            let fresh: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
            match store.compare_and_swap(keys::PIN_SECRET, 0, fresh.clone().into_bytes()).await? {
                CasOutcome::Won { .. } => fresh,
                CasOutcome::Lost { current: Some(entry) } => {
                    String::from_utf8(entry.value).context("stored pin secret")?
                }
                CasOutcome::Lost { current: None } => bail!("the stored pin secret vanished while it was read"),
            }
        }
    };
    if secret.len() < 16 {
        bail!("[gateway] pin secret must be at least 16 characters");
    }
    Ok(PinKey::new(secret.as_bytes()))
}

fn admin_token(config: &Config) -> anyhow::Result<Option<Arc<str>>> {
    let token = match (&config.admin.token, &config.admin.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("[admin] token_file: cannot read {}", path.display()))?
                .trim_end()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if token.as_deref().is_some_and(str::is_empty) {
        bail!("[admin] token must not be empty");
    }
    Ok(token.map(Arc::from))
}

/// Logs to stderr, filtered by `filter`.
pub fn init_logs(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
