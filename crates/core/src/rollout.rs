//! The rollout state machine: every phase and every transition of a rollout, in one place.
//!
//! ```text
//!                  ┌── advance (next step) ──┐
//!            begin ▼                         │
//! pending ─────────► progressing ────────────┴── advance (last step held) ──► promoted
//!                      │   ▲
//!                pause │   │ resume              judge says worse / breaker ─► failed
//!                      ▼   │
//!                     paused ─────────────────── breaker ────────────────────► failed
//!
//! from pending, progressing or paused:   promote (by hand) ──► promoted
//!                                        abort (by hand)   ──► aborted
//!                                        fail (a gate)     ──► failed
//!                                        gate (an event; the phase stays)
//! pending ── stage (canary at 0 % for the before-start gates) ──► pending
//!
//! a step marked `approve`, held and judged safe:
//! progressing ── await approval ──► awaitingApproval ── approve (a person) ──► next step | promoted
//!                                        │  ├── reject (a person) ──► aborted
//!                                        │  └── judge says worse / breaker ──► failed
//!                                        └── promote / abort (by hand)
//! ```
//!
//! [`Rollout::apply`] is a pure function: the current record and a command in, the next record,
//! the event to log and the routing change out — or an error that says why the command does
//! not apply in this phase. The controller persists the record, the event and the routing in
//! one transaction *before* acting on them, so a controller killed at any instant resumes
//! exactly where the store says it stood, and a transition is never applied twice (the record's
//! `transitions` counter names the event and guards the write).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::{HumanDuration, VersionConfig};
use crate::judge::{JudgeConfig, JudgeError, Tolerances};
use crate::team::{TeamMetric, TeamMetricKind, split_alpha};
use crate::weight::Weight;

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Created, no traffic yet.
    Pending,
    /// Moving through its steps, judged every tick.
    Progressing,
    /// Held at its current weight by a person or by the judge's sample-ratio guard.
    Paused,
    /// Held at a step marked `approve` until a person approves or rejects; still judged.
    AwaitingApproval,
    /// The canary became the new stable.
    Promoted,
    /// Stopped by a person; the canary gets no traffic.
    Aborted,
    /// Rolled back automatically (judge or breaker); the canary gets no traffic.
    Failed,
}

impl Phase {
    /// Whether the rollout is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Promoted | Phase::Aborted | Phase::Failed)
    }

    /// The phase's name as the API spells it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::AwaitingApproval => "awaitingApproval",
            Phase::Promoted => "promoted",
            Phase::Aborted => "aborted",
            Phase::Failed => "failed",
        }
    }
}

/// One step: hold the canary at `weight` for at least `hold`, judged all along.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Share of users on the canary.
    pub weight: Weight,
    /// Minimum time at this weight before the next step.
    pub hold: HumanDuration,
    /// A person must approve before the rollout leaves this step (`approve` after it in a plan).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approve: bool,
}

/// The default plan: `1%/30s → 5%/1m → 25%/2m → 50%/2m → 100%`.
pub fn default_steps() -> Vec<Step> {
    let step = |pct: f64, secs: u64| Step {
        weight: Weight::from_percent(pct).expect("valid weight"),
        hold: HumanDuration(std::time::Duration::from_secs(secs)),
        approve: false,
    };
    vec![step(1.0, 30), step(5.0, 60), step(25.0, 120), step(50.0, 120), step(100.0, 0)]
}

/// The word that marks an approval in a written plan.
pub const APPROVE: &str = "approve";

/// Parses steps written as `1%/30s,5%/1m,approve,25%/2m,100%` (a step without a hold holds
/// 0 s; `approve` makes the rollout wait for a person before it leaves the step before it).
pub fn parse_steps(text: &str) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = Vec::new();
    for part in text.split([',', ' ']).filter(|s| !s.is_empty()) {
        if part.eq_ignore_ascii_case(APPROVE) {
            let Some(last) = steps.last_mut() else {
                return Err("\"approve\" must follow a step: it holds the step before it for a person".into());
            };
            if last.approve {
                return Err("\"approve\" twice in a row: one approval per step".into());
            }
            last.approve = true;
            continue;
        }
        steps.push(parse_step(part)?);
    }
    check_steps(&steps)?;
    Ok(steps)
}

