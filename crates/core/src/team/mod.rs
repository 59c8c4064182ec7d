//! The team's own metrics: judge metrics from the team's Prometheus queries (a checkout
//! success ratio, the app's own p99), judged beside the built-in ones and acting exactly like
//! them — a `Worse` rolls back unless the metric only observes, and a step advances only once
//! every acting metric is shown safe.
//!
//! Two kinds ([`TeamMetricKind`]):
//!
//! * **ratio** — two cumulative counts per version, `events` out of `trials`, judged by the
//!   anytime-valid count test of the error rate ([`ratio`]). Each takes a share of the rollout's
//!   α ([`split_alpha`]), so the false-rollback promise still covers the whole rollout.
//! * **value** — one number per version, compared after each step's hold with a relative
//!   margin ([`value`]). Not anytime-valid: it has no α, and docs/judge.md says so.
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
mod query;

pub use definition::{
    DEFAULT_TOLERANCE, Direction, Plan, TeamMetric, TeamMetricKind, TeamMetricName, check_team_metrics,
};
pub use query::{MAX_QUERY, PLACEHOLDERS, Placeholders, PromQuery, escape_label_value};
