//! Wall-clock time, for what is stored or shown: rollout records, events, pin expiry, samples.
//!
//! Durations and timers go through `tokio::time` instead, so paused-time tests drive them;
//! this module is the one place that reads the system clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whole seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds since the Unix epoch, with fractions.
pub fn unix_secs_f64() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_readings_agree() {
        let (ms, secs, fractional) = (unix_ms(), unix_secs(), unix_secs_f64());
        assert!(secs > 1_700_000_000, "a clock after 2023");
        assert!(ms / 1000 >= secs.saturating_sub(1) && ms / 1000 <= secs + 1);
        assert!((fractional - secs as f64).abs() < 2.0);
    }
}
