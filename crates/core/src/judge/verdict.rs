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
    /// One of the team's own metrics, named in [`MetricVerdict::team`] ([`crate::team`]).
    Team,
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
            Metric::Team => "team",
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
    /// A team metric's query returned nothing this tick (an empty answer, `NaN`, Prometheus
    /// unreachable): it holds the step, never rolls back.
    NoData,
    /// A team value metric is judged once the step's hold has passed.
    AfterHold,
    /// A team value metric's canary value is within its margin of stable's.
    WithinMargin,
    /// A team value metric's canary value is worse than stable's by more than its margin.
    BeyondMargin,
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
    /// For a team metric: its name and what its verdict rests on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamDetail>,
}

impl MetricVerdict {
    /// The metric's name: a team metric's own, else the built-in's as the API spells it.
    pub fn name(&self) -> &str {
        self.team.as_ref().map_or(self.metric.name(), |team| team.name.as_str())
    }
}

/// What a team metric's verdict carries beside the fields every metric has. A ratio metric's
/// samples are its trials and counted events; a value metric has its latest values instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamDetail {
    /// The metric's name.
    pub name: String,
    /// `ratio` or `value`.
    pub kind: crate::team::TeamMetricKind,
    /// Which way is better.
    pub direction: crate::team::Direction,
    /// Dry run: shown, never rolls back, never holds a step.
    pub observe: bool,
    /// A value metric's relative margin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// A value metric's latest canary value read after the hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_value: Option<f64>,
    /// A value metric's latest stable value read after the hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_value: Option<f64>,
    /// Why the latest look had no data, when it had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<String>,
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
