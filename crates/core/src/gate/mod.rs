//! Release gates: the team's own checks that must pass before a rollout moves on.
//!
//! A gate is a command (the team's test suite, sharded over parallel processes, whose requests
//! reach the canary through the gateway by the trusted override) or an HTTP check. Each gate
//! runs at one moment of a rollout ([`GateWhen`]): before the first user reaches the canary,
//! before each automatic step, before the automatic promotion, or after a rollback (a hook that
//! never blocks).
//!
//! Everything here is pure: the configuration and its checks ([`GateConfig`]), the expansion of
//! `{shard}`/`{shards}` in a command ([`expand`]), the process environment ([`command_env`]),
//! the streaming JUnit summary ([`JunitSummary`]) and the state the API shows ([`GateView`]);
//! an HTTP gate's body is signed like a notification's ([`crate::signature`]). The controller runs the processes and
//! the requests (`canary_controller::gates`).
//!
//! A gate must be idempotent: a controller that restarts while a gate runs runs it again from
//! the start.

mod config;
mod env;
mod junit;
mod state;
mod template;

pub use config::{GateConfig, GateKind, GateWhen, OnFailure, check_gates};
pub use env::{CommandContext, command_env};
pub use junit::{FailedTest, JunitError, JunitSummary, MAX_FAILURES, MAX_MESSAGE, MAX_SLOWEST, SlowTest};
pub use state::{GateStatus, GateView, ShardStatus, ShardView, failure_reason};
pub use template::expand;
