//! The routing decision per request, keys given: hash, pick, verify pin; and its parts. The
//! gateway's `request` bench adds reading the key and cookies from a header map.

use std::hint::black_box;

use canary_core::bucket::bucket;
use canary_core::pin::PinKey;
use canary_core::{RequestFacts, RoutingTable, Weight, decide};
use criterion::{Criterion, criterion_group, criterion_main};

fn table() -> RoutingTable {
    RoutingTable {
        canary: Some("v2".into()),
        weight: Weight::from_percent(10.0).unwrap(),
        ..RoutingTable::stable_only("web-1", "v1")
    }
}

fn routing(c: &mut Criterion) {
    let t = table();
    let key = PinKey::new(b"bench secret", "web");
    let users: Vec<String> = (0..1024).map(|i| format!("user-{i:06}")).collect();
    let pins: Vec<String> = users.iter().map(|_| key.sign("web-1", "v1", u64::MAX / 2)).collect();
    let now = 1_700_000_000;
    let mut i = 0usize;
    c.bench_function("decide/no_pin", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let facts = RequestFacts {
                key: users[i].as_bytes(),
                pin: None,
                force: None,
                cohort: None,
                boundary: false,
                read_only: true,
                canary_healthy: true,
                now,
            };
            black_box(decide(black_box(&t), &key, 1800, &facts))
        })
    });
    c.bench_function("decide/valid_pin", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let facts = RequestFacts {
                key: users[i].as_bytes(),
                pin: Some(pins[i].as_bytes()),
                force: None,
                cohort: None,
                boundary: false,
                read_only: true,
                canary_healthy: true,
                now,
            };
            black_box(decide(black_box(&t), &key, 1800, &facts))
        })
    });
    c.bench_function("bucket", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(bucket(black_box(t.salt.as_bytes()), users[i].as_bytes()))
        })
    });
    c.bench_function("pin/verify", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(key.verify(black_box(pins[i].as_bytes()), now))
        })
    });
    c.bench_function("pin/sign", |b| b.iter(|| black_box(key.sign(black_box("web-1"), "v1", now + 1800))));
}

criterion_group!(benches, routing);
criterion_main!(benches);
