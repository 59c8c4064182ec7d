//! End-to-end test kit: fake upstreams that count hits, and a real `canary serve` process.
#![allow(dead_code, missing_docs)]

pub mod app;
pub mod browser;
pub mod chain;
pub mod chromium;
pub mod fleet;
pub mod hooks;
pub mod link;
pub mod prometheus;
pub mod restart;
pub mod traffic;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A fake upstream serving one version. Every response names the version and echoes what the
/// gateway sent it; `/slow?ms=N` waits, `/status/N` answers N, `/headers` answers the request
/// head it got (`name: value` lines, in order), `/ws` is a WebSocket echo that prefixes every
/// message with the version.
pub struct Upstream {
    pub addr: SocketAddr,
    pub version: String,
    hits: Arc<AtomicU64>,
    fail_with: Arc<std::sync::atomic::AtomicU16>,
    fail_every: Arc<AtomicU64>,
    reject_every: Arc<AtomicU64>,
    broken_path: Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    open: Arc<AtomicU64>,
}

/// Counts one open connection for as long as it lives.
struct OpenConnection(Arc<AtomicU64>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(version: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let fail_with = Arc::new(std::sync::atomic::AtomicU16::new(0));
        let fail_every = Arc::new(AtomicU64::new(0));
        let reject_every = Arc::new(AtomicU64::new(0));
        let (v, h, f, e) = (version.to_owned(), hits.clone(), fail_with.clone(), fail_every.clone());
        let r = reject_every.clone();
        let broken_path: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let b = broken_path.clone();
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let conns = connections.clone();
        let open = Arc::new(AtomicU64::new(0));
        let counted = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (v, h, f, e, r, b) = (v.clone(), h.clone(), f.clone(), e.clone(), r.clone(), b.clone());
                counted.fetch_add(1, Ordering::Relaxed);
                let open_connection = OpenConnection(counted.clone());
                let connection = tokio::spawn(async move {
                    let _open = open_connection;
                    let svc = service_fn(move |req| {
                        let broken = b.lock().unwrap().as_deref().is_some_and(|p| p == req.uri().path());
                        let failure = Failure {
                            status: if broken { 500 } else { f.load(Ordering::Relaxed) },
                            every: e.load(Ordering::Relaxed),
                            reject_every: r.load(Ordering::Relaxed),
                        };
                        respond(v.clone(), h.clone(), failure, req)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
                conns.lock().unwrap().push(connection.abort_handle());
            }
        });
        Upstream {
            addr,
            version: version.to_owned(),
            hits,
            fail_with,
            fail_every,
            reject_every,
            broken_path,
            task,
            connections,
            open,
        }
    }

    /// Makes requests for exactly `path` answer 500: a version with one broken page.
    pub fn break_path(&self, path: &str) {
        *self.broken_path.lock().unwrap() = Some(path.to_owned());
    }

    /// Connections from the gateway open right now.
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Makes every later plain request answer `status` (0 = behave normally).
    pub fn fail_with(&self, status: u16) {
        self.fail_with.store(status, Ordering::Relaxed);
    }

    /// Makes every `n`th plain request answer 503 (0 = never): a flaky version.
    pub fn fail_every(&self, n: u64) {
        self.fail_every.store(n, Ordering::Relaxed);
    }

    /// Makes every `n`th plain request answer 422 (0 = never): a version that turns users
    /// away without an error the gateway counts (a checkout refused, not failed).
    pub fn reject_every(&self, n: u64) {
        self.reject_every.store(n, Ordering::Relaxed);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Crashes: closes the listener and every open connection, so later connections are
    /// refused and pooled ones reset.
    pub fn stop(&self) {
        self.task.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

async fn respond(
    version: String,
    hits: Arc<AtomicU64>,
    failure: Failure,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let hit = hits.fetch_add(1, Ordering::Relaxed) + 1;
    let path = req.uri().path().to_owned();
    let seen = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if path == "/ws" {
        let key = seen("sec-websocket-key");
        let upgrade = hyper::upgrade::on(&mut req);
        let v = version.clone();
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(text) = msg
                    && ws.send(Message::text(format!("{v}:{text}"))).await.is_err()
                {
                    return;
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    if path == "/headers" {
        let mut head = String::new();
        for (name, value) in req.headers() {
            head.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
        }
        return Ok(Response::builder().header("x-served-by", &version).body(Full::new(Bytes::from(head))).unwrap());
    }
    let mut status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::OK);
    if failure.every > 0 && hit.is_multiple_of(failure.every) {
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    if failure.reject_every > 0 && hit.is_multiple_of(failure.reject_every) {
        status = StatusCode::UNPROCESSABLE_ENTITY;
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        status = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
    }
    Ok(Response::builder()
        .status(status)
        .header("x-served-by", &version)
        .header("x-seen-canary-version", seen("x-canary-version"))
        .header("x-seen-forwarded-for", seen("x-forwarded-for"))
        .header("x-seen-force-token", seen("x-canary-force-token"))
        .header("x-seen-cohort", seen("x-canary-cohort"))
        .body(Full::new(Bytes::from(version.clone())))
        .unwrap())
}

/// How a fake upstream misbehaves at the moment.
#[derive(Debug, Clone, Copy)]
struct Failure {
    status: u16,
    every: u64,
    reject_every: u64,
}

/// A `canary serve` process with its config in a temp dir; stopped on drop.
pub struct Gateway {
    child: Option<Child>,
    pub admin: String,
    pub services: HashMap<String, SocketAddr>,
    pub dir: tempfile::TempDir,
    role: Option<String>,
}

impl Gateway {
    /// Starts `canary serve` with `config` (TOML) and waits until every listener is up.
    pub fn start(config: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canary.toml");
        std::fs::write(&path, config).unwrap();
        let (child, admin, services) = spawn_serve(&path, None);
        Gateway { child: Some(child), admin, services, dir, role: None }
    }

    /// Starts `canary serve` with `config` and the environment variables `env`.
    pub fn start_with_env(config: &str, env: &[(&str, &std::ffi::OsStr)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canary.toml");
        std::fs::write(&path, config).unwrap();
        let (child, admin, services) = spawn_serve_with_env(&path, None, env);
        Gateway { child: Some(child), admin, services, dir, role: None }
    }

    /// Starts `canary serve --role ROLE` (`gateway`, `controller` or `all`).
    pub fn start_role(config: &str, role: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canary.toml");
        std::fs::write(&path, config).unwrap();
        let (child, admin, services) = spawn_serve(&path, Some(role));
        Gateway { child: Some(child), admin, services, dir, role: Some(role.to_owned()) }
    }

    pub fn addr(&self, service: &str) -> SocketAddr {
        self.services[service]
    }

    pub fn url(&self, service: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(service))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "canary did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// PUTs JSON to an admin API path and returns (status, envelope).
    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = reqwest::Client::new().put(format!("{}{path}", self.admin)).json(&body).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// POSTs JSON to an admin API path and returns (status, envelope).
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let request = reqwest::Client::new().post(format!("{}{path}", self.admin)).json(&body);
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = reqwest::get(format!("{}{path}", self.admin)).await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    pub async fn set_weight(&self, service: &str, weight: f64) {
        let (status, body) =
            self.put(&format!("/api/v1/services/{service}/weight"), serde_json::json!({ "weight": weight })).await;
        assert_eq!(status, 200, "{body}");
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin)).await.unwrap().text().await.unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `canary serve --config path` and waits until it reports every listener.
fn spawn_serve(path: &std::path::Path, role: Option<&str>) -> (Child, String, HashMap<String, SocketAddr>) {
    spawn_serve_with_env(path, role, &[])
}

/// [`spawn_serve`] with environment variables set for the process.
fn spawn_serve_with_env(
    path: &std::path::Path,
    role: Option<&str>,
    env: &[(&str, &std::ffi::OsStr)],
) -> (Child, String, HashMap<String, SocketAddr>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_canary"));
    command.args(["serve", "--config"]).arg(path).args(["--role", role.unwrap_or("all")]).args(["--log", "warn"]);
    command.envs(env.iter().copied());
    let child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start canary serve");
    wait_for_listeners(child)
}

impl Gateway {
    /// Starts `canary serve` with `config` under a soft and hard limit of `nofile` open files
    /// (`ulimit -n`), its log written to `log.txt` in its directory ([`Gateway::log`]).
    pub fn start_with_nofile(config: &str, nofile: u32) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canary.toml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("log.txt")).unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_canary"))
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--log", "warn"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start canary serve under ulimit");
        let (child, admin, services) = wait_for_listeners(child);
        Gateway { child: Some(child), admin, services, dir, role: None }
    }

    /// What a gateway started by [`Gateway::start_with_nofile`] has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log.txt")).unwrap_or_default()
    }
}

/// Reads a starting `canary serve`'s stdout until it has reported every listener.
fn wait_for_listeners(mut child: Child) -> (Child, String, HashMap<String, SocketAddr>) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut services = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let admin = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("canary serve did not report its listeners in time");
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["listening", "service", name, url] => {
                services.insert(name.to_string(), url.trim_start_matches("http://").parse().unwrap());
            }
            ["listening", "admin", url] => break url.to_string(),
            _ => {}
        }
    };
    (child, admin, services)
}

