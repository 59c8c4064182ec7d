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
//! with the user's network position: an `Origin` that is not one of the admin's own (an allowed
//! host at the request's port, never merely the request's own `Host`, which a rebound name
//! controls) is refused with `403`. A client message or frame over [`MAX_MESSAGE`] closes the
//! socket before it is buffered, and at most `max_feed_connections` sockets are open at once
//! (`503` for more), so unauthenticated sockets cannot exhaust memory.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use canary_core::admin::Role;
use canary_core::api::Code;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;

use super::Dashboard;
use canary_core::clock::unix_ms;

use super::sampler::SamplerEvent;
use crate::api::envelope::ApiError;
use crate::api::openapi::{DASHBOARD, ErrorEnvelope};
use canary_core::api::{Update, UpdateKind};

/// How long a client has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message or frame a client may send; the hello is well under 1 KiB.
pub const MAX_MESSAGE: usize = 64 * 1024;

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

/// Upgrades to the feed after checking the origin and that a socket is free.
#[utoipa::path(get, path = "/api/v1/stream", operation_id = "liveFeed", tag = DASHBOARD,
    summary = "The dashboard's live feed, over a WebSocket",
    description = "The client speaks first: `{\"type\":\"hello\",\"token\":…}` (the admin or read token, or null when none \
        is configured); a wrong token closes the socket with code 4401. Then the server sends a `snapshot`, and \
        `rollout`, `judge`, `routing` and `metrics` messages; `docs/dashboard.md` has the format. Client messages \
        are limited to 64 KiB.",
    responses(
        (status = 101, description = "Switching Protocols: the feed"),
        (status = 400, description = "`INVALID_ARGUMENT`: not a WebSocket upgrade", body = ErrorEnvelope),
        (status = 403, description = "`PERMISSION_DENIED`: the page's Origin is not this admin listener", body = ErrorEnvelope),
        (status = 503, description = "`UNAVAILABLE`: `[admin] max_feed_connections` feeds are open already", body = ErrorEnvelope),
    ),
)]
pub async fn handler(
    State(dashboard): State<Dashboard>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(refused) = crate::api::guard::check_page(&dashboard.app.access.hosts, &headers) {
        return ApiError {
            client_message: "The live feed only serves pages of this admin listener.".into(),
            ..refused
        }
        .into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(e) => return ApiError::invalid(format!("This endpoint speaks WebSocket only: {e}.")).into_response(),
    };
    let Ok(permit) = dashboard.feeds.clone().try_acquire_owned() else {
        return ApiError::new(
            Code::Unavailable,
            "Too many live feeds are open on this admin listener; close a dashboard tab or try again later.",
            format!(
                "all {} feed sockets ([admin] max_feed_connections) are in use",
                dashboard.app.access.max_feed_connections
            ),
        )
        .into_response();
    };
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(socket, dashboard, permit))
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

async fn serve(mut socket: WebSocket, dashboard: Dashboard, _permit: OwnedSemaphorePermit) {
    let _counted = Counted::new();
    let Some(role) = authenticate(&mut socket, &dashboard).await else {
        return;
    };
    // Subscribe before the snapshot is built so nothing between the two is lost.
    let mut updates = dashboard.app.controller.subscribe();
    let mut ticks = dashboard.sampler.subscribe();
    if send(&mut socket, &snapshot(&dashboard, role).await).await.is_err() {
        return;
    }
    loop {
        let message = tokio::select! {
            update = updates.recv() => match update {
                Ok(update) => delta(&dashboard, update).await,
                Err(RecvError::Lagged(_)) => snapshot(&dashboard, role).await,
                Err(RecvError::Closed) => return,
            },
            event = ticks.recv() => match event {
                Ok(SamplerEvent::Metrics(tick)) => json!({"type": "metrics", "atMs": tick.at_ms, "points": tick.points}),
                Ok(SamplerEvent::Routing(view)) => json!({"type": "routing", "service": view.name, "routing": view}),
                Err(RecvError::Lagged(_)) => snapshot(&dashboard, role).await,
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
async fn authenticate(socket: &mut WebSocket, dashboard: &Dashboard) -> Option<Role> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await;
    let hello = match first {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Hello>(&text).ok(),
        _ => None,
    };
    let Some(Hello::Hello { token }) = hello else {
        close(socket, 4400, "expected {\"type\":\"hello\"} first").await;
        return None;
    };
    match dashboard.app.access.tokens.role(token.as_deref()) {
        Ok(role) => Some(role),
        Err(_) => {
            close(socket, CLOSE_UNAUTHORIZED, "the live feed needs the admin or read token").await;
            None
        }
    }
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

/// Everything a page shows, now, for a client with `role`.
async fn snapshot(dashboard: &Dashboard, role: Role) -> Value {
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
        "authRequired": app.access.tokens.required(),
        "role": role.name(),
        "services": services,
        "metrics": ticks.iter().map(|t| t.as_ref()).collect::<Vec<_>>(),
    })
}
