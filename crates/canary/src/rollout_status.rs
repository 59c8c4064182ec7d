//! `canary rollout status SERVICE | --all [--watch]`: one service's rollout, or that of every
//! service that has had one, shown once or redrawn until every rollout shown has ended.
//!
//! With `--watch` the exit code says how they ended, so CI can wait on a release: 0 when every
//! rollout shown was promoted, [`EXIT_ROLLED_BACK`] when any was rolled back (by the judge or a
//! breaker), else [`EXIT_ABORTED`] when any was aborted by a person. A rollback is the worst
//! news, so it wins over an abort.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use canary_core::api::RolloutView;
use canary_core::config::HumanDuration;
use canary_core::rollout::Phase;
use serde_json::Value;

use crate::admin_client::{Admin, CallError};
use crate::cli::StatusArgs;
use crate::live_view::LiveView;
use crate::output::outln;
use crate::rollout_list::{rollout_of, service_names};
use crate::rollout_view;

/// Exit code of `status --watch` when a rollout was rolled back by the judge or a breaker.
pub const EXIT_ROLLED_BACK: u8 = 2;
/// Exit code of `status --watch` when a rollout was aborted by a person (and none rolled back).
pub const EXIT_ABORTED: u8 = 3;

/// How long `--watch` keeps polling an admin API that stopped answering before giving up.
const WATCH_PATIENCE: Duration = Duration::from_secs(30);

/// Which rollouts a `status` shows.
enum Scope {
    One(String),
    /// Every one of these services that has had a rollout.
    All(Vec<String>),
}

/// What one look at the API found: the data as sent (for `--json`: one object for a service,
/// an array for `--all`) and the rollouts in it.
struct Look {
    data: Value,
    rollouts: Vec<RolloutView>,
}

/// Runs `status`; the exit code is [`watch_exit_code`]'s with `--watch`, else success.
pub async fn status_command(admin: &Admin, args: StatusArgs, json: bool) -> anyhow::Result<ExitCode> {
    let interval = HumanDuration::try_from(args.interval.clone()).map_err(|e| anyhow!("--interval: {e}"))?.0;
    if interval < Duration::from_millis(50) {
        bail!("--interval must be at least 50ms");
    }
    let scope = match args.service {
        Some(service) => Scope::One(service),
        None => Scope::All(service_names(admin).await?),
    };
    if args.watch {
        return watch(admin, &scope, interval, json).await;
    }
    let look = look(admin, &scope).await?;
    if json {
        outln!("{}", look.data)?;
    } else {
        for (i, rollout) in look.rollouts.iter().enumerate() {
            if i > 0 {
                outln!()?;
            }
            for line in rollout_view::lines(rollout) {
                outln!("{line}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn look(admin: &Admin, scope: &Scope) -> Result<Look, CallError> {
    match scope {
        Scope::One(service) => {
            let answer = admin.call(reqwest::Method::GET, &crate::admin_client::rollout_path(service), None).await?;
            Ok(Look { data: answer.sent, rollouts: vec![answer.data] })
        }
        Scope::All(services) => {
            let (mut data, mut rollouts) = (Vec::new(), Vec::new());
            for service in services {
                if let Some(answer) = rollout_of(admin, service).await? {
                    data.push(answer.sent);
                    rollouts.push(answer.data);
                }
            }
            if rollouts.is_empty() {
                return Err(CallError::NotFound(anyhow!("No service has had a rollout yet.")));
            }
            Ok(Look { data: Value::Array(data), rollouts })
        }
    }
}

/// Polls and redraws until every rollout in `scope` has ended.
async fn watch(admin: &Admin, scope: &Scope, interval: Duration, json: bool) -> anyhow::Result<ExitCode> {
    let mut view = if json { LiveView::silent() } else { LiveView::stdout() };
    let mut unreachable_since: Option<tokio::time::Instant> = None;
    loop {
        match look(admin, scope).await {
            Ok(look) => {
                unreachable_since = None;
                if json {
                    outln!("{}", look.data)?;
                }
                if look.rollouts.iter().all(|r| r.rollout.phase.is_terminal()) {
                    view.finish_all(&look.rollouts, None)?;
                    return Ok(watch_exit_code(&look.rollouts));
                }
                view.update_all(&look.rollouts, None)?;
            }
            // A restarting controller resumes its rollouts: keep watching for a while.
            Err(CallError::Unreachable(e)) => {
                let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > WATCH_PATIENCE {
                    return Err(e);
                }
            }
            Err(CallError::Refused(e) | CallError::NotFound(e)) => return Err(e),
        }
        tokio::time::sleep(interval).await;
    }
}

/// The exit code `status --watch` ends with once `rollouts` are all over: a rollback wins over
/// an abort, an abort over promotions.
pub fn watch_exit_code(rollouts: &[RolloutView]) -> ExitCode {
    ExitCode::from(worst_outcome(rollouts))
}

fn worst_outcome(rollouts: &[RolloutView]) -> u8 {
    let any = |phase: Phase| rollouts.iter().any(|r| r.rollout.phase == phase);
    if any(Phase::Failed) {
        EXIT_ROLLED_BACK
    } else if any(Phase::Aborted) {
        EXIT_ABORTED
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(phase: Phase) -> RolloutView {
        let mut view = rollout_view::tests::view();
        (view.rollout.phase, view.judge) = (phase, None);
        view
    }

    #[test]
    fn the_worst_ending_wins() {
        let [promoted, aborted, failed] = [Phase::Promoted, Phase::Aborted, Phase::Failed].map(ended);
        assert_eq!(worst_outcome(std::slice::from_ref(&promoted)), 0);
        assert_eq!(worst_outcome(&[promoted.clone(), aborted.clone()]), EXIT_ABORTED);
        assert_eq!(worst_outcome(&[aborted.clone(), promoted.clone(), failed.clone()]), EXIT_ROLLED_BACK);
        assert_eq!(worst_outcome(&[failed, aborted]), EXIT_ROLLED_BACK);
    }
}
