//! The life of one proxied request, in named phases:
//!
//! 1. **route** — load the service's snapshot once; read key, pin, override and navigation
//!    facts; decide the version;
//! 2. **upstream request** — strip hop-by-hop headers, add forwarding headers and
//!    `x-canary-version`, make the request HTTP/1.1-shaped;
//! 3. **exchange** — send it over a pooled connection to the next healthy address of the
//!    version; a request whose bytes never left (connection refused or timed out, dead pooled
//!    connection) is tried on the version's other addresses, and, if every canary address
//!    refuses, on stable; a bodiless GET/HEAD/OPTIONS that the canary drops before answering
//!    (it crashed mid-request) is sent again to stable: a dead canary costs users nothing;
//! 4. **response** — strip hop-by-hop headers, add `x-canary-version`, set the session pin for
//!    the version that actually served and the anonymous id if one was minted;
//! 5. **record** — count the response and its latency against that version.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use canary_core::pin::PinKey;
use canary_core::{PinAction, RequestFacts, Side, decide};
use http::header::SET_COOKIE;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{ProxyBody, UpstreamBody};
use crate::headers::{X_CANARY_VERSION, add_forwarded, is_upgrade_request, strip_hop_by_hop, to_http1};
use crate::metrics::JudgeFacts;
use crate::pool::{Conn, PooledBody, checkout, connect};
use crate::request::{FORCE_TOKEN, PIN_COOKIE, UID_COOKIE, cookie, is_navigation, mint_uid, trusted_force, user_key};
use crate::service::{Service, ServiceSettings, VersionTarget};
use canary_core::metrics::UpstreamErrorKind;

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

/// What an exchange with one version produced.
enum Exchange {
    /// A response head, and the connection it came over.
    Response(Response<Incoming>, Conn),
    /// Nothing reached any address; the request is handed back untouched.
    NotSent(UpstreamErrorKind, Request<UpstreamBody>),
    /// The request was sent but failed.
    Failed(UpstreamErrorKind),
}

/// Everything a request needs besides itself, shared by the requests of one client
/// connection: one reference count per request instead of one per part.
#[derive(Debug)]
pub struct ConnContext {
    /// The service the connection's listener belongs to.
    pub service: Arc<Service>,
    /// The key that signs and verifies pins.
    pub pins: Arc<PinKey>,
    /// The client connection.
    pub client: ClientConn,
}

