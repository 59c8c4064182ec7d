//! The gateway's integrity rules through a real gateway process: pins bound to their service,
//! the override token, headers that never reach the upstream, protocol upgrades and `Host`.

mod support;

use support::{Gateway, Upstream, client, pin_of, version_of};

/// Two services, `web` and `api`, sharing one pin secret; each with stable `v1` and canary `v2`.
fn two_services(web: (&Upstream, &Upstream), api: (&Upstream, &Upstream), web_weight: f64, api_weight: f64) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[gateway]
workers = 1
pin_secret = "end-to-end-test-secret"

[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = {{ version = "v1", upstreams = ["{}"] }}
canary = {{ version = "v2", upstreams = ["{}"] }}
weight = {web_weight}

[[service]]
name = "api"
listen = "127.0.0.1:0"
stable = {{ version = "v1", upstreams = ["{}"] }}
canary = {{ version = "v2", upstreams = ["{}"] }}
weight = {api_weight}
"#,
        web.0.addr, web.1.addr, api.0.addr, api.1.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_of_one_service_does_not_move_users_of_another() {
    let (web_v1, web_v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let (api_v1, api_v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&two_services((&web_v1, &web_v2), (&api_v1, &api_v2), 100.0, 5.0));
    let client = client();
    let get = |service: &str, user: String, cookie: Option<String>| {
        let mut request = client.get(gateway.url(service, "/")).header("x-user-id", user);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    let on_web = get("web", "someone".into(), None).await.unwrap();
    assert_eq!(version_of(&on_web), "v2");
    let web_canary_pin = format!("canary_pin={}", pin_of(&on_web).expect("web pins its canary"));

    let mut stable_users = Vec::new();
    for i in 0..400 {
        let user = format!("user-{i}");
        if version_of(&get("api", user.clone(), None).await.unwrap()) == "v1" {
            stable_users.push(user);
        }
        if stable_users.len() == 40 {
            break;
        }
    }
    assert_eq!(stable_users.len(), 40);
    for user in stable_users {
        let response = get("api", user.clone(), Some(web_canary_pin.clone())).await.unwrap();
        assert_eq!(version_of(&response), "v1", "web's pin moved api's stable user {user} to api's canary");
        assert!(pin_of(&response).unwrap().contains(".v1."), "api re-pins the user to its own choice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_an_empty_or_short_force_token_naming_key_and_line() {
    let upstream = Upstream::start("v1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    for token in ["", "qa-token-123"] {
        let text = support::stable_only_config(&upstream, "") + &format!("force_token = {token:?}\n");
        std::fs::write(&path, &text).unwrap();
        let line = text.lines().position(|l| l.starts_with("force_token")).unwrap() + 1;
        let out = support::run_canary(&["validate", "--config", path.to_str().unwrap()]).await;
        assert_ne!(out.code, Some(0), "token {token:?} was accepted: {}", out.stdout);
        assert!(
            out.stderr.contains("force_token must be at least 16 characters")
                && out.stderr.contains(&format!("line {line}")),
            "token {token:?}: {}",
            out.stderr
        );
    }
}

/// The request head the upstream got for `request` (see the fake upstream's `/headers`).
async fn upstream_head(request: reqwest::RequestBuilder) -> String {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap().to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_override_headers_never_reach_the_upstream() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let extra = "force_token = \"qa-token-1234567890\"";
    let gateway = Gateway::start(&support::config(&v1, &v2, 0.0, extra));
    let client = client();
    for token in ["wrong-token-0000000000", "qa-token-1234567890"] {
        let request = client
            .get(gateway.url("web", "/headers"))
            .header("x-user-id", "qa")
            .header("x-canary-force", "canary")
            .header("x-canary-force-token", token);
        let head = upstream_head(request).await;
        assert!(!head.contains("x-canary-force"), "token {token}: the upstream got\n{head}");
    }
    let untrusted = client.get(gateway.url("web", "/headers")).header("x-canary-force", "canary");
    let head = upstream_head(untrusted).await;
    assert!(!head.contains("x-canary-force"), "an ignored override reached the upstream:\n{head}");
}
