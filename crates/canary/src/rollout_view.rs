//! A rollout as a person reads it: the client's view of `GET /api/v1/services/{name}/rollout`
//! and its rendering as text lines, which `status`, `list` and the live display
//! ([`crate::live_view`]) all draw from.
//!
//! `canary rollout status --watch` and `canary demo` draw the same lines from the same JSON,
//! so the demo shows exactly what an operator watching a real rollout sees. The types here are
//! lenient on purpose (no `deny_unknown_fields`): a newer server may add fields without
//! breaking an older CLI.

use serde::Deserialize;

/// One version of a rollout.
#[derive(Debug, Clone, Deserialize)]
pub struct VersionInfo {
    /// The version's name.
    pub version: String,
}

/// One step of the plan.
#[derive(Debug, Clone, Deserialize)]
pub struct StepInfo {
    /// Canary weight in percent.
    pub weight: f64,
    /// Minimum hold, written like `30s`.
    pub hold: String,
}

/// A rollout record (from `history`) or the active rollout's view (from `status`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Unique id.
    pub id: String,
    /// The service.
    pub service: String,
    /// Stable when the rollout started.
    pub stable: VersionInfo,
    /// The canary.
    pub canary: VersionInfo,
    /// The plan.
    pub steps: Vec<StepInfo>,
    /// `pending`, `progressing`, `paused`, `promoted`, `aborted` or `failed`.
    pub phase: String,
    /// Index of the current step.
    pub step: usize,
    /// Why it paused or ended.
    #[serde(default)]
    pub reason: Option<String>,
    /// Unix ms of creation.
    pub created_ms: u64,
    /// Unix ms of the last transition.
    pub updated_ms: u64,
    /// Canary weight now, in percent (views only).
    #[serde(default)]
    pub weight: Option<f64>,
    /// Hold time spent in the current step (views only).
    #[serde(default)]
    pub held_seconds: Option<f64>,
    /// Hold time the current step needs (views only).
    #[serde(default)]
    pub hold_seconds: Option<f64>,
    /// The judge's latest look, while the rollout is active.
    #[serde(default)]
    pub judge: Option<JudgeInfo>,
}

/// What the judge said at its latest tick.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeInfo {
    /// `advance`, `hold`, `rollback` or `needsAttention`.
    pub decision: String,
    /// One verdict per metric.
    pub verdicts: Vec<VerdictInfo>,
    /// Share of the rollout's requests the canary served, in percent.
    #[serde(default)]
    pub observed_canary_share: Option<f64>,
    /// Latency above which a request counts as slow, in seconds.
    #[serde(default)]
    pub tail_threshold_seconds: Option<f64>,
}

/// The verdict on one metric.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerdictInfo {
    /// `errors`, `latencyTail`, `latencyP50`, `latencyP90` or `sampleRatio`.
    pub metric: String,
    /// `pass`, `worse` or `inconclusive`.
    pub verdict: String,
    /// Why, as the judge names it.
    pub reason: String,
    /// Canary ÷ stable.
    #[serde(default)]
    pub estimate: Option<f64>,
    /// Anytime-valid interval for the ratio.
    pub interval: IntervalInfo,
    /// Evidence against "not worse".
    #[serde(default)]
    pub e_value: Option<f64>,
    /// The e-value at which the metric rejects.
    pub threshold: f64,
    /// Canary's samples.
    pub canary: SamplesInfo,
    /// Stable's samples.
    pub stable: SamplesInfo,
}

/// An interval for a ratio; `None` ends are unbounded.
#[derive(Debug, Clone, Deserialize)]
pub struct IntervalInfo {
    /// Lower end.
    #[serde(default)]
    pub lower: Option<f64>,
    /// Upper end.
    #[serde(default)]
    pub upper: Option<f64>,
    /// Coverage.
    pub level: f64,
}

/// What one version contributed to a metric.
#[derive(Debug, Clone, Deserialize)]
pub struct SamplesInfo {
    /// Requests (new users for the user split).
    pub requests: u64,
    /// Events counted, for counting metrics.
    #[serde(default)]
    pub events: Option<u64>,
}