/// A service's `tls = { cert, key }` line for a certificate of `localhost` signed by itself,
/// written into `dir`, and the certificate (for a client to trust).
pub fn self_signed_tls(dir: &std::path::Path) -> (String, rcgen::CertifiedKey<rcgen::KeyPair>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (format!("tls = {{ cert = {cert_path:?}, key = {key_path:?} }}"), cert)
}

/// A TLS client that trusts `cert` alone and offers `alpn`.
pub fn tls_connector(cert: &rcgen::CertifiedKey<rcgen::KeyPair>, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(client_config))
}

/// A config with one service `web` on port 0, stable and canary at the given upstreams.
pub fn config(stable: &Upstream, canary: &Upstream, weight: f64, extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[gateway]
workers = 2
pin_secret = "end-to-end-test-secret"

[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = {{ version = "v1", upstreams = ["{}"] }}
canary = {{ version = "v2", upstreams = ["{}"] }}
weight = {weight}
{extra}
"#,
        stable.addr, canary.addr
    )
}

/// A client that keeps connections alive and follows no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The version a response came from, by the gateway's response header.
pub fn version_of(response: &reqwest::Response) -> String {
    response.headers()["x-canary-version"].to_str().unwrap().to_owned()
}

/// The `canary_pin` cookie a response set, if any.
pub fn pin_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("canary_pin="))
        .map(|c| c.split(';').next().unwrap().to_owned())
}

