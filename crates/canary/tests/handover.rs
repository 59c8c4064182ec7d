//! `canary serve --take-over`: a new process takes the listening sockets of the running one,
//! which drains and exits, and under load no request fails.

mod support;

use std::time::Duration;

use support::traffic::Traffic;
use support::{Gateway, Upstream, config};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_by_take_over_fails_no_request_and_keeps_the_routing() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let mut gateway = Gateway::start(&config(&v1, &v2, 0.0, ""));
    gateway.set_weight("web", 50.0).await;
    let (addr, admin) = (gateway.addr("web"), gateway.admin.clone());
    let traffic = Traffic::start(addr, 200, 8, Duration::from_millis(2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = traffic.sent();

    let mut old = gateway.take_over();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = old.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the old process did not exit after the take-over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "the old process drained and exited cleanly: {status:?}");
    assert_eq!((gateway.addr("web"), &gateway.admin), (addr, &admin), "the same sockets serve on");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (sent, failed) = (traffic.sent(), traffic.failed());
    println!("take-over under load: {} requests before, {sent} in all, {failed} failed", before);
    assert!(sent > before + 200, "traffic went on after the take-over: {before} then {sent}");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed across the take-over");
    let (_, view) = gateway.get("/api/v1/services/web").await;
    assert_eq!(view["data"]["weight"], 50.0, "the new process serves the stored routing: {view}");
    assert!(traffic.answered_by("v2") > 0 && traffic.answered_by("v1") > 0);
    traffic.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_over_with_nothing_running_says_so() {
    let v1 = Upstream::start("v1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    std::fs::write(&path, support::stable_only_config(&v1, "")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(["serve", "--take-over", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--take-over: no running canary answers at"), "{stderr}");
}
