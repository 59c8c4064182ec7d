//! Reading what the routing decision needs from a request: the user key, the pin, a trusted
//! override and whether the request is a top-level navigation. Everything borrows from the
//! request's headers; nothing is allocated.

use std::net::IpAddr;

use canary_core::Force;
use http::header::{ACCEPT, COOKIE};
use http::{HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

use crate::service::{KeyFrom, ServiceSettings};

/// The cookie holding the session pin.
pub const PIN_COOKIE: &str = "canary_pin";
/// The header form of the session pin, for clients without cookies (apps, service workers,
/// servers): the same signed token, sent as a request header and given back as a response
/// header whenever the gateway issues a pin.
pub const PIN_HEADER: &str = "x-canary-pin";
/// The response header telling a page that the version it runs was rolled back.
pub const VERSION_GONE_HEADER: &str = "x-canary-version-gone";
/// The cookie holding the anonymous user id the gateway mints.
pub const UID_COOKIE: &str = "canary_uid";
/// The override header.
pub const FORCE_HEADER: &str = "x-canary-force";
/// The header carrying the override token.
pub const FORCE_TOKEN_HEADER: &str = "x-canary-force-token";

// Parsed once: a lookup by `&str` parses and lower-cases the name on every call.
/// [`FORCE_HEADER`] as a header name.
pub static FORCE: HeaderName = HeaderName::from_static(FORCE_HEADER);
/// [`FORCE_TOKEN_HEADER`] as a header name.
pub static FORCE_TOKEN: HeaderName = HeaderName::from_static(FORCE_TOKEN_HEADER);
/// [`canary_core::train::COHORT_HEADER`] as a header name.
pub static COHORT: HeaderName = HeaderName::from_static(canary_core::train::COHORT_HEADER);
/// [`PIN_HEADER`] as a header name.
pub static PIN: HeaderName = HeaderName::from_static(PIN_HEADER);
/// [`VERSION_GONE_HEADER`] as a header name.
pub static VERSION_GONE: HeaderName = HeaderName::from_static(VERSION_GONE_HEADER);
static SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");
static SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");

/// Which families of fields a request carries, found in one pass over its names. A lookup of
/// a field that is not there hashes its name all the same, and most requests carry none of the
/// gateway's own fields (`x-canary-…`: pin, override, cohort) and many no fetch metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    /// A field named `x-canary-…`.
    pub canary: bool,
    /// A field named `sec-fetch-…`.
    pub fetch_metadata: bool,
    /// A field named `x-forwarded-…`.
    pub forwarded: bool,
}

impl Carried {
    /// What `headers` carry.
    pub fn of(headers: &HeaderMap) -> Carried {
        let mut carried = Carried { canary: false, fetch_metadata: false, forwarded: false };
        for name in headers.keys() {
            let name = name.as_str();
            carried.canary |= name.starts_with("x-canary-");
            carried.fetch_metadata |= name.starts_with("sec-fetch-");
            carried.forwarded |= name.starts_with("x-forwarded-");
        }
        carried
    }
}

/// The value of cookie `name`, from any `Cookie` header. Malformed pairs are skipped.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    let name = name.as_bytes();
    for header in headers.get_all(COOKIE) {
        for pair in header.as_bytes().split(|&b| b == b';') {
            let pair = trim(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if trim(&pair[..eq]) != name {
                continue;
            }
            let mut value = trim(&pair[eq + 1..]);
            if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
                value = &value[1..value.len() - 1];
            }
            if !value.is_empty() {
                return Some(value);
            }
        }
    }
    None
}

/// The session pin the request carries: the `canary_pin` cookie, else the `x-canary-pin`
/// header. Either is only a candidate: [`canary_core::decide`] checks its signature.
pub fn session_pin(headers: &HeaderMap, carried: Carried) -> Option<&[u8]> {
    let header = || headers.get(&PIN).map(|v| trim(v.as_bytes())).filter(|v| !v.is_empty());
    cookie(headers, PIN_COOKIE).or_else(|| if carried.canary { header() } else { None })
}

/// The side a release train's cohort token in `headers` names, when it is of `train`, correctly
/// signed by `cohorts` and unexpired at `now`.
pub fn cohort_side(
    headers: &HeaderMap,
    cohorts: &canary_core::pin::PinKey,
    train: &str,
    now: u64,
) -> Option<canary_core::Side> {
    let token = trim(headers.get(&COHORT)?.as_bytes());
    canary_core::train::verify_cohort(cohorts, train, token, now)
}

