//! A release train over two services behind two gateways, on real infrastructure (etcd for the
//! store, Prometheus for the judge's counts): users reach `web` through one gateway, `web`'s app
//! calls `api` through the other, passing on `x-canary-cohort` and nothing of the user's. Every
//! user is on the same side of both services; the call carries the cohort (without it, the calls
//! scatter); and a failing `api` canary rolls back both.

#[path = "../../store/tests/support/etcd_server.rs"]
#[allow(dead_code)]
mod etcd_server;
mod support;

use std::time::Duration;

use etcd_server::EtcdServer;
use serde_json::json;
use support::chain::ChainApp;
use support::prometheus::Prometheus;
use support::{Gateway, Upstream};
use tokio::time::Instant;

/// Both services on one node of the fleet; `web`'s stable is the calling app.
fn node_config(etcd: &str, prometheus: &str, web: &ChainApp, api: &Upstream) -> String {
    format!(
        r#"{}
[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = {{ version = "{}", upstreams = ["{}"] }}
[[service]]
name = "api"
listen = "127.0.0.1:0"
stable = {{ version = "{}", upstreams = ["{}"] }}
"#,
        support::fleet::node_head(etcd, prometheus),
        web.version,
        web.addr,
        api.version,
        api.addr
    )
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// What one user's page load met: the web version, the api version its call reached, and
/// whether that call carried a cohort token when it arrived.
async fn visit(client: &reqwest::Client, edge: &Gateway, user: &str, path: &str) -> (String, String, bool) {
    let response = client.get(edge.url("web", path)).header("x-user-id", user).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "{user} {path}");
    let called_saw_cohort = !header(&response, "x-called-saw-cohort").is_empty();
    (header(&response, "x-served-by"), header(&response, "x-called-served-by"), called_saw_cohort)
}

async fn wait_for_leader(controller: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !controller.metrics().await.lines().any(|l| l == "canary_controller_leading 1") {
        assert!(Instant::now() < deadline, "the controller did not lead");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `gateway` routes `service` to a canary at `weight` %.
async fn wait_for_weight(gateway: &Gateway, service: &str, weight: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = gateway.get(&format!("/api/v1/services/{service}")).await;
        if body["data"]["weight"].as_f64() == Some(weight) {
            return;
        }
        assert!(Instant::now() < deadline, "{service} never reached {weight} % here: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_train_keeps_each_user_on_one_side_of_both_services_and_a_failing_member_rolls_back_both() {
    let (web_v1, web_v2) = (ChainApp::start("web-v1").await, ChainApp::start("web-v2").await);
    let (api_v1, api_v2) = (Upstream::start("api-v1").await, Upstream::start("api-v2").await);
    let etcd = EtcdServer::start().await;
    let gateway_config = node_config(&etcd.endpoint(), "http://127.0.0.1:9", &web_v1, &api_v1);
    let edge = Gateway::start_role(&gateway_config, "gateway");
    let inner = Gateway::start_role(&gateway_config, "gateway");
    for app in [&web_v1, &web_v2] {
        app.call_through(inner.addr("api"));
    }
    let targets: Vec<String> =
        [&edge, &inner].iter().map(|g| g.admin.trim_start_matches("http://").to_owned()).collect();
    let prometheus = Prometheus::start(&targets).await;
    let controller =
        Gateway::start_role(&node_config(&etcd.endpoint(), &prometheus.url, &web_v1, &api_v1), "controller");
    wait_for_leader(&controller).await;

    let members = json!([
        {"service": "web", "version": web_v2.version, "upstreams": [web_v2.addr.to_string()]},
        {"service": "api", "version": api_v2.version, "upstreams": [api_v2.addr.to_string()]},
    ]);
    let body = json!({"members": members, "steps": "50%/1h,100%"});
    let (status, started) = controller.post("/api/v1/trains", body).await;
    assert_eq!(status, 200, "{started}");
    let train = started["data"]["id"].as_str().unwrap().to_owned();
    let phases: Vec<&str> =
        started["data"]["members"].as_array().unwrap().iter().map(|m| m["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["progressing", "progressing"], "{started}");
    for gateway in [&edge, &inner] {
        wait_for_weight(gateway, "web", 50.0).await;
        wait_for_weight(gateway, "api", 50.0).await;
    }

    // Every user's call chain stays on one side; the direct bucket rule agrees on both services.
    let client = support::client();
    let mut on_canary = 0;
    for i in 0..200 {
        let user = format!("user-{i}");
        let (web, api, carried) = visit(&client, &edge, &user, "/").await;
        assert!(carried, "{user}: the call to api arrived without a cohort token");
        let canary = web == "web-v2";
        assert_eq!(api, if canary { "api-v2" } else { "api-v1" }, "{user}: web {web} called api {api}");
        let direct = client.get(inner.url("api", "/")).header("x-user-id", &user).send().await.unwrap();
        assert_eq!(
            header(&direct, "x-served-by"),
            api,
            "{user}: the train's salt puts the user on one side of api too"
        );
        on_canary += usize::from(canary);
    }
    assert!((60..=140).contains(&on_canary), "{on_canary} of 200 users on the canary at 50 %");
    // The control: an app that does not pass the header on scatters its users' calls.
    let mut split = 0;
    for i in 0..200 {
        let (web, api, _) = visit(&client, &edge, &format!("user-{i}"), "/nopass").await;
        split += usize::from((web == "web-v2") != (api == "api-v2"));
    }
    assert!(split > 20, "without the cohort only {split} of 200 chains split: the test shows nothing");

    // A failing api canary rolls back the whole train.
    api_v2.fail_with(500);
    let deadline = Instant::now() + Duration::from_secs(60);
    let view = loop {
        for i in 0..50 {
            let _ = visit(&client, &edge, &format!("user-{i}"), "/").await;
        }
        let (_, view) = controller.get(&format!("/api/v1/trains/{train}")).await;
        let members = view["data"]["members"].as_array().cloned().unwrap_or_default();
        if members.iter().all(|m| m["phase"] == "failed") && members.len() == 2 {
            break view;
        }
        assert!(Instant::now() < deadline, "the train did not roll back: {view}");
    };
    let reasons: Vec<&str> =
        view["data"]["members"].as_array().unwrap().iter().map(|m| m["reason"].as_str().unwrap_or("")).collect();
    assert!(reasons[0].starts_with("train member api: "), "web rolled back for api's failure: {reasons:?}");
    assert!(!reasons[1].starts_with("train member"), "api rolled back on its own evidence: {reasons:?}");
    for gateway in [&edge, &inner] {
        wait_for_weight(gateway, "web", 0.0).await;
        wait_for_weight(gateway, "api", 0.0).await;
    }
    for i in 0..50 {
        let (web, api, _) = visit(&client, &edge, &format!("user-{i}"), "/").await;
        assert_eq!((web.as_str(), api.as_str()), ("web-v1", "api-v1"), "user-{i} after the rollback");
    }
    drop(prometheus);
}
