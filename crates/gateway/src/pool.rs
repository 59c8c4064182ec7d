//! Connections to upstreams: idle pools per upstream per worker thread, one for the inline
//! HTTP/1.1 exchange ([`H1Conn`], plain sockets) and one for hyper's client (requests with a
//! body, upgrades).
//!
//! Each worker runs its own single-threaded runtime, so its pools live in thread-locals and are
//! used without a lock: a connection is taken out before a request and put back when the
//! response body has been read to its end ([`PooledBody`], [`crate::h1::InlineBody`]). A
//! connection whose response body is dropped early is closed instead, since it may still carry
//! unread bytes.
//!
//! An idle connection is closed `idle_timeout` after it was put back: [`sweep_idle`] runs on
//! every worker and drops expired and upstream-closed ones, so descriptors are not held for
//! clients that left long ago.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::LocalKey;
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::{BodyError, UpstreamBody};
use crate::h1::H1Conn;
use crate::upstream::Upstream;
use canary_core::metrics::UpstreamErrorKind;

/// Idle connections kept per upstream per worker, of each kind.
const MAX_IDLE: usize = 512;

/// A hyper client connection, for requests with a body and upgrades.
pub type HyperConn = SendRequest<UpstreamBody>;

struct IdleConn<T> {
    io: T,
    expires: Instant,
}

/// The idle connections of one kind on one worker, per upstream id.
pub struct IdlePool<T>(Vec<Vec<IdleConn<T>>>);

/// A connection kind the pool keeps.
pub trait Pooled: Sized + 'static {
    /// Whether the upstream may still take a request on it.
    fn is_open(&self) -> bool;

    /// Called while it waits idle in the pool.
    fn on_idle(&mut self) {}

    /// This worker's pool of the kind.
    #[doc(hidden)]
    fn pool() -> &'static LocalKey<RefCell<IdlePool<Self>>>;
}

thread_local! {
    static IDLE_INLINE: RefCell<IdlePool<H1Conn>> = const { RefCell::new(IdlePool(Vec::new())) };
    static IDLE_HYPER: RefCell<IdlePool<HyperConn>> = const { RefCell::new(IdlePool(Vec::new())) };
}

impl Pooled for H1Conn {
    fn is_open(&self) -> bool {
        H1Conn::is_open(self)
    }

    fn on_idle(&mut self) {
        self.release_buffers();
    }

    fn pool() -> &'static LocalKey<RefCell<IdlePool<H1Conn>>> {
        &IDLE_INLINE
    }
}

impl Pooled for HyperConn {
    fn is_open(&self) -> bool {
        !self.is_closed()
    }

    fn pool() -> &'static LocalKey<RefCell<IdlePool<HyperConn>>> {
        &IDLE_HYPER
    }
}

/// A connection checked out of the pool for one exchange.
#[derive(Debug)]
pub struct Conn<T> {
    upstream_id: usize,
    idle_timeout: Duration,
    /// Whether it came from the pool (it served an earlier request).
    pub reused: bool,
    /// The connection.
    pub io: T,
}

/// Timeouts that govern upstream connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectSettings {
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Idle connections older than this are not reused.
    pub idle_timeout: Duration,
}

fn take_idle<T: Pooled>(upstream_id: usize) -> Option<T> {
    T::pool().with_borrow_mut(|IdlePool(pools)| {
        let pool = pools.get_mut(upstream_id)?;
        let now = Instant::now();
        while let Some(conn) = pool.pop() {
            if now < conn.expires && conn.io.is_open() {
                return Some(conn.io);
            }
        }
        None
    })
}

fn retain_usable<T: Pooled>(now: Instant) {
    T::pool().with_borrow_mut(|IdlePool(pools)| {
        for pool in pools.iter_mut() {
            pool.retain_mut(|conn| {
                conn.io.on_idle();
                now < conn.expires && conn.io.is_open()
            });
        }
    });
}

/// Closes this worker's idle connections that expired or that their upstream closed, and
/// lets the others drop their buffers.
pub fn close_expired() {
    let now = Instant::now();
    retain_usable::<H1Conn>(now);
    retain_usable::<HyperConn>(now);
}

/// Idle connections this worker holds.
pub fn idle_count() -> usize {
    fn count<T>(IdlePool(pools): &IdlePool<T>) -> usize {
        pools.iter().map(Vec::len).sum()
    }
    IDLE_INLINE.with_borrow(count) + IDLE_HYPER.with_borrow(count)
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
pub fn checkin<T: Pooled>(conn: Conn<T>) {
    if !conn.io.is_open() {
        return;
    }
    T::pool().with_borrow_mut(|IdlePool(pools)| {
        if pools.len() <= conn.upstream_id {
            pools.resize_with(conn.upstream_id + 1, Vec::new);
        }
        let pool = &mut pools[conn.upstream_id];
        if pool.len() < MAX_IDLE {
            pool.push(IdleConn { io: conn.io, expires: Instant::now() + conn.idle_timeout });
        }
    });
}

/// A connection for the inline exchange to `upstream`: a pooled one if any is alive, else a
/// new one.
pub async fn checkout_inline(
    upstream: &Upstream,
    settings: &ConnectSettings,
) -> Result<Conn<H1Conn>, UpstreamErrorKind> {
    if let Some(io) = take_idle::<H1Conn>(upstream.id) {
        return Ok(Conn { upstream_id: upstream.id, idle_timeout: settings.idle_timeout, reused: true, io });
    }
    connect_inline(upstream, settings).await
}

/// Opens a new connection for the inline exchange, bypassing the pool.
pub async fn connect_inline(
    upstream: &Upstream,
    settings: &ConnectSettings,
) -> Result<Conn<H1Conn>, UpstreamErrorKind> {
    let stream = open(upstream, settings).await?;
    Ok(Conn { upstream_id: upstream.id, idle_timeout: settings.idle_timeout, reused: false, io: H1Conn::new(stream) })
}

/// A ready hyper client connection to `upstream`: a pooled one if any is alive, else a new one.
pub async fn checkout(upstream: &Upstream, settings: &ConnectSettings) -> Result<Conn<HyperConn>, UpstreamErrorKind> {
    while let Some(mut sender) = take_idle::<HyperConn>(upstream.id) {
        if sender.ready().await.is_ok() {
            return Ok(Conn {
                upstream_id: upstream.id,
                idle_timeout: settings.idle_timeout,
                reused: true,
                io: sender,
            });
        }
    }
    connect(upstream, settings).await
}

/// Opens a new hyper client connection, bypassing the pool.
pub async fn connect(upstream: &Upstream, settings: &ConnectSettings) -> Result<Conn<HyperConn>, UpstreamErrorKind> {
    let stream = open(upstream, settings).await?;
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
    Ok(Conn { upstream_id: upstream.id, idle_timeout: settings.idle_timeout, reused: false, io: sender })
}

async fn open(upstream: &Upstream, settings: &ConnectSettings) -> Result<TcpStream, UpstreamErrorKind> {
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
    Ok(stream)
}

/// A response body from hyper's client that returns its connection to the pool once read to
/// the end.
pub struct PooledBody {
    inner: Incoming,
    conn: Option<Conn<HyperConn>>,
}

impl PooledBody {
    /// Wraps `inner`, which arrived over `conn`.
    pub fn new(inner: Incoming, conn: Conn<HyperConn>) -> PooledBody {
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
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled.map_err(BodyError::Hyper)
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
