//! How overdispersed the event counts are, measured across cohort ranges.
//!
//! Routing is sticky per user, so a user whose requests fail often sends every failure to one
//! version, and a few heavy users make a version's event count vary far more than the binomial
//! model of [`super::count`] says. The gateways count each version's requests and events per
//! cohort range ([`crate::cohort`]); ranges hold disjoint users, so they are independent.
//!
//! Per version `v` and range `r` the judge keeps the events `O_vr` and their *exposure* `E_vr`:
//! the range's requests, or — for errors with a cohort baseline — the errors its requests were
//! expected to make at the range's own pre-rollout rate. With one rate `θ_v = Σ_r O_vr / Σ_r E_vr`
//! fitted per version (so that a regression is a shift, not a spread), the quasi-Poisson ratio
//!
//! ```text
//! φ̂ = K'/(K' − 2) · Σ_vr (O_vr − θ_v·E_vr)² / Σ_vr θ_v·E_vr          K' = ranges with exposure
//! ```
//!
//! compares the observed variance with the Poisson one. It is about 1 when events are
//! independent (or when the baseline predicts each range's rate), and grows with the share of
//! events that heavy or flaky users cause. (A ratio of sums, not a sum of ratios: a range with
//! a tiny exposure and one event must not dominate.)
//!
//! Under independence `φ̂` still wobbles around 1; the judge uses a lower confidence bound,
//! `φ = max(1, φ̂ − 1.64·sqrt(2/(K' − 2)))`: it corrects when clustering is clearly there. A
//! moment estimate, not part of the e-process guarantee; the simulation checks that the rollback
//! rate holds with heavy and flaky users.

use serde::{Deserialize, Serialize};

/// Below this many ranges with exposure the factor is not estimated (it is 1).
const MIN_RANGES: usize = 4;

/// One-sided 95 % normal quantile: how far above 1 `φ̂` must be before it is used.
const NOISE_MARGIN: f64 = 1.64;

/// Cumulative counters of one cohort range of one version, as the gateways report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeCounts {
    /// Requests answered.
    pub requests: u64,
    /// Errors (5xx and requests re-sent elsewhere).
    pub errors: u64,
    /// Requests slower than the tail threshold.
    pub slow: u64,
}

/// Events and exposure of one range of one version.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cell {
    events: f64,
    exposure: f64,
}

/// Per-range sums of one event type (errors, or slow requests) for both versions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeDispersion {
    canary: Vec<Cell>,
    stable: Vec<Cell>,
}

impl RangeDispersion {
    /// State for `ranges` ranges (0 disables the estimate: the factor stays 1).
    pub fn new(ranges: usize) -> RangeDispersion {
        RangeDispersion { canary: vec![Cell::default(); ranges], stable: vec![Cell::default(); ranges] }
    }

    /// Whether there are no ranges.
    pub fn is_empty(&self) -> bool {
        self.canary.is_empty()
    }

    /// Ranges in which the canary had events, and ranges in which it had any exposure.
    pub fn canary_spread(&self) -> (usize, usize) {
        let with_events = self.canary.iter().filter(|c| c.events > 0.0).count();
        let exposed = self.canary.iter().filter(|c| c.exposure > 0.0).count();
        (with_events, exposed)
    }

    /// The canary's range that holds more than half of its events, when the canary served
    /// other ranges too: one group of users a rollback must not rest on. (A canary that served
    /// one range — a 1 % step — has no other group to ask.)
    pub fn dominant_canary_range(&self) -> Option<usize> {
        let (mut events, mut exposed, mut largest) = (0.0, 0, None::<(usize, f64)>);
        for (range, cell) in self.canary.iter().enumerate() {
            events += cell.events;
            exposed += usize::from(cell.exposure > 0.0);
            if largest.is_none_or(|(_, most)| cell.events > most) {
                largest = Some((range, cell.events));
            }
        }
        let (range, most) = largest?;
        (exposed > 1 && most > events / 2.0).then_some(range)
    }

    /// The same sums with the canary's cell of `range` left out.
    pub fn without_canary_range(&self, range: usize) -> RangeDispersion {
        let mut rest = self.clone();
        if let Some(cell) = rest.canary.get_mut(range) {
            *cell = Cell::default();
        }
        rest
    }

    /// Each version's events and exposure over all ranges: `(canary, stable)`.
    pub fn totals(&self) -> ((f64, f64), (f64, f64)) {
        let sum = |cells: &[Cell]| cells.iter().fold((0.0, 0.0), |(e, x), c| (e + c.events, x + c.exposure));
        (sum(&self.canary), sum(&self.stable))
    }

    /// Adds one tick of range `range`: each version's new events and their exposure.
    pub fn observe(&mut self, range: usize, canary: (u64, f64), stable: (u64, f64)) {
        for (cells, (events, exposure)) in [(&mut self.canary, canary), (&mut self.stable, stable)] {
            let cell = &mut cells[range];
            cell.events += events as f64;
            cell.exposure += exposure;
        }
    }

