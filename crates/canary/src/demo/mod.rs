//! `canary demo`: the product on one screen. Starts two versions of a small web app (v2
//! behaving as the scenario says), the same gateway, controller and admin API `canary serve`
//! runs, and a population of synthetic browser users; then starts a rollout of v2 through the
//! controller, shows it live exactly as `canary rollout status --watch` does, and ends with a
//! summary: the outcome, how fast a bad canary was caught, and what users saw.
//!
//! Times are compressed: steps hold 5 s instead of minutes, the judge looks every 250 ms and
//! the breaker's window is 2 s, so each scenario ends well within two minutes — also in a debug
//! build. The judge's minimums are set for the demo's rate (a few hundred requests a second):
//! at 1 % a canary sees only a few requests a second.

mod upstream;
mod users;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use canary_controller::Controller;
use canary_core::api::{RolloutView, StartRollout, StepsInput};
use canary_core::clock::unix_ms;
use canary_core::config::{Config, HumanDuration, Upstreams, VersionName};
use canary_core::judge::{Tolerance, Tolerances};
use canary_core::rollout::{Analysis, Command, Phase, Rollout};
use canary_gateway::Service;
use serde::Serialize;
use tokio::time::Instant;

use crate::cli::{DemoArgs, Scenario};
use crate::live_view::LiveView;
use crate::output::outln;
use crate::stack::Stack;
use upstream::{Behaviour, DemoUpstream};
use users::{Population, Tally};

const SERVICE: &str = "shop";
const STEPS: &str = "10%/5s,25%/5s,50%/5s,100%";
/// The judge's settings for the demo, set apart from the defaults on purpose: its upstreams
/// answer in a few milliseconds on loopback, so the production latency floor (nothing under
/// 25 ms is slow) would hide the latency scenario; and its 25-second plan at 500 requests a
/// second is far shorter than a real rollout, so its minimum samples are lower and the count
/// metrics count as safe once the canary is shown below 4× stable's rate (or stable's plus three
/// percentage points) instead of 2× (plus half a point or one point), and quantiles below 3×
/// instead of 1.5×. What rolls back is unchanged: shown worse than 1.25× (errors), 1.5× (slow
/// share) or 1.2× (quantiles). Its versions are warm processes, so latencies are judged after
/// 1 s of each step instead of 10 s.
fn demo_analysis() -> Analysis {
    let defaults = Tolerances::default();
    let loose = |t: Tolerance, absolute| Tolerance { safe_below: 4.0, absolute, ..t };
    Analysis {
        min_requests_per_version: 50,
        min_requests_per_step: 20,
        min_requests_for_rollback: 50,
        latency_floor_seconds: 0.0,
        // The demo's versions run in this process and are warm; its steps last 5 s.
        warmup_seconds: 1.0,
        tolerances: Tolerances {
            errors: loose(defaults.errors, 0.03),
            latency_tail: loose(defaults.latency_tail, 0.03),
            latency_quantiles: Tolerance { safe_below: 3.0, ..defaults.latency_quantiles },
        },
        ..Analysis::default()
    }
}

/// Traffic before the rollout, so stable has a latency history for the judge's tail threshold.
const WARMUP: Duration = Duration::from_secs(3);
/// The crash scenario kills v2 this long into the 25 % step.
const CRASH_INTO_STEP: f64 = 1.0;
/// A rollout still running after this long is aborted and the demo reports it as stalled.
const DEADLINE: Duration = Duration::from_secs(100);
const POLL: Duration = Duration::from_millis(250);

