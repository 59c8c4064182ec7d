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
    /// Run a self-contained demonstration: demo upstreams, synthetic users, a gateway.
    Demo(DemoArgs),
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
    /// Synthetic users sending traffic.
    #[arg(long, default_value_t = 2000)]
    pub users: usize,
    /// Seconds each weight step lasts.
    #[arg(long, default_value_t = 2.0)]
    pub step_seconds: f64,
    /// Print the summary as one JSON line.
    #[arg(long)]
    pub json: bool,
}
