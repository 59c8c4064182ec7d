//! `canary rollout list`, and what it shares with `status --all`: every service the admin API
//! knows, each with its active (else latest) rollout.

use canary_core::api::{RolloutView, ServiceView};
use serde_json::{Value, json};

use crate::admin_client::{Admin, Answer, CallError, SERVICES_PATH, rollout_path};
use crate::output::outln;
use crate::rollout_view::{judge_words, percent, phase_words, step_of, versions};

/// Every service's routing view, in the API's order.
pub async fn services(admin: &Admin) -> Result<Answer<Vec<ServiceView>>, CallError> {
    admin.call(reqwest::Method::GET, SERVICES_PATH, None).await
}

/// The names of every service.
pub async fn service_names(admin: &Admin) -> anyhow::Result<Vec<String>> {
    Ok(services(admin).await?.data.into_iter().map(|s| s.name).collect())
}

/// The active (else latest) rollout of `service`; `None` if it has never had one.
pub async fn rollout_of(admin: &Admin, service: &str) -> Result<Option<Answer<RolloutView>>, CallError> {
    match admin.call(reqwest::Method::GET, &rollout_path(service), None).await {
        Ok(answer) => Ok(Some(answer)),
        Err(CallError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One service of the list: its routing as sent and as read, and its rollout.
struct Row {
    sent: Value,
    service: ServiceView,
    rollout: Option<Answer<RolloutView>>,
}

/// Prints one line per service: phase, step, weight and the judge's word; `--json` prints an
/// array of `{"service": <routing view>, "rollout": <rollout view or null>}`.
pub async fn list(admin: &Admin, json: bool) -> anyhow::Result<()> {
    let answer = services(admin).await?;
    // `data` read as a list, so it was sent as an array of as many services.
    let sent = match answer.sent {
        Value::Array(sent) => sent,
        _ => Vec::new(),
    };
    let mut rows = Vec::new();
    for (service, sent) in answer.data.into_iter().zip(sent) {
        let rollout = rollout_of(admin, &service.name).await?;
        rows.push(Row { sent, service, rollout });
    }
    if json {
        let array: Vec<Value> = rows
            .iter()
            .map(|row| json!({ "service": row.sent, "rollout": row.rollout.as_ref().map(|r| &r.sent) }))
            .collect();
        return outln!("{}", Value::Array(array));
    }
    let width = rows.iter().map(|row| row.service.name.chars().count()).max().unwrap_or(0).max("service".len());
    outln!("{:<width$}  {:<16}  {:<12}  {:>5}  {:>7}  judge", "service", "versions", "phase", "step", "weight")?;
    for Row { service, rollout, .. } in &rows {
        let (versions, phase, step, judge) = match rollout {
            Some(Answer { data: view, .. }) => {
                let r = &view.rollout;
                (versions(r), phase_words(r.phase), step_of(r), judge_words(view))
            }
            None => (service.stable.version.clone(), "no rollout", "-".to_owned(), "-".to_owned()),
        };
        let weight = percent(service.weight);
        outln!("{:<width$}  {versions:<16}  {phase:<12}  {step:>5}  {weight:>7}  {judge}", service.name)?;
    }
    Ok(())
}
