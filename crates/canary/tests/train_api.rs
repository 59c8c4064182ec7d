//! Release trains through a real `canary serve` with two services, started from the command line
//! and through the API: the members move together
//! (a step waits for the slowest member's gate, then both advance and promote), a person's
//! action on one member acts on the whole train, a member that is busy refuses the whole train,
//! and bad requests are refused with nothing started.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Gateway, Upstream};
use tokio::time::Instant;

struct Versions {
    web: (Upstream, Upstream),
    api: (Upstream, Upstream),
}

impl Versions {
    async fn start() -> Versions {
        let web = (Upstream::start("web-v1").await, Upstream::start("web-v2").await);
        let api = (Upstream::start("api-v1").await, Upstream::start("api-v2").await);
        Versions { web, api }
    }

    /// `web` and `api`; `api` has a before-step gate that passes once `go` exists.
    fn config(&self, go: &Path) -> String {
        format!(
            r#"
[admin]
listen = "127.0.0.1:0"
[gateway]
workers = 1
pin_secret = "train-test-secret"
[controller]
tick = "100ms"
[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = {{ version = "web-v1", upstreams = ["{}"] }}
[[service]]
name = "api"
listen = "127.0.0.1:0"
stable = {{ version = "api-v1", upstreams = ["{}"] }}
[[service.gate]]
name = "contract"
kind = "command"
when = "before-step"
run = "while [ ! -e {} ]; do sleep 0.1; done"
timeout = "5m"
"#,
            self.web.0.addr,
            self.api.0.addr,
            go.display()
        )
    }

    fn train(&self, steps: &str) -> Value {
        json!({
            "members": [
                {"service": "web", "version": "web-v2", "upstreams": [self.web.1.addr.to_string()]},
                {"service": "api", "version": "api-v2", "upstreams": [self.api.1.addr.to_string()]},
            ],
            "steps": steps,
            "analysis": {"observe": true},
        })
    }
}

/// Each member's (service, phase, step), in the train's order.
async fn members(gateway: &Gateway, train: &str) -> Vec<(String, String, u64)> {
    let (status, view) = gateway.get(&format!("/api/v1/trains/{train}")).await;
    assert_eq!(status, 200, "{view}");
    let members = view["data"]["members"].as_array().unwrap().iter();
    let member = |m: &Value| {
        (
            m["service"].as_str().unwrap().to_owned(),
            m["phase"].as_str().unwrap().to_owned(),
            m["step"].as_u64().unwrap(),
        )
    };
    members.map(member).collect()
}

async fn start(gateway: &Gateway, body: Value) -> String {
    let (status, started) = gateway.post("/api/v1/trains", body).await;
    assert_eq!(status, 200, "{started}");
    started["data"]["id"].as_str().unwrap().to_owned()
}

fn served_by(response: &reqwest::Response) -> String {
    response.headers().get("x-served-by").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_train_waits_for_its_slowest_member_then_advances_and_promotes_together() {
    let versions = Versions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let gateway = Gateway::start(&versions.config(&go));
    // Started from the command line, as a release pipeline would.
    let (web_v2, api_member) = (versions.web.1.addr.to_string(), format!("api=api-v2@{}", versions.api.1.addr));
    let args = ["rollout", "--admin", &gateway.admin, "start", "web", "--version", "web-v2", "--upstream", &web_v2];
    let cli =
        support::run_canary(&[&args[..], &["--with", &api_member, "--steps", "20%/1s,100%", "--observe"]].concat())
            .await;
    assert_eq!(cli.code, Some(0), "{cli:?}");
    assert!(cli.stdout.contains("over web, api"), "{}", cli.stdout);
    let train = cli.stdout.split_whitespace().nth(2).unwrap().to_owned();

    // One salt: a user is on the canary of both services or of neither.
    let client = support::client();
    let mut on_canary = 0;
    for i in 0..300 {
        let user = format!("user-{i}");
        let web = client.get(gateway.url("web", "/")).header("x-user-id", &user).send().await.unwrap();
        let api = client.get(gateway.url("api", "/")).header("x-user-id", &user).send().await.unwrap();
        let canary = served_by(&web) == "web-v2";
        assert_eq!(served_by(&api), if canary { "api-v2" } else { "api-v1" }, "{user}");
        on_canary += usize::from(canary);
    }
    assert!((25..=100).contains(&on_canary), "{on_canary} of 300 users on the canary at 20 %");

    // web's hold has long passed; api's gate still runs, so neither moves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = members(&gateway, &train).await;
    let at_first_step = |service: &str| (service.to_owned(), "progressing".to_owned(), 0);
    assert_eq!(waiting, [at_first_step("web"), at_first_step("api")]);

    std::fs::write(&go, b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = members(&gateway, &train).await;
        if now.iter().all(|(_, phase, _)| phase == "promoted") {
            break;
        }
        assert!(!now.iter().any(|(_, phase, _)| phase != "progressing" && phase != "promoted"), "{now:?}");
        assert!(Instant::now() < deadline, "the train did not promote: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (service, canary) in [("web", "web-v2"), ("api", "api-v2")] {
        let (_, view) = gateway.get(&format!("/api/v1/services/{service}")).await;
        assert_eq!(view["data"]["stable"]["version"], canary, "{view}");
        let (_, events) = gateway.get(&format!("/api/v1/services/{service}/events")).await;
        let kinds: Vec<&str> = events["data"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
        let moves: Vec<&str> = kinds.iter().copied().filter(|k| !k.starts_with("gate")).collect();
        assert_eq!(moves, ["begin", "advance", "advance"], "{service}: {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_members_action_acts_on_the_train_and_a_busy_member_refuses_it() {
    let versions = Versions::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&versions.config(&dir.path().join("go")));

    // Bad trains are refused and start nothing.
    let mut one = versions.train("50%/1h,100%");
    one["members"].as_array_mut().unwrap().pop();
    let (status, body) = gateway.post("/api/v1/trains", one).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_ARGUMENT")), "{body}");
    let mut twice = versions.train("50%/1h,100%");
    twice["members"][1]["service"] = json!("web");
    let (status, body) = gateway.post("/api/v1/trains", twice).await;
    assert!(status == 400 && body["clientMessage"].as_str().unwrap().contains("named twice"), "{body}");
    let mut unknown = versions.train("50%/1h,100%");
    unknown["members"][1]["service"] = json!("billing");
    let (status, body) = gateway.post("/api/v1/trains", unknown).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")), "{body}");

    // A member with a rollout of its own refuses the train; the other member starts nothing.
    let own = json!({"version": "api-v2", "upstreams": [versions.api.1.addr.to_string()], "steps": "50%/1h,100%"});
    let (status, body) = gateway.post("/api/v1/services/api/rollouts", own).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = gateway.post("/api/v1/trains", versions.train("50%/1h,100%")).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("ROLLOUT_IN_PROGRESS")), "{body}");
    let (status, body) = gateway.get("/api/v1/services/web/rollout").await;
    assert_eq!(status, 404, "web must not have started: {body}");
    let (status, body) = gateway.post("/api/v1/services/api/rollout/abort", json!({})).await;
    assert_eq!(status, 200, "{body}");

    let train = start(&gateway, versions.train("50%/1h,100%")).await;
    let (_, view) = gateway.get(&format!("/api/v1/trains/{train}")).await;
    for member in view["data"]["members"].as_array().unwrap() {
        assert_eq!(member["analysis"]["alpha"], 0.025, "each of two judges gets half of α 0.05: {member}");
    }
    let phases = |members: Vec<(String, String, u64)>| members.into_iter().map(|(_, p, _)| p).collect::<Vec<_>>();
    let (status, body) = gateway.post("/api/v1/services/web/rollout/pause", json!({"reason": "look"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(phases(members(&gateway, &train).await), ["paused", "paused"]);
    let (status, body) = gateway.post("/api/v1/services/api/rollout/resume", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(phases(members(&gateway, &train).await), ["progressing", "progressing"]);
    let (status, body) = gateway.post("/api/v1/services/web/rollout/abort", json!({"reason": "wrong build"})).await;
    assert_eq!(status, 200, "{body}");
    let (_, view) = gateway.get(&format!("/api/v1/trains/{train}")).await;
    let reasons: Vec<&str> =
        view["data"]["members"].as_array().unwrap().iter().map(|m| m["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["wrong build", "train member web: wrong build"], "{view}");
    assert_eq!(phases(members(&gateway, &train).await), ["aborted", "aborted"]);
    for service in ["web", "api"] {
        let (_, view) = gateway.get(&format!("/api/v1/services/{service}")).await;
        assert_eq!(view["data"]["weight"], 0.0, "{service}: {view}");
    }
    let (status, body) = gateway.get("/api/v1/trains/train-0").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")), "{body}");
}
