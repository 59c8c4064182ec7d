//! Reading JSON request bodies with errors that say what is wrong, in the envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use canary_core::api::Code;
use serde::de::DeserializeOwned;

use super::envelope::ApiError;

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

/// A JSON body, refused with `415` when it is not `application/json` and `400` when it does
/// not parse or a value is out of range.
pub struct JsonBody<T>(pub T);

/// An optional JSON body: no body at all is `None`; a body must be JSON as for [`JsonBody`].
pub struct MaybeJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for MaybeJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared_empty = req.headers().get(CONTENT_LENGTH).is_some_and(|v| v.as_bytes() == b"0");
        let has_type = req.headers().contains_key(CONTENT_TYPE);
        if declared_empty || (!has_type && !req.headers().contains_key(TRANSFER_ENCODING)) {
            return Ok(MaybeJson(None));
        }
        JsonBody::from_request(req, state).await.map(|JsonBody(t)| MaybeJson(Some(t)))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                Code::UnsupportedMediaType,
                "Send the body as JSON with Content-Type: application/json.",
                "missing or wrong content type",
            ));
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|e| ApiError::invalid(format!("Could not read the request body: {e}")))?;
        let _ = state;
        parse(&bytes).map(JsonBody)
    }
}

fn parse<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let client = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "The body is not valid JSON.".to_owned()
            }
            _ => format!("Invalid request: {}", strip_position(&e.to_string())),
        };
        ApiError::new(Code::InvalidArgument, client, e.to_string())
    })
}

fn strip_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}
