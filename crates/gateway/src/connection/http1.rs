//! The gateway's own HTTP/1.1 server side, on the connection's task: each request head read
//! with `httparse` ([`crate::h1::request_head`]), answered by the proxy, its response written
//! ([`crate::h1::response_writer`]) — no dispatcher task state, no buffers kept while the
//! connection idles. hyper's server kept an 8 KB read and an 8 KB write buffer for the life of
//! every connection, most of the memory of an idle one.
//!
//! A request it does not take (a body, an upgrade, `Expect`, HTTP/1.0, a head it cannot read)
//! ends it: the bytes read so far go to hyper's server, which serves the rest of the connection.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Poll;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{Answers, GOODBYE, Serving};
use crate::conn_clock::Told;
use crate::h1::head::MAX_HEAD;
use crate::h1::request_head::{ClientHead, RequestHead, parse_request_head};
use crate::h1::response_writer::write_response;
use crate::proxy::handle;

/// Bytes one read takes at most. It reads into the stack of the poll that found them, so a
/// connection waiting for its next request holds no buffer.
const READ_CHUNK: usize = 8 * 1024;

/// How waiting for the next request head ended.
#[allow(clippy::large_enum_variant, reason = "one per request, moved once; a box would allocate on every request")]
enum Next {
    Head(RequestHead),
    /// Bytes for hyper's server: they stay in the buffer.
    NotOurs,
    /// The client left, or the connection's clock or the gateway's stop closed it.
    Done,
}

impl Serving<'_> {
    /// Serves the connection's requests while they are ones this server side takes. Returns
    /// the bytes read of the first it does not, for hyper's server; none once the connection
    /// is done.
    pub(super) async fn serve_http1<I>(&mut self, io: &mut I, answers: &Answers) -> Option<BytesMut>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::new();
        loop {
            let head = match self.next_head(io, &mut buf).await {
                Next::Head(head) => head,
                Next::NotOurs => return Some(buf),
                Next::Done => return None,
            };
            if buf.is_empty() {
                // What the head shares of it goes with the request; nothing stays for the idle time.
                buf = BytesMut::new();
            }
            // In a box: the task of an idle connection does not carry the room of a request. The
            // box is taken before the future is made so that the future is made in it: made on
            // the stack and then boxed, all of its room (kilobytes) was copied on every request.
            let serving = Box::write(Box::new_uninit(), self.serve_one(io, &mut buf, answers, head));
            if !Box::into_pin(serving).await {
                return None;
            }
        }
    }

    /// Answers one request and writes its response; whether the connection may take another.
    async fn serve_one<I>(&mut self, io: &mut I, buf: &mut BytesMut, answers: &Answers, head: RequestHead) -> bool
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let method = head.request.method().clone();
        let started = answers.start(&head.request);
        let (response, fields) = tokio::select! {
            biased;
            Ok(mut response) = handle(answers.ctx.clone(), head.request) => {
                let fields = response.body_mut().take_upstream_fields();
                (started.finish(response), fields)
            }
            () = client_left(io, buf) => return false,
        };
        let keep_alive = !head.close && !self.stop_seen();
        match write_response(io, response, fields.as_ref(), &method, keep_alive).await {
            Ok(true) => true,
            Ok(false) => {
                let _ = tokio::time::timeout(GOODBYE, io.shutdown()).await;
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, peer = %self.peer, "writing a response failed");
                false
            }
        }
    }

    /// Reads until `buf` starts with a whole request head, or the connection must end.
    async fn next_head<I: AsyncRead + Unpin>(&mut self, io: &mut I, buf: &mut BytesMut) -> Next {
        loop {
            if !buf.is_empty() {
                match parse_request_head(buf) {
                    ClientHead::Request(head) => return Next::Head(head),
                    ClientHead::NotOurs => return Next::NotOurs,
                    ClientHead::Partial => {}
                }
            }
            let read = match self.grace_ends {
                // A stopping gateway waits a moment for the request a client may be sending.
                Some(grace_ends) => match Box::pin(tokio::time::timeout_at(grace_ends, read_some(io, buf))).await {
                    Ok(read) => read,
                    Err(_) => return Next::Done,
                },
                None => tokio::select! {
                    biased;
                    read = read_some(io, buf) => read,
                    told = self.watch.told() => match told {
                        Told::Close(why) => {
                            tracing::debug!(?why, peer = %self.peer, "closing a client connection");
                            return Next::Done;
                        }
                        Told::Stop => {
                            self.gateway_stopped();
                            continue;
                        }
                    },
                },
            };
            match read {
                Ok(0) => return Next::Done,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, peer = %self.peer, "client connection ended with an error");
                    return Next::Done;
                }
            }
        }
    }

    /// Whether the gateway is stopping, so this answer is the connection's last.
    fn stop_seen(&mut self) -> bool {
        if self.grace_ends.is_none() && self.watch.stopping() {
            self.gateway_stopped();
        }
        self.grace_ends.is_some()
    }
}

/// Reads what has arrived onto the end of `buf`; 0 at the end of the stream.
async fn read_some<I: AsyncRead + Unpin>(io: &mut I, buf: &mut BytesMut) -> io::Result<usize> {
    poll_fn(|cx| {
        let mut room = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut room);
        match Pin::new(&mut *io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                buf.extend_from_slice(read.filled());
                Poll::Ready(Ok(read.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Completes when the client closes its side (or the connection breaks) while its request is
/// answered: as with hyper's server, the answer is then dropped. Bytes that arrive meanwhile
/// are the next requests; they wait in `buf`, up to one head's worth.
async fn client_left<I: AsyncRead + Unpin>(io: &mut I, buf: &mut BytesMut) {
    loop {
        if buf.len() > MAX_HEAD {
            return std::future::pending().await;
        }
        match read_some(io, buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
