//! `canary rollout …`: start, watch and steer rollouts through the admin API.
//!
//! A refused call prints the API's `clientMessage` (and code) and exits 1; `--json` prints the
//! answer's `data` as one line of JSON. Input that can be checked here (the version name, the
//! addresses, steps, durations, alpha, the admin URL) is checked before anything is sent, with the
//! same types the server reads (`canary_core::api::StartRollout`), so a typo never reaches the
//! controller. `status` lives in [`crate::rollout_status`], `list` in
//! [`crate::rollout_list`].

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use canary_core::api::{RolloutView, StartRollout, StepsInput};
use canary_core::config::{HumanDuration, Upstreams, VersionName};
use canary_core::rollout::{Analysis, Event, Rollout, parse_steps};
use canary_core::team::{TeamMetric, team_metrics_from_toml};
use serde_json::json;

use crate::admin_client::{Admin, Answer, rollout_path, rollouts_path, segment};
use crate::cli::{ActionArgs, ApprovalArgs, EventsArgs, RolloutArgs, RolloutCommand, StartArgs};
use crate::output::outln;
use crate::rollout_status::status_command;
use crate::rollout_view::{percent, phase_words, plan_line, step_of, versions};

/// Runs one `canary rollout` command.
pub fn run(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(dispatch(args))
}

