//! A command gate: `shards` processes of `sh -c RUN`, each the leader of its own process
//! group, in the config file's folder, killed with their group at the timeout.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canary_core::clock::unix_ms;
use canary_core::gate::{GateConfig, GateView, JunitSummary, ShardStatus, command_env, expand};
use tokio::process::Command;

use super::context::RunContext;
use super::groups::ProcessGroups;
use super::output::{ShardFiles, shard_files, tail};

/// The views of a stage's gates, updated as their shards end.
pub type Views = Arc<Mutex<Vec<GateView>>>;

/// Runs every shard of `gate` (the `index`th view of `views`) to its end or its timeout.
pub async fn run(gate: &GateConfig, index: usize, context: &RunContext, views: &Views, groups: &ProcessGroups) {
    let run = gate.run.as_deref().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + gate.timeout.0;
    let step = context.command.step;
    let shards: Vec<ShardFiles> =
        (1..=gate.shards).map(|shard| shard_files(&context.output_dir, &gate.name, step, shard)).collect();
    let runs = shards.iter().zip(1..).map(|(files, shard)| async move {
        let outcome = run_shard(gate, run, shard, files, context, deadline, groups).await;
        let mut views = views.lock().expect("views");
        let view = &mut views[index].shards[shard as usize - 1];
        (view.status, view.code, view.seconds) = (outcome.status, outcome.code, Some(outcome.seconds));
    });
    futures_util::future::join_all(runs).await;
    let report = merged_report(&shards);
    let mut views = views.lock().expect("views");
    let view = &mut views[index];
    let shown = view.shards.iter().position(|s| s.status != ShardStatus::Passed).unwrap_or(0);
    view.output_tail = tail(&shards[shown].log);
    view.output_file = Some(shards[shown].log.display().to_string());
    view.report = report;
    if view.shards.iter().any(|s| s.status == ShardStatus::TimedOut) {
        view.message = Some(format!("timed out after {}", String::from(gate.timeout)));
    }
    view.finish(unix_ms());
}

/// How one shard ended.
struct ShardOutcome {
    status: ShardStatus,
    code: Option<i32>,
    seconds: f64,
}

async fn run_shard(
    gate: &GateConfig,
    run: &str,
    shard: u32,
    files: &ShardFiles,
    context: &RunContext,
    deadline: tokio::time::Instant,
    groups: &ProcessGroups,
) -> ShardOutcome {
    let started = tokio::time::Instant::now();
    let failed = |why: String| {
        tracing::warn!(gate = gate.name, shard, "{why}");
        let _ = std::fs::write(&files.log, format!("{why}\n"));
        ShardOutcome { status: ShardStatus::Failed, code: None, seconds: 0.0 }
    };
    let _ = std::fs::remove_file(&files.report);
    let log = match std::fs::File::create(&files.log) {
        Ok(log) => log,
        Err(e) => return failed(format!("cannot write {}: {e}", files.log.display())),
    };
    let Ok(log_too) = log.try_clone() else { return failed("cannot share the output file".into()) };
    let report = files.report.display().to_string();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(expand(run, shard, gate.shards))
        .current_dir(&context.work_dir)
        .envs(command_env(&context.command, shard, gate.shards, &report))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_too))
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return failed(format!("cannot start `sh -c`: {e}")),
    };
    let Some(pid) = child.id() else { return failed("the process ended before it was seen".into()) };
    groups.add(pid);
    let waited = tokio::time::timeout_at(deadline, child.wait()).await;
    // Whatever the shell left running in its group goes with it.
    groups.end(pid);
    let seconds = started.elapsed().as_secs_f64();
    match waited {
        Ok(Ok(status)) if status.success() => ShardOutcome { status: ShardStatus::Passed, code: Some(0), seconds },
        Ok(Ok(status)) => ShardOutcome { status: ShardStatus::Failed, code: status.code(), seconds },
        Ok(Err(e)) => failed(format!("cannot wait for shard {shard}: {e}")),
        Err(_) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            ShardOutcome { status: ShardStatus::TimedOut, code: None, seconds }
        }
    }
}

/// The shards' JUnit reports merged, when any wrote one.
fn merged_report(shards: &[ShardFiles]) -> Option<JunitSummary> {
    let mut merged: Option<JunitSummary> = None;
    for files in shards {
        let Ok(file) = std::fs::File::open(&files.report) else { continue };
        match JunitSummary::read(std::io::BufReader::new(file)) {
            Ok(summary) => merged.get_or_insert_with(JunitSummary::default).merge(summary),
            Err(e) => tracing::warn!(report = %files.report.display(), error = %e, "unreadable test report"),
        }
    }
    merged
}
