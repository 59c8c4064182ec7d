//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Sticky Canary: pins every user to one version and moves traffic to a canary safely.
#[derive(Debug, Parser)]
#[command(name = "canary", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and the admin API from a configuration file.
    Serve(ServeArgs),
    /// Check a configuration file and say what is wrong, where.
    Validate(ValidateArgs),
    /// Run a self-contained demonstration: demo upstreams, synthetic users, the real gateway
    /// and controller, and a rollout the judge promotes or rolls back.
    Demo(DemoArgs),
    /// Start, watch and steer rollouts through the admin API.
    Rollout(RolloutArgs),
    /// Write configuration for other systems.
    Export(ExportArgs),
    /// Print a shell completion script: `canary completions bash > /etc/bash_completion.d/canary`.
    Completions(CompletionsArgs),
}

/// `canary completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `canary export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// What to write.
    #[command(subcommand)]
    pub target: ExportTarget,
}

/// What `canary export` can write.
#[derive(Debug, Subcommand)]
pub enum ExportTarget {
    /// Istio DestinationRule and VirtualService routing on the gateway's `x-canary-version`.
    Istio(IstioArgs),
    /// A Gateway API HTTPRoute per service routing on the gateway's `x-canary-version`.
    GatewayApi(crate::export::GatewayApiArgs),
}

/// `canary export istio`.
#[derive(Debug, Args)]
pub struct IstioArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "canary.toml")]
    pub config: PathBuf,
    /// Only this service (default: every service).
    #[arg(long)]
    pub service: Option<String>,
    /// `metadata.namespace` of the objects (default: left to `kubectl apply -n`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The Kubernetes Service host; `{service}` is replaced by the service's name.
    #[arg(long)]
    pub host: Option<String>,
    /// A `Host` header value clients send that the routes must also cover (repeatable).
    #[arg(long = "public-host")]
    pub public_hosts: Vec<String>,
    /// The pod label whose value is the version name.
    #[arg(long, default_value = "version")]
    pub version_label: String,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `canary serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "canary.toml", env = "CANARY_CONFIG")]
    pub config: PathBuf,
    /// Log filter, e.g. `info` or `canary_gateway=debug`.
    #[arg(long, default_value = "info", env = "CANARY_LOG")]
    pub log: String,
    /// How log lines on stderr are written: for people (`text`) or one JSON object a line (`json`).
    #[arg(long, value_enum, default_value = "text", env = "CANARY_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What this process does: serve traffic (`gateway`), lead rollouts (`controller`), or both.
    #[arg(long, value_enum, default_value = "all", env = "CANARY_ROLE")]
    pub role: Role,
    /// Restart without refusing a connection: take the listening sockets (and, once released,
    /// the store) of the `canary serve` running with this config, which then drains and exits.
    #[arg(long)]
    pub take_over: bool,
}

/// The parts one `canary serve` process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Gateway listeners, following the routing in the store.
    Gateway,
    /// The rollout controller, campaigning to lead; no listeners.
    Controller,
    /// Both, in one process (the single-machine product).
    All,
}

/// How `canary serve` writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-01-31T12:00:00.250Z  INFO canary_controller::rollouts: leading the controllers candidate=…`.
    Text,
    /// `{"timestamp":"…","level":"INFO","target":"…","message":"…", …fields}`, one object a line.
    Json,
}

/// `canary validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "canary.toml")]
    pub config: PathBuf,
}

/// `canary demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// What the canary (v2) does wrong, if anything.
    #[arg(long, value_enum, default_value_t = Scenario::Healthy)]
    pub scenario: Scenario,
    /// Synthetic users sending traffic.
    #[arg(long, default_value_t = 5000)]
    pub users: usize,
    /// Page visits per second across all users (each visit is a page and its script).
    #[arg(long, default_value_t = 250)]
    pub visits_per_second: u32,
    /// Print the summary as one JSON line, and nothing else.
    #[arg(long)]
    pub json: bool,
}

/// What the demo's canary does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// v2 behaves like v1: the rollout is promoted.
    Healthy,
    /// v2 answers 5 % more requests with a 500 than v1's 1 % baseline.
    Errors,
    /// v2 is 1.5–2× slower.
    Latency,
    /// v2's server dies mid-rollout: its listener closes and connections are refused.
    Crash,
}

impl Scenario {
    /// The name as the command line and the JSON summary spell it.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Healthy => "healthy",
            Scenario::Errors => "errors",
            Scenario::Latency => "latency",
            Scenario::Crash => "crash",
        }
    }
}

/// `canary rollout`: a client of the admin API.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The admin API's base URL.
    #[arg(long, global = true, env = "CANARY_ADMIN", default_value = "http://127.0.0.1:7070")]
    pub admin: String,
    /// Bearer token for the admin API.
    #[arg(long, global = true, env = "CANARY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the answer's `data` as JSON instead of text (one line per poll with `--watch`).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: RolloutCommand,
}