/// The demo's result, printed as one JSON line with `--json`.
#[derive(Debug, Serialize)]
struct Summary {
    scenario: &'static str,
    /// `promoted`, `rolled_back`, or `stalled` when the rollout neither ended nor failed in time.
    outcome: &'static str,
    /// Why the rollout ended, in the controller's words.
    reason: Option<String>,
    /// Seconds from the fault's start (rollout start, or the crash) to the rollback.
    detect_seconds: Option<f64>,
    /// Seconds from the rollout's start to its end.
    rollout_seconds: f64,
    /// Seconds from the rollout's start to the crash, in the crash scenario.
    fault_at_seconds: Option<f64>,
    /// Whether the gateway's local breaker tripped the canary: seen while the rollout ran, or
    /// named by the controller as why it rolled back.
    breaker_tripped: bool,
    users: usize,
    requests: u64,
    /// Requests that failed other than with the app's own 1 % baseline errors: the canary's
    /// fault, a 502/504 from the gateway, or no answer.
    failed_requests: u64,
    /// Users that saw at least one of `failed_requests`.
    users_with_failures: usize,
    /// The app's baseline `500`s (both versions have 1 %), which no rollout causes.
    baseline_errors: u64,
    /// Script requests that got a 404: page and script from different versions. Pins keep it
    /// at 0, except for a page loaded from the canary an instant before a rollback or crash
    /// moved its user to stable.
    asset_404s: u64,
    /// Requests the gateway moved from the canary to stable because the canary took no
    /// connection.
    retried_on_stable: u64,
    /// Share of the requests sent during the rollout that the canary answered, in percent.
    canary_share_pct: f64,
    seconds: f64,
}

/// Runs the demo and prints its summary; fails when the rollout stalled.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    anyhow::ensure!((10..=5000).contains(&args.visits_per_second), "--visits-per-second must be between 10 and 5000");
    crate::serve::init_logs("error", crate::cli::LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let summary = runtime.block_on(demo(&args))?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?)?;
    } else {
        print_summary(&summary)?;
    }
    Ok(if summary.outcome == "stalled" { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn canary_behaviour(scenario: Scenario) -> Behaviour {
    match scenario {
        Scenario::Healthy | Scenario::Crash => Behaviour::BASELINE,
        Scenario::Errors => Behaviour { fault_error_rate: 0.05, ..Behaviour::BASELINE },
        Scenario::Latency => Behaviour { slowdown: (1.5, 2.0), ..Behaviour::BASELINE },
    }
}

async fn demo(args: &DemoArgs) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let v1 = DemoUpstream::start("v1", Behaviour::BASELINE).await.context("demo upstream v1")?;
    let v2 = DemoUpstream::start("v2", canary_behaviour(args.scenario)).await.context("demo upstream v2")?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory for the demo's store")?;
    let config = demo_config(&dir.path().join("canary.redb"), v1.addr)?;
    let stack = Stack::start(&config, dir.path()).await?;
    let gateway = stack.gateway.clone().context("the demo runs a gateway")?;
    let (controller, admin) = (stack.controller.clone(), stack.admin_addr);
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(stack.run(async {
        let _ = admin_stopped.await;
    }));
    let service = gateway.service(SERVICE).context("demo service")?.clone();
    let base = format!("http://{}", service.bound().context("demo gateway address")?);
    if !args.json {
        outln!(
            "scenario {}: gateway {base}, stable v1 at {}, canary v2 at {}, {} users, {} visits/s",
            args.scenario.name(),
            v1.addr,
            v2.addr,
            args.users,
            args.visits_per_second
        )?;
        outln!("admin API http://{admin} (try: canary rollout status {SERVICE} --watch --admin http://{admin})")?;
        outln!()?;
    }

    let population = Arc::new(Population {
        base,
        users: args.users,
        visits_per_second: args.visits_per_second,
        canary: "v2".into(),
    });
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(users::run(population, tally.clone(), stop.clone()));
    tokio::time::sleep(WARMUP).await;
    wait_for_lead(&controller).await?;
    let watched = run_rollout(args, &controller, &service, &v2, &tally, started).await?;

    stop.store(true, Relaxed);
    let _ = traffic.await;
    let _ = stop_admin.send(());
    serving.await??;
    let retried_on_stable = gateway.metrics().retries(SERVICE, "v2", "v1").load(Relaxed);
    Ok(summarize(args, &watched, &tally, retried_on_stable, started.elapsed().as_secs_f64()))
}

/// The demo's configuration: one service whose stable is `v1`, an embedded store at `store`,
/// everything on free loopback ports, and the controller and breaker on short clocks.
fn demo_config(store: &Path, v1: SocketAddr) -> anyhow::Result<Config> {
    Config::from_toml(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[gateway]
workers = 1
[store]
kind = "embedded"
path = {store:?}
[controller]
tick = "250ms"
[[service]]
name = "{SERVICE}"
listen = "127.0.0.1:0"
stable = {{ version = "v1", upstreams = ["{v1}"] }}
breaker = {{ window = "2s" }}
"#
    ))
    .context("demo configuration")
}

