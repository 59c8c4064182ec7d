//! `canary demo --scenario X --json` end to end, in a debug build: the real gateway, controller
//! and judge against demo upstreams. A healthy canary is promoted; a canary with more errors,
//! a slower one and one that crashes are rolled back on their own, each within two minutes;
//! a crash costs users no failed request.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// Scenarios run one at a time: they measure latency, and two at once on a small machine would
/// measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const LIMIT: Duration = Duration::from_secs(120);

/// Runs the demo and returns its one-line JSON summary.
fn demo(scenario: &str) -> Value {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(["demo", "--scenario", scenario, "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("run canary demo");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{scenario}: {output:?}");
    assert!(elapsed < LIMIT, "{scenario} took {elapsed:?}");
    assert_eq!(stdout.lines().count(), 1, "--json prints one line: {stdout}");
    let summary: Value = serde_json::from_str(stdout.trim()).expect("the summary is JSON");
    assert_eq!(summary["scenario"], scenario);
    assert!(summary["requests"].as_u64().unwrap() > 1000, "too little traffic for a judge: {summary}");
    assert!(summary["canary_share_pct"].as_f64().unwrap() > 0.0, "the canary got no traffic: {summary}");
    summary
}

/// A crash moves every canary user to stable at once (a tripped breaker leaves no grace), so a
/// page loaded from v2 an instant before it may load its script from v1 and get a 404. Only the
/// visits in flight at that instant can: a handful at most, never a steady stream.
fn only_pages_in_flight_broke(summary: &Value) {
    let broken = summary["asset_404s"].as_u64().unwrap();
    assert!(broken <= 3, "{broken} pages got their script from the other version: {summary}");
}

/// A judge's rollback leaves the pages v2 served their grace window: a page loaded from v2 an
/// instant before it still loads its script from v2.
fn no_open_page_broke(summary: &Value) {
    assert_eq!(summary["asset_404s"], 0, "a page v2 served lost its script in the rollback: {summary}");
}

fn reason(summary: &Value) -> String {
    summary["reason"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_healthy_canary_is_promoted() {
    let summary = demo("healthy");
    assert_eq!(summary["outcome"], "promoted", "{summary}");
    assert_eq!(summary["detect_seconds"], Value::Null);
    assert_eq!(summary["failed_requests"], 0, "{summary}");
    assert_eq!(summary["users_with_failures"], 0, "{summary}");
    assert!(summary["canary_share_pct"].as_f64().unwrap() > 5.0, "{summary}");
    // Pins keep every page and its script on one version, also across promotion: the old
    // stable keeps serving its sessions while it drains.
    assert_eq!(summary["asset_404s"], 0, "a page and its script came from different versions: {summary}");
}

#[test]
fn a_canary_with_more_errors_is_rolled_back() {
    let summary = demo("errors");
    assert_eq!(summary["outcome"], "rolled_back", "{summary}");
    assert!(reason(&summary).contains("error rate"), "{summary}");
    let detect = summary["detect_seconds"].as_f64().unwrap();
    assert!(detect > 0.0 && detect < 60.0, "{summary}");
    // The canary's extra errors reached a few users before the rollback, and the summary says so.
    assert!(summary["failed_requests"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["users_with_failures"].as_u64().unwrap() > 0, "{summary}");
    no_open_page_broke(&summary);
}

#[test]
fn a_slower_canary_is_rolled_back() {
    let summary = demo("latency");
    assert_eq!(summary["outcome"], "rolled_back", "{summary}");
    let why = reason(&summary);
    assert!(why.contains("latency") || why.contains("slow"), "{summary}");
    assert!(summary["detect_seconds"].as_f64().unwrap() < 60.0, "{summary}");
    assert_eq!(summary["failed_requests"], 0, "slow is not failed: {summary}");
    no_open_page_broke(&summary);
}

#[test]
fn a_crashed_canary_is_rolled_back_and_costs_no_request() {
    let summary = demo("crash");
    assert_eq!(summary["outcome"], "rolled_back", "{summary}");
    assert!(summary["fault_at_seconds"].as_f64().is_some(), "v2 never crashed: {summary}");
    assert!(summary["detect_seconds"].as_f64().unwrap() < 10.0, "{summary}");
    assert_eq!(summary["failed_requests"], 0, "{summary}");
    assert_eq!(summary["users_with_failures"], 0, "{summary}");
    assert!(summary["retried_on_stable"].as_u64().unwrap() > 0, "nothing was moved to stable: {summary}");
    only_pages_in_flight_broke(&summary);
}
