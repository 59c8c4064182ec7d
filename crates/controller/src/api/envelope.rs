//! The one response shape of the admin API, and the single place errors become responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use canary_core::api::{Code, Envelope};
use serde::Serialize;

/// A failed API call, turned into an envelope with `data: null`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Machine-readable outcome.
    pub code: Code,
    /// Short text fit to show a person.
    pub client_message: String,
    /// Detail for logs and operators.
    pub system_message: String,
}

impl ApiError {
    /// An error with both messages.
    pub fn new(code: Code, client_message: impl Into<String>, system_message: impl Into<String>) -> ApiError {
        ApiError { code, client_message: client_message.into(), system_message: system_message.into() }
    }

    /// `INVALID_ARGUMENT` with the same text for people and logs.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::new(Code::InvalidArgument, message.clone(), message)
    }

    /// `NOT_FOUND` for a service name.
    pub fn no_service(name: &str) -> ApiError {
        ApiError::new(
            Code::NotFound,
            format!("No service named {name:?}."),
            format!("service {name:?} is not configured"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code == Code::Internal {
            tracing::error!(system_message = %self.system_message, "admin API error");
        }
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body: Envelope<()> = Envelope {
            code: self.code,
            client_message: self.client_message,
            system_message: self.system_message,
            data: None,
        };
        (status, Json(body)).into_response()
    }
}

/// A successful envelope around `data`.
pub fn ok<T: Serialize>(client_message: impl Into<String>, data: T) -> Response {
    let body = Envelope {
        code: Code::Ok,
        client_message: client_message.into(),
        system_message: String::new(),
        data: Some(data),
    };
    (StatusCode::OK, Json(body)).into_response()
}

/// The result type of handlers.
pub type ApiResult = Result<Response, ApiError>;

impl From<crate::error::ControllerError> for ApiError {
    fn from(e: crate::error::ControllerError) -> ApiError {
        use crate::error::ControllerError as E;
        let system = e.to_string();
        match e {
            E::NoService(name) => ApiError::no_service(&name),
            E::RolloutInProgress { service, rollout } => ApiError::new(
                Code::RolloutInProgress,
                format!("{service} already has an active rollout ({rollout}); abort or finish it first."),
                system,
            ),
            E::NoActiveRollout(service) => {
                ApiError::new(Code::NotFound, format!("{service} has no active rollout."), system)
            }
            E::NoTrain(id) => ApiError::new(Code::NotFound, format!("There is no release train {id:?}."), system),
            E::Transition(t) => ApiError::new(
                Code::FailedPrecondition,
                format!("Cannot {} a rollout that is {}.", t.action, t.phase),
                system,
            ),
            E::Invalid(message) => ApiError::invalid(message),
            E::Route(canary_core::RouteError::NoCanary(_)) => {
                ApiError::new(Code::FailedPrecondition, format!("{system}."), system)
            }
            E::Route(route) => ApiError::invalid(format!("{route}.")),
            E::Corrupt(_) => ApiError::new(
                Code::Internal,
                "A stored record cannot be read; an operator must look at the store (see the controller's log).",
                system,
            ),
            E::Store(_) | E::Contended(_) => {
                ApiError::new(Code::Unavailable, "The store is unavailable or busy; try again.", system)
            }
            E::NotLeader => ApiError::new(Code::Unavailable, "This controller is not the leader.", system),
        }
    }
}
