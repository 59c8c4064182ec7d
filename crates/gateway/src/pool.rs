//! Connections to upstreams: one idle pool per upstream per worker thread.
//!
//! Each worker runs its own single-threaded runtime, so its pool lives in a thread-local and is
//! used without a lock: a connection is taken out before a request and put back when the
//! response body has been read to its end ([`PooledBody`]). A connection whose response body is
//! dropped early is closed instead, since it may still carry unread bytes.
//!
//! An idle connection is closed `idle_timeout` after it was put back: [`sweep_idle`] runs on
//! every worker and drops expired and upstream-closed ones, so descriptors are not held for
//! clients that left long ago.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::body::UpstreamBody;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::upstream::Upstream;
use canary_core::metrics::UpstreamErrorKind;

/// Idle connections kept per upstream per worker.
const MAX_IDLE: usize = 512;

struct IdleConn {
    sender: SendRequest<UpstreamBody>,
    expires: Instant,
}

impl IdleConn {
    fn usable(&self, now: Instant) -> bool {
        !self.sender.is_closed() && now < self.expires
    }
}

thread_local! {
    static IDLE: RefCell<Vec<Vec<IdleConn>>> = const { RefCell::new(Vec::new()) };
}

/// A connection checked out of the pool for one exchange.
pub struct Conn {
    upstream_id: usize,
    idle_timeout: Duration,
    /// Where requests are sent.
    pub sender: SendRequest<UpstreamBody>,
}

/// Timeouts that govern upstream connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectSettings {
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Idle connections older than this are not reused.
    pub idle_timeout: Duration,
}

fn take_idle(upstream_id: usize) -> Option<SendRequest<UpstreamBody>> {
    IDLE.with_borrow_mut(|pools| {
        let pool = pools.get_mut(upstream_id)?;
        let now = Instant::now();
        while let Some(conn) = pool.pop() {
            if conn.usable(now) {
                return Some(conn.sender);
            }
        }
        None
    })
}

/// Closes this worker's idle connections that expired or that their upstream closed.
pub fn close_expired() {
    let now = Instant::now();
    IDLE.with_borrow_mut(|pools| {
        for pool in pools.iter_mut() {
            pool.retain(|conn| conn.usable(now));
        }
    });
}

/// Idle connections this worker holds.
pub fn idle_count() -> usize {
    IDLE.with_borrow(|pools| pools.iter().map(Vec::len).sum())
}

/// Runs [`close_expired`] every `every`, on the worker's own thread, for as long as the
/// worker runs.
pub async fn sweep_idle(every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        close_expired();
    }
}

/// Returns a connection whose exchange finished cleanly to this worker's pool.
pub fn checkin(conn: Conn) {
    if conn.sender.is_closed() {
        return;
    }
    IDLE.with_borrow_mut(|pools| {
        if pools.len() <= conn.upstream_id {
            pools.resize_with(conn.upstream_id + 1, Vec::new);
        }
        let pool = &mut pools[conn.upstream_id];
        if pool.len() < MAX_IDLE {
            pool.push(IdleConn { sender: conn.sender, expires: Instant::now() + conn.idle_timeout });
        }
    });
}

/// A ready connection to `upstream`: a pooled one if any is alive, else a new one.
pub async fn checkout(upstream: &Upstream, settings: &ConnectSettings) -> Result<Conn, UpstreamErrorKind> {
    while let Some(mut sender) = take_idle(upstream.id) {
        if sender.ready().await.is_ok() {
            return Ok(Conn { upstream_id: upstream.id, idle_timeout: settings.idle_timeout, sender });
        }
    }
    connect(upstream, settings).await
}

/// Opens a new connection, bypassing the pool.
pub async fn connect(upstream: &Upstream, settings: &ConnectSettings) -> Result<Conn, UpstreamErrorKind> {
    let connecting = async {
        match upstream.addr {
            Some(addr) => TcpStream::connect(addr).await,
            None => TcpStream::connect(upstream.authority.as_str()).await,
        }
    };
    let stream = match tokio::time::timeout(settings.connect_timeout, connecting).await {
        Err(_) => return Err(UpstreamErrorKind::ConnectTimeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(UpstreamErrorKind::ConnectRefused);
        }
        Ok(Err(_)) => return Err(UpstreamErrorKind::ConnectOther),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| UpstreamErrorKind::ConnectOther)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Conn { upstream_id: upstream.id, idle_timeout: settings.idle_timeout, sender })
}

/// A response body from an upstream that returns its connection to the pool once read to the
/// end.
pub struct PooledBody {
    inner: Incoming,
    conn: Option<Conn>,
}

impl PooledBody {
    /// Wraps `inner`, which arrived over `conn`.
    pub fn new(inner: Incoming, conn: Conn) -> PooledBody {
        PooledBody { inner, conn: Some(conn) }
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            checkin(conn);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body with nothing left (204, HEAD, Content-Length: 0) may never be polled.
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}
