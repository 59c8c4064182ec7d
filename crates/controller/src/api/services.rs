//! `/api/v1/services`: what each service routes where, and changing it by hand.

use axum::extract::{Path, State};
use canary_core::api::{Code, SetCanary, SetWeight};
use canary_core::config::VersionConfig;
use canary_gateway::{RouteError, Service};

use super::AppState;
use super::envelope::{ApiError, ApiResult, ok};
use super::json::JsonBody;

fn service<'a>(state: &'a AppState, name: &str) -> Result<&'a std::sync::Arc<Service>, ApiError> {
    state.gateway.service(name).ok_or_else(|| ApiError::no_service(name))
}

fn refused(e: RouteError) -> ApiError {
    match e {
        RouteError::NoCanary(_) => ApiError::new(Code::FailedPrecondition, format!("{e}."), e.to_string()),
        RouteError::Spec(_) => ApiError::invalid(format!("{e}.")),
    }
}

/// `GET /api/v1/services`.
pub async fn list(State(state): State<AppState>) -> ApiResult {
    let views: Vec<_> = state.gateway.services().iter().map(|s| s.view()).collect();
    Ok(ok(format!("{} service(s).", views.len()), views))
}

/// `GET /api/v1/services/{name}`.
pub async fn get(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let view = service(&state, &name)?.view();
    Ok(ok(format!("Service {name}."), view))
}

/// `PUT /api/v1/services/{name}/weight`.
pub async fn set_weight(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<SetWeight>,
) -> ApiResult {
    let service = service(&state, &name)?;
    service.set_weight(body.weight).map_err(refused)?;
    Ok(ok(format!("{name}: canary weight set to {}.", body.weight), service.view()))
}

/// `PUT /api/v1/services/{name}/canary`.
pub async fn set_canary(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<SetCanary>,
) -> ApiResult {
    let service = service(&state, &name)?;
    let version = body.version.as_str().to_owned();
    let canary = VersionConfig { version: body.version, upstreams: body.upstreams };
    service.set_canary(canary, body.weight).map_err(refused)?;
    Ok(ok(format!("{name}: canary {version} deployed."), service.view()))
}

/// `DELETE /api/v1/services/{name}/canary`.
pub async fn remove_canary(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let service = service(&state, &name)?;
    service.remove_canary().map_err(refused)?;
    Ok(ok(format!("{name}: canary removed; all users on stable."), service.view()))
}
