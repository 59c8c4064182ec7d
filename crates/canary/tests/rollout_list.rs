//! `canary rollout list` and `canary rollout status --all [--watch]` against a real
//! `canary serve` with two services.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{CliOutput, Gateway, Upstream, run_canary};

/// Two services, `web` and `api`, each with only a stable version for now.
fn two_services(web: &Upstream, api: &Upstream) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[gateway]
workers = 1
pin_secret = "end-to-end-test-secret"

[controller]
tick = "100ms"

[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = {{ version = "v1", upstreams = ["{}"] }}

[[service]]
name = "api"
listen = "127.0.0.1:0"
stable = {{ version = "a1", upstreams = ["{}"] }}
"#,
        web.addr, api.addr
    )
}

async fn rollout(gateway: &Gateway, args: &[&str]) -> CliOutput {
    let mut all = vec!["rollout", "--admin", gateway.admin.as_str()];
    all.extend_from_slice(args);
    run_canary(&all).await
}

fn ok(output: &CliOutput) -> &str {
    assert_eq!(output.code, Some(0), "{output:?}");
    &output.stdout
}

fn json(output: &CliOutput) -> Value {
    let text = ok(output).trim();
    assert_eq!(text.lines().count(), 1, "--json prints one line: {output:?}");
    serde_json::from_str(text).unwrap()
}

/// The line of `list` that starts with `service`.
fn row<'a>(text: &'a str, service: &str) -> &'a str {
    text.lines().find(|l| l.split_whitespace().next() == Some(service)).unwrap_or_else(|| panic!("{service}: {text}"))
}

async fn start(gateway: &Gateway, service: &str, version: &str, canary: &Upstream, steps: &str) {
    let canary = canary.addr.to_string();
    ok(&rollout(gateway, &["start", service, "--version", version, "--upstream", &canary, "--steps", steps]).await);
}

/// Starts `status --all --watch` in the background.
fn watch_all(gateway: &Gateway) -> tokio::task::JoinHandle<CliOutput> {
    let admin = gateway.admin.clone();
    tokio::spawn(async move {
        run_canary(&["rollout", "--admin", &admin, "status", "--all", "--watch", "--interval", "100ms"]).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_on_one_line_and_every_rollout_in_one_status() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let (a1, a2) = (Upstream::start("a1").await, Upstream::start("a2").await);
    let gateway = Gateway::start(&two_services(&v1, &a1));

    refused_clearly(&gateway).await;
    let text = ok(&rollout(&gateway, &["list"]).await).to_owned();
    assert!(text.lines().next().unwrap().starts_with("service"), "a header first: {text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(row(&text, "api").contains("no rollout"), "{text}");

    start(&gateway, "web", "v2", &v2, "10%/1h,50%/1h,100%").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let text = ok(&rollout(&gateway, &["list"]).await).to_owned();
    let web = row(&text, "web");
    for part in ["v1 → v2", "progressing", "1/3", "10%", "hold: not yet known: error rate"] {
        assert!(web.contains(part), "{part:?} missing: {text}");
    }
    let api = row(&text, "api");
    assert!(api.contains("a1") && api.contains("no rollout") && api.contains("0%"), "{text}");
    let listed = json(&rollout(&gateway, &["list", "--json"]).await);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["service"]["name"], "web");
    assert_eq!(listed[0]["rollout"]["phase"], "progressing");
    assert_eq!(listed[1]["service"]["name"], "api");
    assert_eq!(listed[1]["rollout"], Value::Null);

    // Only services that have had a rollout are shown by `status --all`.
    let text = ok(&rollout(&gateway, &["status", "--all"]).await).to_owned();
    assert!(text.contains("web: v1 → v2") && !text.contains("api:"), "{text}");
    start(&gateway, "api", "a2", &a2, "20%/1h,100%").await;
    let text = ok(&rollout(&gateway, &["status", "--all"]).await).to_owned();
    assert!(text.contains("web: v1 → v2") && text.contains("api: a1 → a2"), "{text}");
    assert!(text.contains("step 1 of 3 at 10%") && text.contains("step 1 of 2 at 20%"), "{text}");
    let all = json(&rollout(&gateway, &["status", "--all", "--json"]).await);
    let phases: Vec<&Value> = all.as_array().unwrap().iter().map(|r| &r["phase"]).collect();
    assert_eq!(phases, ["progressing", "progressing"]);
    assert_eq!(all[1]["service"], "api");

    // One promoted and one aborted: the watch ends when both have, with the abort's 3.
    let watching = watch_all(&gateway);
    tokio::time::sleep(Duration::from_millis(600)).await;
    ok(&rollout(&gateway, &["promote", "web", "--reason", "looks good"]).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watching.is_finished(), "api is still rolling out");
    ok(&rollout(&gateway, &["abort", "api", "--reason", "wrong build"]).await);
    let watched = tokio::time::timeout(Duration::from_secs(10), watching).await.unwrap().unwrap();
    assert_eq!(watched.code, Some(3), "{watched:?}");
    assert!(watched.stdout.contains("promoted: v2 is the new stable: looks good"), "{watched:?}");
    assert!(watched.stdout.contains("aborted: wrong build"), "{watched:?}");
    let text = ok(&rollout(&gateway, &["list"]).await).to_owned();
    assert!(row(&text, "web").contains("promoted"), "{text}");
    assert!(row(&text, "api").contains("aborted: wrong build"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_outweighs_an_abort() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let (a1, a2) = (Upstream::start("a1").await, Upstream::start("a2").await);
    let gateway = Gateway::start(&two_services(&v1, &a1));
    // api's canary is down: the gateway sends its users to stable, the breaker trips and the
    // controller rolls the rollout back.
    a2.stop();
    start(&gateway, "web", "v2", &v2, "10%/1h,100%").await;
    start(&gateway, "api", "a2", &a2, "50%/1h,100%").await;
    let watching = watch_all(&gateway);
    ok(&rollout(&gateway, &["abort", "web"]).await);
    let client = support::client();
    for user in 0..200 {
        let response =
            client.get(gateway.url("api", "/")).header("x-user-id", format!("u{user}")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let watched = tokio::time::timeout(Duration::from_secs(20), watching).await.unwrap().unwrap();
    assert_eq!(watched.code, Some(2), "{watched:?}");
    assert!(watched.stdout.contains("rolled back automatically"), "{watched:?}");
    assert!(watched.stdout.contains("web: v1 → v2") && watched.stdout.contains("aborted"), "{watched:?}");
}

/// `status` takes a service or `--all`, never both nor neither; with no rollout anywhere,
/// `--all` says so.
async fn refused_clearly(gateway: &Gateway) {
    let neither = rollout(gateway, &["status"]).await;
    assert_eq!(neither.code, Some(2));
    assert!(
        neither.stderr.contains("required arguments were not provided") && neither.stderr.contains("<SERVICE|--all>"),
        "{neither:?}"
    );
    let both = rollout(gateway, &["status", "web", "--all"]).await;
    assert_eq!(both.code, Some(2));
    assert!(both.stderr.contains("cannot be used with '--all'"), "{both:?}");
    let none = rollout(gateway, &["status", "--all"]).await;
    assert_eq!(none.code, Some(1), "{none:?}");
    assert!(none.stderr.contains("No service has had a rollout yet."), "{none:?}");
}
