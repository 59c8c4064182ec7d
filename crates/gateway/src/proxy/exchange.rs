//! Phase 3, **exchange**: the request sent to its version, and to stable again when the canary
//! fails in a way that makes that safe.
//!
//! A request is tried on the version's healthy addresses in turn while none of its bytes has
//! left: a refused or timed-out connection, or a pooled connection found dead, moves it on to
//! the next address (a dead pooled connection first gets one new connection to the same
//! address). Whether a failure may be sent again elsewhere is decided where it happens and
//! carried on the [`ExchangeError`] ([`ExchangeError::retry_safe`]); the phase only asks it
//! for the request to send again ([`ExchangeError::into_retry`]).

use canary_core::Side;
use canary_core::metrics::UpstreamErrorKind;
use http::header::HOST;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;

use super::RequestCtx;
use super::upstream_request::{AddedFields, Replay, cohort, is_idempotent};
use crate::body::UpstreamBody;
use crate::h1::{H1Error, InlineBody};
use crate::metrics::UpstreamErrorTally;
use crate::pool::{Conn, HyperConn, checkout, checkout_inline, connect, connect_inline};
use crate::request_deadlines::within;
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

/// An upstream's answer: its head with the body to stream, over one of the two kinds of
/// connection.
pub(super) enum Answer {
    /// From the inline exchange, this hop's fields already taken out; `true` when its
    /// `Connection` field names others to remove.
    Inline(Response<InlineBody>, bool),
    /// From hyper's client (a request with a body, or an upgrade), with its connection.
    Hyper(Response<Incoming>, Conn<HyperConn>),
}

/// What an exchange produced: the upstream's answer, or why there is none.
pub(super) type Exchanged = Result<Answer, ExchangeError>;

/// Sends the request to the decided version; when that is the canary (or the rolled-back
/// canary serving an open page) and it failed in a retry-safe way, sends it to stable instead.
pub(super) async fn exchange(
    ctx: &mut RequestCtx<'_>,
    req: Request<UpstreamBody>,
    mut added: AddedFields,
    replay: &mut Option<Replay>,
    upgrade: bool,
) -> Exchanged {
    let settings = ctx.settings();
    let decided = ctx.route.target(ctx.side);
    // An HTTP/1.0 client may send no Host; the upstream then gets its own address as Host.
    let host = if req.headers().contains_key(HOST) { HostFrom::Client } else { HostFrom::Upstream };
    let how = Sending { settings, host, upgrade };
    let again = match send(how, decided, &mut ctx.outcome.errors, req, &added, replay).await {
        Err(error) if matches!(ctx.side, Side::Canary | Side::Retired) => error.into_retry()?,
        answered_or_stable => return answered_or_stable,
    };
    ctx.side = Side::Stable;
    added.version = ctx.route.stable.header.clone();
    added.cohort = cohort(ctx);
    let errors = ctx.outcome.retry.insert(UpstreamErrorTally::default());
    // Boxed: the retry is rare, and inline it would double the size of every request's future,
    // which is copied each time it moves.
    Box::pin(send(how, &ctx.route.stable, errors, again, &added, &mut None)).await
}

/// Where the upstream request's `Host` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostFrom {
    /// The client's request.
    Client,
    /// The address the request is sent to.
    Upstream,
}

/// How one request is sent, whichever version it goes to.
#[derive(Clone, Copy)]
struct Sending<'s> {
    settings: &'s ServiceSettings,
    host: HostFrom,
    /// The request asks to switch protocols: hyper's client carries it, for the tunnel.
    upgrade: bool,
}

impl Sending<'_> {
    /// A bodiless request that is no upgrade goes through the inline exchange.
    fn inline(&self, req: &Request<UpstreamBody>) -> bool {
        !self.upgrade && req.body().is_end_stream()
    }
}

/// What one try on one connection came to.
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per try and moved on at once; boxing the answer would allocate on every request"
)]
enum Tried {
    /// The upstream answered.
    Answered(Answer),
    /// No connection could be had.
    NoConnection(UpstreamErrorKind),
    /// The connection took none of the request (or, reused, closed on an idempotent one
    /// before a byte of answer): it may go out again on a new connection.
    Unsent,
    /// The request was sent and the exchange failed.
    Failed(UpstreamErrorKind),
}

/// Sends `req` to the first address of `target` that takes it, over a pooled connection if
/// one is alive, noting each failure in `errors` and in the address's passive health. A
/// pooled connection that died before the request left gets one new connection to the same
/// address. `replay` is taken when the request was sent and dropped before an answer.
async fn send(
    how: Sending<'_>,
    target: &VersionTarget,
    errors: &mut UpstreamErrorTally,
    mut req: Request<UpstreamBody>,
    added: &AddedFields,
    replay: &mut Option<Replay>,
) -> Exchanged {
    let settings = how.settings;
    let inline = how.inline(&req);
    if !inline {
        added.put_into(req.headers_mut());
    }
    let mut last = UpstreamErrorKind::ConnectOther;
    for upstream in target.upstreams.candidates() {
        if how.host == HostFrom::Upstream {
            req.headers_mut().insert(HOST, upstream.host.clone());
        }
        let mut fresh = false;
        let unsent = loop {
            let tried = if inline {
                try_inline(settings, target, upstream, fresh, &req, added).await
            } else {
                try_hyper(settings, target, upstream, fresh, &mut req).await
            };
            match tried {
                Tried::Answered(answer) => {
                    upstream.record_success();
                    crate::header_maps::give(std::mem::take(req.headers_mut()));
                    return Ok(answer);
                }
                Tried::NoConnection(kind) => break kind,
                Tried::Failed(kind) => return Err(failure(settings, upstream, errors, kind, replay)),
                Tried::Unsent if fresh => break UpstreamErrorKind::Reset,
                Tried::Unsent => fresh = true,
            }
        };
        upstream.record_failure(&settings.eject);
        errors.note(unsent);
        last = unsent;
    }
    Err(ExchangeError::NotSent { kind: last, request: req })
}

