//! Distribution shift at p50/p90: time-uniform confidence bands for each version's latency CDF.
//!
//! Howard & Ramdas (2022, "Sequential estimation of quantiles with applications to A/B-testing
//! and best-arm identification", Theorem 2) extend the Dvoretzky–Kiefer–Wolfowitz inequality to
//! hold uniformly over time: with probability at least `1 − α`, for every sample size `n ≥ 1`,
//!
//! ```text
//! sup_x |F̂_n(x) − F(x)| ≤ ε_n = 0.85 · sqrt( (ln ln(e·n) + 0.8·ln(1612/α)) / n ).
//! ```
//!
//! The band holds for all quantiles at once, so the true q-quantile lies between the empirical
//! quantiles at `q − ε` and `q + ε`. With histogram data these bounds are bucket boundaries:
//! the quantile is above boundary `b` if `F̂(b) + ε < q` and at most `b` if `F̂(b) − ε ≥ q`.
//! The canary is worse at quantile `q` when its lower bound is above stable's upper bound, i.e.
//! some boundary separates the two with both bands agreeing. Each band gets half the metric's α,
//! so the pair (and the ratio interval built from it) holds with probability `1 − α`.
//!
//! The theorem assumes independent samples; with sticky users, latencies cluster by user like
//! errors do. The judge therefore shrinks `n` to `n / φ`, with `φ` the dispersion factor of the
//! slow-request counts ([`super::dispersion`]) — a heuristic effective sample size, not part of
//! the theorem. The bands are conservative (the constants cover all quantiles and all times), so
//! this test catches large shifts of the body of the distribution; the tail count test is the
//! sensitive one.

use crate::latency::{LATENCY_BOUNDS_SECONDS, LATENCY_BUCKETS};

use super::Tolerance;
use super::count::RatioInterval;

/// Radius `ε_n` of the time-uniform DKW band after `samples` (effective) observations; 1 (no
/// information) below one sample.
pub fn dkw_radius(samples: f64, alpha: f64) -> f64 {
    if samples < 1.0 {
        return 1.0;
    }
    let log_log = (1.0 + samples.ln()).ln();
    let radius = 0.85 * ((log_log + 0.8 * (1612.0 / alpha).ln()) / samples).sqrt();
    radius.min(1.0)
}

/// Where the q-quantile can be, as bucket indices, given a band of `radius` around the
/// empirical CDF: it is in a bucket with index in `lower..=upper`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantileBuckets {
    /// First bucket the quantile can be in.
    pub lower: usize,
    /// Last bucket the quantile can be in (`LATENCY_BUCKETS - 1` is `+Inf`).
    pub upper: usize,
}

/// Bucket range of the q-quantile for `histogram` with band radius `radius`.
pub fn quantile_buckets(histogram: &[u64; LATENCY_BUCKETS], quantile: f64, radius: f64) -> QuantileBuckets {
    let total: u64 = histogram.iter().sum();
    let last = LATENCY_BUCKETS - 1;
    if total == 0 {
        return QuantileBuckets { lower: 0, upper: last };
    }
    let (mut lower, mut upper) = (None, None);
    let mut cumulative = 0u64;
    for (bucket, &count) in histogram.iter().enumerate().take(last) {
        cumulative += count;
        let cdf = cumulative as f64 / total as f64;
        if lower.is_none() && cdf + radius >= quantile {
            lower = Some(bucket);
        }
        if upper.is_none() && cdf - radius >= quantile {
            upper = Some(bucket);
        }
    }
    QuantileBuckets { lower: lower.unwrap_or(last), upper: upper.unwrap_or(last) }
}

/// Lower edge of bucket `bucket` in seconds.
fn bucket_floor(bucket: usize) -> f64 {
    if bucket == 0 { 0.0 } else { LATENCY_BOUNDS_SECONDS[bucket - 1] }
}

/// Upper edge of bucket `bucket` in seconds; `None` for `+Inf`.
fn bucket_ceiling(bucket: usize) -> Option<f64> {
    LATENCY_BOUNDS_SECONDS.get(bucket).copied()
}

/// The q-quantile of a histogram, interpolated linearly inside its bucket (the `+Inf` bucket
/// reports the last finite boundary). `None` for an empty histogram.
pub fn interpolated_quantile(histogram: &[u64; LATENCY_BUCKETS], quantile: f64) -> Option<f64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = quantile * total as f64;
    let mut below = 0.0;
    for (bucket, &count) in histogram.iter().enumerate() {
        let count = count as f64;
        if count > 0.0 && below + count >= rank {
            let Some(ceiling) = bucket_ceiling(bucket) else {
                return Some(bucket_floor(bucket));
            };
            let floor = bucket_floor(bucket);
            return Some(floor + (ceiling - floor) * ((rank - below) / count).clamp(0.0, 1.0));
        }
        below += count;
    }
    Some(bucket_floor(LATENCY_BUCKETS - 1))
}

