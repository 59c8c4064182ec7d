//! A reader that went away (`canary rollout abort web | head -1`) ends a command's output, not
//! the command: it does what it was asked, exits with its own status and says nothing about the
//! pipe. Every command here runs with its standard output a pipe whose reading end is already
//! closed, so its first write fails with EPIPE.

mod support;

use std::process::{Command, Stdio};

use support::{Gateway, Upstream, stable_only_config};

/// How a command ran with nobody reading its output.
#[derive(Debug)]
struct Unread {
    code: Option<i32>,
    stderr: String,
}

async fn run_unread(args: Vec<String>) -> Unread {
    tokio::task::spawn_blocking(move || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_canary"))
            .args(&args)
            .env_remove("CANARY_ADMIN")
            .env_remove("CANARY_TOKEN")
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run canary");
        Unread { code: output.status.code(), stderr: String::from_utf8_lossy(&output.stderr).into_owned() }
    })
    .await
    .unwrap()
}

async fn rollout_unread(gateway: &Gateway, args: &[&str]) -> Unread {
    let mut all = vec!["rollout".to_owned(), "--admin".to_owned(), gateway.admin.clone()];
    all.extend(args.iter().map(|a| a.to_string()));
    run_unread(all).await
}

fn quietly(unread: &Unread, code: i32) {
    assert!(!unread.stderr.contains("panicked"), "{unread:?}");
    assert_eq!(unread.stderr, "", "nothing said about the closed pipe: {unread:?}");
    assert_eq!(unread.code, Some(code), "{unread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_act_and_exit_quietly_when_nobody_reads_their_output() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&stable_only_config(&v1, ""));
    let canary = v2.addr.to_string();

    quietly(
        &rollout_unread(
            &gateway,
            &["start", "web", "--version", "v2", "--upstream", &canary, "--steps", "10%/1h,100%"],
        )
        .await,
        0,
    );
    let (_, rollout) = gateway.get("/api/v1/services/web/rollout").await;
    assert_eq!(rollout["data"]["phase"], "progressing", "the rollout started: {rollout}");
    for args in [
        &["status", "web"][..],
        &["status", "web", "--json"],
        &["status", "--all"],
        &["list"],
        &["list", "--json"],
        &["history", "web"],
        &["events", "web"],
    ] {
        quietly(&rollout_unread(&gateway, args).await, 0);
    }

    quietly(&rollout_unread(&gateway, &["abort", "web", "--reason", "piped into head"]).await, 0);
    let (_, rollout) = gateway.get("/api/v1/services/web/rollout").await;
    assert_eq!(rollout["data"]["phase"], "aborted", "the abort was applied: {rollout}");
    assert_eq!(rollout["data"]["reason"], "piped into head");
    let (_, service) = gateway.get("/api/v1/services/web").await;
    assert_eq!(service["data"]["weight"], 0.0, "everyone is back on stable");

    // `--watch` keeps its meaning for CI even when its drawing goes nowhere: 3 = aborted.
    quietly(&rollout_unread(&gateway, &["status", "web", "--watch"]).await, 3);

    // A refusal still exits 1 and says why on stderr.
    let refused = rollout_unread(&gateway, &["promote", "web"]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("web has no active rollout"), "{refused:?}");
    assert!(!refused.stderr.contains("panicked"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_commands_exit_quietly_when_nobody_reads_their_output() {
    let v1 = Upstream::start("v1").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canary.toml");
    std::fs::write(&config, stable_only_config(&v1, "")).unwrap();
    let config = config.display().to_string();
    for args in [
        vec!["completions", "bash"],
        vec!["completions", "zsh"],
        vec!["validate", "--config", &config],
        vec!["export", "istio", "--config", &config],
    ] {
        quietly(&run_unread(args.into_iter().map(str::to_owned).collect()).await, 0);
    }
}
