//! The mixture e-process for two counting processes: is the canary's share of events (errors,
//! slow requests) larger than its share of requests?
//!
//! # Model
//!
//! In tick `t` the canary served `n_c` requests and stable `n_s`; `ρ_t = n_c / (n_c + n_s)` is the
//! canary's *observed* request share (pins make it lag the configured weight, so the weight would
//! be the wrong null). If both versions produce events at rates `λ_c` and `λ_s` per request, then
//! given the `m_t` events of the tick, each one is the canary's with probability
//!
//! ```text
//! θ_t(r) = ρ_t·r / (ρ_t·r + 1 − ρ_t),      r = λ_c / λ_s
//! ```
//!
//! so the canary's count is Binomial(m_t, θ_t(r)) (Lindon & Malek 2022 reduce two Poisson
//! processes to this multinomial; the Netflix "counting processes" post uses the same reduction).
//! The likelihood ratio of `r` against `r = 1` after `t` ticks is
//!
//! ```text
//! ℓ_t(r) = Σ x_s·ln r − m_s·ln(ρ_s·r + 1 − ρ_s)          (x_s = canary events of tick s)
//! ```
//!
//! and is a nonnegative martingale under `r = 1`. For `r > 1` it is a supermartingale under every
//! `r' ≤ 1`: per event its expectation is `(1 + θ'(r − 1)) / (1 + ρ(r − 1)) ≤ 1` when the true
//! canary probability `θ' ≤ ρ`. So a mixture over `r > 1` tests the composite null "canary not
//! worse". (Given the request counts, the exact law is hypergeometric, which is smaller than the
//! binomial in convex order, so the bound still holds.) Ville's
//! inequality then bounds the probability that the mixture *ever* reaches `1/α` by `α`: the
//! controller may look every second.
//!
//! # Mixture
//!
//! Because `ρ_t` changes every tick there is no conjugate prior, so the mixture is a discrete one
//! on a grid of `ln r` with step [`LOG_RATIO_STEP`]. The one-sided test puts a half-normal prior
//! of scale `τ` on `ln r > 0` (the judge's default is 1.5: most mass on ratios 1.3–10, where the
//! regressions worth a rollback live, some up to 20×). A wider prior costs evidence on small
//! effects, a narrower one makes large effects wait; the simulation chose 1.5 over 1 because it
//! brings a 5× error regression under 15 s at 100 rps for a few seconds on a 2× one. The grid
//! reaches `ln r = ±6` so that the two-sided confidence sequence for `r ∈ [e⁻³, e³]` can centre
//! the same prior on every candidate ratio (see [`CountEProcess::confidence_interval`]).
//!
//! # Dispersion
//!
//! The binomial model assumes each event is independent. With sticky routing the events of one
//! user all land on one version, so counts are overdispersed and the plain test rejects far too
//! often (the simulation in `examples/judge_sim.rs` measures how often). The evidence is
//! therefore tempered: the judge uses `exp(ℓ/φ)` where `φ ≥ 1` is the dispersion factor
//! estimated across cohort ranges ([`super::ranges`]) and burst windows ([`super::dispersion`]). For a fixed `φ ≥ 1`, `E[LR^{1/φ}] ≤
//! E[LR]^{1/φ} ≤ 1` (Jensen), so tempering never breaks validity in the independent case; in the
//! overdispersed case `ℓ/φ` is the quasi-likelihood, the normal-mixture martingale of a score
//! whose variance is `φ` times the binomial one.

use serde::{Deserialize, Serialize};

/// Spacing of the `ln r` grid.
pub const LOG_RATIO_STEP: f64 = 0.05;

/// Grid points on each side of `r = 1` for the test and for confidence-sequence candidates
/// (`ln r` up to `±3`, `r` from 1/20 to 20).
pub const HALF_POINTS: usize = 60;

/// Grid points on each side of `r = 1` that are tracked (twice [`HALF_POINTS`], so a prior of
/// the same width can be centred on every candidate).
const TRACKED_POINTS: usize = 2 * HALF_POINTS;

