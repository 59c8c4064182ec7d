//! One attempt at one sink: the request its kind takes, and what the answer means.

use canary_core::notify::{Attempt, Notification, SinkConfig, SinkKind};
use canary_core::signature::{SIGNATURE_HEADER, sign_body};

/// An HTTP client for one sink: its timeout, no redirects (a receiver that moved must be
/// reconfigured, not followed with a signed body).
pub(super) fn client(config: &SinkConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(config.timeout.0)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sticky-canary/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("an HTTP client with a timeout builds")
}

/// Posts `notification` once.
pub(super) async fn attempt(client: &reqwest::Client, config: &SinkConfig, notification: &Notification) -> Attempt {
    let body = match config.kind {
        SinkKind::Webhook => notification.webhook_body(),
        SinkKind::Slack => serde_json::to_vec(&notification.slack_message()).expect("messages serialize"),
    };
    let mut request = client
        .post(config.url.as_str())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("x-canary-event", notification.event)
        .header("x-canary-delivery", &notification.id);
    if let Some(secret) = &config.secret {
        request = request.header(SIGNATURE_HEADER, sign_body(secret.as_bytes(), &body));
    }
    match request.body(body).send().await {
        Ok(answer) => Attempt::from_status(answer.status().as_u16()),
        Err(e) => Attempt::Retry(format!("no answer: {e}")),
    }
}
