//! `canary validate` says what is wrong, where, once.

use std::process::Command;

fn validate(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_canary")).args(["validate", "--config"]).arg(&path).output().unwrap()
}

const GOOD: &str = r#"
[[service]]
name = "web"
listen = "127.0.0.1:8080"
stable = { version = "v1", upstreams = ["127.0.0.1:9001"] }
"#;

#[test]
fn a_good_file_is_summarised() {
    let out = validate(GOOD);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid: 1 service(s)"));
}

#[test]
fn a_bad_value_names_its_line_once() {
    let out = validate(&format!("{GOOD}weight = 150\n"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 6") && err.contains("out of range"), "{err}");
    assert_eq!(err.matches("out of range").count(), 1, "the reason is printed more than once:\n{err}");
}

#[test]
fn an_unknown_key_and_a_cross_key_rule_are_named() {
    let out = validate(&GOOD.replace("listen", "lisen"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("lisen") && err.contains("line 4"), "{err}");
    let out = validate(&format!("{GOOD}weight = 10\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("needs a [service.canary]"), "{err}");
    let out = validate("[admin]\nlisten = \"0.0.0.0:7070\"\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("token"), "{err}");
}

#[test]
fn bad_notification_sinks_are_named_with_what_is_wrong() {
    let sink = |body: &str| {
        let out = validate(&format!("{GOOD}\n[[notify]]\n{body}\n"));
        assert!(!out.status.success(), "{body} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = sink("kind = \"email\"\nurl = \"http://127.0.0.1:9999/hook\"");
    assert!(err.contains("unknown variant `email`") && err.contains("expected `webhook` or `slack`"), "{err}");
    let err = sink("kind = \"webhook\"\nurl = \"http://127.0.0.1:9999/hook\"\nsecret = \"too short\"");
    assert!(err.contains("secret must be at least 16 characters") && err.contains("line 10"), "{err}");
    let err = sink("kind = \"webhook\"\nurl = \"127.0.0.1:9999/hook\"");
    assert!(err.contains("must start with https:// or http://"), "{err}");
    let err = sink("kind = \"webhook\"\nurl = \"http://127.0.0.1:9999/hook\"\nevents = [\"rolledback\"]");
    assert!(err.contains("unknown event \"rolledback\"") && err.contains("rolled_back"), "{err}");

    let good = "kind = \"webhook\"\nurl = \"http://127.0.0.1:9999/hook\"\nsecret = \"at least 16 characters\"";
    let out = validate(&format!("{GOOD}\n[[notify]]\n{good}\nevents = [\"rolled_back\", \"approval_needed\"]\n"));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && summary.contains("1 notification sink(s)"), "{summary}");
}