/// One `weight/hold` step.
fn parse_step(part: &str) -> Result<Step, String> {
    let (weight, hold) = part.split_once('/').unwrap_or((part, "0s"));
    let weight = weight.trim().trim_end_matches('%');
    let weight: f64 = weight.parse().map_err(|_| format!("step {part:?}: {weight:?} is not a percentage"))?;
    let weight = Weight::from_percent(weight).map_err(|e| format!("step {part:?}: {e}"))?;
    let hold = HumanDuration::try_from(hold.trim().to_owned()).map_err(|e| format!("step {part:?}: {e}"))?;
    Ok(Step { weight, hold, approve: false })
}

/// A plan written the way [`parse_steps`] reads it.
pub fn format_steps(steps: &[Step]) -> String {
    let mut parts = Vec::new();
    for step in steps {
        let hold = String::from(step.hold);
        parts.push(if step.hold.0.is_zero() { step.weight.to_string() } else { format!("{}/{hold}", step.weight) });
        if step.approve {
            parts.push(APPROVE.to_owned());
        }
    }
    parts.join(",")
}

/// Steps must exist, be at most 100, rise strictly, and start above zero.
pub fn check_steps(steps: &[Step]) -> Result<(), String> {
    if steps.is_empty() {
        return Err("a rollout needs at least one step".into());
    }
    if steps.len() > 100 {
        return Err("a rollout has at most 100 steps".into());
    }
    if steps[0].weight == Weight::ZERO {
        return Err("the first step must send the canary some traffic (weight above 0)".into());
    }
    if steps.windows(2).any(|w| w[1].weight <= w[0].weight) {
        return Err("step weights must rise strictly".into());
    }
    Ok(())
}

/// The judge's settings a rollout may override; the rest are the judge's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Analysis {
    /// Probability of rolling back a canary that is not worse, over the whole rollout.
    pub alpha: f64,
    /// Requests each version must serve in the rollout before a metric can pass.
    pub min_requests_per_version: u64,
    /// Requests each version must serve within a step before it can advance.
    pub min_requests_per_step: u64,
    /// Requests each version must serve before a metric can roll back.
    pub min_requests_for_rollback: u64,
    /// What worse and safe mean per metric.
    pub tolerances: Tolerances,
    /// No request is slow, and no quantile worse, below this many seconds.
    pub latency_floor_seconds: f64,
    /// Shorthand: when set, the ratio below which the error rate and the slow share must be
    /// shown to pass (their `safe_below`).
    pub max_ratio: Option<f64>,
    /// Dry run: the judge records its verdicts but never acts; steps advance on their hold
    /// alone (the local breakers still roll back a canary that fails hard).
    pub observe: bool,
    /// The team's own metrics for this rollout ([`crate::team`]). In a request, absent means
    /// the service's configured `[[service.metric]]`s and `[]` means none; the controller writes
    /// the list it judges with into the rollout's record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_metrics: Option<Vec<TeamMetric>>,
    /// Seconds after each step begins during which the canary's latencies are not judged (its
    /// errors are): a process that just got traffic is slower for its first seconds.
    pub warmup_seconds: f64,
    /// The release gates this rollout runs, by name among its service's `[[service.gate]]`s
    /// ([`crate::gate`]): absent means all of them, `[]` none. A rollout only chooses among the
    /// configured gates and never brings a command of its own, so the API runs no new code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gates: Option<Vec<String>>,
    /// How much wider the "safe" tolerances are for steps that lead to less than full traffic
    /// ([`JudgeConfig::early_step_margin`]); 1 asks every step for the same proof.
    pub early_step_margin: f64,
}