impl RolloutStatus {
    /// Whether the rollout is over.
    pub fn is_over(&self) -> bool {
        matches!(self.phase.as_str(), "promoted" | "aborted" | "failed")
    }

    /// `web: v1 → v2 (rollout web-18c…) progressing`.
    pub fn headline(&self) -> String {
        let phase = match self.phase.as_str() {
            "failed" => "rolled back",
            other => other,
        };
        format!("{}: {} → {} (rollout {}) {phase}", self.service, self.stable.version, self.canary.version, self.id)
    }

    /// `step 3 of 5 at 25%, held 3.2s of 5s, canary served 24.1% of requests`.
    pub fn step_line(&self) -> String {
        let total = self.steps.len();
        let weight = self.weight.unwrap_or_else(|| self.steps.get(self.step).map_or(0.0, |s| s.weight));
        let mut line = if self.is_over() {
            format!("stopped at step {} of {total}; canary weight now {}", self.step + 1, percent(weight))
        } else {
            format!("step {} of {total} at {}", self.step + 1, percent(weight))
        };
        if let (Some(held), Some(hold), false) = (self.held_seconds, self.hold_seconds, self.is_over())
            && hold > 0.0
        {
            line.push_str(&format!(", held {held:.1}s of {hold:.0}s"));
        }
        if let Some(share) = self.judge.as_ref().and_then(|j| j.observed_canary_share) {
            line.push_str(&format!(", canary served {share:.1}% of requests"));
        }
        if let Some(judge) = &self.judge {
            line.push_str(&format!(", judge: {}", decision_words(&judge.decision)));
        }
        line
    }

    /// The plan with the current step marked: `1%/5s ✓ → 5%/5s ✓ → [25%/5s] → 50%/5s → 100%`.
    pub fn plan_line(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let text = if s.hold == "0s" { percent(s.weight) } else { format!("{}/{}", percent(s.weight), s.hold) };
                if i == self.step && !self.is_over() {
                    format!("[{text}]")
                } else if i < self.step || (self.phase == "promoted" && i <= self.step) {
                    format!("{text} ✓")
                } else {
                    text
                }
            })
            .collect();
        format!("plan: {}", steps.join(" → "))
    }

    /// One sentence per metric the judge tests.
    pub fn verdict_lines(&self) -> Vec<String> {
        let Some(judge) = &self.judge else { return Vec::new() };
        judge.verdicts.iter().map(|v| v.sentence(judge.tail_threshold_seconds)).collect()
    }

    /// How it ended, for a finished rollout: `promoted: …`, `rolled back: …`, `aborted: …`.
    pub fn outcome_line(&self) -> Option<String> {
        let why = self.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        match self.phase.as_str() {
            "promoted" => Some(format!("promoted: {} is the new stable{why}", self.canary.version)),
            "failed" => Some(format!("rolled back automatically{why}")),
            "aborted" => Some(format!("aborted{why}")),
            "paused" => Some(format!("paused{why}")),
            _ => None,
        }
    }

    /// The judge's latest word in a few words, or how the rollout ended:
    /// `advance: every metric ok`, `hold: not yet known: p90 latency`, `roll back: WORSE: error rate`,
    /// `rolled back: …`.
    pub fn judge_words(&self) -> String {
        let Some(judge) = self.judge.as_ref().filter(|_| !self.is_over()) else {
            return match self.phase.as_str() {
                "promoted" => "promoted".to_owned(),
                "failed" => {
                    format!("rolled back{}", self.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())
                }
                _ => self.outcome_line().unwrap_or_else(|| "judge has not looked yet".to_owned()),
            };
        };
        let names = |verdict: &str| {
            let names: Vec<String> = judge
                .verdicts
                .iter()
                .filter(|v| v.verdict == verdict)
                .map(|v| v.metric_name(judge.tail_threshold_seconds))
                .collect();
            (!names.is_empty()).then(|| names.join(", "))
        };
        let detail = match (names("worse"), names("inconclusive")) {
            (Some(worse), _) => format!("WORSE: {worse}"),
            (None, Some(unknown)) => format!("not yet known: {unknown}"),
            (None, None) => "every metric ok".to_owned(),
        };
        format!("{}: {detail}", decision_words(&judge.decision))
    }

    /// Everything, as plain lines.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![self.headline(), self.plan_line(), self.step_line()];
        out.extend(self.verdict_lines().into_iter().map(|l| format!("  {l}")));
        out.extend(self.outcome_line());
        out
    }
}