/// Proxies one request of `service`. Never fails: upstream trouble becomes a 502 or 504.
pub async fn handle(ctx: Arc<ConnContext>, mut req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let ConnContext { service, pins, client } = &*ctx;
    let settings = &service.settings;
    let route = service.route();
    let now = unix_now();

    // Phase 1: route.
    let headers = req.headers();
    let mut minted = None;
    let key = match user_key(settings, headers) {
        Some(key) => key,
        None => minted.insert(mint_uid()).as_bytes(),
    };
    let facts = RequestFacts {
        key,
        pin: cookie(headers, PIN_COOKIE),
        force: trusted_force(settings, headers, client.peer.ip()),
        boundary: is_navigation(headers),
        canary_healthy: service.canary_open(),
        now,
    };
    let decision = decide(&route.table, pins, settings.pin_ttl_secs, &facts);
    let mut side = decision.side;
    route.target(side).stats.record_decision(decision.reason);

    // Phase 2: upstream request.
    let upgrade = is_upgrade_request(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    strip_hop_by_hop(req.headers_mut(), upgrade);
    add_forwarded(req.headers_mut(), &client.peer_header, client.tls);
    req.headers_mut().remove(&FORCE_TOKEN);
    to_http1(&mut req);
    req.headers_mut().insert(X_CANARY_VERSION.clone(), route.target(side).header.clone());
    // A bodiless idempotent request to the canary can be sent again if the canary drops it
    // before answering (it crashed mid-request); keeping its head costs a copy, so only these.
    let replay =
        (side == Side::Canary && !upgrade && is_idempotent(req.method()) && http_body::Body::is_end_stream(req.body()))
            .then(|| (req.method().clone(), req.uri().clone(), req.headers().clone()));
    let req = req.map(UpstreamBody::Client);

    // Phase 3: exchange, falling back to stable when the canary cannot be reached.
    let mut outcome = exchange(settings, route.target(side), req).await;
    if side == Side::Canary {
        let resend = match outcome {
            Exchange::NotSent(_, unsent) => Ok(unsent),
            Exchange::Failed(UpstreamErrorKind::Reset) if replay.is_some() => {
                let (method, uri, headers) = replay.expect("checked by the guard");
                let mut again = Request::new(UpstreamBody::Empty);
                *again.method_mut() = method;
                *again.uri_mut() = uri;
                *again.headers_mut() = headers;
                Ok(again)
            }
            other => Err(other),
        };
        outcome = match resend {
            Ok(mut again) => {
                let from = route.target(Side::Canary);
                service.retries(from, &route.stable).fetch_add(1, Relaxed);
                from.stats.record_moved_away(decision.bucket);
                side = Side::Stable;
                again.headers_mut().insert(X_CANARY_VERSION.clone(), route.stable.header.clone());
                exchange(settings, &route.stable, again).await
            }
            Err(other) => other,
        };
    }
    let target = route.target(side);

    // Phase 4: response.
    let mut response = match outcome {
        Exchange::Response(mut upstream, conn) => {
            if upstream.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(client_upgrade) = client_upgrade
            {
                let upstream_upgrade = hyper::upgrade::on(&mut upstream);
                tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
                drop(conn);
                let (mut parts, _) = upstream.into_parts();
                strip_hop_by_hop(&mut parts.headers, true);
                Response::from_parts(parts, ProxyBody::empty())
            } else {
                let (mut parts, body) = upstream.into_parts();
                strip_hop_by_hop(&mut parts.headers, false);
                Response::from_parts(parts, ProxyBody::Upstream(PooledBody::new(body, conn)))
            }
        }
        Exchange::NotSent(kind, _) | Exchange::Failed(kind) => error_response(kind, &target.header),
    };
    let headers = response.headers_mut();
    if settings.version_header_in_response {
        headers.insert(X_CANARY_VERSION.clone(), target.header.clone());
    }
    let pin_moved = side != decision.side;
    if (decision.pin == PinAction::Issue || pin_moved)
        && let Some(version) = route.table.version(side)
    {
        let expires = now + settings.pin_ttl_secs;
        headers.append(SET_COOKIE, pin_cookie(pins, &route.table.rollout_id, version, expires, settings));
    }
    if let Some(uid) = minted {
        headers.append(SET_COOKIE, set_cookie(UID_COOKIE, &uid, 365 * 24 * 3600, settings.tls));
    }

    // Phase 5: record.
    let micros = started.elapsed().as_micros() as u64;
    let judge = JudgeFacts {
        bucket: decision.bucket,
        slow_bucket: route.spec.slow_bucket,
        new_session: decision.new_session && route.users.first_sight(decision.key_hash),
    };
    target.stats.record_response(response.status().as_u16(), micros, judge);
    Ok(response)
}

/// Sends `req` to the first address of `target` that takes it.
async fn exchange(settings: &ServiceSettings, target: &VersionTarget, mut req: Request<UpstreamBody>) -> Exchange {
    let mut last = UpstreamErrorKind::ConnectOther;
    for upstream in target.upstreams.candidates() {
        let mut fresh = false;
        loop {
            let conn = if fresh {
                connect(upstream, &settings.connect).await
            } else {
                checkout(upstream, &settings.connect).await
            };
            let mut conn = match conn {
                Ok(conn) => conn,
                Err(kind) => {
                    upstream.record_failure(&settings.eject);
                    target.stats.record_upstream_error(kind);
                    last = kind;
                    break;
                }
            };
            let sent = tokio::time::timeout(settings.request_timeout, conn.sender.try_send_request(req)).await;
            match sent {
                Ok(Ok(response)) => {
                    upstream.record_success();
                    return Exchange::Response(response, conn);
                }
                Ok(Err(mut failed)) => match failed.take_message() {
                    // A pooled connection died before our bytes went out: same address, new
                    // connection.
                    Some(unsent) if !fresh => {
                        req = unsent;
                        fresh = true;
                    }
                    Some(unsent) => {
                        req = unsent;
                        upstream.record_failure(&settings.eject);
                        target.stats.record_upstream_error(UpstreamErrorKind::Reset);
                        last = UpstreamErrorKind::Reset;
                        break;
                    }
                    None => {
                        let kind = classify(failed.error());
                        upstream.record_failure(&settings.eject);
                        target.stats.record_upstream_error(kind);
                        return Exchange::Failed(kind);
                    }
                },
                Err(_elapsed) => {
                    upstream.record_failure(&settings.eject);
                    target.stats.record_upstream_error(UpstreamErrorKind::Timeout);
                    return Exchange::Failed(UpstreamErrorKind::Timeout);
                }
            }
        }
    }
    Exchange::NotSent(last, req)
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
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A pin cookie issued recently on this worker thread. The value depends only on the key,
/// the rollout, the version, the expiry second and the service's cookie attributes, never on
/// the user, so one HMAC and one formatted header serve every response of that second.
struct IssuedPin {
    pins: Arc<PinKey>,
    rollout_id: String,
    version: String,
    expires: u64,
    max_age: u64,
    secure: bool,
    cookie: HeaderValue,
}

/// Versions (stable, canary, draining) times services a worker is likely to serve at once.
const ISSUED_PINS: usize = 8;

thread_local! {
    static ISSUED: RefCell<Vec<IssuedPin>> = const { RefCell::new(Vec::new()) };
}

/// The `Set-Cookie` header pinning `version` of `rollout_id` until `expires`.
fn pin_cookie(
    pins: &Arc<PinKey>,
    rollout_id: &str,
    version: &str,
    expires: u64,
    settings: &ServiceSettings,
) -> HeaderValue {
    let (max_age, secure) = (settings.pin_ttl_secs, settings.tls);
    ISSUED.with_borrow_mut(|issued| {
        // Holding the key's Arc keeps its address from being reused by another key.
        let slot = issued.iter().position(|p| {
            Arc::ptr_eq(&p.pins, pins)
                && p.max_age == max_age
                && p.secure == secure
                && p.version == version
                && p.rollout_id == rollout_id
        });
        if let Some(i) = slot
            && issued[i].expires == expires
        {
            return issued[i].cookie.clone();
        }
        let cookie = set_cookie(PIN_COOKIE, &pins.sign(rollout_id, version, expires), max_age, secure);
        let entry = IssuedPin {
            pins: pins.clone(),
            rollout_id: rollout_id.to_owned(),
            version: version.to_owned(),
            expires,
            max_age,
            secure,
            cookie: cookie.clone(),
        };
        match slot {
            Some(i) => issued[i] = entry,
            None if issued.len() < ISSUED_PINS => issued.push(entry),
            None => issued[(expires as usize) % ISSUED_PINS] = entry,
        }
        cookie
    })
}

fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&text).expect("pin and uid cookies are plain tokens")
}