impl Default for Analysis {
    fn default() -> Analysis {
        let judge = JudgeConfig::default();
        Analysis {
            alpha: judge.alpha,
            min_requests_per_version: judge.min_requests_per_version,
            min_requests_per_step: judge.min_requests_per_step,
            min_requests_for_rollback: judge.min_requests_for_rollback,
            tolerances: judge.tolerances,
            latency_floor_seconds: judge.latency_floor_seconds,
            max_ratio: None,
            observe: false,
            team_metrics: None,
            warmup_seconds: 10.0,
            gates: None,
            early_step_margin: judge.early_step_margin,
        }
    }
}

impl Analysis {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), JudgeError> {
        if !(0.0..=600.0).contains(&self.warmup_seconds) {
            return Err(JudgeError::InvalidConfig {
                key: "warmupSeconds",
                reason: "must be between 0 and 600 seconds",
            });
        }
        self.judge_config().validate()
    }

    /// Whether a step that began at `step_started_ms` is still warming up at `now_ms`.
    pub fn warming_up(&self, step_started_ms: u64, now_ms: u64) -> bool {
        (now_ms.saturating_sub(step_started_ms) as f64) < self.warmup_seconds * 1000.0
    }

    /// Whether this rollout runs the configured gate `name`.
    pub fn runs_gate(&self, name: &str) -> bool {
        self.gates.as_ref().is_none_or(|names| names.iter().any(|n| n == name))
    }

    /// The team metrics this analysis judges (none when unset).
    pub fn team(&self) -> &[TeamMetric] {
        self.team_metrics.as_deref().unwrap_or_default()
    }

    /// The built-in judge's full settings. Its `alpha` is what the team's ratio metrics leave
    /// of the rollout's ([`crate::team::split_alpha`]).
    pub fn judge_config(&self) -> JudgeConfig {
        let mut tolerances = self.tolerances;
        if let Some(ratio) = self.max_ratio {
            tolerances.errors.safe_below = ratio;
            tolerances.latency_tail.safe_below = ratio;
        }
        let ratios = self.team().iter().filter(|m| m.kind == TeamMetricKind::Ratio).count();
        JudgeConfig {
            alpha: split_alpha(self.alpha, ratios).0,
            min_requests_per_version: self.min_requests_per_version,
            min_requests_per_step: self.min_requests_per_step,
            min_requests_for_rollback: self.min_requests_for_rollback,
            tolerances,
            latency_floor_seconds: self.latency_floor_seconds,
            early_step_margin: self.early_step_margin,
            ..JudgeConfig::default()
        }
    }
}

/// One rollout's durable record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollout {
    /// Unique id; salts the bucket hash and names the pins.
    pub id: String,
    /// The service.
    pub service: String,
    /// The stable version when the rollout started.
    pub stable: VersionConfig,
    /// The canary.
    pub canary: VersionConfig,
    /// The plan.
    pub steps: Vec<Step>,
    /// How long the previous stable keeps serving its pinned sessions after promotion.
    pub drain: HumanDuration,
    /// How long a step may stay inconclusive after its hold before the rollout pauses.
    pub max_step_wait: HumanDuration,
    /// The judge's settings.
    #[serde(default)]
    pub analysis: Analysis,
    /// Where it stands.
    pub phase: Phase,
    /// Index of the current step.
    pub step: usize,
    /// Unix ms when the current step's hold clock (re)started.
    pub step_started_ms: u64,
    /// Hold time already spent in the current step before a pause, in ms.
    pub step_banked_ms: u64,
    /// Unix ms of creation.
    pub created_ms: u64,
    /// Unix ms of the last transition.
    pub updated_ms: u64,
    /// Transitions applied so far; the next event's number.
    pub transitions: u64,
    /// Why it paused or ended, in words.
    pub reason: Option<String>,
    /// The release train this rollout is a member of, if any: its members move together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<crate::train::TrainRef>,
}

