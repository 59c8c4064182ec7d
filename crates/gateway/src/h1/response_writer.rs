//! A response written to an HTTP/1.1 client by the gateway's own server side
//! (`crate::connection`): the head in hyper's form (lower-case names, a cached `date`, the body's
//! length or chunked framing), then the body frame by frame.
//!
//! The head and every body frame already there go out in one write; a frame that has not
//! arrived yet is waited for only after what is ready has been sent, so an event stream is
//! never held back.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRAILER, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body::{Body, Frame};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::fields::UpstreamFields;
use super::put_field;
use crate::request::{list_has, trim};

/// Body frames up to this size are copied behind the head instead of written on their own.
const COPIED_FRAME: usize = 16 * 1024;
/// What is gathered before it is written even while more frames are ready.
const WRITE_BATCH: usize = 64 * 1024;

/// How the body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body at all: `HEAD`, `204`, `304`.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// Writes `response` to a request with `method`; returns whether the connection may take
/// another request. It may not when `keep_alive` is false (then the head says
/// `connection: close`), when the response says `close`, or when the body broke off.
pub async fn write_response<I, B>(
    io: &mut I,
    response: Response<B>,
    fields: Option<&UpstreamFields>,
    method: &Method,
    keep_alive: bool,
) -> io::Result<bool>
where
    I: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (parts, mut body) = response.into_parts();
    let mut out = Gathered::take();
    let out = &mut out.0;
    let head = encode_head(out, parts.status, Fields { map: &parts.headers, wire: fields }, method, &body, keep_alive);
    let mut sent: u64 = 0;
    let mut trailers = None;
    loop {
        let data = match next_frame(io, out, &mut body).await? {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body broke off; closing the client connection");
                write_out(io, out).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    continue;
                }
            },
        };
        sent += data.len() as u64;
        if let Framing::Length(length) = head.framing
            && sent > length
        {
            tracing::debug!(length, sent, "response body longer than its length; closing the client connection");
            write_out(io, out).await?;
            return Ok(false);
        }
        put_data(io, out, head.framing, data).await?;
    }
    match head.framing {
        Framing::Chunked => end_chunks(out, trailers.as_ref(), &parts.headers),
        Framing::Length(length) if sent < length => {
            write_out(io, out).await?;
            return Ok(false);
        }
        _ => {}
    }
    write_out(io, out).await?;
    crate::header_maps::give(parts.headers);
    Ok(head.keep_alive)
}

/// The body's next frame: at once when it is there, else after what is gathered is written.
async fn next_frame<I, B>(
    io: &mut I,
    out: &mut Vec<u8>,
    body: &mut B,
) -> io::Result<Option<Result<Frame<Bytes>, B::Error>>>
where
    I: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
{
    if let Poll::Ready(frame) = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
        return Ok(frame);
    }
    write_out(io, out).await?;
    Ok(poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await)
}

/// Puts one data frame on its way in the body's framing; writes once enough is gathered.
async fn put_data<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    framing: Framing,
    data: Bytes,
) -> io::Result<()> {
    if framing == Framing::None || data.is_empty() {
        return Ok(());
    }
    if framing == Framing::Chunked {
        let _ = write!(out, "{:x}\r\n", data.len());
    }
    put(io, out, data).await?;
    if framing == Framing::Chunked {
        out.extend_from_slice(b"\r\n");
    }
    if out.len() >= WRITE_BATCH {
        write_out(io, out).await?;
    }
    Ok(())
}

/// A response's fields: its map, and the upstream's fields that travel as bytes.
struct Fields<'a> {
    map: &'a HeaderMap,
    wire: Option<&'a UpstreamFields>,
}

/// What the head said about the body and the connection.
struct Head {
    framing: Framing,
    keep_alive: bool,
}

