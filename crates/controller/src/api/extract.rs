//! Path and query extractors whose rejections are the envelope (`400 INVALID_ARGUMENT`)
//! instead of axum's plain text.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::envelope::ApiError;

/// The path's parameters, like [`Path`]; a segment that is not UTF-8 or not the right type is
/// refused in the envelope.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(e) => Err(ApiError::new(
                canary_core::api::Code::InvalidArgument,
                format!("The path {:?} cannot be read: {}.", parts.uri.path(), e.body_text()),
                e.body_text(),
            )),
        }
    }
}

/// The query string, like [`Query`]; an unknown key or a value of the wrong type is refused in
/// the envelope.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(e) => Err(ApiError::invalid(format!("The query cannot be read: {}.", e.body_text()))),
        }
    }
}
