//! Demo upstreams: a small web app per version, each with assets only that version has.
//!
//! `/` serves a page that loads `/assets/app-<version>.js`; only that version has that file,
//! so a page whose script request lands on the other version gets a 404 — the classic
//! frontend-canary failure that session pins prevent.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A running demo upstream.
pub struct DemoUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DemoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DemoUpstream {
    /// Starts serving `version` on a free loopback port.
    pub async fn start(version: &str) -> std::io::Result<DemoUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Arc::new(App { version: version.to_owned() });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let app = app.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, std::convert::Infallible>(app.respond(&req)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(DemoUpstream { addr, task })
    }
}

struct App {
    version: String,
}

impl App {
    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let own_script = format!("/assets/app-{}.js", self.version);
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