/// The status line and fields of a response, with the framing and `connection: close` it
/// needs and a `date` when it has none.
fn encode_head<B: Body>(
    out: &mut Vec<u8>,
    status: StatusCode,
    fields: Fields<'_>,
    method: &Method,
    body: &B,
    mut keep_alive: bool,
) -> Head {
    let bodiless = *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut framing = None;
    let mut says_close = false;
    let mut has_date = false;
    if let Some(wire) = fields.wire {
        out.extend_from_slice(wire.wire());
        has_date = wire.has_date();
        framing = wire.length().map(|length| if bodiless { Framing::None } else { Framing::Length(length) });
    }
    for (name, value) in fields.map {
        if *name == TRANSFER_ENCODING {
            // The framing is this hop's: the body is framed again below.
            continue;
        }
        if *name == CONTENT_LENGTH {
            if framing.is_some() {
                continue;
            }
            match std::str::from_utf8(trim(value.as_bytes())).ok().and_then(|v| v.parse().ok()) {
                Some(length) => framing = Some(if bodiless { Framing::None } else { Framing::Length(length) }),
                None => continue,
            }
        }
        if *name == CONNECTION {
            says_close |= list_has(value.as_bytes(), b"close");
        }
        has_date |= *name == DATE;
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = framing.unwrap_or_else(|| {
        if bodiless {
            Framing::None
        } else if body.is_end_stream() {
            put_field(out, b"content-length", b"0");
            Framing::Length(0)
        } else if let Some(length) = body.size_hint().exact() {
            let _ = write!(out, "content-length: {length}\r\n");
            Framing::Length(length)
        } else {
            put_field(out, b"transfer-encoding", b"chunked");
            Framing::Chunked
        }
    });
    if !keep_alive && !says_close {
        put_field(out, b"connection", b"close");
    }
    keep_alive &= !says_close;
    if !has_date {
        DATE_VALUE.with(|date| put_field(out, b"date", &date.borrow_mut().now()));
    }
    out.extend_from_slice(b"\r\n");
    Head { framing, keep_alive }
}

/// The last chunk, with the trailers the head announced in `Trailer`.
fn end_chunks(out: &mut Vec<u8>, trailers: Option<&HeaderMap>, headers: &HeaderMap) {
    out.extend_from_slice(b"0\r\n");
    let announced = |name: &str| headers.get_all(TRAILER).iter().any(|v| list_has(v.as_bytes(), name.as_bytes()));
    for (name, value) in trailers.into_iter().flatten().filter(|(name, _)| announced(name.as_str())) {
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Adds `data` to what goes out next: copied when small, else written after what is gathered.
async fn put<I: AsyncWrite + Unpin>(io: &mut I, out: &mut Vec<u8>, data: Bytes) -> io::Result<()> {
    if data.len() <= COPIED_FRAME {
        out.extend_from_slice(&data);
        return Ok(());
    }
    write_out(io, out).await?;
    io.write_all(&data).await
}

/// Writes and flushes what is gathered.
async fn write_out<I: AsyncWrite + Unpin>(io: &mut I, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    io.write_all(out).await?;
    out.clear();
    io.flush().await
}

/// What a response gathers before a write, in a buffer its worker thread keeps for the next
/// response once this one is written: one allocation per worker instead of one per response.
struct Gathered(Vec<u8>);

impl Gathered {
    fn take() -> Gathered {
        Gathered(SPARE_BUFFER.with(|spare| std::mem::take(&mut *spare.borrow_mut())))
    }
}

impl Drop for Gathered {
    fn drop(&mut self) {
        if self.0.capacity() > WRITE_BATCH + COPIED_FRAME {
            return;
        }
        self.0.clear();
        SPARE_BUFFER.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.capacity() < self.0.capacity() {
                std::mem::swap(&mut *spare, &mut self.0);
            }
        });
    }
}

thread_local! {
    static SPARE_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The `date` field's value, formatted once a second per worker thread.
struct DateValue {
    second: u64,
    text: Bytes,
}

impl DateValue {
    fn now(&mut self) -> Bytes {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = Bytes::from(httpdate::fmt_http_date(now));
        }
        self.text.clone()
    }
}

thread_local! {
    static DATE_VALUE: RefCell<DateValue> = const { RefCell::new(DateValue { second: 0, text: Bytes::new() }) };
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::task::Context;

    use http_body::SizeHint;

    use super::*;

    /// A body of frames given one per poll, of a length it does not tell.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::new()
        }
    }

    async fn written(response: Response<Frames>, method: Method, keep_alive: bool) -> (String, bool) {
        let mut out = Vec::new();
        let kept = write_response(&mut out, response, None, &method, keep_alive).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        let dateless: Vec<&str> = text.split("\r\n").filter(|line| !line.starts_with("date: ")).collect();
        assert!(text.contains("\r\ndate: "), "{text:?} has a date");
        (dateless.join("\r\n"), kept)
    }

    fn response(status: u16, fields: &[(&'static str, &str)], frames: Vec<Frame<Bytes>>) -> Response<Frames> {
        let mut response = Response::new(Frames(frames.into()));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in fields {
            response.headers_mut().append(*name, value.parse().unwrap());
        }
        response
    }

    fn data(text: &'static str) -> Frame<Bytes> {
        Frame::data(Bytes::from_static(text.as_bytes()))
    }

    #[tokio::test]
    async fn a_length_is_kept_and_the_body_follows_the_head() {
        let sized = response(200, &[("content-length", "5"), ("x-a", "1")], vec![data("hel"), data("lo")]);
        let (text, kept) = written(sized, Method::GET, true).await;
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello");
        assert!(kept);
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_is_chunked_with_its_announced_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "9".parse().unwrap());
        trailers.insert("x-secret", "1".parse().unwrap());
        let frames = vec![data("ab"), data(""), data("cde"), Frame::trailers(trailers)];
        let (text, _) = written(response(404, &[("trailer", "X-Sum")], frames), Method::GET, true).await;
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\ntrailer: X-Sum\r\ntransfer-encoding: chunked\r\n\r\n\
             2\r\nab\r\n3\r\ncde\r\n0\r\nx-sum: 9\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn head_204_and_304_carry_no_body_and_an_empty_body_says_its_length() {
        let (text, _) = written(response(200, &[("content-length", "9")], vec![]), Method::HEAD, true).await;
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n");
        let (text, _) = written(response(204, &[], vec![]), Method::GET, true).await;
        assert_eq!(text, "HTTP/1.1 204 No Content\r\n\r\n");
        let (text, _) = written(response(304, &[("etag", "\"a\"")], vec![]), Method::GET, true).await;
        assert_eq!(text, "HTTP/1.1 304 Not Modified\r\netag: \"a\"\r\n\r\n");
        let mut empty = Vec::new();
        let response = Response::new(crate::body::ProxyBody::empty());
        write_response(&mut empty, response, None, &Method::GET, true).await.unwrap();
        assert!(String::from_utf8(empty).unwrap().contains("\r\ncontent-length: 0\r\n"));
    }

    #[tokio::test]
    async fn close_is_said_when_asked_and_heard_from_the_response() {
        let (text, kept) = written(response(200, &[("content-length", "0")], vec![]), Method::GET, false).await;
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        assert!(!kept);
        let closing = response(200, &[("connection", "Close"), ("content-length", "0")], vec![]);
        let (text, kept) = written(closing, Method::GET, true).await;
        assert_eq!(text, "HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n");
        assert!(!kept);
    }

    #[tokio::test]
    async fn a_body_shorter_or_longer_than_its_length_closes_the_connection() {
        let short = response(200, &[("content-length", "5")], vec![data("hel")]);
        assert!(!written(short, Method::GET, true).await.1);
        let long = response(200, &[("content-length", "2")], vec![data("hel")]);
        let mut out = Vec::new();
        assert!(!write_response(&mut out, long, None, &Method::GET, true).await.unwrap());
        assert!(!String::from_utf8(out).unwrap().contains("hel"), "nothing past the length is sent");
    }

    fn upstream_fields(text: &str, framing: crate::h1::Framing) -> UpstreamFields {
        use crate::h1::fields::FieldKind;
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(text.as_bytes(), &mut fields) else {
            panic!("{text:?}")
        };
        let kinds: Vec<FieldKind> = fields.iter().map(|f| FieldKind::of(f.name.as_bytes())).collect();
        UpstreamFields::copied(fields, &kinds, framing)
    }

    #[tokio::test]
    async fn the_upstream_s_fields_as_bytes_go_first_and_frame_the_body() {
        let text = "Server: up\r\nContent-Length: 2\r\nDate: Thu, 03 Dec 2026 12:00:00 GMT\r\n\r\n";
        let fields = upstream_fields(text, crate::h1::Framing::Length(2));
        let ours = response(200, &[("x-canary-version", "v2")], vec![data("hi")]);
        let mut out = Vec::new();
        assert!(write_response(&mut out, ours, Some(&fields), &Method::GET, true).await.unwrap());
        let wire = "HTTP/1.1 200 OK\r\nserver: up\r\ncontent-length: 2\r\ndate: Thu, 03 Dec 2026 12:00:00 GMT\r\n\
                    x-canary-version: v2\r\n\r\nhi";
        assert_eq!(String::from_utf8(out).unwrap(), wire, "one length, the upstream's date");

        let to_head = upstream_fields("Content-Length: 9\r\n\r\n", crate::h1::Framing::Empty);
        let mut out = Vec::new();
        write_response(&mut out, response(200, &[], vec![]), Some(&to_head), &Method::HEAD, false).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\ndate: "), "{text:?}");

        let chunked = upstream_fields("x-a: 1\r\n\r\n", crate::h1::Framing::Chunked);
        let (text, _) = {
            let mut out = Vec::new();
            let kept =
                write_response(&mut out, response(200, &[], vec![data("ab")]), Some(&chunked), &Method::GET, true);
            let kept = kept.await.unwrap();
            (String::from_utf8(out).unwrap(), kept)
        };
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n"), "{text:?}");
        assert!(text.ends_with("\r\n\r\n2\r\nab\r\n0\r\n\r\n"), "{text:?}");
    }
}
