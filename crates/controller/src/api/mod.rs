//! The admin listener: the JSON API under `/api/v1`, `/metrics`, `/healthz` and `/readyz`.
//!
//! Every API response, success or error, is the envelope `{code, clientMessage,
//! systemMessage, data}`; unknown paths, wrong methods and unreadable paths or queries get one
//! too. Every request first passes [`guard`]: a `Host` this listener answers to, and for a
//! state change a JSON content type and no page of another site. When a token is configured
//! every `/api/v1` call needs it ([`auth`]); the probes stay open for load balancers, and
//! `/metrics` is open unless a metrics token is configured.

pub mod alerts;
pub mod auth;
pub mod envelope;
pub mod extract;
pub mod guard;
pub mod json;
pub mod openapi;
pub mod rollouts;
pub mod services;
pub mod trains;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use canary_core::admin::Access;
use canary_core::api::Code;
use prometheus_client::registry::Registry;

use envelope::ApiError;

/// Whether this process's gateway listeners are up, for `/readyz`.
pub trait Listeners: Send + Sync {
    /// The services whose listener is not bound (yet); empty when this process serves none.
    fn not_listening(&self) -> Vec<String>;
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The rollout controller.
    pub controller: Arc<crate::Controller>,
    /// The tokens, the host names the listener answers to and its limits.
    pub access: Arc<Access>,
    /// Everything `/metrics` exposes.
    pub registry: Arc<Registry>,
    /// This process's gateway listeners (none on a controller alone).
    pub listeners: Arc<dyn Listeners>,
}

/// The admin router. Its `/api/v1` routes are [`openapi::api_routes`], the list the API's
/// document is made from.
pub fn router(state: AppState) -> Router {
    let (api, _document) = openapi::api_routes().split_for_parts();
    let api = api
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .nest(openapi::PREFIX, api)
        .merge(crate::dashboard::routes(&state))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refusal) = state.access.tokens.opens_metrics(auth::bearer(&headers)) {
        return auth::refused(refusal, "/metrics needs the metrics token.").into_response();
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &state.registry) {
        return ApiError::new(Code::Internal, "Metrics could not be encoded.", e.to_string()).into_response();
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let unbound = state.listeners.not_listening();
    if unbound.is_empty() {
        format!("ready: {}\n", state.controller.routing().health().describe()).into_response()
    } else {
        let text = format!("not ready: {} not listening\n", unbound.join(", "));
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}

pub(crate) async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        Code::NotFound,
        "No such API endpoint.",
        format!("{} {} matches no route", req.method(), req.uri().path()),
    )
}

pub(crate) async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        format!("{} is not supported here.", req.method()),
        format!("{} {} matches a route but not its method", req.method(), req.uri().path()),
    )
}
