//! A gate's output files: where they go, and their last lines.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The most of a file's end that a tail shows.
const TAIL_BYTES: u64 = 1500;
/// The most lines a tail shows.
const TAIL_LINES: usize = 12;

/// The files of one shard of one gate run.
#[derive(Debug, Clone)]
pub struct ShardFiles {
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// Its JUnit report, if it writes one.
    pub report: PathBuf,
}

/// The files of shard `shard` of gate `gate` at step `step` (from 1) in `dir`.
pub fn shard_files(dir: &Path, gate: &str, step: usize, shard: u32) -> ShardFiles {
    let stem = format!("{gate}-step{step}-shard{shard}");
    ShardFiles { log: dir.join(format!("{stem}.log")), report: dir.join(format!("{stem}.xml")) }
}

/// The last lines of `path`, bounded; `None` when it is empty or unreadable.
pub fn tail(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let length = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES))).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let keep = &lines[lines.len().saturating_sub(TAIL_LINES)..];
    let tail = keep.join("\n");
    (!tail.trim().is_empty()).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_is_the_last_lines_of_a_long_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let text: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = tail(&path).unwrap();
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(tail.ends_with("line 9999"), "{tail}");
        std::fs::write(&path, "").unwrap();
        assert_eq!(super::tail(&path), None);
    }
}
