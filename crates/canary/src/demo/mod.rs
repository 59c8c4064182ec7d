//! `canary demo`: the product on one screen. Starts two versions of a small web app, a
//! gateway in front of them and a population of synthetic browser users, then moves the
//! canary through weight steps and reports, per step, the canary share, users that moved
//! back (none: the bucket rule is monotone) and pages whose script came from the other version
//! (none: sessions are pinned).

mod upstream;
mod users;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use canary_core::Weight;
use canary_core::config::Config;
use canary_core::pin::PinKey;
use canary_gateway::Gateway;
use serde::Serialize;

use crate::cli::DemoArgs;
use upstream::DemoUpstream;
use users::Tally;

const STEPS: [f64; 5] = [1.0, 5.0, 25.0, 50.0, 100.0];

#[derive(Debug, Serialize)]
struct StepReport {
    weight: f64,
    users_on_canary_pct: f64,
    users_moved_back: usize,
}

#[derive(Debug, Serialize)]
struct Summary {
    outcome: &'static str,
    users: usize,
    requests: u64,
    failed_requests: u64,
    asset_404s: u64,
    users_with_failures: usize,
    users_moved_back: usize,
    steps: Vec<StepReport>,
    seconds: f64,
}

/// Runs the demo and prints its summary.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    anyhow::ensure!(args.step_seconds > 0.0 && args.step_seconds <= 600.0, "--step-seconds must be in (0, 600]");
    crate::serve::init_logs("warn");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let summary = runtime.block_on(demo(&args))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!();
        println!("outcome: {}", summary.outcome);
        println!(
            "requests: {} ({} failed), users: {} ({} saw a failure), pages with a script from the other version: {}",
            summary.requests, summary.failed_requests, summary.users, summary.users_with_failures, summary.asset_404s
        );
        println!("users that moved canary -> stable while the weight rose: {}", summary.users_moved_back);
    }
    Ok(())
}

async fn demo(args: &DemoArgs) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let v1 = DemoUpstream::start("v1").await.context("demo upstream v1")?;
    let v2 = DemoUpstream::start("v2").await.context("demo upstream v2")?;
    let config = Config::from_toml(&format!(
        r#"
[gateway]
workers = 1
[[service]]
name = "shop"
listen = "127.0.0.1:0"
stable = {{ version = "v1", upstreams = ["{}"] }}
canary = {{ version = "v2", upstreams = ["{}"] }}
"#,
        v1.addr, v2.addr
    ))?;
    let secret: [u8; 32] = rand::random();
    let gateway = Gateway::new(&config, PinKey::new(&secret))?;
    let running = gateway.start()?;
    let service = gateway.service("shop").context("demo service")?.clone();
    let base = format!("http://{}", service.bound().context("demo gateway address")?);
    let quiet = args.json;
    if !quiet {
        println!("gateway {base}: stable v1 at {}, canary v2 at {}, {} users", v1.addr, v2.addr, args.users);
        println!("{:>8}  {:>16}  {:>12}  {:>14}", "weight", "users on canary", "moved back", "asset 404s");
    }

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(users::run(base, args.users, tally.clone(), stop.clone()));
    let mut steps = Vec::new();
    let mut previous: HashMap<usize, String> = HashMap::new();
    let mut moved_back_total = 0;
    for weight in STEPS {
        service.set_weight(Weight::from_percent(weight)?)?;
        tokio::time::sleep(Duration::from_secs_f64(args.step_seconds)).await;
        let now = tally.page_version.lock().expect("tally").clone();
        let on_canary = now.values().filter(|v| *v == "v2").count();
        let moved_back = now.iter().filter(|(u, v)| *v == "v1" && previous.get(*u).is_some_and(|p| p == "v2")).count();
        moved_back_total += moved_back;
        let share = 100.0 * on_canary as f64 / now.len().max(1) as f64;
        if !quiet {
            println!("{:>7}%  {:>15.1}%  {:>12}  {:>14}", weight, share, moved_back, tally.asset_404s.load(Relaxed));
        }
        steps.push(StepReport { weight, users_on_canary_pct: share, users_moved_back: moved_back });
        previous = now;
    }
    service.promote(Duration::from_secs(60), unix_now())?;
    stop.store(true, Relaxed);
    let _ = traffic.await;
    tokio::task::spawn_blocking(move || running.shutdown()).await?;
    Ok(Summary {
        outcome: "promoted",
        users: args.users,
        requests: tally.requests.load(Relaxed),
        failed_requests: tally.failed_requests.load(Relaxed),
        asset_404s: tally.asset_404s.load(Relaxed),
        users_with_failures: tally.failed_users.lock().expect("tally").len(),
        users_moved_back: moved_back_total,
        steps,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
