//! Phase 1, **route**: which version serves a request.

use canary_core::{Decision, RequestFacts, decide};
use http::{HeaderMap, Method};

use super::ConnContext;
use crate::request::{Carried, cohort_side, is_navigation, mint_uid, session_pin, trusted_force, user_key};
use crate::service::Route;

/// What the route phase decided for one request.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The version, why, and what to do with the pin.
    pub decision: Decision,
    /// The anonymous id minted for a request that carried no key; the response sets it as the
    /// `canary_uid` cookie.
    pub minted: Option<String>,
}

/// Decides the version of a `method` request with `headers` on `conn`, under the routing snapshot
/// `snapshot`, at `now` (Unix seconds; pins expire by it).
///
/// Reads the user key (the configured sources, else a `canary_uid` the gateway minted, else a
/// new one), the session pin (cookie or header), a trusted override, a release train's cohort
/// token and whether the request is a top-level navigation, then applies [`decide`]. Everything
/// borrows from the headers: nothing is allocated unless an anonymous id has to be minted. The
/// gateway runs it for every request (through `route_carrying`, with the families of fields
/// the request carries found once for the later phases too); its benchmark and its
/// zero-allocation test call it as well.
#[inline]
pub fn route(conn: &ConnContext, snapshot: &Route, method: &Method, headers: &HeaderMap, now: u64) -> Routed {
    route_carrying(conn, snapshot, method, headers, Carried::of(headers), now)
}

/// [`route`], with what the headers carry already known.
#[inline]
pub(super) fn route_carrying(
    conn: &ConnContext,
    snapshot: &Route,
    method: &Method,
    headers: &HeaderMap,
    carried: Carried,
    now: u64,
) -> Routed {
    let ConnContext { service, pins, cohorts, client } = conn;
    let settings = &service.settings;
    let mut minted = None;
    let key = match user_key(settings, headers) {
        Some(key) => key,
        None => minted.insert(mint_uid()).as_bytes(),
    };
    let facts = RequestFacts {
        key,
        pin: session_pin(headers, carried),
        force: carried
            .canary
            .then(|| trusted_force(settings, snapshot.spec.force_token.as_deref(), headers, client.peer.ip()))
            .flatten(),
        cohort: snapshot
            .table
            .train
            .as_deref()
            .filter(|_| carried.canary)
            .and_then(|train| cohort_side(headers, cohorts, train, now)),
        boundary: is_navigation(headers, carried),
        read_only: matches!(*method, Method::GET | Method::HEAD),
        canary_healthy: service.canary_open(),
        now,
    };
    let decision = decide(&snapshot.table, pins, settings.pin_ttl_secs, &facts);
    Routed { decision, minted }
}
