//! The two ends of a client connection its clock ([`crate::conn_clock`]) watches: the socket,
//! which reports arriving bytes and holds the connection's place in its worker's table, and
//! each response body, which keeps its request in flight until it is dropped — a long
//! download or event stream is not an idle connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::conn_clock::InFlight;
use crate::conn_table::Registration;

/// What a stream tells when bytes arrive.
pub trait OnRead: Unpin {
    /// `arrived` came in with the last read.
    fn on_read(&mut self, arrived: &[u8]);
}

/// A stream whose reads are reported to `O`; writes pass through untouched.
#[derive(Debug)]
pub struct Observed<I, O> {
    inner: I,
    observer: O,
}

impl<I, O> Observed<I, O> {
    /// Wraps `inner`, reporting its reads to `observer`.
    pub fn new(inner: I, observer: O) -> Observed<I, O> {
        Observed { inner, observer }
    }
}

/// A client socket (plain or TLS) that tells its clock when bytes arrive, and holds its place
/// in its worker's table.
pub type Watched<I> = Observed<I, Registration>;

impl OnRead for Registration {
    fn on_read(&mut self, arrived: &[u8]) {
        self.watch.update(|clock| clock.bytes_read(Instant::now(), arrived));
    }
}

impl<I: AsyncRead + Unpin, O: OnRead> AsyncRead for Observed<I, O> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.observer.on_read(&buf.filled()[before..]);
        }
        poll
    }
}

impl<I: AsyncWrite + Unpin, O: Unpin> AsyncWrite for Observed<I, O> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in flight until it is dropped.
#[derive(Debug)]
pub struct InFlightBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> InFlightBody<B> {
    /// `inner`, answering the request `in_flight` stands for.
    pub fn new(inner: B, in_flight: InFlight) -> InFlightBody<B> {
        InFlightBody { inner, _in_flight: in_flight }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for InFlightBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
