//! The latency-tail threshold `x*`: "slower than x*" turns the tail into a count, so the tail is
//! tested with the same e-process as errors.
//!
//! `x*` is fixed before the rollout from stable's own histogram, never from the canary's data:
//! a threshold that moved with the data would make the null hypothesis move too. It is a bucket
//! boundary of [`crate::latency`], so the gateway can count "slow" per cohort range with one
//! integer comparison and every version is judged against the same line. Among the boundaries,
//! the judge takes the one where stable's exceedance is closest to `1 − q` on a log scale (for
//! `q = 0.99`, closest to 1 % of requests): the tail test has most power when the threshold sits
//! where stable's events are neither so rare that nothing happens nor so common that the tail
//! shift is diluted.

use crate::latency::{LATENCY_BOUNDS_SECONDS, LATENCY_BUCKETS};

/// The chosen threshold.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TailThreshold {
    /// Index of the last "fast" bucket: a request is slow when its bucket index is greater.
    pub bucket: usize,
    /// The boundary in seconds (`LATENCY_BOUNDS_SECONDS[bucket]`).
    pub bound_seconds: f64,
    /// The share of stable's baseline requests slower than the boundary.
    pub stable_share: f64,
}

/// Picks the tail threshold for quantile `quantile` (e.g. 0.99) from stable's histogram.
/// `None` when the histogram is empty or no boundary has requests above it.
pub fn tail_threshold(stable_histogram: &[u64; LATENCY_BUCKETS], quantile: f64) -> Option<TailThreshold> {
    let total: u64 = stable_histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let target = 1.0 - quantile;
    let mut above = total;
    let mut best: Option<(f64, TailThreshold)> = None;
    for (bucket, &bound_seconds) in LATENCY_BOUNDS_SECONDS.iter().enumerate() {
        above -= stable_histogram[bucket];
        if above == 0 {
            break;
        }
        let stable_share = above as f64 / total as f64;
        let distance = (stable_share / target).ln().abs();
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, TailThreshold { bucket, bound_seconds, stable_share }));
        }
    }
    best.map(|(_, threshold)| threshold)
}

/// `threshold`, raised to the first bucket boundary at or above `floor_seconds` when it lies
/// below: a request is never "slow" at a latency nobody would notice. A raised threshold's
/// `stable_share` is the share above the original boundary, an upper bound of the new one.
pub fn floored(threshold: TailThreshold, floor_seconds: f64) -> TailThreshold {
    if threshold.bound_seconds >= floor_seconds {
        return threshold;
    }
    let last = LATENCY_BOUNDS_SECONDS.len() - 1;
    let bucket = LATENCY_BOUNDS_SECONDS.iter().position(|&b| b >= floor_seconds - 1e-12).unwrap_or(last);
    TailThreshold { bucket, bound_seconds: LATENCY_BOUNDS_SECONDS[bucket], ..threshold }
}

/// Requests in `histogram` slower than the boundary of bucket `bucket`.
pub fn slow_count(histogram: &[u64; LATENCY_BUCKETS], bucket: usize) -> u64 {
    histogram[bucket + 1..].iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_below_the_floor_is_raised_to_the_next_boundary() {
        let low = TailThreshold { bucket: 2, bound_seconds: 0.0015, stable_share: 0.01 };
        let raised = floored(low, 0.025);
        assert_eq!((raised.bucket, raised.bound_seconds), (11, 0.03));
        let high = TailThreshold { bucket: 14, bound_seconds: 0.1, stable_share: 0.01 };
        assert_eq!(floored(high, 0.025), high);
        assert_eq!(floored(low, 0.0), low);
    }

    #[test]
    fn threshold_sits_where_one_percent_of_stable_is_slower() {
        let mut histogram = [0u64; LATENCY_BUCKETS];
        histogram[5] = 9_000; // ≤ 4 ms
        histogram[10] = 880; // ≤ 20 ms
        histogram[14] = 100; // ≤ 100 ms
        histogram[20] = 20; // ≤ 1 s
        let threshold = tail_threshold(&histogram, 0.99).unwrap();
        // Above 20 ms: 1.2 %; above 100 ms: 0.2 %. 1.2 % is closer to 1 %.
        assert_eq!(threshold.bucket, 10);
        assert_eq!(threshold.bound_seconds, 0.02);
        assert!((threshold.stable_share - 0.012).abs() < 1e-12);
        assert_eq!(slow_count(&histogram, threshold.bucket), 120);
    }

    #[test]
    fn empty_or_single_bucket_histograms_have_no_threshold() {
        let mut histogram = [0u64; LATENCY_BUCKETS];
        assert_eq!(tail_threshold(&histogram, 0.99), None);
        histogram[0] = 10;
        assert_eq!(tail_threshold(&histogram, 0.99), None);
    }
}
