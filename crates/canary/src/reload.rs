//! `SIGHUP` (`systemctl reload`): re-read the config and, when it is valid, hand the listening
//! sockets over to a new `canary serve` that runs it — nginx's reload, with the new process
//! taking over from this one ([`crate::handover`]), so every setting changes, services come and
//! go, and no connection of a service that stays is refused. An invalid file changes nothing
//! and is reported with `canary validate`'s words.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;
use canary_core::config::Config;
use tokio::signal::unix::Signal;

/// Answers every `SIGHUP` for as long as the process runs.
pub async fn on_hangups(mut hangups: Signal, config_path: PathBuf) {
    while hangups.recv().await.is_some() {
        let path = config_path.display();
        if let Err(e) = Config::load(&config_path) {
            tracing::error!(error = format!("{e:#}"), "SIGHUP: {path} is not valid; keeping the running configuration");
            continue;
        }
        match start_successor() {
            Ok(pid) => tracing::info!(pid, "SIGHUP: {path} re-read; process {pid} takes over with it"),
            Err(e) => tracing::error!(error = format!("{e:#}"), "SIGHUP: cannot start a process with {path}"),
        }
    }
}

/// Starts this binary again with this process's arguments and `--take-over`.
fn start_successor() -> anyhow::Result<u32> {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if !args.iter().any(|arg| arg == "--take-over") {
        args.push("--take-over".into());
    }
    let mut child =
        Command::new(own_binary()?).args(args).stdin(Stdio::null()).spawn().context("cannot start the new process")?;
    let pid = child.id();
    // Reaped if it fails before taking over, while this process still runs.
    std::thread::spawn(move || child.wait());
    Ok(pid)
}

/// The binary this process runs; after an upgrade replaced the file, the new file at that path.
fn own_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe().context("cannot tell which binary runs")?;
    let text = path.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(replaced) => PathBuf::from(replaced),
        None => path,
    })
}
