//! Standard output for every command.
//!
//! A reader that goes away early (`canary rollout abort web | head -1`) closes the pipe under
//! us. `println!` panics on that; a command that has already acted should instead finish what
//! it was doing and exit with its own status, saying nothing. So every line a command prints
//! goes through [`write`]: the first `BrokenPipe` marks standard output closed, and from then
//! on output is dropped while the command carries on. Any other write error (a full disk under
//! `> file`) is an error the command reports.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

/// Set once a write found the reading end of standard output closed.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to standard output and flushes it; does nothing once the reader has gone.
pub fn write(text: fmt::Arguments<'_>) -> anyhow::Result<()> {
    emit(|stdout| stdout.write_fmt(text))
}

/// Writes raw bytes (a generated script) like [`write`].
pub fn write_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    emit(|stdout| stdout.write_all(bytes))
}

fn emit(put: impl FnOnce(&mut io::StdoutLock<'static>) -> io::Result<()>) -> anyhow::Result<()> {
    if CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut stdout = io::stdout().lock();
    match put(&mut stdout).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other.context("cannot write to standard output"),
    }
}

/// `println!` through [`write`]: evaluates to `anyhow::Result<()>`.
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` through [`write`]: evaluates to `anyhow::Result<()>`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};
