//! Phase 4, **response**: what the client gets back.

use canary_core::PinAction;
use canary_core::metrics::UpstreamErrorKind;
use http::header::{CONTENT_TYPE, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::RequestCtx;
use super::cookies::{pin_headers, set_cookie};
use super::exchange::{Answer, Exchanged};
use crate::body::ProxyBody;
use crate::h1::fields::UpstreamFields;
use crate::headers::{X_CANARY_VERSION, strip_hop_by_hop};
use crate::pool::{Conn, HyperConn, PooledBody};
use crate::request::{PIN, UID_COOKIE, VERSION_GONE};

/// The response to send: the upstream's, or a 502/504 saying which version failed how; with
/// `x-canary-version`, the session pin for the version that served (cookie and header), a
/// minted anonymous id, and `x-canary-version-gone` when the session's version was rolled back.
#[inline]
pub(super) fn response(
    ctx: &mut RequestCtx<'_>,
    exchanged: Exchanged,
    client_upgrade: Option<OnUpgrade>,
) -> Response<ProxyBody> {
    let mut response = match exchanged {
        Ok(Answer::Inline(upstream, names_hop_by_hop)) => {
            let (mut parts, body) = upstream.into_parts();
            if names_hop_by_hop {
                strip_hop_by_hop(&mut parts.headers, false);
            }
            Response::from_parts(parts, ProxyBody::Inline(body))
        }
        // Switching protocols the client did not ask to (or may not) switch to would hand the
        // client a connection the gateway no longer reads: refuse it.
        Ok(Answer::Hyper(upstream, _))
            if upstream.status() == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_none() =>
        {
            error_response(UpstreamErrorKind::Protocol, &ctx.target().header)
        }
        Ok(Answer::Hyper(upstream, conn)) => from_upstream(upstream, conn, client_upgrade),
        Err(error) => error_response(error.kind(), &ctx.target().header),
    };
    match response.body_mut().upstream_fields_mut() {
        Some(wire) => add_session_headers(ctx, wire),
        None => add_session_headers(ctx, response.headers_mut()),
    }
    ctx.outcome.status = Some(response.status());
    response
}

/// Where the response phase puts the gateway's own fields: the response's map, or after the
/// upstream's fields when those travel as bytes ([`crate::h1::fields`]).
trait OwnFields {
    /// Sets `name`, replacing an upstream's field of that name.
    fn set(&mut self, name: &HeaderName, value: &HeaderValue);
    /// Adds one more `name` field (`Set-Cookie`).
    fn add(&mut self, name: HeaderName, value: HeaderValue);
}

impl OwnFields for HeaderMap {
    fn set(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.insert(name.clone(), value.clone());
    }

    fn add(&mut self, name: HeaderName, value: HeaderValue) {
        self.append(name, value);
    }
}

impl OwnFields for UpstreamFields {
    fn set(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.push(name.as_str(), value.as_bytes());
    }

    fn add(&mut self, name: HeaderName, value: HeaderValue) {
        self.push(name.as_str(), value.as_bytes());
    }
}

/// The upstream's response for the client; a `101 Switching Protocols` also starts the tunnel
/// between the two upgraded connections.
fn from_upstream(
    mut upstream: Response<Incoming>,
    conn: Conn<HyperConn>,
    client_upgrade: Option<OnUpgrade>,
) -> Response<ProxyBody> {
    if upstream.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut upstream);
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
        drop(conn);
        let (mut parts, _) = upstream.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        return Response::from_parts(parts, ProxyBody::empty());
    }
    let (mut parts, body) = upstream.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, ProxyBody::Upstream(PooledBody::new(body, conn)))
}

fn add_session_headers(ctx: &RequestCtx<'_>, headers: &mut impl OwnFields) {
    let settings = ctx.settings();
    if settings.version_header_in_response {
        headers.set(&X_CANARY_VERSION, &ctx.target().header);
    }
    if ctx.decision.version_gone {
        headers.set(&VERSION_GONE, &HeaderValue::from_static("1"));
    }
    // A request sent to stable after all pins its session there.
    let pin_moved = ctx.side != ctx.decision.side;
    if (ctx.decision.pin == PinAction::Issue || pin_moved)
        && let Some(version) = ctx.route.table.version(ctx.side)
    {
        let expires = ctx.now + settings.pin_ttl_secs;
        let pin = pin_headers(&ctx.conn.pins, &ctx.route.table.rollout_id, version, expires, settings);
        headers.add(SET_COOKIE, pin.cookie);
        // Always, not only to clients that sent the header form: a client without cookies has
        // no pin to send on its first request. The token names no user (every session pinned to
        // the same version in the same second gets the same one), so page scripts may read it.
        headers.set(&PIN, &pin.token);
    }
    if let Some(uid) = &ctx.minted {
        headers.add(SET_COOKIE, set_cookie(UID_COOKIE, uid, 365 * 24 * 3600, settings.tls));
    }
}

fn error_response(kind: UpstreamErrorKind, version: &HeaderValue) -> Response<ProxyBody> {
    let (status, text) = match kind {
        UpstreamErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream timed out"),
        UpstreamErrorKind::ConnectTimeout => (StatusCode::BAD_GATEWAY, "upstream connect timed out"),
        UpstreamErrorKind::ConnectRefused => (StatusCode::BAD_GATEWAY, "upstream refused the connection"),
        UpstreamErrorKind::ConnectOther => (StatusCode::BAD_GATEWAY, "upstream unreachable"),
        UpstreamErrorKind::Reset => (StatusCode::BAD_GATEWAY, "upstream closed the connection"),
        UpstreamErrorKind::Protocol => (StatusCode::BAD_GATEWAY, "upstream sent an invalid response"),
    };
    let body = format!("{text} (version {})\n", version.to_str().unwrap_or("?"));
    let mut response = Response::new(ProxyBody::text(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

async fn tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}
