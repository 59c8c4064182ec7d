//! `/api/v1/services`: what each service routes where, and changing it by hand while no
//! rollout owns it.

use axum::extract::{Path, State};
use canary_core::Weight;
use canary_core::api::{SetCanary, SetWeight};
use canary_core::config::VersionConfig;
use canary_core::spec::default_rollout_id;
use canary_gateway::RouteError;

use super::AppState;
use super::envelope::{ApiResult, ok};
use super::json::JsonBody;

/// `GET /api/v1/services`.
pub async fn list(State(state): State<AppState>) -> ApiResult {
    let views: Vec<_> = state.gateway.services().iter().map(|s| s.view()).collect();
    Ok(ok(format!("{} service(s).", views.len()), views))
}

/// `GET /api/v1/services/{name}`.
pub async fn get(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let view = state.controller.routing().service(&name)?.view();
    Ok(ok(format!("Service {name}."), view))
}

/// `PUT /api/v1/services/{name}/weight`.
pub async fn set_weight(
    State(state): State<AppState>,
    Path(name): Path<String>,
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
    Ok(ok(format!("{name}: canary weight set to {}.", body.weight), routing.service(&name)?.view()))
}

/// `PUT /api/v1/services/{name}/canary`.
pub async fn set_canary(
    State(state): State<AppState>,
    Path(name): Path<String>,
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
    Ok(ok(format!("{name}: canary {version} deployed."), routing.service(&name)?.view()))
}

/// `DELETE /api/v1/services/{name}/canary`.
pub async fn remove_canary(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
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
    Ok(ok(format!("{name}: canary removed; all users on stable."), routing.service(&name)?.view()))
}