impl VerdictInfo {
    /// `error rate`, `share > 12.0ms` (or `slow share`), `median latency`, `p90 latency`, `user split`.
    pub fn metric_name(&self, tail_threshold_seconds: Option<f64>) -> String {
        match self.metric.as_str() {
            "errors" => "error rate".to_owned(),
            "latencyTail" => match tail_threshold_seconds {
                Some(t) => format!("share > {}", seconds(t)),
                None => "slow share".to_owned(),
            },
            "latencyP50" => "median latency".to_owned(),
            "latencyP90" => "p90 latency".to_owned(),
            "sampleRatio" => "user split".to_owned(),
            other => other.to_owned(),
        }
    }

    /// `error rate      ok             canary 1.05× stable (98% interval 0.42×–2.6×), evidence 0.7 of 50`.
    pub fn sentence(&self, tail_threshold_seconds: Option<f64>) -> String {
        let what = self.metric_name(tail_threshold_seconds);
        let verdict = match self.verdict.as_str() {
            "pass" => "ok",
            "worse" => "WORSE",
            "inconclusive" => "not yet known",
            other => other,
        };
        let why = match self.reason.as_str() {
            "notEnoughData" => {
                format!("needs more data (canary {} / stable {} requests)", self.canary.requests, self.stable.requests)
            }
            "evidenceOfHarm" => "evidence the canary is worse".to_owned(),
            "shownSafe" => "shown within its tolerance".to_owned(),
            "notYetShownSafe" => "not yet shown within its tolerance; collecting".to_owned(),
            "sampleRatioMismatch" => "users do not split as the weight says".to_owned(),
            "sampleRatioConsistent" => "users split as the weight says".to_owned(),
            other => other.to_owned(),
        };
        let subject = if self.metric == "sampleRatio" { "canary users" } else { "canary" };
        let against = if self.metric == "sampleRatio" { "the weight predicts" } else { "stable" };
        let mut numbers = match self.estimate {
            Some(e) => format!("{subject} {}× {against}", ratio(e)),
            None => String::new(),
        };
        let level = format!("{:.0}%", 100.0 * self.interval.level);
        let interval = match (self.interval.lower, self.interval.upper) {
            (Some(l), Some(u)) => Some(format!("{level} interval {}×–{}×", ratio(l), ratio(u))),
            (Some(l), None) => Some(format!("{level} interval at least {}×", ratio(l))),
            (None, Some(u)) => Some(format!("{level} interval at most {}×", ratio(u))),
            (None, None) => None,
        };
        if let Some(interval) = interval {
            numbers.push_str(&if numbers.is_empty() { interval } else { format!(" ({interval})") });
        }
        if let (Some(c), Some(s)) = (self.canary.events, self.stable.events) {
            let sep = if numbers.is_empty() { "" } else { ", " };
            numbers
                .push_str(&format!("{sep}{c}/{} canary vs {s}/{} stable", self.canary.requests, self.stable.requests));
        }
        if let Some(e) = self.e_value {
            // The user split only pauses a rollout for a person; it never rolls back.
            let action = if self.metric == "sampleRatio" { "pause" } else { "roll back" };
            let sep = if numbers.is_empty() { "" } else { ", " };
            numbers.push_str(&format!("{sep}evidence {} of {} to {action}", evidence(e), evidence(self.threshold)));
        }
        let sep = if numbers.is_empty() { "" } else { "; " };
        format!("{what:<15} {verdict:<14} {why}{sep}{numbers}")
    }
}

fn decision_words(decision: &str) -> &str {
    match decision {
        "advance" => "advance",
        "hold" => "hold",
        "rollback" => "roll back",
        "needsAttention" => "needs a person",
        other => other,
    }
}

