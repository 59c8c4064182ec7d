//! `judge-harness upstream`: one version of the test app, as its own process.
//!
//! Every answer waits a log-normal delay (tokio's timer rounds it up to whole milliseconds,
//! which is part of the real jitter) and is a `500` with a probability that depends on the
//! user: error-prone users (a hash of `x-user-id`) fail at the prone rate, the others at the
//! base rate times the multiplier. Errors are drawn per request, so a user's errors cluster
//! only through who the user is — as with real flaky accounts.
//!
//! The process exits when its stdin closes, so it never outlives the harness that started it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand_distr::{Distribution, LogNormal};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::cli::UpstreamArgs;
use crate::users::is_error_prone;

/// What one version does, checked.
#[derive(Debug, Clone)]
pub struct Behaviour {
    version: String,
    base_error_rate: f64,
    prone_error_rate: f64,
    prone_share: f64,
    delay_ms: LogNormal<f64>,
}

impl Behaviour {
    /// The behaviour the arguments describe; a probability out of 0–1 is an error.
    pub fn new(args: &UpstreamArgs) -> anyhow::Result<Behaviour> {
        let app = &args.app;
        let probability = |name: &str, p: f64| {
            anyhow::ensure!((0.0..=1.0).contains(&p), "{name} must be between 0 and 1, not {p}");
            Ok(p)
        };
        anyhow::ensure!(args.error_multiplier >= 0.0, "--error-multiplier must not be negative");
        let base_error_rate =
            probability("--base-error-rate × --error-multiplier", app.base_error_rate * args.error_multiplier)?;
        anyhow::ensure!(app.latency_ms > 0.0, "--latency-ms must be above 0");
        anyhow::ensure!(app.latency_sigma >= 0.0, "--latency-sigma must not be negative");
        Ok(Behaviour {
            version: args.version.clone(),
            base_error_rate,
            prone_error_rate: probability("--prone-error-rate", app.prone_error_rate)?,
            prone_share: probability("--prone-share", app.prone_share)?,
            delay_ms: LogNormal::new(app.latency_ms.ln(), app.latency_sigma).context("latency distribution")?,
        })
    }

    /// The probability that a request of `user` fails.
    pub fn error_rate(&self, user: &str) -> f64 {
        if is_error_prone(user, self.prone_share) { self.prone_error_rate } else { self.base_error_rate }
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let user = req.headers().get("x-user-id").and_then(|v| v.to_str().ok()).unwrap_or("");
        let (delay_ms, failed) = {
            // The thread-local generator is not `Send`: draw before awaiting.
            let mut rng = rand::rng();
            (self.delay_ms.sample(&mut rng), rand::Rng::random::<f64>(&mut rng) < self.error_rate(user))
        };
        tokio::time::sleep(Duration::from_secs_f64(delay_ms / 1000.0)).await;
        let (status, body) = if failed {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_owned())
        } else {
            (StatusCode::OK, format!("{{\"version\":\"{}\"}}", self.version))
        };
        Response::builder().status(status).body(Full::new(Bytes::from(body))).expect("static response")
    }
}

/// Serves until stdin closes.
pub fn serve(args: &UpstreamArgs) -> anyhow::Result<()> {
    let behaviour = Arc::new(Behaviour::new(args)?);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener =
            TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
        println!("listening http://{}", listener.local_addr()?);
        tokio::select! {
            () = accept(listener, behaviour) => Ok(()),
            () = stdin_closed() => Ok(()),
        }
    })
}

async fn accept(listener: TcpListener, behaviour: Arc<Behaviour>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let behaviour = behaviour.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let behaviour = behaviour.clone();
                async move { Ok::<_, Infallible>(behaviour.respond(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Resolves when the parent closes our stdin (or dies).
async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buffer = [0u8; 64];
    while matches!(stdin.read(&mut buffer).await, Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::AppArgs;

    fn args(multiplier: f64) -> UpstreamArgs {
        UpstreamArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            version: "v1".into(),
            error_multiplier: multiplier,
            app: AppArgs {
                base_error_rate: 0.01,
                prone_error_rate: 0.10,
                prone_share: 0.03,
                latency_ms: 2.0,
                latency_sigma: 0.5,
            },
        }
    }

    #[test]
    fn the_multiplier_raises_only_the_users_that_are_not_error_prone() {
        let healthy = Behaviour::new(&args(1.0)).unwrap();
        let worse = Behaviour::new(&args(5.0)).unwrap();
        let users: Vec<String> = (1..=2000).map(|k| crate::users::user_id("svc-1", 1, k)).collect();
        let prone = users.iter().find(|u| is_error_prone(u, 0.03)).unwrap();
        let normal = users.iter().find(|u| !is_error_prone(u, 0.03)).unwrap();
        assert_eq!((healthy.error_rate(prone), worse.error_rate(prone)), (0.10, 0.10));
        assert_eq!(healthy.error_rate(normal), 0.01);
        assert!((worse.error_rate(normal) - 0.05).abs() < 1e-12);
    }

    #[test]
    fn a_rate_above_one_is_refused_with_its_flags() {
        let err = Behaviour::new(&args(200.0)).unwrap_err().to_string();
        assert!(err.contains("--base-error-rate × --error-multiplier"), "{err}");
    }
}
