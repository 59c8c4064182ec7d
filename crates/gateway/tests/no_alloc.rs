//! The routing decision of a request allocates nothing: reading its key, cookies, override
//! and navigation facts from a browser-like header map, hashing the key, choosing the version
//! and verifying a pin all borrow from the request.

use std::sync::Arc;

use canary_core::config::Config;
use canary_core::pin::PinKey;
use canary_core::{RequestFacts, decide};
use canary_gateway::request::{PIN_COOKIE, cookie, is_navigation, trusted_force, user_key};
use canary_gateway::{Service, Shared};
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

fn service() -> Service {
    let config = Config::from_toml(CONFIG).unwrap();
    Service::new(&config.services[0], true, Arc::new(Shared::default()))
}

/// What a browser sends for a script of a loaded page.
fn browser_headers(user: &str, pin: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("shop.example"));
    h.insert("user-agent", HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h.insert("accept-language", HeaderValue::from_static("en-US,en;q=0.5"));
    h.insert("accept-encoding", HeaderValue::from_static("gzip, deflate, br, zstd"));
    h.insert("referer", HeaderValue::from_static("https://shop.example/cart"));
    h.insert("sec-fetch-dest", HeaderValue::from_static("script"));
    h.insert("sec-fetch-mode", HeaderValue::from_static("no-cors"));
    h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
    let mut cookies = format!("_ga=GA1.1.123456789.1700000000; theme=dark; uid={user}");
    if let Some(pin) = pin {
        cookies.push_str("; canary_pin=");
        cookies.push_str(pin);
    }
    h.insert("cookie", HeaderValue::from_str(&cookies).unwrap());
    h
}

fn route_one(service: &Service, pins: &PinKey, headers: &HeaderMap) -> canary_core::Decision {
    let settings = &service.settings;
    let route = service.route();
    let facts = RequestFacts {
        key: user_key(settings, headers).expect("the uid cookie is a key"),
        pin: cookie(headers, PIN_COOKIE),
        force: trusted_force(settings, headers, "192.0.2.7".parse().unwrap()),
        boundary: is_navigation(headers),
        canary_healthy: service.canary_open(),
        now: NOW,
    };
    decide(&route.table, pins, settings.pin_ttl_secs, &facts)
}

#[test]
fn deciding_without_a_pin_allocates_nothing() {
    let service = service();
    let pins = PinKey::new(b"secret");
    let requests: Vec<HeaderMap> = (0..64).map(|i| browser_headers(&format!("user-{i:05}"), None)).collect();
    // Warm up lazily initialised state outside the measurement.
    route_one(&service, &pins, &requests[0]);
    let mut canary = 0;
    let info = allocation_counter::measure(|| {
        for headers in &requests {
            canary += usize::from(route_one(&service, &pins, headers).side == canary_core::Side::Canary);
        }
    });
    assert_eq!(info.count_total, 0, "allocations while routing 64 requests: {info:?}");
    assert!(canary < 64, "the split still works");
}

#[test]
fn deciding_with_a_valid_pin_allocates_nothing() {
    let service = service();
    let pins = PinKey::new(b"secret");
    let rollout = service.route().table.rollout_id.clone();
    let pin = pins.sign(&rollout, "v1", NOW + 1800);
    let requests: Vec<HeaderMap> = (0..64).map(|i| browser_headers(&format!("user-{i:05}"), Some(&pin))).collect();
    route_one(&service, &pins, &requests[0]);
    let info = allocation_counter::measure(|| {
        for headers in &requests {
            let decision = route_one(&service, &pins, headers);
            assert_eq!(decision.reason, canary_core::Reason::Pinned);
        }
    });
    assert_eq!(info.count_total, 0, "allocations while routing 64 pinned requests: {info:?}");
}
