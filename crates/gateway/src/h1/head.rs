//! Message heads of the inline HTTP/1.1 exchange: the request head written to the upstream,
//! and the response head read back with `httparse`, with how its body is framed
//! (RFC 9112 §6.3) and whether the connection may carry another request.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};

use super::fields::{FieldKind, UpstreamFields};

/// Most header fields a response head may have (hyper's limit too).
pub const MAX_HEADERS: usize = 100;
/// Largest response head accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;

/// Appends the HTTP/1.1 head of `req` to `out`, the fields of `added` after its own. The
/// request has no body, so no framing header is added: a request without `Content-Length` or
/// `Transfer-Encoding` has none (RFC 9112 §6.3).
pub fn write_request_head<'a, B>(
    req: &'a Request<B>,
    added: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    out: &mut Vec<u8>,
) {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let target = if target.is_empty() { "/" } else { target };
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers().iter().chain(added) {
        super::put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to `HEAD`, or a `204` or `304`.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status, version and headers; no headers when they are in `fields`.
    pub parts: http::response::Parts,
    /// The upstream's fields in wire form, when nothing needs them in a map.
    pub fields: Option<UpstreamFields>,
    /// How the body that follows is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request once the body has been read.
    pub keep_alive: bool,
    /// `Connection` names fields besides this hop's own, so it was kept in the map for the
    /// response phase to remove them; this hop's other fields are already gone.
    pub names_hop_by_hop: bool,
}

/// Why a response head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not a valid HTTP/1.x response head.
    Invalid,
    /// Longer than [`MAX_HEAD`] or with more than [`MAX_HEADERS`] fields.
    TooLarge,
    /// A `Content-Length` that is not one number (RFC 9112 §6.3 ¶5).
    BadLength,
}

/// What is at the front of the read buffer.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim `1xx` response of this many bytes, to be skipped.
    Interim(usize),
    /// A final response head; its bytes have been taken off the buffer.
    Final(ResponseHead),
}

/// Parses the response head at the front of `buf` for a request with `method`.
pub fn parse_response_head(buf: &mut BytesMut, method: &Method) -> Result<Parsed, HeadError> {
    // Left uninitialised: httparse writes only the fields it finds, and the array is large.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut fields) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Invalid),
        };
    let code = response.code.ok_or(HeadError::Invalid)?;
    let status = StatusCode::from_u16(code).map_err(|_| HeadError::Invalid)?;
    // A 101 is final, and this exchange never asks for an upgrade: the caller refuses it.
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Parsed::Interim(len));
    }
    let version = if response.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    let mut kinds = [FieldKind::Plain; MAX_HEADERS];
    let kinds = &mut kinds[..response.headers.len()];
    let mut hop = HopFacts::default();
    let mut needs_map = false;
    for (field, kind) in response.headers.iter().zip(kinds.iter_mut()) {
        *kind = FieldKind::of(field.name.as_bytes());
        hop.note(*kind, field.value);
        needs_map |= *kind == FieldKind::NeedsMap;
    }
    let framing = hop.framing(status, method)?;
    let keep_alive = hop.keeps_alive(version) && framing != Framing::UntilClose;
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    let fields = if needs_map || hop.names_others {
        let offsets = kept_fields(buf, response.headers, kinds, hop.names_others)?;
        let head = buf.split_to(len).freeze();
        parts.headers = header_map(&head, offsets)?;
        if framing == Framing::Chunked {
            // A length beside chunked is wrong, and would be wrong again for the client.
            parts.headers.remove(CONTENT_LENGTH);
        }
        None
    } else {
        let fields = UpstreamFields::copied(response.headers, kinds, framing);
        buf.advance(len);
        // The response phase's own fields (version, pin, id) go in a map kept from earlier.
        parts.headers = crate::header_maps::take(4);
        Some(fields)
    };
    Ok(Parsed::Final(ResponseHead { parts, fields, framing, keep_alive, names_hop_by_hop: hop.names_others }))
}

