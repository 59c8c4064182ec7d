//! Fixed latency histogram boundaries shared by the gateway's metrics and the judge.
//!
//! The judge compares bucket counts between versions, so the boundaries are part of the
//! contract: they never change at run time and are the same on every gateway. They are dense
//! where web latencies live (1 ms–1 s) so a tail threshold snapped to a boundary stays close to
//! the p99 it was derived from.

/// Upper bounds (inclusive, seconds) of the latency buckets; a last `+Inf` bucket is implied.
pub const LATENCY_BOUNDS_SECONDS: [f64; 26] = [
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2,
    0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0,
];

/// Number of buckets including `+Inf`.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_SECONDS.len() + 1;

/// The same bounds in microseconds, for integer comparisons on the hot path.
pub const LATENCY_BOUNDS_MICROS: [u64; 26] = {
    let mut out = [0u64; 26];
    let mut i = 0;
    while i < out.len() {
        out[i] = (LATENCY_BOUNDS_SECONDS[i] * 1_000_000.0 + 0.5) as u64;
        i += 1;
    }
    out
};

/// Index of the bucket a latency of `micros` falls in (`LATENCY_BUCKETS - 1` is `+Inf`).
#[inline]
pub fn bucket_index(micros: u64) -> usize {
    LATENCY_BOUNDS_MICROS.partition_point(|&bound| bound < micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_upper_limits() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(500), 0);
        assert_eq!(bucket_index(501), 1);
        assert_eq!(bucket_index(30_000_000), LATENCY_BUCKETS - 2);
        assert_eq!(bucket_index(30_000_001), LATENCY_BUCKETS - 1);
        assert!(LATENCY_BOUNDS_MICROS.windows(2).all(|w| w[0] < w[1]));
    }
}
