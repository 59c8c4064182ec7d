//! Upstream addresses of a version: round-robin balancing and passive ejection.
//!
//! An address that fails `failures` times in a row (connect errors, resets, timeouts) is
//! skipped for `duration`; any success resets its count. When every address of a version is
//! ejected the version still gets traffic through all of them (better a slow try than a sure
//! 502), in the same order. One [`Upstream`] exists per address for the life of the process,
//! so its ejection state and its pooled connections survive routing changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The time base of ejection deadlines, which are kept in atomics as milliseconds since the
/// registry was made. It reads tokio's clock, so paused-time tests drive ejections.
#[derive(Debug, Clone, Copy)]
pub struct EjectClock {
    start: Instant,
}

impl EjectClock {
    fn new() -> EjectClock {
        EjectClock { start: Instant::now() }
    }

    /// Milliseconds since the clock started.
    #[inline]
    pub fn now_millis(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// Passive ejection settings of a service.
#[derive(Debug, Clone, Copy)]
pub struct EjectPolicy {
    /// Consecutive failures that eject an address.
    pub failures: u32,
    /// How long it stays ejected.
    pub duration: Duration,
}

/// One upstream address.
#[derive(Debug)]
pub struct Upstream {
    /// Index of this address's connection pool in every worker.
    pub id: usize,
    /// `host:port`, also sent as `Host` when the client sent none.
    pub authority: String,
    /// `authority` as the `Host` value.
    pub host: http::HeaderValue,
    /// The address, when `authority` is a literal one (no DNS lookup needed).
    pub addr: Option<SocketAddr>,
    consecutive_failures: AtomicU32,
    ejected_until: AtomicU64,
    clock: EjectClock,
}

impl Upstream {
    /// Notes a failed exchange; may eject the address.
    pub fn record_failure(&self, policy: &EjectPolicy) {
        let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if n >= policy.failures {
            self.consecutive_failures.store(0, Relaxed);
            let until = self.clock.now_millis() + policy.duration.as_millis() as u64;
            self.ejected_until.store(until, Relaxed);
            tracing::warn!(upstream = %self.authority, ?policy.duration, "ejecting upstream after {n} consecutive failures");
        }
    }

    /// Notes a successful exchange.
    #[inline]
    pub fn record_success(&self) {
        // Read first: a write on every success would bounce the cache line between cores.
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
    }

    /// Whether the address is currently skipped.
    #[inline]
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Relaxed) > now_ms
    }
}

/// The addresses of one version, balanced round robin.
#[derive(Debug)]
pub struct UpstreamSet {
    members: Vec<Arc<Upstream>>,
    next: AtomicUsize,
    clock: EjectClock,
}

impl UpstreamSet {
    /// The addresses in configured order.
    pub fn members(&self) -> &[Arc<Upstream>] {
        &self.members
    }

    /// The clock its members' ejections run on.
    pub fn clock(&self) -> EjectClock {
        self.clock
    }

    /// The addresses to try for one request, best first: the next healthy one in rotation,
    /// then the other healthy ones; ejected ones only when none is healthy.
    pub fn candidates(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        let n = self.members.len();
        let now = self.clock.now_millis();
        let healthy = self.members.iter().filter(|u| !u.is_ejected(now)).count();
        // Rotate over the healthy addresses only, so an ejected one does not hand its turn
        // to its neighbour.
        let usable = move |u: &&Arc<Upstream>| healthy == 0 || !u.is_ejected(now);
        let turn = if n == 1 { 0 } else { self.next.fetch_add(1, Relaxed) % healthy.max(1) };
        let start = self.members.iter().enumerate().filter(|(_, u)| usable(u)).nth(turn).map_or(0, |(i, _)| i);
        (0..n).map(move |i| &self.members[(start + i) % n]).filter(usable)
    }
}

/// Gives every address one [`Upstream`], shared by every snapshot that names it.
#[derive(Debug)]
pub struct UpstreamRegistry {
    by_authority: Mutex<HashMap<String, Arc<Upstream>>>,
    clock: EjectClock,
}

impl Default for UpstreamRegistry {
    fn default() -> UpstreamRegistry {
        UpstreamRegistry { by_authority: Mutex::default(), clock: EjectClock::new() }
    }
}

impl UpstreamRegistry {
    /// The set for a version's address list.
    pub fn set(&self, authorities: &[String]) -> Arc<UpstreamSet> {
        let mut map = self.by_authority.lock().expect("upstream registry lock");
        let members = authorities
            .iter()
            .map(|a| {
                let next_id = map.len();
                map.entry(a.clone())
                    .or_insert_with(|| {
                        Arc::new(Upstream {
                            id: next_id,
                            authority: a.clone(),
                            host: http::HeaderValue::from_str(a).expect("checked as host:port by the config"),
                            addr: a.parse().ok(),
                            consecutive_failures: AtomicU32::new(0),
                            ejected_until: AtomicU64::new(0),
                            clock: self.clock,
                        })
                    })
                    .clone()
            })
            .collect();
        Arc::new(UpstreamSet { members, next: AtomicUsize::new(0), clock: self.clock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> EjectPolicy {
        EjectPolicy { failures: 2, duration: Duration::from_secs(60) }
    }

    #[test]
    fn rotates_and_skips_ejected_addresses() {
        let registry = UpstreamRegistry::default();
        let set = registry.set(&["127.0.0.1:1".into(), "127.0.0.1:2".into(), "127.0.0.1:3".into()]);
        let firsts: Vec<_> = (0..3).map(|_| set.candidates().next().unwrap().id).collect();
        assert_eq!(firsts, vec![0, 1, 2]);
        let bad = &set.members()[1];
        let now = || set.clock().now_millis();
        bad.record_failure(&policy());
        assert!(!bad.is_ejected(now()));
        bad.record_failure(&policy());
        assert!(bad.is_ejected(now()));
        for _ in 0..6 {
            assert!(set.candidates().all(|u| u.id != 1));
        }
    }

    #[test]
    fn all_ejected_still_tries_everything() {
        let registry = UpstreamRegistry::default();
        let set = registry.set(&["127.0.0.1:1".into(), "127.0.0.1:2".into()]);
        for u in set.members() {
            u.record_failure(&policy());
            u.record_failure(&policy());
        }
        assert_eq!(set.candidates().count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejected_address_comes_back_after_the_ejection_duration() {
        let registry = UpstreamRegistry::default();
        let set = registry.set(&["127.0.0.1:1".into(), "127.0.0.1:2".into()]);
        let policy = EjectPolicy { failures: 3, duration: Duration::from_secs(10) };
        let bad = set.members()[0].clone();
        let tried = |set: &UpstreamSet| (0..4).any(|_| set.candidates().any(|u| u.id == bad.id));
        for _ in 0..3 {
            bad.record_failure(&policy);
        }
        assert!(!tried(&set), "ejected after three failures in a row");
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(!tried(&set), "still ejected a millisecond before the duration ends");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(tried(&set), "back once the duration has passed");
        bad.record_failure(&policy);
        bad.record_failure(&policy);
        bad.record_success();
        bad.record_failure(&policy);
        assert!(tried(&set), "a success in between resets the count");
    }

    #[test]
    fn one_address_is_one_upstream_across_sets() {
        let registry = UpstreamRegistry::default();
        let a = registry.set(&["127.0.0.1:1".into()]);
        let b = registry.set(&["127.0.0.1:2".into(), "127.0.0.1:1".into()]);
        assert!(Arc::ptr_eq(&a.members()[0], &b.members()[1]));
    }
}