/// The names of the fields a map keeps, with where their values are in `buf`: not this
/// hop's, but `Connection` when it names others (`keep_connection`), for the response phase
/// to remove those.
fn kept_fields(
    buf: &[u8],
    fields: &[httparse::Header<'_>],
    kinds: &[FieldKind],
    keep_connection: bool,
) -> Result<Vec<(HeaderName, std::ops::Range<usize>)>, HeadError> {
    let mut offsets = Vec::with_capacity(fields.len());
    for (field, kind) in fields.iter().zip(kinds) {
        let kept = match kind {
            FieldKind::Connection => keep_connection,
            FieldKind::TransferEncoding | FieldKind::HopByHop => false,
            FieldKind::ContentLength | FieldKind::Date | FieldKind::NeedsMap | FieldKind::Plain => true,
        };
        if !kept {
            continue;
        }
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| HeadError::Invalid)?;
        offsets.push((name, offset_in(buf, field.value)));
    }
    Ok(offsets)
}

/// Where `part`, a slice of `buf`, starts and ends in it.
pub(super) fn offset_in(buf: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// What a head's framing and hop-by-hop fields say, read while its header map is built.
#[derive(Debug, Default)]
struct HopFacts {
    length: Option<u64>,
    bad_length: bool,
    transfer_encoding: bool,
    last_coding_chunked: bool,
    close: bool,
    keep_alive: bool,
    /// `Connection` names other fields, which must go too.
    names_others: bool,
}

impl HopFacts {
    /// Notes what one field of `kind` says.
    fn note(&mut self, kind: FieldKind, value: &[u8]) {
        let items = || crate::request::list_items(value);
        match kind {
            FieldKind::Connection => {
                for token in items().filter(|t| !t.is_empty()) {
                    let close = token.eq_ignore_ascii_case(b"close");
                    let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                    self.close |= close;
                    self.keep_alive |= keep_alive;
                    self.names_others |= !close && !keep_alive;
                }
            }
            FieldKind::TransferEncoding => {
                self.transfer_encoding = true;
                self.last_coding_chunked = items().next_back().is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
            }
            FieldKind::ContentLength => {
                for item in items() {
                    match parse_length(item) {
                        Some(n) if self.length.is_none_or(|seen| seen == n) => self.length = Some(n),
                        _ => self.bad_length = true,
                    }
                }
            }
            FieldKind::HopByHop | FieldKind::Date | FieldKind::NeedsMap | FieldKind::Plain => {}
        }
    }

    fn framing(&self, status: StatusCode, method: &Method) -> Result<Framing, HeadError> {
        if method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(Framing::Empty);
        }
        if self.transfer_encoding {
            // Chunked must be the last coding; any other last coding runs until the close.
            return Ok(if self.last_coding_chunked { Framing::Chunked } else { Framing::UntilClose });
        }
        if self.bad_length {
            return Err(HeadError::BadLength);
        }
        Ok(self.length.map_or(Framing::UntilClose, Framing::Length))
    }

    /// HTTP/1.1 keeps the connection unless `close` is said; HTTP/1.0 closes it unless
    /// `keep-alive` is said. A length beside chunked framing closes it too (RFC 9112 §6.1).
    fn keeps_alive(&self, version: Version) -> bool {
        let framed_twice = self.transfer_encoding && self.length.is_some();
        let kept = if version == Version::HTTP_11 { !self.close } else { self.keep_alive };
        kept && !framed_twice
    }
}