/// The rollout subcommands.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout of a new canary version.
    Start(Box<StartArgs>),
    /// Show the active (or latest) rollout: steps, weight, hold and the judge's verdicts.
    Status(StatusArgs),
    /// Every service on one line each: its rollout's phase, step, weight and the judge's word.
    List,
    /// Make the canary the new stable now, skipping the remaining steps.
    Promote(ActionArgs),
    /// Stop the rollout; every user goes back to stable at once.
    Abort(ActionArgs),
    /// Hold the current weight until `resume`.
    Pause(ActionArgs),
    /// Continue a paused rollout.
    Resume(ServiceArg),
    /// Let a rollout that waits at an `approve` step go on to its next step.
    Approve(ApprovalArgs),
    /// Refuse a rollout that waits at an `approve` step: it is aborted.
    Reject(ApprovalArgs),
    /// Every rollout of a service, oldest first.
    History(ServiceArg),
    /// The event log of a service's rollouts, oldest first.
    Events(EventsArgs),
}

/// `canary rollout start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The service.
    pub service: String,
    /// The canary's version name.
    #[arg(long)]
    pub version: String,
    /// An address of the canary (`host:port`); repeat for several.
    #[arg(long = "upstream", required = true)]
    pub upstreams: Vec<String>,
    /// The plan: weight/hold steps, e.g. `1%/30s,5%/1m,25%/2m,50%/2m,100%`.
    #[arg(long)]
    pub steps: Option<String>,
    /// How long the old stable keeps serving its pinned sessions after promotion (default 10m).
    #[arg(long)]
    pub drain: Option<String>,
    /// How long a step may stay undecided after its hold before the rollout pauses (default 10m).
    #[arg(long)]
    pub max_step_wait: Option<String>,
    /// The judge's false-rollback rate over the whole rollout (default 0.05).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Requests each version must serve in the rollout before a metric can pass.
    #[arg(long)]
    pub min_requests: Option<u64>,
    /// Requests each version must serve within a step before it can advance.
    #[arg(long)]
    pub min_step_requests: Option<u64>,
    /// No latency below this counts as slow or worse (default 25ms).
    #[arg(long)]
    pub latency_floor: Option<String>,
    /// How long after each step begins the canary's latencies are not judged (default 10s).
    #[arg(long)]
    pub warmup: Option<String>,
    /// How much wider "safe" is for steps that lead to less than full traffic (default 1.5;
    /// 1 asks every step for the proof the step to full traffic needs).
    #[arg(long)]
    pub early_step_margin: Option<f64>,
    /// Dry run: the judge's verdicts are shown but never act; steps advance on their hold
    /// (the local breakers still roll back a canary that fails hard).
    #[arg(long)]
    pub observe: bool,
    /// The team's own metrics for this rollout instead of the service's configured ones: a TOML
    /// file of `[[metric]]` tables with the keys of `[[service.metric]]`.
    #[arg(long, value_name = "FILE")]
    pub team_metrics: Option<PathBuf>,
    /// Judge this rollout without the service's configured team metrics.
    #[arg(long, conflicts_with = "team_metrics")]
    pub no_team_metrics: bool,
    /// Run only these of the service's release gates (`[[service.gate]]` names, comma-separated).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub gates: Vec<String>,
    /// Run none of the service's release gates.
    #[arg(long, conflicts_with = "gates")]
    pub no_gates: bool,
    /// Another service of a release train with this one, `SERVICE=VERSION@ADDR[,ADDR…]`; repeat
    /// for more. The members share the plan, the judge's settings and one salt, move together
    /// and roll back together.
    #[arg(long = "with", value_name = "SERVICE=VERSION@ADDRS")]
    pub with: Vec<String>,
}

/// `canary rollout status`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["service", "all"])))]
pub struct StatusArgs {
    /// The service (or `--all`).
    pub service: Option<String>,
    /// Every service that has had a rollout, instead of one.
    #[arg(long)]
    pub all: bool,
    /// Keep redrawing until the rollout (with `--all`: every one shown) ends; exit 0 if
    /// promoted, 2 if any was rolled back, else 3 if any was aborted.
    #[arg(long)]
    pub watch: bool,
    /// How often `--watch` polls.
    #[arg(long, default_value = "500ms")]
    pub interval: String,
}

/// `canary rollout promote|abort|pause`.
#[derive(Debug, Args)]
pub struct ActionArgs {
    /// The service.
    pub service: String,
    /// Why, in words; kept in the rollout's event log.
    #[arg(long)]
    pub reason: Option<String>,
}

/// `canary rollout approve|reject`.
#[derive(Debug, Args)]
pub struct ApprovalArgs {
    /// The service.
    pub service: String,
    /// Why, in words; kept in the rollout's event log.
    #[arg(long)]
    pub reason: Option<String>,
    /// Who approves, for the event log (default: the user running the command, `$USER`).
    #[arg(long)]
    pub by: Option<String>,
}

/// A command that takes only a service.
#[derive(Debug, Args)]
pub struct ServiceArg {
    /// The service.
    pub service: String,
}

/// `canary rollout events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The service.
    pub service: String,
    /// At most this many, the most recent.
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
}
