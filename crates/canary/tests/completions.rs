//! `canary completions SHELL`: scripts a shell accepts, that complete this build's subcommands
//! and flags.

use std::process::Command;

fn completions(shell: &str) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_canary")).args(["completions", shell]).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

/// What bash offers after the words typed so far (the last one being completed).
fn bash_completes(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        "source {script}; COMP_WORDS=({line}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; \
         _canary canary '{current}' '{previous}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script.display(),
        cword = words.len() - 1,
        current = words[words.len() - 1],
        previous = words[words.len() - 2],
    );
    let output = Command::new("bash").args(["--norc", "-c", &program]).output().expect("run bash");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn bash_completes_subcommands_and_rollout_flags() {
    let (code, script, stderr) = completions("bash");
    assert_eq!(code, Some(0), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.bash");
    std::fs::write(&path, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(syntax.status.success(), "bash -n: {}", String::from_utf8_lossy(&syntax.stderr));
    for word in ["serve", "validate", "demo", "rollout", "export", "completions", "--log-format", "--all"] {
        assert!(script.contains(word), "{word} missing from the bash script");
    }

    let mut top = bash_completes(&path, &["canary", ""]);
    top.sort();
    for sub in ["completions", "demo", "export", "rollout", "serve", "validate"] {
        assert!(top.iter().any(|w| w == sub), "{sub} not offered after `canary`: {top:?}");
    }
    assert_eq!(bash_completes(&path, &["canary", "rollout", "st"]), ["start", "status"]);
    assert!(bash_completes(&path, &["canary", "rollout", "l"]).contains(&"list".to_owned()));
    let start_flags = bash_completes(&path, &["canary", "rollout", "start", "web", "--"]);
    for flag in ["--version", "--upstream", "--steps", "--drain", "--alpha", "--admin", "--token"] {
        assert!(start_flags.iter().any(|f| f == flag), "{flag} not offered for `rollout start`: {start_flags:?}");
    }
    let formats = bash_completes(&path, &["canary", "serve", "--log-format", ""]);
    assert_eq!(formats, ["text", "json"]);
}

#[test]
fn zsh_and_fish_scripts_name_the_subcommands() {
    for shell in ["zsh", "fish"] {
        let (code, script, stderr) = completions(shell);
        assert_eq!(code, Some(0), "{shell}: {stderr}");
        for word in ["serve", "rollout", "status", "list", "completions", "upstream", "steps"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
    }
    let (zsh, fish) = (completions("zsh").1, completions("fish").1);
    assert!(zsh.starts_with("#compdef canary"), "zsh scripts start with #compdef");
    assert!(fish.contains("complete -c canary"), "fish scripts call `complete -c canary`");
}

#[test]
fn an_unknown_shell_is_refused() {
    let (code, stdout, stderr) = completions("tcsh");
    assert_ne!(code, Some(0));
    assert!(stdout.is_empty());
    assert!(stderr.contains("invalid value 'tcsh'") && stderr.contains("bash"), "{stderr}");
}