/// `25%`, `0.5%`, `12.25%`.
pub fn percent(weight: f64) -> String {
    let text = format!("{weight:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn ratio(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn evidence(e: f64) -> String {
    if e >= 1e6 {
        format!("{e:.1e}")
    } else if e >= 10.0 {
        format!("{e:.0}")
    } else {
        format!("{e:.2}")
    }
}

fn seconds(s: f64) -> String {
    if s < 1.0 { format!("{:.1}ms", s * 1000.0) } else { format!("{s:.2}s") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> RolloutStatus {
        serde_json::from_value(serde_json::json!({
            "id": "web-1", "service": "web",
            "stable": {"version": "v1", "upstreams": ["127.0.0.1:1"]},
            "canary": {"version": "v2", "upstreams": ["127.0.0.1:2"]},
            "steps": [{"weight": 1.0, "hold": "5s"}, {"weight": 25.0, "hold": "5s"}, {"weight": 100.0, "hold": "0s"}],
            "phase": "progressing", "step": 1, "createdMs": 0, "updatedMs": 0, "somethingNew": true,
            "weight": 25.0, "heldSeconds": 2.5, "holdSeconds": 5.0,
            "judge": {
                "decision": "rollback", "observedCanaryShare": 24.3, "tailThresholdSeconds": 0.01,
                "verdicts": [{
                    "metric": "errors", "verdict": "worse", "reason": "evidenceOfHarm", "estimate": 6.1,
                    "interval": {"lower": 2.3, "upper": 15.2, "level": 0.98}, "eValue": 230.0, "threshold": 50.0,
                    "canary": {"requests": 400, "events": 24}, "stable": {"requests": 4000, "events": 40}
                }, {
                    "metric": "latencyP50", "verdict": "inconclusive", "reason": "notEnoughData", "estimate": null,
                    "interval": {"lower": null, "upper": null, "level": 0.9925}, "eValue": null, "threshold": 133.3,
                    "canary": {"requests": 40}, "stable": {"requests": 4000}
                }]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_view_reads_as_sentences() {
        let v = view();
        assert_eq!(v.headline(), "web: v1 → v2 (rollout web-1) progressing");
        assert_eq!(v.plan_line(), "plan: 1%/5s ✓ → [25%/5s] → 100%");
        assert_eq!(
            v.step_line(),
            "step 2 of 3 at 25%, held 2.5s of 5s, canary served 24.3% of requests, judge: roll back"
        );
        let lines = v.verdict_lines();
        assert_eq!(
            lines[0],
            "error rate      WORSE          evidence the canary is worse; canary 6.10× stable \
             (98% interval 2.30×–15.2×), 24/400 canary vs 40/4000 stable, evidence 230 of 50 to roll back"
        );
        assert_eq!(lines[1], "median latency  not yet known  needs more data (canary 40 / stable 4000 requests)");
        assert_eq!(v.judge_words(), "roll back: WORSE: error rate");
    }

    #[test]
    fn the_judge_in_a_few_words() {
        let mut v = view();
        let judge = v.judge.as_mut().unwrap();
        judge.decision = "hold".into();
        judge.verdicts[0].verdict = "pass".into();
        assert_eq!(v.judge_words(), "hold: not yet known: median latency");
        v.judge.as_mut().unwrap().verdicts[1].verdict = "pass".into();
        v.judge.as_mut().unwrap().decision = "advance".into();
        assert_eq!(v.judge_words(), "advance: every metric ok");
        v.judge = None;
        assert_eq!(v.judge_words(), "judge has not looked yet");
        v.phase = "aborted".into();
        v.reason = Some("wrong build".into());
        assert_eq!(v.judge_words(), "aborted: wrong build");
        v.phase = "failed".into();
        v.reason = Some("canary error rate 6.1× stable's".into());
        assert_eq!(v.judge_words(), "rolled back: canary error rate 6.1× stable's");
    }

    #[test]
    fn a_finished_rollout_says_how_it_ended() {
        let mut v = view();
        v.phase = "failed".into();
        v.reason = Some("canary error rate 6.1× stable's".into());
        assert!(v.is_over());
        assert_eq!(v.outcome_line().unwrap(), "rolled back automatically: canary error rate 6.1× stable's");
        assert!(v.headline().ends_with("rolled back"));
        assert_eq!(percent(12.5), "12.5%");
        assert_eq!(percent(100.0), "100%");
    }
}