/// The natural logarithm of `1/α`, the rejection threshold of an e-value on the log scale.
pub fn log_threshold(alpha: f64) -> f64 {
    -alpha.ln()
}

/// Weights of a normal prior on `ln r` with scale `prior_scale`, at offsets `1..=HALF_POINTS`
/// steps from its centre, normalised so both sides together sum to one. The one-sided test uses
/// twice these (only the side `r > 1`).
fn side_weights(prior_scale: f64) -> Vec<f64> {
    let raw: Vec<f64> = (1..=HALF_POINTS)
        .map(|k| {
            let z = k as f64 * LOG_RATIO_STEP / prior_scale;
            (-0.5 * z * z).exp()
        })
        .collect();
    let total: f64 = 2.0 * raw.iter().sum::<f64>();
    raw.into_iter().map(|w| w / total).collect()
}

/// `ln Σ exp(values)` without overflow.
fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Which alternatives a one-sided mixture covers.
#[derive(Debug, Clone, Copy)]
enum Side {
    Above,
    Below,
}

/// The grid offset of `ratio`, rounded up, within the reported range.
fn grid_offset_ceil(ratio: f64) -> isize {
    let half = HALF_POINTS as f64;
    ((ratio.ln() / LOG_RATIO_STEP - 1e-9).ceil()).clamp(-half, half) as isize
}

/// The grid offset of `ratio`, rounded down, within the reported range.
fn grid_offset_floor(ratio: f64) -> isize {
    let half = HALF_POINTS as f64;
    ((ratio.ln() / LOG_RATIO_STEP + 1e-9).floor()).clamp(-half, half) as isize
}

/// A two-sided anytime-valid confidence interval for a ratio; `None` means unbounded on that
/// side (beyond the grid, or no information).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioInterval {
    /// Lower bound, `None` below 1/20.
    pub lower: Option<f64>,
    /// Upper bound, `None` above 20.
    pub upper: Option<f64>,
}

/// The cumulative log-likelihood ratios of the count model on the `ln r` grid. Serialized as
/// its state alone (prior scale, log-likelihoods, event counts); the grid is rebuilt on reading.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "CountState", into = "CountState")]
pub struct CountEProcess {
    /// `ℓ(r_k)` for `k = -TRACKED_POINTS..=TRACKED_POINTS`, stored at `k + TRACKED_POINTS`.
    log_likelihood: Vec<f64>,
    /// `r_k = exp(k·step)`, same layout.
    ratios: Vec<f64>,
    /// `ln r_k`, same layout.
    log_ratios: Vec<f64>,
    /// Prior weights at offsets `1..=HALF_POINTS` (one side, the two sides sum to one).
    weights: Vec<f64>,
    /// Canary events seen in informative ticks.
    canary_events: u64,
    /// Stable events seen in informative ticks.
    stable_events: u64,
    prior_scale: f64,
}

/// What a [`CountEProcess`] keeps across a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CountState {
    prior_scale: f64,
    log_likelihood: Vec<f64>,
    canary_events: u64,
    stable_events: u64,
}

impl From<CountEProcess> for CountState {
    fn from(process: CountEProcess) -> CountState {
        CountState {
            prior_scale: process.prior_scale,
            log_likelihood: process.log_likelihood,
            canary_events: process.canary_events,
            stable_events: process.stable_events,
        }
    }
}

impl From<CountState> for CountEProcess {
    fn from(state: CountState) -> CountEProcess {
        let mut process = CountEProcess::new(state.prior_scale);
        // A state from another grid cannot be read point by point; it starts over.
        if state.log_likelihood.len() == process.log_likelihood.len() {
            process.log_likelihood = state.log_likelihood;
            process.canary_events = state.canary_events;
            process.stable_events = state.stable_events;
        }
        process
    }
}

