//! `canary rollout …` against a real `canary serve` process: a rollout driven through its whole
//! life from the command line, `status --watch` exit codes, and bad input to every command
//! refused with a clear message, a non-zero exit and nothing changed.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{CliOutput, Gateway, Upstream, run_canary, stable_only_config};

/// Runs `canary rollout <args> --admin <gateway's admin>`.
async fn rollout<S: AsRef<str>>(gateway: &Gateway, args: &[S]) -> CliOutput {
    let mut all = vec!["rollout", "--admin", gateway.admin.as_str()];
    all.extend(args.iter().map(AsRef::as_ref));
    run_canary(&all).await
}

fn ok(output: &CliOutput) -> &str {
    assert_eq!(output.code, Some(0), "{output:?}");
    &output.stdout
}

fn json(output: &CliOutput) -> Value {
    let line = ok(output).trim();
    assert_eq!(line.lines().count(), 1, "--json prints one line: {output:?}");
    serde_json::from_str(line).unwrap()
}

/// Asserts a refusal: a non-zero exit and `expected` in what it printed on stderr.
fn refused(output: &CliOutput, expected: &str) {
    assert_ne!(output.code, Some(0), "{output:?}");
    assert!(output.stderr.contains(expected), "expected {expected:?} in stderr: {output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_driven_from_the_command_line() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&stable_only_config(&v1, ""));
    let canary = v2.addr.to_string();
    // Long holds: the rollout moves only when the commands move it.
    let start = rollout(
        &gateway,
        &["start", "web", "--version", "v2", "--upstream", &canary, "--steps", "10%/1h,50%/1h,100%", "--drain", "1m"],
    )
    .await;
    let text = ok(&start);
    assert!(text.contains("started at 10%"), "{text}");
    assert!(text.contains("[10%/1h] → 50%/1h → 100%"), "{text}");
    let (_, service) = gateway.get("/api/v1/services/web").await;
    assert_eq!(service["data"]["canary"]["version"], "v2");
    assert_eq!(service["data"]["weight"], 10.0);

    let status = rollout(&gateway, &["status", "web"]).await;
    let text = ok(&status);
    assert!(text.contains("web: v1 → v2"), "{text}");
    assert!(text.contains("progressing"), "{text}");
    assert!(text.contains("step 1 of 3 at 10%"), "{text}");
    let data = json(&rollout(&gateway, &["status", "web", "--json"]).await);
    assert_eq!(data["phase"], "progressing");
    assert_eq!(data["canary"]["version"], "v2");
    // The judge looks every tick and reports every metric, in words in the text view.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let text = ok(&rollout(&gateway, &["status", "web"]).await).to_owned();
    for metric in ["error rate", "median latency", "p90 latency", "user split"] {
        assert!(text.contains(metric), "{metric} missing: {text}");
    }
    assert!(text.contains("needs more data"), "no traffic yet: {text}");

    let paused = rollout(&gateway, &["pause", "web", "--reason", "looking at the logs"]).await;
    assert!(ok(&paused).contains("is paused"), "{paused:?}");
    let data = json(&rollout(&gateway, &["status", "web", "--json"]).await);
    assert_eq!(data["phase"], "paused");
    assert_eq!(data["reason"], "looking at the logs");

    let resumed = rollout(&gateway, &["resume", "web"]).await;
    assert!(ok(&resumed).contains("is progressing"), "{resumed:?}");

    let promoted = rollout(&gateway, &["promote", "web", "--reason", "looks good"]).await;
    assert!(ok(&promoted).contains("is promoted"), "{promoted:?}");
    let (_, service) = gateway.get("/api/v1/services/web").await;
    assert_eq!(service["data"]["stable"]["version"], "v2");
    assert_eq!(service["data"]["draining"], "v1");

    // Watching a promoted rollout ends at once, with exit 0.
    let watch = rollout(&gateway, &["status", "web", "--watch"]).await;
    assert!(ok(&watch).contains("promoted: v2 is the new stable: looks good"), "{watch:?}");

    let history = rollout(&gateway, &["history", "web"]).await;
    let text = ok(&history);
    assert!(text.contains("v1 → v2") && text.contains("promoted") && text.contains("looks good"), "{text}");
    let data = json(&rollout(&gateway, &["history", "web", "--json"]).await);
    assert_eq!(data.as_array().unwrap().len(), 1);

    let events = rollout(&gateway, &["events", "web"]).await;
    let text = ok(&events);
    let actions: Vec<&str> = text.lines().skip(1).filter_map(|l| l.split_whitespace().nth(4)).collect();
    assert_eq!(actions, ["begin", "pause", "resume", "promote"], "{text}");
    assert!(text.contains("paused at 10%: looking at the logs"), "{text}");
    let data = json(&rollout(&gateway, &["events", "web", "--limit", "2", "--json"]).await);
    assert_eq!(data.as_array().unwrap().len(), 2);
    assert_eq!(data[1]["action"], "promote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_exits_by_how_the_rollout_ended() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&stable_only_config(&v1, ""));
    let canary = v2.addr.to_string();
    let start = ["start", "web", "--version", "v2", "--upstream", &canary, "--steps", "50%/1h,100%"];

    // Aborted by a person: exit 3.
    ok(&rollout(&gateway, &start).await);
    let watching = {
        let admin = gateway.admin.clone();
        tokio::spawn(async move {
            run_canary(&["rollout", "--admin", &admin, "status", "web", "--watch", "--interval", "100ms"]).await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    ok(&rollout(&gateway, &["abort", "web", "--reason", "wrong build"]).await);
    let watched = tokio::time::timeout(Duration::from_secs(10), watching).await.unwrap().unwrap();
    assert_eq!(watched.code, Some(3), "{watched:?}");
    assert!(watched.stdout.contains("aborted: wrong build"), "{watched:?}");

    // Rolled back by the controller: exit 2. The canary is down, so the gateway sends its users
    // to stable, the breaker trips and the controller fails the rollout.
    v2.stop();
    ok(&rollout(&gateway, &start).await);
    let watching = {
        let admin = gateway.admin.clone();
        tokio::spawn(async move { run_canary(&["rollout", "--admin", &admin, "status", "web", "--watch"]).await })
    };
    let client = support::client();
    for user in 0..200 {
        let response =
            client.get(gateway.url("web", "/")).header("x-user-id", format!("u{user}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "unsent requests are retried on stable");
    }
    let watched = tokio::time::timeout(Duration::from_secs(20), watching).await.unwrap().unwrap();
    assert_eq!(watched.code, Some(2), "{watched:?}");
    assert!(watched.stdout.contains("rolled back automatically"), "{watched:?}");
    let data = json(&rollout(&gateway, &["status", "web", "--json"]).await);
    assert_eq!(data["phase"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&stable_only_config(&v1, ""));
    let canary = v2.addr.to_string();
    let (_, before) = gateway.get("/api/v1/services/web").await;
    let start = |extra: &[&str]| {
        let mut args = vec!["start", "web", "--version", "v2", "--upstream", canary.as_str()];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["start", "shop", "--version", "v2", "--upstream", &canary].into_iter().map(str::to_owned).collect(),
            "No service named \"shop\"",
        ),
        (start(&["--steps", "5%/1m,5%/1m"]), "--steps: step weights must rise strictly"),
        (start(&["--steps", "150%/1m"]), "out of range"),
        (start(&["--steps", "0.001%/1m"]), "0.01"),
        (start(&["--steps", "10%/soon"]), "\"soon\" is not a duration"),
        (start(&["--drain", "later"]), "--drain"),
        (start(&["--max-step-wait", "x"]), "--max-step-wait"),
        (start(&["--alpha", "2"]), "--alpha must be between 0 and 1"),
        (
            vec!["start", "web", "--version", "v1", "--upstream", &canary].into_iter().map(str::to_owned).collect(),
            "already the stable version",
        ),
        (
            vec!["start", "web", "--version", "v 2", "--upstream", &canary].into_iter().map(str::to_owned).collect(),
            "--version: version name \"v 2\" may only contain letters, digits",
        ),
        (vec!["start".into(), "web".into(), "--version".into(), "v2".into()], "--upstream"),
        (vec!["status".into(), "shop".into()], "No service named \"shop\""),
        (vec!["status".into(), "web".into()], "web has no active rollout"),
        (vec!["status".into(), "web".into(), "--interval".into(), "fast".into()], "--interval"),
        (vec!["promote".into(), "web".into()], "web has no active rollout"),
        (vec!["abort".into(), "web".into(), "--reason".into(), "x".into()], "web has no active rollout"),
        (vec!["pause".into(), "web".into()], "web has no active rollout"),
        (vec!["resume".into(), "web".into()], "web has no active rollout"),
        (vec!["promote".into(), "shop".into()], "No service named \"shop\""),
        (vec!["history".into(), "shop".into()], "No service named \"shop\""),
        (vec!["events".into(), "shop".into()], "No service named \"shop\""),
        (vec!["events".into(), "web".into(), "--limit".into(), "0".into()], "--limit must be at least 1"),
        (vec!["rewind".into(), "web".into()], "unrecognized subcommand"),
    ];
    for (args, expected) in &cases {
        refused(&rollout(&gateway, args).await, expected);
    }

    // An unreachable or malformed admin address is named, and nothing is sent anywhere.
    let unreachable = run_canary(&["rollout", "--admin", "http://127.0.0.1:9", "status", "web"]).await;
    refused(&unreachable, "cannot reach the admin API at http://127.0.0.1:9");
    refused(&unreachable, "Connection refused");
    let malformed = run_canary(&["rollout", "--admin", "127.0.0.1:7070", "history", "web"]).await;
    refused(&malformed, "--admin \"127.0.0.1:7070\" is not a URL");
    let not_admin = run_canary(&["rollout", "--admin", &gateway.url("web", ""), "history", "web"]).await;
    refused(&not_admin, "did not answer with an admin API envelope");

    let (_, after) = gateway.get("/api/v1/services/web").await;
    assert_eq!(before["data"], after["data"], "a refused command changed the routing");
    let history = json(&rollout(&gateway, &["history", "web", "--json"]).await);
    assert_eq!(history, serde_json::json!([]), "a refused command started a rollout");

    // With an active rollout: a second start and a resume that does not fit are refused, and the
    // rollout stays as it was.
    ok(&rollout(&gateway, &start(&["--steps", "10%/1h,100%"])).await);
    let (_, during) = gateway.get("/api/v1/services/web").await;
    let second = rollout(&gateway, &start(&["--steps", "20%/1h,100%"])).await;
    refused(&second, "web already has an active rollout");
    refused(&second, "ROLLOUT_IN_PROGRESS");
    refused(&rollout(&gateway, &["resume", "web"]).await, "Cannot resume a rollout that is progressing.");
    let (_, still) = gateway.get("/api/v1/services/web").await;
    assert_eq!(during["data"], still["data"]);
    let status = json(&rollout(&gateway, &["status", "web", "--json"]).await);
    assert_eq!(status["phase"], "progressing");
    assert_eq!(status["transitions"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_and_a_wrong_one_is_refused() {
    let v1 = Upstream::start("v1").await;
    let gateway = Gateway::start(&stable_only_config(&v1, "token = \"s3cret-admin-token\""));
    let without = rollout(&gateway, &["history", "web"]).await;
    refused(&without, "This action needs the admin token.");
    let wrong = rollout(&gateway, &["history", "web", "--token", "guess"]).await;
    refused(&wrong, "UNAUTHENTICATED");
    let right = rollout(&gateway, &["history", "web", "--token", "s3cret-admin-token"]).await;
    assert!(ok(&right).contains("web has had no rollouts."), "{right:?}");
}
