//! A gate run as the API, the CLI and the dashboard show it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::config::{GateKind, GateWhen};
use super::junit::JunitSummary;

/// Where a gate run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum GateStatus {
    /// Still running.
    Running,
    /// Every shard passed.
    Passed,
    /// A shard or the check failed, or it timed out.
    Failed,
}

/// Where one shard stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum ShardStatus {
    /// Its process runs.
    Running,
    /// It exited 0.
    Passed,
    /// It exited otherwise.
    Failed,
    /// It ran past the gate's timeout and was killed.
    TimedOut,
}

/// One shard of a command gate (an http gate has one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardView {
    /// Its number, from 1.
    pub shard: u32,
    /// Where it stands.
    pub status: ShardStatus,
    /// The exit code (or the HTTP status of an http gate).
    pub code: Option<i32>,
    /// Seconds it ran, once it ended.
    pub seconds: Option<f64>,
}

/// One run of one gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateView {
    /// The gate's name.
    pub name: String,
    /// Its kind.
    pub kind: GateKind,
    /// When it runs.
    pub when: GateWhen,
    /// The rollout's step index it ran at.
    pub step: usize,
    /// Where it stands.
    pub status: GateStatus,
    /// Unix ms of its start.
    pub started_ms: u64,
    /// Unix ms of its end.
    pub finished_ms: Option<u64>,
    /// Its shards.
    pub shards: Vec<ShardView>,
    /// The merged JUnit reports of its shards, when they wrote some.
    pub report: Option<JunitSummary>,
    /// Why it failed, in words.
    pub message: Option<String>,
    /// The last lines of its output.
    pub output_tail: Option<String>,
    /// The file that holds its whole output.
    pub output_file: Option<String>,
}

impl GateView {
    /// A run of `shards` shards that starts at `now_ms`.
    pub fn start(name: &str, kind: GateKind, when: GateWhen, step: usize, shards: u32, now_ms: u64) -> GateView {
        GateView {
            name: name.to_owned(),
            kind,
            when,
            step,
            status: GateStatus::Running,
            started_ms: now_ms,
            finished_ms: None,
            shards: (1..=shards)
                .map(|shard| ShardView { shard, status: ShardStatus::Running, code: None, seconds: None })
                .collect(),
            report: None,
            message: None,
            output_tail: None,
            output_file: None,
        }
    }

    /// Ends the run: passed when every shard passed.
    pub fn finish(&mut self, now_ms: u64) {
        self.finished_ms = Some(now_ms);
        let passed = self.shards.iter().all(|s| s.status == ShardStatus::Passed);
        self.status = if passed { GateStatus::Passed } else { GateStatus::Failed };
    }

    /// `waiting on gate e2e (shard 2/3 running, 41 s)`, while it runs.
    pub fn waiting_line(&self, now_ms: u64) -> String {
        let total = self.shards.len();
        let running: Vec<String> =
            self.shards.iter().filter(|s| s.status == ShardStatus::Running).map(|s| s.shard.to_string()).collect();
        let seconds = now_ms.saturating_sub(self.started_ms) / 1000;
        let shards = match running.len() {
            _ if self.kind == GateKind::Http => "request sent".to_owned(),
            1 => format!("shard {}/{total} running", running[0]),
            _ => format!("shards {} of {total} running", running.join(", ")),
        };
        format!("waiting on gate {} ({shards}, {seconds} s)", self.name)
    }

    /// One line about a finished run: what passed, or what failed.
    pub fn outcome_line(&self) -> String {
        let seconds = self.finished_ms.unwrap_or(self.started_ms).saturating_sub(self.started_ms) as f64 / 1000.0;
        let report = self.report.as_ref().map(|r| format!(": {}", r.line())).unwrap_or_default();
        match self.status {
            GateStatus::Running => format!("gate {} running", self.name),
            GateStatus::Passed => format!("gate {} passed in {seconds:.1} s{report}", self.name),
            GateStatus::Failed => failure_reason(self),
        }
    }
}

/// Why a gate failed, naming the failed tests: the rollout's reason after a gate fails.
pub fn failure_reason(view: &GateView) -> String {
    let mut text = format!("gate {} failed", view.name);
    if let Some(report) = view.report.as_ref().filter(|r| r.failures > 0) {
        text.push_str(&format!(": {} of {} tests failed: ", report.failures, report.tests));
        let names: Vec<String> = report
            .failed
            .iter()
            .take(3)
            .map(|f| match f.message.lines().next().filter(|m| !m.is_empty()) {
                Some(first) => format!("{} ({first})", f.name),
                None => f.name.clone(),
            })
            .collect();
        text.push_str(&names.join("; "));
        if report.failures > 3 {
            text.push_str(&format!("; and {} more", report.failures - 3));
        }
        return text;
    }
    if let Some(message) = &view.message {
        text.push_str(&format!(": {message}"));
    } else if let Some(shard) = view.shards.iter().find(|s| s.status != ShardStatus::Passed) {
        let code = shard.code.map(|c| format!(" with {c}")).unwrap_or_default();
        text.push_str(&format!(": shard {}/{} exited{code}", shard.shard, view.shards.len()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::junit::FailedTest;

    fn run() -> GateView {
        GateView::start("e2e", GateKind::Command, GateWhen::BeforeStep, 1, 3, 1_000)
    }

    #[test]
    fn the_waiting_line_names_the_running_shards_and_the_time() {
        let mut view = run();
        assert_eq!(view.waiting_line(42_500), "waiting on gate e2e (shards 1, 2, 3 of 3 running, 41 s)");
        view.shards[0].status = ShardStatus::Passed;
        view.shards[2].status = ShardStatus::Passed;
        assert_eq!(view.waiting_line(42_500), "waiting on gate e2e (shard 2/3 running, 41 s)");
    }

    #[test]
    fn a_run_passes_only_when_every_shard_passed() {
        let mut view = run();
        for shard in &mut view.shards {
            shard.status = ShardStatus::Passed;
        }
        view.finish(3_000);
        assert_eq!(view.status, GateStatus::Passed);
        assert_eq!(view.outcome_line(), "gate e2e passed in 2.0 s");
        view.shards[1].status = ShardStatus::Failed;
        view.shards[1].code = Some(1);
        view.finish(3_000);
        assert_eq!(view.status, GateStatus::Failed);
        assert_eq!(failure_reason(&view), "gate e2e failed: shard 2/3 exited with 1");
    }

    #[test]
    fn the_failure_reason_names_the_failed_tests() {
        let mut view = run();
        let failed = |name: &str| FailedTest { name: name.into(), message: "expected 200\nstack".into() };
        view.report = Some(JunitSummary {
            tests: 30,
            failures: 4,
            failed: vec![failed("a"), failed("b"), failed("c"), failed("d")],
            ..JunitSummary::default()
        });
        view.finish(2_000);
        assert_eq!(
            failure_reason(&view),
            "gate e2e failed: 4 of 30 tests failed: a (expected 200); b (expected 200); c (expected 200); and 1 more"
        );
    }
}
