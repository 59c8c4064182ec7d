//! `[[service.gate]]`: what a gate runs, when, and what its failure does.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::HumanDuration;

/// The most shards a command gate may run in parallel.
pub const MAX_SHARDS: u32 = 64;

/// What a gate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GateKind {
    /// A command run through `sh -c`; exit status 0 passes.
    Command,
    /// A `POST` to a URL; a 2xx answer passes.
    Http,
}

/// When a gate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GateWhen {
    /// With the canary deployed at weight 0, before any user reaches it.
    BeforeStart,
    /// Before each automatic move to the next step, once the hold has passed and the judge
    /// found no harm.
    BeforeStep,
    /// Before the automatic promotion (the advance past the last step).
    BeforePromote,
    /// After a rollback or an abort; never blocks anything.
    AfterRollback,
}

impl GateWhen {
    /// The name as the config spells it.
    pub fn name(self) -> &'static str {
        match self {
            GateWhen::BeforeStart => "before-start",
            GateWhen::BeforeStep => "before-step",
            GateWhen::BeforePromote => "before-promote",
            GateWhen::AfterRollback => "after-rollback",
        }
    }
}

/// What a failed gate does to the rollout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Roll the canary back.
    #[default]
    Rollback,
    /// Hold the rollout for a person (a before-start gate has nothing to hold: it rolls back).
    Pause,
}

/// One `[[service.gate]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// The gate's name, shown in events and the status.
    pub name: String,
    /// `command` or `http`.
    pub kind: GateKind,
    /// When it runs.
    pub when: GateWhen,
    /// The command (`kind = "command"`), run through `sh -c` in the config file's folder;
    /// `{shard}` and `{shards}` are replaced.
    #[serde(default)]
    pub run: Option<String>,
    /// Parallel processes of a command gate; `{shard}` runs over `1..=shards`.
    #[serde(default = "one")]
    pub shards: u32,
    /// The URL an http gate posts to.
    #[serde(default)]
    pub url: Option<String>,
    /// Signs an http gate's body (`x-canary-signature: sha256=…`).
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    /// How long the gate may take before it fails.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// What a failure does.
    #[serde(default)]
    pub on_failure: OnFailure,
}

fn one() -> u32 {
    1
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

impl GateConfig {
    /// Checks the rules that span keys; the error names the gate.
    pub fn check(&self) -> Result<(), String> {
        let name = &self.name;
        crate::names::check_id(name, "gate name").map_err(|e| format!("gate {name:?}: {e}"))?;
        let fail = |why: String| Err(format!("gate {name:?}: {why}"));
        match self.kind {
            GateKind::Command => {
                if self.run.as_deref().is_none_or(|r| r.trim().is_empty()) {
                    return fail("kind \"command\" needs `run`, the command to run".into());
                }
                if self.url.is_some() || self.secret.is_some() {
                    return fail("`url` and `secret` belong to kind \"http\"; a command gate has `run`".into());
                }
                if self.shards == 0 || self.shards > MAX_SHARDS {
                    return fail(format!("shards must be between 1 and {MAX_SHARDS} (it is {})", self.shards));
                }
            }
            GateKind::Http => {
                let Some(url) = self.url.as_deref() else {
                    return fail("kind \"http\" needs `url`, the address to POST to".into());
                };
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                    return fail(format!("url {url:?} must be an https:// or http:// address"));
                }
                if self.run.is_some() || self.shards != 1 {
                    return fail("`run` and `shards` belong to kind \"command\"; an http gate has `url`".into());
                }
                if self.secret.as_deref().is_some_and(str::is_empty) {
                    return fail("secret must not be empty".into());
                }
            }
        }
        if self.timeout.0 < Duration::from_secs(1) {
            return fail(format!("timeout must be at least 1s (it is {})", String::from(self.timeout)));
        }
        if self.when == GateWhen::AfterRollback && self.on_failure == OnFailure::Pause {
            return fail("an after-rollback gate never blocks, so on_failure = \"pause\" means nothing".into());
        }
        Ok(())
    }
}

/// Checks a service's gates: each one, and no name twice.
pub fn check_gates(gates: &[GateConfig]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for gate in gates {
        gate.check()?;
        if !seen.insert(gate.name.as_str()) {
            return Err(format!("gate {:?} is defined twice", gate.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        gate: Vec<GateConfig>,
    }

    fn parse(text: &str) -> Result<Vec<GateConfig>, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        check_gates(&file.gate)?;
        Ok(file.gate)
    }

    const E2E: &str = r#"
[[gate]]
name = "e2e"
kind = "command"
when = "before-step"
run = "npx playwright test --shard={shard}/{shards}"
shards = 3
timeout = "10m"
on_failure = "pause"

[[gate]]
name = "smoke"
kind = "http"
when = "before-promote"
url = "http://127.0.0.1:9000/check"
timeout = "30s"
"#;

    #[test]
    fn the_documented_example_parses() {
        let gates = parse(E2E).unwrap();
        assert_eq!(gates[0].shards, 3);
        assert_eq!(gates[0].on_failure, OnFailure::Pause);
        assert_eq!(gates[1].kind, GateKind::Http);
        assert_eq!(gates[1].on_failure, OnFailure::Rollback);
        assert_eq!(gates[1].timeout.0, Duration::from_secs(30));
    }

    #[test]
    fn bad_gates_are_refused_with_the_reason() {
        let cases = [
            (E2E.replace("kind = \"command\"", "kind = \"shell\""), "unknown variant `shell`"),
            (E2E.replace("before-step", "before-lunch"), "unknown variant `before-lunch`"),
            (E2E.replace("shards = 3", "shards = 0"), "shards must be between 1 and 64"),
            (E2E.replace("run = \"npx playwright test --shard={shard}/{shards}\"", ""), "needs `run`"),
            (E2E.replace("url = \"http://127.0.0.1:9000/check\"", ""), "needs `url`"),
            (E2E.replace("timeout = \"10m\"", "timeout = \"soon\""), "\"soon\" is not a duration"),
            (E2E.replace("timeout = \"30s\"", "timeout = \"0s\""), "timeout must be at least 1s"),
            (E2E.replace("\"smoke\"", "\"e2e\""), "gate \"e2e\" is defined twice"),
            (E2E.replace("http://127.0.0.1:9000/check", "127.0.0.1:9000"), "must be an https:// or http:// address"),
            (E2E.replace("name = \"e2e\"", "name = \"e 2 e\""), "gate \"e 2 e\""),
            (E2E.replace("on_failure = \"pause\"", "on_failure = \"shrug\""), "unknown variant `shrug`"),
        ];
        for (text, expected) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(expected), "expected {expected:?} in {e:?}");
        }
    }
}
