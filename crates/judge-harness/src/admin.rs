//! A small client of the admin API: start a rollout, read it, steer it, read a service.
//!
//! Rollout views are read into the few fields the harness needs (the server's view type is a
//! serialize-only projection); services use the API's own [`ServiceView`].

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use canary_core::api::{Code, Envelope, ServiceView};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The admin API of one `canary serve`.
#[derive(Debug, Clone)]
pub struct Admin {
    base: String,
    client: reqwest::Client,
}

/// What `POST /api/v1/services/{name}/rollouts` gets.
#[derive(Debug, Clone)]
pub struct StartRollout<'a> {
    /// The canary's version name.
    pub version: &'a str,
    /// The canary's process.
    pub upstream: SocketAddr,
    /// The plan, as text.
    pub steps: &'a str,
    /// How long a step may stay undecided after its hold.
    pub max_step_wait: Duration,
    /// `analysis`: alpha and the minimums.
    pub analysis: serde_json::Value,
}

/// A rollout as `GET /api/v1/services/{name}/rollout` shows it (the fields used here).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// Unique id.
    pub id: String,
    /// `pending`, `progressing`, `paused`, `promoted`, `aborted` or `failed`.
    pub phase: String,
    /// Index of the current step (0-based).
    pub step: usize,
    /// Why it paused or ended.
    #[serde(default)]
    pub reason: Option<String>,
    /// Unix ms of creation.
    pub created_ms: u64,
    /// Unix ms of the last transition.
    pub updated_ms: u64,
    /// The judge's latest look, while the rollout is active.
    #[serde(default)]
    pub judge: Option<JudgeView>,
}

/// The judge's latest look.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeView {
    /// One verdict per metric.
    pub verdicts: Vec<VerdictView>,
    /// Share of the rollout's requests the canary served, in percent.
    #[serde(default)]
    pub observed_canary_share: Option<f64>,
    /// The latency that counts as slow, in seconds.
    #[serde(default)]
    pub tail_threshold_seconds: Option<f64>,
    /// Whether the error test uses the canary cohort's own history.
    #[serde(default)]
    pub cohort_baseline: Option<bool>,
}

/// One metric's verdict (the fields used here).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerdictView {
    /// `errors`, `latencyTail`, `latencyP50`, `latencyP90` or `sampleRatio`.
    pub metric: String,
    /// `pass`, `worse` or `inconclusive`.
    pub verdict: String,
    /// The evidence against "not worse", for the count tests.
    #[serde(default)]
    pub e_value: Option<f64>,
    /// The overdispersion factor the evidence was divided by.
    #[serde(default)]
    pub dispersion: Option<f64>,
    /// The canary's samples.
    pub canary: SamplesView,
    /// Stable's samples.
    pub stable: SamplesView,
}

/// A version's samples for one metric.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct SamplesView {
    /// Requests (new users for the sample-ratio guard).
    pub requests: u64,
    /// Events the metric counts (errors, slow requests), if it counts events.
    #[serde(default)]
    pub events: Option<u64>,
}

impl Admin {
    /// A client of the API at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str) -> anyhow::Result<Admin> {
        // Idle connections are dropped well before the admin listener's 60 s idle timeout
        // closes them, so a request after a long wait never lands on a closing connection.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(20))
            .build()?;
        Ok(Admin { base: base.trim_end_matches('/').to_owned(), client })
    }

    /// One service's routing.
    pub async fn service(&self, name: &str) -> anyhow::Result<ServiceView> {
        self.call(self.client.get(self.url(&format!("/api/v1/services/{name}")))).await
    }

    /// Starts a rollout of `name`.
    pub async fn start(&self, name: &str, rollout: &StartRollout<'_>) -> anyhow::Result<RolloutView> {
        let body = serde_json::json!({
            "version": rollout.version,
            "upstreams": [rollout.upstream.to_string()],
            "steps": rollout.steps,
            "drain": "0s",
            "maxStepWait": humantime::format_duration(rollout.max_step_wait).to_string(),
            "analysis": rollout.analysis,
        });
        self.call(self.client.post(self.url(&format!("/api/v1/services/{name}/rollouts"))).json(&body)).await
    }

    /// The active rollout of `name`, else its latest.
    pub async fn rollout(&self, name: &str) -> anyhow::Result<RolloutView> {
        self.call(self.client.get(self.url(&format!("/api/v1/services/{name}/rollout")))).await
    }

    /// `promote`, `abort`, `pause` or `resume` the active rollout of `name`.
    pub async fn act(&self, name: &str, action: &str, reason: &str) -> anyhow::Result<RolloutView> {
        let url = self.url(&format!("/api/v1/services/{name}/rollout/{action}"));
        self.call(self.client.post(url).json(&serde_json::json!({ "reason": reason }))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let request = request.build()?;
        let what = format!("{} {}", request.method(), request.url().path());
        let response =
            self.client.execute(request).await.with_context(|| format!("cannot reach the admin API for {what}"))?;
        let envelope: Envelope<T> =
            response.json().await.with_context(|| format!("{what}: the answer is not the API's envelope"))?;
        match (envelope.code, envelope.data) {
            (Code::Ok, Some(data)) => Ok(data),
            (code, _) => {
                anyhow::bail!("{what}: {} [{code:?}] {}", envelope.client_message, envelope.system_message)
            }
        }
    }
}
