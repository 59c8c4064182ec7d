//! The dashboard's files, embedded in the binary.
//!
//! They are served with `no-cache` (the browser revalidates, cheap on a loopback admin port)
//! so a new binary never runs with an old script, and with a strict Content-Security-Policy:
//! only this origin's scripts, styles, workers and sockets.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName};
use axum::response::{IntoResponse, Response};

use crate::api::envelope::ApiError;

/// `(name, content type, bytes)` of every file under `/dashboard/`.
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../assets/app.js")),
    ("feed.js", "text/javascript; charset=utf-8", include_str!("../../assets/feed.js")),
    ("charts.js", "text/javascript; charset=utf-8", include_str!("../../assets/charts.js")),
    ("worker.js", "text/javascript; charset=utf-8", include_str!("../../assets/worker.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../assets/style.css")),
    ("icon.svg", "image/svg+xml", include_str!("../../assets/icon.svg")),
];

const INDEX: &str = include_str!("../../assets/index.html");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; worker-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn serve(content_type: &str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (HeaderName::from_static("content-security-policy"), CSP),
            (HeaderName::from_static("x-content-type-options"), "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the dashboard page.
pub async fn index() -> Response {
    serve("text/html; charset=utf-8", INDEX)
}

/// `GET /dashboard/{file}`.
pub async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => serve(content_type, body),
        None => ApiError::new(
            canary_core::api::Code::NotFound,
            "No such dashboard file.",
            format!("/dashboard/{name} is not embedded"),
        )
        .into_response(),
    }
}
