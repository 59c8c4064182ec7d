//! The admin listener against what a hostile page or client can send, through a real
//! `canary serve`: cross-site form posts, rebound host names, half-sent and idle connections,
//! oversized and too many feed sockets, and the read and metrics tokens.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{CliOutput, Gateway, Upstream, run_canary, stable_only_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// `host:port` of the admin listener.
fn authority(gateway: &Gateway) -> String {
    gateway.admin.trim_start_matches("http://").to_owned()
}

/// Starts a rollout of `v2` with long holds, so only commands move it.
async fn start_rollout(gateway: &Gateway, canary: &Upstream, token: Option<&str>) {
    let body = json!({"version": "v2", "upstreams": [canary.addr.to_string()], "steps": "10%/1h,100%"});
    let mut request =
        reqwest::Client::new().post(format!("{}/api/v1/services/web/rollouts", gateway.admin)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

async fn phase(gateway: &Gateway, token: Option<&str>) -> String {
    let mut request = reqwest::Client::new().get(format!("{}/api/v1/services/web/rollout", gateway.admin));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    body["data"]["phase"].as_str().unwrap_or_default().to_owned()
}

async fn rollout_cli(gateway: &Gateway, args: &[&str]) -> CliOutput {
    let mut all = vec!["rollout", "--admin", gateway.admin.as_str()];
    all.extend_from_slice(args);
    run_canary(&all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_cannot_pause_promote_or_resume_but_the_cli_can() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&stable_only_config(&v1, ""));
    start_rollout(&gateway, &v2, None).await;
    let http = reqwest::Client::new();
    for action in ["pause", "promote", "resume", "abort"] {
        let url = format!("{}/api/v1/services/web/rollout/{action}", gateway.admin);
        // `<form method=post action=…>` on another site, in a browser that says where it came from …
        let from_a_page = http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", "0")
            .header("origin", "https://evil.example")
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(from_a_page.status(), 403, "{action}");
        let envelope: Value = from_a_page.json().await.unwrap();
        assert_eq!(envelope["code"], "PERMISSION_DENIED", "{envelope}");
        // … and in one that does not.
        let anonymous = http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 415, "{action}");
    }
    assert_eq!(phase(&gateway, None).await, "progressing", "a refused form changed the rollout");

    let paused = rollout_cli(&gateway, &["pause", "web", "--reason", "looking"]).await;
    assert_eq!(paused.code, Some(0), "{paused:?}");
    assert_eq!(phase(&gateway, None).await, "paused");
    let resumed = rollout_cli(&gateway, &["resume", "web"]).await;
    assert_eq!(resumed.code, Some(0), "{resumed:?}");
    let aborted = rollout_cli(&gateway, &["abort", "web"]).await;
    assert_eq!(aborted.code, Some(0), "{aborted:?}");
    assert_eq!(phase(&gateway, None).await, "aborted");
}

/// Sends `GET path` with `Host: host` over a fresh connection; returns the status and body.
async fn get_with_host(gateway: &Gateway, path: &str, host: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(authority(gateway)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Opens the live feed with these request headers; the handshake's status on refusal.
async fn open_feed(
    gateway: &Gateway,
    headers: &[(&str, String)],
) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>, (u16, Value)> {
    let mut request = format!("ws://{}/api/v1/stream", authority(gateway)).into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().map(|b| serde_json::from_slice(b).unwrap()).unwrap_or(Value::Null);
            Err((response.status().as_u16(), body))
        }
        Err(other) => panic!("unexpected handshake error {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_host_names_are_answered_and_the_feed_trusts_no_rebound_origin() {
    let v1 = Upstream::start("v1").await;
    let gateway = Gateway::start(&stable_only_config(&v1, "allowed_hosts = [\"canary.test\"]"));
    let port = authority(&gateway).rsplit_once(':').unwrap().1.to_owned();
    // A page on evil.test that re-resolved its name to 127.0.0.1 still says Host: evil.test.
    for path in ["/api/v1/services", "/", "/metrics"] {
        let (status, body) = get_with_host(&gateway, path, &format!("evil.test:{port}")).await;
        assert_eq!(status, 421, "{path}: {body}");
        assert_eq!(body["code"], "MISDIRECTED_REQUEST", "{path}: {body}");
    }
    for host in [format!("canary.test:{port}"), format!("localhost:{port}"), "127.0.0.1".to_owned()] {
        let (status, body) = get_with_host(&gateway, "/api/v1/services", &host).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    assert_eq!(get_with_host(&gateway, "/healthz", "10.9.8.7:7070").await.0, 200, "probes answer any name");

    // The feed: its Origin must be an allowed host at this port, whatever Host says.
    let rebound = [("host", format!("evil.test:{port}")), ("origin", format!("http://evil.test:{port}"))];
    assert_eq!(open_feed(&gateway, &rebound).await.err().unwrap().0, 421);
    let foreign = [("origin", format!("http://evil.test:{port}"))];
    let (status, body) = open_feed(&gateway, &foreign).await.err().unwrap();
    assert_eq!((status, body["code"].as_str()), (403, Some("PERMISSION_DENIED")), "{body}");
    let other_port = [("origin", "http://localhost:3000".to_owned())];
    assert_eq!(open_feed(&gateway, &other_port).await.err().unwrap().0, 403, "another local site");
    let own = [("host", format!("canary.test:{port}")), ("origin", format!("http://canary.test:{port}"))];
    let mut ws = open_feed(&gateway, &own).await.unwrap();
    ws.send(Message::text(r#"{"type":"hello","token":null}"#)).await.unwrap();
    let Some(Ok(Message::Text(first))) = ws.next().await else { panic!("no snapshot") };
    assert!(first.contains("\"snapshot\""), "{first}");
}

/// Whether the server closed `stream` (end of file or reset) within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut byte = [0u8; 512];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut byte)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_and_idle_connections_are_closed() {
    let v1 = Upstream::start("v1").await;
    let gateway = Gateway::start(&stable_only_config(&v1, "header_read_timeout = \"1s\"\nidle_timeout = \"3s\""));
    let addr = authority(&gateway);
    let mut half_sent = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b"GET /api/v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
        half_sent.push(stream);
    }
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    for stream in &mut half_sent {
        assert!(closed_within(stream, Duration::from_secs(5)).await, "a half-sent request is still open");
    }
    assert!(closed_within(&mut silent, Duration::from_secs(1)).await, "a silent connection is still open");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "closed after {took:?}");

    // A body sent a byte at a time gets as long as a head, then a refusal.
    let mut slow_body = TcpStream::connect(&addr).await.unwrap();
    let head = "PUT /api/v1/services/web/weight HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"weight\"";
    slow_body.write_all(head.as_bytes()).await.unwrap();
    let sent = Instant::now();
    let mut answer = vec![0u8; 2048];
    let read = tokio::time::timeout(Duration::from_secs(4), slow_body.read(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer[..read.expect("no answer to a stalled body").unwrap()]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("did not arrive within 1s"), "{answer}");
    assert!(sent.elapsed() >= Duration::from_millis(900), "answered after {:?}", sent.elapsed());

    // A kept-alive connection outlives the header timeout between requests, then idles out.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    for _ in 0..2 {
        kept.write_all(request).await.unwrap();
        let mut answer = [0u8; 512];
        let read = kept.read(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer[..read]).starts_with("HTTP/1.1 200"), "the kept connection answers");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let idle_since = Instant::now() - Duration::from_millis(1500);
    assert!(closed_within(&mut kept, Duration::from_secs(4)).await, "an idle connection is still open");
    let idle = idle_since.elapsed();
    assert!(idle >= Duration::from_millis(2800) && idle < Duration::from_secs(5), "idle for {idle:?} before closing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_refuses_huge_messages_and_too_many_sockets() {
    let v1 = Upstream::start("v1").await;
    let gateway = Gateway::start(&stable_only_config(&v1, "token = \"feed-admin-token\"\nmax_feed_connections = 3"));
    // A hello of 1 MiB is refused as it arrives, not buffered up to axum's 64 MiB default.
    let mut huge = open_feed(&gateway, &[]).await.unwrap();
    let token = "x".repeat(1 << 20);
    let _ = huge.send(Message::text(json!({"type": "hello", "token": token}).to_string())).await;
    match tokio::time::timeout(Duration::from_secs(5), huge.next()).await.expect("an answer to a huge hello") {
        Some(Ok(Message::Close(frame))) => assert_ne!(frame.map(|f| u16::from(f.code)), Some(4401), "it was read"),
        Some(Ok(other)) => panic!("a huge hello was answered with {other:?}"),
        Some(Err(_)) | None => {}
    }
    drop(huge);

    let mut open = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while open.len() < 3 {
        match open_feed(&gateway, &[]).await {
            Ok(ws) => open.push(ws),
            // The huge hello's socket may not have given its place back yet.
            Err((503, _)) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(other) => panic!("{other:?}"),
        }
    }
    let Err((status, body)) = open_feed(&gateway, &[]).await else { panic!("a fourth feed was opened") };
    assert_eq!((status, body["code"].as_str()), (503, Some("UNAVAILABLE")), "{body}");
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match open_feed(&gateway, &[]).await {
            Ok(_) => break,
            Err((503, _)) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(other) => panic!("a closed feed's place was not given back: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_sees_everything_and_changes_nothing() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let tokens = "token = \"admin-token-1\"\nread_token = \"read-token-1\"\nmetrics_token = \"metrics-token-1\"";
    let gateway = Gateway::start(&stable_only_config(&v1, tokens));
    start_rollout(&gateway, &v2, Some("admin-token-1")).await;

    let listed = rollout_cli(&gateway, &["--token", "read-token-1", "list"]).await;
    assert_eq!(listed.code, Some(0), "{listed:?}");
    assert!(listed.stdout.contains("progressing"), "{listed:?}");
    let status = rollout_cli(&gateway, &["--token", "read-token-1", "status", "web"]).await;
    assert_eq!(status.code, Some(0), "{status:?}");
    let pause = rollout_cli(&gateway, &["--token", "read-token-1", "pause", "web"]).await;
    assert_eq!(pause.code, Some(1), "{pause:?}");
    assert!(pause.stderr.contains("[PERMISSION_DENIED]") && pause.stderr.contains("admin token"), "{pause:?}");
    assert_eq!(phase(&gateway, Some("read-token-1")).await, "progressing");
    let abort = rollout_cli(&gateway, &["--token", "admin-token-1", "abort", "web"]).await;
    assert_eq!(abort.code, Some(0), "{abort:?}");

    // The feed takes the read token and says what it allows.
    let mut ws = open_feed(&gateway, &[]).await.unwrap();
    ws.send(Message::text(r#"{"type":"hello","token":"read-token-1"}"#)).await.unwrap();
    let Some(Ok(Message::Text(first))) = ws.next().await else { panic!("no snapshot") };
    let snapshot: Value = serde_json::from_str(&first).unwrap();
    assert_eq!((snapshot["type"].as_str(), snapshot["role"].as_str()), (Some("snapshot"), Some("read")));

    let metrics = format!("{}/metrics", gateway.admin);
    let http = reqwest::Client::new();
    assert_eq!(http.get(&metrics).send().await.unwrap().status(), 401);
    let scraped = http.get(&metrics).bearer_auth("metrics-token-1").send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("canary_admin_websocket_connections"));
    let api = http.get(format!("{}/api/v1/services", gateway.admin)).bearer_auth("metrics-token-1").send();
    assert_eq!(api.await.unwrap().status(), 401, "the metrics token opens no API");
}

#[tokio::test]
async fn validate_names_a_bad_allowed_host_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    let validate = async |text: &str| {
        std::fs::write(&path, text).unwrap();
        run_canary(&["validate", "--config", path.to_str().unwrap()]).await
    };
    let good = "[admin]\nlisten = \"127.0.0.1:7070\"\nallowed_hosts = [\"canary.test\", \"10.0.0.5\"]\n\
                header_read_timeout = \"5s\"\nidle_timeout = \"2m\"\nmax_feed_connections = 8\n";
    let out = validate(good).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = validate(&good.replace("\"10.0.0.5\"", "\"https://canary.test/\"")).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("allowed_hosts") && out.stderr.contains("line 3"), "{out:?}");
    assert!(out.stderr.contains("\"https://canary.test/\" must be a DNS name or an IP address"), "{out:?}");
    let out = validate(&good.replace("\"5s\"", "\"10ms\"")).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("header_read_timeout must be between 1s and 5m"), "{out:?}");
}
