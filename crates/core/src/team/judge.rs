//! The judge of one rollout's team metrics: their evidence, their verdicts, and how they change
//! the built-in judge's step decision.
//!
//! Rules, the same as for the built-in metrics:
//! * a metric shown worse stays worse for the rollout and rolls back, unless it `observe`s;
//! * a step advances only when the built-in judge says so **and** every acting team metric is
//!   shown safe: a ratio shown below `safe_below` after `min_requests_per_version` trials on
//!   each version, a value within its margin after the step's hold;
//! * no data is neither: the metric is inconclusive and the step holds.

use serde::{Deserialize, Serialize};

use super::definition::{Plan, TeamMetric, TeamMetricKind};
use super::ratio::{CountTest, RatioEvidence};
use super::reading::Reading;
use super::{split_alpha, value};
use crate::judge::verdict::TeamDetail;
use crate::judge::{Interval, JudgeConfig, Metric, MetricVerdict, Reason, Samples, StepDecision, Tolerance, Verdict};
use crate::rollout::Analysis;

/// The settings team metrics are judged with, from the rollout's analysis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamSettings {
    /// Each ratio metric's α (its share of the rollout's, [`split_alpha`]).
    pub alpha: f64,
    /// Trials each version needs before a ratio metric may roll back.
    pub min_trials_for_rollback: u64,
    /// Trials each version needs before a ratio metric may pass.
    pub min_trials_per_version: u64,
    /// Scale of the count test's prior on `ln r`.
    pub prior_scale: f64,
    /// Burst windows for clustering in time (0: none).
    pub burst_windows: usize,
}

impl TeamSettings {
    /// The settings of a rollout with `analysis`: its minimums (counted in trials) and the
    /// built-in judge's prior and burst windows.
    pub fn of(analysis: &Analysis) -> TeamSettings {
        let defaults = JudgeConfig::default();
        let ratios = analysis.team().iter().filter(|m| m.kind == TeamMetricKind::Ratio).count();
        TeamSettings {
            alpha: split_alpha(analysis.alpha, ratios).1,
            min_trials_for_rollback: analysis.min_requests_for_rollback,
            min_trials_per_version: analysis.min_requests_per_version,
            prior_scale: defaults.prior_scale,
            burst_windows: if defaults.correct_dispersion { defaults.burst_windows } else { 0 },
        }
    }
}

/// A metric's evidence, with what it is judged against.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Evidence {
    /// The count test's state and the ratio's tolerance.
    #[serde(rename_all = "camelCase")]
    Ratio { tolerance: Tolerance, evidence: Box<RatioEvidence> },
    /// The latest `[canary, stable]` values read after the current step's hold, and the margin.
    #[serde(rename_all = "camelCase")]
    Value { margin: f64, latest: Option<[f64; 2]> },
}

/// One metric with its evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Judged {
    metric: TeamMetric,
    evidence: Evidence,
    /// Why the latest look had no data.
    no_data: Option<String>,
    /// The look at which it was first shown worse. Final, like the built-in metrics' rejection.
    worse_at: Option<u64>,
}

/// The team metrics of one rollout. Serializes whole (definitions, evidence, the step it is
/// in), so the controller saves it every tick and a restarted or new leader continues with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamJudge {
    settings: TeamSettings,
    metrics: Vec<Judged>,
    step: Option<usize>,
    hold_passed: bool,
    looks: u64,
}

impl TeamJudge {
    /// The judge of `analysis`'s team metrics, or why one of them cannot be judged.
    pub fn new(analysis: &Analysis) -> Result<TeamJudge, String> {
        let settings = TeamSettings::of(analysis);
        let metrics = analysis
            .team()
            .iter()
            .map(|metric| {
                let evidence = match metric.plan()? {
                    Plan::Ratio { tolerance, .. } => Evidence::Ratio {
                        tolerance,
                        evidence: Box::new(RatioEvidence::new(settings.prior_scale, settings.burst_windows)),
                    },
                    Plan::Value { margin, .. } => Evidence::Value { margin, latest: None },
                };
                Ok(Judged { metric: metric.clone(), evidence, no_data: None, worse_at: None })
            })
            .collect::<Result<_, String>>()?;
        Ok(TeamJudge { settings, metrics, step: None, hold_passed: false, looks: 0 })
    }

