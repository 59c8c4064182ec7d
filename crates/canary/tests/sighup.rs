//! `systemctl reload` sends SIGHUP. This version does not re-read its configuration, and a
//! SIGHUP must not stop it either (the signal's default): the gateway keeps serving, and
//! SIGTERM still drains and exits 0.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Gateway, Upstream, stable_only_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_leaves_the_gateway_serving() {
    let v1 = Upstream::start("v1").await;
    let mut gateway = Gateway::start(&stable_only_config(&v1, ""));
    for _ in 0..3 {
        let status = Command::new("kill").args(["-HUP", &gateway.pid().to_string()]).status().unwrap();
        assert!(status.success());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = support::client().get(gateway.url("web", "/")).send().await.expect("still serving after SIGHUP");
    assert_eq!(response.status(), 200);
    assert_eq!(support::version_of(&response), "v1");
    let (status, _) = gateway.get("/api/v1/services/web").await;
    assert_eq!(status, 200, "the admin API still answers");
    gateway.terminate();
    assert!(gateway.wait(Duration::from_secs(20)).success());
}
