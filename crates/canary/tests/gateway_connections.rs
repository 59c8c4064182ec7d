//! A gateway survives connection exhaustion: silent sockets, stalled HTTP/2 prefaces, idle
//! HTTP/2 connections and TLS clients that never say hello are closed on their deadlines; under
//! a low descriptor limit, a crowd of silent sockets neither locks out a new client nor the
//! admin `/healthz`; idle upstream connections are closed after the service's idle timeout; an
//! upstream slower than the service's request timeout gets its client a `504` at that timeout.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use support::{Gateway, Upstream, config};
use tokio::time::Instant;

/// `config` with `lines` added to its `[gateway]` section.
fn with_gateway(config: &str, lines: &str) -> String {
    config.replace("[gateway]\n", &format!("[gateway]\n{lines}\n"))
}

/// Reads from `stream` until the gateway closes it (end of file or reset), at most `limit`.
fn closed_within(mut stream: &TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Opens `count` connections to `addr`, writes `bytes` on each, and returns how many the
/// gateway closed within `limit`, and how long the first took to close.
async fn open_and_wait(addr: SocketAddr, count: usize, bytes: &'static [u8], limit: Duration) -> (usize, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let sockets: Vec<TcpStream> = (0..count)
            .map(|_| {
                let mut socket = TcpStream::connect(addr).unwrap();
                socket.write_all(bytes).unwrap();
                socket
            })
            .collect();
        let first = closed_within(&sockets[0], limit);
        let first_after = started.elapsed();
        let rest = sockets[1..].iter().filter(|s| closed_within(s, limit)).count();
        (usize::from(first) + rest, first_after)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_header_read_timeout() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&with_gateway(&config(&v1, &v2, 0.0, ""), "header_read_timeout = \"1s\""));
    let (closed, after) = open_and_wait(gateway.addr("web"), 50, b"", Duration::from_secs(5)).await;
    assert_eq!(closed, 50, "silent sockets still open 5 s after a 1 s header-read timeout");
    assert!(after >= Duration::from_millis(900), "closed after {after:?}, before its deadline");
    let (closed, _) =
        open_and_wait(gateway.addr("web"), 5, b"GET / HTTP/1.1\r\nHost: a\r\n", Duration::from_secs(5)).await;
    assert_eq!(closed, 5, "half-sent request heads are closed too");
    let response = support::client().get(gateway.url("web", "/")).send().await.unwrap();
    assert_eq!(response.status(), 200, "a prompt client is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http2_preface_or_settings_alone_is_closed() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&with_gateway(&config(&v1, &v2, 0.0, ""), "header_read_timeout = \"1s\""));
    let addr = gateway.addr("web");
    let (closed, after) = open_and_wait(addr, 10, b"PRI * HTTP/2.0\r\n", Duration::from_secs(5)).await;
    assert_eq!(closed, 10, "connections stalled inside the HTTP/2 preface stay open");
    assert!(after >= Duration::from_millis(900), "closed after {after:?}, before its deadline");
    let settings_only = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let (closed, _) = open_and_wait(addr, 10, settings_only, Duration::from_secs(5)).await;
    assert_eq!(closed, 10, "connections that sent SETTINGS and no request stay open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_but_a_slow_request_is_not_cut() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&with_gateway(&config(&v1, &v2, 0.0, ""), "idle_timeout = \"1s\""));
    let tcp = tokio::net::TcpStream::connect(gateway.addr("web")).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(conn);
    let request = http::Request::builder()
        .uri(format!("http://{}/slow/2500", gateway.addr("web")))
        .header("x-user-id", "h2-user")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("a request longer than the idle timeout is answered");
    assert_eq!(response.status(), 200);
    drop(response);
    let idle = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection is still open 5 s after a 1 s idle timeout");
    assert!(idle.elapsed() >= Duration::from_millis(900), "closed after {:?}, before its deadline", idle.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_never_says_hello_is_closed_after_the_handshake_timeout() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let dir = tempfile::tempdir().unwrap();
    let (tls, _) = support::self_signed_tls(dir.path());
    let gateway = Gateway::start(&with_gateway(&config(&v1, &v2, 0.0, &tls), "tls_handshake_timeout = \"1s\""));
    let (closed, after) = open_and_wait(gateway.addr("web"), 20, b"", Duration::from_secs(5)).await;
    assert_eq!(closed, 20, "TLS connections without a ClientHello still open 5 s after a 1 s handshake timeout");
    assert!(after >= Duration::from_millis(900), "closed after {after:?}, before its deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_beyond_the_descriptor_limit_lock_out_neither_clients_nor_healthz() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    // 256 descriptors: 64 kept in reserve, 96 client connections (48 per worker).
    let gateway = Gateway::start_with_nofile(&config(&v1, &v2, 0.0, ""), 256);
    let addr = gateway.addr("web");
    let silent = tokio::task::spawn_blocking(move || {
        (0..420).map(|_| TcpStream::connect(addr).unwrap()).collect::<Vec<TcpStream>>()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    for i in 0..5 {
        let response = client.get(gateway.url("web", "/")).header("x-user-id", format!("fresh-{i}")).send().await;
        assert_eq!(response.expect("a new client is served").status(), 200);
    }
    let health = client.get(format!("{}/healthz", gateway.admin)).send().await.expect("/healthz answers");
    assert_eq!(health.status(), 200);
    let held = tokio::task::spawn_blocking(move || {
        silent.iter().filter(|s| !closed_within(s, Duration::from_millis(10))).count()
    })
    .await
    .unwrap();
    assert!(held <= 96 + 8, "the gateway holds {held} silent sockets, more than its 96 connections");
    let log = gateway.log();
    let failures = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(failures <= 4, "{failures} accept-failed lines:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 0.0, "idle_timeout = \"1s\""));
    let client = support::client();
    let requests =
        (0..40).map(|i| client.get(gateway.url("web", "/slow/300")).header("x-user-id", format!("u{i}")).send());
    for response in futures_util::future::join_all(requests).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    drop(client);
    let opened = v1.open_connections();
    assert!(opened >= 20, "40 concurrent requests opened only {opened} upstream connections");
    let deadline = Instant::now() + Duration::from_secs(5);
    while v1.open_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(v1.open_connections(), 0, "idle upstream connections still open 5 s after a 1 s idle timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_slower_than_the_request_timeout_gets_a_504_at_the_timeout() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 0.0, "request_timeout = \"1s\""));
    let client = support::client();
    for (method, body) in [(http::Method::GET, ""), (http::Method::POST, "a body goes through hyper's client")] {
        let started = Instant::now();
        let response = client
            .request(method.clone(), gateway.url("web", "/slow/4000"))
            .header("x-user-id", "patient")
            .body(body)
            .send()
            .await
            .unwrap();
        let waited = started.elapsed();
        assert_eq!(response.status(), 504, "{method}");
        assert!(response.text().await.unwrap().starts_with("upstream timed out"), "{method}");
        assert!(waited >= Duration::from_millis(950) && waited < Duration::from_millis(2500), "{method}: {waited:?}");
    }
    let quick = client.get(gateway.url("web", "/slow/200")).header("x-user-id", "patient").send().await.unwrap();
    assert_eq!(quick.status(), 200, "a request within the timeout is answered");
}
