//! HMAC-SHA256 signatures of request bodies, the way webhook receivers check them: the header
//! `x-canary-signature: sha256=<hex>` carries the lower-case hex HMAC of the exact body bytes
//! under a shared secret. Notifications sign with it; anything else that calls out (an HTTP
//! release gate) signs the same way, so a receiver verifies every caller with one function.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-canary-signature";

/// `sha256=<hex HMAC-SHA256 of body under secret>`, the value of [`SIGNATURE_HEADER`].
pub fn sign_body(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut text = String::with_capacity(7 + 2 * digest.len());
    text.push_str("sha256=");
    for byte in digest {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Whether `header` is the signature of `body` under `secret` (compared in constant time).
pub fn verify_body(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else { return false };
    let Some(given) = decode_hex(hex) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_4231_test_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign_body(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_changed_body_or_secret_does_not_verify() {
        let header = sign_body(b"0123456789abcdef", b"{\"a\":1}");
        assert!(verify_body(b"0123456789abcdef", b"{\"a\":1}", &header));
        assert!(!verify_body(b"0123456789abcdef", b"{\"a\":2}", &header));
        assert!(!verify_body(b"0123456789abcdeX", b"{\"a\":1}", &header));
        assert!(!verify_body(b"0123456789abcdef", b"{\"a\":1}", "sha1=00"));
        assert!(!verify_body(b"0123456789abcdef", b"{\"a\":1}", "sha256=zz"));
    }
}
