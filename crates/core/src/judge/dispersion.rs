//! How overdispersed the event counts are, measured across groups that mix both versions.
//!
//! The judge uses it for bursts in time: ticks are folded into `K` windows (`tick mod K`), and
//! a stalled process that makes many requests fail or slow at once puts its events in one
//! window, so the canary's event count varies far more than the binomial model of
//! [`super::count`] says. (Clustering by user is measured across cohort ranges instead,
//! [`super::ranges`]: contiguous ranges hold one version each, which this estimator cannot use.)
//!
//! Groups are taken as independent. The test's score is
//! `S = X − Σ_t n_t·ρ_t` (canary events minus what the canary's *overall* request share `ρ_t`
//! predicts) and it splits exactly into group parts `S_g = x_g − m_g` with
//! `m_g = Σ_t n_gt·ρ_t`, each group's part of the same score the e-process uses. With the common inflation
//! `c = Σx / Σm` fitted, so that a real regression does not look like dispersion, the
//! cluster-robust ratio
//!
//! ```text
//! φ̂ = K'/(K' − 1) · Σ_g (x_g − c·m_g)² / Σ_g (c·m_g − c²·q_g)     q_g = Σ_t n_gt·ρ_t²,
//!                                                                  K' = groups with events
//! ```
//!
//! compares the observed variance of the score with the binomial one. It is about 1 when
//! events are independent and grows with the share of events that bursts cause.
//!
//! Under independence `φ̂` still wobbles around 1 like `χ²_{K'−1}/(K'−1)`, and using the wobble
//! would throw away power for nothing. The judge therefore uses a lower confidence bound,
//! `φ = max(1, φ̂ − 1.64·sqrt(2/(K'−1)))`: it corrects when clustering is clearly there. This is
//! a moment estimate, not part of the e-process guarantee; the simulation checks that the
//! rollback rate holds with heavy and flaky users.

use serde::{Deserialize, Serialize};

/// Below this many groups with events the factor is not estimated (it is 1).
const MIN_GROUPS_WITH_EVENTS: usize = 3;

/// Events a group must hold to be one of the bursts a rollback must not rest on: a stall makes
/// several requests fail or slow at once.
const MIN_BURST_EVENTS: f64 = 3.0;

/// One-sided 95 % normal quantile: how far above 1 `φ̂` must be before it is used.
const NOISE_MARGIN: f64 = 1.64;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupState {
    canary_events: f64,
    events: f64,
    expected_canary: f64,
    expected_canary_squared_share: f64,
}

/// Per-group sums for one event type (errors, or slow requests).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupDispersion {
    groups: Vec<GroupState>,
}