    /// Whether there is nothing to judge.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// The metrics, in the order [`TeamJudge::observe`] takes their readings.
    pub fn metrics(&self) -> impl Iterator<Item = &TeamMetric> {
        self.metrics.iter().map(|judged| &judged.metric)
    }

    /// The settings.
    pub fn settings(&self) -> TeamSettings {
        self.settings
    }

    /// One look: the step in force, whether its hold has passed, and one reading per metric
    /// (a missing one is no data). A new step starts the value metrics' comparison over.
    pub fn observe(&mut self, step: usize, hold_passed: bool, readings: Vec<Reading>) {
        if self.step != Some(step) {
            self.step = Some(step);
            for judged in &mut self.metrics {
                if let Evidence::Value { latest, .. } = &mut judged.evidence {
                    *latest = None;
                }
            }
        }
        self.hold_passed = hold_passed;
        self.looks += 1;
        let mut readings = readings.into_iter();
        for judged in &mut self.metrics {
            let reading = readings.next().unwrap_or_else(|| Reading::NoData("not read".into()));
            judged.observe(reading, &self.settings, hold_passed, self.looks);
        }
    }

    /// The name of the first acting metric shown worse, if any. Cheap: use it every tick.
    pub fn rollback_reason(&self) -> Option<&str> {
        self.metrics
            .iter()
            .filter(|judged| !judged.metric.observe)
            .filter_map(|judged| Some((judged.worse_at?, judged.metric.name())))
            .min_by_key(|(at, _)| *at)
            .map(|(_, name)| name)
    }

    /// The built-in judge's `decision` with the team metrics taken in: a team metric shown
    /// worse rolls back; an advance waits until every acting team metric is shown safe.
    pub fn decide(&self, decision: StepDecision) -> StepDecision {
        if decision == StepDecision::Rollback || self.rollback_reason().is_some() {
            return StepDecision::Rollback;
        }
        let all_safe = self
            .metrics
            .iter()
            .filter(|judged| !judged.metric.observe)
            .all(|judged| judged.shown_safe(&self.settings, self.hold_passed));
        match decision {
            StepDecision::Advance if !all_safe => StepDecision::Hold,
            other => other,
        }
    }

    /// Every team metric's verdict, in definition order.
    pub fn verdicts(&self) -> Vec<MetricVerdict> {
        self.metrics.iter().map(|judged| judged.verdict(&self.settings, self.hold_passed)).collect()
    }
}

impl Judged {
    fn count_test(&self, settings: &TeamSettings) -> Option<CountTest> {
        match &self.evidence {
            Evidence::Ratio { tolerance, .. } => Some(CountTest { alpha: settings.alpha, tolerance: *tolerance }),
            Evidence::Value { .. } => None,
        }
    }

    fn margin(&self) -> Option<f64> {
        match &self.evidence {
            Evidence::Value { margin, .. } => Some(*margin),
            Evidence::Ratio { .. } => None,
        }
    }

    fn observe(&mut self, reading: Reading, settings: &TeamSettings, hold_passed: bool, look: u64) {
        self.no_data = None;
        match (&mut self.evidence, reading) {
            (_, Reading::NoData(why)) => self.no_data = Some(why),
            (Evidence::Ratio { evidence, .. }, Reading::Counts { canary, stable }) => {
                evidence.observe(canary, stable, self.metric.direction);
            }
            (Evidence::Value { latest, .. }, Reading::Values { canary, stable }) => {
                if hold_passed {
                    *latest = Some([canary, stable]);
                }
            }
            _ => self.no_data = Some("the reading does not fit the metric's kind".into()),
        }
        if self.worse_at.is_none() && self.shown_worse(settings, hold_passed) {
            self.worse_at = Some(look);
        }
    }

    /// The latest values, when the metric is a value metric with a reading after the hold.
    fn latest(&self, hold_passed: bool) -> Option<[f64; 2]> {
        match &self.evidence {
            Evidence::Value { latest, .. } if hold_passed && self.no_data.is_none() => *latest,
            _ => None,
        }
    }

    fn shown_worse(&self, settings: &TeamSettings, hold_passed: bool) -> bool {
        match (&self.evidence, self.count_test(settings)) {
            (Evidence::Ratio { evidence, .. }, Some(test)) => {
                evidence.has_trials(settings.min_trials_for_rollback) && evidence.shown_worse(&test)
            }
            _ => self.beyond_margin(hold_passed) == Some(true),
        }
    }

