//! Child processes the harness starts: each is held by a [`ChildGuard`] whose drop kills it by
//! its PID and reaps it, so no upstream, neighbour or `canary serve` outlives a run — also on an
//! error, a panic, or Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

/// A running child process; killed (by PID) and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
}

impl ChildGuard {
    /// Starts `command` with a piped stdin (children that watch it exit when the harness
    /// goes away) and a piped stdout read line by line on a thread.
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<(ChildGuard, Lines)> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (sender, receiver) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok((ChildGuard { name: name.to_owned(), child }, Lines(receiver)))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A child's stdout, line by line.
#[derive(Debug)]
pub struct Lines(mpsc::UnboundedReceiver<String>);

impl Lines {
    /// Reads lines until `pick` returns a value, for at most `limit`; an error when the child
    /// closes its stdout (it exited) or the time runs out first.
    pub async fn first<T>(&mut self, limit: Duration, mut pick: impl FnMut(&str) -> Option<T>) -> anyhow::Result<T> {
        let wait = async {
            while let Some(line) = self.0.recv().await {
                if let Some(value) = pick(&line) {
                    return Ok(value);
                }
            }
            anyhow::bail!("it exited")
        };
        tokio::time::timeout(limit, wait).await.map_err(|_| anyhow::anyhow!("no answer within {limit:?}"))?
    }

    /// Keeps reading (and dropping) the rest, so the child never blocks on a full pipe.
    pub fn drain(mut self) {
        tokio::spawn(async move { while self.0.recv().await.is_some() {} });
    }
}

/// Every child of a run, killed when this is dropped.
#[derive(Debug, Default)]
pub struct Children(Vec<ChildGuard>);

impl Children {
    /// Keeps `child` until the end of the run.
    pub fn keep(&mut self, child: ChildGuard) {
        self.0.push(child);
    }

    /// The first child that exited, with how.
    pub fn first_exited(&mut self) -> Option<String> {
        self.0
            .iter_mut()
            .find_map(|c| c.exited().map(|status| format!("{} (pid {}) exited: {status}", c.name, c.pid())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_guard_kills_the_child() {
        let mut command = Command::new("sleep");
        command.arg("60");
        let (guard, _lines) = ChildGuard::spawn("sleep", command).unwrap();
        let pid = guard.pid();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        drop(guard);
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(state.is_empty(), "pid {pid} still there: {state}");
    }

    #[tokio::test]
    async fn a_child_that_exits_before_answering_is_an_error() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo hello"]);
        let (_guard, mut lines) = ChildGuard::spawn("sh", command).unwrap();
        let err = lines.first(Duration::from_secs(5), |l| l.strip_prefix("listening ").map(str::to_owned)).await;
        assert_eq!(err.unwrap_err().to_string(), "it exited");
    }
}
