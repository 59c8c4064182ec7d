//! The cohort baseline: the canary's users compared with their own history.
//!
//! Assignment is a hash of the user key under the rollout's salt, and the controller draws that
//! salt when the previous rollout ends, so the gateways count requests and errors per cohort
//! range ([`crate::cohort`]) under it before the rollout starts. Range `r`'s pre-rollout error
//! rate `p_r` says how error-prone *its* users are. During the rollout the judge's error test
//! then asks how many errors each version made against how many its requests were expected to
//! make at their ranges' own rates: a request of range `r` adds `p_r` to its version's expected
//! errors, and the canary's share of the expected errors replaces its share of the requests in
//! the count e-process. Heavy or error-prone users cancel out (they were error-prone before the
//! rollout too) instead of being divided into the evidence as dispersion; what is left is the
//! change of the canary cohort against the change of the stable cohort, a difference in
//! differences.
//!
//! # Noise in the baseline
//!
//! `p_r` is shrunk towards the overall rate (as if each range had [`PRIOR_EVENTS`] more errors at
//! that rate), and is only an estimate. Its error does not shrink as the rollout collects data,
//! so it must not become evidence: with `K̂` the ratio of the canary's expected error rate to
//! stable's and `s` its relative standard error (from the baseline's Poisson counts, for the
//! ranges each version actually served), the judge widens every tolerance by `κ = exp(2·s)`:
//! harm must be shown above `worse_above·κ` and safety below `safe_below/κ`. A short baseline
//! widens the margins; one with fewer than [`MIN_BASELINE_ERRORS`] errors is not used at all,
//! nor one whose ranges err alike ([`MIN_BASELINE_DISPERSION`]): it is chosen before the rollout
//! from the baseline alone, so the choice costs no validity.

use serde::{Deserialize, Serialize};

use super::ranges::RangeCounts;
use crate::cohort::RANGES;

/// Pseudo-errors at the overall rate added to every range's baseline.
pub const PRIOR_EVENTS: f64 = 2.0;

/// A baseline with fewer errors than this (20 per range on average) is not used: below it the
/// ranges' rates are so uncertain that the widened margins (`κ` about 1.15 or more for a 10 %
/// canary) cost more power than the baseline gives. At a 1 % error rate that is 200,000
/// requests between two rollouts.
pub const MIN_BASELINE_ERRORS: u64 = 20 * RANGES as u64;

/// A baseline whose ranges differ less than this (the quasi-Poisson dispersion of their error
/// counts) is not used: when users are alike the plain test has nothing to gain from it and the
/// baseline's own noise would only widen the margins. Under alike users the estimate is about
/// `1 ± 0.14`.
pub const MIN_BASELINE_DISPERSION: f64 = 1.5;

/// Standard errors of `K̂` the tolerances are widened by.
const MARGIN_STANDARD_ERRORS: f64 = 2.0;

/// What the gateways counted per cohort range before the rollout, under the rollout's salt.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CohortBaseline {
    /// Requests per range.
    pub requests: Vec<u64>,
    /// Errors per range.
    pub errors: Vec<u64>,
}

impl CohortBaseline {
    /// From the per-range counters of the versions that served before the rollout.
    pub fn from_ranges<'a>(versions: impl IntoIterator<Item = &'a [RangeCounts]>) -> CohortBaseline {
        let mut baseline = CohortBaseline { requests: vec![0; RANGES], errors: vec![0; RANGES] };
        for ranges in versions {
            for (range, counts) in ranges.iter().enumerate().take(RANGES) {
                baseline.requests[range] += counts.requests;
                baseline.errors[range] += counts.errors;
            }
        }
        baseline
    }

    /// Errors in all ranges.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// How much more the ranges' error counts vary than alike users' would (about 1 when
    /// they are alike).
    pub fn dispersion(&self) -> f64 {
        let requests: u64 = self.requests.iter().sum();
        if requests == 0 || self.requests.len() < 2 {
            return 1.0;
        }
        let overall = self.total_errors() as f64 / requests as f64;
        let (mut squares, mut variance) = (0.0, 0.0);
        for (&n, &e) in self.requests.iter().zip(&self.errors) {
            let expected = overall * n as f64;
            squares += (e as f64 - expected).powi(2);
            variance += expected;
        }
        let k = self.requests.len() as f64;
        if variance > 0.0 { k / (k - 1.0) * squares / variance } else { 1.0 }
    }

    /// Each range's rate, or `None` when the baseline is malformed, too small to use, or its
    /// users are alike.
    pub(super) fn rates(&self) -> Option<CohortRates> {
        if self.requests.len() != RANGES || self.errors.len() != RANGES || self.total_errors() < MIN_BASELINE_ERRORS {
            return None;
        }
        if self.dispersion() < MIN_BASELINE_DISPERSION {
            return None;
        }
        let requests: u64 = self.requests.iter().sum();
        let overall = self.total_errors() as f64 / requests as f64;
        let pseudo_requests = PRIOR_EVENTS / overall;
        let (mut rates, mut variances) = (Vec::with_capacity(RANGES), Vec::with_capacity(RANGES));
        for (&n, &e) in self.requests.iter().zip(&self.errors) {
            let exposure = n as f64 + pseudo_requests;
            let events = e as f64 + PRIOR_EVENTS;
            rates.push(events / exposure);
            variances.push(events / (exposure * exposure));
        }
        Some(CohortRates { rates, variances })
    }
}

