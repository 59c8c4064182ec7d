//! The bucket rule: which of 10,000 buckets a user key falls in.
//!
//! `bucket = XXH3-64(salt ‖ 0x00 ‖ key, seed 0) mod 10_000`, hashed over the raw bytes in one
//! call. The rule is frozen: every gateway replica, and any other implementation (an edge
//! worker, a mesh filter), must put a key in the same bucket. `docs/bucket-hash.md` holds the
//! specification and test vectors; a test checks them against this code.
//!
//! The separator byte keeps `("ab", "c")` and `("a", "bc")` apart. Salt and key are joined in a
//! stack buffer so the common case allocates nothing; a longer input goes through the streaming
//! hasher, whose output is by definition identical to the one-shot hash of the same bytes.

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// Number of buckets; a weight in basis points selects `weight_bp` of them.
pub const BUCKETS: u16 = 10_000;

/// Inputs up to this many bytes (salt + separator + key) are hashed from a stack buffer.
const STACK_INPUT: usize = 256;

/// The bucket, in `0..10_000`, that `key` falls in under `salt`.
#[inline]
pub fn bucket(salt: &[u8], key: &[u8]) -> u16 {
    (hash(salt, key) % u64::from(BUCKETS)) as u16
}

/// XXH3-64 (seed 0) of `salt ‖ 0x00 ‖ key`.
#[inline]
pub fn hash(salt: &[u8], key: &[u8]) -> u64 {
    let len = salt.len() + 1 + key.len();
    if len <= STACK_INPUT {
        let mut buf = [0u8; STACK_INPUT];
        buf[..salt.len()].copy_from_slice(salt);
        buf[salt.len()] = 0;
        buf[salt.len() + 1..len].copy_from_slice(key);
        xxh3_64(&buf[..len])
    } else {
        let mut hasher = Xxh3::new();
        hasher.update(salt);
        hasher.update(&[0]);
        hasher.update(key);
        hasher.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_hashes_match_the_c_implementation() {
        assert_eq!(xxh3_64(b""), 0x2d06800538d394c2);
        assert_eq!(xxh3_64(b"user-1"), 0x7c7615c11438e5c9);
        assert_eq!(xxh3_64(b"alice@example.com"), 0x76eb895512bf35ff);
    }

    #[test]
    fn long_inputs_hash_like_short_ones() {
        let salt = vec![b's'; 200];
        let key = vec![b'k'; 300];
        let mut joined = salt.clone();
        joined.push(0);
        joined.extend_from_slice(&key);
        assert_eq!(hash(&salt, &key), xxh3_64(&joined));
        let short_key = b"user-1";
        let mut joined = salt.clone();
        joined.push(0);
        joined.extend_from_slice(short_key);
        assert_eq!(hash(&salt, short_key), xxh3_64(&joined));
    }

    #[test]
    fn separator_keeps_salt_and_key_apart() {
        assert_ne!(hash(b"ab", b"c"), hash(b"a", b"bc"));
    }

    #[test]
    fn buckets_are_roughly_uniform() {
        let mut counts = [0u32; 10];
        for i in 0..100_000 {
            let b = bucket(b"rollout-1", format!("user-{i}").as_bytes());
            counts[usize::from(b / 1000)] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "decile count {c}");
        }
    }
}
