//! A service that calls another, the way a release train's frontend calls its API: every
//! request it gets makes one call to the next service's gateway, passing on `x-canary-cohort`
//! (and nothing of the user's: no key, no cookie), as an app passes on trace headers. It answers
//! with its own version and the one that answered the call, always `200`: a failing callee
//! shows in the callee's own counters, not in this service's.
//!
//! `/nopass/...` makes the same call without the header: what an app that does not pass it on
//! gets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The header a train's gateways send their apps, which the apps pass on.
pub const COHORT: &str = "x-canary-cohort";

/// One version of the calling service on a loopback port.
pub struct ChainApp {
    pub addr: SocketAddr,
    pub version: String,
    next: Arc<Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChainApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChainApp {
    pub async fn start(version: &str) -> ChainApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let next: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let client = reqwest::Client::new();
        let (v, n) = (version.to_owned(), next.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (v, n, client) = (v.clone(), n.clone(), client.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (v, client) = (v.clone(), client.clone());
                        let next = *n.lock().unwrap();
                        async move { Ok::<_, hyper::Error>(serve(&v, &client, next, &req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        ChainApp { addr, version: version.to_owned(), next, task }
    }

    /// Where its calls go: the next service's gateway.
    pub fn call_through(&self, gateway: SocketAddr) {
        *self.next.lock().unwrap() = Some(gateway);
    }
}

async fn serve(
    version: &str,
    client: &reqwest::Client,
    next: Option<SocketAddr>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let Some(next) = next else {
        return Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).body(Full::default()).unwrap();
    };
    let passes_on = !req.uri().path().starts_with("/nopass");
    let mut call = client.get(format!("http://{next}/"));
    let cohort = req.headers().get(COHORT).and_then(|v| v.to_str().ok());
    if passes_on && let Some(cohort) = cohort {
        call = call.header(COHORT, cohort);
    }
    let (status, called) = match call.send().await {
        Ok(answer) => {
            let served_by = answer.headers().get("x-served-by").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let seen = answer.headers().get("x-seen-cohort").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            (answer.status().as_u16(), (served_by, seen))
        }
        Err(_) => (502, (String::new(), String::new())),
    };
    Response::builder()
        .header("x-served-by", version)
        .header("x-called-status", status.to_string())
        .header("x-called-served-by", called.0)
        .header("x-called-saw-cohort", called.1)
        .header("x-got-cohort", cohort.unwrap_or(""))
        .body(Full::new(Bytes::from(version.to_owned())))
        .unwrap()
}
