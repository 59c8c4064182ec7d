//! `canary`: sticky canary releases with automatic rollback, in one binary.

mod admin_client;
mod admin_listener;
mod cli;
mod completions;
mod demo;
mod export;
mod follow;
mod handover;
mod live_view;
mod local_metrics;
mod output;
mod reload;
mod rollout_cli;
mod rollout_list;
mod rollout_status;
mod rollout_view;
mod sd_notify;
mod serve;
mod stack;
mod train_cli;
mod verdict_text;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        cli::Command::Validate(args) => serve::validate(args).map(|()| ExitCode::SUCCESS),
        cli::Command::Demo(args) => demo::run(args),
        cli::Command::Rollout(args) => rollout_cli::run(args),
        cli::Command::Export(args) => export::run(args).map(|()| ExitCode::SUCCESS),
        cli::Command::Completions(args) => completions::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
