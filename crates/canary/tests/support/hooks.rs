//! A webhook receiver on loopback that records every request it gets and answers as told:
//! `500` to the first attempt of each delivery, `503` to everything, or `200`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Answer {
    /// `200` to everything.
    Accept = 0,
    /// `500` to the first attempt of each `x-canary-delivery` id, then `200`.
    FailFirst = 1,
    /// `503` to everything.
    Refuse = 2,
}

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// The receiver; stops when dropped.
pub struct HookReceiver {
    pub addr: SocketAddr,
    scheme: &'static str,
    answer: Arc<AtomicU8>,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HookReceiver {
    pub async fn start(answer: Answer) -> HookReceiver {
        HookReceiver::start_on(answer, None).await
    }

    /// A receiver that speaks only HTTPS, with the certificate `tls` serves.
    pub async fn start_tls(answer: Answer, tls: tokio_rustls::TlsAcceptor) -> HookReceiver {
        HookReceiver::start_on(answer, Some(tls)).await
    }

    async fn start_on(answer: Answer, tls: Option<tokio_rustls::TlsAcceptor>) -> HookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let answer = Arc::new(AtomicU8::new(answer as u8));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (a, r) = (answer.clone(), received.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (a, r, tls) = (a.clone(), r.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| receive(a.clone(), r.clone(), req));
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else { return };
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        HookReceiver { addr, scheme, answer, received, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub fn answer(&self, answer: Answer) {
        self.answer.store(answer as u8, Ordering::Relaxed);
    }

    /// Everything received on `path` so far, in order.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.received.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }

    /// What was received on `path` and answered `200`.
    pub fn accepted(&self, path: &str) -> Vec<Received> {
        self.received(path).into_iter().filter(|r| r.status == 200).collect()
    }
}

async fn receive(
    answer: Arc<AtomicU8>,
    received: Arc<Mutex<Vec<Received>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_owned();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = req.into_body().collect().await?.to_bytes().to_vec();
    let mut log = received.lock().unwrap();
    let id = headers.get("x-canary-delivery").cloned().unwrap_or_default();
    let earlier = log.iter().filter(|r| r.path == path && r.header("x-canary-delivery") == Some(&id)).count();
    let status = match answer.load(Ordering::Relaxed) {
        1 if earlier == 0 => 500,
        2 => 503,
        _ => 200,
    };
    log.push(Received { path, headers, body, status });
    Ok(Response::builder().status(StatusCode::from_u16(status).unwrap()).body(Full::new(Bytes::new())).unwrap())
}