impl CountEProcess {
    /// A process with no data and a normal prior of scale `prior_scale` on `ln r`.
    pub fn new(prior_scale: f64) -> CountEProcess {
        let len = 2 * TRACKED_POINTS + 1;
        let log_ratios: Vec<f64> = (0..len).map(|i| (i as f64 - TRACKED_POINTS as f64) * LOG_RATIO_STEP).collect();
        CountEProcess {
            log_likelihood: vec![0.0; len],
            ratios: log_ratios.iter().map(|l| l.exp()).collect(),
            log_ratios,
            weights: side_weights(prior_scale),
            canary_events: 0,
            stable_events: 0,
            prior_scale,
        }
    }

    /// Adds one tick: `canary_events` and `stable_events` new events, and the canary's expected
    /// share `share` of them under "same rate" (its request share). A share of 0 or 1 carries no
    /// information about the ratio and is skipped.
    pub fn observe(&mut self, canary_events: u64, stable_events: u64, share: f64) {
        let events = canary_events + stable_events;
        if events == 0 || !(share > 0.0 && share < 1.0) {
            return;
        }
        self.canary_events += canary_events;
        self.stable_events += stable_events;
        let (x, m) = (canary_events as f64, events as f64);
        for ((ll, &ratio), &log_ratio) in self.log_likelihood.iter_mut().zip(&self.ratios).zip(&self.log_ratios) {
            *ll += x * log_ratio - m * (share * ratio + 1.0 - share).ln();
        }
    }

    /// Canary and stable events counted so far (in ticks where both versions had requests).
    pub fn events(&self) -> (u64, u64) {
        (self.canary_events, self.stable_events)
    }

    /// `ln` of the one-sided mixture e-value for "canary rate > stable rate", with the evidence
    /// tempered by the dispersion factor `dispersion ≥ 1`.
    pub fn log_e_value(&self, dispersion: f64) -> f64 {
        let centre = TRACKED_POINTS;
        log_sum_exp(
            (1..=HALF_POINTS).map(|k| (2.0 * self.weights[k - 1]).ln() + self.log_likelihood[centre + k] / dispersion),
        )
    }

    /// `ln` of the one-sided mixture e-value for "canary rate > `margin` × stable rate" (the null
    /// is `r ≤ margin`), tempered by `dispersion`. The margin is rounded up to the grid, so the
    /// test is never easier than asked. `margin = 1` is [`CountEProcess::log_e_value`].
    pub fn log_e_value_above(&self, margin: f64, dispersion: f64) -> f64 {
        self.one_sided(grid_offset_ceil(margin), Side::Above, dispersion)
    }

    /// `ln` of the one-sided mixture e-value for "canary rate < `margin` × stable rate" (the null
    /// is `r ≥ margin`): evidence of safety. The margin is rounded down to the grid.
    pub fn log_e_value_below(&self, margin: f64, dispersion: f64) -> f64 {
        self.one_sided(grid_offset_floor(margin), Side::Below, dispersion)
    }

    /// One-sided mixture against the null `r = r_offset`, over the alternatives on `side`.
    ///
    /// For `r` above the null the per-event likelihood ratio has expectation at most 1 under every
    /// true ratio at or below it (the argument in the module docs with `1` replaced by the null),
    /// so this tests the composite null `r ≤ r_offset`; symmetrically for `Below`.
    fn one_sided(&self, offset: isize, side: Side, dispersion: f64) -> f64 {
        let centre = (TRACKED_POINTS as isize + offset) as usize;
        let base = self.log_likelihood[centre];
        log_sum_exp((1..=HALF_POINTS).map(|k| {
            let index = match side {
                Side::Above => centre + k,
                Side::Below => centre - k,
            };
            (2.0 * self.weights[k - 1]).ln() + (self.log_likelihood[index] - base) / dispersion
        }))
    }

