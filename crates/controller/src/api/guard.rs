//! What every request to the admin listener must show before it is routed.
//!
//! - `Host` must name this listener ([`AllowedHosts`]), or the answer is `421`: a page whose
//!   own name was re-resolved to this address (DNS rebinding) must not read or steer it. The
//!   probes answer any name, since load balancers and kubelets send the node's address, and a
//!   request without `Host` (HTTP/1.0, never a browser) is answered too.
//! - A state change (`POST`, `PUT`, `PATCH`, `DELETE`) made by a page of another site is refused
//!   with `403`: its `Origin` is not one of the admin's own, or `Sec-Fetch-Site` says
//!   `cross-site` or `same-site`.
//! - A state change must say `Content-Type: application/json`, body or not (`415` otherwise).
//!   Browsers send that type across sites only after a CORS preflight, which this listener
//!   never grants, so a plain HTML form or a `no-cors` fetch from another site cannot reach a
//!   handler even where a browser sends no `Origin`.

use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, HOST, ORIGIN};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use canary_core::admin::{AllowedHosts, is_foreign_fetch};
use canary_core::api::Code;

use super::AppState;
use super::envelope::ApiError;

/// Paths any `Host` may ask for: they say whether the process is up and nothing else.
const PROBES: [&str; 2] = ["/healthz", "/readyz"];

/// The middleware: answers a refused request itself, passes the others on with their
/// [`BodyTimeout`].
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match check(&state.access.hosts, &req) {
        Ok(()) => {
            req.extensions_mut().insert(BodyTimeout(state.access.body_timeout));
            next.run(req).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// How long the request's body may take to arrive (`[admin] header_read_timeout`), so a body
/// sent a byte at a time cannot hold a connection and its handler open.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub std::time::Duration);

/// Whether a request with this method asks for a change.
pub fn changes_state(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

fn check(hosts: &AllowedHosts, req: &Request) -> Result<(), ApiError> {
    let headers = req.headers();
    if !PROBES.contains(&req.uri().path()) {
        check_host(hosts, headers, req.uri().authority().map(|a| a.as_str()))?;
    }
    if changes_state(req.method()) {
        check_page(hosts, headers)?;
        check_json(headers)?;
    }
    Ok(())
}

fn check_host(hosts: &AllowedHosts, headers: &HeaderMap, uri_authority: Option<&str>) -> Result<(), ApiError> {
    let host = headers.get(HOST).map(|h| h.to_str().unwrap_or("\u{fffd}"));
    for name in [host, uri_authority].into_iter().flatten() {
        if !hosts.allows(name) {
            return Err(ApiError::new(
                Code::MisdirectedRequest,
                format!(
                    "This admin listener does not answer to {name:?}; add the name to [admin] allowed_hosts if it is its own."
                ),
                format!("Host {name:?} is none of {}", hosts.names().join(", ")),
            ));
        }
    }
    Ok(())
}

/// Refuses a request that a page of another site sent (its browser says so).
pub(crate) fn check_page(hosts: &AllowedHosts, headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Some(site) = text("sec-fetch-site")
        && is_foreign_fetch(site)
    {
        return Err(foreign(format!("Sec-Fetch-Site: {site}")));
    }
    if let Some(origin) = text(ORIGIN.as_str())
        && !hosts.is_own_origin(origin, text(HOST.as_str()).unwrap_or_default())
    {
        return Err(foreign(format!("Origin {origin:?} is not this admin listener")));
    }
    Ok(())
}

fn foreign(system: String) -> ApiError {
    ApiError::new(Code::PermissionDenied, "Only pages of this admin listener may do this.", system)
}

fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if is_json(headers) {
        return Ok(());
    }
    Err(ApiError::new(
        Code::UnsupportedMediaType,
        "Send changes as JSON, with Content-Type: application/json, even without a body.",
        "a state change without Content-Type: application/json",
    ))
}

/// Whether the request says its body is `application/json` (parameters such as `charset` allowed).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}
