//! Rollbacks and open pages, through a real `canary serve`: after an abort, a page the canary
//! served still loads the chunks only the canary has and its next page load lands on stable,
//! told its version is gone; a canary the breaker tripped (erroring or dead) gets nothing after
//! the rollback; and a client without cookies keeps its version through the `x-canary-pin`
//! header. The same abort in real Chromium: `tests/browser/rollback.test.mjs`.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::app::{App, chunk_path};
use support::browser::Browser;
use support::{Gateway, Upstream, pin_of, version_of};
use tokio::time::Instant;

/// `canary serve` with one service `web` whose stable is `stable`; `service` adds lines to it.
fn app_config(stable: &App, service: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[gateway]
workers = 1
pin_secret = "end-to-end-test-secret"

[controller]
tick = "100ms"

[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = {{ version = "{}", upstreams = ["{}"] }}
{service}
"#,
        stable.version, stable.addr
    )
}

async fn post(gateway: &Gateway, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", gateway.admin))
        .header("content-type", "application/json")
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Starts a rollout of `canary` that holds at 50 % for an hour.
async fn start_rollout(gateway: &Gateway, canary: &App) {
    let body = json!({"version": canary.version, "upstreams": [canary.addr.to_string()], "steps": "50%/1h,100%"});
    let (status, body) = post(gateway, "/api/v1/services/web/rollouts", body).await;
    assert_eq!(status, 200, "{body}");
}

async fn rollout(gateway: &Gateway) -> Value {
    gateway.get("/api/v1/services/web/rollout").await.1["data"].clone()
}

/// A browser whose page came from the canary: new browsers load the page until one lands there.
async fn canary_page(client: &reqwest::Client, gateway: &Gateway) -> Browser {
    for _ in 0..64 {
        let mut browser = Browser::new();
        browser.navigate(client, &gateway.url("web", "/")).await.unwrap();
        if browser.page_version() == Some("v2") {
            return browser;
        }
    }
    panic!("no browser of 64 landed on the canary at 50 %");
}

fn gone(response: &reqwest::Response) -> bool {
    response.headers().get("x-canary-version-gone").is_some_and(|v| v == "1")
}

/// A request of an open page (a chunk, a data fetch) carrying a fixed pin cookie.
async fn page_request(client: &reqwest::Client, gateway: &Gateway, path: &str, pin: &str) -> reqwest::Response {
    let request = client
        .get(gateway.url("web", path))
        .header("cookie", format!("canary_pin={pin}"))
        .header("sec-fetch-dest", "script")
        .header("sec-fetch-mode", "cors");
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_abort_an_open_canary_page_loads_its_chunks_and_its_next_page_load_is_stable() {
    let (v1, v2) = (App::start("v1").await, App::start("v2").await);
    let gateway = Gateway::start(&app_config(&v1, r#"rollback_grace = "5m""#));
    start_rollout(&gateway, &v2).await;
    let client = support::client();
    let mut browser = canary_page(&client, &gateway).await;
    let alpha = browser.fetch(&client, &gateway.url("web", &chunk_path("v2", "alpha"))).await.unwrap();
    assert_eq!((alpha.status().as_u16(), version_of(&alpha), gone(&alpha)), (200, "v2".into(), false));

    let (status, body) = post(&gateway, "/api/v1/services/web/rollout/abort", json!({"reason": "test"})).await;
    assert_eq!((status, body["data"]["phase"].as_str()), (200, Some("aborted")), "{body}");
    let (_, service) = gateway.get("/api/v1/services/web").await;
    assert_eq!((&service["data"]["canary"], &service["data"]["retired"]), (&Value::Null, &json!("v2")), "{service}");
    // Stable's build has no such chunk: without the grace the page would get this 404.
    let beta_path = chunk_path("v2", "beta");
    let from_stable = client.get(format!("http://{}{beta_path}", v1.addr)).send().await.unwrap();
    assert_eq!(from_stable.status().as_u16(), 404);

    let v2_hits = v2.hits();
    let beta = browser.fetch(&client, &gateway.url("web", &beta_path)).await.unwrap();
    assert_eq!((beta.status().as_u16(), version_of(&beta), gone(&beta)), (200, "v2".into(), true));
    let data = browser.fetch(&client, &gateway.url("web", "/api/data.json")).await.unwrap();
    assert_eq!((version_of(&data), gone(&data)), ("v2".into(), true));
    assert_eq!(data.text().await.unwrap(), r#"{"version":"v2"}"#, "the open page's runtime data is its own version's");
    assert_eq!(v2.hits(), v2_hits + 2);
    // A write of the open page does not go to the rolled-back version.
    let pin = browser.cookie("canary_pin").unwrap().to_owned();
    let post = client
        .post(gateway.url("web", "/api/data.json"))
        .header("cookie", format!("canary_pin={pin}"))
        .header("sec-fetch-dest", "empty")
        .send()
        .await
        .unwrap();
    assert_eq!((version_of(&post), gone(&post)), ("v1".into(), true));
    assert_eq!(pin_of(&post), None, "a write leaves the open page its pin");

    // Its next page load moves the session to stable, still told the old version is gone.
    let next = browser.navigate(&client, &gateway.url("web", "/orders")).await.unwrap();
    assert_eq!((version_of(&next), gone(&next)), ("v1".into(), true));
    assert!(pin_of(&next).is_some_and(|pin| pin.contains(".v1.")), "the session is pinned to stable");
    let chunk = browser.fetch(&client, &gateway.url("web", &chunk_path("v1", "beta"))).await.unwrap();
    assert_eq!((chunk.status().as_u16(), version_of(&chunk), gone(&chunk)), (200, "v1".into(), false));
    // A new visitor never hears of the canary.
    let visitor = Browser::new().navigate(&client, &gateway.url("web", "/")).await.unwrap();
    assert_eq!((version_of(&visitor), gone(&visitor)), ("v1".into(), false));
    assert_eq!(v2.hits(), v2_hits + 2, "only the open page's two requests reached the canary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grace_window_the_rollback_moves_every_request_at_once() {
    let (v1, v2) = (App::start("v1").await, App::start("v2").await);
    let gateway = Gateway::start(&app_config(&v1, r#"rollback_grace = "0s""#));
    start_rollout(&gateway, &v2).await;
    let client = support::client();
    let browser = canary_page(&client, &gateway).await;
    let pin = browser.cookie("canary_pin").unwrap().to_owned();
    post(&gateway, "/api/v1/services/web/rollout/abort", json!({})).await;
    let (_, service) = gateway.get("/api/v1/services/web").await;
    assert_eq!(service["data"]["retired"], Value::Null, "{service}");
    let beta = page_request(&client, &gateway, &chunk_path("v2", "beta"), &pin).await;
    assert_eq!((beta.status().as_u16(), version_of(&beta)), (404, "v1".into()));
}

/// Sends the open page's data requests with its canary pin until the rollout has failed.
async fn until_rolled_back(client: &reqwest::Client, gateway: &Gateway, pin: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let view = rollout(gateway).await;
        if view["phase"] == "failed" || Instant::now() > deadline {
            return view;
        }
        for _ in 0..5 {
            page_request(client, gateway, "/api/data.json", pin).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_the_breaker_tripped_on_errors_gets_nothing_after_the_rollback() {
    let (v1, v2) = (App::start("v1").await, App::start("v2").await);
    let gateway = Gateway::start(&app_config(&v1, ""));
    start_rollout(&gateway, &v2).await;
    let client = support::client();
    let browser = canary_page(&client, &gateway).await;
    let pin = browser.cookie("canary_pin").unwrap().to_owned();
    v2.fail_with(500);
    let view = until_rolled_back(&client, &gateway, &pin).await;
    assert_eq!(view["phase"], "failed", "{view}");
    assert!(view["reason"].as_str().unwrap_or("").starts_with("local breaker tripped"), "{view}");

    let v2_hits = v2.hits();
    for path in ["/api/data.json".to_owned(), chunk_path("v2", "beta"), chunk_path("v1", "beta")] {
        for _ in 0..5 {
            let response = page_request(&client, &gateway, &path, &pin).await;
            assert_eq!(version_of(&response), "v1", "{path}");
            assert!(gone(&response), "the page still learns its version is gone");
        }
    }
    assert_eq!(v2.hits(), v2_hits, "a canary the breaker tripped gets no grace");
}

/// The sum of `canary_upstream_errors_total` of `version` in the gateway's metrics.
async fn upstream_errors(gateway: &Gateway, version: &str) -> f64 {
    let label = format!("version=\"{version}\"");
    let text = gateway.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("canary_upstream_errors_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_canary_costs_the_open_page_nothing_and_gets_nothing_after_the_rollback() {
    let (v1, v2) = (App::start("v1").await, App::start("v2").await);
    let gateway = Gateway::start(&app_config(&v1, ""));
    start_rollout(&gateway, &v2).await;
    let client = support::client();
    let browser = canary_page(&client, &gateway).await;
    let pin = browser.cookie("canary_pin").unwrap().to_owned();
    v2.stop();
    let first = page_request(&client, &gateway, "/api/data.json", &pin).await;
    assert_eq!((first.status().as_u16(), version_of(&first)), (200, "v1".into()), "re-sent to stable");
    let view = until_rolled_back(&client, &gateway, &pin).await;
    assert_eq!(view["phase"], "failed", "{view}");

    let errors = upstream_errors(&gateway, "v2").await;
    assert!(errors >= 1.0, "the dead canary was tried before the rollback");
    for _ in 0..20 {
        let response = page_request(&client, &gateway, "/api/data.json", &pin).await;
        assert_eq!((response.status().as_u16(), version_of(&response)), (200, "v1".into()));
    }
    assert_eq!(upstream_errors(&gateway, "v2").await, errors, "no connection to the dead canary after the rollback");
}

fn pin_header(response: &reqwest::Response) -> Option<String> {
    response.headers().get("x-canary-pin").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_cookies_keeps_its_version_through_the_pin_header() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&support::config(&v1, &v2, 50.0, ""));
    let client = support::client();
    // No cookies and no user key: every request is a new anonymous user, spread by the weight.
    let mut pins = std::collections::HashMap::new();
    for _ in 0..64 {
        let response = client.get(gateway.url("web", "/")).send().await.unwrap();
        let pin = pin_header(&response).expect("an issued pin comes as a header too");
        assert_eq!(Some(&pin), pin_of(&response).as_ref(), "the header holds the cookie's token");
        pins.insert(version_of(&response), pin);
    }
    let (Some(canary_pin), Some(stable_pin)) = (pins.get("v2"), pins.get("v1")) else {
        panic!("64 anonymous requests at 50 % all landed on one version: {pins:?}");
    };
    for _ in 0..20 {
        let response = client.get(gateway.url("web", "/")).header("x-canary-pin", canary_pin).send().await.unwrap();
        assert_eq!(version_of(&response), "v2", "the header pin holds the client on the canary");
    }
    let stable = client.get(gateway.url("web", "/")).header("x-canary-pin", stable_pin).send().await.unwrap();
    assert_eq!(version_of(&stable), "v1");
    // A tampered token is no pin: the client is spread like any other again.
    let tampered = canary_pin.replace(".v2.", ".v1.");
    let mut versions = std::collections::HashSet::new();
    for _ in 0..32 {
        let response = client.get(gateway.url("web", "/")).header("x-canary-pin", &tampered).send().await.unwrap();
        versions.insert(version_of(&response));
    }
    assert_eq!(versions.len(), 2, "a forged pin header chose nothing: {versions:?}");
    // Where both come, the cookie wins.
    let both = client
        .get(gateway.url("web", "/"))
        .header("x-canary-pin", canary_pin)
        .header("cookie", format!("canary_pin={stable_pin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(version_of(&both), "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_an_open_canary_page_opens_its_lazy_chunks_after_an_abort() {
    let root = support::chromium::workspace();
    let chromium = support::chromium::browser_tools(&root);
    let (v1, v2) = (App::start("v1").await, App::start("v2").await);
    let gateway = Gateway::start(&app_config(&v1, ""));
    start_rollout(&gateway, &v2).await;
    let mut node = Command::new("node");
    node.arg("rollback.test.mjs")
        .current_dir(root.join("tests/browser"))
        .env("CANARY_ADMIN_URL", &gateway.admin)
        .env("CANARY_SERVICE_URL", gateway.url("web", ""))
        .env("CHROMIUM", &chromium);
    let status = tokio::task::spawn_blocking(move || node.status()).await.unwrap().expect("run node");
    assert!(status.success(), "the browser test failed ({status}); its output is above");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_canary_that_fails_in_its_grace_window_is_tripped_and_gets_nothing_more() {
    let (v1, v2) = (App::start("v1").await, App::start("v2").await);
    let gateway = Gateway::start(&app_config(&v1, ""));
    start_rollout(&gateway, &v2).await;
    let client = support::client();
    let browser = canary_page(&client, &gateway).await;
    let pin = browser.cookie("canary_pin").unwrap().to_owned();
    post(&gateway, "/api/v1/services/web/rollout/abort", json!({})).await;
    let data = page_request(&client, &gateway, "/api/data.json", &pin).await;
    assert_eq!(version_of(&data), "v2", "the open page is in its grace window");

    v2.fail_with(500);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served_by = String::new();
    while served_by != "v1" && Instant::now() < deadline {
        served_by = version_of(&page_request(&client, &gateway, "/api/data.json", &pin).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served_by, "v1", "the breaker never tripped the failing retired canary");
    let v2_hits = v2.hits();
    for _ in 0..10 {
        let response = page_request(&client, &gateway, "/api/data.json", &pin).await;
        assert_eq!((response.status().as_u16(), version_of(&response)), (200, "v1".into()));
    }
    assert_eq!(v2.hits(), v2_hits, "nothing more reaches it");
}
