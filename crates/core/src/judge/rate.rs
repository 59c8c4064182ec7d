//! An anytime-valid upper bound on one version's own event rate (errors or slow requests per
//! request), for the judge's absolute tolerance: "the canary's rate is shown below stable's plus
//! half a percentage point" decides safety where both rates are so small that their ratio
//! cannot be pinned down (a few slow requests on either side, or none).
//!
//! The bound inverts Robbins' beta-binomial mixture: with a Beta(½, ½) prior on the rate `p`,
//!
//! ```text
//! M_n(p₀) = B(½ + x, ½ + n − x) / B(½, ½) / (p₀ˣ (1 − p₀)ⁿ⁻ˣ)
//! ```
//!
//! is a nonnegative martingale under `p = p₀`, so `{p₀ : M_n(p₀) < 1/α}` covers the true rate at
//! every `n` at once with probability at least `1 − α` (Ville). The evidence is tempered by the
//! dispersion factor exactly as the ratio test's is ([`super::count`]).

use statrs::function::beta::ln_beta;

use super::count::log_threshold;

/// The prior's two shape parameters.
const PRIOR: f64 = 0.5;
/// Bisection steps: the bound is found to about 1e-12.
const STEPS: usize = 48;

/// `ln M_n(p₀)` tempered by `dispersion`.
fn log_mixture(events: f64, trials: f64, rate: f64, dispersion: f64) -> f64 {
    let mixture = ln_beta(PRIOR + events, PRIOR + trials - events) - ln_beta(PRIOR, PRIOR);
    let null = events * rate.ln() + (trials - events) * (1.0 - rate).ln();
    (mixture - null) / dispersion
}

/// The `1 − alpha` upper confidence bound on the rate behind `events` in `trials`, with the
/// evidence divided by `dispersion ≥ 1`. `1.0` when there are no trials.
pub fn rate_upper_bound(events: u64, trials: u64, alpha: f64, dispersion: f64) -> f64 {
    if trials == 0 {
        return 1.0;
    }
    let (x, n) = (events.min(trials) as f64, trials as f64);
    let threshold = log_threshold(alpha);
    // Between the observed rate (where the mixture is smallest) and 1 the statistic only grows.
    let (mut inside, mut outside) = (x / n, 1.0);
    if log_mixture(x, n, inside.max(f64::MIN_POSITIVE), dispersion) >= threshold {
        return inside;
    }
    for _ in 0..STEPS {
        let mid = 0.5 * (inside + outside);
        if log_mixture(x, n, mid, dispersion) < threshold {
            inside = mid;
        } else {
            outside = mid;
        }
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_events_in_many_trials_bound_the_rate_low() {
        let bound = rate_upper_bound(0, 2_000, 0.02, 1.0);
        assert!(bound > 0.0 && bound < 0.005, "{bound}");
        assert!(rate_upper_bound(0, 200, 0.02, 1.0) > bound, "fewer trials, wider bound");
        assert_eq!(rate_upper_bound(0, 0, 0.02, 1.0), 1.0);
    }

    #[test]
    fn the_bound_sits_above_the_observed_rate_and_shrinks_with_data() {
        let small = rate_upper_bound(10, 1_000, 0.02, 1.0);
        let large = rate_upper_bound(100, 10_000, 0.02, 1.0);
        assert!(small > 0.01 && large > 0.01 && large < small, "{small} {large}");
        assert!(rate_upper_bound(10, 1_000, 0.02, 4.0) > small, "dispersion widens it");
    }

    #[test]
    fn the_bound_covers_the_true_rate_in_repeated_draws() {
        // A small deterministic pseudo-random stream: 1 % events, 2,000 trials, 400 repetitions.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut misses = 0;
        for _ in 0..400 {
            let mut events = 0;
            for _ in 0..2_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                events += u64::from(state % 10_000 < 100);
            }
            misses += u32::from(rate_upper_bound(events, 2_000, 0.05, 1.0) < 0.01);
        }
        assert!(misses <= 20, "{misses} of 400 bounds below the true rate");
    }
}
