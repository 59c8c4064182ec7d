//! What the judge reports: one verdict per metric, and the step decision built from them.
//!
//! Each metric is tested both ways with anytime-valid evidence, against its tolerance
//! ([`super::Tolerance`]): `Worse` once the canary is shown worse than `worse_above` (after the
//! minimum sample for a rollback), `Pass` once it is shown within `safe_below` (after the minimum
//! sample per version), `Inconclusive` in between, which holds the step and never rolls back.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The metrics the judge tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    /// 5xx responses and upstream failures, per request.
    Errors,
    /// Requests slower than the tail threshold `x*`, per request.
    LatencyTail,
    /// Median latency (distribution band).
    LatencyP50,
    /// 90th-percentile latency (distribution band).
    LatencyP90,
    /// New users' split against the weight (a guard, never a rollback).
    SampleRatio,
}

impl Metric {
    /// The metrics that can roll a canary back.
    pub const ROLLBACK: [Metric; 4] = [Metric::Errors, Metric::LatencyTail, Metric::LatencyP50, Metric::LatencyP90];

    /// The metric's name as the API spells it.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Errors => "errors",
            Metric::LatencyTail => "latencyTail",
            Metric::LatencyP50 => "latencyP50",
            Metric::LatencyP90 => "latencyP90",
            Metric::SampleRatio => "sampleRatio",
        }
    }
}

/// The verdict on one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Enough data and no evidence that the canary is worse.
    Pass,
    /// Anytime-valid evidence that the canary is worse; sticky for the rollout.
    Worse,
    /// Not enough data, or the comparison itself is in doubt.
    Inconclusive,
}

/// Why a metric has its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Reason {
    /// The e-value (or the bands) crossed the threshold.
    EvidenceOfHarm,
    /// Shown within the metric's tolerance: its interval is below `safe_below`, or the canary's
    /// own rate is below stable's plus the absolute tolerance.
    ShownSafe,
    /// Fewer requests than the configured minimum on a version.
    NotEnoughData,
    /// Neither shown worse nor shown safe yet: the judge keeps collecting.
    NotYetShownSafe,
    /// New users do not split as the weight says.
    SampleRatioMismatch,
    /// New users split as the weight says (so far).
    SampleRatioConsistent,
}

/// An anytime-valid confidence interval for the metric's ratio (canary ÷ stable).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Interval {
    /// Lower end; `None` when unbounded (no information, or below the grid).
    pub lower: Option<f64>,
    /// Upper end; `None` when unbounded.
    pub upper: Option<f64>,
    /// Coverage, uniformly over time (`1 − α` of the metric).
    pub level: f64,
}

/// What one version contributed to a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Samples {
    /// Requests since the rollout started (new users for the sample-ratio guard).
    pub requests: u64,
    /// Events counted by the metric (errors, slow requests), if it counts events.
    pub events: Option<u64>,
}

/// The verdict on one metric with the numbers behind it, for the API, CLI and dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricVerdict {
    /// Which metric.
    pub metric: Metric,
    /// The verdict.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// Point estimate of canary ÷ stable: error rates, slow shares, quantiles, or new users
    /// over the number the weight predicts.
    pub estimate: Option<f64>,
    /// Anytime-valid interval for that ratio.
    pub interval: Interval,
    /// The e-value (evidence against "not worse"); `None` for the band tests.
    pub e_value: Option<f64>,
    /// The e-value at which the metric rejects, `1/α`.
    pub threshold: f64,
    /// The metric's share of the false-rollback budget.
    pub alpha: f64,
    /// What worse and safe mean for it (`None` for the sample-ratio guard).
    pub tolerance: Option<super::Tolerance>,
    /// Overdispersion factor the evidence was divided by (1 = independent requests).
    pub dispersion: f64,
    /// Canary's samples.
    pub canary: Samples,
    /// Stable's samples.
    pub stable: Samples,
}

/// What the controller should do with the current step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum StepDecision {
    /// A metric says worse: roll back.
    Rollback,
    /// The split of users does not match the weight: pause and ask a person; never a rollback.
    NeedsAttention,
    /// Hold passed, minimum samples in this step, every metric passes: go to the next step.
    Advance,
    /// Keep the current step: hold not over, not enough data, or a metric inconclusive.
    Hold,
}
