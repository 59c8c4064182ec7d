//! `/api/v1/services/{name}/rollout(s)` and `/events`: start, watch and steer rollouts.

use axum::extract::State;
use canary_core::api::Envelope;
use std::net::{IpAddr, SocketAddr};

use axum::Extension;
use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use canary_core::admin::Role;
use canary_core::rollout::{Approval, Command, Event, Rollout};
use serde::Deserialize;
use serde::de::IntoDeserializer;
use utoipa::ToSchema;

use super::envelope::{ApiError, ApiResult, ok};
use super::extract::{ApiPath, ApiQuery};
use super::json::{JsonBody, MaybeJson};
use super::openapi::{ErrorEnvelope, ROLLOUTS};
use super::{AppState, auth};
use canary_core::api::{RolloutView, StartRollout};

/// `POST /api/v1/services/{name}/rollouts`.
#[utoipa::path(post, path = "/services/{name}/rollouts", operation_id = "startRollout", tag = ROLLOUTS,
    summary = "Start a rollout",
    params(("name" = String, Path, description = "The service's name")),
    request_body = StartRollout,
    responses(
        (status = 200, description = "`OK`: the rollout, started at its first step", body = Envelope<RolloutView>),
        (status = 400, description = "`INVALID_ARGUMENT`: the body is not JSON, or a version, address, step, duration or analysis setting is not valid", body = ErrorEnvelope),
        (status = 404, description = "`NOT_FOUND`: no such service", body = ErrorEnvelope),
        (status = 409, description = "`ROLLOUT_IN_PROGRESS`: another rollout of the service is active", body = ErrorEnvelope),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not `application/json`", body = ErrorEnvelope),
        (status = 503, description = "`UNAVAILABLE`: the store is unreachable or busy, or this controller is not the leader", body = ErrorEnvelope),
    ),
)]
pub async fn start(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    JsonBody(body): JsonBody<StartRollout>,
) -> ApiResult {
    let version = body.version.as_str().to_owned();
    let view = state.controller.start(&name, body).await?;
    Ok(ok(format!("{name}: rollout {} of {version} started at {}%.", view.rollout.id, view.weight), view))
}

/// `GET /api/v1/services/{name}/rollout`: the active rollout, else the latest one.
#[utoipa::path(get, path = "/services/{name}/rollout", operation_id = "currentRollout", tag = ROLLOUTS,
    summary = "The active rollout, else the latest: phase, step, weight, hold and the judge's verdicts",
    params(("name" = String, Path, description = "The service's name")),
    responses(
        (status = 200, description = "`OK`: the rollout", body = Envelope<RolloutView>),
        (status = 404, description = "`NOT_FOUND`: no such service, or it never had a rollout", body = ErrorEnvelope),
        (status = 503, description = "`UNAVAILABLE`: the store is unreachable", body = ErrorEnvelope),
    ),
)]
pub async fn current(State(state): State<AppState>, ApiPath(name): ApiPath<String>) -> ApiResult {
    let view = state.controller.current_or_latest(&name).await?;
    Ok(ok(format!("{name}: rollout {} is {}.", view.rollout.id, view.rollout.phase.name()), view))
}

/// `GET /api/v1/services/{name}/rollouts`: every rollout, oldest first.
#[utoipa::path(get, path = "/services/{name}/rollouts", operation_id = "rolloutHistory", tag = ROLLOUTS,
    summary = "Every rollout of the service, oldest first",
    params(("name" = String, Path, description = "The service's name")),
    responses(
        (status = 200, description = "`OK`: the rollouts", body = Envelope<Vec<Rollout>>),
        (status = 404, description = "`NOT_FOUND`: no such service", body = ErrorEnvelope),
        (status = 503, description = "`UNAVAILABLE`: the store is unreachable", body = ErrorEnvelope),
    ),
)]
pub async fn history(State(state): State<AppState>, ApiPath(name): ApiPath<String>) -> ApiResult {
    let rollouts = state.controller.history(&name).await?;
    Ok(ok(format!("{name}: {} rollout(s).", rollouts.len()), rollouts))
}

/// Optional body of the actions: a reason to log.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Why, in words.
    #[serde(default)]
    pub reason: Option<String>,
    /// Who acts, for the event log of `approve` and `reject` (beside the token's role and the
    /// client's address, which are always logged); at most 64 characters.
    #[serde(default)]
    pub by: Option<String>,
}

/// What a person can do to an active rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RolloutAction {
    /// Skip the remaining steps: the canary becomes stable.
    Promote,
    /// Everyone back to stable at once.
    Abort,
    /// Hold the current step until resumed.
    Pause,
    /// Go on from a pause.
    Resume,
    /// Let a rollout waiting at an `approve` step go on.
    Approve,
    /// Refuse a rollout waiting at an `approve` step: it is aborted.
    Reject,
}

