//! Several nodes on real infrastructure: three gateways and two controllers sharing one real
//! etcd, the judge reading a real Prometheus that scrapes the three gateways.

#[path = "../../store/tests/support/etcd_server.rs"]
#[allow(dead_code)]
mod etcd_server;
mod support;

use std::time::Duration;

use etcd_server::EtcdServer;
use serde_json::{Value, json};
use support::prometheus::Prometheus;
use support::traffic::Traffic;
use support::{Gateway, Upstream};
use tokio::time::Instant;

struct Cluster {
    etcd: EtcdServer,
    gateways: Vec<Gateway>,
    controllers: Vec<Gateway>,
    prometheus: Prometheus,
}

fn node_config(etcd: &str, prometheus: &str, stable: &Upstream, canary: Option<&Upstream>) -> String {
    let canary = canary
        .map_or(String::new(), |c| format!("canary = {{ version = \"{}\", upstreams = [\"{}\"] }}", c.version, c.addr));
    support::fleet::node_config(etcd, prometheus, stable, &format!("{canary}\nbreaker = {{ enabled = false }}"))
}

impl Cluster {
    async fn start(stable: &Upstream, canary: Option<&Upstream>) -> Cluster {
        let etcd = EtcdServer::start().await;
        // Prometheus needs the gateways' addresses and the controllers need Prometheus's, so the
        // gateways start first with a placeholder URL they never use.
        let gateway_config = node_config(&etcd.endpoint(), "http://127.0.0.1:9", stable, canary);
        let gateways: Vec<Gateway> = (0..3).map(|_| Gateway::start_role(&gateway_config, "gateway")).collect();
        let targets: Vec<String> = gateways.iter().map(|g| g.admin.trim_start_matches("http://").to_owned()).collect();
        let prometheus = Prometheus::start(&targets).await;
        let controller_config = node_config(&etcd.endpoint(), &prometheus.url, stable, canary);
        let controllers = (0..2).map(|_| Gateway::start_role(&controller_config, "controller")).collect();
        let cluster = Cluster { etcd, gateways, controllers, prometheus };
        cluster.wait_for_leader(Duration::from_secs(20)).await;
        cluster
    }

    async fn leader(&self) -> Option<usize> {
        for (i, c) in self.controllers.iter().enumerate() {
            if c.child_alive() && c.metrics().await.lines().any(|l| l == "canary_controller_leading 1") {
                return Some(i);
            }
        }
        None
    }

