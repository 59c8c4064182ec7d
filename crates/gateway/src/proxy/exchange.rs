//! Phase 3, **exchange**: the request sent to its version, and to stable again when the canary
//! fails in a way that makes that safe.
//!
//! A request is tried on the version's healthy addresses in turn while none of its bytes has
//! left: a refused or timed-out connection, or a pooled connection found dead, moves it on to
//! the next address (a dead pooled connection first gets one new connection to the same
//! address). Whether a failure may be sent again elsewhere is decided where it happens and
//! carried on the [`ExchangeError`]; the phase only asks [`ExchangeError::retry_safe`].

use canary_core::Side;
use canary_core::metrics::UpstreamErrorKind;
use http::{Request, Response};
use hyper::body::Incoming;

use super::RequestCtx;
use super::upstream_request::Replay;
use crate::body::UpstreamBody;
use crate::headers::X_CANARY_VERSION;
use crate::metrics::UpstreamErrorTally;
use crate::pool::{Conn, checkout, connect};
use crate::service::{ServiceSettings, VersionTarget};
use crate::upstream::Upstream;

/// Why an exchange with a version produced no response.
pub enum ExchangeError {
    /// No address took the request: each refused or timed out connecting, or its connection
    /// died before the request left. Nothing was sent, so the request comes back untouched.
    NotSent {
        /// The last failure.
        kind: UpstreamErrorKind,
        /// The request, as it was handed in.
        request: Request<UpstreamBody>,
    },
    /// The request was sent and the exchange failed: no answer in time, a dropped
    /// connection, a response that is not HTTP.
    Failed {
        /// The failure.
        kind: UpstreamErrorKind,
        /// The request again, when it is a bodiless GET, HEAD or OPTIONS that the upstream
        /// dropped before answering: sending it a second time changes nothing.
        replay: Option<Request<UpstreamBody>>,
    },
}

impl ExchangeError {
    fn failed(kind: UpstreamErrorKind, replay: Option<Replay>) -> ExchangeError {
        let replay = replay.filter(|_| kind == UpstreamErrorKind::Reset).map(Replay::into_request);
        ExchangeError::Failed { kind, replay }
    }

    /// What went wrong.
    pub fn kind(&self) -> UpstreamErrorKind {
        match self {
            ExchangeError::NotSent { kind, .. } | ExchangeError::Failed { kind, .. } => *kind,
        }
    }

    /// Whether the request may be sent to another version: its bytes never left, or it is a
    /// bodiless idempotent request the upstream dropped before answering.
    pub fn retry_safe(&self) -> bool {
        matches!(self, ExchangeError::NotSent { .. } | ExchangeError::Failed { replay: Some(_), .. })
    }

    /// The request to send again, when that is safe; else the error itself.
    #[allow(
        clippy::result_large_err,
        reason = "the error is as large as the request it hands back; boxing would allocate on every failed exchange"
    )]
    pub fn into_retry(self) -> Result<Request<UpstreamBody>, ExchangeError> {
        match self {
            ExchangeError::NotSent { request, .. } | ExchangeError::Failed { replay: Some(request), .. } => Ok(request),
            failed => Err(failed),
        }
    }
}

impl std::fmt::Debug for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let variant = match self {
            ExchangeError::NotSent { .. } => "NotSent",
            ExchangeError::Failed { .. } => "Failed",
        };
        f.debug_struct(variant).field("kind", &self.kind()).field("retry_safe", &self.retry_safe()).finish()
    }
}

/// What an exchange produced: a response head and the connection it came over, or why not.
pub(super) type Exchanged = Result<(Response<Incoming>, Conn), ExchangeError>;

/// Sends the request to the decided version; when that is the canary and it failed in a
/// retry-safe way, sends it to stable instead.
pub(super) async fn exchange(
    ctx: &mut RequestCtx<'_>,
    req: Request<UpstreamBody>,
    replay: Option<Replay>,
) -> Exchanged {
    let settings = ctx.settings();
    let decided = ctx.route.target(ctx.side);
    let error = match send(settings, decided, &mut ctx.outcome.errors, req, replay).await {
        Err(error) if ctx.side == Side::Canary && error.retry_safe() => error,
        answered_or_final => return answered_or_final,
    };
    let mut again = error.into_retry()?;
    let stable = &ctx.route.stable;
    again.headers_mut().insert(X_CANARY_VERSION.clone(), stable.header.clone());
    ctx.side = Side::Stable;
    let errors = ctx.outcome.retry.insert(UpstreamErrorTally::default());
    send(settings, stable, errors, again, None).await
}

/// Sends `req` to the first address of `target` that takes it, noting each failure in
/// `errors` and in the address's passive health.
async fn send(
    settings: &ServiceSettings,
    target: &VersionTarget,
    errors: &mut UpstreamErrorTally,
    mut req: Request<UpstreamBody>,
    replay: Option<Replay>,
) -> Exchanged {
    let mut last = UpstreamErrorKind::ConnectOther;
    for upstream in target.upstreams.candidates() {
        match attempt(settings, upstream, req).await {
            Attempt::Answered(response, conn) => {
                upstream.record_success();
                return Ok((response, conn));
            }
            Attempt::Unsent(kind, unsent) => {
                upstream.record_failure(&settings.eject);
                errors.note(kind);
                last = kind;
                req = unsent;
            }
            Attempt::Failed(kind) => {
                upstream.record_failure(&settings.eject);
                errors.note(kind);
                return Err(ExchangeError::failed(kind, replay));
            }
        }
    }
    Err(ExchangeError::NotSent { kind: last, request: req })
}

/// What one address did with a request.
enum Attempt {
    /// It answered.
    Answered(Response<Incoming>, Conn),
    /// It took none of the request, which comes back for the next address.
    Unsent(UpstreamErrorKind, Request<UpstreamBody>),
    /// It took the request and failed.
    Failed(UpstreamErrorKind),
}

/// Sends `req` to one address, over a pooled connection if one is alive. A pooled connection
/// that died before the request left gets one new connection to the same address.
async fn attempt(settings: &ServiceSettings, upstream: &Upstream, mut req: Request<UpstreamBody>) -> Attempt {
    let mut fresh = false;
    loop {
        let conn = if fresh {
            connect(upstream, &settings.connect).await
        } else {
            checkout(upstream, &settings.connect).await
        };
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(kind) => return Attempt::Unsent(kind, req),
        };
        match tokio::time::timeout(settings.request_timeout, conn.sender.try_send_request(req)).await {
            Ok(Ok(response)) => return Attempt::Answered(response, conn),
            Ok(Err(mut failed)) => match failed.take_message() {
                Some(unsent) if !fresh => {
                    req = unsent;
                    fresh = true;
                }
                Some(unsent) => return Attempt::Unsent(UpstreamErrorKind::Reset, unsent),
                None => return Attempt::Failed(classify(failed.error())),
            },
            Err(_elapsed) => return Attempt::Failed(UpstreamErrorKind::Timeout),
        }
    }
}

fn classify(error: &hyper::Error) -> UpstreamErrorKind {
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        return UpstreamErrorKind::Reset;
    }
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof) {
                return UpstreamErrorKind::Reset;
            }
        }
        source = e.source();
    }
    UpstreamErrorKind::Protocol
}
