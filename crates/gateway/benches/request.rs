//! The whole routing decision of one request as the gateway makes it: read the key, the pin
//! cookie, the override and the navigation facts from a browser-like header map, hash the key,
//! choose the version and verify the pin.

use std::hint::black_box;
use std::sync::Arc;

use canary_core::config::Config;
use canary_core::pin::PinKey;
use canary_core::{RequestFacts, decide};
use canary_gateway::request::{PIN_COOKIE, cookie, is_navigation, trusted_force, user_key};
use canary_gateway::{Service, Shared};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};

const CONFIG: &str = r#"
[[service]]
name = "web"
listen = "127.0.0.1:0"
user_key = ["header:x-user-id", "cookie:uid"]
trusted_cidrs = ["10.0.0.0/8"]
stable = { version = "v1", upstreams = ["127.0.0.1:9001"] }
canary = { version = "v2", upstreams = ["127.0.0.1:9002"] }
weight = 10
"#;

const NOW: u64 = 1_700_000_000;

fn browser_headers(user: &str, key_in_header: bool, pin: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("shop.example"));
    h.insert("user-agent", HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h.insert("accept-language", HeaderValue::from_static("en-US,en;q=0.5"));
    h.insert("accept-encoding", HeaderValue::from_static("gzip, deflate, br, zstd"));
    h.insert("sec-fetch-dest", HeaderValue::from_static("script"));
    h.insert("sec-fetch-mode", HeaderValue::from_static("no-cors"));
    let mut cookies = String::from("_ga=GA1.1.123456789.1700000000; theme=dark");
    if key_in_header {
        h.insert("x-user-id", HeaderValue::from_str(user).unwrap());
    } else {
        cookies.push_str("; uid=");
        cookies.push_str(user);
    }
    if let Some(pin) = pin {
        cookies.push_str("; canary_pin=");
        cookies.push_str(pin);
    }
    h.insert("cookie", HeaderValue::from_str(&cookies).unwrap());
    h
}

fn request(c: &mut Criterion) {
    let config = Config::from_toml(CONFIG).unwrap();
    let service = Service::new(&config.services[0], true, Arc::new(Shared::default()));
    let pins = PinKey::new(b"bench secret");
    let route = service.route();
    let settings = &service.settings;
    let pin = pins.sign(&route.table.rollout_id, "v1", NOW + 1800);
    let peer = "192.0.2.7".parse().unwrap();
    let cases = [
        ("request/header_key_no_pin", true, None),
        ("request/cookie_key_no_pin", false, None),
        ("request/cookie_key_valid_pin", false, Some(pin.as_str())),
    ];
    for (name, key_in_header, pin) in cases {
        let requests: Vec<HeaderMap> =
            (0..1024).map(|i| browser_headers(&format!("user-{i:05}"), key_in_header, pin)).collect();
        let mut i = 0usize;
        c.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                let headers = black_box(&requests[i]);
                let facts = RequestFacts {
                    key: user_key(settings, headers).unwrap_or(b""),
                    pin: cookie(headers, PIN_COOKIE),
                    force: trusted_force(settings, headers, peer),
                    boundary: is_navigation(headers),
                    canary_healthy: service.canary_open(),
                    now: NOW,
                };
                black_box(decide(&route.table, &pins, settings.pin_ttl_secs, &facts))
            })
        });
    }
}

criterion_group!(benches, request);
criterion_main!(benches);