/// The comparison of one quantile between canary and stable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantileComparison {
    /// The bands show the canary's quantile above `worse_above` × stable's (or the floor).
    pub worse: bool,
    /// The bands show the canary's quantile below `safe_below` × stable's (or the floor).
    pub safe: bool,
    /// Canary quantile ÷ stable quantile (interpolated), if both have data.
    pub estimate: Option<f64>,
    /// Bounds on that ratio implied by the two bands.
    pub interval: RatioInterval,
}

/// The two latency histograms compared.
#[derive(Debug, Clone, Copy)]
pub struct Histograms<'a> {
    /// The canary's.
    pub canary: &'a [u64; LATENCY_BUCKETS],
    /// Stable's.
    pub stable: &'a [u64; LATENCY_BUCKETS],
}

/// What counts as a difference worth acting on.
#[derive(Debug, Clone, Copy)]
pub struct Practical {
    /// Ratios of the quantiles that are worse and safe.
    pub tolerance: Tolerance,
    /// Stable's quantile is taken as at least this, so a few milliseconds never count.
    pub floor_seconds: f64,
}

/// Compares quantile `quantile` of two histograms at level `alpha` (split over the two bands),
/// with effective sample sizes `samples` (canary, stable).
pub fn compare_quantile(
    histograms: &Histograms<'_>,
    quantile: f64,
    alpha: f64,
    samples: (f64, f64),
    practical: &Practical,
) -> QuantileComparison {
    let (canary, stable) = (histograms.canary, histograms.stable);
    let canary_range = quantile_buckets(canary, quantile, dkw_radius(samples.0, alpha / 2.0));
    let stable_range = quantile_buckets(stable, quantile, dkw_radius(samples.1, alpha / 2.0));
    let estimate = match (interpolated_quantile(canary, quantile), interpolated_quantile(stable, quantile)) {
        (Some(c), Some(s)) if s > 0.0 => Some(c / s),
        _ => None,
    };
    let canary_floor = bucket_floor(canary_range.lower);
    let stable_ceiling = bucket_ceiling(stable_range.upper);
    let lower = match stable_ceiling {
        Some(stable_ceiling) if canary_floor > 0.0 => Some(canary_floor / stable_ceiling),
        _ => None,
    };
    let stable_floor = bucket_floor(stable_range.lower);
    let canary_ceiling = bucket_ceiling(canary_range.upper);
    let upper = match canary_ceiling {
        Some(canary_ceiling) if stable_floor > 0.0 => Some(canary_ceiling / stable_floor),
        _ => None,
    };
    // A quantile in bucket i is above the bucket's floor, so a canary floor at or above stable's
    // ceiling already shows the canary slower; the margin and the floor then ask for more.
    let floor = practical.floor_seconds;
    let worse = canary_floor > 0.0
        && stable_ceiling.is_some_and(|ceiling| canary_floor >= practical.tolerance.worse_above * ceiling.max(floor));
    // Inside one bucket the histograms cannot tell two quantiles apart, so stable's side of the
    // safety check is the top of the bucket its lower band lies in: a canary band that stays
    // within that bucket is safe whatever the bucket's width (a bucket like 30–50 ms is wider
    // than the 1.5× tolerance, and comparing against its floor could never pass).
    let stable_reference = bucket_ceiling(stable_range.lower).unwrap_or(stable_floor).max(floor);
    let safe = canary_ceiling.is_some_and(|ceiling| ceiling <= practical.tolerance.safe_below * stable_reference);
    QuantileComparison { worse, safe, estimate, interval: RatioInterval { lower, upper } }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any difference counts: no margin, no floor.
    const STRICT: Practical = Practical {
        tolerance: Tolerance { worse_above: 1.0, safe_below: 1.5, absolute: 0.0, observe: false },
        floor_seconds: 0.0,
    };

    fn compare(
        canary: &[u64; LATENCY_BUCKETS],
        stable: &[u64; LATENCY_BUCKETS],
        quantile: f64,
        samples: f64,
        practical: &Practical,
    ) -> QuantileComparison {
        compare_quantile(&Histograms { canary, stable }, quantile, 0.01, (samples, samples), practical)
    }

    fn histogram(pairs: &[(usize, u64)]) -> [u64; LATENCY_BUCKETS] {
        let mut out = [0u64; LATENCY_BUCKETS];
        for &(bucket, count) in pairs {
            out[bucket] = count;
        }
        out
    }

    #[test]
    fn radius_shrinks_with_samples_and_grows_with_confidence() {
        assert_eq!(dkw_radius(0.0, 0.05), 1.0);
        assert!(dkw_radius(10_000.0, 0.05) < dkw_radius(1_000.0, 0.05));
        assert!(dkw_radius(10_000.0, 0.01) > dkw_radius(10_000.0, 0.05));
        // Wider than the fixed-n DKW band sqrt(ln(2/α)/2n): the price of looking at every n.
        let fixed = ((2.0f64 / 0.05).ln() / 20_000.0).sqrt();
        assert!(dkw_radius(10_000.0, 0.05) > fixed);
    }

    #[test]
    fn interpolation_stays_inside_the_bucket() {
        let h = histogram(&[(8, 50), (9, 50)]); // (7.5, 10] ms and (10, 15] ms
        let median = interpolated_quantile(&h, 0.5).unwrap();
        assert!((median - 0.01).abs() < 1e-12, "{median}");
        let p90 = interpolated_quantile(&h, 0.9).unwrap();
        assert!(p90 > 0.01 && p90 <= 0.015);
        assert_eq!(interpolated_quantile(&histogram(&[]), 0.5), None);
    }

    #[test]
    fn a_doubled_median_with_plenty_of_data_is_worse() {
        let stable = histogram(&[(8, 5_000), (9, 5_000)]);
        let canary = histogram(&[(11, 5_000), (12, 5_000)]);
        let comparison = compare(&canary, &stable, 0.5, 10_000.0, &STRICT);
        assert!(comparison.worse);
        assert!(comparison.interval.lower.unwrap() > 1.0);
        // The reverse is not worse.
        let reverse = compare(&stable, &canary, 0.5, 10_000.0, &STRICT);
        assert!(!reverse.worse);
    }

    #[test]
    fn the_same_distribution_is_not_worse_and_the_interval_covers_one() {
        let h = histogram(&[(8, 5_000), (9, 5_000), (12, 100)]);
        let comparison = compare(&h, &h, 0.9, 10_100.0, &STRICT);
        assert!(!comparison.worse);
        assert_eq!(comparison.estimate, Some(1.0));
        assert!(comparison.interval.lower.unwrap() <= 1.0);
        assert!(comparison.interval.upper.unwrap() >= 1.0);
    }

    #[test]
    fn few_samples_are_never_worse() {
        let stable = histogram(&[(8, 20)]);
        let canary = histogram(&[(12, 20)]);
        assert!(!compare(&canary, &stable, 0.5, 20.0, &STRICT).worse);
    }

    #[test]
    fn a_doubled_median_of_a_few_milliseconds_is_not_practically_worse() {
        // 2 ms → 4 ms, plenty of data: worse by any statistical standard, not by the floor.
        let stable = histogram(&[(3, 10_000)]);
        let canary = histogram(&[(5, 10_000)]);
        assert!(compare(&canary, &stable, 0.5, 10_000.0, &STRICT).worse);
        let practical = Practical { floor_seconds: 0.025, ..STRICT };
        let comparison = compare(&canary, &stable, 0.5, 10_000.0, &practical);
        assert!(!comparison.worse && comparison.safe, "{comparison:?}");
        // 40 → 60 ms is 1.5×: worse than a 1.2 margin, not worse than a 2.0 one.
        let stable = histogram(&[(12, 10_000)]); // (30, 50] ms
        let canary = histogram(&[(13, 10_000)]); // (50, 75] ms
        let margin = |worse_above| Practical { tolerance: Tolerance { worse_above, ..STRICT.tolerance }, ..practical };
        assert!(compare(&canary, &stable, 0.5, 10_000.0, &margin(1.0)).worse);
        assert!(!compare(&canary, &stable, 0.5, 10_000.0, &margin(2.0)).worse);
    }

    #[test]
    fn quantiles_in_one_wide_bucket_are_shown_safe() {
        // Both medians inside (30, 50] ms, a bucket 1.67× wide: within the 1.5× tolerance.
        let h = histogram(&[(11, 2_000), (12, 6_000), (13, 2_000)]);
        let practical = Practical { floor_seconds: 0.025, ..STRICT };
        let comparison = compare(&h, &h, 0.5, 10_000.0, &practical);
        assert!(comparison.safe && !comparison.worse, "{comparison:?}");
        // Two buckets up is not safe.
        let slower = histogram(&[(13, 2_000), (14, 6_000), (15, 2_000)]);
        assert!(!compare(&slower, &h, 0.5, 10_000.0, &practical).safe);
    }
}
