//! `GET /api/v1/stream`: the dashboard's live feed over one WebSocket.
//!
//! The client speaks first: `{"type":"hello","token":"…"}` (the token may be `null` when none
//! is configured). A wrong or missing token closes the socket with code 4401, since the feed
//! carries rollout state the API would hide without the token. After a good hello the server
//! sends one `snapshot` with everything a page shows, then deltas: `rollout` (a transition and
//! its event), `judge` (the judge looked again), `routing` (a service's routing changed) and
//! `metrics` (one tick a second). A client that falls behind gets a fresh `snapshot` instead of
//! the deltas it missed, so it never has to reason about gaps. The message format is in
//! `docs/dashboard.md`.
//!
//! Browsers do not apply CORS to WebSockets, so a page on another site could open this socket
//! with the user's network position; an `Origin` that does not match `Host` is refused.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use axum::response::{IntoResponse, Response};
use canary_core::api::Code;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::Dashboard;
use canary_core::clock::unix_ms;

use super::sampler::SamplerEvent;
use crate::api::envelope::ApiError;
use crate::api::openapi::{DASHBOARD, ErrorEnvelope};
use canary_core::api::{Update, UpdateKind};

/// How long a client has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Close code for a missing or wrong token (4000–4999 are the application's).
pub const CLOSE_UNAUTHORIZED: u16 = 4401;

/// Rollouts per service a snapshot carries in its history.
const HISTORY_ROLLOUTS: usize = 20;

/// Events per service a snapshot carries.
const SNAPSHOT_EVENTS: usize = 200;

/// The first message a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Hello {
    Hello {
        #[serde(default)]
        token: Option<String>,
    },
}

/// Upgrades to the feed after checking the origin.
#[utoipa::path(get, path = "/api/v1/stream", operation_id = "liveFeed", tag = DASHBOARD,
    summary = "The dashboard's live feed, over a WebSocket",
    description = "The client speaks first: `{\"type\":\"hello\",\"token\":…}` (the admin token, or null when none is \
        configured); a wrong token closes the socket with code 4401. Then the server sends a `snapshot`, and \
        `rollout`, `judge`, `routing` and `metrics` messages; `docs/dashboard.md` has the format.",
    responses(
        (status = 101, description = "Switching Protocols: the feed"),
        (status = 400, description = "`INVALID_ARGUMENT`: not a WebSocket upgrade", body = ErrorEnvelope),
        (status = 409, description = "`FAILED_PRECONDITION`: the page's Origin is not this admin listener", body = ErrorEnvelope),
    ),
)]
pub async fn handler(
    State(dashboard): State<Dashboard>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !same_origin(&headers) {
        return ApiError::new(
            Code::FailedPrecondition,
            "The live feed only serves pages from this admin listener.",
            "websocket Origin does not match Host",
        )
        .into_response();
    }
    match upgrade {
        Ok(upgrade) => upgrade.on_upgrade(move |socket| serve(socket, dashboard)),
        Err(e) => ApiError::invalid(format!("This endpoint speaks WebSocket only: {e}.")).into_response(),
    }
}

/// Whether `Origin` (when a browser sent one) names the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN) else { return true };
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), headers.get(HOST).map(|h| h.to_str())) else {
        return false;
    };
    origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// Counts the socket in the gauge for as long as it lives.
struct Counted;

impl Counted {
    fn new() -> Counted {
        super::connections().inc();
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        super::connections().dec();
    }
}

async fn serve(mut socket: WebSocket, dashboard: Dashboard) {
    let _counted = Counted::new();
    if !authenticate(&mut socket, &dashboard).await {
        return;
    }
    // Subscribe before the snapshot is built so nothing between the two is lost.
    let mut updates = dashboard.app.controller.subscribe();
    let mut ticks = dashboard.sampler.subscribe();
    if send(&mut socket, &snapshot(&dashboard).await).await.is_err() {
        return;
    }
    loop {
        let message = tokio::select! {
            update = updates.recv() => match update {
                Ok(update) => delta(&dashboard, update).await,
                Err(RecvError::Lagged(_)) => snapshot(&dashboard).await,
                Err(RecvError::Closed) => return,
            },
            event = ticks.recv() => match event {
                Ok(SamplerEvent::Metrics(tick)) => json!({"type": "metrics", "atMs": tick.at_ms, "points": tick.points}),
                Ok(SamplerEvent::Routing(view)) => json!({"type": "routing", "service": view.name, "routing": view}),
                Err(RecvError::Lagged(_)) => snapshot(&dashboard).await,
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                // Pings are answered by the protocol layer; clients have nothing else to say.
                Some(Ok(_)) => continue,
            },
        };
        if send(&mut socket, &message).await.is_err() {
            return;
        }
    }
}

