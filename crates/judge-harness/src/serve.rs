//! The system under test: a `canary.toml` in a temporary folder and a real `canary serve`
//! process started with it, found through the "listening" lines it prints.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::children::ChildGuard;

/// How long `canary serve` may take to report every listener.
const STARTUP: Duration = Duration::from_secs(30);

/// One service of the config: its name and the address of its first stable version.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Service name.
    pub name: String,
    /// Where stable `v1` listens.
    pub stable: SocketAddr,
}

/// `canary.toml` for `services`: loopback listeners on free ports, an embedded store in
/// `dir`, a fixed pin secret, and the judge looking every `tick`.
pub fn config_toml(dir: &Path, services: &[ServiceConfig], tick: Duration) -> String {
    let store = dir.join("canary.redb");
    let mut toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[gateway]\npin_secret = \"judge-harness-pin-secret\"\n\n\
         [store]\nkind = \"embedded\"\npath = {store:?}\n\n[controller]\ntick = \"{}\"\n",
        humantime::format_duration(tick)
    );
    for service in services {
        let _ = write!(
            toml,
            "\n[[service]]\nname = \"{}\"\nlisten = \"127.0.0.1:0\"\nuser_key = [\"header:x-user-id\"]\n\
             stable = {{ version = \"v1\", upstreams = [\"{}\"] }}\n",
            service.name, service.stable
        );
    }
    toml
}

/// A running `canary serve`.
#[derive(Debug)]
pub struct Serve {
    /// The process.
    pub child: ChildGuard,
    /// The admin API's base URL.
    pub admin: String,
    /// Each service's gateway address.
    pub services: HashMap<String, SocketAddr>,
    /// Its log (stderr).
    pub log: PathBuf,
}

/// Where the `canary` binary is: `explicit`, else `release/canary` beside this harness's own
/// target folder; an error says how to build it.
pub fn canary_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(path) => path.to_owned(),
        None => {
            let exe = std::env::current_exe().context("cannot find the harness's own path")?;
            let target = exe.parent().and_then(Path::parent).context("the harness is not inside a target folder")?;
            target.join("release").join("canary")
        }
    };
    anyhow::ensure!(
        path.is_file(),
        "no canary binary at {}: run `cargo build --release -p canary` first (or pass --canary-bin)",
        path.display()
    );
    Ok(path)
}

/// Writes the config to `dir` and starts `canary serve` with it; waits for every listener.
pub async fn start(binary: &Path, dir: &Path, config: &str, services: usize) -> anyhow::Result<Serve> {
    let path = dir.join("canary.toml");
    std::fs::write(&path, config).with_context(|| format!("cannot write {}", path.display()))?;
    let log = dir.join("canary.log");
    let stderr = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut command = Command::new(binary);
    command.args(["serve", "--config"]).arg(&path).args(["--log", "warn"]).stderr(Stdio::from(stderr));
    let (child, mut lines) = ChildGuard::spawn("canary serve", command)?;
    let mut found = HashMap::new();
    let admin = lines
        .first(STARTUP, |line| match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["listening", "service", name, url] => {
                let addr = url.trim_start_matches("http://").parse().ok()?;
                found.insert((*name).to_owned(), addr);
                None
            }
            ["listening", "admin", url] if found.len() == services => Some((*url).to_owned()),
            _ => None,
        })
        .await
        .with_context(|| format!("canary serve did not report its listeners; its log:\n{}", tail(&log)))?;
    lines.drain();
    Ok(Serve { child, admin, services: found, log })
}

/// The last lines of a log, for an error message.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_one_that_canary_accepts() {
        let services = [
            ServiceConfig { name: "svc-1".into(), stable: "127.0.0.1:9001".parse().unwrap() },
            ServiceConfig { name: "svc-2".into(), stable: "127.0.0.1:9002".parse().unwrap() },
        ];
        let toml = config_toml(Path::new("/tmp/x"), &services, Duration::from_millis(500));
        let config = canary_core::config::Config::from_toml(&toml).unwrap();
        assert_eq!(config.services.len(), 2);
        assert!(toml.contains("tick = \"500ms\""), "{toml}");
        assert!(toml.contains("pin_secret"), "{toml}");
    }
}
