//! A real, single-member etcd for tests: its own temp data dir, free loopback ports, killed by
//! PID when dropped.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use canary_store::{EtcdCredentials, EtcdOptions, EtcdStore, EtcdTls, Store, StoreError};
use tokio::time::Instant;

/// How long etcd may take to answer after it was started.
const STARTUP: Duration = Duration::from_secs(30);
/// Fresh port pairs tried when another process grabs a port between our probe and etcd's bind.
const PORT_ATTEMPTS: usize = 5;

/// A running etcd child process.
pub struct EtcdServer {
    child: Option<Child>,
    binary: PathBuf,
    data_dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    extra_args: Vec<String>,
    /// How clients reach it over TLS, when it serves `https://`.
    tls: Option<EtcdTls>,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers. Panics (fails the test) when the binary is
    /// missing: CI must install it, and a silently skipped test would hide that.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`start`](Self::start) with more etcd flags, e.g. `--auth-token-ttl=1`.
    pub async fn start_with(extra_args: &[&str]) -> Self {
        Self::start_configured(extra_args, None).await
    }

    /// etcd serving `https://` with the TLS flags in `extra_args` (`--cert-file`, …); clients
    /// (and the readiness probe) connect with `client`.
    pub async fn start_tls(extra_args: &[&str], client: EtcdTls) -> Self {
        Self::start_configured(extra_args, Some(client)).await
    }

    async fn start_configured(extra_args: &[&str], tls: Option<EtcdTls>) -> Self {
        let binary = etcd_binary();
        let extra_args: Vec<String> = extra_args.iter().map(|&a| a.to_owned()).collect();
        let mut data_dir = tempfile::tempdir().expect("temp dir for etcd");
        for _ in 0..PORT_ATTEMPTS {
            let (client_port, peer_port) = free_port_pair();
            let mut server = EtcdServer {
                child: None,
                binary: binary.clone(),
                data_dir,
                client_port,
                peer_port,
                extra_args: extra_args.clone(),
                tls: tls.clone(),
            };
            server.spawn();
            if server.wait_until_serving().await {
                return server;
            }
            // Most likely a port was taken in between: try another pair in a clean data dir.
            server.kill();
            let log = server.log();
            eprintln!("etcd did not come up on ports {client_port}/{peer_port}; retrying:\n{log}");
            data_dir = tempfile::tempdir().expect("temp dir for etcd");
        }
        panic!("etcd did not start after {PORT_ATTEMPTS} attempts");
    }

    /// The client URL, `http://127.0.0.1:<port>` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// A store connected to this server.
    pub async fn store(&self) -> EtcdStore {
        self.store_as(None).await
    }

    /// A store connected to this server that authenticates with `credentials`.
    pub async fn store_as(&self, credentials: Option<EtcdCredentials>) -> EtcdStore {
        let options = EtcdOptions {
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            keep_alive_interval: Duration::from_secs(1),
            credentials,
            tls: self.tls.clone(),
            ..EtcdOptions::default()
        };
        EtcdStore::connect(&[self.endpoint()], options).await.expect("connect to test etcd")
    }

    /// Creates `root` and a user `user` that may read and write `/canary/` only, then enables
    /// authentication — what an operator does with `etcdctl user add` and `etcdctl auth enable`.
    pub async fn enable_auth(&self, user: &str, password: &str) {
        let prefix = serde_json::json!({
            "permType": "READWRITE",
            "key": STANDARD.encode("/canary/"),
            "range_end": STANDARD.encode("/canary0"),
        });
        let steps = [
            ("/v3/auth/user/add", serde_json::json!({"name": "root", "password": format!("root-{password}")})),
            ("/v3/auth/role/add", serde_json::json!({"name": "root"})),
            ("/v3/auth/user/grant", serde_json::json!({"user": "root", "role": "root"})),
            ("/v3/auth/user/add", serde_json::json!({"name": user, "password": password})),
            ("/v3/auth/role/add", serde_json::json!({"name": user})),
            ("/v3/auth/role/grant", serde_json::json!({"name": user, "perm": prefix})),
            ("/v3/auth/user/grant", serde_json::json!({"user": user, "role": user})),
            ("/v3/auth/enable", serde_json::json!({})),
        ];
        let http = reqwest::Client::new();
        for (path, body) in steps {
            let response = http.post(format!("{}{path}", self.endpoint())).json(&body).send().await;
            let response = response.unwrap_or_else(|e| panic!("{path}: {e}"));
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            assert!(status.is_success(), "{path}: {status} {text}");
        }
    }

    /// SIGKILLs etcd, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL to this PID only; an already exited child is fine.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data dir (its data survives) and waits for it.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        if !self.wait_until_serving().await {
            panic!("etcd did not come back on port {}:\n{}", self.client_port, self.log());
        }
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("etcd log file");
        let child = Command::new(&self.binary)
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data_dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// Polls until etcd serves reads, or it exits, or [`STARTUP`] passes.
    async fn wait_until_serving(&mut self) -> bool {
        let started = Instant::now();
        let store = self.store().await;
        while started.elapsed() < STARTUP {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().ok().flatten().is_some()
            {
                return false;
            }
            // A refusal of who we are is an answer too: etcd with authentication enabled.
            if matches!(store.get("/health-probe").await, Ok(_) | Err(StoreError::Denied { .. })) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.path().join("etcd.log")
    }

    /// The last lines etcd logged, for failure messages.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `$ETCD_BIN`, else `etcd` on `PATH`, else `/usr/bin/etcd`.
fn etcd_binary() -> PathBuf {
    // An explicit ETCD_BIN is the only candidate: falling back would hide a typo in CI.
    let candidates: Vec<PathBuf> = match std::env::var_os("ETCD_BIN") {
        Some(path) => vec![PathBuf::from(path)],
        None => std::env::var_os("PATH")
            .into_iter()
            .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .map(|dir| dir.join("etcd"))
            .chain([PathBuf::from("/usr/bin/etcd")])
            .collect(),
    };
    let on_path = candidates.into_iter().find(|candidate| is_executable(candidate));
    on_path.unwrap_or_else(|| {
        panic!(
            "the etcd binary was not found (looked at $ETCD_BIN, $PATH and /usr/bin/etcd). \
             The etcd tests need a real etcd 3.4+: install it (Debian: apt-get install \
             etcd-server) or point ETCD_BIN at it."
        )
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Two distinct ports that were free a moment ago: bound to port 0 and released. etcd binds
/// them right after; if someone else was quicker, [`EtcdServer::start`] retries.
fn free_port_pair() -> (u16, u16) {
    let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a probe port");
    let second = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a probe port");
    let ports = (first.local_addr().unwrap().port(), second.local_addr().unwrap().port());
    drop((first, second));
    ports
}
