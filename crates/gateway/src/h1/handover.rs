//! A client connection handed from the gateway's own HTTP/1.1 server side to hyper's: the
//! bytes already read (a request the own side does not take, and whatever followed it) are
//! read again first.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `io`, with `read` in front of what it will read.
#[derive(Debug)]
pub struct Prefixed<I> {
    read: BytesMut,
    io: I,
}

impl<I> Prefixed<I> {
    /// `io` whose next reads give `read` first.
    pub fn new(read: BytesMut, io: I) -> Prefixed<I> {
        Prefixed { read, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let given = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read[..given]);
        this.read.advance(given);
        if this.read.is_empty() {
            // Its room goes back before hyper's own buffer takes over.
            this.read = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn the_bytes_read_before_come_first_then_the_stream() {
        let (mut client, server) = duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut prefixed = Prefixed::new(BytesMut::from("hello"), server);
        let mut small = [0; 3];
        prefixed.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        let mut rest = String::new();
        prefixed.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "lo world");
    }
}
