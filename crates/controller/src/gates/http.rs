//! An http gate: one `POST` of the rollout as JSON, signed when the gate has a secret; a 2xx
//! answer within the timeout passes.

use canary_core::clock::unix_ms;
use canary_core::gate::{GateConfig, ShardStatus};
use canary_core::signature::{SIGNATURE_HEADER, sign_body};

use super::command::Views;
use super::context::RunContext;

/// The most of a refusal's body kept in the gate's message.
const BODY_SHOWN: usize = 300;

/// Sends the check of `gate` (the `index`th view of `views`) and records its answer.
pub async fn run(gate: &GateConfig, index: usize, context: &RunContext, views: &Views) {
    let started = tokio::time::Instant::now();
    let mut body = context.body.clone();
    body["gate"] = gate.name.clone().into();
    body["when"] = gate.when.name().into();
    let body = serde_json::to_vec(&body).expect("json values serialize");
    let outcome = send(gate, body).await;
    let mut views = views.lock().expect("views");
    let view = &mut views[index];
    let shard = &mut view.shards[0];
    shard.seconds = Some(started.elapsed().as_secs_f64());
    match outcome {
        Ok(status) => {
            shard.code = Some(i32::from(status));
            shard.status = ShardStatus::Passed;
        }
        Err((code, message)) => {
            shard.code = code.map(i32::from);
            shard.status = if message.starts_with("timed out") { ShardStatus::TimedOut } else { ShardStatus::Failed };
            view.message = Some(message);
        }
    }
    view.finish(unix_ms());
}

/// The answer's status when it is a 2xx; else its status, if any, and why it failed.
async fn send(gate: &GateConfig, body: Vec<u8>) -> Result<u16, (Option<u16>, String)> {
    let url = gate.url.as_deref().unwrap_or_default();
    let timeout = String::from(gate.timeout);
    let client = reqwest::Client::builder()
        .timeout(gate.timeout.0)
        .build()
        .map_err(|e| (None, format!("cannot build an HTTP client: {e}")))?;
    let mut request = client.post(url).header("content-type", "application/json");
    if let Some(secret) = &gate.secret {
        request = request.header(SIGNATURE_HEADER, sign_body(secret.as_bytes(), &body));
    }
    let answer = match request.body(body).send().await {
        Ok(answer) => answer,
        Err(e) if e.is_timeout() => return Err((None, format!("timed out after {timeout}"))),
        Err(e) => return Err((None, format!("cannot reach {url}: {e}"))),
    };
    let status = answer.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let text = match answer.text().await {
        Ok(text) => text.chars().take(BODY_SHOWN).collect::<String>(),
        Err(e) if e.is_timeout() => return Err((Some(status.as_u16()), format!("timed out after {timeout}"))),
        Err(_) => String::new(),
    };
    let text = text.trim();
    let message = if text.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {text}") };
    Err((Some(status.as_u16()), message))
}