impl RolloutAction {
    /// The action named in a path, by the names the document lists.
    fn parse(name: &str) -> Result<RolloutAction, ApiError> {
        let text: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = name.into_deserializer();
        RolloutAction::deserialize(text).map_err(|_| {
            ApiError::invalid(format!("Unknown action {name:?}: use promote, abort, pause, resume, approve or reject."))
        })
    }
}

/// `POST /api/v1/services/{name}/rollout/{action}` with action
/// `promote|abort|pause|resume|approve|reject`.
#[utoipa::path(post, path = "/services/{name}/rollout/{action}", operation_id = "actOnRollout", tag = ROLLOUTS,
    summary = "Promote, abort, pause, resume, approve or reject the active rollout",
    params(
        ("name" = String, Path, description = "The service's name"),
        ("action" = inline(RolloutAction), Path, description = "What to do"),
    ),
    request_body(content = Option<ActionBody>, description = "Optional: why, for the event log"),
    responses(
        (status = 200, description = "`OK`: the rollout after the action", body = Envelope<RolloutView>),
        (status = 400, description = "`INVALID_ARGUMENT`: an unknown action, a body that is not JSON, or a `by` that is too long or not printable", body = ErrorEnvelope),
        (status = 404, description = "`NOT_FOUND`: no such service, or no active rollout", body = ErrorEnvelope),
        (status = 409, description = "`FAILED_PRECONDITION`: the action does not fit the rollout's phase (`approve` and `reject` need a rollout in `awaitingApproval`)", body = ErrorEnvelope),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: a body that is not `application/json`", body = ErrorEnvelope),
        (status = 503, description = "`UNAVAILABLE`: the store is unreachable or busy, or this controller is not the leader", body = ErrorEnvelope),
    ),
)]
pub async fn act(
    State(state): State<AppState>,
    ApiPath((name, action)): ApiPath<(String, String)>,
    headers: HeaderMap,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    MaybeJson(body): MaybeJson<ActionBody>,
) -> ApiResult {
    let body = body.unwrap_or_default();
    let reason = || body.reason.clone().unwrap_or_else(|| "by an operator".to_owned());
    let approval = || {
        let client = client.as_ref().map(|Extension(ConnectInfo(addr))| addr.ip());
        Ok::<_, ApiError>(Approval {
            by: approver(&state, &headers, client, body.by.as_deref())?,
            reason: body.reason.clone(),
        })
    };
    let command = match RolloutAction::parse(&action)? {
        RolloutAction::Promote => Command::Promote(reason()),
        RolloutAction::Abort => Command::Abort(reason()),
        RolloutAction::Pause => Command::Pause(reason()),
        RolloutAction::Resume => Command::Resume,
        RolloutAction::Approve => Command::Approve(approval()?),
        RolloutAction::Reject => Command::Reject(approval()?),
    };
    let view = state.controller.act(&name, command).await?;
    Ok(ok(format!("{name}: rollout {} is {}.", view.rollout.id, view.rollout.phase.name()), view))
}

/// Who approves, in words: the name they gave, the token they sent and where from
/// (`alice (admin token, 127.0.0.1)`).
fn approver(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
    by: Option<&str>,
) -> Result<String, ApiError> {
    let token = match state.access.tokens.role(auth::bearer(headers)) {
        _ if !state.access.tokens.required() => "no token",
        Ok(Role::Admin) => "admin token",
        Ok(Role::Read) => "read token",
        Err(_) => "no token",
    };
    let from = client.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
    let Some(by) = by.map(str::trim).filter(|by| !by.is_empty()) else {
        return Ok(format!("{} from {from}", if token == "no token" { "a caller without a token" } else { token }));
    };
    if by.chars().count() > 64 || by.chars().any(char::is_control) {
        return Err(ApiError::invalid("`by` must be at most 64 printable characters."));
    }
    Ok(format!("{by} ({token}, {from})"))
}

/// Query of the event log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// At most this many, the most recent (default 200, at most 10,000).
    pub limit: Option<usize>,
}

/// `GET /api/v1/services/{name}/events`.
#[utoipa::path(get, path = "/services/{name}/events", operation_id = "events", tag = ROLLOUTS,
    summary = "The service's event log, oldest first",
    params(("name" = String, Path, description = "The service's name"), EventsQuery),
    responses(
        (status = 200, description = "`OK`: the events", body = Envelope<Vec<Event>>),
        (status = 404, description = "`NOT_FOUND`: no such service", body = ErrorEnvelope),
        (status = 503, description = "`UNAVAILABLE`: the store is unreachable", body = ErrorEnvelope),
    ),
)]
pub async fn events(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(200).min(10_000);
    let events = state.controller.events(&name, limit).await?;
    Ok(ok(format!("{name}: {} event(s).", events.len()), events))
}