/// What can happen to a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start sending traffic at the first step.
    Begin,
    /// The current step held long enough and the judge found nothing: next step, or promote
    /// after the last.
    Advance,
    /// Hold the current weight.
    Pause(String),
    /// Continue after a pause.
    Resume,
    /// Make the canary stable now.
    Promote(String),
    /// Stop by hand; the canary gets no traffic.
    Abort(String),
    /// Roll back automatically.
    Fail(String),
    /// The current step is marked `approve`, held and judged safe: wait for a person.
    AwaitApproval,
    /// A person lets the rollout leave the step it waits at.
    Approve(Approval),
    /// A person refuses: the rollout is aborted.
    Reject(Approval),
    /// Deploy the canary at weight 0 and stay pending, for the before-start gates
    /// ([`crate::gate`]): their requests reach it through the override, no user does.
    Stage,
    /// A release gate started, passed or failed: logged as an event, nothing else changes.
    Gate(String),
}

/// Who approved or rejected a rollout, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The person or client, in words (`alice (admin token, 127.0.0.1)`).
    pub by: String,
    /// Why, if they said.
    pub reason: Option<String>,
}

impl Approval {
    /// `by alice (admin token, 127.0.0.1): looks good`.
    fn words(&self) -> String {
        match &self.reason {
            Some(why) => format!("by {}: {why}", self.by),
            None => format!("by {}", self.by),
        }
    }
}

impl Command {
    /// The command's name as events and the API spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Begin => "begin",
            Command::Advance => "advance",
            Command::Pause(_) => "pause",
            Command::Resume => "resume",
            Command::Promote(_) => "promote",
            Command::Abort(_) => "abort",
            Command::Fail(_) => "fail",
            Command::AwaitApproval => "await_approval",
            Command::Approve(_) => "approve",
            Command::Reject(_) => "reject",
            Command::Stage => "stage",
            Command::Gate(_) => "gate",
        }
    }

    /// The reason the command carries, for the event log.
    fn reason(&self) -> Option<String> {
        match self {
            Command::Pause(why) | Command::Promote(why) | Command::Abort(why) | Command::Fail(why) => Some(why.clone()),
            Command::Approve(a) | Command::Reject(a) => a.reason.clone(),
            Command::Begin | Command::Advance | Command::Resume | Command::AwaitApproval | Command::Stage => None,
            Command::Gate(_) => None,
        }
    }

    /// Who gave the command, when a person named themselves.
    fn by(&self) -> Option<String> {
        match self {
            Command::Approve(a) | Command::Reject(a) => Some(a.by.clone()),
            _ => None,
        }
    }
}

/// How the service's routing must change with a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// Nothing changes.
    None,
    /// Deploy the canary under this rollout's id at `weight`.
    Canary {
        /// The weight.
        weight: Weight,
    },
    /// Keep the canary, change its weight.
    Weight(Weight),
    /// The canary becomes stable; the old stable drains.
    Promote,
    /// The canary is removed; everyone goes to stable.
    RemoveCanary,
}

/// One line of a rollout's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    /// The rollout.
    pub rollout_id: String,
    /// Its number within the rollout, from 0.
    pub seq: u64,
    /// Unix ms.
    pub at_ms: u64,
    /// What happened (`begin`, `advance`, `pause`, …).
    pub action: String,
    /// Phase before.
    pub from: Phase,
    /// Phase after.
    pub to: Phase,
    /// Step index after.
    pub step: usize,
    /// Canary weight after, in percent.
    pub weight: f64,
    /// What a person should read.
    pub message: String,
    /// Why, when the command said (a pause, an abort, the judge's rollback, an approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who approved or rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The result of applying a command.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The record after the command.
    pub rollout: Rollout,
    /// The event to log.
    pub event: Event,
    /// The routing change to apply.
    pub route: RouteChange,
}

/// Why a command does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a rollout that is {phase}")]
pub struct TransitionError {
    /// The command.
    pub action: &'static str,
    /// The phase it was refused in.
    pub phase: &'static str,
}

impl Rollout {
    /// Whether a record read back from the store is one this code can act on: a valid plan
    /// and a current step inside it (every other method may then index the plan).
    pub fn check(&self) -> Result<(), String> {
        check_steps(&self.steps).map_err(|e| format!("rollout {}: {e}", self.id))?;
        if self.step >= self.steps.len() {
            return Err(format!("rollout {}: step {} of a plan of {}", self.id, self.step + 1, self.steps.len()));
        }
        Ok(())
    }