async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
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

/// Methods whose requests may be sent twice without changing what happens (RFC 9110 §9.2.2).
fn is_idempotent(method: &http::Method) -> bool {
    matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Service {
    fn retries(&self, from: &VersionTarget, to: &VersionTarget) -> Arc<std::sync::atomic::AtomicU64> {
        self.shared().metrics.retries(
            &self.settings.name,
            from.header.to_str().unwrap_or("?"),
            to.header.to_str().unwrap_or("?"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shared;
    use canary_core::config::Config;

    fn settings(tls: bool) -> ServiceSettings {
        let text = r#"
[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = { version = "v1", upstreams = ["127.0.0.1:9001"] }
"#;
        let config = Config::from_toml(text).unwrap();
        let mut settings = Service::new(&config.services[0], true, Arc::new(Shared::default())).settings;
        settings.tls = tls;
        settings
    }

    #[test]
    fn a_remembered_pin_cookie_is_the_one_signing_would_give() {
        let pins = Arc::new(PinKey::new(b"k"));
        let other_key = Arc::new(PinKey::new(b"other"));
        let plain = settings(false);
        let fresh = |pins: &PinKey, version, expires, secure| {
            set_cookie(PIN_COOKIE, &pins.sign("r1", version, expires), 1800, secure)
        };
        for _ in 0..2 {
            assert_eq!(pin_cookie(&pins, "r1", "v1", 100, &plain), fresh(&pins, "v1", 100, false));
            assert_eq!(pin_cookie(&pins, "r1", "v2", 100, &plain), fresh(&pins, "v2", 100, false));
        }
        assert_eq!(pin_cookie(&pins, "r1", "v1", 101, &plain), fresh(&pins, "v1", 101, false));
        assert_eq!(pin_cookie(&other_key, "r1", "v1", 101, &plain), fresh(&other_key, "v1", 101, false));
        assert_eq!(pin_cookie(&pins, "r1", "v1", 101, &settings(true)), fresh(&pins, "v1", 101, true));
        let other_rollout = pin_cookie(&pins, "r2", "v1", 101, &plain);
        assert_eq!(other_rollout, set_cookie(PIN_COOKIE, &pins.sign("r2", "v1", 101), 1800, false));
        for expires in 0..(2 * ISSUED_PINS as u64) {
            assert_eq!(pin_cookie(&pins, "r1", "v1", expires, &plain), fresh(&pins, "v1", expires, false));
        }
    }
}
