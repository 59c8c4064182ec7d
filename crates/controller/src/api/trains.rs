//! `/api/v1/trains`: release trains, one rollout over several services.

use axum::extract::State;
use canary_core::api::{Envelope, StartTrain, TrainView};

use super::AppState;
use super::envelope::{ApiResult, ok};
use super::extract::ApiPath;
use super::json::JsonBody;
use super::openapi::{ErrorEnvelope, ROLLOUTS};

/// `POST /api/v1/trains`.
#[utoipa::path(post, path = "/trains", operation_id = "startTrain", tag = ROLLOUTS,
    summary = "Start a release train: one rollout over several services, with one plan, one salt and one verdict",
    description = "Every member's rollout begins in one commit, or none does. The members then move \
        together: a step advances once every member's judge finds it safe; any member's rollback, \
        pause, or a person's action on any member (`/services/{name}/rollout/{action}`) applies \
        to all of them.",
    request_body = StartTrain,
    responses(
        (status = 200, description = "`OK`: the train, every member at its first step", body = Envelope<TrainView>),
        (status = 400, description = "`INVALID_ARGUMENT`: fewer than two services, a service named twice, members that fix different salts, or a version, address, step, duration or analysis setting that is not valid", body = ErrorEnvelope),
        (status = 404, description = "`NOT_FOUND`: no such service", body = ErrorEnvelope),
        (status = 409, description = "`ROLLOUT_IN_PROGRESS`: a member already has an active rollout", body = ErrorEnvelope),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not `application/json`", body = ErrorEnvelope),
        (status = 503, description = "`UNAVAILABLE`: the store is unreachable or busy", body = ErrorEnvelope),
    ),
)]
pub async fn start(State(state): State<AppState>, JsonBody(body): JsonBody<StartTrain>) -> ApiResult {
    let view = state.controller.start_train(body).await?;
    let services: Vec<&str> = view.members.iter().map(|m| m.rollout.service.as_str()).collect();
    Ok(ok(format!("Release train {} started over {}.", view.id, services.join(", ")), view))
}

/// `GET /api/v1/trains/{id}`.
#[utoipa::path(get, path = "/trains/{id}", operation_id = "getTrain", tag = ROLLOUTS,
    summary = "A release train: each member's active (else latest) rollout",
    params(("id" = String, Path, description = "The train's id")),
    responses(
        (status = 200, description = "`OK`: the train", body = Envelope<TrainView>),
        (status = 404, description = "`NOT_FOUND`: no service's active or latest rollout belongs to this train", body = ErrorEnvelope),
        (status = 503, description = "`UNAVAILABLE`: the store is unreachable", body = ErrorEnvelope),
    ),
)]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult {
    let view = state.controller.train_view(&id).await?;
    let phases: Vec<String> =
        view.members.iter().map(|m| format!("{} {}", m.rollout.service, m.rollout.phase.name())).collect();
    Ok(ok(format!("Release train {id}: {}.", phases.join(", ")), view))
}
