//! Rollouts of one service, back to back, through the admin API.
//!
//! Each service has two upstream processes, `a` (the first stable) and `b`. A rollout deploys
//! a new version name (`v2-<n>`) on the process that is not serving stable: a promotion makes
//! the canary the stable (drain `0s`, so the old stable's sessions move at once and its
//! process is free for the next canary), a rollback leaves stable where it was. With identical
//! processes (A/A) the roles simply alternate. When only `b` is worse, `b` is always the
//! canary; if a missed detection promoted it, a rollout of `a` promoted by hand makes the
//! healthy process stable again before the next measured rollout (it is not recorded).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::admin::{Admin, RolloutView, StartRollout};
use crate::load::ServiceLoad;
use crate::record::{Ending, LastLook, Outcome, Record, Sink, failing_metric, not_shown_safe};
use crate::scenario::Scenario;

/// How often the rollout is read while it runs.
const POLL: Duration = Duration::from_millis(250);

/// The run's limits: a number of rollouts over all services, and a time.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    claimed: AtomicUsize,
    deadline: Instant,
}

impl Budget {
    /// At most `limit` rollouts, none after `deadline`.
    pub fn new(limit: usize, deadline: Instant) -> Budget {
        Budget { limit, claimed: AtomicUsize::new(0), deadline }
    }

    /// Takes one rollout of the budget, if any is left and the time has not run out.
    pub fn claim(&self) -> Option<usize> {
        if self.expired() {
            return None;
        }
        let number = self.claimed.fetch_add(1, Relaxed) + 1;
        (number <= self.limit).then_some(number)
    }

    /// Whether the time has run out.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The rollouts asked for.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Sleeps `duration`, or less if the time runs out first; whether time is left.
    async fn sleep(&self, duration: Duration) -> bool {
        tokio::time::sleep_until(self.deadline.min(Instant::now() + duration)).await;
        !self.expired()
    }
}

/// What every rollout of the run shares.
#[derive(Debug)]
pub struct RolloutSettings {
    /// The scenario.
    pub scenario: Scenario,
    /// The plan, as text.
    pub plan: String,
    /// How long a step may stay undecided after its hold.
    pub max_step_wait: Duration,
    /// The `analysis` object of the start request.
    pub analysis: serde_json::Value,
    /// `preexisting` and returning users: how long users browse on stable before each rollout.
    pub pin_warmup: Duration,
    /// One set of users for the whole run.
    pub returning_users: bool,
    /// Requests per second per service.
    pub rps: f64,
    /// Users per cohort.
    pub users: usize,
}

/// The rollouts of one service.
#[derive(Debug)]
pub struct ServiceRollouts {
    /// The service.
    pub name: String,
    /// The admin API.
    pub admin: Admin,
    /// The service's users.
    pub load: Arc<ServiceLoad>,
    /// The process that is stable at the start (always healthy).
    pub first: SocketAddr,
    /// The other process (the worse one when the scenario has one).
    pub second: SocketAddr,
    /// Shared settings.
    pub settings: Arc<RolloutSettings>,
    /// Shared limits.
    pub budget: Arc<Budget>,
    /// Where results go.
    pub sink: Arc<Sink>,
}

impl ServiceRollouts {
    /// Runs rollouts until the budget is spent.
    pub async fn run(self) -> anyhow::Result<()> {
        let mut number = 0;
        while let Some(slot) = self.budget.claim() {
            number += 1;
            let canary = self.canary_upstream(number).await?;
            let returning = self.settings.returning_users;
            if self.settings.scenario.users_arrive_before_rollout() || returning {
                if !returning {
                    self.load.new_cohort();
                }
                if !self.budget.sleep(self.settings.pin_warmup).await {
                    break;
                }
            }
            let version = format!("v2-{number}");
            let started = self.admin.start(&self.name, &self.start_request(&version, canary)).await?;
            if !self.settings.scenario.users_arrive_before_rollout() && !returning {
                self.load.new_cohort();
            }
            let ending = self.watch(&started.id).await?;
            let record = self.record(&version, ending);
            println!("{}", progress_line(slot, self.budget.limit(), &record));
            self.sink.push(record)?;
        }
        Ok(())
    }

    fn start_request<'a>(&'a self, version: &'a str, upstream: SocketAddr) -> StartRollout<'a> {
        StartRollout {
            version,
            upstream,
            steps: &self.settings.plan,
            max_step_wait: self.settings.max_step_wait,
            analysis: self.settings.analysis.clone(),
        }
    }

    /// The process the next canary runs on (making the healthy one stable first if needed).
    async fn canary_upstream(&self, number: usize) -> anyhow::Result<SocketAddr> {
        let service = self.admin.service(&self.name).await?;
        let stable = service.stable.upstreams.first().context("stable has no upstream")?.clone();
        let on = |addr: SocketAddr| stable == addr.to_string();
        if !self.settings.scenario.canary_is_worse() {
            return Ok(if on(self.first) { self.second } else { self.first });
        }
        if on(self.second) {
            let restore = format!("v1-r{number}");
            println!(
                "{}: the worse process is stable after a missed detection; {restore} makes the healthy one stable again",
                self.name
            );
            self.admin.start(&self.name, &self.start_request(&restore, self.first)).await?;
            self.admin.act(&self.name, "promote", "judge-harness: the healthy version back as stable").await?;
        }
        Ok(self.second)
    }

