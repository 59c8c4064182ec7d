//! The test vectors of `docs/bucket-hash.md` hold for this implementation.

use canary_core::bucket::{bucket, hash};

fn cell(text: &str) -> String {
    let text = text.trim();
    if let Some((unit, times)) = text.split_once(" × ") {
        let unit = unit.trim_matches('`');
        return unit.repeat(times.trim().parse().expect("repeat count"));
    }
    text.trim_matches('`').to_owned()
}

#[test]
fn bucket_hash_doc_vectors() {
    let doc = include_str!("../../../docs/bucket-hash.md");
    let rows: Vec<Vec<&str>> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| salt |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').collect())
        .collect();
    assert_eq!(rows.len(), 8, "the doc's table lost rows");
    for row in rows {
        let (salt, key) = (cell(row[0]), cell(row[1]));
        let expected_hash = u64::from_str_radix(cell(row[2]).as_str(), 16).expect("hex hash");
        let expected_bucket: u16 = cell(row[3]).parse().expect("bucket");
        assert_eq!(hash(salt.as_bytes(), key.as_bytes()), expected_hash, "hash of {salt:?}/{key:?}");
        assert_eq!(bucket(salt.as_bytes(), key.as_bytes()), expected_bucket, "bucket of {salt:?}/{key:?}");
    }
}
