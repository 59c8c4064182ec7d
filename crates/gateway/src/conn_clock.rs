//! The deadlines of one client connection, kept beside it by a watchdog.
//!
//! - **Header read** (`[gateway] header_read_timeout`): a new connection must deliver its first
//!   request (an HTTP/1.1 head or an HTTP/2 stream) this long after it was accepted, whatever
//!   it sends meanwhile — a silent socket, a stalled HTTP/2 preface or a SETTINGS frame alone do
//!   not keep it. On a kept-alive HTTP/1.1 connection a head must be complete this long after
//!   its first byte (slowloris).
//! - **Idle** (`[gateway] idle_timeout`): a connection with nothing in flight is closed this
//!   long after its last response ended. On HTTP/2 the bytes between requests are frames
//!   (pings, window updates), not a head, so only this deadline applies there.
//!
//! hyper cannot do either: its HTTP/1.1 header timer also runs while a connection is idle, and
//! nothing times the protocol sniffing of a new connection or an idle HTTP/2 one. So the socket
//! wrapper ([`crate::watched`]) tells the clock when bytes arrive, each request holds an
//! [`InFlight`] until its response body is dropped, and [`Watch::expired`] completes when the
//! deadline passes or the worker sheds the connection to make room for a new one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A connection's two deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Time to send a request head (the first from the accept, later ones from their first byte).
    pub header_read: Duration,
    /// Time a connection with nothing in flight waits for its next request.
    pub idle: Duration,
}

/// Why a connection is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// A request head did not arrive in time.
    HeaderRead,
    /// Nothing happened for the idle timeout.
    Idle,
    /// The worker needed its slot for a new connection.
    Shed,
}

/// Where a connection stands. Pure: every change takes the time it happened at.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    in_flight: u32,
    /// When the connection last had nothing in flight (accepted, or its last response's end).
    waiting_since: Instant,
    /// When the head waited for began: at the accept for the first, else its first byte.
    head_since: Option<Instant>,
    /// HTTP/2: bytes between requests are frames, not the start of a head.
    multiplexed: bool,
    seen_bytes: bool,
    /// Its protocol has ended but the socket lives on as an upgraded tunnel.
    detached: bool,
    shed: bool,
}

impl Clock {
    /// A connection accepted at `now`.
    pub fn new(now: Instant) -> Clock {
        Clock {
            in_flight: 0,
            waiting_since: now,
            head_since: Some(now),
            multiplexed: false,
            seen_bytes: false,
            detached: false,
            shed: false,
        }
    }

    /// `bytes` arrived at `now`; returns whether the deadline moved earlier.
    pub fn bytes_read(&mut self, now: Instant, bytes: &[u8]) -> bool {
        if !self.seen_bytes {
            self.seen_bytes = true;
            self.multiplexed = bytes.starts_with(b"PRI ");
        }
        let starts_a_head = !self.multiplexed && self.in_flight == 0 && self.head_since.is_none();
        if starts_a_head {
            self.head_since = Some(now);
        }
        starts_a_head
    }

    /// A request reached the proxy.
    pub fn request_started(&mut self) {
        self.in_flight += 1;
        self.head_since = None;
    }

    /// A request's response ended (or was abandoned) at `now`.
    pub fn request_finished(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.waiting_since = now;
        }
    }

    /// The protocol ended while the socket lives on (an upgrade): no deadline, never shed.
    pub fn detach(&mut self) {
        self.detached = true;
    }

    /// Whether the worker asked it to close.
    pub fn is_shed(&self) -> bool {
        self.shed
    }

    /// When the connection is to be closed, and why, if nothing happens before.
    pub fn deadline(&self, deadlines: Deadlines) -> Option<(Instant, Closing)> {
        match (self.detached, self.in_flight, self.head_since) {
            (false, 0, Some(head)) => Some((head + deadlines.header_read, Closing::HeaderRead)),
            (false, 0, None) => Some((self.waiting_since + deadlines.idle, Closing::Idle)),
            _ => None,
        }
    }

    /// Whether the worker may close it to make room: nothing in flight, not a tunnel, not
    /// already being shed. Returns since when it has been waiting, to pick the longest idle.
    pub fn sheddable_since(&self) -> Option<Instant> {
        let idle = self.in_flight == 0 && !self.detached && !self.shed;
        idle.then_some(self.waiting_since)
    }
}

/// A connection's clock, shared by its socket, its requests, its worker's table and its
/// watchdog.
#[derive(Debug)]
pub struct Watch {
    state: Mutex<Watched>,
    changed: Notify,
}