impl GroupDispersion {
    /// State for `groups` groups (0 disables the estimate: the factor stays 1).
    pub fn new(groups: usize) -> GroupDispersion {
        GroupDispersion { groups: vec![GroupState::default(); groups] }
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are no groups.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Adds one tick of group `group`: new events per version, and the canary's share of all
    /// requests in the tick (the same share the e-process uses).
    pub fn observe(&mut self, group: usize, canary_events: u64, stable_events: u64, share: f64) {
        let events = (canary_events + stable_events) as f64;
        if events == 0.0 || !(share > 0.0 && share < 1.0) {
            return;
        }
        let state = &mut self.groups[group];
        state.canary_events += canary_events as f64;
        state.events += events;
        state.expected_canary += events * share;
        state.expected_canary_squared_share += events * share * share;
    }

    /// Groups in which the canary had at least one event.
    pub fn groups_with_canary_events(&self) -> usize {
        self.groups.iter().filter(|g| g.canary_events > 0.0).count()
    }

    /// The canary's `most` largest groups, when they hold more than half of its events and it
    /// had events in other groups too: a few bursts a rollback must not rest on.
    pub fn largest_canary_groups(&self, most: usize) -> Option<Vec<usize>> {
        let mut groups: Vec<(usize, f64)> =
            self.groups.iter().map(|g| g.canary_events).enumerate().filter(|&(_, events)| events > 0.0).collect();
        groups.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = groups.iter().map(|&(_, events)| events).sum();
        let candidates = most.min(groups.len().saturating_sub(1));
        let bursts = groups[..candidates].iter().take_while(|&&(_, events)| events >= MIN_BURST_EVENTS).count();
        let largest = &groups[..bursts];
        let held: f64 = largest.iter().map(|&(_, events)| events).sum();
        (held > total / 2.0).then(|| largest.iter().map(|&(group, _)| group).collect())
    }

    /// The same sums with `groups` left out.
    pub fn without_groups(&self, groups: &[usize]) -> GroupDispersion {
        let mut rest = self.clone();
        for &group in groups {
            if let Some(state) = rest.groups.get_mut(group) {
                *state = GroupState::default();
            }
        }
        rest
    }

    /// Over all groups: the canary's events, stable's events, and the canary's share of the
    /// requests weighted by events (what one tick of the e-process takes).
    pub fn totals(&self) -> (u64, u64, f64) {
        let (canary, events, expected) = self
            .groups
            .iter()
            .fold((0.0, 0.0, 0.0), |(c, e, x), g| (c + g.canary_events, e + g.events, x + g.expected_canary));
        let share = if events > 0.0 { expected / events } else { 0.0 };
        (canary.round() as u64, (events - canary).round() as u64, share)
    }

    /// The dispersion factor the evidence is divided by, at least 1.
    pub fn factor(&self) -> f64 {
        let active = self.groups.iter().filter(|g| g.events > 0.0).count();
        if active < MIN_GROUPS_WITH_EVENTS {
            return 1.0;
        }
        let noise = NOISE_MARGIN * (2.0 / (active as f64 - 1.0)).sqrt();
        (self.estimate() - noise).max(1.0)
    }

    /// The raw estimate `φ̂` (1 when it cannot be estimated).
    pub fn estimate(&self) -> f64 {
        let active = self.groups.iter().filter(|g| g.events > 0.0).count();
        let expected: f64 = self.groups.iter().map(|g| g.expected_canary).sum();
        if active < MIN_GROUPS_WITH_EVENTS || expected <= 0.0 {
            return 1.0;
        }
        let observed: f64 = self.groups.iter().map(|g| g.canary_events).sum();
        let inflation = observed / expected;
        let (mut squares, mut variance) = (0.0, 0.0);
        for g in self.groups.iter().filter(|g| g.events > 0.0) {
            let residual = g.canary_events - inflation * g.expected_canary;
            squares += residual * residual;
            variance +=
                (inflation * g.expected_canary - inflation * inflation * g.expected_canary_squared_share).max(0.0);
        }
        if variance <= 0.0 {
            return 1.0;
        }
        let active = active as f64;
        active / (active - 1.0) * squares / variance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_that_follow_request_shares_are_not_overdispersed() {
        let mut dispersion = GroupDispersion::new(8);
        // Every group: 10 % of requests and 10 % of events, plus binomial-sized wobble.
        let canary = [1, 0, 2, 1, 1, 0, 2, 1];
        for (group, &x) in canary.iter().enumerate() {
            dispersion.observe(group, x, 10 - x, 0.1);
        }
        assert!(dispersion.estimate() < 1.5, "{}", dispersion.estimate());
        assert_eq!(dispersion.factor(), 1.0);
    }

    #[test]
    fn one_flaky_user_on_the_canary_shows_up_as_dispersion() {
        let mut dispersion = GroupDispersion::new(8);
        for group in 0..8 {
            let x = if group == 3 { 40 } else { 1 };
            dispersion.observe(group, x, 9, 0.1);
        }
        assert!(dispersion.factor() > 10.0, "{}", dispersion.factor());
    }

    #[test]
    fn a_uniform_regression_is_not_mistaken_for_dispersion() {
        let mut dispersion = GroupDispersion::new(8);
        // The canary is 3× worse in every group: a shift, not a spread.
        for group in 0..8 {
            dispersion.observe(group, 3, 9, 0.1);
        }
        assert!(dispersion.estimate().abs() < 1e-9, "{}", dispersion.estimate());
        assert_eq!(dispersion.factor(), 1.0);
    }

    #[test]
    fn a_few_groups_that_hold_most_canary_events_are_named_largest_first() {
        let mut dispersion = GroupDispersion::new(8);
        for (group, canary) in [(1, 8), (4, 6), (6, 10), (2, 1), (7, 1)] {
            dispersion.observe(group, canary, 1, 0.1);
        }
        assert_eq!(dispersion.largest_canary_groups(3), Some(vec![6, 1, 4]));
        let rest = dispersion.without_groups(&[6, 1, 4]);
        assert_eq!(rest.totals().0, 2, "the other groups' canary events");
        assert_eq!(rest.totals().1, 2, "and stable's");

        let mut spread = GroupDispersion::new(8);
        (0..8).for_each(|group| spread.observe(group, 3, 1, 0.1));
        assert_eq!(spread.largest_canary_groups(3), None, "three of eight equal groups are not most events");
        let mut few = GroupDispersion::new(8);
        (0..3).for_each(|group| few.observe(group, 3, 1, 0.1));
        assert_eq!(few.largest_canary_groups(3), Some(vec![0, 1]), "one group is left to test without them");
        let mut trickle = GroupDispersion::new(8);
        (0..3).for_each(|group| trickle.observe(group, 2, 1, 0.1));
        assert_eq!(trickle.largest_canary_groups(3), None, "two events at once are no burst");
    }

    #[test]
    fn without_groups_the_factor_is_one() {
        let dispersion = GroupDispersion::new(0);
        assert_eq!(dispersion.factor(), 1.0);
        assert!(dispersion.is_empty());
    }
}
