//! A per-request trace (`run --trace FILE`) and its summary (`judge-harness trace FILE`).
//!
//! One tab-separated line per answered request, as the user saw it: unix seconds at the
//! answer, service, the version that answered (`x-canary-version`), latency in ms, `nav` or
//! `fetch`, status. The summary compares each canary's first seconds with the other versions
//! of its service in the same seconds: a canary that is slow only while it is new (cold
//! connections, a cold process) shows there, and that is what the judge's tail test sees at a
//! low weight.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use tokio::sync::mpsc;

/// Windows after a canary's first request, in seconds.
const WINDOWS: [(f64, f64); 4] = [(0.0, 1.0), (1.0, 3.0), (3.0, 10.0), (10.0, 30.0)];

/// Where request lines go; written by a background task.
#[derive(Debug, Clone)]
pub struct Trace(mpsc::UnboundedSender<String>);

/// One answered request.
#[derive(Debug, Clone, Copy)]
pub struct TracedRequest<'a> {
    /// The service.
    pub service: &'a str,
    /// The version that answered.
    pub version: &'a str,
    /// Latency as the user saw it, in ms.
    pub latency_ms: f64,
    /// Whether it was a page navigation.
    pub navigation: bool,
    /// The status.
    pub status: u16,
}

impl Trace {
    /// Creates (truncates) `path` and writes lines to it until every sender is gone.
    pub fn create(path: &Path) -> anyhow::Result<Trace> {
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let (sender, mut lines) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            let mut out = std::io::BufWriter::new(file);
            while let Some(line) = lines.recv().await {
                let _ = writeln!(out, "{line}");
                if lines.is_empty() {
                    let _ = out.flush();
                }
            }
        });
        Ok(Trace(sender))
    }

    /// Adds one request.
    pub fn request(&self, request: &TracedRequest<'_>) {
        let at = canary_core::clock::unix_secs_f64();
        let kind = if request.navigation { "nav" } else { "fetch" };
        let TracedRequest { service, version, latency_ms, status, .. } = *request;
        let _ = self.0.send(format!("{at:.4}\t{service}\t{version}\t{latency_ms:.3}\t{kind}\t{status}"));
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    at: f64,
    service: String,
    version: String,
    latency_ms: f64,
}

fn parse(text: &str) -> Vec<Row> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [at, service, version, latency, ..] = fields.as_slice() else { return None };
            Some(Row {
                at: at.parse().ok()?,
                service: (*service).to_owned(),
                version: (*version).to_owned(),
                latency_ms: latency.parse().ok()?,
            })
        })
        .collect()
}

/// Prints the summary of a trace file, counting requests slower than `slow_ms` as slow.
pub fn print_file(path: &Path, slow_ms: f64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    print!("{}", summary(&parse(&text), slow_ms));
    Ok(())
}

/// Slow shares of each canary (versions `v2-*`) in windows after its first request, against
/// the other versions of its service in the same windows.
fn summary(rows: &[Row], slow_ms: f64) -> String {
    let mut first: HashMap<(&str, &str), f64> = HashMap::new();
    for row in rows.iter().filter(|r| r.version.starts_with("v2-")) {
        first.entry((&row.service, &row.version)).or_insert(row.at);
    }
    let mut out = format!(
        "{} canaries; slow = over {slow_ms} ms as the user saw it\n{:<12} {:>22} {:>22}\n",
        first.len(),
        "window",
        "canary slow/requests",
        "others slow/requests"
    );
    for (from, to) in WINDOWS {
        let (mut canary, mut others) = ((0, 0), (0, 0));
        for ((service, version), start) in &first {
            let window = rows.iter().filter(|r| r.service == *service && r.at >= start + from && r.at < start + to);
            for row in window {
                let side = if row.version == *version { &mut canary } else { &mut others };
                side.1 += 1;
                side.0 += usize::from(row.latency_ms > slow_ms);
            }
        }
        let cell = |(slow, n): (usize, usize)| {
            format!("{slow}/{n} = {:.1} %", if n == 0 { 0.0 } else { 100.0 * slow as f64 / n as f64 })
        };
        let _ = writeln!(out, "{:<12} {:>22} {:>22}", format!("{from}–{to} s"), cell(canary), cell(others));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_slow_only_while_new_shows_in_its_first_window() {
        let mut text = String::new();
        for i in 0..100 {
            let at = 1000.0 + f64::from(i) * 0.1;
            let canary_ms = if i < 10 { 20.0 } else { 2.0 };
            text.push_str(&format!("{at}\tsvc-1\tv1\t2.0\tfetch\t200\n{at}\tsvc-1\tv2-1\t{canary_ms}\tnav\t200\n"));
        }
        text.push_str("garbage line\n");
        let table = summary(&parse(&text), 7.5);
        assert!(table.starts_with("1 canaries"), "{table}");
        let first = table.lines().nth(2).unwrap();
        assert!(first.contains("10/10 = 100.0 %") && first.contains("0/10 = 0.0 %"), "{table}");
        let second = table.lines().nth(3).unwrap();
        assert!(second.contains("0/20 = 0.0 %"), "{table}");
    }
}