/// One try of the inline exchange.
async fn try_inline(
    settings: &ServiceSettings,
    target: &VersionTarget,
    upstream: &Upstream,
    fresh: bool,
    req: &Request<UpstreamBody>,
    added: &AddedFields,
) -> Tried {
    let conn = if fresh {
        connect_inline(upstream, &settings.connect).await
    } else {
        checkout_inline(upstream, &settings.connect).await
    };
    let mut conn = match conn {
        Ok(conn) => conn,
        Err(kind) => return Tried::NoConnection(kind),
    };
    target.stats.record_connection(conn.reused);
    let head = match within(settings.request_timeout, conn.io.send(req, added.each())).await {
        None => return Tried::Failed(UpstreamErrorKind::Timeout),
        Some(Ok(head)) => head,
        Some(Err(H1Error::Unsent)) => return Tried::Unsent,
        // The race of a pooled connection with the upstream's keep-alive timeout: the request
        // may go out again on a new one (RFC 9112 §9.3.1).
        Some(Err(H1Error::NoAnswer)) if conn.reused && is_idempotent(req.method()) => return Tried::Unsent,
        Some(Err(H1Error::NoAnswer | H1Error::Reset)) => return Tried::Failed(UpstreamErrorKind::Reset),
        Some(Err(H1Error::Invalid(_))) => return Tried::Failed(UpstreamErrorKind::Protocol),
    };
    if head.parts.status == http::StatusCode::SWITCHING_PROTOCOLS {
        // Not asked for: the connection now speaks something else.
        return Tried::Failed(UpstreamErrorKind::Protocol);
    }
    let body = InlineBody::new(conn, head.framing, head.keep_alive).with_fields(head.fields);
    Tried::Answered(Answer::Inline(Response::from_parts(head.parts, body), head.names_hop_by_hop))
}

/// One try through hyper's client. The request stays in `req` when it was not sent.
async fn try_hyper(
    settings: &ServiceSettings,
    target: &VersionTarget,
    upstream: &Upstream,
    fresh: bool,
    req: &mut Request<UpstreamBody>,
) -> Tried {
    let conn =
        if fresh { connect(upstream, &settings.connect).await } else { checkout(upstream, &settings.connect).await };
    let mut conn = match conn {
        Ok(conn) => conn,
        Err(kind) => return Tried::NoConnection(kind),
    };
    target.stats.record_connection(conn.reused);
    let sent = std::mem::replace(req, Request::new(UpstreamBody::Empty));
    let mut failed = match within(settings.request_timeout, conn.io.try_send_request(sent)).await {
        Some(Ok(response)) => return Tried::Answered(Answer::Hyper(response, conn)),
        Some(Err(failed)) => failed,
        None => return Tried::Failed(UpstreamErrorKind::Timeout),
    };
    match failed.take_message() {
        Some(unsent) => {
            *req = unsent;
            Tried::Unsent
        }
        None => Tried::Failed(classify(failed.error())),
    }
}

/// Notes a failure of a request that was sent, and says whether it may be sent again.
fn failure(
    settings: &ServiceSettings,
    upstream: &Upstream,
    errors: &mut UpstreamErrorTally,
    kind: UpstreamErrorKind,
    replay: &mut Option<Replay>,
) -> ExchangeError {
    upstream.record_failure(&settings.eject);
    errors.note(kind);
    ExchangeError::failed(kind, replay.take())
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body;

    fn page() -> Request<UpstreamBody> {
        Request::get("/page").header("accept", "text/html").body(UpstreamBody::Empty).unwrap()
    }

    #[test]
    fn the_error_says_whether_the_request_may_be_sent_again() {
        let not_sent = ExchangeError::NotSent { kind: UpstreamErrorKind::ConnectRefused, request: page() };
        assert!(not_sent.retry_safe(), "nothing left the gateway");
        assert_eq!(not_sent.into_retry().unwrap().uri(), "/page");

        let dropped = ExchangeError::failed(UpstreamErrorKind::Reset, Some(Replay::of(&page())));
        assert!(dropped.retry_safe(), "a bodiless GET dropped before its answer");
        let again = dropped.into_retry().unwrap();
        assert_eq!(again.headers()["accept"], "text/html");
        assert!(again.body().is_end_stream());

        let timed_out = ExchangeError::failed(UpstreamErrorKind::Timeout, Some(Replay::of(&page())));
        assert!(!timed_out.retry_safe(), "the upstream may still be working on it");
        assert_eq!(timed_out.into_retry().err().unwrap().kind(), UpstreamErrorKind::Timeout);

        let no_replay = ExchangeError::failed(UpstreamErrorKind::Reset, None);
        assert!(!no_replay.retry_safe(), "a POST, or a request with a body, is never sent twice");
    }
}
