//! Sample-ratio mismatch: does the canary get the share of users the weight says it should?
//!
//! A mismatch means the comparison itself is broken (a routing bug, clients retrying on the
//! other version, a gateway not applying the weight), so it makes the judge *inconclusive* —
//! a person should look — and never triggers a rollback.
//!
//! The unit is the user, not the request. Requests cannot be used: heavy users make the request
//! split noisy, and pins keep returning users on their old version after a weight step, so the
//! request share lags the weight by design. A user seen for the first time in this rollout has
//! no pin and is routed by the bucket hash alone, so under correct routing each new user is the
//! canary's with probability `w_t`, the weight in force, independently of everything else. The
//! new-user counts per tick are therefore exactly the binomial model of [`super::count`] with
//! the weight as the expected share, and the guard is its two-sided mixture e-process (no
//! dispersion correction is needed: users are the independent units).

use serde::{Deserialize, Serialize};

use super::count::{CountEProcess, RatioInterval, log_threshold};

/// The sample-ratio guard's state for one rollout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SampleRatioGuard {
    process: CountEProcess,
    alpha: f64,
    expected_canary_users: f64,
    mismatch: bool,
}

impl SampleRatioGuard {
    /// A guard that flags a mismatch at level `alpha`.
    pub fn new(alpha: f64, prior_scale: f64) -> SampleRatioGuard {
        SampleRatioGuard {
            process: CountEProcess::new(prior_scale),
            alpha,
            expected_canary_users: 0.0,
            mismatch: false,
        }
    }

    /// Adds one tick: users first seen on each version and the canary weight in force (0–1).
    pub fn observe(&mut self, canary_new_users: u64, stable_new_users: u64, canary_weight: f64) {
        if canary_weight > 0.0 && canary_weight < 1.0 {
            self.expected_canary_users += (canary_new_users + stable_new_users) as f64 * canary_weight;
        }
        self.process.observe(canary_new_users, stable_new_users, canary_weight);
        if self.log_e_value() >= log_threshold(self.alpha) {
            self.mismatch = true;
        }
    }

    /// Whether the split has ever been shown to differ from the weight (sticky).
    pub fn mismatch(&self) -> bool {
        self.mismatch
    }

    /// `ln` of the two-sided e-value.
    pub fn log_e_value(&self) -> f64 {
        self.process.two_sided_log_e_value(1.0)
    }

    /// New users per version counted (in ticks with a weight strictly between 0 and 1).
    pub fn users(&self) -> (u64, u64) {
        self.process.events()
    }

    /// Canary's new users ÷ the number the weight predicts.
    pub fn estimate(&self) -> Option<f64> {
        let (canary, _) = self.users();
        (self.expected_canary_users > 0.0).then(|| canary as f64 / self.expected_canary_users)
    }

    /// Confidence interval for the odds multiplier `r` of being routed to the canary.
    pub fn interval(&self) -> RatioInterval {
        self.process.confidence_interval(self.alpha, 1.0)
    }

    /// The guard's level.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_split_as_weighted_raise_no_flag() {
        let mut guard = SampleRatioGuard::new(0.001, 1.0);
        for _ in 0..600 {
            guard.observe(1, 9, 0.1);
        }
        assert!(!guard.mismatch());
        assert!((guard.estimate().unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_canary_that_gets_too_few_users_is_flagged() {
        let mut guard = SampleRatioGuard::new(0.001, 1.0);
        // 10 % weight but only 2 % of new users reach the canary.
        for tick in 0..600 {
            let canary = u64::from(tick % 5 == 0);
            guard.observe(canary, 10 - canary, 0.1);
        }
        assert!(guard.mismatch());
        assert!(guard.interval().upper.unwrap() < 1.0);
    }

    #[test]
    fn the_flag_stays_raised() {
        let mut guard = SampleRatioGuard::new(0.001, 1.0);
        guard.observe(0, 2_000, 0.5);
        assert!(guard.mismatch());
        for _ in 0..10_000 {
            guard.observe(5, 5, 0.5);
        }
        assert!(guard.mismatch());
    }
}
