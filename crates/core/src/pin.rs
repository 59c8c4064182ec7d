//! Signed session pins: `canary_pin = <rollout id>.<version>.<expires>.<mac>`.
//!
//! A pin says "this browser session runs on this version of this rollout until `expires`"
//! (unix seconds). The MAC is HMAC-SHA256 over `<service> 0x00 <rollout id>.<version>.<expires>`,
//! truncated to 128 bits and base64url-encoded without padding. Rollout ids never contain a dot;
//! version names may (`1.4.2`), so a pin is split at its first dot and its last two.
//!
//! The service is covered by the MAC but not written in the pin: a pin signed for `web` does not
//! verify for `api`, even when both share the pin secret and have versions of the same name.
//! Service names never contain a NUL byte, so the NUL ends the name without ambiguity.
//!
//! Verification allocates nothing: the MAC is decoded into a stack buffer and compared in
//! constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the HMAC kept in a pin.
const MAC_BYTES: usize = 16;
/// Length of the base64url text of the MAC.
const MAC_TEXT: usize = 22;

/// The pin secret, shared by every service of a fleet; it signs nothing until it is bound to a
/// service with [`PinSecret::for_service`].
#[derive(Clone)]
pub struct PinSecret {
    keyed: HmacSha256,
}

/// The key that signs and verifies the pins of one service. Every gateway of a service must
/// share its secret.
#[derive(Clone)]
pub struct PinKey {
    keyed: HmacSha256,
}

impl std::fmt::Debug for PinSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinSecret(..)")
    }
}

impl std::fmt::Debug for PinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinKey(..)")
    }
}

impl PinSecret {
    /// A secret from its bytes (any length; 32 random bytes recommended).
    pub fn new(secret: &[u8]) -> PinSecret {
        PinSecret { keyed: HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length") }
    }

    /// The key of `service`'s pins. The service name goes into the MAC state once, here, so
    /// signing and verifying cost nothing more per request.
    pub fn for_service(&self, service: &str) -> PinKey {
        let mut keyed = self.keyed.clone();
        keyed.update(service.as_bytes());
        keyed.update(&[0]);
        PinKey { keyed }
    }

    /// The key of the cohort tokens a release train's services pass between them
    /// ([`crate::train`]). It starts with a NUL byte, which no service name can, so no pin of
    /// any service verifies as a cohort token or the other way round.
    pub fn for_trains(&self) -> PinKey {
        let mut keyed = self.keyed.clone();
        keyed.update(b"\0train\0");
        PinKey { keyed }
    }
}

/// A pin whose signature checked out; borrows from the cookie value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin<'a> {
    /// The rollout the pin was issued under.
    pub rollout_id: &'a [u8],
    /// The version the session is pinned to.
    pub version: &'a [u8],
    /// Unix time (seconds) after which the pin is void.
    pub expires: u64,
}

impl PinKey {
    /// The key of `service`'s pins under `secret`: [`PinSecret::for_service`] in one step.
    pub fn new(secret: &[u8], service: &str) -> PinKey {
        PinSecret::new(secret).for_service(service)
    }

    /// The cookie value pinning `version` of `rollout_id` until `expires`.
    pub fn sign(&self, rollout_id: &str, version: &str, expires: u64) -> String {
        let mut value = format!("{rollout_id}.{version}.{expires}.");
        let payload_len = value.len() - 1;
        let mut mac = self.keyed.clone();
        mac.update(&value.as_bytes()[..payload_len]);
        let tag = mac.finalize().into_bytes();
        URL_SAFE_NO_PAD.encode_string(&tag[..MAC_BYTES], &mut value);
        value
    }

    /// The pin in `value` if it is well formed, correctly signed and not expired at `now`.
    pub fn verify<'a>(&self, value: &'a [u8], now: u64) -> Option<Pin<'a>> {
        let pin = parse(value)?;
        if pin.expires <= now {
            return None;
        }
        let payload_len = value.len() - MAC_TEXT - 1;
        let mut tag = [0u8; MAC_BYTES + 2];
        let n = URL_SAFE_NO_PAD.decode_slice(&value[payload_len + 1..], &mut tag).ok()?;
        if n != MAC_BYTES {
            return None;
        }
        let mut mac = self.keyed.clone();
        mac.update(&value[..payload_len]);
        mac.verify_truncated_left(&tag[..MAC_BYTES]).ok()?;
        Some(pin)
    }
}

/// Splits a pin into its parts without checking the signature.
fn parse(value: &[u8]) -> Option<Pin<'_>> {
    if value.len() < MAC_TEXT + 6 || value.len() > 512 {
        return None;
    }
    let mac_dot = value.len() - MAC_TEXT - 1;
    if value[mac_dot] != b'.' {
        return None;
    }
    let head = &value[..mac_dot];
    let first = head.iter().position(|&b| b == b'.')?;
    let last = head.iter().rposition(|&b| b == b'.')?;
    if last <= first + 1 {
        return None;
    }
    let rollout_id = &head[..first];
    let version = &head[first + 1..last];
    let expires = parse_u64(&head[last + 1..])?;
    if rollout_id.is_empty() || !version.iter().all(|&b| crate::names::is_name_byte(b)) {
        return None;
    }
    Some(Pin { rollout_id, version, expires })
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PinKey {
        PinKey::new(b"test secret", "web")
    }

    #[test]
    fn a_pin_verifies_only_for_the_service_it_was_signed_for() {
        let secret = PinSecret::new(b"test secret");
        let value = secret.for_service("web").sign("web-7", "v2", 1_000);
        assert!(secret.for_service("web").verify(value.as_bytes(), 0).is_some());
        for other in ["api", "we", "web2", ""] {
            assert!(secret.for_service(other).verify(value.as_bytes(), 0).is_none(), "{other:?}");
        }
        assert_ne!(value, secret.for_service("api").sign("web-7", "v2", 1_000));
    }

    #[test]
    fn a_signed_pin_verifies_until_it_expires() {
        let value = key().sign("web-7", "1.4.2", 1_000);
        let pin = key().verify(value.as_bytes(), 999).expect("valid pin");
        assert_eq!(pin.rollout_id, b"web-7");
        assert_eq!(pin.version, b"1.4.2");
        assert_eq!(pin.expires, 1_000);
        assert!(key().verify(value.as_bytes(), 1_000).is_none());
    }

    #[test]
    fn forged_or_tampered_pins_are_refused() {
        let value = key().sign("web-7", "v1", 1_000);
        let other = PinKey::new(b"another secret", "web");
        assert!(other.verify(value.as_bytes(), 0).is_none());
        let tampered = value.replacen("v1", "v2", 1);
        assert!(key().verify(tampered.as_bytes(), 0).is_none());
        let later = value.replacen("1000", "9000", 1);
        assert!(key().verify(later.as_bytes(), 0).is_none());
        for junk in ["", ".", "a.b.c.d", "web.v2.1000.AAAAAAAAAAAAAAAAAAAAAA", "\u{0}\u{1}"] {
            assert!(key().verify(junk.as_bytes(), 0).is_none(), "{junk:?}");
        }
    }

    #[test]
    fn every_truncation_of_a_pin_is_refused() {
        let value = key().sign("web-7", "v1", 1_000);
        for end in 0..value.len() {
            assert!(key().verify(&value.as_bytes()[..end], 0).is_none());
        }
    }
}
