//! The admin listener's connections: HTTP/1.1 with upgrades (the live feed) over hyper, with
//! the two deadlines a server facing browsers and scripts needs.
//!
//! - **Header read** (`[admin] header_read_timeout`, 10 s): a request head must be complete
//!   this long after its first byte, and a new connection must send its first head this long
//!   after it was accepted. Half-sent requests (slowloris) cannot pin connections open.
//! - **Idle** (`[admin] idle_timeout`, 60 s): a keep-alive connection with no request in flight
//!   and no byte of the next one is closed this long after its last answer.
//!
//! hyper has one timer for both (its `header_read_timeout` also runs while a connection is
//! idle), so the deadline is kept here instead: the socket wrapper sees each first byte, the
//! service wrapper sees each request start and end, and a watchdog beside the connection drops
//! it when its deadline passes. While a request is in flight no deadline applies; after an
//! upgrade the socket belongs to the feed, whose own rules apply (a hello within 10 s).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use canary_gateway::accept::{LOG_INTERVAL, RateLimitedLog, backoff};
use canary_gateway::watched::{Observed, OnRead};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::ServiceExt;

/// The admin listener's deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Time to send a complete request head.
    pub header_read: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle: Duration,
}

/// Serves `router` on `listener` until `stop` completes; then stops accepting, lets in-flight
/// requests finish for up to `drain`, and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    stop: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    // The deadlines are the watchdog's; hyper's own timer would also close idle connections.
    builder.http1().keep_alive(true).header_read_timeout(None);
    let builder = Arc::new(builder);
    tokio::pin!(stop);
    let mut failures = RateLimitedLog::new(LOG_INTERVAL);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning, and
                    // count instead of logging every failure.
                    if let Some(count) = failures.record(Instant::now()) {
                        tracing::warn!(error = %e, count, "admin: accept failed ({count} times since the last report)");
                    }
                    tokio::time::sleep(backoff(&e)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let connection = connection(stream, peer, router.clone(), builder.clone(), timeouts, graceful.watcher());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("admin: requests still in flight after the shutdown timeout");
    }
}

/// One connection, until it ends, is upgraded, or misses its deadline.
async fn connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    timeouts: Timeouts,
    watcher: Watcher,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _ = stream.set_nodelay(true);
    let watch = Arc::new(Watch::new(Instant::now()));
    let io = TokioIo::new(Observed::new(stream, ArrivingBytes(watch.clone())));
    let requests = watch.clone();
    let service = service_fn(move |mut req: http::Request<Incoming>| {
        let in_flight = InFlight::start(requests.clone());
        // Handlers that log who acted (an approval) read the client's address from here.
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        let router = router.clone();
        async move {
            let response = router.oneshot(req.map(Body::new)).await;
            drop(in_flight);
            response
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, service).into_owned();
    tokio::select! {
        result = watcher.watch(conn) => result,
        () = watch.expired(timeouts) => {
            tracing::debug!("admin: closing a connection that missed its header-read or idle deadline");
            Ok(())
        }
    }
}

/// Where a connection stands, for its deadline.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// Requests handed to the router and not answered yet.
    in_flight: usize,
    /// When the connection last had nothing in flight (accepted, or its last answer).
    waiting_since: Instant,
    /// When the head being waited for began: at accept for the first, else its first byte.
    head_since: Option<Instant>,
}

impl Clock {
    fn new(now: Instant) -> Clock {
        Clock { in_flight: 0, waiting_since: now, head_since: Some(now) }
    }

    /// Bytes arrived; returns whether the deadline moved.
    fn bytes_read(&mut self, now: Instant) -> bool {
        let starts_a_head = self.in_flight == 0 && self.head_since.is_none();
        if starts_a_head {
            self.head_since = Some(now);
        }
        starts_a_head
    }

    fn request_started(&mut self) {
        self.in_flight += 1;
        self.head_since = None;
    }

