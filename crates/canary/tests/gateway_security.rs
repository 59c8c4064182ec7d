//! The gateway's integrity rules through a real gateway process: pins bound to their service,
//! the override token, headers that never reach the upstream, protocol upgrades and `Host`.

mod support;

use support::{Gateway, Upstream, client, pin_of, version_of};

/// Two services, `web` and `api`, sharing one pin secret; each with stable `v1` and canary `v2`.
fn two_services(web: (&Upstream, &Upstream), api: (&Upstream, &Upstream), web_weight: f64, api_weight: f64) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[gateway]
workers = 1
pin_secret = "end-to-end-test-secret"

[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = {{ version = "v1", upstreams = ["{}"] }}
canary = {{ version = "v2", upstreams = ["{}"] }}
weight = {web_weight}

[[service]]
name = "api"
listen = "127.0.0.1:0"
stable = {{ version = "v1", upstreams = ["{}"] }}
canary = {{ version = "v2", upstreams = ["{}"] }}
weight = {api_weight}
"#,
        web.0.addr, web.1.addr, api.0.addr, api.1.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_of_one_service_does_not_move_users_of_another() {
    let (web_v1, web_v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let (api_v1, api_v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&two_services((&web_v1, &web_v2), (&api_v1, &api_v2), 100.0, 5.0));
    let client = client();
    let get = |service: &str, user: String, cookie: Option<String>| {
        let mut request = client.get(gateway.url(service, "/")).header("x-user-id", user);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    let on_web = get("web", "someone".into(), None).await.unwrap();
    assert_eq!(version_of(&on_web), "v2");
    let web_canary_pin = format!("canary_pin={}", pin_of(&on_web).expect("web pins its canary"));

    let mut stable_users = Vec::new();
    for i in 0..400 {
        let user = format!("user-{i}");
        if version_of(&get("api", user.clone(), None).await.unwrap()) == "v1" {
            stable_users.push(user);
        }
        if stable_users.len() == 40 {
            break;
        }
    }
    assert_eq!(stable_users.len(), 40);
    for user in stable_users {
        let response = get("api", user.clone(), Some(web_canary_pin.clone())).await.unwrap();
        assert_eq!(version_of(&response), "v1", "web's pin moved api's stable user {user} to api's canary");
        assert!(pin_of(&response).unwrap().contains(".v1."), "api re-pins the user to its own choice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_an_empty_or_short_force_token_naming_key_and_line() {
    let upstream = Upstream::start("v1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    for token in ["", "qa-token-123"] {
        let text = support::stable_only_config(&upstream, "") + &format!("force_token = {token:?}\n");
        std::fs::write(&path, &text).unwrap();
        let line = text.lines().position(|l| l.starts_with("force_token")).unwrap() + 1;
        let out = support::run_canary(&["validate", "--config", path.to_str().unwrap()]).await;
        assert_ne!(out.code, Some(0), "token {token:?} was accepted: {}", out.stdout);
        assert!(
            out.stderr.contains("force_token must be at least 16 characters")
                && out.stderr.contains(&format!("line {line}")),
            "token {token:?}: {}",
            out.stderr
        );
    }
}

/// The request head the upstream got for `request` (see the fake upstream's `/headers`).
async fn upstream_head(request: reqwest::RequestBuilder) -> String {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap().to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_override_headers_never_reach_the_upstream() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let extra = "force_token = \"qa-token-1234567890\"";
    let gateway = Gateway::start(&support::config(&v1, &v2, 0.0, extra));
    let client = client();
    for token in ["wrong-token-0000000000", "qa-token-1234567890"] {
        let request = client
            .get(gateway.url("web", "/headers"))
            .header("x-user-id", "qa")
            .header("x-canary-force", "canary")
            .header("x-canary-force-token", token);
        let head = upstream_head(request).await;
        assert!(!head.contains("x-canary-force"), "token {token}: the upstream got\n{head}");
    }
    let untrusted = client.get(gateway.url("web", "/headers")).header("x-canary-force", "canary");
    let head = upstream_head(untrusted).await;
    assert!(!head.contains("x-canary-force"), "an ignored override reached the upstream:\n{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fields_the_gateway_sets_are_its_own_whatever_the_client_sent() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&support::config(&v1, &v2, 0.0, ""));
    let request = client()
        .get(gateway.url("web", "/headers"))
        .header("x-user-id", "u1")
        .header("x-canary-version", "v2")
        .header("x-canary-cohort", "forged")
        .header("x-forwarded-proto", "https");
    let head = upstream_head(request).await;
    let lines: Vec<&str> = head.lines().collect();
    let named = |name: &str| lines.iter().filter(|l| l.starts_with(&format!("{name}:"))).count();
    assert!(lines.contains(&"x-canary-version: v1"), "the version that serves is named:\n{head}");
    assert_eq!((named("x-canary-version"), named("x-forwarded-proto")), (1, 1), "once each:\n{head}");
    assert!(lines.contains(&"x-forwarded-proto: http"), "the client's connection was plain HTTP:\n{head}");
    assert!(!head.contains("forged"), "a cohort token the gateway did not sign reached the upstream:\n{head}");
}

/// Sends raw bytes to `addr` and reads until the gateway closes the connection, or until the
/// head of a `101`, after which the connection is a tunnel that stays open.
async fn raw(addr: std::net::SocketAddr, request: String) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut chunk) {
            response.extend_from_slice(&chunk[..n]);
            if response.starts_with(b"HTTP/1.1 101") && response.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&response).into_owned()
    })
    .await
    .unwrap()
}

fn upgrade_request(path: &str, protocol: &str, extra_connection: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: shop.example\r\nx-user-id: u\r\nConnection: Upgrade{extra_connection}, close\r\n\
         Upgrade: {protocol}\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_configured_upgrades_are_tunnelled() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&support::config(&v1, &v2, 0.0, ""));
    let addr = gateway.addr("web");
    // h2c is forwarded as a plain request: the upstream sees no upgrade and answers normally.
    let plain = raw(addr, upgrade_request("/headers", "h2c", ", HTTP2-Settings")).await;
    assert!(plain.starts_with("HTTP/1.1 200"), "{plain:.200}");
    let seen = plain.to_ascii_lowercase();
    let body = &seen[seen.find("\r\n\r\n").unwrap()..];
    assert!(!body.contains("upgrade") && !body.contains("http2-settings"), "the upstream got\n{body}");
    // An upstream that switches anyway is refused: the client never gets a raw tunnel.
    let switched = raw(addr, upgrade_request("/ws", "h2c", ", HTTP2-Settings")).await;
    assert!(switched.starts_with("HTTP/1.1 502"), "h2c got {switched:.200}");
    // WebSocket, the default list, still is.
    let websocket = raw(addr, upgrade_request("/ws", "websocket", "")).await;
    assert!(websocket.starts_with("HTTP/1.1 101"), "websocket got {websocket:.200}");

    let closed = Gateway::start(&support::config(&v1, &v2, 0.0, "upgrades = []"));
    let refused = raw(closed.addr("web"), upgrade_request("/ws", "websocket", "")).await;
    assert!(refused.starts_with("HTTP/1.1 502"), "websocket with upgrades = [] got {refused:.200}");
}

/// The body of a raw response, lower case.
fn body_of(response: &str) -> String {
    response[response.find("\r\n\r\n").map_or(0, |i| i + 4)..].to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_or_missing_host_is_refused_and_host_is_kept() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&support::config(&v1, &v2, 0.0, ""));
    let addr = gateway.addr("web");
    let get = |head: &str| raw(addr, format!("GET /headers {head}x-user-id: u\r\nConnection: close\r\n\r\n"));

    let two_hosts = get("HTTP/1.1\r\nHost: shop.example\r\nHost: evil.example\r\n").await;
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "two Host headers got {two_hosts:.200}");
    let no_host = get("HTTP/1.1\r\n").await;
    assert!(no_host.starts_with("HTTP/1.1 400"), "HTTP/1.1 without Host got {no_host:.200}");
    assert_eq!(v1.hits(), 0, "a refused request reached the upstream");

    let hop = raw(addr, "GET /headers HTTP/1.1\r\nHost: shop.example\r\nConnection: host, close\r\n\r\n".into()).await;
    assert!(hop.starts_with("HTTP/1.1 200"), "{hop:.200}");
    assert!(body_of(&hop).contains("host: shop.example\n"), "Connection: host removed Host:\n{}", body_of(&hop));

    let http10 = get("HTTP/1.0\r\n").await;
    assert!(http10.starts_with("HTTP/1.1 200") || http10.starts_with("HTTP/1.0 200"), "{http10:.200}");
    assert!(
        body_of(&http10).contains(&format!("host: {}\n", v1.addr)),
        "HTTP/1.0 without Host did not get the upstream's:\n{}",
        body_of(&http10)
    );

    let chain =
        get("HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 203.0.113.1\r\nX-Forwarded-For: 203.0.113.2\r\n").await;
    assert!(
        body_of(&chain).contains("x-forwarded-for: 203.0.113.1, 203.0.113.2, 127.0.0.1\n"),
        "the second X-Forwarded-For line was not merged:\n{}",
        body_of(&chain)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_authority_that_disagrees_with_host_is_refused() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&support::config(&v1, &v2, 0.0, ""));
    let tcp = tokio::net::TcpStream::connect(gateway.addr("web")).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut send = async |host: &str| {
        let request = http::Request::builder()
            .uri(format!("http://shop.example:{}/headers", gateway.addr("web").port()))
            .header("host", host)
            .header("x-user-id", "h2")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap().status()
    };
    assert_eq!(send("evil.example").await, 400, ":authority shop.example with host evil.example");
    let same = format!("shop.example:{}", gateway.addr("web").port());
    assert_eq!(send(&same).await, 200);
}
