//! Notifications through a real `canary serve` process: a webhook receiver that checks every
//! signature and sees each event once per id although it fails the first attempt, a Slack
//! receiver that gets text and mrkdwn section blocks, and events a restart had not delivered
//! yet delivered after it; with two controllers on one etcd, only the leader sends.

#[path = "../../store/tests/support/etcd_server.rs"]
#[allow(dead_code)]
mod etcd_server;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use canary_core::signature::verify_body;
use serde_json::{Value, json};
use support::hooks::{Answer, HookReceiver, Received};
use support::{Gateway, Upstream};
use tokio::time::Instant;

const SECRET: &str = "notify-test-secret-0123";

fn config(v1: &Upstream, sinks: &str) -> String {
    format!("{}\n{sinks}", support::stable_only_config(v1, ""))
}

fn webhook(receiver: &HookReceiver) -> String {
    format!(
        "[[notify]]\nname = \"hooks\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nevents = [\"*\"]\n",
        receiver.url("/hook")
    )
}

async fn post(gateway: &Gateway, path: &str, body: Value) -> (u16, Value) {
    let url = format!("{}{path}", gateway.admin);
    let response = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Starts a dry-run rollout of v2 (steps advance on their hold alone) with plan `steps`.
async fn start(gateway: &Gateway, v2: &Upstream, steps: &str) -> String {
    let body =
        json!({"version": "v2", "upstreams": [v2.addr.to_string()], "steps": steps, "analysis": {"observe": true}});
    let (status, body) = post(gateway, "/api/v1/services/web/rollouts", body).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["id"].as_str().unwrap().to_owned()
}

async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn event_ids(gateway: &Gateway) -> Vec<String> {
    let (_, events) = gateway.get("/api/v1/services/web/events").await;
    let events = events["data"].as_array().unwrap().clone();
    events.iter().map(|e| format!("{}/{}", e["rolloutId"].as_str().unwrap(), e["seq"])).collect()
}

fn ids(received: &[Received]) -> Vec<String> {
    received.iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect()
}

fn assert_signed(received: &[Received]) {
    for r in received {
        let header = r.header("x-canary-signature").expect("every webhook request is signed");
        assert!(verify_body(SECRET.as_bytes(), &r.body, header), "bad signature {header} on {}", r.json());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_the_webhook_signed_and_once_per_id_despite_a_500() {
    let receiver = HookReceiver::start(Answer::FailFirst).await;
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let chat = format!(
        "[[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}\"\nevents = [\"started\", \"promoted\"]\n",
        receiver.url("/slack")
    );
    let gateway = Gateway::start(&config(&v1, &format!("{}{chat}", webhook(&receiver))));
    let rollout = start(&gateway, &v2, "10%/300ms,50%/300ms,100%").await;
    let logged = loop {
        let logged = event_ids(&gateway).await;
        if logged.len() == 4 {
            break logged;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_until(Duration::from_secs(30), "four accepted webhooks", || receiver.accepted("/hook").len() >= 4).await;
    wait_until(Duration::from_secs(30), "two accepted slack messages", || receiver.accepted("/slack").len() >= 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let attempts = receiver.received("/hook");
    assert_signed(&attempts);
    let accepted = receiver.accepted("/hook");
    assert_eq!(ids(&accepted), logged, "each logged event accepted once, in order");
    let mut tries: BTreeMap<String, usize> = BTreeMap::new();
    for id in ids(&attempts) {
        *tries.entry(id).or_default() += 1;
    }
    assert!(tries.values().all(|&n| n == 2), "one 500, then one success per id: {tries:?}");

    let bodies: Vec<Value> = accepted.iter().map(Received::json).collect();
    let names: Vec<&str> = bodies.iter().map(|b| b["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["started", "step_advanced", "step_advanced", "promoted"]);
    for body in &bodies {
        assert_eq!((body["service"].as_str(), body["rollout"].as_str()), (Some("web"), Some(rollout.as_str())));
        assert_eq!((body["stable"].as_str(), body["canary"].as_str()), (Some("v1"), Some("v2")));
    }
    assert_eq!(
        (bodies[1]["step"].as_u64(), bodies[1]["steps"].as_u64(), bodies[1]["weight"].as_f64()),
        (Some(2), Some(3), Some(50.0))
    );
    assert_eq!(accepted[0].header("x-canary-event"), Some("started"));

    let slack: Vec<Value> = receiver.accepted("/slack").iter().map(Received::json).collect();
    assert_eq!(slack.len(), 2, "the chat sink gets only the events it names: {slack:?}");
    for message in &slack {
        let text = message["text"].as_str().expect("text");
        assert!(text.contains("*web*") && text.contains("v1 → v2"), "{text}");
        let blocks = message["blocks"].as_array().expect("blocks");
        assert!(!blocks.is_empty());
        for block in blocks {
            assert_eq!(block["type"], "section", "{block}");
            assert_eq!(block["text"]["type"], "mrkdwn", "{block}");
            assert!(block["text"]["text"].as_str().is_some_and(|t| !t.is_empty()), "{block}");
        }
    }
    assert!(slack[1]["text"].as_str().unwrap().contains("promoted"), "{}", slack[1]);
    assert!(receiver.received("/slack").iter().all(|r| r.header("x-canary-signature").is_none()));

    let metrics = gateway.metrics().await;
    for line in [
        "canary_notify_delivered_total{sink=\"hooks\"} 4",
        "canary_notify_retries_total{sink=\"hooks\"} 4",
        "canary_notify_failed_total{sink=\"hooks\"} 0",
        "canary_notify_delivered_total{sink=\"chat\"} 2",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_undelivered_at_a_restart_are_delivered_after_it() {
    let receiver = HookReceiver::start(Answer::Refuse).await;
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let mut gateway = Gateway::start(&config(&v1, &webhook(&receiver)));
    let rollout = start(&gateway, &v2, "10%/1h,100%").await;
    let (status, body) = post(&gateway, "/api/v1/services/web/rollout/pause", json!({"reason": "lunch"})).await;
    assert_eq!(status, 200, "{body}");
    wait_until(Duration::from_secs(10), "a refused attempt", || !receiver.received("/hook").is_empty()).await;

    gateway.kill9();
    receiver.answer(Answer::Accept);
    gateway.restart();
    let (status, body) = post(&gateway, "/api/v1/services/web/rollout/abort", json!({"reason": "done"})).await;
    assert_eq!(status, 200, "{body}");
    wait_until(Duration::from_secs(30), "three accepted webhooks", || receiver.accepted("/hook").len() >= 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let accepted = receiver.accepted("/hook");
    assert_signed(&receiver.received("/hook"));
    let expected: Vec<String> = (0..3).map(|seq| format!("{rollout}/{seq}")).collect();
    assert_eq!(ids(&accepted), expected, "begin, pause and abort, each once");
    let unique: BTreeSet<String> = ids(&accepted).into_iter().collect();
    assert_eq!(unique.len(), 3);
    let paused = accepted[1].json();
    assert_eq!((paused["event"].as_str(), paused["reason"].as_str()), (Some("paused"), Some("lunch")));
    assert_eq!(accepted[2].json()["event"], "aborted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_controllers_only_the_leader_sends_and_each_event_arrives_once() {
    let etcd = etcd_server::EtcdServer::start().await;
    let receiver = HookReceiver::start(Answer::Accept).await;
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let node = format!(
        "{}\n[store]\nkind = \"etcd\"\nendpoints = [\"{}\"]\n{}",
        support::stable_only_config(&v1, ""),
        etcd.endpoint(),
        webhook(&receiver)
    );
    let nodes = [Gateway::start(&node), Gateway::start(&node)];
    let leading = |text: &str| text.lines().any(|l| l == "canary_controller_leading 1");
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        let [a, b] = [nodes[0].metrics().await, nodes[1].metrics().await];
        match (leading(&a), leading(&b)) {
            (true, false) => break 0,
            (false, true) => break 1,
            _ => assert!(Instant::now() < deadline, "no single leader"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Started through the node that does not lead: the event log is shared, the sending is not.
    start(&nodes[1 - leader], &v2, "10%/300ms,50%/300ms,100%").await;
    wait_until(Duration::from_secs(30), "four accepted webhooks", || receiver.accepted("/hook").len() >= 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let accepted = receiver.accepted("/hook");
    assert_eq!(ids(&accepted), event_ids(&nodes[leader]).await, "each event once, from one node");
    assert_signed(&accepted);
    let delivered =
        |text: &str| text.lines().find(|l| l.starts_with("canary_notify_delivered_total")).map(str::to_owned);
    let follower = delivered(&nodes[1 - leader].metrics().await);
    assert_eq!(follower.as_deref(), Some("canary_notify_delivered_total{sink=\"hooks\"} 0"));
    assert_eq!(
        delivered(&nodes[leader].metrics().await).as_deref(),
        Some("canary_notify_delivered_total{sink=\"hooks\"} 4")
    );
}

/// A CA and a certificate it signed for 127.0.0.1: the CA's PEM, and an acceptor serving the
/// certificate.
fn private_ca() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_sink_is_reached_when_its_ca_is_trusted() {
    let (ca, tls) = private_ca();
    let receiver = HookReceiver::start_tls(Answer::Accept, tls).await;
    assert!(receiver.url("/hook").starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, ca).unwrap();
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start_with_env(&config(&v1, &webhook(&receiver)), &[("SSL_CERT_FILE", bundle.as_os_str())]);
    let rollout = start(&gateway, &v2, "10%/300ms,100%").await;
    wait_until(Duration::from_secs(30), "webhooks over https", || receiver.accepted("/hook").len() >= 3).await;
    assert_signed(&receiver.received("/hook"));
    assert_eq!(ids(&receiver.accepted("/hook"))[0], format!("{rollout}/0"));
}
