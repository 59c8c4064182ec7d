//! The per-request context: what every phase of one request reads and writes.

use std::sync::Arc;

use canary_core::{Decision, Side};
use http::{HeaderMap, Method, StatusCode};
use tokio::time::Instant;

use super::ConnContext;
use super::record::record;
use super::route::{Routed, route_carrying};
use crate::metrics::UpstreamErrorTally;
use crate::request::Carried;
use crate::service::{Route, ServiceSettings, VersionTarget};

/// One request, from its first phase to its last. Made by the route phase; dropped after the
/// response phase, which runs the record phase.
pub struct RequestCtx<'c> {
    /// The connection the request came on.
    pub(super) conn: &'c ConnContext,
    /// The routing snapshot, loaded once: the version the request chose, the upstreams it used
    /// and the counters it moves all belong to one routing state.
    pub(super) route: Arc<Route>,
    /// When the request arrived; its latency runs from here to its response head.
    pub(super) started: Instant,
    /// Unix seconds at arrival, for pin expiry.
    pub(super) now: u64,
    /// What the route phase decided.
    pub(super) decision: Decision,
    /// The anonymous id minted for a request without a key.
    pub(super) minted: Option<String>,
    /// The version the request is with: the decided one, or stable once it was sent there again.
    pub(super) side: Side,
    /// Which families of fields the client's request carries.
    pub(super) carried: Carried,
    /// What happened upstream and downstream, for the record phase.
    pub(super) outcome: Outcome,
}

/// What happened to a request after it was routed.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Upstream failures met on the decided version.
    pub(super) errors: UpstreamErrorTally,
    /// Set when the request was sent again to stable, with the failures met there.
    pub(super) retry: Option<UpstreamErrorTally>,
    /// The status sent to the client, once there is a response.
    pub(super) status: Option<StatusCode>,
}

impl<'c> RequestCtx<'c> {
    /// Starts a request on `conn`: takes the time, loads the routing snapshot once and runs the
    /// route phase on `method` and `headers`.
    #[inline]
    pub(super) fn new(conn: &'c ConnContext, method: &Method, headers: &HeaderMap) -> RequestCtx<'c> {
        let started = Instant::now();
        let snapshot = conn.service.route();
        let now = canary_core::clock::unix_secs();
        let carried = Carried::of(headers);
        let Routed { decision, minted } = route_carrying(conn, &snapshot, method, headers, carried, now);
        RequestCtx {
            conn,
            route: snapshot,
            started,
            now,
            side: decision.side,
            decision,
            minted,
            carried,
            outcome: Outcome::default(),
        }
    }

    /// The service's fixed settings.
    pub(super) fn settings(&self) -> &'c ServiceSettings {
        &self.conn.service.settings
    }

    /// The version the request is with now.
    pub(super) fn target(&self) -> &VersionTarget {
        self.route.target(self.side)
    }
}

impl Drop for RequestCtx<'_> {
    fn drop(&mut self) {
        // Recording on drop reaches the requests whose client went away mid-exchange too: they
        // still count their decision, their upstream failures and their retry. A panicking
        // request records nothing rather than risk a second panic while unwinding.
        if !std::thread::panicking() {
            record(self);
        }
    }
}
