//! One run of every gate of one moment of one step, in the background.

use std::sync::{Arc, Mutex};

use canary_core::clock::unix_ms;
use canary_core::gate::{GateConfig, GateKind, GateStatus, GateView, GateWhen, OnFailure, failure_reason};
use canary_core::rollout::{Command, Rollout};

use super::command::{self, Views};
use super::context::RunContext;
use super::groups::ProcessGroups;
use super::http;
use crate::rollouts::Controller;

/// Where a stage's gates stand together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageOutcome {
    /// A gate still runs, and none failed.
    Running,
    /// Every gate passed.
    Passed,
    /// A gate failed: what the rollout should do, and why.
    Failed {
        /// The failed gate's `on_failure`.
        on_failure: OnFailure,
        /// The failed gate and its failed tests, in words.
        reason: String,
    },
}

/// The gates of one moment of one step, running; dropping it kills every process they started.
#[derive(Debug)]
pub struct StageRun {
    rollout_id: String,
    step: usize,
    when: GateWhen,
    started_ms: u64,
    gates: Vec<GateConfig>,
    views: Views,
    groups: Arc<ProcessGroups>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StageRun {
    fn drop(&mut self) {
        self.groups.kill_all();
        self.task.abort();
    }
}

impl StageRun {
    /// Starts `gates` (all of moment `when`) for `rollout`'s current step; each start, pass and
    /// failure is logged as an event of the rollout.
    pub fn start(
        controller: Arc<Controller>,
        rollout: &Rollout,
        when: GateWhen,
        gates: Vec<GateConfig>,
        context: RunContext,
    ) -> StageRun {
        let now = unix_ms();
        let views: Views = Arc::new(Mutex::new(
            gates.iter().map(|g| GateView::start(&g.name, g.kind, when, rollout.step, g.shards, now)).collect(),
        ));
        let groups = Arc::new(ProcessGroups::default());
        let task = tokio::spawn(run_all(
            Some((controller, rollout.service.clone())),
            gates.clone(),
            context,
            views.clone(),
            groups.clone(),
        ));
        StageRun {
            rollout_id: rollout.id.clone(),
            step: rollout.step,
            when,
            started_ms: now,
            gates,
            views,
            groups,
            task,
        }
    }

    /// Whether this run is the one of `rollout`'s current step at moment `when`: a run from
    /// before a pause was lifted is not (resuming runs the gates again).
    pub fn is_for(&self, rollout: &Rollout, when: GateWhen) -> bool {
        self.rollout_id == rollout.id
            && self.step == rollout.step
            && self.when == when
            && self.started_ms >= rollout.step_started_ms
    }

    /// Whether it belongs to `rollout`.
    pub fn rollout_id(&self) -> &str {
        &self.rollout_id
    }

    /// The gates' views now.
    pub fn views(&self) -> Vec<GateView> {
        self.views.lock().expect("views").clone()
    }

    /// Where the gates stand together: the first failure decides at once.
    pub fn outcome(&self) -> StageOutcome {
        let views = self.views.lock().expect("views");
        if let Some((view, gate)) = views.iter().zip(&self.gates).find(|(v, _)| v.status == GateStatus::Failed) {
            return StageOutcome::Failed { on_failure: gate.on_failure, reason: failure_reason(view) };
        }
        if views.iter().all(|v| v.status == GateStatus::Passed) { StageOutcome::Passed } else { StageOutcome::Running }
    }
}

/// Runs the after-rollback hooks of a rollout that ended, in the background: nothing waits for
/// them and nothing stops them but their timeout.
pub fn after_rollback(gates: Vec<GateConfig>, context: RunContext, step: usize) {
    if gates.is_empty() {
        return;
    }
    let now = unix_ms();
    let views: Views = Arc::new(Mutex::new(
        gates.iter().map(|g| GateView::start(&g.name, g.kind, GateWhen::AfterRollback, step, g.shards, now)).collect(),
    ));
    tokio::spawn(run_all(None, gates, context, views, Arc::default()));
}

/// Runs every gate together; with a controller, logs each start and end as a rollout event.
async fn run_all(
    events: Option<(Arc<Controller>, String)>,
    gates: Vec<GateConfig>,
    context: RunContext,
    views: Views,
    groups: Arc<ProcessGroups>,
) {
    if let Err(e) = std::fs::create_dir_all(&context.output_dir) {
        tracing::warn!(dir = %context.output_dir.display(), error = %e, "cannot create the gates' output folder");
    }
    let note = |text: String| {
        let events = events.clone();
        async move {
            match events {
                Some((controller, service)) => {
                    if let Err(e) = controller.transition(&service, Command::Gate(text.clone()), true).await {
                        tracing::warn!(service, error = %e, "{text} (not logged as an event)");
                    }
                }
                None => tracing::info!("{text}"),
            }
        }
    };
    for gate in &gates {
        let shards = if gate.kind == GateKind::Command { format!(", {} shard(s)", gate.shards) } else { String::new() };
        note(format!("gate {} started ({}{shards})", gate.name, gate.when.name())).await;
    }
    let runs = gates.iter().enumerate().map(|(index, gate)| {
        let (context, views, groups, note) = (&context, &views, &groups, &note);
        async move {
            match gate.kind {
                GateKind::Command => command::run(gate, index, context, views, groups).await,
                GateKind::Http => http::run(gate, index, context, views).await,
            }
            let view = views.lock().expect("views")[index].clone();
            note(ended_text(&view)).await;
        }
    });
    futures_util::future::join_all(runs).await;
}

/// The event of a gate that ended: its outcome, and for a failure without named tests the end
/// of its output and where the rest is.
fn ended_text(view: &GateView) -> String {
    let mut text = view.outcome_line();
    if view.status == GateStatus::Failed {
        let named_tests = view.report.as_ref().is_some_and(|r| r.failures > 0);
        if let Some(tail) = view.output_tail.as_ref().filter(|_| !named_tests) {
            text.push_str(&format!("\n{tail}"));
        }
        if let Some(file) = &view.output_file {
            text.push_str(&format!("\n(whole output: {file})"));
        }
    }
    text
}
