//! What a gate run is told about the rollout: the processes' environment and the http body.

use std::path::PathBuf;

use canary_core::api::JudgeView;
use canary_core::gate::CommandContext;
use canary_core::rollout::Rollout;

use super::GateSettings;
use crate::routing::ServiceEntry;

/// Everything one run of a stage's gates needs.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The processes' environment, less the shard's own variables.
    pub command: CommandContext,
    /// The rollout as an http gate's body carries it (the gate's name and moment are added).
    pub body: serde_json::Value,
    /// The folder commands run in.
    pub work_dir: PathBuf,
    /// The folder of this rollout's output files.
    pub output_dir: PathBuf,
}

impl RunContext {
    /// The context of a run at the rollout's current step, reaching the canary through the
    /// service's gateway with the rollout's override token (from its routing spec).
    pub fn new(
        entry: &ServiceEntry,
        force_token: Option<&str>,
        rollout: &Rollout,
        judge: Option<&JudgeView>,
        settings: &GateSettings,
    ) -> RunContext {
        let mut headers = serde_json::Map::new();
        headers.insert("x-canary-force".into(), "canary".into());
        if let Some(token) = force_token {
            headers.insert("x-canary-force-token".into(), token.into());
        }
        let step = if rollout.phase == canary_core::rollout::Phase::Pending { 0 } else { rollout.step + 1 };
        let weight = rollout.weight().percent();
        let command = CommandContext {
            service: rollout.service.clone(),
            canary_url: gateway_url(&entry.listen, entry.tls),
            headers_json: serde_json::Value::Object(headers).to_string(),
            version: rollout.canary.version.as_str().to_owned(),
            stable_version: rollout.stable.version.as_str().to_owned(),
            rollout: rollout.id.clone(),
            step,
            weight,
        };
        let body = serde_json::json!({
            "service": rollout.service,
            "rollout": rollout.id,
            "canaryVersion": command.version,
            "stableVersion": command.stable_version,
            "phase": rollout.phase.name(),
            "step": step,
            "steps": rollout.steps.len(),
            "weight": weight,
            "judge": judge,
        });
        let output_dir = settings.output_dir.join(&rollout.id);
        RunContext { command, body, work_dir: settings.work_dir.clone(), output_dir }
    }
}

/// The URL a test suite reaches the service's gateway at: a wildcard listen address is
/// reached on loopback.
fn gateway_url(listen: &str, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => {
            let loopback = if addr.is_ipv4() { "127.0.0.1" } else { "[::1]" };
            format!("{scheme}://{loopback}:{}", addr.port())
        }
        _ => format!("{scheme}://{listen}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_reached_on_loopback() {
        assert_eq!(gateway_url("0.0.0.0:8080", false), "http://127.0.0.1:8080");
        assert_eq!(gateway_url("[::]:8443", true), "https://[::1]:8443");
        assert_eq!(gateway_url("127.0.0.1:9000", false), "http://127.0.0.1:9000");
    }
}
