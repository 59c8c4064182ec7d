//! `judge-harness run`: start the system, the users and the rollouts; stop by count or time
//! (or Ctrl-C); print the summary. Every child process dies with the [`System`] it belongs to.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context;
use canary_core::rollout::{Analysis, parse_steps};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::admin::Admin;
use crate::cli::RunArgs;
use crate::load::{LoadSettings, ServiceLoad};
use crate::record::Sink;
use crate::rollouts::{Budget, RolloutSettings, ServiceRollouts};
use crate::system::System;
use crate::trace::Trace;
use crate::{report, serve};

/// Runs the experiment `args` describe and prints its summary.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let analysis = check(args)?;
    let canary = serve::canary_binary(args.canary_bin.as_deref())?;
    let sink = Arc::new(Sink::open(args.out.as_deref())?);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let outcome = runtime.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            outcome = harness(args, &canary, analysis, sink.clone()) => outcome,
            _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted; every child process was stopped")),
            _ = terminate.recv() => Err(anyhow::anyhow!("terminated; every child process was stopped")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    print!("\n{}", report::render(&sink.records()));
    outcome.map(|()| ExitCode::SUCCESS)
}

/// Refuses arguments that cannot make a run, naming the flag; the `analysis` of the rollouts.
fn check(args: &RunArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.rollouts >= 1, "--rollouts must be at least 1");
    anyhow::ensure!((1..=32).contains(&args.services), "--services must be between 1 and 32");
    anyhow::ensure!((1..=1_000_000).contains(&args.users), "--users must be between 1 and 1000000");
    anyhow::ensure!(args.rps > 0.0 && args.rps <= 5000.0, "--rps must be above 0 and at most 5000");
    anyhow::ensure!(args.max_minutes > 0.0, "--max-minutes must be above 0");
    anyhow::ensure!(args.zipf >= 0.0, "--zipf must not be negative");
    anyhow::ensure!((0.0..=1.0).contains(&args.navigation_share), "--navigation-share must be between 0 and 1");
    anyhow::ensure!((1..=64).contains(&args.spin_threads), "--spin-threads must be between 1 and 64");
    parse_steps(&args.plan).map_err(|e| anyhow::anyhow!("--plan: {e}"))?;
    let analysis = Analysis {
        alpha: args.alpha,
        min_requests_per_version: args.min_requests,
        min_requests_per_step: args.min_step_requests,
        max_ratio: args.max_ratio,
        ..Analysis::default()
    };
    analysis.validate().map_err(|e| anyhow::anyhow!("--alpha / --min-requests / --max-ratio: {e}"))?;
    Ok(serde_json::to_value(analysis)?)
}

async fn harness(args: &RunArgs, canary: &Path, analysis: serde_json::Value, sink: Arc<Sink>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.max_minutes * 60.0);
    let mut system = System::start(args, canary).await?;
    print_header(args, canary, &system);
    let (loads, mut traffic) = start_traffic(args, &system)?;
    tokio::time::sleep(args.warmup).await;
    let budget = Arc::new(Budget::new(args.rollouts, deadline));
    let shared = Arc::new(RolloutSettings {
        scenario: args.scenario,
        plan: args.plan.clone(),
        max_step_wait: args.max_step_wait,
        analysis,
        pin_warmup: args.pin_warmup,
        returning_users: args.returning_users,
        rps: args.rps,
        users: args.users,
    });
    let mut rollouts = JoinSet::new();
    for (service, load) in system.services.iter().zip(&loads) {
        let service = ServiceRollouts {
            name: service.name.clone(),
            admin: Admin::new(&system.admin)?,
            load: load.clone(),
            first: service.first,
            second: service.second,
            settings: shared.clone(),
            budget: budget.clone(),
            sink: sink.clone(),
        };
        rollouts.spawn(service.run());
    }
    let finished = wait_for_rollouts(&mut rollouts, &mut system).await;
    traffic.abort_all();
    print_traffic(&system, &loads);
    finished.with_context(|| format!("canary serve's log ends with:\n{}", system.log_tail()))
}

/// Starts every service's users; the tasks run until aborted.
fn start_traffic(args: &RunArgs, system: &System) -> anyhow::Result<(Vec<Arc<ServiceLoad>>, JoinSet<()>)> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let settings =
        LoadSettings { users: args.users, rps: args.rps, zipf: args.zipf, navigation_share: args.navigation_share };
    let trace = args.trace.as_deref().map(Trace::create).transpose()?;
    let loads: Vec<Arc<ServiceLoad>> = system
        .services
        .iter()
        .map(|s| Arc::new(ServiceLoad::new(&s.name, format!("http://{}", s.gateway), settings, trace.clone())))
        .collect();
    let mut traffic = JoinSet::new();
    for load in &loads {
        traffic.spawn(load.clone().run(client.clone()));
    }
    Ok((loads, traffic))
}

/// Waits for every service's rollouts; fails at the first error or dead child process.
async fn wait_for_rollouts(rollouts: &mut JoinSet<anyhow::Result<()>>, system: &mut System) -> anyhow::Result<()> {
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            next = rollouts.join_next() => match next {
                None => return Ok(()),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => anyhow::bail!("a service's rollouts stopped: {e}"),
            },
            _ = check.tick() => {
                if let Some(dead) = system.children.first_exited() {
                    anyhow::bail!("{dead}");
                }
            }
        }
    }
}

fn print_header(args: &RunArgs, canary: &Path, system: &System) {
    let top = (args.users / 100).max(1);
    println!(
        "scenario {}: {} service(s) × {} users at {} req/s (the busiest {top} users send {:.0} % of requests), plan {}",
        args.scenario.name(),
        args.services,
        args.users,
        args.rps,
        100.0 * crate::users::zipf_top_share(args.users, args.zipf, top),
        args.plan
    );
    println!("canary serve {} (admin {}, log {})", canary.display(), system.admin, system.log.display());
    for service in &system.services {
        println!(
            "  {}: gateway http://{}, process a {}, process b {}",
            service.name, service.gateway, service.first, service.second
        );
    }
    println!("stops after {} rollouts or {} minutes", args.rollouts, args.max_minutes);
}

fn print_traffic(system: &System, loads: &[Arc<ServiceLoad>]) {
    for (service, load) in system.services.iter().zip(loads) {
        let tally = &load.tally;
        println!(
            "traffic {}: {} requests, {} answered 5xx, {} unanswered",
            service.name,
            tally.requests.load(Relaxed),
            tally.server_errors.load(Relaxed),
            tally.unanswered.load(Relaxed)
        );
    }
}