/// Waits for the hello and checks its token; closes the socket with a reason when it fails.
async fn authenticate(socket: &mut WebSocket, dashboard: &Dashboard) -> bool {
    let first = tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await;
    let hello = match first {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Hello>(&text).ok(),
        _ => None,
    };
    let Some(Hello::Hello { token }) = hello else {
        close(socket, 4400, "expected {\"type\":\"hello\"} first").await;
        return false;
    };
    if let Some(expected) = &dashboard.app.token {
        let given = token.unwrap_or_default();
        if !crate::api::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            close(socket, CLOSE_UNAUTHORIZED, "the live feed needs the admin token").await;
            return false;
        }
    }
    true
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

async fn send(socket: &mut WebSocket, message: &Value) -> Result<(), axum::Error> {
    socket.send(Message::text(message.to_string())).await
}

/// A controller update as a feed message.
async fn delta(dashboard: &Dashboard, update: Update) -> Value {
    let routing = dashboard.app.controller.service_view(&update.service).await.ok();
    match update.kind {
        UpdateKind::Tick => json!({"type": "judge", "service": update.service, "rollout": update.rollout}),
        UpdateKind::Rollout => {
            let mut rollout = update.rollout;
            // A transition's view carries no judge; keep the judge's latest look while the
            // rollout goes on, so the page does not blank its verdicts at every step.
            if let Some(view) = rollout.as_mut().filter(|v| v.judge.is_none() && !v.rollout.phase.is_terminal())
                && let Ok(live) = dashboard.app.controller.view(&update.service, None)
                && live.rollout.id == view.rollout.id
            {
                view.judge = live.judge;
            }
            json!({"type": "rollout", "service": update.service, "rollout": rollout, "event": update.event, "routing": routing})
        }
        UpdateKind::Routing => json!({"type": "routing", "service": update.service, "routing": routing}),
    }
}

/// Everything a page shows, now.
async fn snapshot(dashboard: &Dashboard) -> Value {
    let app = &dashboard.app;
    let mut services = Vec::new();
    let controller = &app.controller;
    for entry in controller.routing().services() {
        let name = entry.name.as_str();
        let rollout = controller.current_or_latest(name).await.ok();
        let mut history = controller.history(name).await.unwrap_or_default();
        history.drain(..history.len().saturating_sub(HISTORY_ROLLOUTS));
        let events = controller.events(name, SNAPSHOT_EVENTS).await.unwrap_or_default();
        services.push(json!({
            "name": name,
            "routing": controller.service_view(name).await.ok(),
            "rollout": rollout,
            "history": history,
            "events": events,
        }));
    }
    let ticks = dashboard.sampler.history();
    json!({
        "type": "snapshot",
        "atMs": unix_ms(),
        "authRequired": app.token.is_some(),
        "services": services,
        "metrics": ticks.iter().map(|t| t.as_ref()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            h.insert(ORIGIN, origin.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_pages_of_this_listener_may_open_the_feed() {
        assert!(same_origin(&headers(None, "127.0.0.1:7070")));
        assert!(same_origin(&headers(Some("http://127.0.0.1:7070"), "127.0.0.1:7070")));
        assert!(same_origin(&headers(Some("https://Admin.example:443"), "admin.example:443")));
        assert!(!same_origin(&headers(Some("http://evil.example"), "127.0.0.1:7070")));
        assert!(!same_origin(&headers(Some("null"), "127.0.0.1:7070")));
    }
}
