//! `canary serve` and `canary validate`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use canary_core::admin::Tokens;
use canary_core::config::{Config, StoreConfig};
use canary_core::pin::PinSecret;
use canary_store::{CasOutcome, EtcdCredentials, EtcdOptions, EtcdStore, EtcdTls, RedbStore, Store, keys};

use crate::cli::{LogFormat, ServeArgs, ValidateArgs};
use crate::handover::{self, Inherited};
use crate::output::outln;
use crate::stack::Stack;

/// Checks a configuration file; prints what is wrong and fails, or a one-line summary.
pub fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config).with_context(|| format!("{} is not valid", args.config.display()))?;
    let sinks = match config.notify.len() {
        0 => String::new(),
        n => format!(", {n} notification sink(s)"),
    };
    outln!(
        "{} is valid: {} service(s), admin on {}{sinks}",
        args.config.display(),
        config.services.len(),
        config.admin.listen
    )
}

/// Runs the gateway, the controller and the admin listener until SIGTERM or Ctrl-C, then drains.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logs(&args.log, args.log_format);
    let config = Config::load(&args.config).with_context(|| format!("{} is not valid", args.config.display()))?;
    if config.services.is_empty() {
        bail!("{}: no [[service]] is configured", args.config.display());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(config, &args))
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
        StoreConfig::Etcd { endpoints, username, password, password_file, ca_file, cert_file, key_file } => {
            let credentials = match username {
                Some(user) => Some(EtcdCredentials {
                    user: user.clone(),
                    password: secret("store", "password", password, password_file)?
                        .context("[store]: username needs password or password_file")?,
                }),
                None => None,
            };
            let https = endpoints.iter().all(|e| e.starts_with("https://"));
            let tls =
                https.then(|| etcd_tls(ca_file.as_deref(), cert_file.as_deref(), key_file.as_deref())).transpose()?;
            let options = EtcdOptions { credentials, tls, ..EtcdOptions::default() };
            Arc::new(
                EtcdStore::connect(endpoints, options)
                    .await
                    .with_context(|| format!("cannot reach etcd at {}", endpoints.join(", ")))?,
            )
        }
    })
}

/// The PEM files of `[store]`'s TLS, read.
fn etcd_tls(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<EtcdTls> {
    let read = |key: &str, path: &Path| {
        std::fs::read(path).with_context(|| format!("[store] {key}: cannot read {}", path.display()))
    };
    let ca_pem = ca.map(|path| read("ca_file", path)).transpose()?;
    let identity_pem = match (cert, key) {
        (Some(cert), Some(key)) => Some([read("cert_file", cert)?, read("key_file", key)?].concat()),
        _ => None,
    };
    Ok(EtcdTls { ca_pem, identity_pem })
}

/// Starts everything for `config` and serves until a stop signal or until another process
/// takes over; with `take_over`, starts on the sockets of the process running now.
pub async fn serve(config: Config, args: &ServeArgs) -> anyhow::Result<()> {
    let base = args.config.parent().unwrap_or(Path::new("."));
    let handover_socket = handover_socket(&config, base);
    let inherited = if args.take_over { handover::take_over(&handover_socket)? } else { Inherited::default() };
    let stack = Stack::start_as(&config, base, args.role, inherited).await?;
    let taken = match handover::listen(handover_socket, stack.handover_sockets()?) {
        Ok(taken) => Some(taken),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "no take-over of this process will be possible");
            None
        }
    };
    // Registered before the listeners are announced, so no SIGHUP from then on can stop us.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler")?;
    tokio::spawn(crate::reload::on_hangups(hangups, args.config.clone()));
    for service in stack.gateway.iter().flat_map(|g| g.services()) {
        if let Some(addr) = service.bound() {
            outln!("listening service {} http://{addr}", service.name())?;
        }
    }
    outln!("listening admin http://{}", stack.admin_addr)?;
    crate::sd_notify::ready();
    stack.run(stop_or_taken(taken)).await
}

/// Where this process answers take-overs: as configured, else beside the embedded store's file
/// (a place the process may write to by design), else in `canary-data` beside the config.
fn handover_socket(config: &Config, base: &Path) -> std::path::PathBuf {
    let default = match &config.store {
        StoreConfig::Embedded { path } => path.with_file_name("handover.sock"),
        StoreConfig::Etcd { .. } => std::path::PathBuf::from("canary-data/handover.sock"),
    };
    base.join(config.gateway.handover_socket.as_ref().unwrap_or(&default))
}

/// Completes on SIGTERM, Ctrl-C, or when another process has taken the listening sockets.
async fn stop_or_taken(taken: Option<tokio::sync::oneshot::Receiver<()>>) {
    let taken = async {
        // A dropped sender means the hand-over thread ended without a take-over: keep serving.
        if let Some(taken) = taken
            && taken.await.is_ok()
        {
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = stop_signal() => {}
        _ = taken => {}
    }
}

/// The store, once the process being taken over has released it: it holds the embedded file
/// until it has drained, so opening is retried for its shutdown timeout and a little more.
pub async fn open_store_when_released(config: &Config, base: &Path) -> anyhow::Result<Arc<dyn Store>> {
    let patience = config.gateway.shutdown_timeout.0 + std::time::Duration::from_secs(10);
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match open_store(&config.store, base).await {
            Ok(store) => return Ok(store),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context(format!("the store was not released within {patience:?}")));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
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
pub(crate) async fn pin_key(config: &Config, store: &dyn Store) -> anyhow::Result<PinSecret> {
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
    Ok(PinSecret::new(secret.as_bytes()))
}

/// The admin listener's tokens, from the config or the files it names.
pub(crate) fn admin_tokens(config: &Config) -> anyhow::Result<Tokens> {
    let admin = &config.admin;
    let tokens = Tokens {
        admin: secret("admin", "token", &admin.token, &admin.token_file)?,
        read: secret("admin", "read_token", &admin.read_token, &admin.read_token_file)?,
        metrics: secret("admin", "metrics_token", &admin.metrics_token, &admin.metrics_token_file)?,
    };
    if tokens.read.is_some() && tokens.read == tokens.admin {
        bail!("[admin] read_token must differ from token");
    }
    Ok(tokens)
}

/// `[section] key`, given inline or in `key_file` (trailing whitespace ignored); never empty.
fn secret(
    section: &str,
    key: &str,
    inline: &Option<String>,
    file: &Option<std::path::PathBuf>,
) -> anyhow::Result<Option<String>> {
    let value = match (inline, file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("[{section}] {key}_file: cannot read {}", path.display()))?
                .trim_end()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if value.as_deref().is_some_and(str::is_empty) {
        bail!("[{section}] {key} must not be empty");
    }
    Ok(value)
}

/// Logs to stderr, filtered by `filter`, as text for people or as one JSON object a line
/// (`timestamp`, `level`, `target`, `message` and the event's own fields, all at the top level).
pub fn init_logs(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