/// Each range's expected error rate (shrunk) and that rate's variance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CohortRates {
    rates: Vec<f64>,
    variances: Vec<f64>,
}

/// How the canary's expected error rate compares with stable's, and how sure that is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Adjustment {
    /// `K̂`: the canary's expected rate over stable's (1 without a baseline).
    pub ratio: f64,
    /// `κ ≥ 1`: the factor tolerances are widened by.
    pub margin: f64,
}

impl Adjustment {
    /// No baseline: nothing to adjust.
    pub const NONE: Adjustment = Adjustment { ratio: 1.0, margin: 1.0 };
}

impl CohortRates {
    /// The errors `requests` requests of `range` are expected to make.
    pub fn expected(&self, range: usize, requests: u64) -> f64 {
        self.rates[range] * requests as f64
    }

    /// `K̂` and `κ` for the requests each version served per range so far.
    pub fn adjustment(&self, canary: &[u64], stable: &[u64]) -> Adjustment {
        let (Some((canary_rate, canary_var)), Some((stable_rate, stable_var))) = (self.mix(canary), self.mix(stable))
        else {
            return Adjustment::NONE;
        };
        let relative_variance = canary_var / (canary_rate * canary_rate) + stable_var / (stable_rate * stable_rate);
        Adjustment {
            ratio: canary_rate / stable_rate,
            margin: (MARGIN_STANDARD_ERRORS * relative_variance.sqrt()).exp(),
        }
    }

    /// The expected rate of a mix of requests over ranges, and its variance.
    fn mix(&self, requests: &[u64]) -> Option<(f64, f64)> {
        let total: u64 = requests.iter().sum();
        if total == 0 {
            return None;
        }
        let (mut rate, mut variance) = (0.0, 0.0);
        for ((&n, &p), &v) in requests.iter().zip(&self.rates).zip(&self.variances) {
            let share = n as f64 / total as f64;
            rate += share * p;
            variance += share * share * v;
        }
        (rate > 0.0).then_some((rate, variance))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(errors_per_range: impl Fn(usize) -> u64) -> CohortBaseline {
        CohortBaseline { requests: vec![10_000; RANGES], errors: (0..RANGES).map(errors_per_range).collect() }
    }

    #[test]
    fn a_flaky_range_is_expected_to_err_more() {
        let rates = baseline(|r| if r == 3 { 1_000 } else { 100 }).rates().unwrap();
        assert!(rates.expected(3, 100) > 9.0 * rates.expected(4, 100));
        let flaky_canary = rates.adjustment(&one_range(3), &one_range(50));
        assert!((flaky_canary.ratio - 1_002.0 / 102.0).abs() < 0.01, "{flaky_canary:?}");
    }

    /// Every fourth range errs ten times as often.
    fn uneven(scale: u64) -> CohortBaseline {
        baseline(|r| if r % 4 == 0 { 10 * scale } else { scale })
    }

    #[test]
    fn a_small_baseline_is_not_used_and_a_shorter_one_widens_the_margin() {
        assert!(baseline(|r| u64::from(r == 0)).rates().is_none());
        assert!(uneven(6).rates().is_none(), "about 8 errors a range is too few");
        let long = uneven(1_000).rates().unwrap().adjustment(&all_ranges(), &all_ranges());
        let short = uneven(20).rates().unwrap().adjustment(&one_range(1), &one_range(2));
        assert!((long.ratio - 1.0).abs() < 1e-9);
        assert!(long.margin < 1.02, "{long:?}");
        assert!(short.margin > 1.5, "{short:?}");
    }

    #[test]
    fn a_baseline_of_alike_users_is_not_used() {
        let alike = baseline(|r| 100 + (r % 3) as u64 * 5);
        assert!(alike.dispersion() < MIN_BASELINE_DISPERSION, "{}", alike.dispersion());
        assert!(alike.rates().is_none());
        assert!(uneven(100).dispersion() > MIN_BASELINE_DISPERSION);
    }

    #[test]
    fn without_requests_there_is_nothing_to_adjust() {
        let rates = uneven(100).rates().unwrap();
        assert_eq!(rates.adjustment(&[0; RANGES], &all_ranges()), Adjustment::NONE);
    }

    fn one_range(range: usize) -> Vec<u64> {
        (0..RANGES).map(|r| if r == range { 1_000 } else { 0 }).collect()
    }

    fn all_ranges() -> Vec<u64> {
        vec![1_000; RANGES]
    }
}