    /// The anytime-valid lower confidence bound at level `1 − alpha`: the largest grid ratio
    /// whose one-sided null `r ≤ r₀` is rejected (`None` when none is, i.e. below 1/20). A metric
    /// rejected against a margin therefore always reports a lower bound at or above it.
    pub fn lower_bound(&self, alpha: f64, dispersion: f64) -> Option<f64> {
        let threshold = log_threshold(alpha);
        let half = HALF_POINTS as isize;
        (-half..=half)
            .rev()
            .find(|&offset| self.one_sided(offset, Side::Above, dispersion) >= threshold)
            .map(|offset| self.ratio_at(offset))
    }

    /// The anytime-valid upper confidence bound at level `1 − alpha`: the smallest grid ratio
    /// whose one-sided null `r ≥ r₀` is rejected (`None` when none is, i.e. above 20).
    pub fn upper_bound(&self, alpha: f64, dispersion: f64) -> Option<f64> {
        let threshold = log_threshold(alpha);
        let half = HALF_POINTS as isize;
        (-half..=half)
            .find(|&offset| self.one_sided(offset, Side::Below, dispersion) >= threshold)
            .map(|offset| self.ratio_at(offset))
    }

    /// `ln` of the two-sided mixture e-value for "the rates differ", tempered by `dispersion`.
    pub fn two_sided_log_e_value(&self, dispersion: f64) -> f64 {
        self.log_e_value_against(0, dispersion)
    }

    /// `ln` of the two-sided mixture e-value against `r = r_i` for the grid point `i` (offset
    /// from `r = 1`), tempered by `dispersion`.
    fn log_e_value_against(&self, offset: isize, dispersion: f64) -> f64 {
        let centre = (TRACKED_POINTS as isize + offset) as usize;
        let base = self.log_likelihood[centre];
        let term = |index: usize, k: usize| self.weights[k - 1].ln() + (self.log_likelihood[index] - base) / dispersion;
        log_sum_exp((1..=HALF_POINTS).flat_map(|k| [term(centre + k, k), term(centre - k, k)]))
    }

    /// The anytime-valid `1 − alpha` confidence interval for `r`: the grid ratios whose
    /// two-sided e-value stays below `1/alpha`. Costs `O(grid²)`; call it to report, not per tick.
    pub fn confidence_interval(&self, alpha: f64, dispersion: f64) -> RatioInterval {
        let threshold = log_threshold(alpha);
        let half = HALF_POINTS as isize;
        let kept: Vec<isize> =
            (-half..=half).filter(|&offset| self.log_e_value_against(offset, dispersion) < threshold).collect();
        let (Some(&low), Some(&high)) = (kept.first(), kept.last()) else {
            // Every candidate rejected: the ratio is beyond the grid on the side the data point.
            let mle = self.grid_maximum();
            return if mle > 0 {
                RatioInterval { lower: Some(self.ratio_at(half)), upper: None }
            } else {
                RatioInterval { lower: None, upper: Some(self.ratio_at(-half)) }
            };
        };
        RatioInterval {
            lower: (low > -half).then(|| self.ratio_at(low)),
            upper: (high < half).then(|| self.ratio_at(high)),
        }
    }

    /// Offset of the grid point with the largest likelihood within the reported range.
    fn grid_maximum(&self) -> isize {
        let half = HALF_POINTS as isize;
        (-half..=half)
            .max_by(|&a, &b| {
                let la = self.log_likelihood[(TRACKED_POINTS as isize + a) as usize];
                let lb = self.log_likelihood[(TRACKED_POINTS as isize + b) as usize];
                la.total_cmp(&lb)
            })
            .unwrap_or(0)
    }

