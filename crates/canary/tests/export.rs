//! `canary export istio` as a person runs it.

use std::process::Command;

const CONFIG: &str = r#"
[[service]]
name = "web"
listen = "127.0.0.1:8080"
stable = { version = "v1", upstreams = ["web.shop.svc.cluster.local:80"] }
canary = { version = "v2", upstreams = ["web.shop.svc.cluster.local:80"] }
"#;

fn export(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    std::fs::write(&path, CONFIG).unwrap();
    Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(["export", "istio", "--config"])
        .arg(&path)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn writes_a_destination_rule_and_a_virtual_service_routing_on_the_header() {
    let out = export(&["--namespace", "shop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    for needle in ["kind: DestinationRule", "kind: VirtualService", "namespace: shop", "x-canary-version", "exact: v2"]
    {
        assert!(yaml.contains(needle), "{needle} missing from:\n{yaml}");
    }
}

#[test]
fn an_unknown_service_is_a_clear_error() {
    let out = export(&["--service", "shop"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shop") && err.contains("web"), "{err}");
    assert!(out.stdout.is_empty());
}
