//! The gateway's own HTTP/1.1 server side through a real gateway process: pipelined requests
//! answered in order, a request with a body handing the connection to hyper's server midway,
//! the same over TLS, a head that arrives in pieces, `HEAD`, `Connection: close`, and a client
//! that leaves while its request is answered.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::{Gateway, Upstream, config};

/// Writes `pieces` to a new connection, pausing between them, and reads until the gateway
/// closes it.
fn exchange(addr: SocketAddr, pieces: &[&[u8]], pause: Duration) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for piece in pieces {
        stream.write_all(piece).unwrap();
        std::thread::sleep(pause);
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// The status lines of `text`, in order (a body may run into the next one).
fn statuses(text: &str) -> Vec<&str> {
    text.match_indices("HTTP/1.1 ").map(|(at, _)| text[at..].split("\r\n").next().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_across_the_handover_to_hyper() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 50.0, ""));
    let addr = gateway.addr("web");
    let user = "x-user-id: pipelined\r\nHost: shop";
    let requests = format!(
        "GET /status/201 HTTP/1.1\r\n{user}\r\n\r\n\
         HEAD /status/202 HTTP/1.1\r\n{user}\r\n\r\n\
         POST /status/203 HTTP/1.1\r\n{user}\r\nContent-Length: 5\r\n\r\nhello\
         GET /status/206 HTTP/1.1\r\n{user}\r\nConnection: close\r\n\r\n"
    );
    let text =
        tokio::task::spawn_blocking(move || exchange(addr, &[requests.as_bytes()], Duration::ZERO)).await.unwrap();
    assert_eq!(
        statuses(&text),
        [
            "HTTP/1.1 201 Created",
            "HTTP/1.1 202 Accepted",
            "HTTP/1.1 203 Non Authoritative Information",
            "HTTP/1.1 206 Partial Content"
        ],
        "{text}"
    );
    let served: Vec<&str> = text.split("\r\n").filter(|line| line.starts_with("x-served-by: ")).collect();
    assert_eq!(served.len(), 4, "{text}");
    assert!(served.iter().all(|line| *line == served[0]), "one user, one version: {served:?}");
    let version = served[0].trim_start_matches("x-served-by: ");
    let head = text.split("HTTP/1.1 ").nth(2).unwrap();
    assert!(head.contains("content-length: 2\r\n") && head.ends_with("\r\n\r\n"), "HEAD has no body: {head:?}");
    let last = text.split("HTTP/1.1 ").last().unwrap();
    assert!(last.contains("\r\nconnection: close\r\n"), "{last:?}");
    assert!(last.ends_with(&format!("\r\n\r\n{version}")), "the body, then the close: {last:?}");
    assert!(text.contains("\r\ndate: "), "every answer has a date: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_in_pieces_and_a_kept_alive_connection_are_served() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 50.0, ""));
    let addr = gateway.addr("web");
    let text = tokio::task::spawn_blocking(move || {
        let first = b"GET /headers HTTP/1.1\r\nHost: shop\r\nx-user-id: slow\r\n\r\n";
        let mut pieces: Vec<&[u8]> = first.chunks(7).collect();
        pieces.push(b"GET /status/204 HTTP/1.1\r\nHost: shop\r\nx-user-id: slow\r\nConnection: close\r\n\r\n");
        exchange(addr, &pieces, Duration::from_millis(20))
    })
    .await
    .unwrap();
    assert_eq!(statuses(&text), ["HTTP/1.1 200 OK", "HTTP/1.1 204 No Content"], "{text}");
    assert!(text.contains("\nx-user-id: slow\n"), "the upstream got the whole head: {text}");
    assert!(text.contains("\nx-forwarded-for: 127.0.0.1\n"), "{text}");
    let last = text.split("HTTP/1.1 ").last().unwrap();
    assert!(last.ends_with("\r\n\r\n") && !last.contains("content-length"), "a 204 has no body: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_own_side_and_hyper_s_share_one_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let dir = tempfile::tempdir().unwrap();
    let (tls, cert) = support::self_signed_tls(dir.path());
    let gateway = Gateway::start(&config(&v1, &v2, 0.0, &tls));
    let connector = support::tls_connector(&cert, b"http/1.1");
    let tcp = tokio::net::TcpStream::connect(gateway.addr("web")).await.unwrap();
    let mut stream = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    let user = "Host: localhost\r\nx-user-id: tls-user";
    let first = format!("GET /status/201 HTTP/1.1\r\n{user}\r\n\r\n");
    stream.write_all(first.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).ends_with("v1") {
        let mut chunk = [0; 4096];
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "closed after {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..read]);
    }
    let rest = format!(
        "PUT /status/202 HTTP/1.1\r\n{user}\r\nContent-Length: 3\r\n\r\nabc\
         GET /status/203 HTTP/1.1\r\n{user}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(rest.as_bytes()).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut seen)).await.unwrap();
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert_eq!(
        statuses(&text),
        ["HTTP/1.1 201 Created", "HTTP/1.1 202 Accepted", "HTTP/1.1 203 Non Authoritative Information"],
        "{text}"
    );
    let first_answer = text.split("HTTP/1.1 ").nth(1).unwrap();
    assert!(first_answer.contains("; Secure"), "a pin over TLS is Secure: {first_answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_request_has_its_upstream_exchange_dropped() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 0.0, ""));
    let addr = gateway.addr("web");
    let request = b"GET /slow/4000 HTTP/1.1\r\nHost: shop\r\nx-user-id: leaver\r\n\r\n";
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while v1.open_connections() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the request never reached the upstream");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stream);
    let left = tokio::time::Instant::now();
    while v1.open_connections() > 0 {
        assert!(left.elapsed() < Duration::from_secs(2), "the upstream still works for a client that left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
