//! Running release gates: the team's commands as process groups, sharded, and HTTP checks.
//!
//! A [`StageRun`] runs every gate of one moment of one step together (all of a step's
//! `before-step` gates, say) in a background task, and the rollout's runner polls it each tick:
//! the step advances only once every gate passed. The pure parts — configuration, the
//! environment, the JUnit summary, the state shown — live in [`canary_core::gate`].
//!
//! Every process of a command gate is the leader of its own process group, so dropping a
//! `StageRun` (an abort, a rollback, the judge's own verdict, a lost leadership) kills the whole
//! group: a test runner's browsers and servers go with it, and nothing is left behind. A
//! controller that restarts mid-gate has no run and starts the gate again: gates must be
//! idempotent.

mod command;
mod context;
mod groups;
mod http;
mod output;
mod stage;

use std::path::PathBuf;

pub use context::RunContext;
pub use stage::{StageOutcome, StageRun, after_rollback};

/// Where gates run and where their output goes.
#[derive(Debug, Clone)]
pub struct GateSettings {
    /// The folder commands run in: the config file's.
    pub work_dir: PathBuf,
    /// The folder their output files and reports go to, under the store's folder.
    pub output_dir: PathBuf,
}

impl Default for GateSettings {
    fn default() -> GateSettings {
        GateSettings { work_dir: PathBuf::from("."), output_dir: std::env::temp_dir().join("canary-gates") }
    }
}
