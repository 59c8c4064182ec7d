//! Header rules of a proxy (RFC 9110 §7.6): hop-by-hop headers stop here, forwarding headers
//! are added, and an HTTP/2 request is rewritten for an HTTP/1.1 upstream.

use http::header::Entry;
use http::header::{CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri, Version};

use crate::request::{list_has, trim};

/// `x-forwarded-for`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-canary-version`.
pub static X_CANARY_VERSION: HeaderName = HeaderName::from_static("x-canary-version");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Why a request head is refused with `400` before it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHead {
    /// More than one `Host` field (RFC 9112 §3.2): which one names the target is ambiguous.
    SeveralHosts,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    NoHost,
    /// An HTTP/2 `:authority` and a `host` field that name different targets (RFC 9113 §8.3.1).
    AuthorityMismatch,
}

impl BadHead {
    /// The text of the `400` response.
    pub fn message(self) -> &'static str {
        match self {
            BadHead::SeveralHosts => "more than one Host header\n",
            BadHead::NoHost => "an HTTP/1.1 request needs a Host header\n",
            BadHead::AuthorityMismatch => ":authority and Host name different targets\n",
        }
    }
}

/// Checks the target of a request head: exactly one `Host` on HTTP/1.1, at most one on
/// HTTP/1.0, and on HTTP/2 a `host` that agrees with `:authority`.
pub fn check_head<B>(req: &Request<B>) -> Result<(), BadHead> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(BadHead::SeveralHosts);
    }
    match (req.version(), host) {
        (Version::HTTP_11, None) => Err(BadHead::NoHost),
        (Version::HTTP_2 | Version::HTTP_3, Some(host)) => match req.uri().authority() {
            Some(authority) if !authority.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes()) => {
                Err(BadHead::AuthorityMismatch)
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Whether a request asks to switch to protocols that are all in `allowed` (lower-case names),
/// which the proxy then tunnels. A request offering any other protocol is not an upgrade here:
/// it goes upstream as a plain request, its `Upgrade` stripped like any hop-by-hop header, so
/// the upstream cannot pick a protocol (`h2c`) that would carry requests past routing.
pub fn is_upgrade_request<B>(req: &Request<B>, allowed: &[String]) -> bool {
    if req.version() != Version::HTTP_11 || !connection_has(req.headers(), "upgrade") {
        return false;
    }
    let mut offered = req
        .headers()
        .get_all(UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|p| trim(p.split(|&b| b == b'/').next().unwrap_or(p)))
        .filter(|p| !p.is_empty())
        .peekable();
    offered.peek().is_some() && offered.all(|p| allowed.iter().any(|a| p.eq_ignore_ascii_case(a.as_bytes())))
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| list_has(v.as_bytes(), token.as_bytes()))
}

/// Removes hop-by-hop headers; with `upgrade`, keeps `Connection: upgrade` and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the few names present costs less than a hashed lookup per hop-by-hop
    // name, and most messages carry none of them or only `Connection`.
    let mut present = [false; 6];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| name == hop) {
            present[i] = true;
        }
    }
    if present[0]
        && let Entry::Occupied(connection) = headers.entry(CONNECTION)
    {
        // The values are reference-counted handles: taking them out lets the headers they
        // name be removed by `&str`, with no `HeaderName` allocated per token.
        let (_, mut values) = connection.remove_entry_mult();
        let first = values.next();
        let rest: Vec<HeaderValue> = values.collect();
        for value in first.iter().chain(&rest) {
            let Ok(text) = value.to_str() else { continue };
            for token in text.split(',').map(str::trim) {
                // Hop-by-hop names go below, and only if present, with no lookup by text. The
                // message's target and body never go: `Connection: host` must not make a
                // request without Host.
                let named = |list: &[HeaderName]| list.iter().any(|h| token.eq_ignore_ascii_case(h.as_str()));
                if token.is_empty() || named(&HOP_BY_HOP) || named(&END_TO_END) {
                    continue;
                }
                // A token that is not a valid header name matches nothing.
                headers.remove(token);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present[i] && !(upgrade && name == UPGRADE) {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Headers that never cross a proxy (RFC 9110 §7.6.1), `Connection` first.
pub(crate) static HOP_BY_HOP: [HeaderName; 6] =
    [CONNECTION, KEEP_ALIVE, PROXY_CONNECTION, TE, TRANSFER_ENCODING, UPGRADE];

/// Headers a `Connection` list may name but that are never removed: they say what the
/// request is for and what its body is, not how this hop carries it.
static END_TO_END: [HeaderName; 4] = [HOST, CONTENT_LENGTH, CONTENT_TYPE, CONTENT_ENCODING];

/// The `x-forwarded-for` an upstream gets: the client's list with `peer` appended, or `peer`
/// alone. The client's `x-forwarded-for` and `x-forwarded-proto` are taken out of `headers`:
/// the gateway sends its own. Several `x-forwarded-for` lines are one list (RFC 9110 §5.3):
/// they are joined in order.
pub fn take_forwarded(headers: &mut HeaderMap, peer: &HeaderValue) -> HeaderValue {
    headers.remove(&X_FORWARDED_PROTO);
    let Entry::Occupied(list) = headers.entry(&X_FORWARDED_FOR) else { return peer.clone() };
    let mut joined = Vec::with_capacity(64);
    for prev in list.remove_entry_mult().1 {
        joined.extend_from_slice(prev.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(peer.as_bytes());
    HeaderValue::from_bytes(&joined).unwrap_or_else(|_| peer.clone())
}

/// The `x-forwarded-proto` of a client connection.
pub fn forwarded_proto(https: bool) -> HeaderValue {
    HeaderValue::from_static(if https { "https" } else { "http" })
}

/// Makes a request fit an HTTP/1.1 upstream: origin-form target and a `Host` header taken
/// from the HTTP/2 `:authority` when the client sent none. An HTTP/1 request in absolute form
/// (`GET http://shop.example/ HTTP/1.1`) gets the target's authority as `Host`, which a proxy
/// must send instead of the client's (RFC 9112 §3.2.2).
pub fn to_http1<B>(req: &mut Request<B>) {
    if (req.version() == Version::HTTP_11 || req.version() == Version::HTTP_10)
        && let Some(authority) = req.uri().authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(HOST, host);
    }
    if req.version() != Version::HTTP_11 && req.version() != Version::HTTP_10 {
        if !req.headers().contains_key(HOST)
            && let Some(authority) = req.uri().authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(HOST, host);
        }
        *req.version_mut() = Version::HTTP_11;
    }
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        if let Ok(uri) = path.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn every_connection_header_and_token_counts() {
        let mut h = HeaderMap::new();
        h.append(CONNECTION, HeaderValue::from_static("Keep-Alive, X-One"));
        h.append(CONNECTION, HeaderValue::from_static("x-two,, bad name"));
        for name in ["x-one", "x-two", "keep-alive", "proxy-connection", "te", "upgrade", "x-kept"] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
        let mut untouched = HeaderMap::new();
        untouched.insert(HOST, HeaderValue::from_static("a"));
        strip_hop_by_hop(&mut untouched, false);
        assert_eq!(untouched.len(), 1);
    }

    #[test]
    fn only_allowed_protocols_are_upgrades() {
        let allowed = ["websocket".to_owned()];
        let request = |upgrade: &'static str, connection: &'static str| {
            Request::builder().header(UPGRADE, upgrade).header(CONNECTION, connection).body(()).unwrap()
        };
        assert!(is_upgrade_request(&request("websocket", "Upgrade"), &allowed));
        assert!(is_upgrade_request(&request("WebSocket", "keep-alive, upgrade"), &allowed));
        for (upgrade, connection) in [
            ("h2c", "Upgrade, HTTP2-Settings"),
            ("websocket, h2c", "upgrade"),
            ("websocket", "keep-alive"),
            ("", "upgrade"),
        ] {
            assert!(!is_upgrade_request(&request(upgrade, connection), &allowed), "{upgrade:?} / {connection:?}");
        }
        assert!(!is_upgrade_request(&request("websocket", "upgrade"), &[]));
        let http10 = Request::builder().version(Version::HTTP_10).header(UPGRADE, "websocket");
        assert!(!is_upgrade_request(&http10.header(CONNECTION, "upgrade").body(()).unwrap(), &allowed));
    }

    #[test]
    fn a_refused_upgrade_loses_its_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade, HTTP2-Settings"));
        h.insert(UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("http2-settings", HeaderValue::from_static("AAMAAABkAAQAAP__"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn upgrade_keeps_its_two_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn connection_never_removes_the_target_or_the_body_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Host, content-length, Content-Type, x-drop"));
        for name in ["host", "content-length", "content-type", "x-drop"] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        strip_hop_by_hop(&mut h, false);
        let mut kept: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["content-length", "content-type", "host"]);
    }

    #[test]
    fn the_target_of_a_head_must_be_unambiguous() {
        let head = |version, uri: &str, hosts: &[&'static str]| {
            let mut req = Request::builder().version(version).uri(uri).body(()).unwrap();
            for host in hosts {
                req.headers_mut().append(HOST, HeaderValue::from_static(host));
            }
            check_head(&req)
        };
        assert_eq!(head(Version::HTTP_11, "/", &["a"]), Ok(()));
        assert_eq!(head(Version::HTTP_11, "/", &["a", "a"]), Err(BadHead::SeveralHosts));
        assert_eq!(head(Version::HTTP_11, "/", &[]), Err(BadHead::NoHost));
        assert_eq!(head(Version::HTTP_10, "/", &[]), Ok(()));
        assert_eq!(head(Version::HTTP_10, "/", &["a", "b"]), Err(BadHead::SeveralHosts));
        assert_eq!(head(Version::HTTP_2, "http://shop.example:8080/", &["Shop.Example:8080"]), Ok(()));
        assert_eq!(head(Version::HTTP_2, "http://shop.example/", &["evil.example"]), Err(BadHead::AuthorityMismatch));
        assert_eq!(head(Version::HTTP_2, "http://shop.example/", &[]), Ok(()));
    }

    #[test]
    fn absolute_form_targets_set_the_host() {
        let mut req = Request::builder().uri("http://shop.example/cart").header(HOST, "other").body(()).unwrap();
        to_http1(&mut req);
        assert_eq!(req.uri(), "/cart");
        assert_eq!(req.headers()[HOST], "shop.example");
    }

    #[test]
    fn forwarded_for_lines_are_joined_in_order_and_taken_out() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static("1.1.1.1"));
        h.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static("2.2.2.2, 3.3.3.3"));
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let joined = take_forwarded(&mut h, &HeaderValue::from_static("10.0.0.9"));
        assert_eq!(joined, "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9");
        assert_eq!(h.len(), 1, "the client's forwarding fields are not passed on: {h:?}");
    }

    #[test]
    fn forwarded_for_is_the_peer_when_the_client_sent_none() {
        let mut h = HeaderMap::new();
        assert_eq!(take_forwarded(&mut h, &HeaderValue::from_static("10.0.0.9")), "10.0.0.9");
        assert_eq!(forwarded_proto(true), "https");
        assert_eq!(forwarded_proto(false), "http");
    }

    #[test]
    fn http2_requests_become_origin_form_with_host() {
        let mut req =
            Request::builder().version(Version::HTTP_2).uri("https://shop.example:8443/cart?id=1").body(()).unwrap();
        to_http1(&mut req);
        assert_eq!(req.uri(), "/cart?id=1");
        assert_eq!(req.headers().get(HOST).unwrap(), "shop.example:8443");
        assert_eq!(req.version(), Version::HTTP_11);
    }
}
