//! The team's own metrics: judge metrics from the team's Prometheus queries (a checkout
//! success ratio, the app's own p99), judged beside the built-in ones and acting exactly like
//! them — a `Worse` rolls back unless the metric only observes, and a step advances only once
//! every acting metric is shown safe.
//!
//! Two kinds ([`TeamMetricKind`]):
//!
//! * **ratio** — two cumulative counts per version, `events` out of `trials`, judged by the
//!   anytime-valid count test of the error rate (`team/ratio.rs`). Each takes a share of the rollout's
//!   α ([`split_alpha`]), so the false-rollback promise still covers the whole rollout.
//! * **value** — one number per version, compared after each step's hold with a relative
//!   margin ([`beyond_margin`]). Not anytime-valid: it has no α, and docs/judge.md says so.
//!
//! A query that answers nothing (an empty vector, `NaN`, Prometheus unreachable) is "no data"
//! ([`Reading::NoData`]): the metric is inconclusive, which holds the step, and after the step's
//! `max_step_wait` the rollout pauses naming the metric. No data never rolls back.
//!
//! Everything here is pure: the queries ([`PromQuery`], with placeholders escaped for PromQL
//! label values), the readings, the evidence and the verdicts. The controller sends the queries
//! and saves the [`TeamJudge`] with the rollout after every tick, so the evidence survives a
//! restart.

mod definition;
mod judge;
mod query;
mod ratio;
mod reading;
mod value;
mod words;

pub use definition::{
    DEFAULT_TOLERANCE, Direction, Plan, TeamMetric, TeamMetricKind, TeamMetricName, check_team_metrics,
    team_metrics_from_toml,
};
pub use judge::{TeamJudge, TeamSettings};
pub use query::{MAX_QUERY, PLACEHOLDERS, Placeholders, PromQuery, escape_label_value};
pub use reading::{Answer, Counts, Reading};
pub use value::beyond_margin;
pub use words::{explain, no_data};

/// The share of the rollout's α that its ratio metrics take together, when it has any.
pub const TEAM_ALPHA_SHARE: f64 = 0.2;

/// The rollout's `alpha` split between the built-in metrics and `ratio_metrics` team ratio
/// metrics: `(α of the built-ins together, α of each ratio metric)`. Without ratio metrics the
/// built-ins keep all of it; with some, they keep `1 − TEAM_ALPHA_SHARE` of it (split among
/// themselves as [`crate::judge::AlphaSplit`] says) and the ratio metrics share the rest
/// equally. By the union bound the rollout's false-rollback probability stays at most `alpha`.
pub fn split_alpha(alpha: f64, ratio_metrics: usize) -> (f64, f64) {
    if ratio_metrics == 0 {
        return (alpha, 0.0);
    }
    (alpha * (1.0 - TEAM_ALPHA_SHARE), alpha * TEAM_ALPHA_SHARE / ratio_metrics as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_split_and_never_exceeded() {
        assert_eq!(split_alpha(0.05, 0), (0.05, 0.0));
        let (builtin, each) = split_alpha(0.05, 1);
        assert!((builtin - 0.04).abs() < 1e-12 && (each - 0.01).abs() < 1e-12);
        let (builtin, each) = split_alpha(0.05, 4);
        assert!((builtin + 4.0 * each - 0.05).abs() < 1e-12);
    }
}
