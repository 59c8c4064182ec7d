//! One rollout's result: a JSON line of the results file, and where it is written.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use canary_core::judge::Metric;
use canary_core::policy::metric_words;
use serde::{Deserialize, Serialize};

use crate::admin::{JudgeView, RolloutView};

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The canary became stable.
    Promoted,
    /// Rolled back by the judge or a breaker.
    Failed,
    /// Paused (by the sample-ratio guard, or undecided too long); the harness aborted it.
    Paused,
    /// Aborted by someone else.
    Aborted,
    /// Still running when the harness's time ran out; the harness aborted it.
    Unfinished,
}

impl Outcome {
    /// The outcome of a rollout in `phase`, if the phase ends the harness's wait.
    pub fn of_phase(phase: &str) -> Option<Outcome> {
        match phase {
            "promoted" => Some(Outcome::Promoted),
            "failed" => Some(Outcome::Failed),
            "paused" => Some(Outcome::Paused),
            "aborted" => Some(Outcome::Aborted),
            _ => None,
        }
    }
}

/// One line of the results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The scenario.
    pub scenario: String,
    /// The service.
    pub service: String,
    /// The rollout id.
    pub rollout: String,
    /// The canary's version.
    pub version: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, in the controller's words.
    pub reason: Option<String>,
    /// Seconds from the start to the outcome.
    pub seconds: f64,
    /// The plan's step (1-based) the rollout was in when it ended.
    pub step: usize,
    /// Canary requests the judge had counted at its last look before the outcome.
    pub canary_requests: Option<u64>,
    /// Stable requests the judge had counted at its last look before the outcome.
    pub stable_requests: Option<u64>,
    /// Canary errors at that look.
    #[serde(default)]
    pub canary_errors: Option<u64>,
    /// Stable errors at that look.
    #[serde(default)]
    pub stable_errors: Option<u64>,
    /// The error test's e-value at that look.
    #[serde(default)]
    pub errors_e_value: Option<f64>,
    /// The error test's dispersion factor at that look.
    #[serde(default)]
    pub errors_dispersion: Option<f64>,
    /// Users first seen in the rollout on the canary, at that look (the sample-ratio guard's).
    #[serde(default)]
    pub canary_new_users: Option<u64>,
    /// Users first seen in the rollout on stable, at that look.
    #[serde(default)]
    pub stable_new_users: Option<u64>,
    /// The canary's share of the rollout's requests at that look, in percent.
    pub observed_canary_share: Option<f64>,
    /// The latency the judge counted as slow, in seconds.
    #[serde(default)]
    pub tail_threshold_seconds: Option<f64>,
    /// Whether the error test used the canary cohort's own history, at that look.
    #[serde(default)]
    pub cohort_baseline: Option<bool>,
    /// The metric that rolled it back (`errors`, `latencyTail`, …, or `breaker`).
    pub failing_metric: Option<String>,
    /// The rollback metrics the judge's last look had not shown safe (what held a paused step).
    #[serde(default)]
    pub not_shown_safe: Vec<String>,
    /// The plan.
    pub plan: String,
    /// Requests per second per service.
    pub rps: f64,
    /// Users per cohort.
    pub users: usize,
}

/// What a rollout's run leaves to record besides the run's settings.
#[derive(Debug, Clone)]
pub struct Ending {
    /// The rollout's last view (the paused one for a pause).
    pub view: RolloutView,
    /// The judge's last look while it ran.
    pub judge: Option<JudgeView>,
    /// How it ended.
    pub outcome: Outcome,
}

/// The judge's last look in numbers: the error verdict's requests and errors per version,
/// evidence and dispersion, and the sample-ratio guard's new users.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LastLook {
    /// Canary requests.
    pub canary_requests: Option<u64>,
    /// Stable requests.
    pub stable_requests: Option<u64>,
    /// Canary errors.
    pub canary_errors: Option<u64>,
    /// Stable errors.
    pub stable_errors: Option<u64>,
    /// The e-value.
    pub e_value: Option<f64>,
    /// The dispersion factor.
    pub dispersion: Option<f64>,
    /// New users on the canary.
    pub canary_new_users: Option<u64>,
    /// New users on stable.
    pub stable_new_users: Option<u64>,
}

impl LastLook {
    /// The error verdict's numbers in `judge`, if it has one.
    pub fn of(judge: Option<&JudgeView>) -> LastLook {
        let verdict = |metric: &str| judge.and_then(|j| j.verdicts.iter().find(|v| v.metric == metric));
        let split = verdict("sampleRatio");
        let (canary_new_users, stable_new_users) = (split.map(|v| v.canary.requests), split.map(|v| v.stable.requests));
        let Some(v) = verdict("errors") else {
            return LastLook { canary_new_users, stable_new_users, ..LastLook::default() };
        };
        LastLook {
            canary_new_users,
            stable_new_users,
            canary_requests: Some(v.canary.requests),
            stable_requests: Some(v.stable.requests),
            canary_errors: v.canary.events,
            stable_errors: v.stable.events,
            e_value: v.e_value,
            dispersion: v.dispersion,
        }
    }
}