/// The header map of `fields`, its values sharing the head's bytes instead of copying them.
fn header_map(head: &Bytes, fields: Vec<(HeaderName, std::ops::Range<usize>)>) -> Result<HeaderMap, HeadError> {
    // Room for the fields the response phase adds (version, pin, id), so none of them grows it.
    let mut headers = crate::header_maps::take(fields.len() + 4);
    for (name, range) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(range)).map_err(|_| HeadError::Invalid)?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CONNECTION;

    fn parse(text: &str, method: Method) -> Result<Parsed, HeadError> {
        parse_response_head(&mut BytesMut::from(text), &method)
    }

    fn head(text: &str) -> ResponseHead {
        match parse(text, Method::GET) {
            Ok(Parsed::Final(head)) => head,
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    /// The fields the client is to get, from the map or the wire form.
    fn fields(head: &ResponseHead) -> HeaderMap {
        let mut map = head.parts.headers.clone();
        if let Some(fields) = &head.fields {
            fields.append_to(&mut map);
        }
        map
    }

    #[test]
    fn a_request_head_is_origin_form_with_every_field() {
        let req = Request::get("/cart?id=1").header("host", "shop").header("x-a", "1").body(()).unwrap();
        let (name, value) = (HeaderName::from_static("x-added"), HeaderValue::from_static("2"));
        let mut out = Vec::new();
        write_request_head(&req, [(&name, &value)], &mut out);
        assert_eq!(out, b"GET /cart?id=1 HTTP/1.1\r\nhost: shop\r\nx-a: 1\r\nx-added: 2\r\n\r\n");
    }

    #[test]
    fn the_body_is_framed_as_rfc_9112_says() {
        assert_eq!(head("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n").framing, Framing::Length(7));
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n").framing, Framing::Length(7));
        assert_eq!(head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n").framing, Framing::Chunked);
        let both = head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(both.framing, Framing::Chunked, "Transfer-Encoding wins over Content-Length");
        assert!(!fields(&both).contains_key(CONTENT_LENGTH), "and the length does not reach the client");
        assert!(!both.keep_alive, "a message framed twice closes its connection");
        let gzip = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!((gzip.framing, gzip.keep_alive), (Framing::UntilClose, false));
        let open = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((open.framing, open.keep_alive), (Framing::UntilClose, false));
        assert_eq!(head("HTTP/1.1 204 No Content\r\n\r\n").framing, Framing::Empty);
        assert_eq!(head("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n").framing, Framing::Empty);
        let to_head = parse("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", Method::HEAD);
        assert!(matches!(to_head, Ok(Parsed::Final(ResponseHead { framing: Framing::Empty, .. }))));
    }

    #[test]
    fn broken_lengths_and_heads_are_refused() {
        for bad in ["3, 4", "-1", "", "1e3", "99999999999999999999"] {
            let text = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
            assert_eq!(parse(&text, Method::GET).unwrap_err(), HeadError::BadLength, "{bad:?}");
        }
        assert_eq!(parse("SMTP ready\r\n\r\n", Method::GET).unwrap_err(), HeadError::Invalid);
        let many: String = (0..200).map(|i| format!("x-{i}: 1\r\n")).collect();
        let text = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert_eq!(parse(&text, Method::GET).unwrap_err(), HeadError::TooLarge);
        let endless = format!("HTTP/1.1 200 OK\r\nx-long: {}", "a".repeat(MAX_HEAD + 1));
        assert_eq!(parse(&endless, Method::GET).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        assert!(head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 0\r\n\r\n").keep_alive);
    }

    #[test]
    fn this_hop_s_fields_stay_here() {
        let plain = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n",
        );
        assert_eq!(fields(&plain).keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-a", "content-length"]);
        assert!(!plain.names_hop_by_hop && plain.parts.headers.is_empty(), "passed on as bytes");
        let named = head("HTTP/1.1 200 OK\r\nConnection: x-a\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n");
        assert!(named.names_hop_by_hop && named.parts.headers.contains_key(CONNECTION), "left for the response phase");
        let announcing = head("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nTrailer: x-sum\r\nx-a: 1\r\n\r\n");
        assert!(announcing.fields.is_none(), "the writer reads the announced trailers from the map");
        assert_eq!(announcing.parts.headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["trailer", "x-a"]);
        let spoofing = head("HTTP/1.1 200 OK\r\nx-canary-version: v9\r\ncontent-length: 0\r\n\r\n");
        assert!(spoofing.fields.is_none(), "the response phase replaces the gateway's own fields in the map");
    }

    #[test]
    fn interim_responses_are_skipped_and_a_partial_head_waits() {
        assert!(matches!(
            parse("HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n", Method::GET),
            Ok(Parsed::Interim(44))
        ));
        assert!(matches!(parse("HTTP/1.1 200 OK\r\ncontent-le", Method::GET), Ok(Parsed::Partial)));
    }

    #[test]
    fn the_head_leaves_the_buffer_and_the_body_stays() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nX-Name: a b\r\ncontent-length: 2\r\n\r\nhi");
        let Ok(Parsed::Final(head)) = parse_response_head(&mut buf, &Method::GET) else { panic!() };
        assert_eq!(&buf[..], b"hi");
        assert_eq!(fields(&head)["x-name"], "a b");
        assert_eq!(head.parts.status, StatusCode::OK);
    }
}
