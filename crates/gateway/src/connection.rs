//! One client connection, from its accept to its close: the TLS handshake (bounded by
//! `tls_handshake_timeout`), then HTTP/1.1 or HTTP/2 until the client leaves, the connection
//! clock closes it ([`crate::conn_clock`]), its worker sheds it, or the gateway shuts down.
//!
//! A gateway holds many connections that sit idle between requests, and each one's task keeps
//! its whole future, sized for the largest state it can ever be in. So what only some
//! connections or some moments need lives in a box of its own: the TLS handshake and stream
//! (a plain connection does not carry their room), and each request's proxy future (hyper
//! keeps a connection's slot for it, as large as the future, from the accept to the close).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use canary_core::pin::PinKey;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::conn_clock::{Closing, InFlight, Watch};
use crate::conn_table::Registration;
use crate::proxy::{ClientConn, ConnContext, handle};
use crate::service::Service;
use crate::watched::{InFlightBody, Watched};
use crate::worker::{Worker, stopped};

/// How long a connection past its deadline may take to say goodbye (an HTTP/2 `GOAWAY`).
const GOODBYE: Duration = Duration::from_secs(1);
/// How long a stopping gateway keeps an HTTP/1.1 connection open for its client's next request,
/// which then gets its answer with `Connection: close`. Closing an idle kept-alive connection at
/// once would reset a request the client was sending at that moment.
const LAST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// What every connection accepted by one listener shares.
pub struct Accepted {
    /// The service it serves.
    pub service: Arc<Service>,
    /// TLS, when the service has a certificate.
    pub tls: Option<TlsAcceptor>,
    /// The key of the service's pins.
    pub pins: Arc<PinKey>,
}

/// Serves one accepted connection until it ends.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    registration: Registration,
    accepted: Arc<Accepted>,
    worker: Arc<Worker>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let watch = registration.watch.clone();
    let Some(acceptor) = accepted.tls.clone() else {
        return serve_http(Watched::new(stream, registration), peer, &accepted, &worker, &watch, shutdown).await;
    };
    let Some(tls_stream) = Box::pin(tls_handshake(acceptor, stream, peer, &worker, &watch)).await else {
        return;
    };
    let tls = serve_http(Watched::new(tls_stream, registration), peer, &accepted, &worker, &watch, shutdown);
    Box::pin(tls).await
}

/// The TLS stream of `stream`, once its handshake is done in time.
async fn tls_handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    worker: &Worker,
    watch: &Watch,
) -> Option<TlsStream<TcpStream>> {
    let handshake = tokio::time::timeout(worker.limits.tls_handshake, acceptor.accept(stream));
    tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls_stream)) => Some(tls_stream),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                None
            }
        },
        why = watch.expired(worker.limits.deadlines) => {
            tracing::debug!(?why, %peer, "closing a client connection during its TLS handshake");
            None
        }
    }
}

async fn serve_http<I>(
    io: Watched<I>,
    peer: SocketAddr,
    accepted: &Accepted,
    worker: &Worker,
    watch: &Arc<Watch>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctx = Arc::new(ConnContext {
        service: accepted.service.clone(),
        pins: accepted.pins.clone(),
        client: ClientConn::new(peer, accepted.tls.is_some()),
    });
    let requests = watch.clone();
    let closing = Arc::new(AtomicBool::new(false));
    let last_answer = closing.clone();
    let svc = service_fn(move |req| {
        let in_flight = InFlight::start(requests.clone());
        let says_goodbye = last_answer.load(Ordering::Relaxed) && req.version() == http::Version::HTTP_11;
        let response = Box::pin(handle(ctx.clone(), req));
        async move {
            let mut response = response.await?;
            if says_goodbye && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response.map(|body| InFlightBody::new(body, in_flight)))
        }
    });
    let conn = worker.builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        why = watch.expired(worker.limits.deadlines) => {
            tracing::debug!(?why, %peer, "closing a client connection");
            if why != Closing::Shed {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(GOODBYE, conn.as_mut()).await;
            }
            return;
        }
        () = stopped(&mut shutdown) => {
            closing.store(true, Ordering::Relaxed);
            match tokio::time::timeout(LAST_REQUEST_GRACE, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    };
    // An upgraded socket lives on as a tunnel, with its place in the table but no deadline.
    watch.update(|clock| {
        clock.detach();
        false
    });
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "client connection ended with an error");
    }
}
