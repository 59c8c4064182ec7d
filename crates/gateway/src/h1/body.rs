//! The body of an inline exchange's response, read straight from the pooled socket: framed by
//! `Content-Length`, chunks (sizes parsed by `httparse`) or the upstream's close. The connection
//! goes back to its worker's pool the moment the last byte is read, before the client has it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};

use super::H1Conn;
use super::fields::UpstreamFields;
use super::head::{Framing, MAX_HEAD};
use crate::body::BodyError;
use crate::pool::{Conn, checkin};

/// Longest chunk-size line accepted (a size and its extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Most trailer fields accepted.
const MAX_TRAILERS: usize = 32;

/// Where the reader is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes of a `Content-Length` body are still to come.
    Length(u64),
    /// Everything until the upstream closes.
    UntilClose,
    /// At a chunk-size line.
    ChunkSize,
    /// Inside a chunk, this many bytes left.
    ChunkData(u64),
    /// At the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
    /// Read to its end.
    Done,
}

/// What one step of the reader came to.
enum Step {
    /// A frame for the client.
    Frame(Frame<Bytes>),
    /// Moved on within the buffer: step again.
    Again,
    /// More bytes must be read first.
    NeedBytes,
}

/// A response body read from an upstream connection on the request's own task.
pub struct InlineBody {
    conn: Option<Conn<H1Conn>>,
    state: State,
    keep_alive: bool,
    /// A whole body that arrived with the head, handed out as one frame.
    ready: Option<Bytes>,
    /// The head's fields, when they travel as bytes instead of in the response's map.
    fields: Option<UpstreamFields>,
}

impl std::fmt::Debug for InlineBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineBody").field("state", &self.state).field("keep_alive", &self.keep_alive).finish()
    }
}

impl InlineBody {
    /// The body that follows a head on `conn`. A body that is already in the read buffer is
    /// taken out at once and the connection returned to the pool.
    pub fn new(mut conn: Conn<H1Conn>, framing: Framing, keep_alive: bool) -> InlineBody {
        let buffered = conn.io.read_buf.len() as u64;
        let (state, ready) = match framing {
            Framing::Empty | Framing::Length(0) => (State::Done, None),
            Framing::Length(n) if buffered >= n => (State::Done, Some(conn.io.read_buf.split_to(n as usize).freeze())),
            Framing::Length(n) => (State::Length(n), None),
            Framing::Chunked => (State::ChunkSize, None),
            Framing::UntilClose => (State::UntilClose, None),
        };
        let mut body = InlineBody { conn: Some(conn), state, keep_alive, ready, fields: None };
        if state == State::Done {
            body.finish();
        }
        body
    }

    /// The body of a head whose fields travel as bytes.
    pub fn with_fields(mut self, fields: Option<UpstreamFields>) -> InlineBody {
        self.fields = fields;
        self
    }

    /// The head's fields, when they travel as bytes.
    pub fn fields_mut(&mut self) -> Option<&mut UpstreamFields> {
        self.fields.as_mut()
    }

    /// The head's fields, when they travel as bytes; taken out once.
    pub fn take_fields(&mut self) -> Option<UpstreamFields> {
        self.fields.take()
    }

    /// Returns the connection to the pool if it may carry another request: the upstream did
    /// not ask to close it and sent nothing past the body.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.io.read_buf.is_empty()
        {
            checkin(conn);
        }
    }

    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.conn = None;
        self.state = State::Done;
        Poll::Ready(Some(Err(error)))
    }

    /// Reads what the buffer holds of the body, as far as it goes.
    fn step(&mut self) -> Result<Step, BodyError> {
        let Some(conn) = self.conn.as_mut() else {
            self.state = State::Done;
            return Ok(Step::Again);
        };
        let buf = &mut conn.io.read_buf;
        match self.state {
            State::Done => {}
            State::Length(0) => {
                self.state = State::Done;
                self.finish();
            }
            State::Length(left) | State::ChunkData(left) if !buf.is_empty() => {
                let n = left.min(buf.len() as u64);
                let data = buf.split_to(n as usize).freeze();
                self.state = match self.state {
                    State::Length(_) => State::Length(left - n),
                    _ if left == n => State::ChunkEnd,
                    _ => State::ChunkData(left - n),
                };
                if self.state == State::Length(0) {
                    self.state = State::Done;
                    self.finish();
                }
                return Ok(Step::Frame(Frame::data(data)));
            }
            State::UntilClose if !buf.is_empty() => return Ok(Step::Frame(Frame::data(buf.split().freeze()))),
            State::ChunkSize => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    self.state = if size == 0 { State::Trailers } else { State::ChunkData(size) };
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => return Err(BodyError::UpstreamInvalid),
                Ok(httparse::Status::Partial) => return Ok(Step::NeedBytes),
                Err(_) => return Err(BodyError::UpstreamInvalid),
            },
            State::ChunkEnd if buf.len() >= 2 => {
                if &buf[..2] != b"\r\n" {
                    return Err(BodyError::UpstreamInvalid);
                }
                buf.advance(2);
                self.state = State::ChunkSize;
            }
            State::Trailers => return self.trailers(),
            State::Length(_) | State::ChunkData(_) | State::UntilClose | State::ChunkEnd => return Ok(Step::NeedBytes),
        }
        Ok(Step::Again)
    }

    fn trailers(&mut self) -> Result<Step, BodyError> {
        let Some(conn) = self.conn.as_mut() else { return Ok(Step::Again) };
        let buf = &mut conn.io.read_buf;
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = State::Done;
            self.finish();
            return Ok(Step::Again);
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
        let (used, trailers) = match httparse::parse_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete((used, fields))) => (used, trailer_map(fields)?),
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(BodyError::UpstreamInvalid),
            Ok(httparse::Status::Partial) => return Ok(Step::NeedBytes),
            Err(_) => return Err(BodyError::UpstreamInvalid),
        };
        buf.advance(used);
        self.state = State::Done;
        self.finish();
        Ok(Step::Frame(Frame::trailers(trailers)))
    }

    /// Reads more of the body into the connection's buffer; `false` when the upstream closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(conn) = self.conn.as_mut() else { return Poll::Ready(Ok(false)) };
        conn.io.poll_fill(cx)
    }
}

fn trailer_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, BodyError> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| BodyError::UpstreamInvalid)?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| BodyError::UpstreamInvalid)?;
        map.append(name, value);
    }
    Ok(map)
}

impl Body for InlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(data) = this.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        loop {
            if this.state == State::Done {
                return Poll::Ready(None);
            }
            match this.step() {
                Ok(Step::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(Step::Again) => continue,
                Ok(Step::NeedBytes) => {}
                Err(error) => return this.fail(error),
            }
            match ready!(this.poll_fill(cx)) {
                Ok(true) => {}
                // The close is the end of a body that runs until it.
                Ok(false) if this.state == State::UntilClose => {
                    this.conn = None;
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                Ok(false) => return this.fail(BodyError::UpstreamClosed),
                Err(error) => return this.fail(BodyError::Upstream(error)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done && self.ready.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.state, &self.ready) {
            (State::Done, ready) => SizeHint::with_exact(ready.as_ref().map_or(0, |b| b.len() as u64)),
            (State::Length(left), _) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}
