//! The deadlines of one client connection, and what its task is told: close, or the gateway
//! stops.
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
//! wrapper ([`crate::watched`]) tells the clock when bytes arrive, and each request holds an
//! [`InFlight`] until its response body is dropped.
//!
//! No connection keeps a timer: its worker looks at every clock once a [`Deadlines::tick`]
//! ([`crate::conn_table::ConnTable::expire_due`]) and tells the ones past their deadline to
//! close, as it tells them to make room or that the gateway stops. A connection waits for that
//! with [`Watch::told`], a future of two words that keeps no allocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

/// A connection's two deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Time to send a request head (the first from the accept, later ones from their first byte).
    pub header_read: Duration,
    /// Time a connection with nothing in flight waits for its next request.
    pub idle: Duration,
}

impl Deadlines {
    /// How often a worker looks at its connections' clocks: a tenth of the shorter deadline, so
    /// a connection closes at most 10 % late, but no more than four times a second.
    pub fn tick(&self) -> Duration {
        (self.header_read.min(self.idle) / 10).clamp(Duration::from_millis(10), Duration::from_millis(250))
    }
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

/// What a connection's task is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    /// Close now.
    Close(Closing),
    /// The gateway stops: finish what is in flight, then close.
    Stop,
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
    /// Decided once: the connection is to close, and why.
    closing: Option<Closing>,
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
            closing: None,
        }
    }

    /// `bytes` arrived at `now`.
    pub fn bytes_read(&mut self, now: Instant, bytes: &[u8]) {
        if !self.seen_bytes {
            self.seen_bytes = true;
            self.multiplexed = bytes.starts_with(b"PRI ");
        }
        if !self.multiplexed && self.in_flight == 0 && self.head_since.is_none() {
            self.head_since = Some(now);
        }
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

    /// Whether the worker asked it to close to make room.
    pub fn is_shed(&self) -> bool {
        self.closing == Some(Closing::Shed)
    }

    /// When the connection is to be closed, and why, if nothing happens before.
    pub fn deadline(&self, deadlines: Deadlines) -> Option<(Instant, Closing)> {
        match (self.detached, self.in_flight, self.head_since) {
            (false, 0, Some(head)) => Some((head + deadlines.header_read, Closing::HeaderRead)),
            (false, 0, None) => Some((self.waiting_since + deadlines.idle, Closing::Idle)),
            _ => None,
        }
    }

    /// Decides the close if the deadline has passed at `now`; whether it did just now.
    pub fn expire(&mut self, now: Instant, deadlines: Deadlines) -> bool {
        let due = self.deadline(deadlines).filter(|(at, _)| *at <= now);
        match (self.closing, due) {
            (None, Some((_, why))) => {
                self.closing = Some(why);
                true
            }
            _ => false,
        }
    }

    /// Decides the close to make room; whether it did (not if it was closing already).
    pub fn shed(&mut self) -> bool {
        let shed = self.closing.is_none();
        if shed {
            self.closing = Some(Closing::Shed);
        }
        shed
    }

    /// Whether the worker may close it to make room: nothing in flight, not a tunnel, not
    /// already closing. Returns since when it has been waiting, to pick the longest idle.
    pub fn sheddable_since(&self) -> Option<Instant> {
        let idle = self.in_flight == 0 && !self.detached && self.closing.is_none();
        idle.then_some(self.waiting_since)
    }
}

/// A connection's clock, shared by its socket, its requests, its worker's table and its task.
#[derive(Debug)]
pub struct Watch {
    state: Mutex<Watched>,
    /// Set under the lock whenever there is something new to tell the task, so a wait polled
    /// at each of the task's wake-ups takes the lock only when there is.
    news: AtomicBool,
}

#[derive(Debug)]
struct Watched {
    clock: Clock,
    /// The gateway is stopping.
    stopping: bool,
    /// The task waiting to be told.
    waiter: Option<Waker>,
}

impl Watch {
    /// The watch of a connection accepted now, while the gateway is `stopping` or not.
    pub fn new(stopping: bool) -> Arc<Watch> {
        let state = Watched { clock: Clock::new(Instant::now()), stopping, waiter: None };
        Arc::new(Watch { state: Mutex::new(state), news: AtomicBool::new(stopping) })
    }

    fn state(&self) -> MutexGuard<'_, Watched> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` to the clock. Nothing is told: the worker's next look sees a deadline
    /// that moved.
    pub fn update(&self, change: impl FnOnce(&mut Clock)) {
        change(&mut self.state().clock);
    }

    /// A copy of the clock as it stands.
    pub fn clock(&self) -> Clock {
        self.state().clock
    }

    /// Whether the gateway is stopping.
    pub fn stopping(&self) -> bool {
        self.state().stopping
    }

    /// Tells the task to close to make room; whether it was not closing already.
    pub fn shed(&self) -> bool {
        self.tell(|state| state.clock.shed())
    }

    /// Tells the task to close if its deadline has passed at `now`.
    pub fn expire_if_due(&self, now: Instant, deadlines: Deadlines) {
        self.tell(|state| state.clock.expire(now, deadlines));
    }

    /// Tells the task that the gateway stops.
    pub fn stop(&self) {
        self.tell(|state| !std::mem::replace(&mut state.stopping, true));
    }

    /// Applies `change`; when it says there is news, wakes the waiting task.
    fn tell(&self, change: impl FnOnce(&mut Watched) -> bool) -> bool {
        let waiter = {
            let mut state = self.state();
            if !change(&mut state) {
                return false;
            }
            self.news.store(true, Ordering::Release);
            state.waiter.take()
        };
        if let Some(waiter) = waiter {
            waiter.wake();
        }
        true
    }

