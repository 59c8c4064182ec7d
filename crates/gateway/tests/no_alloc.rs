//! The routing decision of a request allocates nothing: loading the routing snapshot, then
//! the gateway's route phase — reading the key, cookies, override and navigation facts from a
//! browser-like header map, hashing the key, choosing the version and verifying a pin — all
//! borrow from the request.

use canary_core::{Reason, Side};
use canary_gateway::fixtures::{KeyIn, NOW, browser_headers, conn};
use canary_gateway::proxy::{ConnContext, Routed, route};
use http::HeaderMap;

/// Routes one request the way the gateway does: one snapshot load, then the route phase.
fn route_one(conn: &ConnContext, headers: &HeaderMap) -> Routed {
    let snapshot = conn.service.route();
    route(conn, &snapshot, &http::Method::GET, headers, NOW)
}

#[test]
fn deciding_without_a_pin_allocates_nothing() {
    let conn = conn(b"secret");
    let requests: Vec<HeaderMap> =
        (0..64).map(|i| browser_headers(&format!("user-{i:05}"), KeyIn::Cookie, None)).collect();
    // Warm up lazily initialised state outside the measurement.
    route_one(&conn, &requests[0]);
    let mut canary = 0;
    let info = allocation_counter::measure(|| {
        for headers in &requests {
            let routed = route_one(&conn, headers);
            assert!(routed.minted.is_none(), "the uid cookie is the key");
            canary += usize::from(routed.decision.side == Side::Canary);
        }
    });
    assert_eq!(info.count_total, 0, "allocations while routing 64 requests: {info:?}");
    assert!(canary < 64, "the split still works");
}

#[test]
fn deciding_with_a_valid_pin_allocates_nothing() {
    let conn = conn(b"secret");
    let rollout = conn.service.route().table.rollout_id.clone();
    let pin = conn.pins.sign(&rollout, "v1", NOW + 1800);
    let requests: Vec<HeaderMap> =
        (0..64).map(|i| browser_headers(&format!("user-{i:05}"), KeyIn::Cookie, Some(&pin))).collect();
    route_one(&conn, &requests[0]);
    let info = allocation_counter::measure(|| {
        for headers in &requests {
            assert_eq!(route_one(&conn, headers).decision.reason, Reason::Pinned);
        }
    });
    assert_eq!(info.count_total, 0, "allocations while routing 64 pinned requests: {info:?}");
}
