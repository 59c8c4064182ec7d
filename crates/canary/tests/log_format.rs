//! `canary serve --log-format json` (or `CANARY_LOG_FORMAT=json`): every line on stderr is one
//! JSON object with `timestamp`, `level`, `target` and `message`, the event's own fields beside
//! them; the default stays text for people.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;
use support::{Upstream, stable_only_config};

/// Starts `canary serve` with `extra` arguments and `env`, waits for its admin listener and
/// for the controller to log that it took the lead, stops it with SIGTERM and returns what it
/// wrote on stderr.
fn serve_and_stop(config: &str, extra: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_canary"));
    command.args(["serve", "--config"]).arg(&path).args(["--log", "info"]).args(extra);
    command.env_remove("CANARY_LOG_FORMAT").env_remove("CANARY_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start canary serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let collected = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    wait_for_admin(&mut child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("no leader log line");
        if line.contains("leading the controllers") {
            break;
        }
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "canary serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    collected.join().unwrap()
}

fn wait_for_admin(child: &mut Child) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("canary serve did not report its admin listener");
        if line.starts_with("listening admin ") {
            return;
        }
    }
}

/// Parses every line as a JSON object and checks the fields every line must have.
fn json_lines(stderr: &str) -> Vec<Value> {
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{stderr}")))
        .collect();
    for line in &lines {
        let timestamp = line["timestamp"].as_str().unwrap_or_else(|| panic!("no timestamp: {line}"));
        assert!(timestamp.starts_with("20") && timestamp.contains('T') && timestamp.ends_with('Z'), "{line}");
        assert!(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&line["level"].as_str().unwrap_or("")), "{line}");
        assert!(line["target"].as_str().is_some_and(|t| t.starts_with("canary")), "{line}");
        assert!(line["message"].is_string(), "{line}");
    }
    lines
}

fn with_message<'a>(lines: &'a [Value], message: &str) -> &'a Value {
    lines.iter().find(|l| l["message"] == message).unwrap_or_else(|| panic!("no {message:?} line in {lines:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_the_fields_flattened() {
    let v1 = Upstream::start("v1").await;
    let config = stable_only_config(&v1, "");
    let stderr =
        tokio::task::spawn_blocking(move || serve_and_stop(&config, &["--log-format", "json"], &[])).await.unwrap();
    let lines = json_lines(&stderr);
    let leading = with_message(&lines, "leading the controllers");
    assert_eq!(leading["level"], "INFO");
    assert!(leading["candidate"].is_string(), "the event's own field sits beside the message: {leading}");
    assert!(leading.get("fields").is_none(), "fields are flattened: {leading}");
    with_message(&lines, "stopping: draining in-flight requests");
    assert_eq!(lines.last().unwrap()["message"], "stopped", "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_chooses_json_and_text_stays_the_default() {
    let v1 = Upstream::start("v1").await;
    let config = stable_only_config(&v1, "");
    let from_env = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || serve_and_stop(&config, &[], &[("CANARY_LOG_FORMAT", "json")]))
            .await
            .unwrap()
    };
    with_message(&json_lines(&from_env), "stopped");

    let text = tokio::task::spawn_blocking(move || serve_and_stop(&config, &[], &[])).await.unwrap();
    let stopped = text.lines().find(|l| l.ends_with("stopped")).unwrap_or_else(|| panic!("{text}"));
    assert!(serde_json::from_str::<Value>(stopped).is_err(), "text by default: {stopped}");
    assert!(stopped.contains("INFO") && stopped.contains("canary::stack"), "{stopped}");
}

#[test]
fn an_unknown_format_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_canary")).args(["serve", "--log-format", "xml"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid value 'xml' for '--log-format"), "{stderr}");
    assert!(stderr.contains("[possible values: text, json]"), "{stderr}");
}
