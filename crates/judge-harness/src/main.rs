//! `judge-harness`: measures the rollout judge through the real system — a release build of
//! `canary serve`, one upstream process per version, and sticky synthetic users on loopback —
//! by running rollouts back to back and counting how they end. See docs/judge-harness.md.

mod admin;
mod children;
mod cli;
mod load;
mod record;
mod report;
mod rollouts;
mod run;
mod scenario;
mod serve;
mod spin;
mod system;
mod trace;
mod upstream;
mod users;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let outcome = match cli::Cli::parse().command {
        cli::Command::Upstream(args) => upstream::serve(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Run(args) => run::run(&args),
        cli::Command::Spin(args) => spin::spin(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Report(args) => report::print_file(&args.results).map(|()| ExitCode::SUCCESS),
        cli::Command::Trace(args) => trace::print_file(&args.trace, args.slow_ms).map(|()| ExitCode::SUCCESS),
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}
