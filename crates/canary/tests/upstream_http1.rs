//! The gateway's HTTP/1.1 exchange with upstreams, through a real gateway process, against an
//! upstream that writes its answers byte for byte: every way a response body can be framed,
//! interim responses, connection reuse and its limits, an upstream that closes a kept-alive
//! connection, and broken answers.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::{Gateway, client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers each request with the bytes its path asks for.
struct ScriptedUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedUpstream {
    async fn start() -> ScriptedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                tokio::spawn(serve(stream, n));
            }
        });
        ScriptedUpstream { addr, accepted, task }
    }

    fn connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// One request head and its body, read off `stream`; `None` when the peer closed.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, String, Vec<u8>)> {
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0usize);
    while buf.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        buf.extend_from_slice(&chunk[..n]);
    }
    let body: Vec<u8> = buf.drain(..length).collect();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next()?.to_owned(), words.next()?.to_owned());
    Some((method, path, body))
}

/// Answers requests on one connection; `conn` is its number, sent as `x-conn`.
async fn serve(mut stream: TcpStream, conn: u64) {
    let mut buf = Vec::new();
    let mut hang_up_next = false;
    while let Some((method, path, body)) = read_request(&mut stream, &mut buf).await {
        if hang_up_next {
            // What a keep-alive timeout does to a request that crossed it: read, then closed.
            return;
        }
        let ok = |extra: &str, body: &str| {
            format!("HTTP/1.1 200 OK\r\nx-conn: {conn}\r\n{extra}content-length: {}\r\n\r\n{body}", body.len())
        };
        let reply = match path.as_str() {
            "/length" => ok("", "hello"),
            "/chunked" => format!(
                "HTTP/1.1 200 OK\r\nx-conn: {conn}\r\ntransfer-encoding: chunked\r\n\r\n\
                 5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nx-sum: 12\r\n\r\n"
            ),
            "/until-close" => {
                let _ =
                    stream.write_all(format!("HTTP/1.1 200 OK\r\nx-conn: {conn}\r\n\r\nall of it").as_bytes()).await;
                return;
            }
            "/close" => ok("connection: close\r\n", "bye"),
            "/early-hints" => format!("HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n{}", ok("", "hinted")),
            "/no-content" => format!("HTTP/1.1 204 No Content\r\nx-conn: {conn}\r\n\r\n"),
            "/head" if method == "HEAD" => format!("HTTP/1.1 200 OK\r\nx-conn: {conn}\r\ncontent-length: 5\r\n\r\n"),
            "/then-hang-up" => {
                let _ = stream.write_all(ok("", "last").as_bytes()).await;
                return;
            }
            "/hang-up-on-the-next" => {
                hang_up_next = true;
                ok("", "armed")
            }
            "/bad-chunk" => "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_owned(),
            "/short" => "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf".to_owned(),
            "/garbage" => "SSH-2.0-OpenSSH_9.2\r\n\r\n".to_owned(),
            "/echo" => ok("", &format!("{method} {}", String::from_utf8_lossy(&body))),
            "/big" => ok("", &"x".repeat(1 << 20)),
            "/slow-body" => {
                let head = format!("HTTP/1.1 200 OK\r\nx-conn: {conn}\r\ncontent-length: 10\r\n\r\nfirst");
                let _ = stream.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                "-last".to_owned()
            }
            _ => ok("", "?"),
        };
        if stream.write_all(reply.as_bytes()).await.is_err() || path == "/close" || path == "/short" {
            return;
        }
    }
}

fn config(upstream: &ScriptedUpstream) -> String {
    support::stable_only_config_at(upstream.addr, "")
}

