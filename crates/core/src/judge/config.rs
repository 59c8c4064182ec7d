//! The judge's settings: the false-rollback budget and how it is split, the minimum samples,
//! and the tolerances that say what "worse" and "safe" mean for each metric.
//!
//! # Tolerances: practical, not just statistical, significance
//!
//! With enough traffic any real difference between two processes is "significant" — a colder
//! process, a busier node, a millisecond of scheduling — and rolling back on it is a false alarm
//! to every user of the tool. So each metric tests a hypothesis a team cares about:
//!
//! - **worse**: canary ÷ stable is shown *above* `worse_above` (e.g. the error rate is more than
//!   1.25× stable's). Only this rolls back, and only after `min_requests_for_rollback` requests
//!   on each version (the breaker covers hard failures before that).
//! - **safe**: canary ÷ stable is shown *below* `safe_below`, or — for counts, where both rates
//!   may be too small for a ratio to be pinned down — the canary's own rate is shown below
//!   stable's plus `absolute` (e.g. half a percentage point of errors). Steps advance, and the
//!   rollout promotes, only on this: "no evidence of harm" because the evidence was diluted is
//!   not safety.
//! - **earlier steps**: a step that leads to less than full traffic (10 % → 50 %) needs the
//!   canary shown below `safe_below × early_step_margin` (default 1.5: errors below 3×); only
//!   the step that leads to full traffic needs `safe_below` itself. Exposure grows with the
//!   proof: a canary that may be up to 3× as error-prone reaches half the users, whose traffic
//!   then shows the difference (or rolls it back) many times faster than 10 % could.
//! - in between, the judge keeps collecting, up to the step's `max_step_wait`; then the rollout
//!   pauses for a person with the reason.
//!
//! Latency has an absolute floor too: a request is slow only above the larger of stable's tail
//! quantile and `latency_floor_seconds` (rounded up to a bucket boundary), and a quantile is
//! compared against the larger of stable's and the floor, so 2 ms against 1 ms is never a
//! regression.

use serde::{Deserialize, Serialize};

/// How the false-rollback budget α is shared between the rollback metrics (fractions of α;
/// their sum must not exceed 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlphaSplit {
    /// Errors' share.
    pub errors: f64,
    /// The latency tail's share.
    pub latency_tail: f64,
    /// p50's share.
    pub latency_p50: f64,
    /// p90's share.
    pub latency_p90: f64,
}

impl Default for AlphaSplit {
    /// Errors get the largest share: they are the most common regression and the rarest events.
    fn default() -> AlphaSplit {
        AlphaSplit { errors: 0.4, latency_tail: 0.3, latency_p50: 0.15, latency_p90: 0.15 }
    }
}

/// What "worse" and "safe" mean for one metric, as ratios canary ÷ stable.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tolerance {
    /// Rolled back only once the ratio is shown above this (at least 1).
    pub worse_above: f64,
    /// Safe once the ratio is shown below this (above 1).
    pub safe_below: f64,
    /// Counts only: also safe once the canary's own rate is shown below stable's plus this
    /// (a fraction of requests, e.g. 0.005 for half a percentage point); 0 turns it off.
    #[serde(default)]
    pub absolute: f64,
    /// Dry run for this metric: its verdict is computed and shown but never rolls back and
    /// never holds a step.
    #[serde(default)]
    pub observe: bool,
}

/// The tolerances of every rollback metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Tolerances {
    /// Error rate.
    pub errors: Tolerance,
    /// Share of slow requests.
    pub latency_tail: Tolerance,
    /// Median and p90 latency (`absolute` is not used: the latency floor plays its part).
    pub latency_quantiles: Tolerance,
}

impl Default for Tolerances {
    fn default() -> Tolerances {
        Tolerances {
            errors: Tolerance { worse_above: 1.25, safe_below: 2.0, absolute: 0.005, observe: false },
            latency_tail: Tolerance { worse_above: 1.5, safe_below: 2.0, absolute: 0.01, observe: false },
            latency_quantiles: Tolerance { worse_above: 1.2, safe_below: 1.5, absolute: 0.0, observe: false },
        }
    }
}

