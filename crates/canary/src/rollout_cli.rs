//! `canary rollout …`: start, watch and steer rollouts through the admin API.
//!
//! Every answer of the API is the envelope `{code, clientMessage, systemMessage, data}`. A
//! refused call prints its `clientMessage` (and code) and exits 1; `--json` prints `data` as one
//! line of JSON. Input that can be checked here (steps, durations, the admin URL) is checked
//! before anything is sent, with the same rules the server applies, so a typo never reaches the
//! controller. `status --watch` exits 0 when the rollout is promoted, 2 when it was rolled back
//! (judge or breaker), 3 when a person aborted it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use canary_core::config::HumanDuration;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::{ActionArgs, EventsArgs, RolloutArgs, RolloutCommand, StartArgs, StatusArgs};
use crate::rollout_view::{LiveView, RolloutStatus, percent};

/// Exit code of `status --watch` for a rollout rolled back by the judge or the breaker.
pub const EXIT_ROLLED_BACK: u8 = 2;
/// Exit code of `status --watch` for a rollout aborted by a person.
pub const EXIT_ABORTED: u8 = 3;

/// How long `--watch` keeps polling an admin API that stopped answering before giving up.
const WATCH_PATIENCE: Duration = Duration::from_secs(30);

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
                println!("{}", answer.data);
            } else {
                let rollouts: Vec<RolloutStatus> =
                    serde_json::from_value(answer.data).context("the admin API sent an unreadable rollout list")?;
                print_history(&s.service, &rollouts);
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
        println!("{}", answer.data);
        return Ok(());
    }
    println!("{}", answer.client_message);
    let status: RolloutStatus =
        serde_json::from_value(answer.data.clone()).context("the admin API sent an unreadable rollout")?;
    println!("{}", status.plan_line());
    Ok(())
}