    /// The weight the canary has in this phase and step.
    pub fn weight(&self) -> Weight {
        match self.phase {
            Phase::Pending | Phase::Aborted | Phase::Failed => Weight::ZERO,
            Phase::Promoted => Weight::FULL,
            Phase::Progressing | Phase::Paused | Phase::AwaitingApproval => self.steps[self.step].weight,
        }
    }

    /// Hold time spent in the current step at `now_ms`.
    pub fn held_ms(&self, now_ms: u64) -> u64 {
        match self.phase {
            Phase::Progressing => self.step_banked_ms + now_ms.saturating_sub(self.step_started_ms),
            _ => self.step_banked_ms,
        }
    }

    /// Whether the current step leads to full traffic: the last step, or one whose next step
    /// sends everyone to the canary. Promotion follows such a step, so it alone must show the
    /// canary safe at the tolerances themselves.
    pub fn step_leads_to_full(&self) -> bool {
        self.steps.get(self.step + 1).is_none_or(|next| next.weight == Weight::FULL)
    }

    /// Whether the current step's hold has passed at `now_ms`.
    pub fn hold_passed(&self, now_ms: u64) -> bool {
        self.held_ms(now_ms) >= self.steps[self.step].hold.0.as_millis() as u64
    }

    /// Applies `command` at `now_ms`.
    pub fn apply(&self, command: &Command, now_ms: u64) -> Result<Transition, TransitionError> {
        let mut next = self.clone();
        let (route, message) = self
            .change(&mut next, command, now_ms)
            .ok_or(TransitionError { action: command.name(), phase: self.phase.name() })?;
        next.updated_ms = now_ms;
        next.transitions = self.transitions + 1;
        let event = Event {
            rollout_id: self.id.clone(),
            seq: self.transitions,
            at_ms: now_ms,
            action: command.name().to_owned(),
            from: self.phase,
            to: next.phase,
            step: next.step,
            weight: next.weight().percent(),
            message,
            reason: command.reason(),
            by: command.by(),
        };
        Ok(Transition { rollout: next, event, route })
    }

    /// Moves `next` by `command`: the routing change and the event's message, or `None` when
    /// the command does not apply in this phase.
    fn change(&self, next: &mut Rollout, command: &Command, now_ms: u64) -> Option<(RouteChange, String)> {
        use Phase::*;
        Some(match (command, self.phase) {
            (Command::Begin, Pending) => {
                next.phase = Progressing;
                next.step = 0;
                next.step_started_ms = now_ms;
                next.step_banked_ms = 0;
                let w = self.steps[0].weight;
                (RouteChange::Canary { weight: w }, format!("started: {} at {w}", self.canary.version.as_str()))
            }
            (Command::Advance, Progressing) => self.step_forward(next, now_ms),
            (Command::AwaitApproval, Progressing) if self.steps[self.step].approve => {
                next.phase = AwaitingApproval;
                next.step_banked_ms = self.held_ms(now_ms);
                next.reason = Some(format!("step {} of {} waits for approval", self.step + 1, self.steps.len()));
                (RouteChange::None, format!("waiting for approval at {}", self.weight()))
            }
            (Command::Approve(approval), AwaitingApproval) => {
                next.reason = None;
                let (route, then) = self.step_forward(next, now_ms);
                (route, format!("approved {}; {then}", approval.words()))
            }
            (Command::Reject(approval), AwaitingApproval) => {
                next.phase = Aborted;
                next.reason = Some(format!("rejected {}", approval.words()));
                (RouteChange::RemoveCanary, format!("rejected {}", approval.words()))
            }
            (Command::Pause(why), Progressing) => {
                next.phase = Paused;
                next.step_banked_ms = self.held_ms(now_ms);
                next.reason = Some(why.clone());
                (RouteChange::None, format!("paused at {}: {why}", self.weight()))
            }
            (Command::Resume, Paused) => {
                next.phase = Progressing;
                next.step_started_ms = now_ms;
                next.reason = None;
                (RouteChange::None, format!("resumed at {}", self.weight()))
            }
            (Command::Promote(why), Pending | Progressing | Paused | AwaitingApproval) => {
                next.phase = Promoted;
                next.reason = Some(why.clone());
                (RouteChange::Promote, format!("promoted by hand: {why}"))
            }
            (Command::Abort(why), Pending | Progressing | Paused | AwaitingApproval) => {
                next.phase = Aborted;
                next.reason = Some(why.clone());
                (RouteChange::RemoveCanary, format!("aborted: {why}"))
            }
            (Command::Stage, Pending) => (
                RouteChange::Canary { weight: Weight::ZERO },
                format!("staged: {} deployed at 0% for the before-start gates", self.canary.version.as_str()),
            ),
            (Command::Gate(what), Pending | Progressing | Paused | AwaitingApproval) => {
                (RouteChange::None, what.clone())
            }
            (Command::Fail(why), Pending | Progressing | Paused | AwaitingApproval) => {
                next.phase = Failed;
                next.reason = Some(why.clone());
                (RouteChange::RemoveCanary, format!("rolled back: {why}"))
            }
            _ => return None,
        })
    }

