//! Worker threads: one single-threaded runtime per worker, each with its own `SO_REUSEPORT`
//! listener per service, like nginx's worker processes.
//!
//! The kernel spreads new connections over the workers' sockets; a connection then lives on
//! one thread for its whole life, with that thread's upstream pool, so the hot path needs no
//! lock and no cross-thread wake-up. Shutdown: stop accepting, let in-flight requests finish
//! (bounded by the shutdown timeout), then return.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use canary_core::pin::PinKey;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::proxy::{ClientConn, ConnContext, handle};
use crate::service::Service;

/// Largest request head accepted; a larger one gets `431`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Time a client has to send a complete request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Runs one worker until `shutdown` turns true and its connections have drained.
pub fn run_worker(
    index: usize,
    listeners: Vec<WorkerListener>,
    shutdown: watch::Receiver<bool>,
    shutdown_timeout: Duration,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let graceful = Arc::new(GracefulShutdown::new());
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .writev(false);
        builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEADER_BYTES as u32);
        let builder = Arc::new(builder);
        let mut accepting = Vec::new();
        for listener in listeners {
            let socket = TcpListener::from_std(listener.socket)?;
            accepting.push(tokio::spawn(accept_loop(
                socket,
                listener.service,
                listener.tls,
                listener.pins,
                builder.clone(),
                graceful.clone(),
                shutdown.clone(),
            )));
        }
        for task in accepting {
            let _ = task.await;
        }
        tracing::debug!(worker = index, connections = graceful.count(), "draining");
        let graceful = Arc::into_inner(graceful).expect("accept loops have ended");
        if tokio::time::timeout(shutdown_timeout, graceful.shutdown()).await.is_err() {
            tracing::warn!(worker = index, "shutdown timeout passed with requests still in flight");
        }
        Ok(())
    })
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn accept_loop(
    socket: TcpListener,
    service: Arc<Service>,
    tls: Option<TlsAcceptor>,
    pins: Arc<PinKey>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, service = service.name(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let _ = stream.set_nodelay(true);
        let ctx = Arc::new(ConnContext {
            service: service.clone(),
            pins: pins.clone(),
            client: ClientConn::new(peer, tls.is_some()),
        });
        let svc = service_fn(move |req| handle(ctx.clone(), req));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls_stream) => {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, %peer, "TLS handshake failed");
                        return;
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "client connection ended with an error");
            }
        });
    }
}