/// Only the leading controller runs judges; the demo's is the only candidate, so it leads as
/// soon as its campaign has written the lease.
async fn wait_for_lead(controller: &Controller) -> anyhow::Result<()> {
    let campaign = Instant::now();
    while !controller.is_leading() {
        anyhow::ensure!(campaign.elapsed() < Duration::from_secs(10), "the demo's controller never took the lead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// What the demo saw of its rollout.
struct Watched {
    /// The traffic counts (all requests, canary requests) when the rollout started.
    before: (u64, u64),
    /// The rollout as it ended.
    last: Rollout,
    /// Unix ms when v2 crashed, in the crash scenario.
    crashed_at_ms: Option<u64>,
    /// Whether the gateway's breaker kept traffic off the canary while the rollout ran.
    breaker_tripped: bool,
}

/// Starts the rollout of v2 and draws it until it ends, crashing v2 on cue in the crash
/// scenario and aborting a rollout still running after [`DEADLINE`].
async fn run_rollout(
    args: &DemoArgs,
    controller: &Arc<Controller>,
    service: &Service,
    v2: &DemoUpstream,
    tally: &Tally,
    started: Instant,
) -> anyhow::Result<Watched> {
    let before = (tally.requests.load(Relaxed), tally.canary_requests.load(Relaxed));
    controller.start(SERVICE, demo_request(v2.addr)?).await.context("cannot start the demo rollout")?;
    let mut view = if args.json { LiveView::silent() } else { LiveView::stdout() };
    let (mut crashed_at_ms, mut breaker_tripped) = (None, false);
    let deadline = Instant::now() + DEADLINE;
    loop {
        tokio::time::sleep(POLL).await;
        let status = controller.current_or_latest(SERVICE).await?;
        let over = status.rollout.phase.is_terminal();
        breaker_tripped |= !service.canary_open() && !over;
        if crashed_at_ms.is_none() && crash_due(args.scenario, &status) {
            v2.crash();
            crashed_at_ms = Some(unix_ms());
        }
        let footer = traffic_line(tally, started);
        if over {
            view.finish(&status, Some(&footer))?;
            return Ok(Watched { before, last: status.rollout, crashed_at_ms, breaker_tripped });
        }
        if Instant::now() > deadline {
            controller
                .act(SERVICE, Command::Abort(format!("the demo's {}s limit passed", DEADLINE.as_secs())))
                .await
                .context("cannot abort the stalled demo rollout")?;
        }
        view.update(&status, Some(&footer))?;
    }
}

/// The rollout the demo starts: v2 through [`STEPS`], judged by [`demo_analysis`].
fn demo_request(v2: SocketAddr) -> anyhow::Result<StartRollout> {
    Ok(StartRollout {
        version: VersionName::try_from("v2".to_owned()).map_err(anyhow::Error::msg)?,
        upstreams: Upstreams::try_from(vec![v2.to_string()]).map_err(anyhow::Error::msg)?,
        steps: Some(StepsInput::Text(STEPS.into())),
        drain: Some(HumanDuration(Duration::from_secs(60))),
        max_step_wait: Some(HumanDuration(Duration::from_secs(60))),
        analysis: Some(demo_analysis()),
    })
}

/// The crash scenario kills v2 [`CRASH_INTO_STEP`] seconds into the 25 % step.
fn crash_due(scenario: Scenario, status: &RolloutView) -> bool {
    scenario == Scenario::Crash
        && !status.rollout.phase.is_terminal()
        && status.rollout.step >= 1
        && status.held_seconds >= CRASH_INTO_STEP
}

/// The summary of a finished demo.
fn summarize(args: &DemoArgs, watched: &Watched, tally: &Tally, retried_on_stable: u64, seconds: f64) -> Summary {
    let last = &watched.last;
    let requests = tally.requests.load(Relaxed);
    let during = requests.saturating_sub(watched.before.0);
    let canary_during = tally.canary_requests.load(Relaxed).saturating_sub(watched.before.1);
    let outcome = match last.phase {
        Phase::Promoted => "promoted",
        Phase::Failed => "rolled_back",
        _ => "stalled",
    };
    let (started_ms, ended_ms) = (last.created_ms, last.updated_ms);
    let fault_ms = match args.scenario {
        Scenario::Healthy => None,
        Scenario::Errors | Scenario::Latency => Some(started_ms),
        Scenario::Crash => watched.crashed_at_ms,
    };
    let by_breaker = last.phase == Phase::Failed && last.reason.as_deref().is_some_and(|r| r.contains("breaker"));
    let between = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1000.0;
    Summary {
        scenario: args.scenario.name(),
        outcome,
        reason: last.reason.clone(),
        detect_seconds: (outcome == "rolled_back").then(|| between(fault_ms.unwrap_or(started_ms), ended_ms)),
        rollout_seconds: between(started_ms, ended_ms),
        fault_at_seconds: watched.crashed_at_ms.map(|at| between(started_ms, at)),
        breaker_tripped: watched.breaker_tripped || by_breaker,
        users: args.users,
        requests,
        failed_requests: tally.failed_requests.load(Relaxed),
        users_with_failures: tally.failed_users.lock().expect("tally").len(),
        baseline_errors: tally.baseline_errors.load(Relaxed),
        asset_404s: tally.asset_404s.load(Relaxed),
        retried_on_stable,
        canary_share_pct: if during == 0 { 0.0 } else { 100.0 * canary_during as f64 / during as f64 },
        seconds,
    }
}

/// `traffic: 498 req/s, 12345 requests, 0 failed (0 users), 61 baseline errors`.
fn traffic_line(tally: &Tally, started: Instant) -> String {
    let requests = tally.requests.load(Relaxed);
    format!(
        "traffic: {:.0} req/s, {requests} requests, {} failed ({} users), {} baseline errors",
        requests as f64 / started.elapsed().as_secs_f64().max(0.001),
        tally.failed_requests.load(Relaxed),
        tally.failed_users.lock().expect("tally").len(),
        tally.baseline_errors.load(Relaxed),
    )
}

fn print_summary(s: &Summary) -> anyhow::Result<()> {
    outln!()?;
    let outcome = match s.outcome {
        "promoted" => "promoted: v2 is the new stable".to_owned(),
        "rolled_back" => "rolled back automatically".to_owned(),
        _ => "stalled: the rollout neither finished nor failed in time, and was aborted".to_owned(),
    };
    outln!("outcome: {outcome}")?;
    if let Some(reason) = &s.reason {
        outln!("reason: {reason}")?;
    }
    match (s.detect_seconds, s.fault_at_seconds) {
        (Some(detect), Some(fault)) => outln!(
            "time to detect: {detect:.1}s after v2 crashed ({fault:.1}s into the rollout), {:.1}s after the rollout started",
            s.rollout_seconds
        )?,
        (Some(detect), None) => outln!("time to detect: {detect:.1}s after the rollout started")?,
        _ => outln!("rollout took {:.1}s", s.rollout_seconds)?,
    }
    if s.breaker_tripped {
        outln!("the gateway's local breaker tripped the canary: its traffic went to stable at once")?;
    }
    outln!("canary share: {:.1}% of the requests sent during the rollout", s.canary_share_pct)?;
    outln!(
        "requests: {} ({} failed, {} users saw a failure; the app's {} baseline errors not counted)",
        s.requests,
        s.failed_requests,
        s.users_with_failures,
        s.baseline_errors
    )?;
    outln!(
        "retried on stable: {}; pages whose script came from the other version: {}",
        s.retried_on_stable,
        s.asset_404s
    )
}
