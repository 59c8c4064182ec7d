//! Bearer tokens on `/api/v1`: the admin token allows everything, the read token what changes
//! nothing (`GET` and `HEAD`); the rules are [`canary_core::admin::tokens`].

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use canary_core::admin::{Refusal, Role};
use canary_core::api::Code;

use super::AppState;
use super::envelope::ApiError;
use super::guard::changes_state;

/// Refuses an `/api/v1` call without a token that allows it: `401` without a good token,
/// `403` for a read token that asks for a change.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match state.access.tokens.role(bearer(req.headers())) {
        Err(refusal) => refused(refusal, "This action needs the admin token.").into_response(),
        Ok(Role::Read) if changes_state(req.method()) => ApiError::new(
            Code::PermissionDenied,
            "The read token only sees; this action needs the admin token.",
            format!("{} {} changes state and the read token was sent", req.method(), req.uri().path()),
        )
        .into_response(),
        Ok(_) => next.run(req).await,
    }
}

/// The bearer token of `Authorization: Bearer <token>`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

/// `401` for a missing or wrong token, with `client` as the message for people.
pub fn refused(refusal: Refusal, client: &str) -> ApiError {
    let system = match refusal {
        Refusal::Missing => "missing bearer token",
        Refusal::Wrong => "wrong bearer token",
    };
    ApiError::new(Code::Unauthenticated, client, system)
}
