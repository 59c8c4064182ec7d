//! A client's HTTP/1.1 request head, parsed with `httparse` for the gateway's own HTTP/1.1
//! server side (`crate::connection`).
//!
//! It takes only the requests most traffic is: HTTP/1.1, no body (no `Transfer-Encoding`, no
//! `Content-Length` but `0`), no `Expect`, no protocol upgrade. Anything else — and any head it
//! cannot read, too large or broken — is left to hyper's server, with the bytes as they came,
//! so every rule hyper keeps for those (bodies in both framings, `100-continue`, upgrades,
//! HTTP/1.0, the `400`/`431` of a bad head) stays exactly as it was.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};

use super::head::{MAX_HEAD, MAX_HEADERS, offset_in};
use crate::body::UpstreamBody;
use crate::request::{list_items, trim};

/// What the front of a connection's read buffer holds.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "one per request, moved once; a box would allocate on every request")]
pub enum ClientHead {
    /// Not a whole head yet.
    Partial,
    /// A request this server serves; its head has been taken off the buffer.
    Request(RequestHead),
    /// A request (or bytes) for hyper's server; the buffer is left as it was.
    NotOurs,
}

/// A bodiless HTTP/1.1 request.
#[derive(Debug)]
pub struct RequestHead {
    /// The request, its header values sharing the head's bytes.
    pub request: Request<UpstreamBody>,
    /// The client said `Connection: close`.
    pub close: bool,
}

/// Parses the request head at the front of `buf`.
pub fn parse_request_head(buf: &mut BytesMut) -> ClientHead {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut request, buf, &mut fields)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return ClientHead::Partial,
        Ok(httparse::Status::Partial) | Err(_) => return ClientHead::NotOurs,
    };
    if request.version != Some(1) {
        return ClientHead::NotOurs;
    }
    let (Some(method), Some(path)) = (request.method, request.path) else { return ClientHead::NotOurs };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return ClientHead::NotOurs };
    if method == Method::CONNECT {
        return ClientHead::NotOurs;
    }
    let path = offset_in(buf, path.as_bytes());
    let mut names = Vec::with_capacity(request.headers.len());
    let mut close = false;
    for field in request.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(field.name.as_bytes()) else { return ClientHead::NotOurs };
        match framing_of(&name, field.value) {
            Field::Plain => {}
            Field::Close => close = true,
            Field::NotOurs => return ClientHead::NotOurs,
        }
        names.push((name, offset_in(buf, field.value)));
    }
    let head = buf.split_to(len).freeze();
    match build(&head, method, path, names) {
        Some(request) => ClientHead::Request(RequestHead { request, close }),
        None => {
            // A target or value httparse passed and `http` does not: hyper's server says why,
            // from the bytes as they came.
            let mut restored = BytesMut::with_capacity(head.len() + buf.len());
            restored.extend_from_slice(&head);
            restored.extend_from_slice(buf);
            *buf = restored;
            ClientHead::NotOurs
        }
    }
}

/// What one field says about whether this server takes the request.
enum Field {
    Plain,
    Close,
    NotOurs,
}

fn framing_of(name: &HeaderName, value: &[u8]) -> Field {
    if *name == CONTENT_LENGTH {
        return if trim(value) == b"0" { Field::Plain } else { Field::NotOurs };
    }
    if *name == TRANSFER_ENCODING || *name == EXPECT || *name == UPGRADE {
        return Field::NotOurs;
    }
    if *name == CONNECTION {
        let mut close = false;
        for token in list_items(value) {
            if token.eq_ignore_ascii_case(b"upgrade") {
                return Field::NotOurs;
            }
            close |= token.eq_ignore_ascii_case(b"close");
        }
        if close {
            return Field::Close;
        }
    }
    Field::Plain
}

/// The request, its target and values slices of `head` instead of copies.
fn build(
    head: &Bytes,
    method: Method,
    path: Range<usize>,
    names: Vec<(HeaderName, Range<usize>)>,
) -> Option<Request<UpstreamBody>> {
    let uri = Uri::from_maybe_shared(head.slice(path)).ok()?;
    // Only the client's: the fields the gateway adds are written beside the map, not put in
    // it, for the bodiless requests this server side takes.
    let mut headers = crate::header_maps::take(names.len());
    for (name, range) in names {
        headers.append(name, HeaderValue::from_maybe_shared(head.slice(range)).ok()?);
    }
    let mut request = Request::new(UpstreamBody::Empty);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (ClientHead, BytesMut) {
        let mut buf = BytesMut::from(text);
        (parse_request_head(&mut buf), buf)
    }

    fn ours(text: &str) -> RequestHead {
        match parse(text).0 {
            ClientHead::Request(head) => head,
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    #[test]
    fn a_bodiless_request_is_taken_off_the_buffer_and_the_next_stays() {
        let (head, rest) = parse("GET /cart?id=1 HTTP/1.1\r\nHost: shop\r\nX-User-Id: u1\r\n\r\nGET /next");
        let ClientHead::Request(head) = head else { panic!("{head:?}") };
        assert_eq!(&rest[..], b"GET /next", "a pipelined request waits its turn");
        let req = head.request;
        assert_eq!((req.method(), req.uri().path(), req.uri().query()), (&Method::GET, "/cart", Some("id=1")));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "shop");
        assert_eq!(req.headers()["x-user-id"], "u1");
        assert!(!head.close);
        assert!(
            ours("HEAD / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n")
                .request
                .headers()
                .contains_key("content-length")
        );
    }

    #[test]
    fn connection_close_is_noted() {
        assert!(ours("GET / HTTP/1.1\r\nhost: a\r\nConnection: keep-alive, Close\r\n\r\n").close);
    }

    #[test]
    fn bodies_upgrades_and_other_versions_are_left_to_hyper_untouched() {
        for text in [
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n",
            "PUT / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 0\r\n\r\n",
            "GET /ws HTTP/1.1\r\nhost: a\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nupgrade: h2c\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET / HTTP/1.1\r\nbad header\r\n\r\n",
            "NOT HTTP\r\n\r\n",
            "GET http://[bad/ HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\n",
        ] {
            let (head, rest) = parse(text);
            assert!(matches!(head, ClientHead::NotOurs), "{text:?} gave {head:?}");
            assert_eq!(&rest[..], text.as_bytes(), "the bytes stay for hyper");
        }
    }

    #[test]
    fn a_head_waits_for_its_end_up_to_the_limit() {
        assert!(matches!(parse("GET / HTTP/1.1\r\nhost: a\r\n").0, ClientHead::Partial));
        let endless = format!("GET / HTTP/1.1\r\nx-long: {}", "a".repeat(MAX_HEAD + 1));
        assert!(matches!(parse(&endless).0, ClientHead::NotOurs), "hyper answers 431");
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert!(matches!(parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).0, ClientHead::NotOurs));
    }
}
