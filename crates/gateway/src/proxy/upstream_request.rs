//! Phase 2, **upstream request**: the client's request made fit to send upstream.

use canary_core::Side;
use http::{HeaderMap, Method, Request, Uri};
use http_body::Body;
use hyper::upgrade::OnUpgrade;

use super::RequestCtx;
use crate::body::UpstreamBody;
use crate::headers::{X_CANARY_VERSION, add_forwarded, is_upgrade_request, strip_hop_by_hop, to_http1};
use crate::request::{COHORT, FORCE, FORCE_TOKEN};

/// The request as it goes upstream, and what the later phases need of the client's.
pub(super) struct UpstreamRequest {
    /// The request to send.
    pub(super) request: Request<UpstreamBody>,
    /// The client's half of a protocol upgrade (WebSocket), when it asked for one.
    pub(super) client_upgrade: Option<OnUpgrade>,
    /// The head of a request that may be sent a second time if the canary drops it.
    pub(super) replay: Option<Replay>,
}

/// The head of a bodiless idempotent request, kept so that it can be sent again.
pub(super) struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Replay {
    /// A copy of the head of `req`.
    pub(super) fn of<B>(req: &Request<B>) -> Replay {
        Replay { method: req.method().clone(), uri: req.uri().clone(), headers: req.headers().clone() }
    }

    /// The same request again, without a body.
    pub(super) fn into_request(self) -> Request<UpstreamBody> {
        let mut again = Request::new(UpstreamBody::Empty);
        *again.method_mut() = self.method;
        *again.uri_mut() = self.uri;
        *again.headers_mut() = self.headers;
        again
    }
}

/// Strips hop-by-hop headers and the override headers, adds `x-forwarded-*` and
/// `x-canary-version`, and makes the request HTTP/1.1-shaped.
#[inline]
pub(super) fn upstream_request(ctx: &RequestCtx<'_>, mut req: Request<UpstreamBody>) -> UpstreamRequest {
    let upgrade = is_upgrade_request(&req, &ctx.settings().upgrades);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let client = &ctx.conn.client;
    strip_hop_by_hop(req.headers_mut(), upgrade);
    // One growth for the three fields added below instead of one per field.
    req.headers_mut().reserve(3);
    add_forwarded(req.headers_mut(), &client.peer_header, client.tls);
    // The override is the gateway's business, trusted or not: an upstream never needs it, and
    // one that read it would let any client choose what the gateway refused to.
    if ctx.carried.canary {
        req.headers_mut().remove(&FORCE);
        req.headers_mut().remove(&FORCE_TOKEN);
    }
    to_http1(&mut req);
    req.headers_mut().insert(X_CANARY_VERSION.clone(), ctx.target().header.clone());
    set_cohort(ctx, req.headers_mut());
    // A bodiless idempotent request to the canary can be sent again if the canary drops it
    // before answering (it crashed mid-request); keeping its head costs a copy, so only these.
    let to_canary = matches!(ctx.side, Side::Canary | Side::Retired);
    let replay =
        (to_canary && !upgrade && is_idempotent(req.method()) && req.body().is_end_stream()).then(|| Replay::of(&req));
    UpstreamRequest { request: req, client_upgrade, replay }
}

/// Gives the upstream the cohort token of the side the request went to, when its service is in a
/// release train, for the app to pass on in its own calls; drops a client's token otherwise, so
/// an app never passes on one the gateway did not stand behind.
pub(super) fn set_cohort(ctx: &RequestCtx<'_>, headers: &mut HeaderMap) {
    let Some(train) = ctx.route.table.train.as_deref() else {
        if ctx.carried.canary {
            headers.remove(&COHORT);
        }
        return;
    };
    let expires = ctx.now + canary_core::train::COHORT_TTL_SECS;
    let token = canary_core::train::sign_cohort(&ctx.conn.cohorts, train, ctx.side, expires);
    let value = http::HeaderValue::try_from(token).expect("a cohort token is a valid header value");
    headers.insert(COHORT.clone(), value);
}

/// Methods whose requests may be sent twice without changing what happens (RFC 9110 §9.2.2).
pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}
