//! `POST /api/v1/alerts`: an Alertmanager-compatible webhook receiver. A firing alert whose
//! labels name a service with an active rollout rolls that rollout back (AWS CodeDeploy's
//! stop-on-alarm), so a team's own alerting — a checkout success ratio, a queue depth — can
//! stop a release the judge does not see.
//!
//! Point an Alertmanager receiver at it (`webhook_configs: [{url: http://…:7070/api/v1/alerts,
//! http_config: {authorization: {credentials: <token>}}}]`). An alert matches a service by its
//! `service` label, and, when it also has a `rollout` label, only that rollout. Resolved alerts
//! and alerts for services without an active rollout change nothing.

use std::collections::BTreeMap;

use axum::extract::State;
use canary_core::api::Envelope;
use canary_core::rollout::Command;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::envelope::{ApiResult, ok};
use super::json::JsonBody;
use super::openapi::{ErrorEnvelope, ROLLOUTS};
use crate::error::ControllerError;

/// The part of Alertmanager's webhook payload (version 4) the receiver reads.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertBatch {
    /// The alerts of the notification.
    pub alerts: Vec<Alert>,
}

/// One alert.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Its labels; `service` (and optionally `rollout`) select what it stops.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its annotations; `summary` or `description` goes into the rollback's reason.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// What the receiver did.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertOutcome {
    /// `service: rollout id` of every rollout rolled back by this notification.
    pub rolled_back: Vec<String>,
    /// Firing alerts that matched no active rollout.
    pub unmatched: usize,
}

impl Alert {
    /// The rollback's reason, e.g. `alert CheckoutErrors firing: checkout success below 99 %`.
    fn reason(&self) -> String {
        let name = self.labels.get("alertname").map_or("(unnamed)", String::as_str);
        match self.annotations.get("summary").or_else(|| self.annotations.get("description")) {
            Some(text) => format!("alert {name} firing: {text}"),
            None => format!("alert {name} firing"),
        }
    }
}

/// `POST /api/v1/alerts`.
#[utoipa::path(post, path = "/alerts", operation_id = "receiveAlerts", tag = ROLLOUTS,
    summary = "Alertmanager webhook: a firing alert labelled with a service rolls its active rollout back",
    request_body = AlertBatch,
    responses(
        (status = 200, description = "`OK`: what was rolled back", body = Envelope<AlertOutcome>),
        (status = 400, description = "`INVALID_ARGUMENT`: the body is not an Alertmanager notification", body = ErrorEnvelope),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not `application/json`", body = ErrorEnvelope),
        (status = 503, description = "`UNAVAILABLE`: the store is unreachable or busy", body = ErrorEnvelope),
    ),
)]
pub async fn receive(State(state): State<AppState>, JsonBody(batch): JsonBody<AlertBatch>) -> ApiResult {
    let mut outcome = AlertOutcome { rolled_back: Vec::new(), unmatched: 0 };
    for alert in batch.alerts.iter().filter(|a| a.status == "firing") {
        let Some(service) = alert.labels.get("service") else {
            outcome.unmatched += 1;
            continue;
        };
        let active = match state.controller.routing().service(service) {
            Ok(_) => state.controller.refresh(service).await?,
            Err(_) => None,
        };
        let Some(rollout) = active.filter(|r| alert.labels.get("rollout").is_none_or(|id| *id == r.id)) else {
            outcome.unmatched += 1;
            continue;
        };
        match state.controller.act(service, Command::Fail(alert.reason())).await {
            Ok(_) => outcome.rolled_back.push(format!("{service}: {}", rollout.id)),
            // Ended meanwhile (another alert of the batch, the judge): nothing left to stop.
            Err(ControllerError::NoActiveRollout(_) | ControllerError::Transition(_)) => outcome.unmatched += 1,
            Err(e) => return Err(e.into()),
        }
    }
    let message = match outcome.rolled_back.len() {
        0 => "No active rollout matched a firing alert.".to_owned(),
        n => format!("{n} rollout(s) rolled back by alerts."),
    };
    Ok(ok(message, outcome))
}
