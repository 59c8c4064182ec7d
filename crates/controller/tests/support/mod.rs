//! The admin router's real state for tests without a socket: an embedded store in a temporary
//! folder, the routing of one configured service, the rollout controller. No gateway runs, so
//! counters come from a source that reports what the test sets (the judge's input port) and no
//! breaker is ever tripped.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use canary_controller::api::Listeners;
use canary_controller::metrics_source::{BreakerSource, MetricsError, MetricsSource};
use canary_controller::routing::ServiceEntry;
use canary_controller::{AppState, Controller, ControllerSettings, Routing};
use canary_core::admin::{Access, Tokens};
use canary_core::config::Config;
use canary_core::metrics::VersionCounts;
use canary_store::RedbStore;
use prometheus_client::registry::Registry;
use tower::ServiceExt;

/// One service, `web`, with a canary configured.
pub const CONFIG: &str = r#"
[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = { version = "v1", upstreams = ["127.0.0.1:9"] }
canary = { version = "v2", upstreams = ["127.0.0.1:9"] }
"#;

/// Counters the test sets, per version (zero until set), and a breaker the test can trip.
#[derive(Default)]
pub struct SetCounts {
    counts: Mutex<Vec<(String, VersionCounts)>>,
    tripped: Mutex<Option<String>>,
}

impl SetCounts {
    /// Adds to `version`'s cumulative counters: `requests` answered 200 or 500 (`errors` of them).
    #[allow(dead_code, reason = "each test binary uses its own part of the support")]
    pub fn add(&self, version: &str, requests: u64, errors: u64) {
        let mut all = self.counts.lock().unwrap();
        if !all.iter().any(|(v, _)| v == version) {
            all.push((version.to_owned(), VersionCounts::default()));
        }
        let counts = &mut all.iter_mut().find(|(v, _)| v == version).unwrap().1;
        counts.responses[1] += requests - errors;
        counts.responses[4] += errors;
        counts.judge_errors += errors;
        counts.latency_buckets[3] += requests;
        counts.new_sessions += requests / 10;
    }

    /// Trips the breaker of every service with `why`.
    #[allow(dead_code, reason = "each test binary uses its own part of the support")]
    pub fn trip(&self, why: &str) {
        *self.tripped.lock().unwrap() = Some(why.to_owned());
    }
}

#[async_trait::async_trait]
impl MetricsSource for SetCounts {
    async fn counts(&self, _service: &str, version: &str) -> Result<VersionCounts, MetricsError> {
        let counts = self.counts.lock().unwrap();
        Ok(counts.iter().find(|(v, _)| v == version).map(|(_, c)| c.clone()).unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl BreakerSource for SetCounts {
    async fn tripped(&self, _service: &str) -> Result<Option<String>, MetricsError> {
        Ok(self.tripped.lock().unwrap().clone())
    }
}

/// No gateway in this process: nothing to listen on.
struct NoListeners;

impl Listeners for NoListeners {
    fn not_listening(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The state over a store in `dir`, with an admin `token` if given.
#[allow(dead_code, reason = "each test binary uses its own part of the support")]
pub async fn state(dir: &Path, token: Option<&str>) -> AppState {
    let tokens = Tokens { admin: token.map(str::to_owned), ..Tokens::default() };
    state_with_access(dir, Access { tokens, ..Access::default() }, Arc::new(SetCounts::default())).await
}

/// The same, reading counters and breakers from `source`.
#[allow(dead_code, reason = "each test binary uses its own part of the support")]
pub async fn state_with(dir: &Path, token: Option<&str>, source: Arc<SetCounts>) -> AppState {
    let tokens = Tokens { admin: token.map(str::to_owned), ..Tokens::default() };
    state_with_access(dir, Access { tokens, ..Access::default() }, source).await
}

/// The state with the admin listener's `access` rules (tokens, host names, limits).
pub async fn state_with_access(dir: &Path, access: Access, source: Arc<SetCounts>) -> AppState {
    let config = Config::from_toml(CONFIG).unwrap();
    let store = Arc::new(RedbStore::open(dir.join("canary.redb")).unwrap());
    let routing = Routing::new(store, ServiceEntry::from_config(&config));
    routing.sync_at_start().await.unwrap();
    let controller = Controller::new(
        routing,
        source.clone(),
        source,
        ControllerSettings {
            tick: Duration::from_secs(1),
            prometheus_url: None,
            gates: canary_controller::gates::GateSettings::default(),
        },
    );
    AppState {
        controller,
        access: Arc::new(access),
        registry: Arc::new(Registry::default()),
        listeners: Arc::new(NoListeners),
    }
}

/// Sends one request through the router as a script would (`Host: 127.0.0.1:7070`, and
/// `Content-Type: application/json` on every state change, body or not); returns the status,
/// content type and body.
#[allow(dead_code, reason = "each test binary uses its own part of the support")]
pub async fn call(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    json: Option<serde_json::Value>,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let changes = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE);
    let mut request = Request::builder().method(method).uri(path).header("host", "127.0.0.1:7070");
    if changes && json.is_none() {
        request = request.header("content-type", "application/json");
    }
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match json {
        Some(json) => {
            request = request.header("content-type", "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let response = router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, content_type, body.to_vec())
}

/// Sends `request` as it is through the router; returns the status and the body as JSON
/// (`Value::Null` when it is not JSON) with the content type.
#[allow(dead_code, reason = "each test binary uses its own part of the support")]
pub async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Option<String>, serde_json::Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, content_type, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}
