//! The dashboard end to end: a real `canary serve` with upstreams and traffic, driven in real
//! headless Chromium by `tests/browser/dashboard.test.mjs` (playwright-core), plus the live
//! feed's authentication checked from a plain WebSocket client.
//!
//! Needs Debian's `chromium` and `npm ci --prefix tests/browser`; `.ci/run` installs both.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::chromium::{browser_tools, workspace};
use support::{Gateway, Upstream, client, config};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Sends requests as 400 different users, about 60 a second, until `stop`.
fn traffic(gateway: &Gateway, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let url = gateway.url("web", "/");
    tokio::spawn(async move {
        let client = client();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let batch: Vec<_> = (0..6)
                .map(|_| {
                    n += 1;
                    let user = format!("user-{}", (n * 7919) % 400);
                    client.get(&url).header("x-user-id", user).send()
                })
                .collect();
            for request in batch {
                let _ = request.await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium_shares_one_socket_across_tabs() {
    let root = workspace();
    let chromium = browser_tools(&root);
    let stable = Upstream::start("v1").await;
    let canary = Upstream::start("v2").await;
    // No canary in the routing yet: the browser test starts rollouts of v2 itself.
    let toml = config(&stable, &canary, 0.0, "")
        .replace(&format!("canary = {{ version = \"v2\", upstreams = [\"{}\"] }}\n", canary.addr), "");
    let gateway = Gateway::start(&toml);
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&gateway, stop.clone());

    let screenshot = root.join("docs/dashboard.png");
    let artifacts = root.join("tests/browser/artifacts");
    let mut node = Command::new("node");
    node.arg("dashboard.test.mjs")
        .current_dir(root.join("tests/browser"))
        .env("CANARY_ADMIN_URL", &gateway.admin)
        .env("CANARY_CANARY_UPSTREAM", canary.addr.to_string())
        .env("CANARY_SCREENSHOT", &screenshot)
        .env("CANARY_ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium);
    let status = tokio::task::spawn_blocking(move || node.status()).await.unwrap().expect("run node");
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(status.success(), "the browser test failed ({status}); its output is above");
    assert!(screenshot.exists());
}

/// Opens the feed and says hello with `token`; returns the first message or the close code.
async fn hello(admin: &str, token: Option<&str>) -> Result<serde_json::Value, u16> {
    let url = format!("{}/api/v1/stream", admin.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket handshake");
    ws.send(Message::text(serde_json::json!({"type": "hello", "token": token}).to_string())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an answer") {
        Some(Ok(Message::Text(text))) => Ok(serde_json::from_str(&text).unwrap()),
        Some(Ok(Message::Close(Some(frame)))) => Err(frame.code.into()),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn live_feed_needs_the_token_and_a_same_origin_page() {
    let stable = Upstream::start("v1").await;
    let canary = Upstream::start("v2").await;
    let gateway = Gateway::start(
        &config(&stable, &canary, 5.0, "").replace("[gateway]", "token = \"feed-secret-token\"\n\n[gateway]"),
    );

    assert_eq!(hello(&gateway.admin, None).await.unwrap_err(), 4401);
    assert_eq!(hello(&gateway.admin, Some("wrong")).await.unwrap_err(), 4401);
    let snapshot = hello(&gateway.admin, Some("feed-secret-token")).await.unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["authRequired"], true);
    assert_eq!(snapshot["services"][0]["name"], "web");
    assert_eq!(snapshot["services"][0]["routing"]["weight"], 5.0);

    // A page on another site must not read the feed with this browser's network position.
    let mut request =
        format!("{}/api/v1/stream", gateway.admin.replace("http://", "ws://")).into_client_request().unwrap();
    request.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_err());

    // The page itself is public (it holds no data) and locked down by its CSP.
    let page = reqwest::get(format!("{}/", gateway.admin)).await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(page.text().await.unwrap().contains("/dashboard/app.js"));
    let metrics = gateway.metrics().await;
    assert!(metrics.contains("canary_admin_websocket_connections"), "{metrics}");
}