    /// The next step, or promotion after the last.
    fn step_forward(&self, next: &mut Rollout, now_ms: u64) -> (RouteChange, String) {
        next.phase = Phase::Progressing;
        if self.step + 1 < self.steps.len() {
            next.step += 1;
            next.step_started_ms = now_ms;
            next.step_banked_ms = 0;
            let w = self.steps[next.step].weight;
            return (RouteChange::Weight(w), format!("step {} of {}: {w}", next.step + 1, self.steps.len()));
        }
        next.phase = Phase::Promoted;
        (RouteChange::Promote, format!("promoted: {} is the new stable", self.canary.version.as_str()))
    }
}

/// A pending rollout of `web` from v1 to v2 with the plan `steps`, for tests.
#[cfg(test)]
pub(crate) fn fixture(steps: &str) -> Rollout {
    use crate::config::{Upstreams, VersionName};
    let version = |name: &str| VersionConfig {
        version: VersionName::try_from(name.to_owned()).unwrap(),
        upstreams: Upstreams::try_from(vec!["127.0.0.1:1".to_owned()]).unwrap(),
    };
    Rollout {
        id: "web-1".into(),
        service: "web".into(),
        stable: version("v1"),
        canary: version("v2"),
        steps: parse_steps(steps).unwrap(),
        drain: HumanDuration(std::time::Duration::from_secs(60)),
        max_step_wait: HumanDuration(std::time::Duration::from_secs(600)),
        analysis: Analysis::default(),
        phase: Phase::Pending,
        step: 0,
        step_started_ms: 0,
        step_banked_ms: 0,
        created_ms: 0,
        updated_ms: 0,
        transitions: 0,
        reason: None,
        train: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout() -> Rollout {
        fixture("10%/1s,50%/1s,100%")
    }

    #[test]
    fn a_healthy_rollout_walks_its_steps_to_promotion() {
        let mut r = rollout();
        let mut routes = Vec::new();
        for (i, command) in [Command::Begin, Command::Advance, Command::Advance, Command::Advance].iter().enumerate() {
            let t = r.apply(command, 1000 * i as u64).unwrap();
            assert_eq!(t.event.seq, i as u64);
            routes.push(t.route);
            r = t.rollout;
        }
        assert_eq!(r.phase, Phase::Promoted);
        assert_eq!(
            routes,
            vec![
                RouteChange::Canary { weight: Weight::from_percent(10.0).unwrap() },
                RouteChange::Weight(Weight::from_percent(50.0).unwrap()),
                RouteChange::Weight(Weight::FULL),
                RouteChange::Promote,
            ]
        );
        assert!(r.apply(&Command::Abort("late".into()), 5000).is_err());
    }

    #[test]
    fn pausing_banks_the_hold_clock() {
        let r = rollout().apply(&Command::Begin, 0).unwrap().rollout;
        let paused = r.apply(&Command::Pause("look".into()), 600).unwrap().rollout;
        assert_eq!(paused.held_ms(10_000), 600);
        assert!(!paused.hold_passed(10_000));
        let resumed = paused.apply(&Command::Resume, 10_000).unwrap().rollout;
        assert!(!resumed.hold_passed(10_300));
        assert!(resumed.hold_passed(10_400));
        assert_eq!(resumed.weight(), Weight::from_percent(10.0).unwrap());
    }

    #[test]
    fn commands_that_do_not_fit_the_phase_are_refused() {
        let pending = rollout();
        for command in [Command::Advance, Command::Resume, Command::Pause("x".into())] {
            let e = pending.apply(&command, 0).unwrap_err();
            assert_eq!(e.phase, "pending");
        }
        let failed =
            pending.apply(&Command::Begin, 0).unwrap().rollout.apply(&Command::Fail("errors".into()), 1).unwrap();
        assert_eq!(failed.route, RouteChange::RemoveCanary);
        assert_eq!(failed.rollout.weight(), Weight::ZERO);
        assert_eq!(
            failed.rollout.apply(&Command::Resume, 2).unwrap_err().to_string(),
            "cannot resume a rollout that is failed"
        );
    }

    #[test]
    fn a_record_with_a_step_outside_its_plan_or_a_bad_plan_is_refused() {
        let mut r = rollout();
        assert_eq!(r.check(), Ok(()));
        r.step = 3;
        assert_eq!(r.check().unwrap_err(), "rollout web-1: step 4 of a plan of 3");
        r.step = 0;
        r.steps.clear();
        assert!(r.check().unwrap_err().contains("at least one step"));
    }

    #[test]
    fn a_staged_rollout_deploys_the_canary_at_zero_and_begins_after_its_gates() {
        let staged = rollout().apply(&Command::Stage, 0).unwrap();
        assert_eq!(staged.route, RouteChange::Canary { weight: Weight::ZERO });
        assert_eq!(staged.rollout.phase, Phase::Pending);
        assert_eq!(staged.rollout.weight(), Weight::ZERO);
        let noted = staged.rollout.apply(&Command::Gate("gate e2e started".into()), 1).unwrap();
        assert_eq!((noted.route, noted.event.action.as_str(), noted.event.seq), (RouteChange::None, "gate", 1));
        assert_eq!(noted.rollout.phase, Phase::Pending);
        let begun = noted.rollout.apply(&Command::Begin, 2).unwrap();
        assert_eq!(begun.route, RouteChange::Canary { weight: Weight::from_percent(10.0).unwrap() });
        let failed = noted.rollout.apply(&Command::Fail("gate e2e failed".into()), 2).unwrap();
        assert_eq!((failed.rollout.phase, failed.route), (Phase::Failed, RouteChange::RemoveCanary));
        assert!(begun.rollout.apply(&Command::Stage, 3).is_err());
    }

    #[test]
    fn steps_parse_and_are_checked() {
        let steps = parse_steps("1%/30s, 5%/1m 100%").unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[1].hold.0.as_secs(), 60);
        assert_eq!(steps[2].hold.0.as_secs(), 0);
        assert!(parse_steps("").is_err());
        assert!(parse_steps("5%/1m,5%/1m").unwrap_err().contains("rise"));
        assert!(parse_steps("0%/1m").unwrap_err().contains("above 0"));
        assert!(parse_steps("150%/1m").unwrap_err().contains("out of range"));
        assert!(parse_steps("10%/soon").unwrap_err().contains("soon"));
        assert_eq!(default_steps().len(), 5);
    }

    #[test]
    fn approve_marks_the_step_before_it() {
        let steps = parse_steps("1%/30s,approve,25%/2m,100%").unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps.iter().map(|s| s.approve).collect::<Vec<_>>(), [true, false, false]);
        assert_eq!(format_steps(&steps), "1%/30s,approve,25%/2m,100%");
        assert!(parse_steps("approve,10%").unwrap_err().contains("must follow a step"));
        assert!(parse_steps("10%,approve,approve,50%").unwrap_err().contains("twice"));
        let json = serde_json::to_value(&steps).unwrap();
        assert_eq!(json[0]["approve"], true);
        assert!(json[1].get("approve").is_none(), "a step without approval reads as before: {json}");
    }

    fn awaiting() -> Rollout {
        let r = fixture("10%/1s,approve,50%/1s,100%").apply(&Command::Begin, 0).unwrap().rollout;
        let t = r.apply(&Command::AwaitApproval, 1500).unwrap();
        assert_eq!(t.route, RouteChange::None);
        assert_eq!(t.event.action, "await_approval");
        t.rollout
    }

    fn alice(reason: Option<&str>) -> Approval {
        Approval { by: "alice (admin token, 127.0.0.1)".into(), reason: reason.map(str::to_owned) }
    }

    #[test]
    fn an_approval_step_waits_for_a_person_at_its_weight() {
        let waiting = awaiting();
        assert_eq!(waiting.phase, Phase::AwaitingApproval);
        assert_eq!(waiting.weight(), Weight::from_percent(10.0).unwrap());
        assert_eq!(waiting.held_ms(99_000), 1500, "the hold clock stops while waiting");
        assert!(waiting.apply(&Command::Advance, 2000).is_err(), "the judge alone cannot pass an approval");
        assert!(waiting.apply(&Command::Resume, 2000).is_err());
        let t = waiting.apply(&Command::Approve(alice(Some("dashboards look fine"))), 60_000).unwrap();
        assert_eq!(t.rollout.phase, Phase::Progressing);
        assert_eq!(t.rollout.step, 1);
        assert_eq!(t.route, RouteChange::Weight(Weight::from_percent(50.0).unwrap()));
        assert_eq!(t.event.by.as_deref(), Some("alice (admin token, 127.0.0.1)"));
        assert_eq!(t.event.reason.as_deref(), Some("dashboards look fine"));
        assert!(t.event.message.starts_with("approved by alice"), "{}", t.event.message);
        assert!(!t.rollout.hold_passed(60_500), "the next step holds afresh");
    }

    #[test]
    fn a_step_without_approval_refuses_to_wait_and_approvals_need_a_waiting_rollout() {
        let r = fixture("10%/1s,100%").apply(&Command::Begin, 0).unwrap().rollout;
        assert!(r.apply(&Command::AwaitApproval, 2000).is_err());
        let e = r.apply(&Command::Approve(alice(None)), 2000).unwrap_err();
        assert_eq!(e.to_string(), "cannot approve a rollout that is progressing");
    }

    #[test]
    fn a_rejection_aborts_and_the_judge_still_rolls_back_while_waiting() {
        let rejected = awaiting().apply(&Command::Reject(alice(Some("wrong build"))), 3000).unwrap();
        assert_eq!(rejected.rollout.phase, Phase::Aborted);
        assert_eq!(rejected.route, RouteChange::RemoveCanary);
        assert_eq!(rejected.rollout.reason.as_deref(), Some("rejected by alice (admin token, 127.0.0.1): wrong build"));
        let failed = awaiting().apply(&Command::Fail("error rate".into()), 3000).unwrap();
        assert_eq!(failed.rollout.phase, Phase::Failed);
        assert_eq!(failed.event.reason.as_deref(), Some("error rate"));
    }

    #[test]
    fn approving_the_last_step_promotes() {
        let r = fixture("10%/1s,100%,approve").apply(&Command::Begin, 0).unwrap().rollout;
        let r = r.apply(&Command::Advance, 1000).unwrap().rollout;
        let r = r.apply(&Command::AwaitApproval, 2000).unwrap().rollout;
        let t = r.apply(&Command::Approve(alice(None)), 3000).unwrap();
        assert_eq!(t.rollout.phase, Phase::Promoted);
        assert_eq!(t.route, RouteChange::Promote);
    }
}
