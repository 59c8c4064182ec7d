//! The inline HTTP/1.1 upstream exchange: a bodiless request written from the request's own
//! task straight to a pooled socket, its response head parsed there with `httparse`
//! ([`head`]), its body streamed from the same socket ([`body`]).
//!
//! The gateway's own HTTP/1.1 server side lives here too: [`request_head`] and
//! [`response_writer`], driven by `crate::connection`.
//!
//! hyper's client would run each connection as a second task: the request crosses a channel
//! to it, the head comes back over a oneshot and the body over another channel, each a wake-up.
//! Here none of that happens. Requests with a body and protocol upgrades still go through
//! hyper's client ([`crate::pool`] keeps both kinds of connection), which handles an upstream
//! that answers before it has read the whole body.

pub mod body;
pub mod fields;
pub mod head;
pub mod request_head;
pub mod response_writer;

use std::io;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, BytesMut};
use http::{HeaderName, HeaderValue, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use body::InlineBody;
pub use head::{Framing, HeadError, ResponseHead};
use head::{Parsed, parse_response_head, write_request_head};

/// Appends the field line `name: value` to a head being written.
pub fn put_field<B: BufMut>(out: &mut B, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Room made in the read buffer before a read.
const READ_CHUNK: usize = 8 * 1024;

/// A plain upstream connection with the buffers of its exchanges.
#[derive(Debug)]
pub struct H1Conn {
    stream: TcpStream,
    read_buf: BytesMut,
    write_buf: Vec<u8>,
}

/// Why an inline exchange produced no response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H1Error {
    /// Writing the request failed: the upstream has no whole request, so it acted on none.
    Unsent,
    /// The upstream closed the connection without a byte of answer. On a reused connection
    /// this is its keep-alive timeout meeting the request.
    NoAnswer,
    /// The connection broke while the head was arriving.
    Reset,
    /// The answer is not an HTTP/1.x response head this exchange accepts.
    Invalid(HeadError),
}

impl H1Conn {
    /// A new connection over `stream`.
    pub fn new(stream: TcpStream) -> H1Conn {
        H1Conn { stream, read_buf: BytesMut::new(), write_buf: Vec::new() }
    }

    /// Whether the connection may take a request: the upstream has not closed it and sent
    /// nothing unasked. Asks the socket without blocking; while the reactor saw no event on it
    /// this costs no system call.
    pub fn is_open(&self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Drops the buffers' memory while the connection waits in the pool.
    pub fn release_buffers(&mut self) {
        if self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
        self.write_buf = Vec::new();
    }

    /// Sends `req` (which has no body) with the fields of `added` after its own, and reads the
    /// final response head; interim `1xx` responses are skipped. The body, if any, follows in
    /// the read buffer.
    pub async fn send<'a, B>(
        &mut self,
        req: &'a Request<B>,
        added: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    ) -> Result<ResponseHead, H1Error> {
        self.write_buf.clear();
        write_request_head(req, added, &mut self.write_buf);
        self.stream.write_all(&self.write_buf).await.map_err(|_| H1Error::Unsent)?;
        let mut answered = false;
        loop {
            match parse_response_head(&mut self.read_buf, req.method()).map_err(H1Error::Invalid)? {
                Parsed::Final(head) => return Ok(head),
                Parsed::Interim(len) => {
                    let _ = self.read_buf.split_to(len);
                    continue;
                }
                Parsed::Partial => {}
            }
            self.read_buf.reserve(READ_CHUNK);
            match self.stream.read_buf(&mut self.read_buf).await {
                Ok(0) if !answered => return Err(H1Error::NoAnswer),
                Ok(0) | Err(_) => return Err(H1Error::Reset),
                Ok(_) => answered = true,
            }
        }
    }

    /// Reads more into the read buffer; `false` when the upstream closed.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
            self.read_buf.reserve(READ_CHUNK);
        }
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read_buf(&mut self.read_buf) {
                Ok(n) => return Poll::Ready(Ok(n > 0)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}
