//! Cohort ranges: the bucket space cut into [`RANGES`] equal, contiguous ranges.
//!
//! A canary at weight `w` takes the users whose bucket is below `w`, so at every weight the
//! canary cohort is a union of whole ranges (plus part of one). The gateways count requests,
//! errors and slow requests per range, labelled with the id of the salt the buckets were
//! computed under ([`cohort_id`]). The controller draws the next rollout's salt when a rollout
//! ends, so by the time the next one starts the gateways have counted, per range, how the very
//! users who will be its canary behaved on stable: the judge's cohort baseline. The same
//! counters, during the rollout, measure how events cluster on users (a heavy or flaky user sits
//! in one range).

use crate::bucket::BUCKETS;

/// Ranges the bucket space is cut into.
pub const RANGES: usize = 100;

/// Buckets per range.
const BUCKETS_PER_RANGE: u16 = BUCKETS / RANGES as u16;

const RANGE_LABELS: [&str; RANGES] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17", "18", "19", "20",
    "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32", "33", "34", "35", "36", "37", "38", "39",
    "40", "41", "42", "43", "44", "45", "46", "47", "48", "49", "50", "51", "52", "53", "54", "55", "56", "57", "58",
    "59", "60", "61", "62", "63", "64", "65", "66", "67", "68", "69", "70", "71", "72", "73", "74", "75", "76", "77",
    "78", "79", "80", "81", "82", "83", "84", "85", "86", "87", "88", "89", "90", "91", "92", "93", "94", "95", "96",
    "97", "98", "99",
];

/// The range of a user in bucket `bucket` (`bucket < 10_000`).
#[inline]
pub fn range_of(bucket: u16) -> usize {
    usize::from(bucket / BUCKETS_PER_RANGE).min(RANGES - 1)
}

/// The `range` label value of range `range` (`range < RANGES`).
pub fn range_label(range: usize) -> &'static str {
    RANGE_LABELS[range]
}

/// The range a `range` label value names.
pub fn range_from_label(label: &str) -> Option<usize> {
    label.parse::<usize>().ok().filter(|r| *r < RANGES)
}

/// The `cohort` label value of the salt `salt`: 16 hex digits of its hash, so the counters say
/// which partition of users they count without publishing the salt that would let a client
/// choose keys for the canary.
pub fn cohort_id(salt: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64_with_seed(salt.as_bytes(), 0xC0_40_27))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cut_the_bucket_space_evenly() {
        assert_eq!(range_of(0), 0);
        assert_eq!(range_of(99), 0);
        assert_eq!(range_of(100), 1);
        assert_eq!(range_of(9_999), RANGES - 1);
        for r in 0..RANGES {
            assert_eq!(range_from_label(range_label(r)), Some(r));
        }
        assert_eq!(range_from_label("100"), None);
        assert_eq!(range_from_label("-1"), None);
    }

    #[test]
    fn cohort_ids_name_salts_without_showing_them() {
        let id = cohort_id("web-7f3a");
        assert_eq!(id.len(), 16);
        assert!(!id.contains("web"));
        assert_eq!(id, cohort_id("web-7f3a"));
        assert_ne!(id, cohort_id("web-7f3b"));
    }
}
