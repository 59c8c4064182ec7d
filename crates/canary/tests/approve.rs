//! The `approve` step through a real `canary serve` process: the rollout waits at it until a
//! person approves (from the CLI, named in the event log), a rejection aborts it, and the judge
//! still rolls back a worse canary while it waits.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::traffic::Traffic;
use support::{Gateway, Upstream, run_canary};
use tokio::time::Instant;

async fn post(gateway: &Gateway, path: &str, body: Value) -> (u16, Value) {
    let url = format!("{}{path}", gateway.admin);
    let response = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn start(gateway: &Gateway, v2: &Upstream, steps: &str, analysis: Value) {
    let body = json!({"version": "v2", "upstreams": [v2.addr.to_string()], "steps": steps, "analysis": analysis});
    let (status, body) = post(gateway, "/api/v1/services/web/rollouts", body).await;
    assert_eq!(status, 200, "{body}");
}

/// Polls the rollout until `phase` or `limit`; returns the last view.
async fn wait_for_phase(gateway: &Gateway, phase: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (_, body) = gateway.get("/api/v1/services/web/rollout").await;
        if body["data"]["phase"] == phase || Instant::now() > deadline {
            return body["data"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn events(gateway: &Gateway) -> Vec<Value> {
    let (_, body) = gateway.get("/api/v1/services/web/events").await;
    body["data"].as_array().unwrap().clone()
}

fn dry_run() -> Value {
    json!({"observe": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approve_step_waits_until_a_person_approves() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&support::stable_only_config(&v1, ""));
    start(&gateway, &v2, "10%/300ms,approve,50%/300ms,100%", dry_run()).await;
    let waiting = wait_for_phase(&gateway, "awaitingApproval", Duration::from_secs(10)).await;
    assert_eq!(waiting["phase"], "awaitingApproval", "{waiting}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, still) = gateway.get("/api/v1/services/web/rollout").await;
    assert_eq!((still["data"]["phase"].as_str(), still["data"]["step"].as_u64()), (Some("awaitingApproval"), Some(0)));
    assert_eq!(still["data"]["weight"], 10.0, "it waits at its step's weight");
    assert_eq!(still["data"]["steps"][0]["approve"], true);

    let status = run_canary(&["rollout", "status", "web", "--admin", &gateway.admin]).await;
    assert_eq!(status.code, Some(0), "{status:?}");
    assert!(status.stdout.contains("waiting for approval at 10%"), "{}", status.stdout);
    assert!(status.stdout.contains("10%/300ms ✓ → [approve] → 50%/300ms"), "{}", status.stdout);

    let approved = run_canary(&[
        "rollout",
        "approve",
        "web",
        "--reason",
        "dashboards look fine",
        "--by",
        "alice",
        "--admin",
        &gateway.admin,
    ])
    .await;
    assert_eq!(approved.code, Some(0), "{approved:?}");
    let done = wait_for_phase(&gateway, "promoted", Duration::from_secs(10)).await;
    assert_eq!(done["phase"], "promoted", "{done}");

    let log = events(&gateway).await;
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["begin", "await_approval", "approve", "advance", "advance"]);
    let approval = &log[2];
    assert_eq!(approval["by"], "alice (no token, 127.0.0.1)", "{approval}");
    assert_eq!(approval["reason"], "dashboards look fine");
    assert!(approval["message"].as_str().unwrap().starts_with("approved by alice"), "{approval}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_aborts_and_approvals_need_a_waiting_rollout() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&support::stable_only_config(&v1, ""));
    start(&gateway, &v2, "10%/1h,approve,100%", dry_run()).await;
    let (status, refused) = post(&gateway, "/api/v1/services/web/rollout/approve", json!({})).await;
    assert_eq!((status, refused["code"].as_str()), (409, Some("FAILED_PRECONDITION")), "{refused}");
    assert!(refused["clientMessage"].as_str().unwrap().contains("approve"), "{refused}");
    let (_, abort_it) = gateway.get("/api/v1/services/web/rollout").await;
    assert_eq!(abort_it["data"]["phase"], "progressing", "a refused approval changes nothing");
    let (status, _) = post(&gateway, "/api/v1/services/web/rollout/abort", json!({"reason": "restart the test"})).await;
    assert_eq!(status, 200);

    start(&gateway, &v2, "10%/200ms,approve,100%", dry_run()).await;
    wait_for_phase(&gateway, "awaitingApproval", Duration::from_secs(10)).await;
    let (status, body) =
        post(&gateway, "/api/v1/services/web/rollout/reject", json!({"reason": "wrong build", "by": "bob"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["phase"], "aborted");
    assert_eq!(body["data"]["reason"], "rejected by bob (no token, 127.0.0.1): wrong build");
    let (_, service) = gateway.get("/api/v1/services/web").await;
    assert_eq!(service["data"]["canary"], Value::Null, "a rejected canary gets no traffic");
    let (status, body) = post(&gateway, "/api/v1/services/web/rollout/approve", json!({"by": "x".repeat(65)})).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worse_canary_is_rolled_back_while_it_waits_for_approval() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&support::stable_only_config(&v1, ""));
    let traffic = Traffic::start(gateway.addr("web"), 500, 8, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let analysis = json!({"minRequestsPerVersion": 40, "minRequestsPerStep": 10, "warmupSeconds": 0});
    start(&gateway, &v2, "30%/500ms,approve,100%", analysis).await;
    let waiting = wait_for_phase(&gateway, "awaitingApproval", Duration::from_secs(60)).await;
    assert_eq!(waiting["phase"], "awaitingApproval", "{waiting}");
    // A quarter of the canary's answers fail: too few for the breaker's floor, plenty for the judge.
    v2.fail_every(4);
    let failed = wait_for_phase(&gateway, "failed", Duration::from_secs(60)).await;
    assert_eq!(failed["phase"], "failed", "{failed}");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("error rate") && !reason.contains("breaker"), "the judge rolled it back: {reason}");
    let log = events(&gateway).await;
    let last = log.last().unwrap();
    assert_eq!((last["action"].as_str(), last["from"].as_str()), (Some("fail"), Some("awaitingApproval")), "{last}");
    traffic.stop().await;
}
