//! Demo upstreams: a small web app per version, each with assets only that version has, and a
//! behaviour the scenario gives it (errors, latency, a crash).
//!
//! `/` serves a page that loads `/assets/app-<version>.js`; only that version has that file,
//! so a page whose script request lands on the other version gets a 404 — the classic
//! frontend-canary failure that session pins prevent.
//!
//! Latency is drawn per request (1 ms plus an exponential tail with a 2 ms mean, so stable's
//! p99 sits near 10 ms) and optionally multiplied by a slowdown factor; errors are independent
//! per request, so the judge sees a rate, not a few unlucky users.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Marks a `500` the app answers as its normal baseline (`baseline`) or because of the
/// scenario's fault (`fault`), so the demo's summary can count the harm a rollout did apart from
/// the errors the app always has.
pub const ERROR_KIND_HEADER: &str = "x-demo-error";

/// How a demo version behaves.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Share of requests answered `500` in normal operation (both versions have it).
    pub error_rate: f64,
    /// Further share of requests answered `500` because of a fault.
    pub fault_error_rate: f64,
    /// Every latency is multiplied by a factor drawn uniformly from this range.
    pub slowdown: (f64, f64),
}

impl Behaviour {
    /// The baseline both versions share: 1 % errors, normal speed.
    pub const BASELINE: Behaviour = Behaviour { error_rate: 0.01, fault_error_rate: 0.0, slowdown: (1.0, 1.0) };
}

/// A running demo upstream.
pub struct DemoUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    crashed: watch::Sender<bool>,
}

impl Drop for DemoUpstream {
    fn drop(&mut self) {
        self.crash();
    }
}

impl DemoUpstream {
    /// Starts serving `version` with `behaviour` on a free loopback port.
    pub async fn start(version: &str, behaviour: Behaviour) -> std::io::Result<DemoUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Arc::new(App { version: version.to_owned(), behaviour });
        let (crashed, on_crash) = watch::channel(false);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let mut on_crash = on_crash.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, std::convert::Infallible>(app.respond(req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    // The guard `wait_for` returns is not `Send`; drop it inside the block.
                    let crash = async move {
                        let _ = on_crash.wait_for(|c| *c).await;
                    };
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        () = crash => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
        });
        Ok(DemoUpstream { addr, accept, crashed })
    }

    /// The server dies: its accept loop ends and its listener closes, so every new connection is
    /// refused; open keep-alive connections close as soon as the response they are sending is
    /// out. Requests the gateway had not yet sent are the ones it can move to stable; a request
    /// already sent when a real process dies would be lost with it, which this model leaves out.
    pub fn crash(&self) {
        self.accept.abort();
        let _ = self.crashed.send(true);
    }
}

struct App {
    version: String,
    behaviour: Behaviour,
}

impl App {
    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (base, slowdown, failed) = {
            // The thread-local generator is not `Send`; draw everything before awaiting.
            let mut rng = rand::rng();
            let u: f64 = rand::Rng::random(&mut rng);
            let base = 1.0 - 2.0 * (1.0 - u).ln();
            let (low, high) = self.behaviour.slowdown;
            let slowdown = if high > low { rand::Rng::random_range(&mut rng, low..high) } else { low };
            let draw: f64 = rand::Rng::random(&mut rng);
            let failed = if draw < self.behaviour.error_rate {
                Some("baseline")
            } else if draw < self.behaviour.error_rate + self.behaviour.fault_error_rate {
                Some("fault")
            } else {
                None
            };
            (base, slowdown, failed)
        };
        tokio::time::sleep(Duration::from_secs_f64(base * slowdown / 1000.0)).await;
        let path = req.uri().path();
        let own_script = format!("/assets/app-{}.js", self.version);
        if let Some(kind) = failed {
            return Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .header(ERROR_KIND_HEADER, kind)
                .body(Full::new(Bytes::from_static(b"internal error")))
                .expect("static response");
        }
        let (status, body) = if path == "/" {
            (StatusCode::OK, format!("<html><script src=\"{own_script}\"></script>{}</html>", self.version))
        } else if path == own_script {
            (StatusCode::OK, format!("console.log('{}')", self.version))
        } else {
            (StatusCode::NOT_FOUND, "not found".to_owned())
        };
        Response::builder().status(status).body(Full::new(Bytes::from(body))).expect("static response")
    }
}
