//! A stream whose first bytes, already read, are read again: the bytes the protocol sniffing
//! took ([`crate::sniff`]), or what the gateway's own HTTP/1.1 server side read before it
//! handed a connection to hyper's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `io`, with the bytes of `P` in front of what it will read.
#[derive(Debug)]
pub struct Replayed<P, I> {
    /// None once given back, so their room goes with them.
    first: Option<P>,
    io: I,
}

impl<P: Buf, I> Replayed<P, I> {
    /// `io` whose next reads give `first` first.
    pub fn new(first: P, io: I) -> Replayed<P, I> {
        Replayed { first: first.has_remaining().then_some(first), io }
    }
}

impl<P: Buf + Unpin, I: AsyncRead + Unpin> AsyncRead for Replayed<P, I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(first) = this.first.as_mut() else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        while first.has_remaining() && buf.remaining() > 0 {
            let given = first.chunk().len().min(buf.remaining());
            buf.put_slice(&first.chunk()[..given]);
            first.advance(given);
        }
        if !first.has_remaining() {
            this.first = None;
            if buf.remaining() > 0 {
                // What has arrived after the replayed bytes comes along: hyper's reader asks for a
                // whole buffer more after a short read. A pending read or an error waits for the
                // next call, which the bytes given now answer first.
                let _ = Pin::new(&mut this.io).poll_read(cx, buf);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<P: Unpin, I: AsyncWrite + Unpin> AsyncWrite for Replayed<P, I> {
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
    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn the_bytes_read_before_come_first_then_the_stream() {
        let (mut client, server) = duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut replayed = Replayed::new(BytesMut::from("hello"), server);
        let mut small = [0; 3];
        replayed.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        assert!(replayed.first.is_some());
        let mut rest = String::new();
        replayed.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "lo world");
        assert!(replayed.first.is_none(), "given back, their room went with them");
    }
}
