//! Worker threads: one single-threaded runtime per worker, each with its own `SO_REUSEPORT`
//! listener per service, like nginx's worker processes.
//!
//! The kernel spreads new connections over the workers' sockets; a connection then lives on
//! one thread for its whole life, with that thread's upstream pool, so the hot path needs no
//! lock and no cross-thread wake-up. Each worker holds at most its share of
//! `max_connections` ([`crate::conn_table`]) and times every connection
//! ([`crate::conn_clock`]). Shutdown: stop accepting, let in-flight requests finish (bounded by
//! the shutdown timeout), then return.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use canary_core::pin::PinKey;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::accept::{LOG_INTERVAL, RateLimitedLog, backoff, out_of_descriptors};
use crate::conn_table::{Admission, ConnTable, watch_deadlines};
use crate::connection::{Accepted, serve_connection};
use crate::limits::ConnLimits;
use crate::service::Service;
use crate::{pool, request_deadlines};

/// Largest request head accepted; a larger one gets `431`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How often a worker closes its expired idle upstream connections.
const POOL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A listening socket of one service for one worker.
pub struct WorkerListener {
    /// The service it serves.
    pub service: Arc<Service>,
    /// The socket, already bound and listening.
    pub socket: std::net::TcpListener,
    /// TLS, when the service has a certificate.
    pub tls: Option<TlsAcceptor>,
    /// The key of the service's pins.
    pub pins: Arc<PinKey>,
    /// The key of release trains' cohort tokens.
    pub cohorts: Arc<PinKey>,
}

/// What every connection of one worker shares.
pub struct Worker {
    /// The HTTP/1.1 server settings.
    pub http1: http1::Builder,
    /// The HTTP/2 server settings.
    pub http2: http2::Builder<TokioExecutor>,
    /// The worker's open connections.
    pub table: Arc<ConnTable>,
    /// The limits and timeouts of each connection.
    pub limits: ConnLimits,
}

/// Binds `count` sockets sharing `addr` through `SO_REUSEPORT`. Port 0 is resolved by the
/// first socket and reused by the others.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut sockets = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_tcp_nodelay(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// The HTTP/1.1 server settings of every client connection.
fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    // The header-read and idle deadlines are the connection clock's: hyper's own header timer
    // also runs while a connection is idle, and would close kept-alive ones early.
    builder.header_read_timeout(None);
    // `max_buf_size` only stops a head still incomplete when the buffer is full, so a larger
    // one read in a few big reads would pass; `max_header_size` checks the parsed head.
    builder.max_header_size(MAX_HEADER_BYTES).max_buf_size(MAX_HEADER_BYTES);
    // Writes stay hyper's default, vectored where the stream supports it: with `writev(false)`
    // hyper copies response bodies into the connection's write buffer, which then keeps the
    // size of the largest response (up to `max_buf_size`) as long as the connection lives.
    builder
}

/// The HTTP/2 server settings of every client connection.
fn http2_builder(limits: &ConnLimits) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout);
    builder
}

/// Runs one worker until `shutdown` turns true and its connections have drained.
pub fn run_worker(
    index: usize,
    listeners: Vec<WorkerListener>,
    shutdown: watch::Receiver<bool>,
    shutdown_timeout: Duration,
    limits: ConnLimits,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let worker = Arc::new(Worker {
            http1: http1_builder(),
            http2: http2_builder(&limits),
            table: ConnTable::new(limits.per_worker),
            limits,
        });
        // Every connection holds a sender; the receiver sees the end once all have closed.
        let (open, mut all_closed) = mpsc::channel::<()>(1);
        let sweeper = tokio::spawn(pool::sweep_idle(POOL_SWEEP_INTERVAL));
        let deadlines = tokio::spawn(watch_deadlines(worker.table.clone(), worker.limits.deadlines));
        let request_deadlines = tokio::spawn(request_deadlines::watch());
        let mut accepting = Vec::new();
        for listener in listeners {
            let socket = TcpListener::from_std(listener.socket)?;
            let accepted = Accepted {
                service: listener.service,
                tls: listener.tls,
                pins: listener.pins,
                cohorts: listener.cohorts,
            };
            let task = accept_loop(socket, Arc::new(accepted), worker.clone(), shutdown.clone(), open.clone());
            accepting.push(tokio::spawn(task));
        }
        drop(open);
        for task in accepting {
            let _ = task.await;
        }
        worker.table.stop();
        tracing::debug!(worker = index, connections = worker.table.len(), "draining");
        if tokio::time::timeout(shutdown_timeout, all_closed.recv()).await.is_err() {
            tracing::warn!(worker = index, "shutdown timeout passed with requests still in flight");
        }
        sweeper.abort();
        deadlines.abort();
        request_deadlines.abort();
        Ok(())
    })
}

/// Completes once `shutdown` turns true.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn accept_loop(
    socket: TcpListener,
    accepted: Arc<Accepted>,
    worker: Arc<Worker>,
    mut shutdown: watch::Receiver<bool>,
    open: mpsc::Sender<()>,
) {
    let service = accepted.service.name().to_owned();
    let mut failures = RateLimitedLog::new(LOG_INTERVAL);
    let mut refusals = RateLimitedLog::new(LOG_INTERVAL);
    loop {
        let result = tokio::select! {
            result = socket.accept() => result,
            _ = stopped(&mut shutdown) => return,
        };
        let (stream, peer) = match result {
            Ok(pair) => pair,
            Err(e) => {
                if out_of_descriptors(&e) {
                    // Closing the longest idle client frees a descriptor for the next accept.
                    worker.table.shed_one();
                }
                if let Some(count) = failures.record(Instant::now()) {
                    tracing::warn!(error = %e, service, count, "accept failed ({count} times since the last report)");
                }
                tokio::time::sleep(backoff(&e)).await;
                continue;
            }
        };
        if let Some(count) = failures.due(Instant::now()) {
            tracing::warn!(service, count, "accept failed ({count} times since the last report)");
        }
        let registration = match worker.table.admit() {
            Admission::Admitted(registration) => registration,
            Admission::Refused => {
                if let Some(count) = refusals.record(Instant::now()) {
                    let max = worker.table.max();
                    tracing::warn!(
                        service,
                        count,
                        max,
                        "connection limit reached: refused {count} new connections, every open one is busy"
                    );
                }
                continue;
            }
        };
        let shared = (accepted.clone(), worker.clone(), open.clone());
        // The future is made inside the task: one made outside and moved in would take the
        // task's room twice, for as long as the connection lives.
        tokio::spawn(async move {
            let (accepted, worker, open) = shared;
            serve_connection(stream, peer, registration, accepted, worker).await;
            drop(open);
        });
        if worker.table.shedding() > 0 {
            // Let the shed connections close before taking more descriptors from the backlog.
            tokio::task::yield_now().await;
        }
    }
}
