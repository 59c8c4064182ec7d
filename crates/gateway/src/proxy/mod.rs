//! The life of one proxied request: five phases over one per-request context
//! ([`RequestCtx`]), the way pingora names a proxy's lifecycle. The chart, with where a
//! request can end, where it is retried and where counters move, is in `docs/gateway.md`.
//!
//! A request whose target is ambiguous (two `Host` fields, none on HTTP/1.1, an HTTP/2
//! `:authority` that disagrees with `host`) is answered `400` before the first phase.
//!
//! 1. [`route`] — read key, pin, override and navigation facts and decide the version, under
//!    the routing snapshot the context loaded once;
//! 2. **upstream request** — strip hop-by-hop headers, add forwarding headers and
//!    `x-canary-version`, make the request HTTP/1.1-shaped, keep a copy of a head that may be
//!    replayed;
//! 3. **exchange** — send it to the next healthy address of the version. An [`ExchangeError`]
//!    says whether the request may be sent again; a retry-safe failure of the canary is sent
//!    to stable: a dead canary costs users nothing;
//! 4. **response** — strip hop-by-hop headers, add `x-canary-version`, set the session pin for
//!    the version that actually served and the anonymous id if one was minted;
//! 5. **record** — the one place the request's counters move: its decision, the upstream
//!    failures it met, its retry, and its response and latency against the version that
//!    served. It runs when the context is dropped, so a request the client abandons mid-way
//!    still counts what it did.

mod context;
mod cookies;
mod exchange;
mod record;
mod response;
mod route;
mod upstream_request;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use canary_core::pin::PinKey;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};

use crate::body::{ProxyBody, UpstreamBody};
use crate::headers::{BadHead, check_head};
use crate::service::Service;

pub use context::RequestCtx;
pub use exchange::ExchangeError;
pub use route::{Routed, route};

use exchange::exchange;
use response::response;
use upstream_request::{UpstreamRequest, upstream_request};

/// What the gateway knows about the client connection a request came on.
#[derive(Debug, Clone)]
pub struct ClientConn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's IP as a header value, made once per connection.
    pub peer_header: HeaderValue,
    /// Whether the connection is TLS.
    pub tls: bool,
}

impl ClientConn {
    /// Facts about a newly accepted connection.
    pub fn new(peer: SocketAddr, tls: bool) -> ClientConn {
        let ip = peer.ip().to_canonical();
        let peer_header = HeaderValue::from_str(&ip.to_string()).expect("an IP is a valid header value");
        ClientConn { peer, peer_header, tls }
    }
}

/// Everything a request needs besides itself, shared by the requests of one client
/// connection: one reference count per request instead of one per part.
#[derive(Debug)]
pub struct ConnContext {
    /// The service the connection's listener belongs to.
    pub service: Arc<Service>,
    /// The key that signs and verifies pins.
    pub pins: Arc<PinKey>,
    /// The key that signs and verifies release trains' cohort tokens.
    pub cohorts: Arc<PinKey>,
    /// The client connection.
    pub client: ClientConn,
}

/// Proxies one request of the connection's service. Never fails: upstream trouble becomes a
/// 502 or 504.
pub async fn handle(conn: Arc<ConnContext>, req: Request<UpstreamBody>) -> Result<Response<ProxyBody>, Infallible> {
    if let Err(bad) = check_head(&req) {
        return Ok(bad_request(bad));
    }
    let mut ctx = RequestCtx::new(&conn, req.method(), req.headers()); // 1. route
    let UpstreamRequest { request, added, mut replay, client_upgrade } = upstream_request(&ctx, req); // 2. upstream request
    let upgrade = client_upgrade.is_some();
    let outcome = exchange(&mut ctx, request, added, &mut replay, upgrade).await; // 3. exchange
    Ok(response(&mut ctx, outcome, client_upgrade)) // 4. response
    // 5. record: `ctx` is dropped here.
}

/// The `400` of a request whose target is ambiguous: it is not routed, forwarded or counted.
fn bad_request(bad: BadHead) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::text(bad.message()));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