async fn dispatch(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin, args.token.as_deref())?;
    let json = args.json;
    match args.command {
        RolloutCommand::Start(start) if !start.with.is_empty() => {
            let request = crate::train_cli::train_request(&start.service, start_request(&start)?, &start.with)?;
            crate::train_cli::start_train(&admin, request, json).await?;
        }
        RolloutCommand::Start(start) => {
            let body = serde_json::to_value(start_request(&start)?)?;
            let answer = admin.call(reqwest::Method::POST, &rollouts_path(&start.service), Some(body)).await?;
            print_rollout_answer(&answer, json)?;
        }
        RolloutCommand::Status(status) => return status_command(&admin, status, json).await,
        RolloutCommand::List => crate::rollout_list::list(&admin, json).await?,
        RolloutCommand::Promote(a) => act(&admin, "promote", a, json).await?,
        RolloutCommand::Abort(a) => act(&admin, "abort", a, json).await?,
        RolloutCommand::Pause(a) => act(&admin, "pause", a, json).await?,
        RolloutCommand::Approve(a) => decide(&admin, "approve", a, json).await?,
        RolloutCommand::Reject(a) => decide(&admin, "reject", a, json).await?,
        RolloutCommand::Resume(s) => {
            let path = format!("{}/resume", rollout_path(&s.service));
            let answer = admin.call(reqwest::Method::POST, &path, None).await?;
            print_rollout_answer(&answer, json)?;
        }
        RolloutCommand::History(s) => {
            let answer: Answer<Vec<Rollout>> =
                admin.call(reqwest::Method::GET, &rollouts_path(&s.service), None).await?;
            if json {
                outln!("{}", answer.sent)?;
            } else {
                print_history(&s.service, &answer.data)?;
            }
        }
        RolloutCommand::Events(e) => events(&admin, e, json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The body of `POST …/rollouts`, after checking what can be checked here.
fn start_request(args: &StartArgs) -> anyhow::Result<StartRollout> {
    let version = VersionName::try_from(args.version.clone()).map_err(|e| anyhow!("--version: {e}"))?;
    let upstreams = Upstreams::try_from(args.upstreams.clone()).map_err(|e| anyhow!("--upstream: {e}"))?;
    let steps = args.steps.as_deref().map(parse_steps).transpose().map_err(|e| anyhow!("--steps: {e}"))?;
    Ok(StartRollout {
        version,
        upstreams,
        steps: steps.map(StepsInput::List),
        drain: duration("--drain", &args.drain)?,
        max_step_wait: duration("--max-step-wait", &args.max_step_wait)?,
        analysis: analysis(args)?,
    })
}

/// The judge's settings the flags change, the defaults for the rest; `None` without such flags.
fn analysis(args: &StartArgs) -> anyhow::Result<Option<Analysis>> {
    if let Some(alpha) = args.alpha
        && !(alpha > 0.0 && alpha < 1.0)
    {
        bail!("--alpha must be between 0 and 1 (exclusive), not {alpha}");
    }
    let floor = duration("--latency-floor", &args.latency_floor)?;
    let team_metrics = team_metrics(args)?;
    let warmup = duration("--warmup", &args.warmup)?;
    let gates = match (args.no_gates, args.gates.is_empty()) {
        (true, _) => Some(Vec::new()),
        (false, true) => None,
        (false, false) => Some(args.gates.clone()),
    };
    let any = gates.is_some()
        || args.alpha.is_some()
        || args.min_requests.is_some()
        || args.min_step_requests.is_some()
        || floor.is_some()
        || warmup.is_some()
        || args.early_step_margin.is_some()
        || args.observe
        || team_metrics.is_some();
    if !any {
        return Ok(None);
    }
    let defaults = Analysis::default();
    Ok(Some(Analysis {
        alpha: args.alpha.unwrap_or(defaults.alpha),
        min_requests_per_version: args.min_requests.unwrap_or(defaults.min_requests_per_version),
        min_requests_per_step: args.min_step_requests.unwrap_or(defaults.min_requests_per_step),
        latency_floor_seconds: floor.map_or(defaults.latency_floor_seconds, |f| f.0.as_secs_f64()),
        observe: args.observe,
        team_metrics,
        warmup_seconds: warmup.map_or(defaults.warmup_seconds, |w| w.0.as_secs_f64()),
        gates,
        early_step_margin: args.early_step_margin.unwrap_or(defaults.early_step_margin),
        ..defaults
    }))
}

/// The team metrics `--team-metrics FILE` names (`[]` with `--no-team-metrics`); `None` leaves
/// the service's configured ones.
fn team_metrics(args: &StartArgs) -> anyhow::Result<Option<Vec<TeamMetric>>> {
    if args.no_team_metrics {
        return Ok(Some(Vec::new()));
    }
    let Some(path) = &args.team_metrics else { return Ok(None) };
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow!("--team-metrics: cannot read {}: {e}", path.display()))?;
    let metrics = team_metrics_from_toml(&text).map_err(|e| anyhow!("--team-metrics {}: {e}", path.display()))?;
    Ok(Some(metrics))
}

/// The duration a flag was given, checked.
fn duration(flag: &str, value: &Option<String>) -> anyhow::Result<Option<HumanDuration>> {
    value.clone().map(HumanDuration::try_from).transpose().map_err(|e| anyhow!("{flag}: {e}"))
}

async fn act(admin: &Admin, action: &str, args: ActionArgs, json: bool) -> anyhow::Result<()> {
    let path = format!("{}/{action}", rollout_path(&args.service));
    let body = args.reason.map(|reason| json!({ "reason": reason }));
    let answer = admin.call(reqwest::Method::POST, &path, body).await?;
    print_rollout_answer(&answer, json)
}

/// Approves or rejects, naming the person (`--by`, else `$USER`) for the event log.
async fn decide(admin: &Admin, action: &str, args: ApprovalArgs, json: bool) -> anyhow::Result<()> {
    let path = format!("{}/{action}", rollout_path(&args.service));
    let by = args.by.or_else(|| std::env::var("USER").ok()).filter(|by| !by.trim().is_empty());
    let body = json!({ "reason": args.reason, "by": by });
    let answer = admin.call(reqwest::Method::POST, &path, Some(body)).await?;
    print_rollout_answer(&answer, json)
}

fn print_rollout_answer(answer: &Answer<RolloutView>, json: bool) -> anyhow::Result<()> {
    if json {
        return outln!("{}", answer.sent);
    }
    outln!("{}", answer.client_message)?;
    outln!("{}", plan_line(&answer.data.rollout))
}

fn print_history(service: &str, rollouts: &[Rollout]) -> anyhow::Result<()> {
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
        outln!(
            "{:<22}  {:<19}  {:<19}  {:<16}  {:<12}  {:>6}  {}",
            r.id,
            utc(r.created_ms),
            utc(r.updated_ms),
            versions(r),
            phase_words(r.phase),
            step_of(r),
            r.reason.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

async fn events(admin: &Admin, args: EventsArgs, json: bool) -> anyhow::Result<()> {
    if args.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let path = format!("/api/v1/services/{}/events?limit={}", segment(&args.service), args.limit);
    let answer: Answer<Vec<Event>> = admin.call(reqwest::Method::GET, &path, None).await?;
    if json {
        return outln!("{}", answer.sent);
    }
    let events = answer.data;
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
            format!("{} → {}", e.from.name(), e.to.name()),
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

    /// `start_request` of `canary rollout start web FLAGS`, with `--version v2` and one
    /// `--upstream` unless the flags give them.
    fn start(flags: &[&str]) -> anyhow::Result<StartRollout> {
        use clap::Parser;
        let mut args = vec!["canary", "rollout", "start", "web"];
        for (flag, default) in [("--version", "v2"), ("--upstream", "127.0.0.1:9002")] {
            if !flags.contains(&flag) {
                args.extend([flag, default]);
            }
        }
        args.extend_from_slice(flags);
        let crate::cli::Command::Rollout(RolloutArgs { command: RolloutCommand::Start(start), .. }) =
            crate::cli::Cli::parse_from(args).command
        else {
            unreachable!("a start command")
        };
        start_request(&start)
    }

    #[test]
    fn a_start_sends_what_the_server_reads_and_only_the_settings_given() {
        let request = start(&["--steps", "10%/1m,100%", "--drain", "90s"]).unwrap();
        let body = serde_json::to_value(&request).unwrap();
        assert_eq!(body["version"], "v2");
        assert_eq!(body["steps"], serde_json::json!([{"weight": 10.0, "hold": "1m"}, {"weight": 100.0, "hold": "0s"}]));
        assert_eq!(body["drain"], "1m 30s");
        assert_eq!(body["analysis"], serde_json::Value::Null, "the server's defaults rule without judge flags");
        // The server reads bodies strictly (`deny_unknown_fields`): the CLI's must read back.
        let _: StartRollout = serde_json::from_value(body).unwrap();

        let analysis = start(&[
            "--alpha",
            "0.01",
            "--latency-floor",
            "5ms",
            "--observe",
            "--warmup",
            "30s",
            "--early-step-margin",
            "1",
        ])
        .unwrap()
        .analysis
        .unwrap();
        assert_eq!((analysis.alpha, analysis.latency_floor_seconds, analysis.observe), (0.01, 0.005, true));
        assert_eq!(analysis.warmup_seconds, 30.0);
        assert_eq!(analysis.early_step_margin, 1.0);
        assert_eq!(analysis.min_requests_per_version, Analysis::default().min_requests_per_version);
    }

    #[test]
    fn a_start_can_name_its_own_team_metrics_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("metrics.toml");
        let metric = "[[metric]]\nname = \"checkout_failures\"\nkind = \"ratio\"\ndirection = \"lower-is-better\"\n\
                      events = 'failed{version=\"{version}\"}'\ntrials = 'all{version=\"{version}\"}'\n";
        std::fs::write(&file, metric).unwrap();
        let path = file.to_str().unwrap();
        let analysis = start(&["--team-metrics", path]).unwrap().analysis.unwrap();
        assert_eq!(analysis.team()[0].name(), "checkout_failures");
        assert_eq!(analysis.alpha, Analysis::default().alpha, "the other settings are the defaults");
        let body = serde_json::to_value(start(&["--team-metrics", path]).unwrap()).unwrap();
        assert_eq!(body["analysis"]["teamMetrics"][0]["kind"], "ratio");
        let _: StartRollout = serde_json::from_value(body).unwrap();
        let none = start(&["--no-team-metrics"]).unwrap().analysis.unwrap();
        assert_eq!(none.team_metrics, Some(Vec::new()));
        std::fs::write(&file, metric.replace("ratio", "rate")).unwrap();
        let error = start(&["--team-metrics", path]).unwrap_err().to_string();
        assert!(error.starts_with(&format!("--team-metrics {path}: TOML parse error at line 3")), "{error}");
    }

    #[test]
    fn a_start_can_choose_among_the_gates_or_run_none() {
        assert_eq!(start(&[]).unwrap().analysis, None, "without the flags, every configured gate runs");
        let some = start(&["--gates", "e2e,smoke"]).unwrap().analysis.unwrap();
        assert_eq!(some.gates, Some(vec!["e2e".to_owned(), "smoke".to_owned()]));
        assert!(some.runs_gate("smoke") && !some.runs_gate("load"));
        let none = start(&["--no-gates"]).unwrap().analysis.unwrap();
        assert_eq!(none.gates, Some(Vec::new()));
        assert!(!none.runs_gate("e2e"));
        let body = serde_json::to_value(start(&["--no-gates"]).unwrap()).unwrap();
        assert_eq!(body["analysis"]["gates"], serde_json::json!([]));
    }

    #[test]
    fn bad_start_flags_are_named_before_anything_is_sent() {
        for (extra, expected) in [
            (&["--version", "v 2"][..], "--version: version name \"v 2\" may only contain"),
            (&["--upstream", "nowhere"], "--upstream: upstream \"nowhere\" is not a \"host:port\" address"),
            (&["--steps", "5%,5%"], "--steps: step weights must rise strictly"),
            (&["--max-step-wait", "soon"], "--max-step-wait: \"soon\" is not a duration"),
            (&["--latency-floor", "x"], "--latency-floor"),
            (&["--alpha", "1"], "--alpha must be between 0 and 1"),
        ] {
            let error = start(extra).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(expected), "{extra:?}: {error}");
        }
    }
}
