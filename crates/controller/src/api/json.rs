//! Reading JSON request bodies with errors that say what is wrong, in the envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use canary_core::admin::DEFAULT_HEADER_READ_TIMEOUT;
use canary_core::api::Code;
use serde::de::DeserializeOwned;

use super::envelope::ApiError;
use super::guard::{BodyTimeout, is_json};

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

/// A JSON body, refused with `415` when it is not `application/json` and `400` when it does
/// not parse or a value is out of range.
pub struct JsonBody<T>(pub T);

/// An optional JSON body: an empty body is `None`. The request must still say
/// `application/json` (the admin router's guard refuses state changes that do not), so an
/// empty HTML form post is not taken for "no body".
pub struct MaybeJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for MaybeJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_bytes(req).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(MaybeJson(None));
        }
        parse(&bytes).map(|t| MaybeJson(Some(t)))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        parse(&json_bytes(req).await?).map(JsonBody)
    }
}

/// The body of a request that says it is JSON, up to [`MAX_BODY`], within its
/// [`BodyTimeout`] (10 s where the router's guard set none).
async fn json_bytes(req: Request) -> Result<Bytes, ApiError> {
    if !is_json(req.headers()) {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "Send the body as JSON with Content-Type: application/json.",
            "missing or wrong content type",
        ));
    }
    let BodyTimeout(limit) = req.extensions().get().copied().unwrap_or(BodyTimeout(DEFAULT_HEADER_READ_TIMEOUT));
    match tokio::time::timeout(limit, axum::body::to_bytes(req.into_body(), MAX_BODY)).await {
        Ok(read) => read.map_err(|e| ApiError::invalid(format!("Could not read the request body: {e}"))),
        Err(_) => Err(ApiError::invalid(format!("The request body did not arrive within {limit:?}."))),
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
