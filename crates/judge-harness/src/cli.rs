//! The command line: `upstream`, `run`, `spin` and `report`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::scenario::Scenario;

/// Measures the rollout judge through a real `canary serve`, real upstream processes and
/// sticky users on loopback.
#[derive(Debug, Parser)]
#[command(name = "judge-harness", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve one version of the test app (started by `run`, one process per version).
    Upstream(UpstreamArgs),
    /// Run rollouts back to back through `canary serve` and report how they ended.
    Run(Box<RunArgs>),
    /// Burn CPU until stdin closes: the busy neighbour of `--scenario aa-busy`.
    Spin(SpinArgs),
    /// Print the summary table of a results file written by `run --out`.
    Report(ReportArgs),
    /// Compare each canary's first seconds with stable in a trace written by `run --trace`.
    Trace(TraceArgs),
}

/// How the test app behaves; the same for every version unless a scenario degrades one.
#[derive(Debug, Clone, Args)]
pub struct AppArgs {
    /// Share of requests answered 500 for users that are not error-prone.
    #[arg(long, default_value_t = 0.01)]
    pub base_error_rate: f64,
    /// Share of requests answered 500 for error-prone users.
    #[arg(long, default_value_t = 0.10)]
    pub prone_error_rate: f64,
    /// Share of users that are error-prone (decided by a hash of `x-user-id`).
    #[arg(long, default_value_t = 0.03)]
    pub prone_share: f64,
    /// Median of the log-normal response delay, in milliseconds.
    #[arg(long, default_value_t = 2.0)]
    pub latency_ms: f64,
    /// σ of the log-normal response delay (of its logarithm).
    #[arg(long, default_value_t = 0.5)]
    pub latency_sigma: f64,
}

/// `judge-harness upstream`.
#[derive(Debug, Clone, Args)]
pub struct UpstreamArgs {
    /// Address to listen on; port 0 takes a free port. The bound address is printed as
    /// `listening http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The version this process serves (shown in its answers).
    #[arg(long)]
    pub version: String,
    /// Factor on the base error rate of users that are not error-prone (1 = healthy).
    #[arg(long, default_value_t = 1.0)]
    pub error_multiplier: f64,
    /// The app's behaviour.
    #[command(flatten)]
    pub app: AppArgs,
}

/// `judge-harness run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// `aa`: identical versions; `aa-busy`: the same beside a CPU-hungry process; `x2`/`x5`:
    /// the canary fails 2×/5× as often for users that are not error-prone; `preexisting`:
    /// identical versions, and users carry a stable pin when each rollout starts.
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Stop after this many rollouts in total (over all services).
    #[arg(long, default_value_t = 20)]
    pub rollouts: usize,
    /// Services, each with its own upstream processes and rollouts.
    #[arg(long, default_value_t = 4)]
    pub services: usize,
    /// Users per service.
    #[arg(long, default_value_t = 2000)]
    pub users: usize,
    /// Requests per second per service.
    #[arg(long, default_value_t = 100.0)]
    pub rps: f64,
    /// The rollout plan.
    #[arg(long, default_value = "5%/30s,25%/30s,50%/30s,100%")]
    pub plan: String,
    /// The `canary` binary; default: `release/canary` in the harness's own target folder.
    #[arg(long)]
    pub canary_bin: Option<PathBuf>,
    /// Stop after this many minutes, whatever is running (rollouts then are `unfinished`).
    #[arg(long, default_value_t = 30.0)]
    pub max_minutes: f64,
    /// Append one JSON line per rollout to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write one line per answered request to this file (see `judge-harness trace`).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Exponent of the users' Zipf activity: user of rank k sends a share ∝ 1/k^s.
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Share of a user's later requests that are page navigations (the first always is).
    #[arg(long, default_value_t = 0.05)]
    pub navigation_share: f64,
    /// Traffic before the first rollout, so stable has a latency history.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// `preexisting`, and every scenario with `--returning-users`: how long users browse stable
    /// before each rollout.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub pin_warmup: Duration,
    /// Keep one set of users for the whole run, as a site's returning users: they carry their
    /// pins into every rollout, and before each one they browse stable for `--pin-warmup`
    /// (which is also what the gateways count as the next rollout's cohort baseline).
    #[arg(long)]
    pub returning_users: bool,
    /// The judge's minimum of requests per version in a rollout.
    #[arg(long, default_value_t = 100)]
    pub min_requests: u64,
    /// The judge's minimum of requests per version in a step.
    #[arg(long, default_value_t = 30)]
    pub min_step_requests: u64,
    /// The judge's false-rollback budget per rollout.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Non-inferiority margin: a metric passes only when its interval's upper end is below it.
    #[arg(long)]
    pub max_ratio: Option<f64>,
    /// How long a step may stay undecided after its hold before the rollout pauses.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_step_wait: Duration,
    /// How often the controller's judge looks.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub tick: Duration,
    /// Busy threads of the `aa-busy` neighbour.
    #[arg(long, default_value_t = 1)]
    pub spin_threads: usize,
    /// The app's behaviour.
    #[command(flatten)]
    pub app: AppArgs,
}

/// `judge-harness spin`.
#[derive(Debug, Clone, Args)]
pub struct SpinArgs {
    /// Threads that busy-loop.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// `judge-harness report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// A file written by `run --out` (JSON lines).
    pub results: PathBuf,
}

/// `judge-harness trace`.
#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// A file written by `run --trace`.
    pub trace: PathBuf,
    /// Requests slower than this count as slow, in ms (the judge's threshold is in each
    /// result's `tailThresholdSeconds`).
    #[arg(long, default_value_t = 7.5)]
    pub slow_ms: f64,
}
