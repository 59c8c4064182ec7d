//! Sticky Canary's pure logic, without I/O: the bucket hash, signed session pins, the
//! routing decision, the configuration file, the admin API's types and its access rules.
//!
//! Everything here is deterministic and cheap, so the gateway's hot path, the controller,
//! benchmarks and fuzzers share one implementation.

pub mod admin;
pub mod api;
pub mod bucket;
pub mod clock;
pub mod cohort;
pub mod config;
pub mod gate;
pub mod gateway_api;
pub mod istio;
pub mod judge;
pub mod kubernetes;
pub mod latency;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod pin;
pub mod policy;
pub mod rollout;
pub mod routing;
pub mod schema;
pub mod signature;
pub mod spec;
pub mod team;
pub mod train;
pub mod weight;

pub use routing::{Decision, Force, PinAction, Reason, RequestFacts, RoutingTable, Side, decide};
pub use spec::{RouteError, RouteSpec};
pub use weight::Weight;