/// The clock, and what the watchdog sleeps towards once it has looked.
#[derive(Debug)]
struct Watched {
    clock: Clock,
    watchdog: Option<(Deadlines, Instant)>,
}

impl Watched {
    /// Whether the watchdog must look again now: it sleeps towards a later moment than the
    /// connection's deadline, or the connection is being shed. A deadline that moved later
    /// (every request's end on a busy connection) waits for the watchdog's own wake-up, so a
    /// request costs it neither a wake-up nor a new timer.
    fn watchdog_late(&self) -> bool {
        let Some((deadlines, sleeping_until)) = self.watchdog else { return false };
        self.clock.is_shed() || self.clock.deadline(deadlines).is_some_and(|(at, _)| at < sleeping_until)
    }
}

impl Watch {
    /// The watch of a connection accepted now.
    pub fn new() -> Arc<Watch> {
        let state = Watched { clock: Clock::new(Instant::now()), watchdog: None };
        Arc::new(Watch { state: Mutex::new(state), changed: Notify::new() })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change`; wakes the watchdog when the deadline came before what it sleeps towards.
    pub fn update<R>(&self, change: impl FnOnce(&mut Clock) -> R) {
        let late = {
            let mut state = self.state();
            change(&mut state.clock);
            state.watchdog_late()
        };
        if late {
            self.changed.notify_one();
        }
    }

    /// A copy of the clock as it stands.
    pub fn clock(&self) -> Clock {
        self.state().clock
    }

    /// Asks the watchdog to close the connection now.
    pub fn shed(&self) {
        self.update(|clock| clock.shed = true);
    }

    /// Completes once the connection's deadline has passed or it is shed.
    pub async fn expired(&self, deadlines: Deadlines) -> Closing {
        loop {
            let at = {
                let mut state = self.state();
                if state.clock.is_shed() {
                    return Closing::Shed;
                }
                let at = match state.clock.deadline(deadlines) {
                    Some((due, why)) if due <= Instant::now() => return why,
                    Some((due, _)) => due,
                    // In flight, nothing moves the deadline earlier without a wake-up; look
                    // again after the shorter timeout in case the request ended meanwhile.
                    None => Instant::now() + deadlines.idle.min(deadlines.header_read),
                };
                // Under the same lock: a change after this sees what the watchdog sleeps towards.
                state.watchdog = Some((deadlines, at));
                at
            };
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

/// A request in flight on its connection, from its head to the end of its response body.
#[derive(Debug)]
pub struct InFlight(Arc<Watch>);

impl InFlight {
    /// Marks a request started on `watch`'s connection.
    pub fn start(watch: Arc<Watch>) -> InFlight {
        watch.update(Clock::request_started);
        InFlight(watch)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The idle deadline that starts now may come before the one the watchdog sleeps
        // towards (a first request's header-read deadline runs from the accept).
        self.0.update(|clock| clock.request_finished(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINES: Deadlines = Deadlines { header_read: Duration::from_secs(10), idle: Duration::from_secs(60) };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_new_connection_owes_its_first_request_from_the_accept_whatever_it_sends() {
        let start = Instant::now();
        let mut silent = Clock::new(start);
        assert_eq!(silent.deadline(DEADLINES), Some((start + secs(10), Closing::HeaderRead)));
        assert!(!silent.bytes_read(start + secs(3), b"GET / HT"), "the first byte does not restart the clock");
        assert_eq!(silent.deadline(DEADLINES), Some((start + secs(10), Closing::HeaderRead)));
        let mut h2 = Clock::new(start);
        h2.bytes_read(start + secs(1), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        h2.bytes_read(start + secs(2), b"\0\0\0\x04\0\0\0\0\0");
        assert_eq!(h2.deadline(DEADLINES), Some((start + secs(10), Closing::HeaderRead)), "SETTINGS is no request");
    }

    #[test]
    fn no_deadline_in_flight_then_idle_then_a_head_again() {
        let start = Instant::now();
        let mut clock = Clock::new(start);
        clock.request_started();
        assert_eq!(clock.deadline(DEADLINES), None, "a slow upstream is not the client's fault");
        let answered = start + secs(30);
        clock.request_finished(answered);
        assert_eq!(clock.deadline(DEADLINES), Some((answered + secs(60), Closing::Idle)));
        let next = answered + secs(50);
        assert!(clock.bytes_read(next, b"G"));
        assert_eq!(clock.deadline(DEADLINES), Some((next + secs(10), Closing::HeaderRead)), "a begun head must end");
        assert!(!clock.bytes_read(next + secs(1), b"ET /"));
    }

    #[test]
    fn http2_frames_between_requests_leave_only_the_idle_deadline() {
        let start = Instant::now();
        let mut clock = Clock::new(start);
        clock.bytes_read(start, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        clock.request_started();
        clock.request_started();
        clock.request_finished(start + secs(1));
        assert_eq!(clock.deadline(DEADLINES), None, "one stream is still open");
        clock.request_finished(start + secs(2));
        assert!(!clock.bytes_read(start + secs(20), b"\0\0\x08\x06\0\0\0\0\0"), "a ping ack is no head");
        assert_eq!(clock.deadline(DEADLINES), Some((start + secs(62), Closing::Idle)));
    }

    #[test]
    fn tunnels_and_busy_connections_are_never_shed() {
        let start = Instant::now();
        let mut clock = Clock::new(start);
        assert_eq!(clock.sheddable_since(), Some(start));
        clock.request_started();
        assert_eq!(clock.sheddable_since(), None);
        clock.request_finished(start + secs(5));
        assert_eq!(clock.sheddable_since(), Some(start + secs(5)));
        clock.detach();
        assert_eq!((clock.sheddable_since(), clock.deadline(DEADLINES)), (None, None));
    }

    #[test]
    fn only_a_deadline_before_the_watchdog_s_wake_up_wakes_it() {
        let start = Instant::now();
        let mut busy = Watched { clock: Clock::new(start), watchdog: None };
        busy.clock.request_started();
        assert!(!busy.watchdog_late(), "a watchdog that has not looked yet will");
        busy.watchdog = Some((DEADLINES, start + secs(10)));
        busy.clock.request_finished(start + secs(1));
        assert!(!busy.watchdog_late(), "idle until 61 s: the wake-up at 10 s comes first");
        busy.clock.bytes_read(start + secs(2), b"GET / HTTP/1.1\r\n");
        assert!(!busy.watchdog_late(), "a head due at 12 s: still after the wake-up");

        let mut idle = Watched { clock: Clock::new(start), watchdog: None };
        idle.clock.request_started();
        idle.clock.request_finished(start + secs(1));
        idle.watchdog = Some((DEADLINES, start + secs(61)));
        idle.clock.bytes_read(start + secs(3), b"G");
        assert!(idle.watchdog_late(), "a head due at 13 s, the watchdog asleep until 61 s");
        idle.watchdog = Some((DEADLINES, start + secs(13)));
        idle.clock.shed = true;
        assert!(idle.watchdog_late(), "shedding wakes it at once");
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_fires_at_the_deadline_and_not_before() {
        let watch = Watch::new();
        let started = Instant::now();
        let request = InFlight::start(watch.clone());
        let waiting = tokio::spawn({
            let watch = watch.clone();
            async move { watch.expired(DEADLINES).await }
        });
        tokio::time::sleep(secs(120)).await;
        assert!(!waiting.is_finished(), "no deadline while a request is in flight");
        drop(request);
        assert_eq!(waiting.await.unwrap(), Closing::Idle);
        let waited = Instant::now() - started;
        assert!(waited >= secs(180) && waited <= secs(181), "closed {waited:?} after the start");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_deadline_earlier_than_the_first_request_s_wakes_the_watchdog() {
        let deadlines = Deadlines { header_read: secs(30), idle: secs(1) };
        let watch = Watch::new();
        let started = Instant::now();
        let waiting = tokio::spawn({
            let watch = watch.clone();
            async move { watch.expired(deadlines).await }
        });
        tokio::time::sleep(secs(1)).await;
        let request = InFlight::start(watch.clone());
        tokio::time::sleep(secs(2)).await;
        drop(request);
        assert_eq!(waiting.await.unwrap(), Closing::Idle);
        assert_eq!(Instant::now() - started, secs(4), "idle 1 s after the answer, not 30 s after the accept");
    }

    #[tokio::test(start_paused = true)]
    async fn shedding_closes_at_once() {
        let watch = Watch::new();
        let waiting = tokio::spawn({
            let watch = watch.clone();
            async move { watch.expired(DEADLINES).await }
        });
        tokio::time::sleep(secs(1)).await;
        watch.shed();
        assert_eq!(waiting.await.unwrap(), Closing::Shed);
        assert_eq!(watch.clock().sheddable_since(), None, "a shed connection is not picked twice");
    }
}