/// The metric that failed a rollout: named in the controller's reason (`canary error rate …`,
/// `local breaker tripped: …`), else the one the judge's last look called worse.
pub fn failing_metric(reason: Option<&str>, judge: Option<&JudgeView>) -> Option<String> {
    let reason = reason.unwrap_or("");
    if reason.starts_with("local breaker tripped") {
        return Some("breaker".into());
    }
    let named = Metric::ROLLBACK.into_iter().find(|m| reason.starts_with(&format!("canary {}", metric_words(*m))));
    if let Some(metric) = named {
        return serde_json::to_value(metric).ok().and_then(|v| v.as_str().map(str::to_owned));
    }
    judge.and_then(|j| j.verdicts.iter().find(|v| v.verdict == "worse")).map(|v| v.metric.clone())
}

/// The rollback metrics whose verdict at the judge's last look was not a pass.
pub fn not_shown_safe(judge: Option<&JudgeView>) -> Vec<String> {
    let verdicts = judge.map_or(&[][..], |j| j.verdicts.as_slice());
    verdicts.iter().filter(|v| v.metric != "sampleRatio" && v.verdict != "pass").map(|v| v.metric.clone()).collect()
}

/// Where records go: kept for the summary, and appended to a file if asked.
#[derive(Debug)]
pub struct Sink {
    file: Option<(PathBuf, Mutex<std::fs::File>)>,
    records: Mutex<Vec<Record>>,
}

impl Sink {
    /// A sink that also appends to `path`.
    pub fn open(path: Option<&Path>) -> anyhow::Result<Sink> {
        let file = match path {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {} to append results", path.display()))?;
                Some((path.to_owned(), Mutex::new(file)))
            }
            None => None,
        };
        Ok(Sink { file, records: Mutex::default() })
    }

    /// Keeps `record` and writes its line.
    pub fn push(&self, record: Record) -> anyhow::Result<()> {
        if let Some((path, file)) = &self.file {
            let line = serde_json::to_string(&record)?;
            writeln!(file.lock().expect("results file"), "{line}")
                .with_context(|| format!("cannot write to {}", path.display()))?;
        }
        self.records.lock().expect("records").push(record);
        Ok(())
    }

    /// Every record so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().expect("records").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{SamplesView, VerdictView};

    fn judge(worse: &str) -> JudgeView {
        let verdict = |metric: &str| VerdictView {
            metric: metric.into(),
            verdict: if metric == worse { "worse" } else { "pass" }.into(),
            e_value: Some(3.5),
            dispersion: Some(1.2),
            canary: SamplesView { requests: 120, events: Some(4) },
            stable: SamplesView { requests: 2300, events: Some(30) },
        };
        let verdicts = vec![verdict("errors"), verdict("latencyTail"), verdict("sampleRatio")];
        JudgeView {
            verdicts,
            observed_canary_share: Some(5.0),
            tail_threshold_seconds: Some(0.01),
            cohort_baseline: None,
        }
    }

    #[test]
    fn the_failing_metric_comes_from_the_controllers_words() {
        let reason = "canary share of slow requests 3.10% (12/387) against stable's 1.00% (40/4000), 3.1× …";
        assert_eq!(failing_metric(Some(reason), None).as_deref(), Some("latencyTail"));
        let reason = "canary error rate 5.00% (20/400) against stable's 1.00% (40/4000)";
        assert_eq!(failing_metric(Some(reason), None).as_deref(), Some("errors"));
        let reason = "local breaker tripped: error ratio 0.40 over 10s";
        assert_eq!(failing_metric(Some(reason), None).as_deref(), Some("breaker"));
    }

    #[test]
    fn without_words_the_judges_last_look_names_it() {
        let reason = Some("the judge found the canary worse than stable");
        assert_eq!(failing_metric(reason, Some(&judge("latencyTail"))).as_deref(), Some("latencyTail"));
        assert_eq!(failing_metric(reason, Some(&judge("none"))), None);
    }

    #[test]
    fn counts_come_from_the_error_verdict() {
        let counts = LastLook::of(Some(&judge("none")));
        assert_eq!((counts.canary_requests, counts.stable_requests), (Some(120), Some(2300)));
        assert_eq!((counts.canary_errors, counts.stable_errors), (Some(4), Some(30)));
        assert_eq!((counts.e_value, counts.dispersion), (Some(3.5), Some(1.2)));
        assert_eq!((counts.canary_new_users, counts.stable_new_users), (Some(120), Some(2300)));
        assert_eq!(LastLook::of(None), LastLook::default());
    }
}
