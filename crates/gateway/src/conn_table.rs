//! The client connections of one worker, counted against its share of `max_connections`.
//!
//! A connection is registered at its accept, before any handshake, and leaves the table when
//! its socket is dropped — an upgraded tunnel keeps its place until it closes. When the worker
//! is full, the connection idle the longest (a silent socket, a kept-alive one between
//! requests) is shed to make room; when every connection has a request in flight, the new one
//! is refused instead. A busy client is never cut off for a newcomer.
//!
//! The table is also where the worker looks at its connections' clocks, once a tick
//! ([`watch_deadlines`]), and tells them when the gateway stops.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::time::{Instant, MissedTickBehavior};

use crate::conn_clock::{Deadlines, Watch};

/// One worker's open client connections.
#[derive(Debug)]
pub struct ConnTable {
    max: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    by_id: BTreeMap<u64, Arc<Watch>>,
    /// Connections asked to close whose sockets are still open.
    shedding: usize,
    /// The gateway is stopping.
    stopping: bool,
}

/// What became of a new connection.
#[derive(Debug)]
pub enum Admission {
    /// It may be served; it leaves the table when this is dropped.
    Admitted(Registration),
    /// The worker is full of busy connections: close it.
    Refused,
}

/// A connection's place in its worker's table.
#[derive(Debug)]
pub struct Registration {
    table: Arc<ConnTable>,
    id: u64,
    /// The connection's clock.
    pub watch: Arc<Watch>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        open.by_id.remove(&self.id);
        if self.watch.clock().is_shed() {
            open.shedding -= 1;
        }
    }
}

impl ConnTable {
    /// A table for at most `max` connections (at least one).
    pub fn new(max: usize) -> Arc<ConnTable> {
        Arc::new(ConnTable { max: max.max(1), open: Mutex::default() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections open now (those being shed included, until their sockets close).
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Connections asked to close whose sockets are still open.
    pub fn shedding(&self) -> usize {
        self.lock().shedding
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most connections it admits.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Admits a connection just accepted, shedding the longest idle one if the worker is full.
    pub fn admit(self: &Arc<ConnTable>) -> Admission {
        let mut open = self.lock();
        if open.by_id.len() - open.shedding >= self.max && !shed_longest_idle(&mut open) {
            return Admission::Refused;
        }
        let id = open.next_id;
        open.next_id += 1;
        let watch = Watch::new(open.stopping);
        open.by_id.insert(id, watch.clone());
        Admission::Admitted(Registration { table: self.clone(), id, watch })
    }

    /// Sheds the longest idle connection, to free a descriptor; returns whether there was one.
    pub fn shed_one(&self) -> bool {
        shed_longest_idle(&mut self.lock())
    }

    /// Tells every connection past its deadline at `now` to close.
    pub fn expire_due(&self, now: Instant, deadlines: Deadlines) {
        for watch in self.lock().by_id.values() {
            watch.expire_if_due(now, deadlines);
        }
    }

    /// Tells every connection, and every one admitted from now on, that the gateway stops.
    pub fn stop(&self) {
        let mut open = self.lock();
        open.stopping = true;
        for watch in open.by_id.values() {
            watch.stop();
        }
    }
}

/// Tells, every [`Deadlines::tick`], the connections of `table` past their deadline to close;
/// runs until it is dropped.
pub async fn watch_deadlines(table: Arc<ConnTable>, deadlines: Deadlines) {
    let mut ticks = tokio::time::interval(deadlines.tick());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        table.expire_due(Instant::now(), deadlines);
    }
}

fn shed_longest_idle(open: &mut Open) -> bool {
    let longest = open.by_id.values().filter_map(|w| Some((w.clock().sheddable_since()?, w))).min_by_key(|(s, _)| *s);
    let Some((_, watch)) = longest else { return false };
    let shed = watch.shed();
    open.shedding += usize::from(shed);
    shed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn_clock::{Closing, InFlight, Told};
    use std::time::Duration;

    fn admitted(table: &Arc<ConnTable>) -> Registration {
        match table.admit() {
            Admission::Admitted(r) => r,
            Admission::Refused => panic!("refused with {} open", table.len()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_worker_sheds_the_longest_idle_connection() {
        let table = ConnTable::new(2);
        let first = admitted(&table);
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = admitted(&table);
        let third = admitted(&table);
        assert!(first.watch.clock().is_shed(), "the oldest silent connection makes room");
        assert!(!second.watch.clock().is_shed() && !third.watch.clock().is_shed());
        drop(first);
        assert_eq!(table.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_full_of_busy_connections_refuses() {
        let table = ConnTable::new(2);
        let (a, b) = (admitted(&table), admitted(&table));
        let _busy = (InFlight::start(a.watch.clone()), InFlight::start(b.watch.clone()));
        assert!(matches!(table.admit(), Admission::Refused));
        assert!(!a.watch.clock().is_shed() && !b.watch.clock().is_shed(), "requests in flight are never cut");
        drop(a);
        let _c = admitted(&table);
        assert_eq!(table.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn connections_being_shed_do_not_count_twice() {
        let table = ConnTable::new(1);
        let first = admitted(&table);
        let second = admitted(&table);
        assert!(first.watch.clock().is_shed());
        let third = admitted(&table);
        assert!(second.watch.clock().is_shed(), "the second is idle, so it is shed in turn");
        assert_eq!(table.len(), 3, "shed sockets stay counted until they close");
        drop((first, second));
        assert_eq!(table.len(), 1);
        let _busy = InFlight::start(third.watch.clone());
        assert!(!table.shed_one(), "nothing idle to shed");
        assert!(matches!(table.admit(), Admission::Refused));
    }

    #[tokio::test(start_paused = true)]
    async fn the_worker_s_tick_closes_a_connection_past_its_deadline_within_a_tick() {
        let deadlines = Deadlines { header_read: Duration::from_secs(1), idle: Duration::from_secs(3) };
        let table = ConnTable::new(4);
        let silent = admitted(&table);
        let served = admitted(&table);
        let in_flight = InFlight::start(served.watch.clone());
        let started = Instant::now();
        let ticking = tokio::spawn(watch_deadlines(table.clone(), deadlines));
        assert_eq!(silent.watch.told().await, Told::Close(Closing::HeaderRead));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(1) && waited <= Duration::from_millis(1100), "closed after {waited:?}");
        drop(in_flight);
        let answered = Instant::now();
        assert_eq!(served.watch.told().await, Told::Close(Closing::Idle));
        let idle = answered.elapsed();
        assert!(idle >= Duration::from_secs(3) && idle <= Duration::from_millis(3100), "idle for {idle:?}");
        ticking.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_reaches_open_connections_and_those_admitted_after_it() {
        let table = ConnTable::new(4);
        let open = admitted(&table);
        table.stop();
        assert_eq!(open.watch.told().await, Told::Stop);
        let late = admitted(&table);
        assert_eq!(late.watch.told().await, Told::Stop, "accepted as the gateway stopped");
        assert!(table.shed_one(), "a stopping gateway may still make room");
        assert_eq!(table.shedding(), 1);
    }
}
