//! The process groups of a stage's running commands, killed together.

use std::collections::HashSet;
use std::sync::Mutex;

use rustix::process::{Pid, Signal, kill_process_group};

/// Process groups still running; once closed, any group added is killed at once.
#[derive(Debug, Default)]
pub struct ProcessGroups {
    inner: Mutex<Groups>,
}

#[derive(Debug, Default)]
struct Groups {
    running: HashSet<i32>,
    closed: bool,
}

impl ProcessGroups {
    /// Records the group led by `pid` (spawned with `process_group(0)`).
    pub fn add(&self, pid: u32) {
        let mut groups = self.inner.lock().expect("groups");
        let pid = pid as i32;
        if groups.closed {
            kill(pid);
        } else {
            groups.running.insert(pid);
        }
    }

    /// Kills the group led by `pid`, whatever is left of it, and forgets it.
    pub fn end(&self, pid: u32) {
        let pid = pid as i32;
        self.inner.lock().expect("groups").running.remove(&pid);
        kill(pid);
    }

    /// Kills every group, and every group added from now on.
    pub fn kill_all(&self) {
        let mut groups = self.inner.lock().expect("groups");
        groups.closed = true;
        for pid in groups.running.drain() {
            kill(pid);
        }
    }
}

fn kill(pid: i32) {
    // A group that is already gone (ESRCH) is what we want.
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = kill_process_group(pid, Signal::KILL);
    }
}