    /// Completes when the task is told to close, or that the gateway stops.
    pub fn told(&self) -> Heard<'_> {
        Heard { watch: self, left: None, hears_stop: true }
    }

    /// Completes when the task is told to close.
    pub fn closed(&self) -> Heard<'_> {
        Heard { watch: self, left: None, hears_stop: false }
    }
}

/// A wait for what a connection's task is told ([`Watch::told`], [`Watch::closed`]).
#[derive(Debug)]
pub struct Heard<'a> {
    watch: &'a Watch,
    /// The waker it left with the watch.
    left: Option<Waker>,
    hears_stop: bool,
}

impl Future for Heard<'_> {
    type Output = Told;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Told> {
        let this = self.get_mut();
        let waker_left = this.left.as_ref().is_some_and(|left| left.will_wake(cx.waker()));
        if waker_left && !this.watch.news.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        let mut state = this.watch.state();
        if let Some(why) = state.clock.closing {
            return Poll::Ready(Told::Close(why));
        }
        if this.hears_stop && state.stopping {
            return Poll::Ready(Told::Stop);
        }
        // Under the lock: whatever is told after this sets it again.
        this.watch.news.store(false, Ordering::Relaxed);
        state.waiter = Some(cx.waker().clone());
        this.left = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A request in flight on its connection, from its head to the end of its response body.
#[derive(Debug)]
pub struct InFlight {
    watch: Arc<Watch>,
    gateway_stopping: bool,
}

impl InFlight {
    /// Marks a request started on `watch`'s connection.
    pub fn start(watch: Arc<Watch>) -> InFlight {
        let gateway_stopping = {
            let mut state = watch.state();
            state.clock.request_started();
            state.stopping
        };
        InFlight { watch, gateway_stopping }
    }

    /// Whether the gateway was stopping when the request started: its answer is the
    /// connection's last.
    pub fn gateway_stopping(&self) -> bool {
        self.gateway_stopping
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.watch.update(|clock| clock.request_finished(Instant::now()));
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
        silent.bytes_read(start + secs(3), b"GET / HT");
        assert_eq!(
            silent.deadline(DEADLINES),
            Some((start + secs(10), Closing::HeaderRead)),
            "not from the first byte"
        );
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
        clock.bytes_read(next, b"G");
        clock.bytes_read(next + secs(1), b"ET /");
        assert_eq!(clock.deadline(DEADLINES), Some((next + secs(10), Closing::HeaderRead)), "a begun head must end");
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
        clock.bytes_read(start + secs(20), b"\0\0\x08\x06\0\0\0\0\0");
        assert_eq!(clock.deadline(DEADLINES), Some((start + secs(62), Closing::Idle)), "a ping ack is no head");
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
    fn the_close_is_decided_once_at_the_deadline() {
        let start = Instant::now();
        let mut clock = Clock::new(start);
        assert!(!clock.expire(start + secs(9), DEADLINES), "not before the deadline");
        assert!(clock.expire(start + secs(10), DEADLINES));
        assert!(!clock.expire(start + secs(11), DEADLINES), "decided already");
        assert!(!clock.shed(), "a closing connection is not shed as well");
        assert_eq!((clock.closing, clock.sheddable_since()), (Some(Closing::HeaderRead), None));
        let mut busy = Clock::new(start);
        busy.request_started();
        assert!(!busy.expire(start + secs(3600), DEADLINES), "never in flight");
    }

    #[test]
    fn the_worker_looks_ten_times_per_shorter_deadline_at_most_four_times_a_second() {
        let short = Deadlines { header_read: secs(1), idle: secs(3) };
        assert_eq!(short.tick(), Duration::from_millis(100));
        assert_eq!(DEADLINES.tick(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_task_is_woken_when_its_deadline_is_found_passed() {
        let watch = Watch::new(false);
        let started = Instant::now();
        let request = InFlight::start(watch.clone());
        let waiting = tokio::spawn({
            let watch = watch.clone();
            async move { watch.told().await }
        });
        tokio::time::sleep(secs(120)).await;
        watch.expire_if_due(Instant::now(), DEADLINES);
        assert!(!waiting.is_finished(), "no deadline while a request is in flight");
        drop(request);
        tokio::time::sleep(secs(59)).await;
        watch.expire_if_due(Instant::now(), DEADLINES);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "idle for 59 s of 60");
        tokio::time::sleep(secs(1)).await;
        watch.expire_if_due(Instant::now(), DEADLINES);
        assert_eq!(waiting.await.unwrap(), Told::Close(Closing::Idle));
        assert_eq!(Instant::now() - started, secs(180));
    }

    #[tokio::test(start_paused = true)]
    async fn the_stop_is_heard_by_told_only_and_a_shed_by_both() {
        let watch = Watch::new(false);
        let closed = tokio::spawn({
            let watch = watch.clone();
            async move { watch.closed().await }
        });
        tokio::task::yield_now().await;
        watch.stop();
        assert_eq!(watch.told().await, Told::Stop);
        tokio::task::yield_now().await;
        assert!(!closed.is_finished(), "a stopping gateway does not close a connection at once");
        assert!(watch.shed());
        assert!(!watch.shed(), "shed once");
        assert_eq!(closed.await.unwrap(), Told::Close(Closing::Shed));
        assert_eq!(watch.told().await, Told::Close(Closing::Shed), "a close comes before the stop");
        assert!(InFlight::start(Watch::new(true)).gateway_stopping(), "a connection accepted while stopping");
    }
}
