//! Counting each user once per rollout, without keeping a list of users.
//!
//! The judge's sample-ratio guard compares how many *new users* each version got against the
//! weight. A browser carries its pin, so its first request is recognisable; an API client that
//! sends its key on every request but no cookie would look new every time, and its heavy users
//! would swamp the count. So a user counts as new only the first time its key hash sets a bit in
//! this bitmap. Collisions make some users uncounted, equally for both versions, so the split
//! the guard tests is unbiased; at a million bits the loss stays small up to ~100k users per
//! gateway per rollout. A new rollout gets a new bitmap.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const BITS: usize = 1 << 20;

/// A bitmap of the users seen in one rollout.
#[derive(Debug)]
pub struct UserSketch {
    words: Box<[AtomicU64]>,
}

impl Default for UserSketch {
    fn default() -> Self {
        UserSketch { words: (0..BITS / 64).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl UserSketch {
    /// Whether this is the first time `key_hash` is seen (and marks it seen).
    #[inline]
    pub fn first_sight(&self, key_hash: u64) -> bool {
        // The bucket used the hash modulo 10,000; the high bits are independent of it.
        let bit = (key_hash >> 44) as usize % BITS;
        let word = &self.words[bit / 64];
        let mask = 1u64 << (bit % 64);
        if word.load(Relaxed) & mask != 0 {
            return false;
        }
        word.fetch_or(mask, Relaxed) & mask == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_counts_once() {
        let sketch = UserSketch::default();
        let hashes: Vec<u64> = (0..10_000u64).map(|i| canary_core::bucket::hash(b"r", &i.to_le_bytes())).collect();
        let first: usize = hashes.iter().filter(|h| sketch.first_sight(**h)).count();
        let again: usize = hashes.iter().filter(|h| sketch.first_sight(**h)).count();
        assert!(first > 9_900, "too many collisions: {first}");
        assert_eq!(again, 0);
    }
}
