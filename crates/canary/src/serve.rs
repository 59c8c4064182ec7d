//! `canary serve` and `canary validate`.

use std::sync::Arc;

use anyhow::{Context, bail};
use canary_core::config::Config;
use canary_core::pin::PinKey;
use canary_gateway::Gateway;
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

/// Runs the gateway and the admin listener until SIGTERM or Ctrl-C, then drains.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logs(&args.log);
    let config = Config::load(&args.config).with_context(|| format!("{} is not valid", args.config.display()))?;
    if config.services.is_empty() {
        bail!("{}: no [[service]] is configured", args.config.display());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(config))
}

/// Starts everything for `config` and serves until a stop signal.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let pins = pin_key(&config)?;
    let token = admin_token(&config)?;
    let gateway = Arc::new(Gateway::new(&config, pins)?);
    let running = gateway.start()?;
    let _breakers = gateway.spawn_breakers();
    for service in gateway.services() {
        if let Some(addr) = service.bound() {
            println!("listening service {} http://{addr}", service.name());
        }
    }
    let admin = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("admin: cannot listen on {}", config.admin.listen))?;
    println!("listening admin http://{}", admin.local_addr()?);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(gateway.metrics().clone()));
    let state = canary_controller::AppState { gateway: gateway.clone(), token, registry: Arc::new(registry) };
    axum::serve(admin, canary_controller::router(state)).with_graceful_shutdown(stop_signal()).await?;
    tracing::info!("stopping: draining in-flight requests");
    tokio::task::spawn_blocking(move || running.shutdown()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn pin_key(config: &Config) -> anyhow::Result<PinKey> {
    let secret = match (&config.gateway.pin_secret, &config.gateway.pin_secret_file) {
        (Some(secret), _) => secret.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("[gateway] pin_secret_file: cannot read {}", path.display()))?
            .trim_end()
            .to_owned(),
        (None, None) => {
            tracing::warn!(
                "no [gateway] pin_secret: using a random one, so pins do not survive a restart \
                 and are not shared between gateways"
            );
            let bytes: [u8; 32] = rand::random();
            return Ok(PinKey::new(&bytes));
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