    fn beyond_margin(&self, hold_passed: bool) -> Option<bool> {
        let [canary, stable] = self.latest(hold_passed)?;
        Some(value::beyond_margin(canary, stable, self.metric.direction, self.margin()?))
    }

    fn shown_safe(&self, settings: &TeamSettings, hold_passed: bool) -> bool {
        if self.no_data.is_some() || self.worse_at.is_some() {
            return false;
        }
        match (&self.evidence, self.count_test(settings)) {
            (Evidence::Ratio { evidence, .. }, Some(test)) => {
                evidence.has_trials(settings.min_trials_per_version) && evidence.shown_safe(&test)
            }
            _ => self.beyond_margin(hold_passed) == Some(false),
        }
    }

    fn verdict(&self, settings: &TeamSettings, hold_passed: bool) -> MetricVerdict {
        match (&self.evidence, self.count_test(settings)) {
            (Evidence::Ratio { evidence, .. }, Some(test)) => self.ratio_verdict(evidence, &test, settings),
            _ => self.value_verdict(hold_passed),
        }
    }

    /// The verdict's and reason before the metric's own numbers: worse, no data, or `rest`.
    fn verdict_and_reason(&self, worse: Reason, rest: impl FnOnce() -> (Verdict, Reason)) -> (Verdict, Reason) {
        if self.worse_at.is_some() {
            (Verdict::Worse, worse)
        } else if self.no_data.is_some() {
            (Verdict::Inconclusive, Reason::NoData)
        } else {
            rest()
        }
    }

    fn detail(&self, latest: Option<[f64; 2]>) -> TeamDetail {
        TeamDetail {
            name: self.metric.name().to_owned(),
            kind: self.metric.kind,
            direction: self.metric.direction,
            observe: self.metric.observe,
            margin: self.margin(),
            canary_value: latest.map(|[canary, _]| canary),
            stable_value: latest.map(|[_, stable]| stable),
            no_data: self.no_data.clone(),
        }
    }

    fn ratio_verdict(&self, evidence: &RatioEvidence, test: &CountTest, settings: &TeamSettings) -> MetricVerdict {
        let numbers = evidence.numbers(test);
        let (verdict, reason) = self.verdict_and_reason(Reason::EvidenceOfHarm, || {
            if !evidence.has_trials(settings.min_trials_per_version) {
                (Verdict::Inconclusive, Reason::NotEnoughData)
            } else if evidence.shown_safe(test) {
                (Verdict::Pass, Reason::ShownSafe)
            } else {
                (Verdict::Inconclusive, Reason::NotYetShownSafe)
            }
        });
        MetricVerdict {
            metric: Metric::Team,
            verdict,
            reason,
            estimate: numbers.estimate,
            interval: Interval {
                lower: numbers.interval.lower,
                upper: numbers.interval.upper,
                level: 1.0 - 2.0 * test.alpha,
            },
            e_value: Some(numbers.e_value),
            threshold: 1.0 / test.alpha,
            alpha: test.alpha,
            tolerance: Some(test.tolerance),
            dispersion: numbers.dispersion,
            canary: numbers.canary,
            stable: numbers.stable,
            team: Some(self.detail(None)),
        }
    }

    fn value_verdict(&self, hold_passed: bool) -> MetricVerdict {
        let latest = self.latest(hold_passed);
        let (verdict, reason) =
            self.verdict_and_reason(Reason::BeyondMargin, || match self.beyond_margin(hold_passed) {
                Some(false) => (Verdict::Pass, Reason::WithinMargin),
                Some(true) => (Verdict::Worse, Reason::BeyondMargin),
                None => (Verdict::Inconclusive, Reason::AfterHold),
            });
        let no_samples = Samples { requests: 0, events: None };
        MetricVerdict {
            metric: Metric::Team,
            verdict,
            reason,
            estimate: latest.and_then(|[canary, stable]| (stable != 0.0).then(|| canary / stable)),
            interval: Interval { lower: None, upper: None, level: 0.0 },
            e_value: None,
            threshold: 0.0,
            alpha: 0.0,
            tolerance: None,
            dispersion: 1.0,
            canary: no_samples,
            stable: no_samples,
            team: Some(self.detail(latest)),
        }
    }
}

#[cfg(test)]
mod tests;
