//! Release gates through a real `canary serve`: a Playwright-driven browser suite of 30 tests,
//! sharded 3 ways, gating a step on the canary; a broken page rolling back or pausing with the
//! failed test named in `canary rollout status`; an http gate against a local receiver (pass,
//! fail, timeout, signature); an abort killing a running gate's processes; an after-rollback
//! hook; a before-start gate reaching the canary at weight 0; and bad gate config refused.
//!
//! The browser tests need Debian's `chromium` and `npm ci --prefix tests/browser`, like the
//! dashboard test; `.ci/run` installs both.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use support::{CliOutput, Gateway, Upstream, run_canary};
use tokio::time::Instant;

/// Browser suites take both cores: one at a time.
static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The example suite's runner, or a panic that says what to install.
fn suite() -> PathBuf {
    let root = workspace();
    let chromium = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(chromium.exists(), "{} is missing: install Debian's chromium (or set CHROMIUM)", chromium.display());
    let driver = root.join("tests/browser/node_modules/playwright-core/package.json");
    assert!(driver.exists(), "{} is missing: run `npm ci --prefix tests/browser`", driver.display());
    // The suite shards with `node --test --test-shard` and reports with its JUnit reporter.
    let node = std::process::Command::new("node").arg("--version").output().expect("`node` is not on PATH");
    let version = String::from_utf8_lossy(&node.stdout).trim().trim_start_matches('v').to_owned();
    let parts: Vec<u32> = version.split('.').take(2).map(|p| p.parse().unwrap_or(0)).collect();
    assert!(
        parts >= vec![20, 11],
        "the gate suite needs Node.js 20.11 or later (node --test's junit reporter), not {version}"
    );
    root.join("tests/browser/gate-suite/run.sh")
}

/// One service `web` with only a stable version, a 100 ms tick, and `gates` (TOML) added.
fn gated_config(stable: &Upstream, gates: &str) -> String {
    format!("{}\n{gates}\n", support::stable_only_config(stable, ""))
}

fn e2e_gate(on_failure: &str) -> String {
    format!(
        r#"
[[service.gate]]
name = "e2e"
kind = "command"
when = "before-step"
run = "sh {} {{shard}} {{shards}}"
shards = 3
timeout = "3m"
on_failure = "{on_failure}"
"#,
        suite().display()
    )
}

