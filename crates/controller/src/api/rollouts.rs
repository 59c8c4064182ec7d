//! `/api/v1/services/{name}/rollout(s)` and `/events`: start, watch and steer rollouts.

use axum::extract::{Path, Query, State};
use canary_core::rollout::Command;
use serde::Deserialize;

use super::AppState;
use super::envelope::{ApiError, ApiResult, ok};
use super::json::{JsonBody, MaybeJson};
use crate::rollouts::StartRollout;

/// `POST /api/v1/services/{name}/rollouts`.
pub async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<StartRollout>,
) -> ApiResult {
    let version = body.version.as_str().to_owned();
    let view = state.controller.start(&name, body).await?;
    Ok(ok(format!("{name}: rollout {} of {version} started at {}%.", view.rollout.id, view.weight), view))
}

/// `GET /api/v1/services/{name}/rollout`: the active rollout, else the latest one.
pub async fn current(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let view = state.controller.current_or_latest(&name).await?;
    Ok(ok(format!("{name}: rollout {} is {}.", view.rollout.id, view.rollout.phase.name()), view))
}

/// `GET /api/v1/services/{name}/rollouts`: every rollout, oldest first.
pub async fn history(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let rollouts = state.controller.history(&name).await?;
    Ok(ok(format!("{name}: {} rollout(s).", rollouts.len()), rollouts))
}

/// Optional body of the actions: a reason to log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Why, in words.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/services/{name}/rollout/{action}` with action `promote|abort|pause|resume`.
pub async fn act(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
    MaybeJson(body): MaybeJson<ActionBody>,
) -> ApiResult {
    let reason = body.and_then(|b| b.reason).unwrap_or_else(|| "by an operator".to_owned());
    let command = match action.as_str() {
        "promote" => Command::Promote(reason),
        "abort" => Command::Abort(reason),
        "pause" => Command::Pause(reason),
        "resume" => Command::Resume,
        other => {
            return Err(ApiError::invalid(format!("Unknown action {other:?}: use promote, abort, pause or resume.")));
        }
    };
    let view = state.controller.act(&name, command).await?;
    Ok(ok(format!("{name}: rollout {} is {}.", view.rollout.id, view.rollout.phase.name()), view))
}

/// Query of the event log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// At most this many, the most recent (default 200, at most 10,000).
    pub limit: Option<usize>,
}

/// `GET /api/v1/services/{name}/events`.
pub async fn events(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(200).min(10_000);
    let events = state.controller.events(&name, limit).await?;
    Ok(ok(format!("{name}: {} event(s).", events.len()), events))
}
