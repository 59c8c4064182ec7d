//! The rules of delivery, without the sending: which answers are retried, how long to wait
//! between attempts, and which logged events a sink still owes.
//!
//! A sink delivers the event log in the store's commit order. Its cursor names the last event
//! it is done with (delivered, refused or given up on) by the revision of the commit that
//! wrote it and the event's key, so "after the cursor" is exact even across restarts and
//! leaders. Delivery is at least once: a leader that dies between an answer and saving its
//! cursor sends that event again, with the same id.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A `2xx`.
    Delivered,
    /// Worth trying again: no answer, a `5xx`, `408` or `429`.
    Retry(String),
    /// The receiver refuses it (another `4xx`, a redirect): trying again changes nothing.
    Refused(String),
}

impl Attempt {
    /// The attempt that got HTTP status `status`.
    pub fn from_status(status: u16) -> Attempt {
        match status {
            200..=299 => Attempt::Delivered,
            408 | 429 | 500..=599 => Attempt::Retry(format!("answered {status}")),
            _ => Attempt::Refused(format!("answered {status}")),
        }
    }
}

/// Exponential back-off between attempts, up to a number of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failed attempt.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Attempts in all before the event is given up.
    pub attempts: u32,
}

impl Default for Backoff {
    /// 0.5 s, doubling, at most 30 s, 8 attempts: a receiver down for about a minute misses
    /// nothing.
    fn default() -> Backoff {
        Backoff { first: Duration::from_millis(500), max: Duration::from_secs(30), attempts: 8 }
    }
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (from 1), or `None` when it was the last.
    pub fn after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        Some(self.first.saturating_mul(factor).min(self.max))
    }
}

/// The last logged event a sink is done with.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    /// The store revision of the commit that wrote it.
    pub revision: u64,
    /// Its key.
    pub key: String,
}

impl Cursor {
    /// Whether the event at `revision`/`key` comes after this cursor (the sink still owes it).
    pub fn owes(&self, revision: u64, key: &str) -> bool {
        (revision, key) > (self.revision, self.key.as_str())
    }
}

/// Whether an event of `at_ms` is older than a sink replays at `now_ms`.
pub fn too_old(at_ms: u64, now_ms: u64, replay: Duration) -> bool {
    now_ms.saturating_sub(at_ms) > u64::try_from(replay.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_and_silence_are_retried_refusals_are_not() {
        assert_eq!(Attempt::from_status(204), Attempt::Delivered);
        for status in [500, 502, 503, 408, 429] {
            assert!(matches!(Attempt::from_status(status), Attempt::Retry(_)), "{status}");
        }
        for status in [301, 400, 401, 404] {
            assert!(matches!(Attempt::from_status(status), Attempt::Refused(_)), "{status}");
        }
    }

    #[test]
    fn the_wait_doubles_to_its_ceiling_then_gives_up() {
        let backoff = Backoff::default();
        let waits: Vec<_> = (1..=8).map(|a| backoff.after(a).map(|d| d.as_millis())).collect();
        assert_eq!(waits, [Some(500), Some(1000), Some(2000), Some(4000), Some(8000), Some(16000), Some(30000), None]);
        let huge = Backoff { attempts: u32::MAX, ..backoff };
        assert_eq!(huge.after(200), Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_cursor_owes_what_was_committed_after_it() {
        let cursor = Cursor { revision: 10, key: "/canary/events/web/r/00000002".into() };
        assert!(cursor.owes(11, "/a"));
        assert!(cursor.owes(10, "/canary/events/web/r/00000003"));
        assert!(!cursor.owes(10, "/canary/events/web/r/00000002"));
        assert!(!cursor.owes(9, "/z"));
        assert!(Cursor::default().owes(1, ""));
    }

    #[test]
    fn events_beyond_the_replay_window_are_too_old() {
        let minute = Duration::from_secs(60);
        assert!(!too_old(100_000, 130_000, minute));
        assert!(too_old(100_000, 170_001, minute));
        assert!(!too_old(200_000, 100_000, minute), "a clock behind the event's is not a reason to drop it");
    }
}