/// The judge's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JudgeConfig {
    /// Probability of rolling back a canary that is not worse, over the whole rollout.
    pub alpha: f64,
    /// Shares of `alpha` per metric.
    pub alpha_split: AlphaSplit,
    /// Level of the sample-ratio guard (its false alarms pause, they never roll back).
    pub sample_ratio_alpha: f64,
    /// Requests each version must have served in the rollout before a metric can pass.
    pub min_requests_per_version: u64,
    /// Requests each version must serve within a step before the step can advance.
    pub min_requests_per_step: u64,
    /// Requests each version must have served before any metric can roll back.
    pub min_requests_for_rollback: u64,
    /// Scale of the normal prior on `ln(canary rate ÷ stable rate)`.
    pub prior_scale: f64,
    /// Stable's quantile that sets the tail threshold `x*` (e.g. 0.99).
    pub tail_quantile: f64,
    /// No request is slow, and no quantile worse, below this many seconds.
    pub latency_floor_seconds: f64,
    /// Number of cohort ranges the gateway reports per version (0 = none: no clustering
    /// correction and no cohort baseline).
    pub ranges: usize,
    /// Divide the count evidence by the measured overdispersion (needs `ranges > 0` for
    /// clustering by user; bursts in time are measured across `burst_windows`).
    pub correct_dispersion: bool,
    /// Ticks are folded into this many windows (`tick mod W`) to measure how events cluster in
    /// time — a stalled process makes every request in flight slow at once (0 turns it off).
    pub burst_windows: usize,
    /// What worse and safe mean per metric.
    pub tolerances: Tolerances,
    /// A step that leads to less than full traffic advances once the canary is shown below
    /// `safe_below × early_step_margin` (and, for counts, within `absolute × early_step_margin`);
    /// the step that leads to full traffic needs `safe_below` itself.
    #[serde(default = "default_early_step_margin")]
    pub early_step_margin: f64,
}

/// Errors shown below 3× (2× · 1.5) are enough to go from 10 % to 50 %; to go to 100 % they must
/// be shown below 2×.
pub const DEFAULT_EARLY_STEP_MARGIN: f64 = 1.5;

fn default_early_step_margin() -> f64 {
    DEFAULT_EARLY_STEP_MARGIN
}

impl Default for JudgeConfig {
    fn default() -> JudgeConfig {
        JudgeConfig {
            alpha: 0.05,
            alpha_split: AlphaSplit::default(),
            sample_ratio_alpha: 0.001,
            min_requests_per_version: 500,
            min_requests_per_step: 100,
            min_requests_for_rollback: 100,
            prior_scale: 1.5,
            tail_quantile: 0.99,
            latency_floor_seconds: 0.025,
            ranges: crate::cohort::RANGES,
            correct_dispersion: true,
            burst_windows: 32,
            tolerances: Tolerances::default(),
            early_step_margin: DEFAULT_EARLY_STEP_MARGIN,
        }
    }
}

/// Why the judge cannot be built or fed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JudgeError {
    /// A setting is out of range.
    #[error("judge setting `{key}` is invalid: {reason}")]
    InvalidConfig {
        /// The setting's name as in the config file.
        key: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// Stable's baseline histogram is empty or has no tail to put a threshold in.
    #[error("stable's baseline latency histogram has no tail above any bucket boundary")]
    NoTailThreshold,
    /// A tick has a different number of cohort ranges than configured.
    #[error("tick has {got} cohort ranges for the {version}, the judge expects {expected}")]
    RangeCount {
        /// Which version.
        version: &'static str,
        /// Configured ranges.
        expected: usize,
        /// Received.
        got: usize,
    },
}

impl JudgeConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), JudgeError> {
        let invalid = |key, reason| Err(JudgeError::InvalidConfig { key, reason });
        let open_unit = |x: f64| x > 0.0 && x < 1.0;
        if !open_unit(self.alpha) {
            return invalid("alpha", "must be between 0 and 1");
        }
        if !open_unit(self.sample_ratio_alpha) {
            return invalid("sampleRatioAlpha", "must be between 0 and 1");
        }
        let split = self.alpha_split;
        let shares = [split.errors, split.latency_tail, split.latency_p50, split.latency_p90];
        if shares.iter().any(|&s| !(s > 0.0 && s <= 1.0)) || shares.iter().sum::<f64>() > 1.0 + 1e-9 {
            return invalid("alphaSplit", "shares must be in (0, 1] and sum to at most 1");
        }
        if !(self.prior_scale > 0.0 && self.prior_scale.is_finite()) {
            return invalid("priorScale", "must be a positive number");
        }
        if !open_unit(self.tail_quantile) {
            return invalid("tailQuantile", "must be between 0 and 1");
        }
        if !(self.latency_floor_seconds >= 0.0 && self.latency_floor_seconds <= 10.0) {
            return invalid("latencyFloorSeconds", "must be between 0 and 10 seconds");
        }
        if self.correct_dispersion && (self.ranges == 1 || self.burst_windows == 1) {
            return invalid("ranges", "dispersion needs at least 2 ranges and 2 burst windows");
        }
        if !(1.0..=5.0).contains(&self.early_step_margin) {
            return invalid("earlyStepMargin", "must be between 1 and 5");
        }
        let t = self.tolerances;
        for tolerance in [t.errors, t.latency_tail, t.latency_quantiles] {
            if !(tolerance.worse_above >= 1.0 && tolerance.worse_above <= 20.0) {
                return invalid("tolerances.worseAbove", "must be between 1 and 20");
            }
            if !(tolerance.safe_below > 1.0 && tolerance.safe_below <= 20.0) {
                return invalid("tolerances.safeBelow", "must be above 1 and at most 20");
            }
            if !(tolerance.absolute >= 0.0 && tolerance.absolute < 1.0) {
                return invalid("tolerances.absolute", "must be a fraction from 0 to below 1");
            }
        }
        Ok(())
    }
}
