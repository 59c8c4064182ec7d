//! One client connection, from its accept to its close: the TLS handshake (bounded by
//! `tls_handshake_timeout`), then HTTP/1.1 or HTTP/2 until the client leaves, the connection
//! clock closes it ([`crate::conn_clock`]), its worker sheds it, or the gateway shuts down.
//!
//! A gateway holds many connections that sit idle between requests, and each one's task keeps
//! its whole future, sized for the largest state it can ever be in. So what only some
//! connections or some moments need lives in a box of its own: the TLS handshake and stream
//! (a plain connection does not carry their room), hyper's connection state and its driving
//! (the first bytes tell the protocol, [`crate::sniff`]), and each request (hyper keeps a
//! connection's slot for it, as large as the future, from the accept to the close; the own
//! server side boxes the whole request). Its deadlines and the gateway's stop cost it one small
//! wait on its clock ([`crate::conn_clock::Watch::told`]), no timer.
//!
//! HTTP/1.1 is served by the gateway's own server side ([`http1`]) for as long as the requests
//! are ones it takes, and by hyper's from the first one it does not to the close; HTTP/2 by
//! hyper's.

mod http1;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use canary_core::pin::PinKey;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::body::{ProxyBody, UpstreamBody, fields_into_map};
use crate::conn_clock::{Clock, Closing, InFlight, Told, Watch};
use crate::conn_table::Registration;
use crate::proxy::{ClientConn, ConnContext, handle};
use crate::replayed::Replayed;
use crate::sniff::{Protocol, Sniff, Sniffed, sniff};
use crate::watched::{InFlightBody, Watched};
use crate::worker::Worker;

/// How long a connection past its deadline may take to say goodbye (an HTTP/2 `GOAWAY`).
const GOODBYE: Duration = Duration::from_secs(1);
/// How long a stopping gateway keeps an HTTP/1.1 connection open for its client's next request,
/// which then gets its answer with `Connection: close`. Closing an idle kept-alive connection at
/// once would reset a request the client was sending at that moment.
const LAST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// What every connection accepted by one listener shares.
pub struct Accepted {
    /// The service it serves.
    pub service: Arc<crate::service::Service>,
    /// TLS, when the service has a certificate.
    pub tls: Option<TlsAcceptor>,
    /// The key of the service's pins.
    pub pins: Arc<PinKey>,
    /// The key of release trains' cohort tokens.
    pub cohorts: Arc<PinKey>,
}

/// Serves one accepted connection until it ends.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    registration: Registration,
    accepted: Arc<Accepted>,
    worker: Arc<Worker>,
) {
    let _ = stream.set_nodelay(true);
    let watch = registration.watch.clone();
    let Some(acceptor) = accepted.tls.clone() else {
        return serve_http(Watched::new(stream, registration), peer, &accepted, &worker, &watch).await;
    };
    let Some(tls_stream) = Box::pin(tls_handshake(acceptor, stream, peer, &worker, &watch)).await else {
        return;
    };
    // Made straight into its box: a future named here first would keep its room in this one.
    let tls = Box::pin(serve_http(Watched::new(tls_stream, registration), peer, &accepted, &worker, &watch));
    tls.await
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
        why = watch.closed() => {
            tracing::debug!(?why, %peer, "closing a client connection during its TLS handshake");
            None
        }
    }
}

async fn serve_http<I>(io: Watched<I>, peer: SocketAddr, accepted: &Accepted, worker: &Worker, watch: &Arc<Watch>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut serving = Serving { peer, watch, grace_ends: None };
    // In a box, gone once the protocol is known: waiting for the first bytes is the largest
    // state of a connection's task, which would otherwise keep its room to the close.
    let Some((protocol, io)) = Box::pin(serving.first_bytes(sniff(io))).await else {
        return;
    };
    let answers = Answers::new(accepted, peer, watch);
    let result = match protocol {
        Protocol::Http1 => {
            let mut io = io;
            let Some(read) = serving.serve_http1(&mut io, &answers).await else {
                return;
            };
            // In a box, as HTTP/2's: the connections that never need hyper do not carry its room.
            let io = TokioIo::new(Replayed::new(read, io));
            let mut conn = Box::pin(worker.http1.serve_connection(io, answers.service()).with_upgrades());
            Box::pin(serving.drive(conn.as_mut(), |conn| conn.graceful_shutdown())).await
        }
        Protocol::Http2 => {
            // In a box: HTTP/1.1 connections, most of them, do not carry the room of its state.
            let io = TokioIo::new(io);
            let mut conn = Box::pin(worker.http2.serve_connection(io, answers.service()));
            Box::pin(serving.drive(conn.as_mut(), |conn| conn.graceful_shutdown())).await
        }
    };
    let Some(result) = result else {
        return;
    };
    // An upgraded socket lives on as a tunnel, with its place in the table but no deadline.
    watch.update(Clock::detach);
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "client connection ended with an error");
    }
}

