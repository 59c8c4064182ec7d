//! The team's own metrics through the real system: a `canary serve` whose gateway a real
//! Prometheus scrapes, rollouts judged by PromQL queries over the gateway's own exported
//! counters (`canary_requests_total` by status class), and the controller asking that
//! Prometheus every tick.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::prometheus::Prometheus;
use support::traffic::Traffic;
use support::{Gateway, Upstream, run_canary};
use tokio::time::Instant;

/// A checkout success ratio from the gateway's counters: answers in `2xx` out of all answers.
/// The canary of these tests turns some users away with a `422`, which the built-in error
/// metric does not count (it is not a 5xx): only the team's own metric can see it.
const CHECKOUT_SUCCESS: &str = r#"
[[service.metric]]
name = "checkout_success"
kind = "ratio"
direction = "higher-is-better"
events = 'sum(canary_requests_total{service="{service}",version="{version}",code_class="2xx"})'
trials = 'sum(canary_requests_total{service="{service}",version="{version}"})'
prometheus = "PROMETHEUS"
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `canary serve` on a fixed admin port (so a restarted process is scraped at the same
/// address) and the real Prometheus scraping it every second.
struct Setup {
    // Dropped first: the controller never outlives the Prometheus it asks.
    serve: Gateway,
    prometheus: Prometheus,
}

impl Setup {
    async fn start(stable: &Upstream, metrics: &str) -> Setup {
        let admin = free_port();
        let prometheus = Prometheus::start(&[format!("127.0.0.1:{admin}")]).await;
        let config = format!(
            r#"
[admin]
listen = "127.0.0.1:{admin}"
[gateway]
workers = 1
pin_secret = "team-metrics-test-secret"
[controller]
tick = "200ms"
[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = {{ version = "v1", upstreams = ["{}"] }}
breaker = {{ enabled = false }}
{}"#,
            stable.addr,
            metrics.replace("PROMETHEUS", &prometheus.url)
        );
        Setup { serve: Gateway::start(&config), prometheus }
    }

    async fn start_rollout(&self, body: Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/services/web/rollouts", self.serve.admin))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    async fn rollout(&self) -> Value {
        self.serve.get("/api/v1/services/web/rollout").await.1["data"].clone()
    }

    /// The rollout view once `done` holds for it, failing the test after `limit`.
    async fn wait_for(&self, limit: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let view = self.rollout().await;
            if done(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "{what} within {limit:?}: {view}\n{}", self.prometheus.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The verdict of the team metric `name` in a rollout view, if the judge has shown one.
fn team_verdict<'a>(view: &'a Value, name: &str) -> Option<&'a Value> {
    view["judge"]["verdicts"].as_array()?.iter().find(|v| v["team"]["name"] == name)
}

fn phase(view: &Value) -> &str {
    view["phase"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_worse_on_the_team_metric_is_rolled_back_naming_it() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let setup = Setup::start(&v1, CHECKOUT_SUCCESS).await;
    let traffic = Traffic::start(setup.serve.addr("web"), 500, 4, Duration::from_millis(5));
    v1.reject_every(100);
    v2.reject_every(8);
    setup
        .start_rollout(json!({
            "version": "v2", "upstreams": [v2.addr.to_string()], "steps": "50%/5m,100%",
            "analysis": {"minRequestsPerVersion": 50, "minRequestsPerStep": 10, "minRequestsForRollback": 50},
        }))
        .await;
    let started = Instant::now();
    let seen = setup
        .wait_for(Duration::from_secs(30), "the team metric's verdict shown", |v| {
            team_verdict(v, "checkout_success").is_some_and(|t| t["canary"]["requests"].as_u64() > Some(0))
                || phase(v) != "progressing"
        })
        .await;
    if phase(&seen) == "progressing" {
        // Shown beside the built-in metrics: in the CLI's status and in the verdict gauges.
        let status = run_canary(&["rollout", "status", "web", "--admin", &setup.serve.admin]).await;
        assert!(status.stdout.lines().any(|l| l.trim_start().starts_with("checkout_success")), "{status:?}");
        let metrics = setup.serve.metrics().await;
        assert!(
            metrics.lines().any(|l| l.starts_with("canary_judge_e_value") && l.contains("metric=\"checkout_success\""))
        );
    }
    let view = setup.wait_for(Duration::from_secs(60), "rolled back", |v| phase(v) != "progressing").await;
    let reason = view["reason"].as_str().unwrap_or("");
    assert_eq!(phase(&view), "failed", "{view}");
    assert!(reason.starts_with("team metric checkout_success: canary misses"), "{reason}");
    println!("rolled back {:?} after the start by the team metric: {reason}", started.elapsed());
    let (_, service) = setup.serve.get("/api/v1/services/web").await;
    assert_eq!(service["data"]["canary"], Value::Null, "everyone is back on stable");
    traffic.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_metric_without_data_pauses_the_rollout_naming_it_and_never_rolls_back() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let setup = Setup::start(&v1, "").await;
    let traffic = Traffic::start(setup.serve.addr("web"), 500, 4, Duration::from_millis(5));
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let observed = json!({"worseAbove": 1.25, "safeBelow": 2.0, "observe": true});
    setup
        .start_rollout(json!({
            "version": "v2", "upstreams": [v2.addr.to_string()], "steps": "20%/2s,100%", "maxStepWait": "3s",
            "analysis": {
                "minRequestsPerVersion": 20, "minRequestsPerStep": 10,
                // The built-in metrics only observe, so nothing but the team metrics holds the step.
                "tolerances": {"errors": observed, "latencyTail": observed, "latencyQuantiles": observed},
                "teamMetrics": [
                    {
                        "name": "checkout_failures", "kind": "ratio", "direction": "lower-is-better",
                        "events": "sum(shop_checkouts_total{version=\"{version}\",outcome=\"failed\"})",
                        "trials": "sum(shop_checkouts_total{version=\"{version}\"})",
                        "prometheus": setup.prometheus.url,
                    },
                    {
                        "name": "checkout_p99", "kind": "value", "direction": "lower-is-better", "margin": 0.2,
                        "query": "max(shop_checkout_p99_seconds{version=\"{version}\"})", "prometheus": unreachable,
                    },
                ],
            },
        }))
        .await;
    let view = setup.wait_for(Duration::from_secs(40), "paused", |v| phase(v) != "progressing").await;
    assert_eq!(phase(&view), "paused", "no data never rolls back: {view}");
    let reason = view["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("no data from team metric checkout_failures (the canary's events: the query returned nothing)"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!(
            "no data from team metric checkout_p99 (the canary's value: Prometheus at {unreachable} is unreachable"
        )),
        "{reason}"
    );
    let (_, events) = setup.serve.get("/api/v1/services/web/events").await;
    let actions: Vec<&str> = events["data"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["begin", "pause"], "the step never advanced and nothing rolled back");
    traffic.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_team_metrics_evidence_survives_a_kill_and_restart() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let mut setup = Setup::start(&v1, CHECKOUT_SUCCESS).await;
    let traffic = Traffic::start(setup.serve.addr("web"), 500, 4, Duration::from_millis(5));
    setup.start_rollout(json!({"version": "v2", "upstreams": [v2.addr.to_string()], "steps": "50%/10m,100%"})).await;
    let trials = |v: &Value| team_verdict(v, "checkout_success").and_then(|t| t["canary"]["requests"].as_u64());
    let before = setup.wait_for(Duration::from_secs(40), "300 canary trials counted", |v| trials(v) >= Some(300)).await;
    let counted = trials(&before).unwrap();
    setup.serve.restart();
    traffic.retarget(setup.serve.addr("web"));
    let after = setup.wait_for(Duration::from_secs(30), "the judge back", |v| trials(v).is_some()).await;
    // A judge that started over would count from zero: the gateway's counters restarted too.
    assert!(trials(&after).unwrap() >= counted, "{counted} canary trials before, {after}");
    assert_eq!(phase(&after), "progressing");
    traffic.stop().await;
}
