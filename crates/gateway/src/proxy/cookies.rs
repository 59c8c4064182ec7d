//! The session's cookies: the signed pin and the anonymous id.

use std::cell::RefCell;
use std::sync::Arc;

use canary_core::pin::PinKey;
use http::HeaderValue;

use crate::request::PIN_COOKIE;
use crate::service::ServiceSettings;

/// A pin cookie issued recently on this worker thread. The value depends only on the key (one
/// per service), the rollout, the version, the expiry second and the service's cookie
/// attributes, never on the user, so one HMAC and one formatted header serve every response of
/// that second.
struct IssuedPin {
    pins: Arc<PinKey>,
    rollout_id: String,
    version: String,
    expires: u64,
    max_age: u64,
    secure: bool,
    headers: PinHeaders,
}

/// A pin as a response gives it: the `Set-Cookie` for browsers, and the bare token for the
/// `x-canary-pin` header that clients without cookies send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PinHeaders {
    /// `canary_pin=<token>; Path=/; …`.
    pub(super) cookie: HeaderValue,
    /// `<token>`.
    pub(super) token: HeaderValue,
}

/// Versions (stable, canary, draining) times services a worker is likely to serve at once.
const ISSUED_PINS: usize = 8;

thread_local! {
    static ISSUED: RefCell<Vec<IssuedPin>> = const { RefCell::new(Vec::new()) };
}

/// The headers pinning `version` of `rollout_id` until `expires`.
pub(super) fn pin_headers(
    pins: &Arc<PinKey>,
    rollout_id: &str,
    version: &str,
    expires: u64,
    settings: &ServiceSettings,
) -> PinHeaders {
    let (max_age, secure) = (settings.pin_ttl_secs, settings.tls);
    ISSUED.with_borrow_mut(|issued| {
        // Holding the key's Arc keeps its address from being reused by another key.
        let slot = issued.iter().position(|p| {
            Arc::ptr_eq(&p.pins, pins)
                && p.max_age == max_age
                && p.secure == secure
                && p.version == version
                && p.rollout_id == rollout_id
        });
        if let Some(i) = slot
            && issued[i].expires == expires
        {
            return issued[i].headers.clone();
        }
        let token = pins.sign(rollout_id, version, expires);
        let cookie = set_cookie(PIN_COOKIE, &token, max_age, secure);
        let token = HeaderValue::from_str(&token).expect("a pin is a plain token");
        let headers = PinHeaders { cookie, token };
        let entry = IssuedPin {
            pins: pins.clone(),
            rollout_id: rollout_id.to_owned(),
            version: version.to_owned(),
            expires,
            max_age,
            secure,
            headers: headers.clone(),
        };
        match slot {
            Some(i) => issued[i] = entry,
            None if issued.len() < ISSUED_PINS => issued.push(entry),
            None => issued[(expires as usize) % ISSUED_PINS] = entry,
        }
        headers
    })
}

/// A `Set-Cookie` header for an HttpOnly, SameSite=Lax session cookie on `/`.
pub(super) fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&text).expect("pin and uid cookies are plain tokens")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shared;
    use crate::service::Service;
    use canary_core::config::Config;

    fn settings(tls: bool) -> ServiceSettings {
        let text = r#"
[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = { version = "v1", upstreams = ["127.0.0.1:9001"] }
"#;
        let config = Config::from_toml(text).unwrap();
        let mut settings = Service::new(&config.services[0], true, Arc::new(Shared::default())).settings;
        settings.tls = tls;
        settings
    }

    #[test]
    fn a_remembered_pin_cookie_is_the_one_signing_would_give() {
        let pins = Arc::new(PinKey::new(b"k", "web"));
        let other_key = Arc::new(PinKey::new(b"other", "web"));
        let plain = settings(false);
        let fresh = |pins: &PinKey, version, expires, secure| {
            let token = pins.sign("r1", version, expires);
            let cookie = set_cookie(PIN_COOKIE, &token, 1800, secure);
            PinHeaders { cookie, token: HeaderValue::from_str(&token).unwrap() }
        };
        let pin_cookie =
            |pins: &Arc<PinKey>, rollout: &str, version: &str, expires: u64, settings: &ServiceSettings| {
                pin_headers(pins, rollout, version, expires, settings)
            };
        for _ in 0..2 {
            assert_eq!(pin_cookie(&pins, "r1", "v1", 100, &plain), fresh(&pins, "v1", 100, false));
            assert_eq!(pin_cookie(&pins, "r1", "v2", 100, &plain), fresh(&pins, "v2", 100, false));
        }
        assert_eq!(pin_cookie(&pins, "r1", "v1", 101, &plain), fresh(&pins, "v1", 101, false));
        assert_eq!(pin_cookie(&other_key, "r1", "v1", 101, &plain), fresh(&other_key, "v1", 101, false));
        assert_eq!(pin_cookie(&pins, "r1", "v1", 101, &settings(true)), fresh(&pins, "v1", 101, true));
        let other_rollout = pin_cookie(&pins, "r2", "v1", 101, &plain);
        assert_eq!(other_rollout.cookie, set_cookie(PIN_COOKIE, &pins.sign("r2", "v1", 101), 1800, false));
        assert_eq!(other_rollout.token, HeaderValue::from_str(&pins.sign("r2", "v1", 101)).unwrap());
        for expires in 0..(2 * ISSUED_PINS as u64) {
            assert_eq!(pin_cookie(&pins, "r1", "v1", expires, &plain), fresh(&pins, "v1", expires, false));
        }
    }
}
