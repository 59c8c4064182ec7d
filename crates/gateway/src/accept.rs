//! What a worker does when `accept` fails or it is full: back off instead of spinning, and log
//! one line per interval with a count instead of one per failure.
//!
//! Out of descriptors (`EMFILE`, `ENFILE`) an accept loop would otherwise fail as fast as it
//! can retry, flooding the log and starving everything else on its thread.

use std::io;
use std::time::Duration;

use rustix::io::Errno;
use tokio::time::Instant;

/// How often a repeated failure is logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How long to wait after a failed `accept` before the next.
pub fn backoff(error: &io::Error) -> Duration {
    match Errno::from_io_error(error) {
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => Duration::from_millis(100),
        // The client gave up before it was accepted: nothing is wrong with the listener.
        Some(Errno::CONNABORTED | Errno::INTR | Errno::AGAIN) => Duration::ZERO,
        _ => Duration::from_millis(10),
    }
}

/// Whether the failure means the process is out of descriptors.
pub fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(Errno::from_io_error(error), Some(Errno::MFILE | Errno::NFILE))
}

/// Counts repeated events and says when to log them.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitedLog {
    interval: Duration,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl RateLimitedLog {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> RateLimitedLog {
        RateLimitedLog { interval, last_logged: None, unlogged: 0 }
    }

    /// Notes one event at `now`; returns how many to report when a line is due (this one
    /// included), `None` while they are being counted.
    pub fn record(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        self.due(now)
    }

    /// Events counted but not reported yet, once the interval since the last line has passed.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        let due = self.last_logged.is_none_or(|last| now.duration_since(last) >= self.interval);
        if !due || self.unlogged == 0 {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_descriptors_backs_off_longest() {
        let emfile = io::Error::from_raw_os_error(Errno::MFILE.raw_os_error());
        assert!(out_of_descriptors(&emfile));
        assert_eq!(backoff(&emfile), Duration::from_millis(100));
        let aborted = io::Error::from_raw_os_error(Errno::CONNABORTED.raw_os_error());
        assert!(!out_of_descriptors(&aborted));
        assert_eq!(backoff(&aborted), Duration::ZERO);
    }

    #[test]
    fn a_burst_is_one_line_then_one_count_per_interval() {
        let start = Instant::now();
        let mut log = RateLimitedLog::new(LOG_INTERVAL);
        assert_eq!(log.record(start), Some(1), "the first failure is logged at once");
        let lines: Vec<u64> = (1..=500).filter_map(|i| log.record(start + Duration::from_millis(20 * i))).collect();
        assert_eq!(lines, vec![500], "501 failures in 10 s: the first, then one count");
        assert_eq!(log.due(start + Duration::from_secs(15)), None, "nothing left to report");
        log.record(start + Duration::from_secs(16));
        assert_eq!(log.due(start + Duration::from_secs(19)), None);
        assert_eq!(log.due(start + Duration::from_secs(20)), Some(1), "a quiet tail is reported later");
    }
}