    /// Polls the rollout until it ends or pauses (then aborts it), or the time runs out.
    async fn watch(&self, id: &str) -> anyhow::Result<Ending> {
        let mut judge = None;
        loop {
            tokio::time::sleep(POLL).await;
            let view = self.admin.rollout(&self.name).await?;
            anyhow::ensure!(view.id == id, "{}: another rollout ({}) replaced {id}", self.name, view.id);
            if view.judge.is_some() {
                judge.clone_from(&view.judge);
            }
            match Outcome::of_phase(&view.phase) {
                Some(Outcome::Paused) => {
                    let why = format!("judge-harness: paused ({})", view.reason.as_deref().unwrap_or("no reason"));
                    return self.abort(view, judge, Outcome::Paused, &why).await;
                }
                Some(outcome) => return Ok(Ending { view, judge, outcome }),
                None if self.budget.expired() => {
                    return self.abort(view, judge, Outcome::Unfinished, "judge-harness: time limit").await;
                }
                None => {}
            }
        }
    }

    /// Aborts the rollout; if it ended on its own meanwhile, that end is the outcome.
    async fn abort(
        &self,
        view: RolloutView,
        judge: Option<crate::admin::JudgeView>,
        outcome: Outcome,
        why: &str,
    ) -> anyhow::Result<Ending> {
        if self.admin.act(&self.name, "abort", why).await.is_ok() {
            return Ok(Ending { view, judge, outcome });
        }
        let now = self.admin.rollout(&self.name).await?;
        match Outcome::of_phase(&now.phase) {
            Some(ended) if ended != Outcome::Paused => Ok(Ending { view: now, judge, outcome: ended }),
            _ => anyhow::bail!("{}: cannot abort rollout {} ({})", self.name, now.id, now.phase),
        }
    }

    fn record(&self, version: &str, ending: Ending) -> Record {
        let Ending { view, judge, outcome } = ending;
        let counts = LastLook::of(judge.as_ref());
        let failed = outcome == Outcome::Failed;
        Record {
            scenario: match self.settings.returning_users {
                true => format!("{}, returning users", self.settings.scenario.name()),
                false => self.settings.scenario.name().to_owned(),
            },
            service: self.name.clone(),
            rollout: view.id.clone(),
            version: version.to_owned(),
            outcome,
            failing_metric: failed.then(|| failing_metric(view.reason.as_deref(), judge.as_ref())).flatten(),
            not_shown_safe: not_shown_safe(judge.as_ref()),
            reason: view.reason,
            seconds: view.updated_ms.saturating_sub(view.created_ms) as f64 / 1000.0,
            step: view.step + 1,
            canary_requests: counts.canary_requests,
            stable_requests: counts.stable_requests,
            canary_errors: counts.canary_errors,
            stable_errors: counts.stable_errors,
            errors_e_value: counts.e_value,
            errors_dispersion: counts.dispersion,
            canary_new_users: counts.canary_new_users,
            stable_new_users: counts.stable_new_users,
            observed_canary_share: judge.as_ref().and_then(|j| j.observed_canary_share),
            tail_threshold_seconds: judge.as_ref().and_then(|j| j.tail_threshold_seconds),
            cohort_baseline: judge.as_ref().and_then(|j| j.cohort_baseline),
            plan: self.settings.plan.clone(),
            rps: self.settings.rps,
            users: self.settings.users,
        }
    }
}

/// `[ 3/8] svc-2 v2-1 failed after 21.4s (errors; canary 180, stable 3021 requests)`.
fn progress_line(slot: usize, limit: usize, record: &Record) -> String {
    let outcome = serde_json::to_value(record.outcome).ok().and_then(|v| v.as_str().map(str::to_owned));
    let mut line = format!(
        "[{slot:>3}/{limit}] {} {} {} in step {} after {:.1}s",
        record.service,
        record.version,
        outcome.unwrap_or_default(),
        record.step,
        record.seconds
    );
    match (record.canary_requests, record.stable_requests, record.canary_errors, record.stable_errors) {
        (Some(canary), Some(stable), Some(canary_errors), Some(stable_errors)) => {
            line.push_str(&format!(
                " (errors/requests: canary {canary_errors}/{canary}, stable {stable_errors}/{stable})"
            ));
        }
        (Some(canary), Some(stable), ..) => line.push_str(&format!(" (requests: canary {canary}, stable {stable})")),
        _ => {}
    }
    if let (Some(canary), Some(stable)) = (record.canary_new_users, record.stable_new_users) {
        line.push_str(&format!(" (new users: canary {canary}, stable {stable})"));
    }
    if let Some(reason) = &record.reason {
        line.push_str(&format!(": {reason}"));
    }
    line
}
