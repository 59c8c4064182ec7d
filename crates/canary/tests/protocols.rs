//! Protocols and robustness through a real gateway process: WebSocket, HTTP/2 (h2c and TLS),
//! bad requests, several upstream addresses, a dead canary and graceful shutdown.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use support::{Gateway, Upstream, client, config, get_as, version_of};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_flow_and_stay_on_their_version() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 100.0, ""));
    let mut request = format!("ws://{}/ws", gateway.addr("web")).into_client_request().unwrap();
    request.headers_mut().insert("x-user-id", "socket-user".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.expect("upgrade through the gateway");
    assert_eq!(response.headers()["x-canary-version"], "v2");
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), format!("v2:hello {i}"));
        if i == 1 {
            // The open socket belongs to the version that accepted it, whatever the weight says.
            gateway.set_weight("web", 0.0).await;
        }
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext_works() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 0.0, ""));
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for i in 0..20 {
        let response =
            h2.get(gateway.url("web", &format!("/item/{i}"))).header("x-user-id", "h2-user").send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        assert_eq!(version_of(&response), "v1");
        assert_eq!(response.text().await.unwrap(), "v1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_negotiates_http2_through_alpn() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let dir = tempfile::tempdir().unwrap();
    let (tls, cert) = support::self_signed_tls(dir.path());
    let gateway = Gateway::start(&config(&v1, &v2, 0.0, &tls));

    let connector = support::tls_connector(&cert, b"h2");
    let tcp = tokio::net::TcpStream::connect(gateway.addr("web")).await.unwrap();
    let tls_stream = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    assert_eq!(tls_stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls_stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = http::Request::builder()
        .uri(format!("https://localhost:{}/", gateway.addr("web").port()))
        .header("x-user-id", "tls-user")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Secure"), "pin cookie over TLS must be Secure: {cookie}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"v1");
}

fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clean_errors_and_the_gateway_keeps_serving() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 50.0, ""));
    let addr = gateway.addr("web");
    let huge = format!("GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n", "a".repeat(100 * 1024));
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let answers = tokio::task::spawn_blocking(move || {
        (
            raw_exchange(addr, huge.as_bytes()),
            raw_exchange(addr, &garbage),
            raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"),
            raw_exchange(addr, b"BREW /pot HTCPCP/1.0\r\n\r\n"),
            raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\nx-user-id: \xff\xfe\r\nCookie: canary_pin=\xff.\xfe.9.\x80; uid=\xc3\r\nConnection: close\r\n\r\n"),
        )
    })
    .await
    .unwrap();
    assert!(answers.0.starts_with("HTTP/1.1 431"), "huge header: {:.80}", answers.0);
    for other in [&answers.1, &answers.2, &answers.3] {
        assert!(other.is_empty() || other.starts_with("HTTP/1.1 400"), "garbage got: {other:.80}");
    }
    assert!(answers.4.starts_with("HTTP/1.1 200"), "non-UTF-8 key and cookies: {:.80}", answers.4);
    let client = client();
    for cookie in
        ["canary_pin=", "canary_pin=\"\"", "canary_pin=a.b.c.d.e.f", ";;;=;=a;canary_pin", "uid=\"unterminated"]
    {
        let response =
            client.get(gateway.url("web", "/")).header("cookie", cookie).header("x-user-id", "u").send().await.unwrap();
        assert_eq!(response.status(), 200, "cookie {cookie:?}");
    }
    assert_eq!(get_as(&client, &gateway, "still-fine", None).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_addresses_are_balanced_and_a_dead_one_is_ejected() {
    let (a, b) = (Upstream::start("v1").await, Upstream::start("v1").await);
    let dead = Upstream::start("v1").await;
    dead.stop();
    let v2 = Upstream::start("v2").await;
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[gateway]
workers = 1
[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = {{ version = "v1", upstreams = ["{}", "{}", "{}"] }}
canary = {{ version = "v2", upstreams = ["{}"] }}
eject = {{ failures = 2, duration = "1m" }}
"#,
        a.addr, b.addr, dead.addr, v2.addr
    );
    let gateway = Gateway::start(&text);
    let client = client();
    for i in 0..300 {
        let response = get_as(&client, &gateway, &format!("user-{i}"), None).await;
        assert_eq!(response.status(), 200, "request {i} failed although two addresses are alive");
    }
    assert_eq!(a.hits() + b.hits(), 300);
    assert!(a.hits() > 100 && b.hits() > 100, "unbalanced: {} vs {}", a.hits(), b.hits());
    let metrics = gateway.metrics().await;
    let refused: u64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("canary_upstream_errors_total{service=\"web\",version=\"v1\",kind=\"connect_refused\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((2..=4).contains(&refused), "dead address tried {refused} times: it was not ejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_canary_costs_users_nothing() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    v2.stop();
    let gateway = Gateway::start(&config(&v1, &v2, 50.0, ""));
    let client = client();
    for i in 0..200 {
        let response = get_as(&client, &gateway, &format!("user-{i}"), None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(version_of(&response), "v1");
    }
    let post = client.post(gateway.url("web", "/")).header("x-user-id", "user-1").body("payload").send().await.unwrap();
    assert_eq!(post.status(), 200, "a request that never reached the canary is safe to re-send");
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("canary_retries_total{service=\"web\",from_version=\"v2\",to_version=\"v1\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let mut gateway = Gateway::start(&config(&v1, &v2, 0.0, ""));
    let url = gateway.url("web", "/slow/1500");
    let in_flight = tokio::spawn(async move { client().get(url).header("x-user-id", "late").send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.terminate();
    let response = in_flight.await.unwrap().expect("in-flight request completes");
    assert_eq!(response.status(), 200);
    let status = tokio::task::spawn_blocking(move || gateway.wait(Duration::from_secs(10))).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_breaker_waits_for_a_second_user_s_failures() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 50.0, ""));
    let client = client();
    let mut canary_users = Vec::new();
    for i in 0..100 {
        let user = format!("user-{i}");
        if version_of(&get_as(&client, &gateway, &user, None).await) == "v2" {
            canary_users.push(user);
        }
    }
    assert!(canary_users.len() >= 2, "{canary_users:?}");
    let tripped = || async {
        let (_, body) = gateway.get("/api/v1/services/web").await;
        body["data"]["canaryTripped"] == true
    };
    v2.fail_with(503);
    // One user whose every request fails: a heavy, error-prone user and a canary that fails
    // everyone look alike to a gateway that sees no one else on the canary.
    for _ in 0..40 {
        assert_eq!(get_as(&client, &gateway, &canary_users[0], None).await.status(), 503);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!tripped().await, "one user's failures tripped the breaker");
    for _ in 0..30 {
        get_as(&client, &gateway, &canary_users[1], None).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !tripped().await && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tripped().await, "a second user's failures did not trip it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_breaker_sends_an_erroring_canary_s_users_to_stable() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    v2.fail_with(503);
    let gateway = Gateway::start(&config(&v1, &v2, 50.0, ""));
    let client = client();
    let mut canary_answers = 0;
    for i in 0..400 {
        let response = get_as(&client, &gateway, &format!("user-{}", i % 100), None).await;
        if version_of(&response) == "v2" {
            canary_answers += 1;
        }
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert!(canary_answers >= 20, "the breaker tripped before it had enough evidence ({canary_answers})");
    let (_, body) = gateway.get("/api/v1/services/web").await;
    assert_eq!(body["data"]["canaryTripped"], true, "{body}");
    assert!(body["data"]["tripReason"].as_str().unwrap().contains("error ratio"), "{body}");
    for i in 0..100 {
        let response = get_as(&client, &gateway, &format!("user-{i}"), None).await;
        assert_eq!(version_of(&response), "v1", "a tripped canary still got traffic");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_dies_mid_request_costs_a_get_nothing() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 100.0, ""));
    let client = client();
    let get = client.get(gateway.url("web", "/slow/1500")).header("x-user-id", "mid-flight").send();
    let post = client.post(gateway.url("web", "/slow/1500")).header("x-user-id", "mid-flight").body("order").send();
    let crash = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        v2.stop();
    };
    let (get, post, ()) = tokio::join!(get, post, crash);
    let get = get.unwrap();
    assert_eq!(get.status(), 200, "a GET the canary dropped was not re-sent to stable");
    assert_eq!(version_of(&get), "v1");
    let post = post.unwrap();
    assert_eq!(post.status(), 502, "a POST may have had effects: it must not be sent twice");
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(r#"canary_upstream_errors_total{service="web",version="v2",kind="reset"} 2"#),
        "{metrics}"
    );
}