    async fn wait_for_leader(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.leader().await {
                return i;
            }
            assert!(Instant::now() < deadline, "no controller became leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Users sending requests through every gateway, each user to one gateway only.
    fn traffic(&self, users_per_gateway: usize, lanes: usize, pause: Duration) -> Vec<Traffic> {
        self.gateways
            .iter()
            .enumerate()
            .map(|(i, g)| Traffic::start_as(&format!("g{i}-user"), g.addr("web"), users_per_gateway, lanes, pause))
            .collect()
    }
}

async fn post(node: &Gateway, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new().post(format!("{}{path}", node.admin)).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn rollout(node: &Gateway) -> Value {
    node.get("/api/v1/services/web/rollout").await.1["data"].clone()
}

fn phase(view: &Value) -> &str {
    view["phase"].as_str().unwrap_or("")
}

async fn events(node: &Gateway) -> Vec<Value> {
    node.get("/api/v1/services/web/events?limit=1000").await.1["data"].as_array().cloned().unwrap_or_default()
}

fn assert_each_transition_once(events: &[Value]) {
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "a transition was lost or applied twice: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_reach_all_three_gateways() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let cluster = Cluster::start(&v1, Some(&v2)).await;
    let client = reqwest::Client::new();
    let mut delays = Vec::new();
    for i in 0..40 {
        let weight = [10.0, 25.5, 50.0, 0.0][i % 4];
        let controller = &cluster.controllers[i % 2];
        let sent = Instant::now();
        let (status, body) = controller.put("/api/v1/services/web/weight", json!({ "weight": weight })).await;
        assert_eq!(status, 200, "{body}");
        let generation = body["data"]["generation"].as_u64().unwrap();
        for gateway in &cluster.gateways {
            loop {
                let view: Value = client
                    .get(format!("{}/api/v1/services/web", gateway.admin))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if view["data"]["generation"].as_u64() >= Some(generation) {
                    assert_eq!(view["data"]["weight"], weight);
                    break;
                }
                assert!(sent.elapsed() < Duration::from_secs(10), "gateway never got generation {generation}");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        delays.push(sent.elapsed());
    }
    delays.sort();
    let p50 = delays[delays.len() / 2];
    let p99 = delays[delays.len() * 99 / 100];
    println!(
        "weight propagation to 3 gateways (API call to all applied): p50 {p50:?}, p99 {p99:?}, max {:?}",
        delays.last().unwrap()
    );
    assert!(p99 < Duration::from_secs(2), "propagation p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_runs_once_and_the_other_controller_finishes_it_when_the_leader_dies() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let mut cluster = Cluster::start(&v1, None).await;
    let traffic: Vec<Traffic> = cluster.traffic(1000, 3, Duration::from_millis(5));
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = 1 - leader;
    let body = json!({
        "version": "v2", "upstreams": [v2.addr.to_string()],
        "steps": "10%/3s,30%/3s,60%/3s,100%",
        "analysis": {"minRequestsPerVersion": 30, "minRequestsPerStep": 10},
    });
    // Started through the controller that does not lead: the leader picks it up.
    let (status, answer) = post(&cluster.controllers[follower], "/api/v1/services/web/rollouts", body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post(&cluster.controllers[leader], "/api/v1/services/web/rollouts", body).await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("ROLLOUT_IN_PROGRESS")), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = rollout(&cluster.controllers[follower]).await;
        if view["step"].as_u64() >= Some(1) {
            break;
        }
        assert!(phase(&view) == "progressing" && Instant::now() < deadline, "never reached step 2: {view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leading = [
        cluster.controllers[0].metrics().await.lines().any(|l| l == "canary_controller_leading 1"),
        cluster.controllers[1].metrics().await.lines().any(|l| l == "canary_controller_leading 1"),
    ];
    assert_eq!(leading.iter().filter(|l| **l).count(), 1, "exactly one controller leads: {leading:?}");
    cluster.controllers[leader].kill9();
    let killed = Instant::now();
    let new_leader = cluster.wait_for_leader(Duration::from_secs(15)).await;
    assert_eq!(new_leader, follower);
    println!("leadership moved {:?} after the leader was killed", killed.elapsed());
    let deadline = Instant::now() + Duration::from_secs(90);
    let view = loop {
        let view = rollout(&cluster.controllers[follower]).await;
        if matches!(phase(&view), "promoted" | "failed" | "aborted" | "paused") || Instant::now() > deadline {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(phase(&view), "promoted", "{view}");
    let log = events(&cluster.controllers[follower]).await;
    assert_each_transition_once(&log);
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["begin", "advance", "advance", "advance", "advance"]);
    for t in traffic {
        assert_eq!(t.failed(), 0);
        t.stop().await;
    }
    for gateway in &cluster.gateways {
        let (_, view) = gateway.get("/api/v1/services/web").await;
        assert_eq!(view["data"]["stable"]["version"], "v2", "{view}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_for_a_minute_fails_no_request_and_advances_no_step() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let mut cluster = Cluster::start(&v1, None).await;
    let traffic: Vec<Traffic> = cluster.traffic(1000, 3, Duration::from_millis(5));
    let controller = &cluster.controllers[0];
    let body = json!({
        "version": "v2", "upstreams": [v2.addr.to_string()],
        "steps": "20%/3s,50%/3s,100%",
        "analysis": {"minRequestsPerVersion": 30, "minRequestsPerStep": 10},
    });
    let (status, answer) = post(controller, "/api/v1/services/web/rollouts", body).await;
    assert_eq!(status, 200, "{answer}");
    let before = rollout(controller).await;
    cluster.etcd.kill();
    let outage = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    for gateway in &cluster.gateways {
        let ready = support::client().get(format!("{}/readyz", gateway.admin)).send().await.unwrap();
        assert_eq!(ready.status(), 200, "a gateway stopped being ready while it can still serve");
        let text = ready.text().await.unwrap();
        assert!(text.contains("unreachable"), "{text}");
        assert!(gateway.metrics().await.contains("canary_store_up 0"));
    }
    while outage.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let failed: u64 = traffic.iter().map(|t| t.failed()).sum();
    let sent: u64 = traffic.iter().map(|t| t.sent()).sum();
    assert_eq!(failed, 0, "{failed} of {sent} requests failed while etcd was down");
    cluster.etcd.restart().await;
    let after_outage = rollout(controller).await;
    assert_eq!(after_outage["step"], before["step"], "a step advanced while the store was down");
    assert_eq!(after_outage["transitions"], before["transitions"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let view = loop {
        let view = rollout(controller).await;
        if phase(&view) == "promoted" || Instant::now() > deadline {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(phase(&view), "promoted", "the rollout did not resume after etcd came back: {view}");
    assert_each_transition_once(&events(controller).await);
    for t in traffic {
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_judge_reads_prometheus_and_rolls_back_an_erroring_canary() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let cluster = Cluster::start(&v1, None).await;
    let traffic: Vec<Traffic> = cluster.traffic(1000, 3, Duration::from_millis(5));
    let body = json!({
        "version": "v2", "upstreams": [v2.addr.to_string()],
        "steps": "30%/1m,100%",
        "analysis": {"minRequestsPerVersion": 50, "minRequestsPerStep": 10},
    });
    let (status, answer) = post(&cluster.controllers[0], "/api/v1/services/web/rollouts", body).await;
    assert_eq!(status, 200, "{answer}");
    // One canary answer in eight fails; the breakers are off, so only the judge can act.
    v2.fail_every(8);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let view = loop {
        let view = rollout(&cluster.controllers[0]).await;
        if phase(&view) != "progressing" || Instant::now() > deadline {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(phase(&view), "failed", "{view}");
    assert!(view["reason"].as_str().unwrap().contains("error rate"), "{view}");
    println!("rolled back {:?} after the start from Prometheus data: {}", started.elapsed(), view["reason"]);
    for gateway in &cluster.gateways {
        let (_, service) = gateway.get("/api/v1/services/web").await;
        assert_eq!(service["data"]["canary"], Value::Null);
    }
    let _ = &cluster.prometheus;
    for t in traffic {
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_s_dashboard_charts_the_whole_fleet_from_prometheus() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let v1 = Upstream::start("v1").await;
    let cluster = Cluster::start(&v1, None).await;
    let traffic: Vec<Traffic> = cluster.traffic(300, 2, Duration::from_millis(10));
    let admin = cluster.controllers[0].admin.trim_start_matches("http://").to_owned();
    let (mut feed, _) = tokio_tungstenite::connect_async(format!("ws://{admin}/api/v1/stream")).await.unwrap();
    feed.send(Message::text(json!({"type": "hello", "token": null}).to_string())).await.unwrap();
    // The controller serves no traffic itself: every request it charts came through Prometheus.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut charted = 0.0;
    while charted == 0.0 {
        assert!(Instant::now() < deadline, "the controller's feed never showed the gateways' traffic");
        let Some(Ok(Message::Text(text))) = feed.next().await else { continue };
        let message: Value = serde_json::from_str(text.as_str()).unwrap();
        if message["type"] == "metrics" {
            charted = message["points"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["version"] == "v1")
                .map(|p| p["rps"].as_f64().unwrap_or(0.0))
                .sum();
        }
    }
    assert!(charted > 0.0);
    for t in traffic {
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_logs_in_to_etcd_as_its_user_and_says_so_when_it_cannot() {
    let etcd = EtcdServer::start().await;
    etcd.enable_auth("canary", "etcd-password-of-canary").await;
    let stable = Upstream::start("v1").await;
    let canary = Upstream::start("v2").await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("etcd-password");
    std::fs::write(&password_file, "etcd-password-of-canary\n").unwrap();
    let config = node_config(&etcd.endpoint(), "http://127.0.0.1:9", &stable, Some(&canary));
    let login =
        format!("kind = \"etcd\"\nusername = \"canary\"\npassword_file = {:?}", password_file.display().to_string());

    let node = Gateway::start(&config.replace("kind = \"etcd\"", &login));
    node.set_weight("web", 100.0).await;
    let served = support::client().get(node.url("web", "/")).send().await.unwrap();
    assert_eq!(support::version_of(&served), "v2", "the weight written to etcd reached the gateway");

    let anonymous = run_serve(&config);
    assert!(!anonymous.status.success(), "a node without credentials must not start on an etcd that wants them");
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert!(stderr.contains("set [store] username and password"), "{stderr}");
}

/// Runs `canary serve` to its end (it is expected to fail at start), at most 30 s.
fn run_serve(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_under_load_leaves_the_others_serving_and_following() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let mut cluster = Cluster::start(&v1, Some(&v2)).await;
    let traffic = cluster.traffic(20, 4, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<u64> = traffic.iter().map(Traffic::sent).collect();
    cluster.gateways[0].kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = cluster.controllers[0].put("/api/v1/services/web/weight", json!({ "weight": 100.0 })).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent: Vec<u64> = traffic.iter().map(Traffic::sent).collect();
    let failed: Vec<u64> = traffic.iter().map(Traffic::failed).collect();
    println!(
        "gateway kill -9 under load: requests sent per gateway before {before:?}, in all {sent:?}; failed {failed:?}"
    );
    assert!(failed[0] > 0, "the killed gateway's clients saw it go: {failed:?}");
    assert_eq!(&failed[1..], &[0, 0], "the other gateways failed no request");
    for (i, lane) in traffic.iter().enumerate().skip(1) {
        assert!(sent[i] > before[i] + 50, "gateway {i} kept serving: {sent:?}");
        assert!(lane.answered_by("v2") > 0, "gateway {i} followed the weight change made after the kill");
    }
    for lane in traffic {
        lane.stop().await;
    }
}
