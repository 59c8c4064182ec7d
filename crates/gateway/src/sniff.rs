//! Which protocol a client connection speaks, told by its first bytes: HTTP/2 with prior
//! knowledge opens with the 24-byte preface, anything else is HTTP/1.1.
//!
//! The bytes read to tell are given back to the protocol with the next bytes that have already
//! arrived, in one read. hyper's HTTP/1.1 reader asks for room for a whole buffer after a short
//! read, so handing it the few sniffed bytes alone would double its read buffer, 8 KB more
//! for the life of every connection.

use std::future::Future;
use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Buf;
use bytes::buf::Take;
use tokio::io::{AsyncRead, ReadBuf};

use crate::replayed::Replayed;

/// What a client connection opens with when it speaks HTTP/2 without negotiating it.
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (or 1.0).
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
}

/// A connection with the bytes read to tell its protocol given back.
pub type Sniffed<I> = Replayed<Take<Cursor<[u8; 24]>>, I>;

/// Reads the first bytes of `io`, just enough to tell its protocol.
pub fn sniff<I: AsyncRead + Unpin>(io: I) -> Sniff<I> {
    Sniff { io: Some(io), first: [0; 24], filled: 0 }
}

/// The future of [`sniff`]: the protocol, and the stream with the bytes read given back.
#[derive(Debug)]
pub struct Sniff<I> {
    io: Option<I>,
    first: [u8; 24],
    filled: usize,
}

impl<I: AsyncRead + Unpin> Future for Sniff<I> {
    type Output = io::Result<(Protocol, Sniffed<I>)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(io) = this.io.as_mut() else {
            return Poll::Ready(Err(io::Error::other("polled after completion")));
        };
        let mut protocol = Protocol::Http2;
        while this.filled < H2_PREFACE.len() {
            let mut buf = ReadBuf::new(&mut this.first[this.filled..]);
            ready!(Pin::new(&mut *io).poll_read(cx, &mut buf))?;
            let read = buf.filled().len();
            let seen = this.filled + read;
            if read == 0 || this.first[this.filled..seen] != H2_PREFACE[this.filled..seen] {
                this.filled = seen;
                protocol = Protocol::Http1;
                break;
            }
            this.filled = seen;
        }
        let io = this.io.take().expect("checked above");
        let first = Cursor::new(this.first).take(this.filled);
        Poll::Ready(Ok((protocol, Replayed::new(first, io))))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";

    #[tokio::test]
    async fn an_http1_request_is_read_whole_in_the_first_read_after_sniffing() {
        let (mut client, server) = duplex(1024);
        client.write_all(REQUEST).await.unwrap();
        let (protocol, mut replayed) = sniff(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        let mut buf = [0; 8192];
        let read = replayed.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..read], REQUEST, "the sniffed bytes and the rest arrive together");
    }

    #[tokio::test]
    async fn the_preface_sent_in_pieces_is_http2_and_read_again() {
        let (mut client, server) = duplex(1024);
        let sniffing = tokio::spawn(sniff(server));
        for piece in H2_PREFACE.chunks(5) {
            client.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
        client.write_all(b"\0\0\0\x04\0\0\0\0\0").await.unwrap();
        let (protocol, mut replayed) = sniffing.await.unwrap().unwrap();
        assert_eq!(protocol, Protocol::Http2);
        let mut seen = vec![0; 33];
        replayed.read_exact(&mut seen).await.unwrap();
        assert_eq!(&seen[..24], H2_PREFACE);
        assert_eq!(&seen[24..], b"\0\0\0\x04\0\0\0\0\0", "the SETTINGS frame after the preface");
    }

    #[tokio::test]
    async fn a_request_opening_like_the_preface_is_http1_and_small_reads_get_it_in_parts() {
        let (mut client, server) = duplex(1024);
        client.write_all(b"P").await.unwrap();
        client.write_all(b"UT / HTTP/1.1\r\n").await.unwrap();
        let (protocol, mut replayed) = sniff(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http1, "\"PU\" is not \"PR\"");
        let mut small = [0; 1];
        replayed.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"P");
        let mut rest = [0; 15];
        replayed.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"UT / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_client_that_leaves_silently_is_http1_with_nothing_to_read() {
        let (client, server) = duplex(1024);
        drop(client);
        let (protocol, mut replayed) = sniff(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        assert_eq!(replayed.read(&mut [0; 16]).await.unwrap(), 0, "end of stream");
    }
}