    fn request_finished(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.waiting_since = now;
        }
    }

    /// When the connection is to be closed, if nothing happens before.
    fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        match (self.in_flight, self.head_since) {
            (0, Some(head)) => Some(head + timeouts.header_read),
            (0, None) => Some(self.waiting_since + timeouts.idle),
            _ => None,
        }
    }
}

/// A connection's clock, shared by its socket, its service and its watchdog.
struct Watch {
    clock: Mutex<Clock>,
    changed: Notify,
}

impl Watch {
    fn new(now: Instant) -> Watch {
        Watch { clock: Mutex::new(Clock::new(now)), changed: Notify::new() }
    }

    fn update(&self, change: impl FnOnce(&mut Clock) -> bool) {
        let moved = change(&mut self.clock.lock().unwrap_or_else(|e| e.into_inner()));
        if moved {
            self.changed.notify_one();
        }
    }

    fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        self.clock.lock().unwrap_or_else(|e| e.into_inner()).deadline(timeouts)
    }

    /// Completes once the connection's deadline has passed.
    async fn expired(&self, timeouts: Timeouts) {
        loop {
            let Some(deadline) = self.deadline(timeouts) else {
                self.changed.notified().await;
                continue;
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    if self.deadline(timeouts).is_some_and(|d| d <= Instant::now()) {
                        return;
                    }
                }
                () = self.changed.notified() => {}
            }
        }
    }
}

/// A request in flight on its connection, from its head to its answer.
struct InFlight(Arc<Watch>);

impl InFlight {
    fn start(watch: Arc<Watch>) -> InFlight {
        watch.update(|clock| {
            clock.request_started();
            true
        });
        InFlight(watch)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|clock| {
            clock.request_finished(Instant::now());
            true
        });
    }
}

/// The socket's reads, told to its clock.
struct ArrivingBytes(Arc<Watch>);

impl OnRead for ArrivingBytes {
    fn on_read(&mut self, _arrived: &[u8]) {
        self.0.update(|clock| clock.bytes_read(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts { header_read: Duration::from_secs(10), idle: Duration::from_secs(60) };

    #[test]
    fn a_new_connection_owes_its_first_head_within_the_header_timeout() {
        let start = Instant::now();
        let mut clock = Clock::new(start);
        assert_eq!(clock.deadline(TIMEOUTS), Some(start + TIMEOUTS.header_read));
        assert!(!clock.bytes_read(start + Duration::from_secs(3)), "the first byte does not restart the clock");
        assert_eq!(clock.deadline(TIMEOUTS), Some(start + TIMEOUTS.header_read));
    }

    #[test]
    fn no_deadline_in_flight_then_idle_then_a_head_again() {
        let start = Instant::now();
        let mut clock = Clock::new(start);
        clock.request_started();
        assert_eq!(clock.deadline(TIMEOUTS), None, "a slow handler is not the client's fault");
        let answered = start + Duration::from_secs(30);
        clock.request_finished(answered);
        assert_eq!(clock.deadline(TIMEOUTS), Some(answered + TIMEOUTS.idle), "idle, not header, between requests");
        let next = answered + Duration::from_secs(50);
        assert!(clock.bytes_read(next));
        assert_eq!(clock.deadline(TIMEOUTS), Some(next + TIMEOUTS.header_read), "a begun head must finish");
        assert!(!clock.bytes_read(next + Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_fires_at_the_deadline_and_not_before() {
        let watch = Arc::new(Watch::new(Instant::now()));
        let started = Instant::now();
        let request = InFlight::start(watch.clone());
        let waiting = tokio::spawn({
            let watch = watch.clone();
            async move { watch.expired(TIMEOUTS).await }
        });
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!waiting.is_finished(), "no deadline while a request is in flight");
        drop(request);
        waiting.await.unwrap();
        assert_eq!(Instant::now() - started, Duration::from_secs(120) + TIMEOUTS.idle);
    }
}
