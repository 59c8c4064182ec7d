//! Message heads of the inline HTTP/1.1 exchange: the request head written to the upstream,
//! and the response head read back with `httparse`, with how its body is framed
//! (RFC 9112 §6.3) and whether the connection may carry another request.

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};

/// Most header fields a response head may have.
pub const MAX_HEADERS: usize = 128;
/// Largest response head accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;

/// Appends the HTTP/1.1 head of `req` to `out`. The request has no body, so no framing header
/// is added: a request without `Content-Length` or `Transfer-Encoding` has none (RFC 9112 §6.3).
pub fn write_request_head<B>(req: &Request<B>, out: &mut Vec<u8>) {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let target = if target.is_empty() { "/" } else { target };
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
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
    /// Status, version and headers.
    pub parts: http::response::Parts,
    /// How the body that follows is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request once the body has been read.
    pub keep_alive: bool,
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
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let len = match response.parse(buf) {
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
    let offsets: Vec<(HeaderName, std::ops::Range<usize>)> = response
        .headers
        .iter()
        .map(|field| {
            let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| HeadError::Invalid)?;
            Ok((name, offset_in(buf, field.value)))
        })
        .collect::<Result<_, HeadError>>()?;
    let head = buf.split_to(len).freeze();
    let headers = header_map(&head, offsets)?;
    let framing = framing(status, method, &headers)?;
    let keep_alive = keeps_alive(version, &headers) && framing != Framing::UntilClose;
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Parsed::Final(ResponseHead { parts, framing, keep_alive }))
}

/// Where `part`, a slice of `buf`, starts and ends in it.
fn offset_in(buf: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// The header map, its values sharing the head's bytes instead of copying them.
fn header_map(head: &Bytes, offsets: Vec<(HeaderName, std::ops::Range<usize>)>) -> Result<HeaderMap, HeadError> {
    let mut headers = HeaderMap::with_capacity(offsets.len());
    for (name, range) in offsets {
        let value = HeaderValue::from_maybe_shared(head.slice(range)).map_err(|_| HeadError::Invalid)?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn framing(status: StatusCode, method: &Method, headers: &HeaderMap) -> Result<Framing, HeadError> {
    if method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        // Chunked must be the last coding; any other last coding runs until the close.
        let last = headers.get_all(TRANSFER_ENCODING).iter().next_back().map(HeaderValue::as_bytes);
        let chunked = last
            .and_then(|v| v.rsplit(|&b| b == b',').next())
            .is_some_and(|c| crate::request::trim(c).eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked { Framing::Chunked } else { Framing::UntilClose });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let n = parse_length(crate::request::trim(item)).ok_or(HeadError::BadLength)?;
            if length.is_some_and(|seen| seen != n) {
                return Err(HeadError::BadLength);
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// HTTP/1.1 keeps the connection unless `close` is said; HTTP/1.0 closes it unless
/// `keep-alive` is said.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let says = |token: &str| {
        headers.get_all(CONNECTION).iter().any(|v| {
            v.as_bytes().split(|&b| b == b',').any(|t| crate::request::trim(t).eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if version == Version::HTTP_11 { !says("close") } else { says("keep-alive") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, method: Method) -> Result<Parsed, HeadError> {
        parse_response_head(&mut BytesMut::from(text), &method)
    }

    fn head(text: &str) -> ResponseHead {
        match parse(text, Method::GET) {
            Ok(Parsed::Final(head)) => head,
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    #[test]
    fn a_request_head_is_origin_form_with_every_field() {
        let req = Request::get("/cart?id=1").header("host", "shop").header("x-a", "1").body(()).unwrap();
        let mut out = Vec::new();
        write_request_head(&req, &mut out);
        assert_eq!(out, b"GET /cart?id=1 HTTP/1.1\r\nhost: shop\r\nx-a: 1\r\n\r\n");
    }

    #[test]
    fn the_body_is_framed_as_rfc_9112_says() {
        assert_eq!(head("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n").framing, Framing::Length(7));
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n").framing, Framing::Length(7));
        assert_eq!(head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n").framing, Framing::Chunked);
        let both = head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(both.framing, Framing::Chunked, "Transfer-Encoding wins over Content-Length");
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
        assert_eq!(head.parts.headers["x-name"], "a b");
        assert_eq!(head.parts.status, StatusCode::OK);
    }
}
