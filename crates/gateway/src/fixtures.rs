//! What the gateway's benchmark and its zero-allocation test route: one service and the
//! headers a browser sends, written once so that both measure the same requests through the
//! gateway's own [`route`](crate::proxy::route). Not part of the gateway's interface.

use std::net::SocketAddr;
use std::sync::Arc;

use canary_core::config::Config;
use canary_core::pin::PinKey;
use http::{HeaderMap, HeaderValue};

use crate::proxy::{ClientConn, ConnContext};
use crate::service::{Service, Shared};

/// Service `web`: stable `v1`, canary `v2` at 10 %, keys from `x-user-id` then cookie `uid`.
pub const CONFIG: &str = r#"
[[service]]
name = "web"
listen = "127.0.0.1:0"
user_key = ["header:x-user-id", "cookie:uid"]
trusted_cidrs = ["10.0.0.0/8"]
stable = { version = "v1", upstreams = ["127.0.0.1:9001"] }
canary = { version = "v2", upstreams = ["127.0.0.1:9002"] }
weight = 10
"#;

/// The Unix second the fixture requests arrive at.
pub const NOW: u64 = 1_700_000_000;

/// A client connection to [`CONFIG`]'s service from an untrusted address, with pins signed
/// by `secret`.
pub fn conn(secret: &[u8]) -> ConnContext {
    let config = Config::from_toml(CONFIG).expect("the fixture config is valid");
    let service = Service::new(&config.services[0], true, Arc::new(Shared::default()));
    let peer: SocketAddr = "192.0.2.7:50000".parse().expect("a socket address");
    ConnContext {
        service: Arc::new(service),
        pins: Arc::new(PinKey::new(secret, "web")),
        cohorts: Arc::new(canary_core::pin::PinSecret::new(secret).for_trains()),
        client: ClientConn::new(peer, false),
    }
}

/// Where a fixture request carries its user key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyIn {
    /// The `x-user-id` header.
    Header,
    /// The `uid` cookie.
    Cookie,
}

/// What a browser sends for a script of a loaded page of user `user`, with its key where
/// `key` says and `pin` as its `canary_pin` cookie.
pub fn browser_headers(user: &str, key: KeyIn, pin: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("shop.example"));
    h.insert("user-agent", HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h.insert("accept-language", HeaderValue::from_static("en-US,en;q=0.5"));
    h.insert("accept-encoding", HeaderValue::from_static("gzip, deflate, br, zstd"));
    h.insert("sec-fetch-dest", HeaderValue::from_static("script"));
    h.insert("sec-fetch-mode", HeaderValue::from_static("no-cors"));
    let mut cookies = String::from("_ga=GA1.1.123456789.1700000000; theme=dark");
    match key {
        KeyIn::Header => {
            h.insert("x-user-id", HeaderValue::from_str(user).expect("a user id is a header value"));
        }
        KeyIn::Cookie => {
            cookies.push_str("; uid=");
            cookies.push_str(user);
        }
    }
    if let Some(pin) = pin {
        cookies.push_str("; canary_pin=");
        cookies.push_str(pin);
    }
    h.insert("cookie", HeaderValue::from_str(&cookies).expect("cookies are a header value"));
    h
}