    /// The dispersion factor the evidence is divided by, at least 1.
    pub fn factor(&self) -> f64 {
        let Some((estimate, active)) = self.fit() else { return 1.0 };
        let noise = NOISE_MARGIN * (2.0 / (active as f64 - 2.0)).sqrt();
        (estimate - noise).max(1.0)
    }

    /// The raw estimate `φ̂` (1 when it cannot be estimated).
    pub fn estimate(&self) -> f64 {
        self.fit().map_or(1.0, |(estimate, _)| estimate)
    }

    fn fit(&self) -> Option<(f64, usize)> {
        let (mut squares, mut variance, mut active) = (0.0, 0.0, 0);
        for cells in [&self.canary, &self.stable] {
            let events: f64 = cells.iter().map(|c| c.events).sum();
            let exposure: f64 = cells.iter().map(|c| c.exposure).sum();
            if exposure <= 0.0 {
                continue;
            }
            let rate = events / exposure;
            for cell in cells.iter().filter(|c| c.exposure > 0.0) {
                let expected = rate * cell.exposure;
                squares += (cell.events - expected).powi(2);
                variance += expected;
                active += 1;
            }
        }
        if active < MIN_RANGES || variance <= 0.0 {
            return None;
        }
        let k = active as f64;
        Some((k / (k - 2.0) * squares / variance, active))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_sized_wobble_is_not_overdispersion() {
        let mut dispersion = RangeDispersion::new(10);
        let counts = [9, 11, 10, 12, 8, 10, 9, 11, 10, 10];
        for (range, &x) in counts.iter().enumerate() {
            dispersion.observe(range, (0, 0.0), (x, 1_000.0));
        }
        assert!(dispersion.estimate() < 1.5, "{}", dispersion.estimate());
        assert_eq!(dispersion.factor(), 1.0);
    }

    #[test]
    fn one_flaky_user_shows_up_as_dispersion() {
        let mut dispersion = RangeDispersion::new(10);
        for range in 0..10 {
            let x = if range == 3 { 200 } else { 10 };
            dispersion.observe(range, (0, 0.0), (x, 1_000.0));
        }
        assert!(dispersion.factor() > 10.0, "{}", dispersion.factor());
    }

    #[test]
    fn a_regression_on_one_version_is_a_shift_not_a_spread() {
        let mut dispersion = RangeDispersion::new(10);
        for range in 0..10 {
            let canary = if range < 5 { (30, 1_000.0) } else { (0, 0.0) };
            let stable = if range >= 5 { (10, 1_000.0) } else { (0, 0.0) };
            dispersion.observe(range, canary, stable);
        }
        assert!(dispersion.estimate() < 1e-9, "{}", dispersion.estimate());
    }

    #[test]
    fn a_baseline_that_predicts_each_range_removes_the_spread() {
        // Range 3 holds a flaky user: ten times the errors, and ten times the expected errors.
        let mut plain = RangeDispersion::new(10);
        let mut with_baseline = RangeDispersion::new(10);
        for range in 0..10 {
            let (x, expected_rate) = if range == 3 { (100, 0.1) } else { (10, 0.01) };
            plain.observe(range, (0, 0.0), (x, 1_000.0));
            with_baseline.observe(range, (0, 0.0), (x, 1_000.0 * expected_rate));
        }
        assert!(plain.factor() > 10.0);
        assert_eq!(with_baseline.factor(), 1.0);
    }

    #[test]
    fn a_dominant_canary_range_can_be_left_out() {
        let mut dispersion = RangeDispersion::new(10);
        assert_eq!(dispersion.dominant_canary_range(), None, "no events, no dominant range");
        dispersion.observe(6, (30, 400.0), (0, 0.0));
        assert_eq!(dispersion.dominant_canary_range(), None, "the only range the canary served");
        dispersion.observe(2, (3, 300.0), (0, 0.0));
        dispersion.observe(8, (0, 0.0), (12, 1_000.0));
        assert_eq!(dispersion.dominant_canary_range(), Some(6));
        let mut even = RangeDispersion::new(10);
        even.observe(1, (10, 300.0), (0, 0.0));
        even.observe(2, (10, 300.0), (0, 0.0));
        assert_eq!(even.dominant_canary_range(), None, "half is not more than half");
        let rest = dispersion.without_canary_range(6);
        assert_eq!(rest.totals(), ((3.0, 300.0), (12.0, 1_000.0)));
        assert_eq!(dispersion.totals(), ((33.0, 700.0), (12.0, 1_000.0)), "the original keeps its sums");
    }

    #[test]
    fn without_ranges_the_factor_is_one() {
        let dispersion = RangeDispersion::new(0);
        assert!(dispersion.is_empty());
        assert_eq!(dispersion.factor(), 1.0);
    }
}