/// The proxy's answers to the requests of one connection, for both HTTP/1.1 server sides and
/// HTTP/2. Once the gateway stops, an HTTP/1.1 answer says `Connection: close`.
#[derive(Clone)]
struct Answers {
    ctx: Arc<ConnContext>,
    requests: Arc<Watch>,
}

impl Answers {
    fn new(accepted: &Accepted, peer: SocketAddr, watch: &Arc<Watch>) -> Answers {
        let ctx = Arc::new(ConnContext {
            service: accepted.service.clone(),
            pins: accepted.pins.clone(),
            cohorts: accepted.cohorts.clone(),
            client: ClientConn::new(peer, accepted.tls.is_some()),
        });
        Answers { ctx, requests: watch.clone() }
    }

    /// Marks `req` in flight; [`Started::finish`] makes the proxy's response to it the
    /// connection's.
    fn start(&self, req: &Request<UpstreamBody>) -> Started {
        let in_flight = InFlight::start(self.requests.clone());
        let says_goodbye = in_flight.gateway_stopping() && req.version() == http::Version::HTTP_11;
        Started { in_flight, says_goodbye }
    }

    /// The proxy as hyper's servers call it.
    fn service(
        &self,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<InFlightBody<ProxyBody>>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + use<> {
        let answers = self.clone();
        service_fn(move |req: Request<Incoming>| {
            let req = req.map(UpstreamBody::Client);
            let started = answers.start(&req);
            // In a box: hyper keeps a slot as large as this future for the connection's life.
            // The box comes first so that the future is made in it, not copied there.
            let response = Box::into_pin(Box::write(Box::new_uninit(), handle(answers.ctx.clone(), req)));
            async move {
                let Ok(mut response) = response.await;
                fields_into_map(&mut response);
                Ok::<_, Infallible>(started.finish(response))
            }
        })
    }
}

/// A request in flight, until its response body is dropped.
struct Started {
    in_flight: InFlight,
    says_goodbye: bool,
}

impl Started {
    /// The proxy's `response`, saying `Connection: close` when the gateway is stopping, its
    /// body keeping the request in flight.
    fn finish(self, mut response: Response<ProxyBody>) -> Response<InFlightBody<ProxyBody>> {
        if self.says_goodbye && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        let in_flight = self.in_flight;
        response.map(|body| InFlightBody::new(body, in_flight))
    }
}

/// One connection being served, until its clock, the client or a shutdown ends it.
struct Serving<'a> {
    peer: SocketAddr,
    watch: &'a Watch,
    /// When a stopping gateway stops waiting for this connection's next request.
    grace_ends: Option<Instant>,
}

impl Serving<'_> {
    /// The connection's protocol, once its first bytes have come; none if it closed or its
    /// clock closed it first.
    async fn first_bytes<I: AsyncRead + Unpin>(&mut self, mut sniff: Sniff<I>) -> Option<(Protocol, Sniffed<I>)> {
        let sniffed = tokio::select! {
            sniffed = &mut sniff => sniffed,
            told = self.watch.told() => match told {
                Told::Close(why) => {
                    tracing::debug!(?why, peer = %self.peer, "closing a client connection");
                    return None;
                }
                Told::Stop => {
                    let grace_ends = self.gateway_stopped();
                    Box::pin(tokio::time::timeout_at(grace_ends, &mut sniff)).await.ok()?
                }
            },
        };
        sniffed
            .inspect_err(|e| tracing::debug!(error = %e, peer = %self.peer, "client connection ended with an error"))
            .ok()
    }

    /// Serves `conn` to its end; none if its clock closed it. `goodbye` asks it to finish its
    /// requests and close.
    async fn drive<C>(&mut self, mut conn: Pin<&mut C>, goodbye: fn(Pin<&mut C>)) -> Option<hyper::Result<()>>
    where
        C: Future<Output = hyper::Result<()>>,
    {
        let told = tokio::select! {
            result = conn.as_mut() => return Some(result),
            told = self.watch.told() => told,
        };
        match told {
            Told::Close(why) => {
                tracing::debug!(?why, peer = %self.peer, "closing a client connection");
                if why != Closing::Shed {
                    goodbye(conn.as_mut());
                    let _ = tokio::time::timeout(GOODBYE, conn.as_mut()).await;
                }
                None
            }
            Told::Stop => {
                let grace_ends = self.gateway_stopped();
                match tokio::time::timeout_at(grace_ends, conn.as_mut()).await {
                    Ok(result) => Some(result),
                    Err(_) => {
                        goodbye(conn.as_mut());
                        Some(conn.await)
                    }
                }
            }
        }
    }

    /// The gateway is stopping: returns until when the connection waits for the client's next
    /// request.
    fn gateway_stopped(&mut self) -> Instant {
        *self.grace_ends.get_or_insert_with(|| Instant::now() + LAST_REQUEST_GRACE)
    }
}