async fn status_command(admin: &Admin, args: StatusArgs, json: bool) -> anyhow::Result<ExitCode> {
    let interval = HumanDuration::try_from(args.interval.clone()).map_err(|e| anyhow!("--interval: {e}"))?.0;
    if interval < Duration::from_millis(50) {
        bail!("--interval must be at least 50ms");
    }
    let path = rollout_path(&args.service);
    if !args.watch {
        let answer = admin.call(reqwest::Method::GET, &path, None).await?;
        if json {
            println!("{}", answer.data);
        } else {
            for line in read_status(&answer)?.lines() {
                println!("{line}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut view = if json { LiveView::silent() } else { LiveView::stdout() };
    let mut unreachable_since: Option<tokio::time::Instant> = None;
    loop {
        match admin.call(reqwest::Method::GET, &path, None).await {
            Ok(answer) => {
                unreachable_since = None;
                if json {
                    println!("{}", answer.data);
                }
                let status = read_status(&answer)?;
                if status.is_over() {
                    view.finish(&status, None);
                    return Ok(watch_exit_code(&status));
                }
                view.update(&status, None);
            }
            // A restarting controller resumes its rollouts: keep watching for a while.
            Err(CallError::Unreachable(e)) => {
                let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > WATCH_PATIENCE {
                    return Err(e);
                }
            }
            Err(CallError::Refused(e)) => return Err(e),
        }
        tokio::time::sleep(interval).await;
    }
}

/// The exit code `status --watch` ends with for a finished rollout.
pub fn watch_exit_code(status: &RolloutStatus) -> ExitCode {
    match status.phase.as_str() {
        "promoted" => ExitCode::SUCCESS,
        "aborted" => ExitCode::from(EXIT_ABORTED),
        _ => ExitCode::from(EXIT_ROLLED_BACK),
    }
}

fn read_status(answer: &Answer) -> anyhow::Result<RolloutStatus> {
    serde_json::from_value(answer.data.clone()).context("the admin API sent an unreadable rollout")
}

fn print_history(service: &str, rollouts: &[RolloutStatus]) {
    if rollouts.is_empty() {
        println!("{service} has had no rollouts.");
        return;
    }
    println!(
        "{:<22}  {:<19}  {:<19}  {:<16}  {:<12}  {:>6}  why",
        "rollout", "started (UTC)", "last change (UTC)", "versions", "phase", "steps"
    );
    for r in rollouts {
        let phase = if r.phase == "failed" { "rolled back" } else { r.phase.as_str() };
        println!(
            "{:<22}  {:<19}  {:<19}  {:<16}  {:<12}  {:>6}  {}",
            r.id,
            utc(r.created_ms),
            utc(r.updated_ms),
            format!("{} → {}", r.stable.version, r.canary.version),
            phase,
            format!("{}/{}", (r.step + 1).min(r.steps.len()), r.steps.len()),
            r.reason.as_deref().unwrap_or("")
        );
    }
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
        println!("{}", answer.data);
        return Ok(());
    }
    let events: Vec<EventInfo> =
        serde_json::from_value(answer.data).context("the admin API sent an unreadable event list")?;
    if events.is_empty() {
        println!("{} has no rollout events.", args.service);
        return Ok(());
    }
    println!(
        "{:<23}  {:<22}  {:>3}  {:<8}  {:<24}  {:>7}  message",
        "at (UTC)", "rollout", "#", "action", "phase", "weight"
    );
    for e in events {
        println!(
            "{:<23}  {:<22}  {:>3}  {:<8}  {:<24}  {:>7}  {}",
            utc_ms(e.at_ms),
            e.rollout_id,
            e.seq,
            e.action,
            format!("{} → {}", e.from, e.to),
            percent(e.weight),
            e.message
        );
    }
    Ok(())
}

fn rollouts_path(service: &str) -> String {
    format!("/api/v1/services/{}/rollouts", segment(service))
}

fn rollout_path(service: &str) -> String {
    format!("/api/v1/services/{}/rollout", segment(service))
}

/// A service name as one path segment: anything but letters, digits, `-`, `_` and `.` is
/// percent-encoded, so a name with `/` or `?` is looked up (and refused) as a name.
fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A successful answer.
pub struct Answer {
    /// The envelope's `clientMessage`.
    pub client_message: String,
    /// The envelope's `data`.
    pub data: Value,
}

/// Why a call failed: the API said no, or it could not be reached at all.
pub enum CallError {
    /// An envelope with a code other than `OK`, or an answer that is not an envelope.
    Refused(anyhow::Error),
    /// No answer (connection refused, timeout, …).
    Unreachable(anyhow::Error),
}

impl From<CallError> for anyhow::Error {
    fn from(e: CallError) -> anyhow::Error {
        match e {
            CallError::Refused(e) | CallError::Unreachable(e) => e,
        }
    }
}

/// The envelope as the CLI reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    code: String,
    client_message: String,
    #[serde(default)]
    system_message: String,
    #[serde(default)]
    data: Value,
}

/// A client of one admin API.
pub struct Admin {
    base: reqwest::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Admin {
    /// A client for the admin API at `base` (like `http://127.0.0.1:7070`).
    pub fn new(base: &str, token: Option<&str>) -> anyhow::Result<Admin> {
        let parsed = reqwest::Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| anyhow!("--admin {base:?} is not a URL like http://127.0.0.1:7070"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Admin { base: parsed, token: token.map(str::to_owned), http })
    }

    /// The base URL as given.
    fn base_text(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Calls `path` and unwraps the envelope; anything but `OK` is an error naming the
    /// envelope's `clientMessage`.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Answer, CallError> {
        let url = format!("{}{path}", self.base_text());
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            CallError::Unreachable(anyhow!(
                "cannot reach the admin API at {}: {}. Is `canary serve` running there? Set --admin or CANARY_ADMIN.",
                self.base_text(),
                root_cause(&e)
            ))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            CallError::Unreachable(anyhow!(
                "the admin API at {} stopped answering: {}",
                self.base_text(),
                root_cause(&e)
            ))
        })?;
        let envelope: Envelope = serde_json::from_str(&text).map_err(|_| {
            CallError::Refused(anyhow!(
                "{url} did not answer with an admin API envelope (HTTP {status}); is --admin the admin listener?"
            ))
        })?;
        if envelope.code != "OK" {
            tracing::debug!(code = envelope.code, system_message = envelope.system_message, "refused");
            return Err(CallError::Refused(anyhow!("{} [{}]", envelope.client_message, envelope.code)));
        }
        Ok(Answer { client_message: envelope.client_message, data: envelope.data })
    }
}

/// The innermost cause of an error, which names what actually went wrong ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
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

    #[test]
    fn service_names_stay_one_path_segment() {
        assert_eq!(segment("web-1_a.b"), "web-1_a.b");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn bad_admin_urls_are_refused_before_any_call() {
        assert!(Admin::new("http://127.0.0.1:7070", None).is_ok());
        for bad in ["127.0.0.1:7070", "ftp://x", "not a url", ""] {
            let e = Admin::new(bad, None).err().unwrap().to_string();
            assert!(e.contains("is not a URL"), "{bad}: {e}");
        }
    }
}