/// Starts a rollout of `canary` in observe mode: the steps move on their holds and the gates.
async fn start(gateway: &Gateway, canary: &Upstream, steps: &str) -> Value {
    let body = json!({
        "version": canary.version,
        "upstreams": [canary.addr.to_string()],
        "steps": steps,
        "analysis": {"observe": true},
    });
    let (status, body) = post(gateway, "/api/v1/services/web/rollouts", Some(body)).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

async fn post(gateway: &Gateway, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request =
        reqwest::Client::new().post(format!("{}{path}", gateway.admin)).header("content-type", "application/json");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Polls the rollout until `done` holds; panics with the last view after `limit`.
async fn wait_for(gateway: &Gateway, limit: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (_, body) = gateway.get("/api/v1/services/web/rollout").await;
        if done(&body["data"]) {
            return body["data"].clone();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn phase(view: &Value) -> &str {
    view["phase"].as_str().unwrap_or("")
}

fn terminal(view: &Value) -> bool {
    matches!(phase(view), "promoted" | "aborted" | "failed")
}

fn gate_status(view: &Value) -> &str {
    view["gates"][0]["status"].as_str().unwrap_or("")
}

/// The rollout's events as (action, message).
async fn events(gateway: &Gateway) -> Vec<(String, String)> {
    let (_, events) = gateway.get("/api/v1/services/web/events?limit=100").await;
    let text = |e: &Value, key: &str| e[key].as_str().unwrap_or_default().to_owned();
    events["data"].as_array().unwrap().iter().map(|e| (text(e, "action"), text(e, "message"))).collect()
}

async fn status_text(gateway: &Gateway) -> CliOutput {
    run_canary(&["rollout", "--admin", gateway.admin.as_str(), "status", "web"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_browser_suite_gates_the_step_and_reaches_only_the_canary() {
    let _one = BROWSERS.lock().await;
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&gated_config(&v1, &e2e_gate("rollback")));
    start(&gateway, &v2, "10%/1s,100%/3s").await;
    let running = wait_for(&gateway, Duration::from_secs(30), "the gate to run", |v| gate_status(v) == "running").await;
    assert_eq!(running["step"], 0, "{running}");
    assert_eq!(running["gates"][0]["shards"].as_array().unwrap().len(), 3, "{running}");
    let status = status_text(&gateway).await;
    assert!(status.stdout.contains("step 1 waiting on gate e2e ("), "{status:?}");
    assert!(status.stdout.contains("of 3 running,") || status.stdout.contains("/3 running,"), "{status:?}");
    // The step holds at 10 % while the suite runs, however long its hold is past.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, view) = gateway.get("/api/v1/services/web/rollout").await;
    if gate_status(&view["data"]) == "running" {
        assert_eq!(view["data"]["step"], 0, "the step advanced before its gate passed: {view}");
    }
    let advanced =
        wait_for(&gateway, Duration::from_secs(150), "the step to advance", |v| v["step"] == 1 || terminal(v)).await;
    assert_eq!(phase(&advanced), "progressing", "{advanced}");
    let gate = &advanced["gates"][0];
    assert_eq!(gate["status"], "passed", "{advanced}");
    assert!(gate["shards"].as_array().unwrap().iter().all(|s| s["status"] == "passed" && s["code"] == 0), "{gate}");
    assert_eq!(gate["report"]["tests"], 30, "{gate}");
    assert_eq!(gate["report"]["failures"], 0, "{gate}");
    let promoted = wait_for(&gateway, Duration::from_secs(30), "promotion", terminal).await;
    assert_eq!(phase(&promoted), "promoted", "{promoted}");
    // Every request of the suite went to the canary: stable got none (there is no other traffic).
    assert_eq!(v1.hits(), 0, "stable served requests of the suite");
    assert!(v2.hits() >= 30, "the canary served {} requests", v2.hits());
    let events = events(&gateway).await;
    let actions: Vec<&str> = events.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["begin", "gate", "gate", "advance", "advance"], "{events:?}");
    assert_eq!(events[1].1, "gate e2e started (before-step, 3 shard(s))");
    assert!(events[2].1.starts_with("gate e2e passed in "), "{events:?}");
    assert!(events[2].1.ends_with(": 30 tests: 30 passed, 0 failed, 0 skipped"), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_page_rolls_back_and_the_failed_test_is_named() {
    let _one = BROWSERS.lock().await;
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    v2.break_path("/checkout/payment");
    let gateway = Gateway::start(&gated_config(&v1, &e2e_gate("rollback")));
    start(&gateway, &v2, "10%/1s,100%").await;
    let ended = wait_for(&gateway, Duration::from_secs(150), "the rollback", terminal).await;
    assert_eq!(phase(&ended), "failed", "{ended}");
    let reason = ended["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("gate e2e failed: 1 of 30 tests failed: checkout › /checkout/payment answers 200"),
        "{reason}"
    );
    assert!(reason.contains("expected 200, got 500"), "{reason}");
    let status = status_text(&gateway).await;
    assert!(status.stdout.contains("rolled back automatically: gate e2e failed"), "{status:?}");
    assert!(status.stdout.contains("checkout › /checkout/payment answers 200 from the canary"), "{status:?}");
    let (_, service) = gateway.get("/api/v1/services/web").await;
    assert_eq!(service["data"]["canary"], Value::Null, "{service}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_page_pauses_a_gate_that_says_pause() {
    let _one = BROWSERS.lock().await;
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    v2.break_path("/cart/summary");
    let gateway = Gateway::start(&gated_config(&v1, &e2e_gate("pause")));
    start(&gateway, &v2, "10%/1s,100%").await;
    let paused =
        wait_for(&gateway, Duration::from_secs(150), "the pause", |v| phase(v) == "paused" || terminal(v)).await;
    assert_eq!(phase(&paused), "paused", "{paused}");
    assert_eq!(paused["weight"], 10.0, "a pause holds the weight: {paused}");
    let status = status_text(&gateway).await;
    assert!(status.stdout.contains("gate e2e failed"), "{status:?}");
    assert!(status.stdout.contains("✗ cart › /cart/summary answers 200 from the canary"), "{status:?}");
    assert!(status.stdout.contains("30 tests: 29 passed, 1 failed, 0 skipped"), "{status:?}");
}

/// What the http gate's receiver answers, and what it received.
#[derive(Default)]
struct Receiver {
    answer: Mutex<(u16, Duration)>,
    received: Mutex<Vec<(Value, String)>>,
}

/// A local receiver of http gates on a free port.
async fn receiver() -> (Arc<Receiver>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    let state = Arc::new(Receiver { answer: Mutex::new((200, Duration::ZERO)), ..Receiver::default() });
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let state = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move {
                        let signature =
                            request.headers().get("x-canary-signature").map(|v| v.to_str().unwrap().to_owned());
                        let body = request.into_body().collect().await?.to_bytes();
                        let expected = format!("sha256={}", hex(&hmac_sha256(b"gate-secret", &body)));
                        assert_eq!(signature.as_deref(), Some(expected.as_str()), "a wrong signature");
                        state.received.lock().unwrap().push((serde_json::from_slice(&body).unwrap(), expected));
                        let (status, delay) = *state.answer.lock().unwrap();
                        tokio::time::sleep(delay).await;
                        let response = hyper::Response::builder().status(status).body(Full::new(Bytes::from("nope")));
                        Ok::<_, hyper::Error>(response.unwrap())
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (state, url)
}

fn hmac_sha256(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_gate_passes_on_2xx_and_fails_on_an_error_or_a_timeout() {
    let (state, url) = receiver().await;
    let v1 = Upstream::start("v1").await;
    let gate = format!(
        r#"
[[service.gate]]
name = "smoke"
kind = "http"
when = "before-promote"
url = "{url}"
secret = "gate-secret"
timeout = "1s"
"#
    );
    let gateway = Gateway::start(&gated_config(&v1, &gate));
    let v2 = Upstream::start("v2").await;
    start(&gateway, &v2, "10%/200ms,100%/200ms").await;
    let ended = wait_for(&gateway, Duration::from_secs(30), "promotion", terminal).await;
    assert_eq!(phase(&ended), "promoted", "{ended}");
    {
        let received = state.received.lock().unwrap();
        assert_eq!(received.len(), 1, "the gate runs once, before the promotion only");
        let body = &received[0].0;
        assert_eq!((body["service"].as_str(), body["gate"].as_str()), (Some("web"), Some("smoke")), "{body}");
        assert_eq!((body["canaryVersion"].as_str(), body["stableVersion"].as_str()), (Some("v2"), Some("v1")));
        assert_eq!((body["step"].as_u64(), body["weight"].as_f64()), (Some(2), Some(100.0)), "{body}");
        assert_eq!(body["when"], "before-promote");
        assert!(body["judge"]["verdicts"].is_array(), "the judge's summary goes along: {body}");
    }
    *state.answer.lock().unwrap() = (503, Duration::ZERO);
    let v3 = Upstream::start("v3").await;
    start(&gateway, &v3, "10%/200ms,100%/200ms").await;
    let ended = wait_for(&gateway, Duration::from_secs(30), "the rollback", terminal).await;
    assert_eq!(phase(&ended), "failed", "{ended}");
    assert_eq!(ended["reason"], "gate smoke failed: HTTP 503 Service Unavailable: nope", "{ended}");
    *state.answer.lock().unwrap() = (200, Duration::from_secs(3));
    let v4 = Upstream::start("v4").await;
    start(&gateway, &v4, "10%/200ms,100%/200ms").await;
    let ended = wait_for(&gateway, Duration::from_secs(30), "the rollback", terminal).await;
    assert_eq!(phase(&ended), "failed", "{ended}");
    assert_eq!(ended["reason"], "gate smoke failed: timed out after 1s", "{ended}");
    let (_, service) = gateway.get("/api/v1/services/web").await;
    assert_eq!(service["data"]["stable"]["version"], "v2", "only the first canary was promoted");
    // A rollout may choose among the configured gates, or run none; never a gate of its own.
    let v5 = Upstream::start("v5").await;
    let body = |gates: Value| {
        json!({"version": "v5", "upstreams": [v5.addr.to_string()], "steps": "10%/200ms,100%",
               "analysis": {"observe": true, "gates": gates}})
    };
    let (status, refused) = post(&gateway, "/api/v1/services/web/rollouts", Some(body(json!(["load"])))).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["clientMessage"].as_str().unwrap().contains("has no gate \"load\" (its gates: smoke)"),
        "{refused}"
    );
    let (status, started) = post(&gateway, "/api/v1/services/web/rollouts", Some(body(json!([])))).await;
    assert_eq!(status, 200, "{started}");
    let ended = wait_for(&gateway, Duration::from_secs(30), "promotion", terminal).await;
    assert_eq!(phase(&ended), "promoted", "{ended}");
    assert_eq!(state.received.lock().unwrap().len(), 3, "a rollout without gates sent no check");
}

/// Whether process `pid` still runs (a zombie waiting for its parent does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_kills_the_running_gate_and_runs_the_after_rollback_hook() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    // Each shard starts a process in the background and one in the foreground, and says which.
    let gates = r#"
[[service.gate]]
name = "slow"
kind = "command"
when = "before-step"
run = "sleep 300 & echo $! > pids-{shard}; sleep 301 & echo $! >> pids-{shard}; wait"
shards = 2
timeout = "10m"

[[service.gate]]
name = "cleanup"
kind = "command"
when = "after-rollback"
run = "echo \"$CANARY_ROLLOUT $CANARY_VERSION $CANARY_STABLE_VERSION\" > after-rollback.txt"
"#;
    let gateway = Gateway::start(&gated_config(&v1, gates));
    let rollout = start(&gateway, &v2, "10%/200ms,100%").await;
    let id = rollout["id"].as_str().unwrap().to_owned();
    let pids_of = |shard: u32| std::fs::read_to_string(gateway.dir.path().join(format!("pids-{shard}")));
    let deadline = Instant::now() + Duration::from_secs(20);
    let pids: Vec<u32> = loop {
        let all: Vec<u32> = (1..=2)
            .flat_map(|shard| {
                pids_of(shard).unwrap_or_default().lines().map(|l| l.parse().unwrap()).collect::<Vec<_>>()
            })
            .collect();
        if all.len() == 4 {
            break all;
        }
        assert!(Instant::now() < deadline, "the gate's shards did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(pids.iter().all(|&pid| alive(pid)), "{pids:?}");
    let (status, body) =
        post(&gateway, "/api/v1/services/web/rollout/abort", Some(json!({"reason": "wrong build"}))).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&pid| alive(pid)) {
        assert!(Instant::now() < deadline, "processes of the gate outlived the abort: {pids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hook = gateway.dir.path().join("after-rollback.txt");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !hook.exists() {
        assert!(Instant::now() < deadline, "the after-rollback hook did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(std::fs::read_to_string(&hook).unwrap().trim(), format!("{id} v2 v1"));
    let events = events(&gateway).await;
    assert!(
        events.iter().any(|(a, m)| a == "gate" && m == "gate slow started (before-step, 2 shard(s))"),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap().0, "abort", "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_before_start_gate_reaches_the_canary_while_no_user_does() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    // The check asks the gateway for the canary with the rollout's headers, then holds a moment.
    let script = r#"
const headers = JSON.parse(process.env.CANARY_HEADERS);
const response = await fetch(process.env.CANARY_URL + '/ready', { headers });
const version = response.headers.get('x-canary-version');
console.log(`weight ${process.env.CANARY_WEIGHT} step ${process.env.CANARY_STEP} served by ${version}`);
await new Promise((done) => setTimeout(done, 1500));
process.exit(version === process.env.CANARY_VERSION ? 0 : 1);
"#;
    let gates = r#"
[[service.gate]]
name = "ready"
kind = "command"
when = "before-start"
run = "node check.mjs > ready.log"
timeout = "30s"
"#;
    let gateway = Gateway::start(&gated_config(&v1, gates));
    std::fs::write(gateway.dir.path().join("check.mjs"), script).unwrap();
    let rollout = start(&gateway, &v2, "50%/200ms,100%").await;
    assert_eq!(phase(&rollout), "pending", "{rollout}");
    let running = wait_for(&gateway, Duration::from_secs(20), "the gate", |v| gate_status(v) == "running").await;
    assert_eq!(running["weight"], 0.0, "{running}");
    let client = support::client();
    for user in 0..40 {
        let response = support::get_as(&client, &gateway, &format!("user-{user}"), None).await;
        assert_eq!(support::version_of(&response), "v1", "a user reached the canary before its gate passed");
    }
    let status = status_text(&gateway).await;
    assert!(status.stdout.contains("before the first step waiting on gate ready (shard 1/1 running"), "{status:?}");
    let ended = wait_for(&gateway, Duration::from_secs(30), "promotion", terminal).await;
    assert_eq!(phase(&ended), "promoted", "{ended}");
    let log = std::fs::read_to_string(gateway.dir.path().join("ready.log")).unwrap();
    assert_eq!(log.trim(), "weight 0 step 0 served by v2");
    let actions: Vec<String> = events(&gateway).await.into_iter().map(|(a, _)| a).collect();
    assert_eq!(actions, ["stage", "gate", "gate", "begin", "advance", "advance"], "{actions:?}");
}

#[tokio::test]
async fn bad_gate_config_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"
[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = { version = "v1", upstreams = ["127.0.0.1:9001"] }

[[service.gate]]
name = "e2e"
kind = "command"
when = "before-step"
run = "npx playwright test --shard={shard}/{shards}"
shards = 3
timeout = "10m"
"#;
    let validate = |text: String| {
        let path = dir.path().join("canary.toml");
        std::fs::write(&path, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_canary"))
            .args(["validate", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    assert!(validate(good.to_owned()).0);
    let cases = [
        ("kind = \"command\"", "kind = \"script\"", "unknown variant `script`, expected `command` or `http`"),
        ("when = \"before-step\"", "when = \"before-lunch\"", "unknown variant `before-lunch`"),
        ("shards = 3", "shards = 0", "gate \"e2e\": shards must be between 1 and 64 (it is 0)"),
        ("run = \"npx playwright test --shard={shard}/{shards}\"", "", "kind \"command\" needs `run`"),
        ("timeout = \"10m\"", "timeout = \"ten minutes\"", "\"ten minutes\" is not a duration"),
        ("kind = \"command\"", "kind = \"http\"", "kind \"http\" needs `url`"),
    ];
    for (from, to, expected) in cases {
        let (ok, stderr) = validate(good.replace(from, to));
        assert!(!ok && stderr.contains(expected), "expected {expected:?} for {to:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_command_keeps_its_output_and_a_timeout_kills_its_group() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gates = r#"
[[service.gate]]
name = "build"
kind = "command"
when = "before-step"
run = "echo first line; for i in $(seq 1 50); do echo noise $i; done; echo 'the build is broken' >&2; exit 3"
timeout = "30s"
"#;
    let gateway = Gateway::start(&gated_config(&v1, gates));
    let rollout = start(&gateway, &v2, "10%/200ms,100%").await;
    let id = rollout["id"].as_str().unwrap().to_owned();
    let ended = wait_for(&gateway, Duration::from_secs(30), "the rollback", terminal).await;
    assert_eq!(phase(&ended), "failed", "{ended}");
    assert_eq!(ended["reason"], "gate build failed: shard 1/1 exited with 3", "{ended}");
    let events = events(&gateway).await;
    let failed = &events.iter().find(|(a, m)| a == "gate" && m.starts_with("gate build failed")).unwrap().1;
    assert!(failed.contains("noise 50\nthe build is broken"), "the event carries the output's end: {failed}");
    assert!(!failed.contains("first line"), "only its end: {failed}");
    let file = gateway.dir.path().join(format!("canary-data/gates/{id}/build-step1-shard1.log"));
    assert!(failed.ends_with(&format!("(whole output: {})", file.display())), "{failed}");
    let whole = std::fs::read_to_string(&file).unwrap();
    assert!(whole.starts_with("first line\nnoise 1\n") && whole.contains("the build is broken"), "{whole}");

    let gates = r#"
[[service.gate]]
name = "stuck"
kind = "command"
when = "before-step"
run = "sleep 120 & echo $! > stuck.pid; wait"
timeout = "1s"
"#;
    let gateway = Gateway::start(&gated_config(&v1, gates));
    start(&gateway, &v2, "10%/200ms,100%").await;
    let ended = wait_for(&gateway, Duration::from_secs(30), "the rollback", terminal).await;
    assert_eq!(ended["reason"], "gate stuck failed: timed out after 1s", "{ended}");
    let pid: u32 = std::fs::read_to_string(gateway.dir.path().join("stuck.pid")).unwrap().trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(Instant::now() < deadline, "the timed-out gate left process {pid} behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_gate_runs_the_gate_again_after_its_restart() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gates = r#"
[[service.gate]]
name = "e2e"
kind = "command"
when = "before-step"
run = "echo run >> runs.txt; sleep 2"
timeout = "30s"
"#;
    let mut gateway = Gateway::start(&gated_config(&v1, gates));
    start(&gateway, &v2, "10%/200ms,100%").await;
    let runs = gateway.dir.path().join("runs.txt");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !runs.exists() {
        assert!(Instant::now() < deadline, "the gate did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.restart();
    let ended = wait_for(&gateway, Duration::from_secs(30), "promotion", terminal).await;
    assert_eq!(phase(&ended), "promoted", "{ended}");
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\nrun\n", "the gate ran again from the start");
    let gate_events: Vec<String> =
        events(&gateway).await.into_iter().filter(|(a, _)| a == "gate").map(|(_, m)| m).collect();
    assert_eq!(gate_events.len(), 3, "{gate_events:?}");
    assert!(gate_events[0].contains("started") && gate_events[1].contains("started"), "{gate_events:?}");
    assert!(gate_events[2].starts_with("gate e2e passed"), "{gate_events:?}");
}
