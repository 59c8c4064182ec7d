//! `canary rollout list`, and what it shares with `status --all`: every service the admin API
//! knows, each with its active (else latest) rollout.

use anyhow::{Context, anyhow};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin_client::{Admin, CallError, SERVICES_PATH, rollout_path};
use crate::output::outln;
use crate::rollout_view::{RolloutStatus, VersionInfo, percent};

/// What the list needs of a service's routing view (`GET /api/v1/services`).
#[derive(Debug, Deserialize)]
struct ServiceInfo {
    name: String,
    weight: f64,
    stable: VersionInfo,
}

/// A rollout as the API sent it, and as the CLI reads it.
pub struct Fetched {
    /// The answer's `data`, for `--json`.
    pub data: Value,
    /// The same, read.
    pub status: RolloutStatus,
}

/// Every service's routing view, in the API's order.
pub async fn services(admin: &Admin) -> Result<Vec<Value>, CallError> {
    let answer = admin.call(reqwest::Method::GET, SERVICES_PATH, None).await?;
    match answer.data {
        Value::Array(services) => Ok(services),
        _ => Err(CallError::Refused(anyhow!("the admin API sent an unreadable service list"))),
    }
}

/// The names of every service.
pub async fn service_names(admin: &Admin) -> anyhow::Result<Vec<String>> {
    services(admin).await?.into_iter().map(|s| Ok(read_service(s)?.name)).collect()
}

/// The active (else latest) rollout of `service`; `None` if it has never had one.
pub async fn rollout_of(admin: &Admin, service: &str) -> Result<Option<Fetched>, CallError> {
    match admin.call(reqwest::Method::GET, &rollout_path(service), None).await {
        Ok(answer) => {
            let status = serde_json::from_value(answer.data.clone())
                .map_err(|e| CallError::Refused(anyhow!("the admin API sent an unreadable rollout: {e}")))?;
            Ok(Some(Fetched { data: answer.data, status }))
        }
        Err(CallError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_service(view: Value) -> anyhow::Result<ServiceInfo> {
    serde_json::from_value(view).context("the admin API sent an unreadable service")
}

/// Prints one line per service: phase, step, weight and the judge's word; `--json` prints an
/// array of `{"service": <routing view>, "rollout": <rollout view or null>}`.
pub async fn list(admin: &Admin, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for view in services(admin).await? {
        let info = read_service(view.clone())?;
        let rollout = rollout_of(admin, &info.name).await?;
        rows.push((view, info, rollout));
    }
    if json {
        let array: Vec<Value> = rows
            .iter()
            .map(|(view, _, r)| json!({ "service": view, "rollout": r.as_ref().map(|r| &r.data) }))
            .collect();
        return outln!("{}", Value::Array(array));
    }
    let width = rows.iter().map(|(_, info, _)| info.name.chars().count()).max().unwrap_or(0).max("service".len());
    outln!("{:<width$}  {:<16}  {:<12}  {:>5}  {:>7}  judge", "service", "versions", "phase", "step", "weight")?;
    for (_, info, rollout) in &rows {
        let (versions, phase, step, judge) = match rollout {
            Some(Fetched { status: r, .. }) => (
                format!("{} → {}", r.stable.version, r.canary.version),
                if r.phase == "failed" { "rolled back".to_owned() } else { r.phase.clone() },
                format!("{}/{}", (r.step + 1).min(r.steps.len()), r.steps.len()),
                r.judge_words(),
            ),
            None => (info.stable.version.clone(), "no rollout".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        outln!("{:<width$}  {versions:<16}  {phase:<12}  {step:>5}  {:>7}  {judge}", info.name, percent(info.weight))?;
    }
    Ok(())
}
