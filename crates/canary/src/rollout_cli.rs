//! `canary rollout …`: start, watch and steer rollouts through the admin API.
//!
//! A refused call prints the API's `clientMessage` (and code) and exits 1; `--json` prints the
//! answer's `data` as one line of JSON. Input that can be checked here (steps, durations, the
//! admin URL) is checked before anything is sent, with the same rules the server applies, so a
//! typo never reaches the controller. `status` lives in [`crate::rollout_status`], `list` in
//! [`crate::rollout_list`].

use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use canary_core::config::HumanDuration;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin_client::{Admin, Answer, rollout_path, rollouts_path, segment};
use crate::cli::{ActionArgs, EventsArgs, RolloutArgs, RolloutCommand, StartArgs};
use crate::output::outln;
use crate::rollout_status::status_command;
use crate::rollout_view::{RolloutStatus, percent};

/// Runs one `canary rollout` command.
pub fn run(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(dispatch(args))
}

async fn dispatch(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin, args.token.as_deref())?;
    let json = args.json;
    match args.command {
        RolloutCommand::Start(start) => {
            let body = start_body(&start)?;
            let answer = admin.call(reqwest::Method::POST, &rollouts_path(&start.service), Some(body)).await?;
            print_rollout_answer(&answer, json)?;
        }
        RolloutCommand::Status(status) => return status_command(&admin, status, json).await,
        RolloutCommand::List => crate::rollout_list::list(&admin, json).await?,
        RolloutCommand::Promote(a) => act(&admin, "promote", a, json).await?,
        RolloutCommand::Abort(a) => act(&admin, "abort", a, json).await?,
        RolloutCommand::Pause(a) => act(&admin, "pause", a, json).await?,
        RolloutCommand::Resume(s) => {
            let path = format!("{}/resume", rollout_path(&s.service));
            let answer = admin.call(reqwest::Method::POST, &path, None).await?;
            print_rollout_answer(&answer, json)?;
        }
        RolloutCommand::History(s) => {
            let answer = admin.call(reqwest::Method::GET, &rollouts_path(&s.service), None).await?;
            if json {
                outln!("{}", answer.data)?;
            } else {
                let rollouts: Vec<RolloutStatus> =
                    serde_json::from_value(answer.data).context("the admin API sent an unreadable rollout list")?;
                print_history(&s.service, &rollouts)?;
            }
        }
        RolloutCommand::Events(e) => events(&admin, e, json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON body of `POST …/rollouts`, after checking what can be checked here.
fn start_body(args: &StartArgs) -> anyhow::Result<Value> {
    if let Some(steps) = &args.steps {
        canary_core::rollout::parse_steps(steps).map_err(|e| anyhow!("--steps: {e}"))?;
    }
    for (flag, value) in [("--drain", &args.drain), ("--max-step-wait", &args.max_step_wait)] {
        if let Some(value) = value {
            HumanDuration::try_from(value.clone()).map_err(|e| anyhow!("{flag}: {e}"))?;
        }
    }
    if let Some(alpha) = args.alpha
        && !(alpha > 0.0 && alpha < 1.0)
    {
        bail!("--alpha must be between 0 and 1 (exclusive), not {alpha}");
    }
    let mut body = json!({ "version": args.version, "upstreams": args.upstreams });
    if let Some(steps) = &args.steps {
        body["steps"] = json!(steps);
    }
    if let Some(drain) = &args.drain {
        body["drain"] = json!(drain);
    }
    if let Some(wait) = &args.max_step_wait {
        body["maxStepWait"] = json!(wait);
    }
    let mut analysis = serde_json::Map::new();
    if let Some(alpha) = args.alpha {
        analysis.insert("alpha".into(), json!(alpha));
    }
    if let Some(n) = args.min_requests {
        analysis.insert("minRequestsPerVersion".into(), json!(n));
    }
    if let Some(n) = args.min_step_requests {
        analysis.insert("minRequestsPerStep".into(), json!(n));
    }
    if let Some(floor) = &args.latency_floor {
        let floor = HumanDuration::try_from(floor.clone()).map_err(|e| anyhow!("--latency-floor: {e}"))?;
        analysis.insert("latencyFloorSeconds".into(), json!(floor.0.as_secs_f64()));
    }
    if args.observe {
        analysis.insert("observe".into(), json!(true));
    }
    if !analysis.is_empty() {
        body["analysis"] = Value::Object(analysis);
    }
    Ok(body)
}

async fn act(admin: &Admin, action: &str, args: ActionArgs, json: bool) -> anyhow::Result<()> {
    let path = format!("{}/{action}", rollout_path(&args.service));
    let body = args.reason.map(|reason| json!({ "reason": reason }));
    let answer = admin.call(reqwest::Method::POST, &path, body).await?;
    print_rollout_answer(&answer, json)
}

fn print_rollout_answer(answer: &Answer, json: bool) -> anyhow::Result<()> {
    if json {
        return outln!("{}", answer.data);
    }
    outln!("{}", answer.client_message)?;
    let status: RolloutStatus =
        serde_json::from_value(answer.data.clone()).context("the admin API sent an unreadable rollout")?;
    outln!("{}", status.plan_line())?;
    Ok(())
}

fn print_history(service: &str, rollouts: &[RolloutStatus]) -> anyhow::Result<()> {
    if rollouts.is_empty() {
        outln!("{service} has had no rollouts.")?;
        return Ok(());
    }
    outln!(
        "{:<22}  {:<19}  {:<19}  {:<16}  {:<12}  {:>6}  why",
        "rollout",
        "started (UTC)",
        "last change (UTC)",
        "versions",
        "phase",
        "steps"
    )?;
    for r in rollouts {
        let phase = if r.phase == "failed" { "rolled back" } else { r.phase.as_str() };
        outln!(
            "{:<22}  {:<19}  {:<19}  {:<16}  {:<12}  {:>6}  {}",
            r.id,
            utc(r.created_ms),
            utc(r.updated_ms),
            format!("{} → {}", r.stable.version, r.canary.version),
            phase,
            format!("{}/{}", (r.step + 1).min(r.steps.len()), r.steps.len()),
            r.reason.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

/// One line of the event log, as the API sends it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventInfo {
    rollout_id: String,
    seq: u64,
    at_ms: u64,
    action: String,
    from: String,
    to: String,
    weight: f64,
    message: String,
}

async fn events(admin: &Admin, args: EventsArgs, json: bool) -> anyhow::Result<()> {
    if args.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let path = format!("/api/v1/services/{}/events?limit={}", segment(&args.service), args.limit);
    let answer = admin.call(reqwest::Method::GET, &path, None).await?;
    if json {
        outln!("{}", answer.data)?;
        return Ok(());
    }
    let events: Vec<EventInfo> =
        serde_json::from_value(answer.data).context("the admin API sent an unreadable event list")?;
    if events.is_empty() {
        outln!("{} has no rollout events.", args.service)?;
        return Ok(());
    }
    outln!(
        "{:<23}  {:<22}  {:>3}  {:<8}  {:<24}  {:>7}  message",
        "at (UTC)",
        "rollout",
        "#",
        "action",
        "phase",
        "weight"
    )?;
    for e in events {
        outln!(
            "{:<23}  {:<22}  {:>3}  {:<8}  {:<24}  {:>7}  {}",
            utc_ms(e.at_ms),
            e.rollout_id,
            e.seq,
            e.action,
            format!("{} → {}", e.from, e.to),
            percent(e.weight),
            e.message
        )?;
    }
    Ok(())
}

fn utc(ms: u64) -> String {
    let text = utc_ms(ms);
    text[..19.min(text.len())].to_owned()
}

/// `2026-01-31 12:00:00.250` from Unix milliseconds.
fn utc_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc_ms(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(utc_ms(1_767_225_599_999), "2025-12-31 23:59:59.999");
    }
}