/// `s` without surrounding spaces and tabs (HTTP's optional whitespace).
pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The items of a comma-separated field value, without their surrounding whitespace.
pub(crate) fn list_items(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim)
}

/// Whether the comma-separated field value `value` holds `token`, in any case.
pub(crate) fn list_has(value: &[u8], token: &[u8]) -> bool {
    list_items(value).any(|item| item.eq_ignore_ascii_case(token))
}

/// The user key from the configured sources, else the minted anonymous id.
pub fn user_key<'a>(settings: &ServiceSettings, headers: &'a HeaderMap) -> Option<&'a [u8]> {
    for source in &settings.key_sources {
        let found = match source {
            KeyFrom::Header(name) => headers.get(name).map(|v| trim(v.as_bytes())),
            KeyFrom::Cookie(name) => cookie(headers, name),
        };
        if let Some(key) = found.filter(|k| !k.is_empty()) {
            return Some(key);
        }
    }
    cookie(headers, UID_COOKIE).filter(|uid| is_minted_uid(uid))
}

/// Whether a `canary_uid` value looks like one the gateway minted (32 lower-case hex digits).
pub fn is_minted_uid(uid: &[u8]) -> bool {
    uid.len() == 32 && uid.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh anonymous user id.
pub fn mint_uid() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// The override the client asked for, if it may ask: from a trusted network, with the
/// service's configured token, or with the token of the rollout in force (`rollout_token`,
/// drawn by the controller for the rollout's release gates and valid for that rollout only).
pub fn trusted_force(
    settings: &ServiceSettings,
    rollout_token: Option<&str>,
    headers: &HeaderMap,
    peer: IpAddr,
) -> Option<Force> {
    let asked = headers.get(&FORCE)?.as_bytes();
    let force = if asked.eq_ignore_ascii_case(b"canary") {
        Force::Canary
    } else if asked.eq_ignore_ascii_case(b"stable") {
        Force::Stable
    } else {
        return None;
    };
    // Constant time in the bytes compared, so a guess learns nothing from the answer's
    // timing but the token's length, which is no secret (config asks at least 16).
    let matches =
        |expected: Option<&str>, given: &[u8]| expected.is_some_and(|e| bool::from(e.as_bytes().ct_eq(given)));
    let by_token = headers.get(&FORCE_TOKEN).is_some_and(|given| {
        let given = given.as_bytes();
        matches(settings.force_token.as_deref(), given) | matches(rollout_token, given)
    });
    (by_token || settings.is_trusted(peer)).then_some(force)
}

/// Whether the request starts a new page: a top-level document navigation. Uses the fetch
/// metadata headers when the browser sends them, else an HTML `Accept`.
pub fn is_navigation(headers: &HeaderMap, carried: Carried) -> bool {
    if let Some(dest) = headers.get(&SEC_FETCH_DEST).filter(|_| carried.fetch_metadata) {
        return dest.as_bytes() == b"document";
    }
    if let Some(mode) = headers.get(&SEC_FETCH_MODE).filter(|_| carried.fetch_metadata) {
        return mode.as_bytes() == b"navigate";
    }
    headers.get(ACCEPT).is_some_and(|accept| accept.as_bytes().windows(9).any(|w| w.eq_ignore_ascii_case(b"text/html")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn finds_cookies_across_headers_and_skips_junk() {
        let h = headers(&[("cookie", "a=1; ;junk; uid = \"u-7\" "), ("cookie", "canary_pin=p")]);
        assert_eq!(cookie(&h, "uid"), Some(&b"u-7"[..]));
        assert_eq!(cookie(&h, "canary_pin"), Some(&b"p"[..]));
        assert_eq!(cookie(&h, "a"), Some(&b"1"[..]));
        assert_eq!(cookie(&h, "junk"), None);
        assert_eq!(cookie(&headers(&[("cookie", "=;==;;x=")]), "x"), None);
    }

    fn pin_of(h: &HeaderMap) -> Option<&[u8]> {
        session_pin(h, Carried::of(h))
    }

    fn navigates(h: &HeaderMap) -> bool {
        is_navigation(h, Carried::of(h))
    }

    #[test]
    fn the_pin_comes_from_the_cookie_else_the_header() {
        assert_eq!(pin_of(&headers(&[(PIN_HEADER, " p-header ")])), Some(&b"p-header"[..]));
        let both = headers(&[(PIN_HEADER, "p-header"), ("cookie", "canary_pin=p-cookie")]);
        assert_eq!(pin_of(&both), Some(&b"p-cookie"[..]));
        assert_eq!(pin_of(&headers(&[(PIN_HEADER, "")])), None);
        assert_eq!(pin_of(&headers(&[])), None);
    }

    #[test]
    fn navigation_prefers_fetch_metadata() {
        assert!(navigates(&headers(&[("sec-fetch-dest", "document"), ("sec-fetch-mode", "navigate")])));
        assert!(!navigates(&headers(&[("sec-fetch-dest", "script"), ("accept", "text/html")])));
        assert!(!navigates(&headers(&[("sec-fetch-dest", "iframe"), ("sec-fetch-mode", "navigate")])));
        assert!(navigates(&headers(&[("accept", "text/html,application/xhtml+xml")])));
        assert!(!navigates(&headers(&[("accept", "*/*")])));
    }

    #[test]
    fn one_pass_tells_which_families_of_fields_a_request_carries() {
        let none = Carried { canary: false, fetch_metadata: false, forwarded: false };
        let near_misses = headers(&[("host", "a"), ("x-canary", "1"), ("sec-fetch", "x"), ("x-forwarded", "x")]);
        assert_eq!(Carried::of(&near_misses), none);
        let all = headers(&[("X-Canary-Force", "canary"), ("Sec-Fetch-Mode", "navigate"), ("X-Forwarded-For", "a")]);
        let every = Carried { canary: true, fetch_metadata: true, forwarded: true };
        assert_eq!(Carried::of(&all), every, "names are lower case in a map");
        assert!(pin_of(&headers(&[(PIN_HEADER, "p")])).is_some());
        assert_eq!(
            session_pin(&headers(&[(PIN_HEADER, "p")]), none),
            None,
            "the header is looked up only when carried"
        );
    }

    /// The settings of the first service of a config file.
    fn settings_of(text: &str) -> ServiceSettings {
        let config = canary_core::config::Config::from_toml(text).unwrap();
        let shared = std::sync::Arc::new(crate::Shared::default());
        crate::Service::new(&config.services[0], true, shared).settings
    }

    #[test]
    fn only_the_exact_token_trusts_an_override_from_anywhere() {
        let text = r#"
[[service]]
name = "web"
listen = "127.0.0.1:0"
force_token = "qa-token-1234567890"
stable = { version = "v1", upstreams = ["127.0.0.1:9001"] }
"#;
        let settings = settings_of(text);
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let forced = |token: &'static str| {
            let h = headers(&[(FORCE_HEADER, "canary"), (FORCE_TOKEN_HEADER, token)]);
            trusted_force(&settings, None, &h, peer)
        };
        assert_eq!(forced("qa-token-1234567890"), Some(Force::Canary));
        for wrong in ["", "qa-token-123456789", "qa-token-12345678901", "QA-TOKEN-1234567890"] {
            assert_eq!(forced(wrong), None, "{wrong:?}");
        }
        assert_eq!(trusted_force(&settings, None, &headers(&[(FORCE_HEADER, "canary")]), peer), None);
    }

    #[test]
    fn the_rollout_token_trusts_an_override_while_its_rollout_is_in_force() {
        let text = r#"
[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = { version = "v1", upstreams = ["127.0.0.1:9001"] }
"#;
        let settings = settings_of(text);
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let h = headers(&[(FORCE_HEADER, "canary"), (FORCE_TOKEN_HEADER, "0123456789abcdef0123456789abcdef")]);
        assert_eq!(trusted_force(&settings, Some("0123456789abcdef0123456789abcdef"), &h, peer), Some(Force::Canary));
        assert_eq!(trusted_force(&settings, Some("fedcba9876543210fedcba9876543210"), &h, peer), None);
        assert_eq!(trusted_force(&settings, None, &h, peer), None);
    }

    #[test]
    fn minted_uids_are_recognised() {
        let uid = mint_uid();
        assert!(is_minted_uid(uid.as_bytes()));
        assert!(!is_minted_uid(b"not-a-uid"));
        assert_ne!(uid, mint_uid());
    }
}