    fn ratio_at(&self, offset: isize) -> f64 {
        self.ratios[(TRACKED_POINTS as isize + offset) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_data_means_no_evidence() {
        let process = CountEProcess::new(1.0);
        assert!(process.log_e_value(1.0).abs() < 1e-12, "mixture of ones is one");
        let interval = process.confidence_interval(0.05, 1.0);
        assert_eq!(interval, RatioInterval { lower: None, upper: None });
    }

    #[test]
    fn canary_with_five_times_the_errors_is_rejected() {
        let mut process = CountEProcess::new(1.0);
        // 10 % of requests, half of the errors: a ratio of 9.
        for _ in 0..10 {
            process.observe(2, 2, 0.1);
        }
        assert!(process.log_e_value(1.0) > log_threshold(0.05));
        let interval = process.confidence_interval(0.05, 1.0);
        assert!(interval.lower.unwrap() > 1.0, "{interval:?}");
    }

    #[test]
    fn events_in_proportion_to_requests_give_no_evidence() {
        let mut process = CountEProcess::new(1.0);
        for _ in 0..100 {
            process.observe(1, 9, 0.1);
        }
        assert!(process.log_e_value(1.0) < 0.0);
        let interval = process.confidence_interval(0.05, 1.0);
        assert!(interval.lower.unwrap() < 1.0 && interval.upper.unwrap() > 1.0);
    }

    #[test]
    fn a_better_canary_is_never_called_worse() {
        let mut process = CountEProcess::new(1.0);
        for _ in 0..1000 {
            process.observe(0, 10, 0.1);
        }
        assert!(process.log_e_value(1.0) < 0.0);
        assert!(process.confidence_interval(0.05, 1.0).upper.unwrap() < 1.0);
    }

    #[test]
    fn dispersion_weakens_the_evidence() {
        let mut process = CountEProcess::new(1.0);
        for _ in 0..10 {
            process.observe(2, 3, 0.1);
        }
        let plain = process.log_e_value(1.0);
        let tempered = process.log_e_value(4.0);
        assert!(plain > log_threshold(0.05) && tempered < plain / 2.0, "{plain} {tempered}");
    }

    #[test]
    fn a_margin_needs_more_evidence_and_the_bound_agrees_with_the_test() {
        let mut process = CountEProcess::new(1.5);
        // 10 % of requests, 20 % of errors: a ratio of about 2.25.
        for _ in 0..40 {
            process.observe(2, 8, 0.1);
        }
        let threshold = log_threshold(0.05);
        assert!(process.log_e_value_above(1.0, 1.0) > process.log_e_value_above(1.5, 1.0));
        assert!(process.log_e_value_above(1.0, 1.0) >= threshold, "clearly above 1");
        let lower = process.lower_bound(0.05, 1.0).unwrap();
        assert!(lower > 1.0 && lower < 2.25, "{lower}");
        for margin in [1.1, 1.25, 1.5, 2.0, 3.0] {
            let rejected = process.log_e_value_above(margin, 1.0) >= threshold;
            assert_eq!(rejected, lower >= margin - 1e-9, "margin {margin}, lower bound {lower}");
        }
        assert!(process.log_e_value_above(3.0, 1.0) < threshold, "not shown above 3");
    }

    #[test]
    fn evidence_of_safety_comes_from_below() {
        let mut process = CountEProcess::new(1.5);
        // Events exactly in proportion to requests, many of them.
        for _ in 0..200 {
            process.observe(2, 18, 0.1);
        }
        let upper = process.upper_bound(0.05, 1.0).unwrap();
        assert!(upper > 1.0 && upper < 1.5, "{upper}");
        assert!(process.log_e_value_below(1.5, 1.0) >= log_threshold(0.05));
        assert!(process.log_e_value_below(1.0, 1.0) < log_threshold(0.05), "not shown better than 1");
        // No data: no bound either way.
        let empty = CountEProcess::new(1.5);
        assert_eq!((empty.lower_bound(0.05, 1.0), empty.upper_bound(0.05, 1.0)), (None, None));
    }

    #[test]
    fn ticks_without_both_versions_are_skipped() {
        let mut process = CountEProcess::new(1.0);
        process.observe(5, 0, 1.0);
        process.observe(0, 5, 0.0);
        assert_eq!(process.events(), (0, 0));
        assert!(process.log_e_value(1.0).abs() < 1e-12);
    }
}