/// Sends `GET path` as user `key` (header `x-user-id`) with optional extra cookie.
pub async fn get_as(client: &reqwest::Client, gateway: &Gateway, key: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = client.get(gateway.url("web", "/")).header("x-user-id", key);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

/// A config with one service `web` on port 0, only a stable version at `stable`, and `admin`
/// lines added to the `[admin]` section (e.g. a token).
pub fn stable_only_config(stable: &Upstream, admin: &str) -> String {
    stable_only_config_at(stable.addr, admin)
}

/// [`stable_only_config`] for an upstream at `stable` that is not an [`Upstream`].
pub fn stable_only_config_at(stable: SocketAddr, admin: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
{admin}

[gateway]
workers = 1
pin_secret = "end-to-end-test-secret"

[controller]
tick = "100ms"

[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = {{ version = "v1", upstreams = ["{stable}"] }}
"#
    )
}

/// What a `canary` command printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `canary` binary with `args` (environment `CANARY_ADMIN`/`CANARY_TOKEN` cleared) on a
/// blocking thread, so the test's runtime keeps serving its upstreams meanwhile.
pub async fn run_canary(args: &[&str]) -> CliOutput {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_canary"))
            .args(&args)
            .env_remove("CANARY_ADMIN")
            .env_remove("CANARY_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("run canary");
        CliOutput {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}
