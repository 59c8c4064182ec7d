//! The environment of a command gate's processes.

/// What a command gate's processes are told about the rollout.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// The service.
    pub service: String,
    /// The service's gateway URL (`http://127.0.0.1:8080`).
    pub canary_url: String,
    /// The headers that send a request to the canary, as a JSON object.
    pub headers_json: String,
    /// The canary's version.
    pub version: String,
    /// The stable version.
    pub stable_version: String,
    /// The rollout id.
    pub rollout: String,
    /// The step, counted from 1 (0 before the first step).
    pub step: usize,
    /// The canary's weight now, in percent.
    pub weight: f64,
}

/// The variables of shard `shard` of `shards`, which writes its JUnit report to `report`.
pub fn command_env(context: &CommandContext, shard: u32, shards: u32, report: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CANARY_URL", context.canary_url.clone()),
        ("CANARY_HEADERS", context.headers_json.clone()),
        ("CANARY_SERVICE", context.service.clone()),
        ("CANARY_VERSION", context.version.clone()),
        ("CANARY_STABLE_VERSION", context.stable_version.clone()),
        ("CANARY_ROLLOUT", context.rollout.clone()),
        ("CANARY_STEP", context.step.to_string()),
        ("CANARY_WEIGHT", format!("{}", context.weight)),
        ("CANARY_SHARD", shard.to_string()),
        ("CANARY_SHARDS", shards.to_string()),
        ("CANARY_REPORT", report.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_is_set() {
        let context = CommandContext {
            service: "web".into(),
            canary_url: "http://127.0.0.1:8080".into(),
            headers_json: r#"{"x-canary-force":"canary"}"#.into(),
            version: "v2".into(),
            stable_version: "v1".into(),
            rollout: "web-1".into(),
            step: 2,
            weight: 25.0,
        };
        let env: std::collections::HashMap<_, _> = command_env(&context, 2, 3, "/tmp/r.xml").into_iter().collect();
        assert_eq!(env.len(), 11);
        assert_eq!(env["CANARY_SHARD"], "2");
        assert_eq!(env["CANARY_SHARDS"], "3");
        assert_eq!(env["CANARY_WEIGHT"], "25");
        assert_eq!(env["CANARY_STEP"], "2");
        assert_eq!(env["CANARY_REPORT"], "/tmp/r.xml");
    }
}
