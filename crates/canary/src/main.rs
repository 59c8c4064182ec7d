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

/// jemalloc keeps a cache per thread for every size class a request allocates: the request's
/// future (about 6 KB, more than glibc's per-thread cache takes) went through glibc's slow path
/// on every request. And it gives the pages of closed connections back to the system
/// (`.cargo/config.toml`) where glibc kept them in its arenas.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

#[cfg(test)]
mod tests {
    #[test]
    fn the_allocator_returns_memory_in_the_background() {
        // The settings come from `.cargo/config.toml` when jemalloc is built: a build without
        // them would keep the memory of closed connections.
        assert!(tikv_jemalloc_ctl::opt::background_thread::read().unwrap());
    }
}
