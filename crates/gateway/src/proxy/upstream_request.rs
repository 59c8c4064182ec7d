//! Phase 2, **upstream request**: the client's request made fit to send upstream.

use canary_core::Side;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body::Body;
use hyper::upgrade::OnUpgrade;

use super::RequestCtx;
use crate::body::UpstreamBody;
use crate::headers::{
    X_CANARY_VERSION, X_FORWARDED_FOR, X_FORWARDED_PROTO, forwarded_proto, is_upgrade_request, strip_hop_by_hop,
    take_forwarded, to_http1,
};
use crate::request::{COHORT, FORCE, FORCE_TOKEN};

/// The request as it goes upstream, and what the later phases need of the client's.
pub(super) struct UpstreamRequest {
    /// The request to send, without the fields the gateway adds.
    pub(super) request: Request<UpstreamBody>,
    /// The fields the gateway adds.
    pub(super) added: AddedFields,
    /// The client's half of a protocol upgrade (WebSocket), when it asked for one.
    pub(super) client_upgrade: Option<OnUpgrade>,
    /// The head of a request that may be sent a second time if the canary drops it.
    pub(super) replay: Option<Replay>,
}

/// The fields the gateway adds to an upstream request. They stay out of its map: the inline
/// exchange writes them after the map's fields, so a request pays no hashed insert for them;
/// hyper's client gets them in the map ([`AddedFields::put_into`]).
pub(super) struct AddedFields {
    forwarded_for: HeaderValue,
    forwarded_proto: HeaderValue,
    /// `x-canary-version`: the version the request goes to.
    pub(super) version: HeaderValue,
    /// The release train's cohort token of that version, when the service is in a train.
    pub(super) cohort: Option<HeaderValue>,
}

impl AddedFields {
    /// The fields, in the order they are written.
    pub(super) fn each(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let always: [(&HeaderName, &HeaderValue); 3] = [
            (&X_FORWARDED_FOR, &self.forwarded_for),
            (&X_FORWARDED_PROTO, &self.forwarded_proto),
            (&X_CANARY_VERSION, &self.version),
        ];
        let cohort = self.cohort.as_ref().map(|token| (&COHORT as &HeaderName, token));
        always.into_iter().chain(cohort)
    }

    /// Sets the fields in `headers`, replacing those of an earlier try.
    pub(super) fn put_into(&self, headers: &mut HeaderMap) {
        for (name, value) in self.each() {
            headers.insert(name.clone(), value.clone());
        }
    }
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

/// Strips hop-by-hop headers and the client's own forwarding and `x-canary-…` fields but its
/// pin, makes the request HTTP/1.1-shaped, and says which fields the gateway adds: forwarding,
/// `x-canary-version` and the cohort token.
#[inline]
pub(super) fn upstream_request(ctx: &RequestCtx<'_>, mut req: Request<UpstreamBody>) -> UpstreamRequest {
    let upgrade = is_upgrade_request(&req, &ctx.settings().upgrades);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let client = &ctx.conn.client;
    strip_hop_by_hop(req.headers_mut(), upgrade);
    let forwarded_for = if ctx.carried.forwarded {
        take_forwarded(req.headers_mut(), &client.peer_header)
    } else {
        client.peer_header.clone()
    };
    // The override is the gateway's business, trusted or not: an upstream never needs it, and
    // one that read it would let any client choose what the gateway refused to. The version
    // and the cohort token are the gateway's to say; a client's would be passed on as if it
    // stood behind them.
    if ctx.carried.canary {
        for own in [&FORCE, &FORCE_TOKEN, &X_CANARY_VERSION, &COHORT] {
            req.headers_mut().remove(own);
        }
    }
    to_http1(&mut req);
    let added = AddedFields {
        forwarded_for,
        forwarded_proto: forwarded_proto(client.tls),
        version: ctx.target().header.clone(),
        cohort: cohort(ctx),
    };
    // A bodiless idempotent request to the canary can be sent again if the canary drops it
    // before answering (it crashed mid-request); keeping its head costs a copy, so only these.
    let to_canary = matches!(ctx.side, Side::Canary | Side::Retired);
    let replay =
        (to_canary && !upgrade && is_idempotent(req.method()) && req.body().is_end_stream()).then(|| Replay::of(&req));
    UpstreamRequest { request: req, added, client_upgrade, replay }
}

/// The cohort token of the side the request goes to, when its service is in a release train,
/// for the app to pass on in its own calls.
pub(super) fn cohort(ctx: &RequestCtx<'_>) -> Option<HeaderValue> {
    let train = ctx.route.table.train.as_deref()?;
    let expires = ctx.now + canary_core::train::COHORT_TTL_SECS;
    let token = canary_core::train::sign_cohort(&ctx.conn.cohorts, train, ctx.side, expires);
    Some(HeaderValue::try_from(token).expect("a cohort token is a valid header value"))
}

/// Methods whose requests may be sent twice without changing what happens (RFC 9110 §9.2.2).
pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}
