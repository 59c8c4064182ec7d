//! Everything a run starts as processes: the busy neighbour, two upstream processes per
//! service, and `canary serve` in front of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::children::{ChildGuard, Children};
use crate::cli::{AppArgs, RunArgs};
use crate::serve::{self, ServiceConfig};

/// How long an upstream process may take to report its address.
const UPSTREAM_STARTUP: Duration = Duration::from_secs(10);

/// One service of the run.
#[derive(Debug, Clone)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// The gateway's address for it.
    pub gateway: SocketAddr,
    /// Process `a`: stable at the start, always healthy.
    pub first: SocketAddr,
    /// Process `b`: worse than `a` when the scenario says so.
    pub second: SocketAddr,
}

/// The running processes of a run; dropping it kills every one of them.
#[derive(Debug)]
pub struct System {
    /// Every child process.
    pub children: Children,
    /// The admin API's base URL.
    pub admin: String,
    /// The services.
    pub services: Vec<Service>,
    /// `canary serve`'s log.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl System {
    /// Starts the processes `args` describe, with `canary` as the `canary` binary.
    pub async fn start(args: &RunArgs, canary: &Path) -> anyhow::Result<System> {
        let mut children = Children::default();
        if args.scenario.busy_neighbour() {
            let mut command = Command::new(std::env::current_exe()?);
            command.args(["spin", "--threads", &args.spin_threads.to_string()]);
            let (spinner, lines) = ChildGuard::spawn("busy neighbour", command)?;
            children.keep(spinner);
            lines.drain();
        }
        let mut pairs = Vec::new();
        for index in 1..=args.services {
            let name = format!("svc-{index}");
            let first = start_upstream(&mut children, &format!("{name}-a"), 1.0, &args.app).await?;
            let multiplier = args.scenario.canary_error_multiplier();
            let second = start_upstream(&mut children, &format!("{name}-b"), multiplier, &args.app).await?;
            pairs.push((name, first, second));
        }
        let dir = tempfile::tempdir().context("cannot create a temporary folder for canary serve")?;
        let configs: Vec<ServiceConfig> =
            pairs.iter().map(|(name, first, _)| ServiceConfig { name: name.clone(), stable: *first }).collect();
        let config = serve::config_toml(dir.path(), &configs, args.tick);
        let serve = serve::start(canary, dir.path(), &config, configs.len()).await?;
        children.keep(serve.child);
        let services = pairs
            .into_iter()
            .map(|(name, first, second)| {
                let gateway =
                    *serve.services.get(&name).with_context(|| format!("canary serve did not list {name}"))?;
                Ok(Service { name, gateway, first, second })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(System { children, admin: serve.admin, services, log: serve.log, _dir: dir })
    }

    /// The end of `canary serve`'s log, for an error message.
    pub fn log_tail(&self) -> String {
        serve::tail(&self.log)
    }
}

/// Starts `judge-harness upstream` as process `label` and returns where it listens.
async fn start_upstream(
    children: &mut Children,
    label: &str,
    multiplier: f64,
    app: &AppArgs,
) -> anyhow::Result<SocketAddr> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["upstream", "--listen", "127.0.0.1:0", "--version", label]);
    command.args(["--error-multiplier", &multiplier.to_string()]);
    command.args(["--base-error-rate", &app.base_error_rate.to_string()]);
    command.args(["--prone-error-rate", &app.prone_error_rate.to_string()]);
    command.args(["--prone-share", &app.prone_share.to_string()]);
    command.args(["--latency-ms", &app.latency_ms.to_string()]);
    command.args(["--latency-sigma", &app.latency_sigma.to_string()]);
    let (child, mut lines) = ChildGuard::spawn(&format!("upstream {label}"), command)?;
    children.keep(child);
    let addr = lines
        .first(UPSTREAM_STARTUP, |line| line.strip_prefix("listening http://").and_then(|a| a.parse().ok()))
        .await
        .with_context(|| format!("upstream {label} did not report its address"))?;
    lines.drain();
    Ok(addr)
}
