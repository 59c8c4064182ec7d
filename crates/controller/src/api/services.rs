//! `/api/v1/services`: what each service routes where, and changing it by hand while no
//! rollout owns it.

use axum::extract::State;
use canary_core::RouteError;
use canary_core::Weight;
use canary_core::api::{Envelope, ServiceView, SetCanary, SetWeight};
use canary_core::config::VersionConfig;
use canary_core::spec::default_rollout_id;

use super::AppState;
use super::envelope::{ApiResult, ok};
use super::extract::ApiPath;
use super::json::JsonBody;
use super::openapi::{ErrorEnvelope, SERVICES};

/// `GET /api/v1/services`.
#[utoipa::path(get, path = "/services", operation_id = "listServices", tag = SERVICES,
    summary = "Every service's routing",
    responses((status = 200, description = "`OK`: every service", body = Envelope<Vec<ServiceView>>)),
)]
pub async fn list(State(state): State<AppState>) -> ApiResult {
    let views = state.controller.service_views().await?;
    Ok(ok(format!("{} service(s).", views.len()), views))
}

/// `GET /api/v1/services/{name}`.
#[utoipa::path(get, path = "/services/{name}", operation_id = "getService", tag = SERVICES,
    summary = "One service: versions, weight, rollout id, breaker, generation",
    params(("name" = String, Path, description = "The service's name")),
    responses(
        (status = 200, description = "`OK`: the service", body = Envelope<ServiceView>),
        (status = 404, description = "`NOT_FOUND`: no such service", body = ErrorEnvelope),
    ),
)]
pub async fn get(State(state): State<AppState>, ApiPath(name): ApiPath<String>) -> ApiResult {
    let view = state.controller.service_view(&name).await?;
    Ok(ok(format!("Service {name}."), view))
}

/// `PUT /api/v1/services/{name}/weight`.
#[utoipa::path(put, path = "/services/{name}/weight", operation_id = "setWeight", tag = SERVICES,
    summary = "Set the canary weight",
    params(("name" = String, Path, description = "The service's name")),
    request_body = SetWeight,
    responses(
        (status = 200, description = "`OK`: the service with its new weight", body = Envelope<ServiceView>),
        (status = 400, description = "`INVALID_ARGUMENT`: the body is not JSON or the weight is out of range", body = ErrorEnvelope),
        (status = 404, description = "`NOT_FOUND`: no such service", body = ErrorEnvelope),
        (status = 409, description = "`ROLLOUT_IN_PROGRESS`: a rollout owns the routing; `FAILED_PRECONDITION`: a weight above 0 without a canary", body = ErrorEnvelope),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not `application/json`", body = ErrorEnvelope),
        (status = 503, description = "`UNAVAILABLE`: the store is unreachable or busy", body = ErrorEnvelope),
    ),
)]
pub async fn set_weight(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    JsonBody(body): JsonBody<SetWeight>,
) -> ApiResult {
    let routing = state.controller.routing();
    routing.service(&name)?;
    state.controller.ensure_no_rollout(&name).await?;
    routing
        .change(&name, |spec| {
            if spec.canary.is_none() && body.weight != Weight::ZERO {
                return Err(RouteError::NoCanary(name.clone()));
            }
            spec.weight = body.weight;
            Ok(())
        })
        .await?;
    Ok(ok(format!("{name}: canary weight set to {}.", body.weight), state.controller.service_view(&name).await?))
}

/// `PUT /api/v1/services/{name}/canary`.
#[utoipa::path(put, path = "/services/{name}/canary", operation_id = "setCanary", tag = SERVICES,
    summary = "Deploy or replace the canary",
    description = "A new version starts a new cohort at weight 0 unless `weight` is given.",
    params(("name" = String, Path, description = "The service's name")),
    request_body = SetCanary,
    responses(
        (status = 200, description = "`OK`: the service with its canary", body = Envelope<ServiceView>),
        (status = 400, description = "`INVALID_ARGUMENT`: the body is not JSON, or a version, address or weight is not valid", body = ErrorEnvelope),
        (status = 404, description = "`NOT_FOUND`: no such service", body = ErrorEnvelope),
        (status = 409, description = "`ROLLOUT_IN_PROGRESS`: a rollout owns the routing", body = ErrorEnvelope),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not `application/json`", body = ErrorEnvelope),
        (status = 503, description = "`UNAVAILABLE`: the store is unreachable or busy", body = ErrorEnvelope),
    ),
)]
pub async fn set_canary(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    JsonBody(body): JsonBody<SetCanary>,
) -> ApiResult {
    let routing = state.controller.routing();
    routing.service(&name)?;
    state.controller.ensure_no_rollout(&name).await?;
    let version = body.version.as_str().to_owned();
    let canary = VersionConfig { version: body.version, upstreams: body.upstreams };
    routing
        .change(&name, |spec| {
            let same_version = spec.canary.as_ref().is_some_and(|c| c.version == canary.version);
            if !same_version {
                spec.rollout_id = default_rollout_id(&name, canary.version.as_str());
                spec.weight = Weight::ZERO;
            }
            if let Some(w) = body.weight {
                spec.weight = w;
            }
            spec.canary = Some(canary.clone());
            Ok(())
        })
        .await?;
    Ok(ok(format!("{name}: canary {version} deployed."), state.controller.service_view(&name).await?))
}

/// `DELETE /api/v1/services/{name}/canary`.
#[utoipa::path(delete, path = "/services/{name}/canary", operation_id = "removeCanary", tag = SERVICES,
    summary = "Remove the canary: everyone goes to stable at once",
    params(("name" = String, Path, description = "The service's name")),
    responses(
        (status = 200, description = "`OK`: the service without a canary", body = Envelope<ServiceView>),
        (status = 404, description = "`NOT_FOUND`: no such service", body = ErrorEnvelope),
        (status = 409, description = "`ROLLOUT_IN_PROGRESS`: a rollout owns the routing; `FAILED_PRECONDITION`: there is no canary", body = ErrorEnvelope),
        (status = 503, description = "`UNAVAILABLE`: the store is unreachable or busy", body = ErrorEnvelope),
    ),
)]
pub async fn remove_canary(State(state): State<AppState>, ApiPath(name): ApiPath<String>) -> ApiResult {
    let routing = state.controller.routing();
    routing.service(&name)?;
    state.controller.ensure_no_rollout(&name).await?;
    routing
        .change(&name, |spec| {
            if spec.canary.take().is_none() {
                return Err(RouteError::NoCanary(name.clone()));
            }
            spec.weight = Weight::ZERO;
            Ok(())
        })
        .await?;
    Ok(ok(format!("{name}: canary removed; all users on stable."), state.controller.service_view(&name).await?))
}
