//! The whole routing decision of one request as the gateway makes it, through the gateway's
//! own route phase: read the key, the pin cookie, the override and the navigation facts from a
//! browser-like header map, hash the key, choose the version and verify the pin.

use std::hint::black_box;

use canary_gateway::fixtures::{KeyIn, NOW, browser_headers, conn};
use canary_gateway::proxy::route;
use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;

fn request(c: &mut Criterion) {
    let conn = conn(b"bench secret");
    let snapshot = conn.service.route();
    let pin = conn.pins.sign(&snapshot.table.rollout_id, "v1", NOW + 1800);
    let cases = [
        ("request/header_key_no_pin", KeyIn::Header, None),
        ("request/cookie_key_no_pin", KeyIn::Cookie, None),
        ("request/cookie_key_valid_pin", KeyIn::Cookie, Some(pin.as_str())),
    ];
    for (name, key, pin) in cases {
        let requests: Vec<HeaderMap> = (0..1024).map(|i| browser_headers(&format!("user-{i:05}"), key, pin)).collect();
        let mut i = 0usize;
        c.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(route(&conn, &snapshot, &http::Method::GET, black_box(&requests[i]), NOW))
            })
        });
    }
}

criterion_group!(benches, request);
criterion_main!(benches);