async fn get(gateway: &Gateway, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let exchange = async {
        let response = client().get(gateway.url("web", path)).send().await.unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        (status, headers, response.text().await.unwrap_or_default())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.unwrap_or_else(|_| panic!("GET {path} hung"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_framing_reaches_the_client_whole() {
    let upstream = ScriptedUpstream::start().await;
    let gateway = Gateway::start(&config(&upstream));
    assert_eq!(get(&gateway, "/length").await.2, "hello");
    let (status, _, body) = get(&gateway, "/chunked").await;
    assert_eq!((status, body.as_str()), (200, "hello world!"), "chunks with an extension and a trailer");
    assert_eq!(get(&gateway, "/until-close").await.2, "all of it");
    assert_eq!(get(&gateway, "/early-hints").await.2, "hinted", "a 103 before the answer is skipped");
    assert_eq!(get(&gateway, "/no-content").await.0, 204);
    assert_eq!(get(&gateway, "/slow-body").await.2, "first-last", "a body that arrives in two parts");
    let big = get(&gateway, "/big").await.2;
    assert!(big.len() == 1 << 20 && big.bytes().all(|b| b == b'x'), "a 1 MiB body arrived as {} bytes", big.len());
    let head = client().head(gateway.url("web", "/head")).send().await.unwrap();
    assert_eq!((head.status().as_u16(), head.headers()["content-length"].to_str().unwrap()), (200, "5"));
    let post = client().post(gateway.url("web", "/echo")).body("order=1").send().await.unwrap();
    assert_eq!(post.text().await.unwrap(), "POST order=1", "a request body goes upstream whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_unless_the_answer_forbids_it() {
    let upstream = ScriptedUpstream::start().await;
    let gateway = Gateway::start(&config(&upstream));
    let mut conns = std::collections::HashSet::new();
    for path in ["/length", "/chunked", "/no-content", "/length", "/early-hints"].iter().cycle().take(200) {
        let (status, headers, _) = get(&gateway, path).await;
        assert!(status < 300, "{path}: {status}");
        conns.insert(headers["x-conn"].to_str().unwrap().to_owned());
    }
    let head = client().head(gateway.url("web", "/head")).send().await.unwrap();
    conns.insert(head.headers()["x-conn"].to_str().unwrap().to_owned());
    assert_eq!(conns.len(), 1, "sequential requests of every framing share one upstream connection: {conns:?}");
    let before = upstream.connections();
    assert_eq!(get(&gateway, "/close").await.2, "bye");
    assert_eq!(get(&gateway, "/until-close").await.2, "all of it");
    get(&gateway, "/length").await;
    assert_eq!(upstream.connections(), before + 2, "after `connection: close` and a close-delimited body, a new one");
    let metrics = gateway.metrics().await;
    let pooled =
        metric(&metrics, r#"canary_upstream_connections_total{service="web",version="v1",connection="pooled"}"#);
    let new = metric(&metrics, r#"canary_upstream_connections_total{service="web",version="v1",connection="new"}"#);
    assert_eq!(pooled + new, 204, "{metrics}");
    assert_eq!(new, 3, "one connection at the start and one after each of the two closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_hangs_up_a_kept_alive_connection_costs_the_next_request_nothing() {
    let upstream = ScriptedUpstream::start().await;
    let gateway = Gateway::start(&config(&upstream));
    for round in 0..20 {
        assert_eq!(get(&gateway, "/then-hang-up").await.2, "last");
        // Either the pool sees the close first, or the request meets it and goes out again.
        if round % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for _ in 0..5 {
        assert_eq!(get(&gateway, "/hang-up-on-the-next").await.2, "armed");
        let (status, _, body) = get(&gateway, "/length").await;
        assert_eq!((status, body.as_str()), (200, "hello"), "a GET that met the close goes out again");
    }
    let metrics = gateway.metrics().await;
    let failures = metric(&metrics, r#"canary_upstream_errors_total{service="web",version="v1",kind="reset"}"#);
    assert_eq!(failures, 0, "{metrics}");
    assert_eq!(get(&gateway, "/hang-up-on-the-next").await.2, "armed");
    let post = client().post(gateway.url("web", "/echo")).send().await.unwrap();
    assert_eq!(post.status(), 502, "a POST the upstream may have acted on is never sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answers_are_errors_and_the_gateway_keeps_serving() {
    let upstream = ScriptedUpstream::start().await;
    let gateway = Gateway::start(&config(&upstream));
    let (status, _, body) = get(&gateway, "/garbage").await;
    assert_eq!((status, body.as_str()), (502, "upstream sent an invalid response (version v1)\n"));
    for path in ["/bad-chunk", "/short"] {
        // The client sees the response cut off, or no response when the break came before the
        // gateway wrote the head; never a complete-looking one.
        if let Ok(response) = client().get(gateway.url("web", path)).send().await {
            assert_eq!(response.status(), 200, "{path}: the head was fine");
            assert!(response.bytes().await.is_err(), "{path}: a broken body must not look complete to the client");
        }
    }
    assert_eq!(get(&gateway, "/length").await.2, "hello");
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(series)).map_or(0, |v| v.trim().parse().unwrap())
}
