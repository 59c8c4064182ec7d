//! `canary export istio` and `canary export gateway-api` as a person runs them.

use std::process::Command;

const CONFIG: &str = r#"
[[service]]
name = "web"
listen = "127.0.0.1:8080"
stable = { version = "v1", upstreams = ["web.shop.svc.cluster.local:80"] }
canary = { version = "v2", upstreams = ["web.shop.svc.cluster.local:80"] }
"#;

fn export(args: &[&str]) -> std::process::Output {
    export_to("istio", args)
}

fn export_to(target: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    std::fs::write(&path, CONFIG).unwrap();
    Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(["export", target, "--config"])
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

#[test]
fn writes_an_http_route_sending_the_canary_header_to_the_canary_service() {
    let out = export_to(
        "gateway-api",
        &[
            "--parent-ref",
            "internal",
            "--parent-namespace",
            "infra",
            "--namespace",
            "shop",
            "--hostname",
            "shop.example.com",
            "--port",
            "8080",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    let needles = [
        "apiVersion: gateway.networking.k8s.io/v1",
        "kind: HTTPRoute",
        "namespace: shop",
        "- name: internal\n    namespace: infra",
        "- shop.example.com",
        "name: x-canary-version\n        value: v2\n    backendRefs:\n    - name: web-v2\n      port: 8080",
        "- name: default\n    backendRefs:\n    - name: web-v1\n      port: 8080",
    ];
    for needle in needles {
        assert!(yaml.contains(needle), "{needle} missing from:\n{yaml}");
    }
}

#[test]
fn gateway_api_needs_a_parent_and_says_what_is_wrong() {
    let out = export_to("gateway-api", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--parent-ref <NAME>"), "{err}");

    let out = export_to("gateway-api", &["--parent-ref", "internal", "--hostname", "10.0.0.1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"10.0.0.1\" is not valid: a host name, not an IP address"), "{err}");
    assert!(out.stdout.is_empty());
}
