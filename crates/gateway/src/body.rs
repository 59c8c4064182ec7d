//! The body of a response the gateway sends: streamed from an upstream, or made here.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::h1::InlineBody;
use crate::h1::fields::UpstreamFields;
use crate::pool::PooledBody;

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// hyper's client reported it.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// Reading from the upstream failed.
    #[error("reading the upstream's response body failed: {0}")]
    Upstream(std::io::Error),
    /// The upstream closed the connection before the body's end.
    #[error("the upstream closed the connection before the end of the response body")]
    UpstreamClosed,
    /// The body's framing was broken (a bad chunk size, no CRLF after a chunk).
    #[error("the upstream's response body is not validly framed")]
    UpstreamInvalid,
}

/// A request body on its way upstream: the client's, streamed through, or none at all — a
/// bodiless request read by the gateway's own HTTP/1.1 server side, or one re-sent to stable.
#[derive(Debug)]
pub enum UpstreamBody {
    /// The client's body, as hyper's server read it.
    Client(hyper::body::Incoming),
    /// No body.
    Empty,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Client(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(body) => body.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client(body) => body.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A response body: an upstream's, streamed through, or a small one the gateway wrote.
pub enum ProxyBody {
    /// Streamed from the upstream through hyper's client; returns the connection to the pool
    /// at its end.
    Upstream(PooledBody),
    /// Streamed from the upstream by the inline exchange.
    Inline(InlineBody),
    /// Written by the gateway (errors, empty upgrade responses).
    Local(Option<Bytes>),
}

impl ProxyBody {
    /// A body with the given text.
    pub fn text(text: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Local(Some(text.into()))
    }

    /// An empty body.
    pub fn empty() -> ProxyBody {
        ProxyBody::Local(None)
    }

    /// The upstream's fields when they travel as bytes beside the response's map.
    pub fn upstream_fields_mut(&mut self) -> Option<&mut UpstreamFields> {
        match self {
            ProxyBody::Inline(body) => body.fields_mut(),
            ProxyBody::Upstream(_) | ProxyBody::Local(_) => None,
        }
    }

    /// The upstream's fields when they travel as bytes beside the response's map
    /// ([`crate::h1::fields`]); taken out once.
    pub fn take_upstream_fields(&mut self) -> Option<UpstreamFields> {
        match self {
            ProxyBody::Inline(body) => body.take_fields(),
            ProxyBody::Upstream(_) | ProxyBody::Local(_) => None,
        }
    }
}

/// Moves the upstream's fields that travel as bytes into `response`'s map, for a server side
/// that writes from the map.
pub fn fields_into_map(response: &mut http::Response<ProxyBody>) {
    if let Some(fields) = response.body_mut().take_upstream_fields() {
        fields.append_to(response.headers_mut());
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Inline(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Inline(body) => body.is_end_stream(),
            ProxyBody::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Inline(body) => body.size_hint(),
            ProxyBody::Local(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
