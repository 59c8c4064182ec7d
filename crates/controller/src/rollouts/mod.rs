//! Rollouts: starting them under a per-service lock, moving them through their state machine,
//! and persisting every transition before it takes effect.
//!
//! Every transition is one store transaction that compares the rollout record's revision and
//! the routing's revision, then writes the next record, its event and the new routing together
//! (and takes or releases the service's rollout lock). Two controllers, or an API call racing a
//! tick, can never both apply a transition: the loser sees a conflict, re-reads and re-decides.
//! Only after the commit does the local gateway get the new routing.

mod evidence;
mod route_change;
mod runner;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canary_core::RouteSpec;
use canary_core::clock::unix_ms as now_ms;
use canary_core::config::HumanDuration;
use canary_core::config::{Upstreams, VersionConfig, VersionName};
use canary_core::judge::{MetricVerdict, StepDecision};
use canary_core::rollout::{Analysis, Command, Event, Phase, Rollout, Step, Transition, check_steps, default_steps};
use canary_store::{Compare, Revision, Txn, TxnOutcome, keys};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::error::ControllerError;
use crate::metrics_source::{BreakerSource, MetricsSource};
use crate::routing::Routing;

/// Attempts at a transition before giving up on a contended record.
const ATTEMPTS: usize = 16;

/// Body of `POST /api/v1/services/{name}/rollouts`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartRollout {
    /// The canary's version name.
    pub version: VersionName,
    /// The canary's addresses.
    pub upstreams: Upstreams,
    /// The plan, as a list or as text like `"1%/30s,5%/1m,100%"`; default `1%/30s → 5%/1m →
    /// 25%/2m → 50%/2m → 100%`.
    #[serde(default)]
    pub steps: Option<StepsInput>,
    /// How long the old stable serves its pinned sessions after promotion (default 10m).
    #[serde(default)]
    pub drain: Option<HumanDuration>,
    /// How long a step may stay inconclusive after its hold before pausing (default 10m).
    #[serde(default)]
    pub max_step_wait: Option<HumanDuration>,
    /// Judge settings.
    #[serde(default)]
    pub analysis: Option<Analysis>,
}

/// Steps as a list or as text.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StepsInput {
    /// `"1%/30s,5%/1m,100%"`.
    Text(String),
    /// `[{"weight": 1, "hold": "30s"}, …]`.
    List(Vec<Step>),
}

/// A rollout as the API shows it: the record plus what the judge sees now.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// The durable record.
    #[serde(flatten)]
    pub rollout: Rollout,
    /// Canary weight now, in percent.
    pub weight: f64,
    /// Hold time spent in the current step.
    pub held_seconds: f64,
    /// Hold time the current step needs.
    pub hold_seconds: f64,
    /// The judge's latest view, while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeView>,
}

/// What the judge says at the latest tick.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JudgeView {
    /// The step decision.
    pub decision: StepDecision,
    /// One verdict per metric.
    pub verdicts: Vec<MetricVerdict>,
    /// Share of the rollout's requests the canary served, in percent.
    pub observed_canary_share: Option<f64>,
    /// The latency that counts as slow (from stable's p99 before the rollout), in seconds.
    pub tail_threshold_seconds: f64,
    /// Unix ms of the tick.
    pub at_ms: u64,
}

/// A change pushed to live views (dashboard, `status --watch`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Update {
    /// `rollout` (a transition), `tick` (the judge looked again) or `routing`.
    pub kind: &'static str,
    /// The service.
    pub service: String,
    /// The rollout's view, for `rollout` and `tick`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
    /// The event, for `rollout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
}

#[derive(Default)]
struct Live {
    active: Option<(Rollout, Revision)>,
    judge: Option<JudgeView>,
    runner: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct Slot {
    transitions: tokio::sync::Mutex<()>,
    live: Mutex<Live>,
}

/// Settings of the rollout controller.
#[derive(Debug, Clone, Copy)]
pub struct ControllerSettings {
    /// How often the judge looks.
    pub tick: Duration,
}

/// 1 while this controller leads, for `/metrics`.
#[derive(Debug)]
pub struct LeadingGauge(Arc<AtomicBool>);

impl prometheus_client::collector::Collector for LeadingGauge {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let metric = encoder.encode_descriptor(
            "canary_controller_leading",
            "Whether this process leads the controllers and runs the rollouts' judges (1) or not (0)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        prometheus_client::metrics::gauge::ConstGauge::new(i64::from(self.0.load(Ordering::Relaxed))).encode(metric)
    }
}

/// The rollout controller.
pub struct Controller {
    routing: Routing,
    metrics: Arc<dyn MetricsSource>,
    breakers: Arc<dyn BreakerSource>,
    settings: ControllerSettings,
    slots: HashMap<String, Arc<Slot>>,
    updates: broadcast::Sender<Update>,
    leading: Arc<AtomicBool>,
    fence: Mutex<Option<Compare>>,
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, ControllerError> {
    serde_json::from_slice(bytes).map_err(|e| ControllerError::Corrupt(format!("stored {what} is unreadable: {e}")))
}

/// A stored rollout record, checked before anything indexes its plan.
fn decode_rollout(bytes: &[u8]) -> Result<Rollout, ControllerError> {
    let rollout: Rollout = decode(bytes, "rollout")?;
    rollout.check().map_err(ControllerError::Corrupt)?;
    Ok(rollout)
}

impl Controller {
    /// A controller for every service of `routing`, judging with `metrics` and the gateways'
    /// `breakers`.
    pub fn new(
        routing: Routing,
        metrics: Arc<dyn MetricsSource>,
        breakers: Arc<dyn BreakerSource>,
        settings: ControllerSettings,
    ) -> Arc<Controller> {
        let slots = routing.services().map(|s| (s.name.clone(), Arc::default())).collect();
        let (updates, _) = broadcast::channel(1024);
        Arc::new(Controller {
            routing,
            metrics,
            breakers,
            settings,
            slots,
            updates,
            leading: Arc::new(AtomicBool::new(false)),
            fence: Mutex::new(None),
        })
    }

    /// The routing layer.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// Live updates: every transition and every judge tick.
    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    fn slot(&self, service: &str) -> Result<&Arc<Slot>, ControllerError> {
        self.slots.get(service).ok_or_else(|| ControllerError::NoService(service.to_owned()))
    }

    /// Whether this controller leads: only the leader runs the judges and moves rollouts on its
    /// own; any controller accepts requests from people, guarded by the store.
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Campaigns for leadership among the controllers sharing the store, forever. While leading
    /// it picks up every active rollout (after a restart, a takeover, or one started through
    /// another controller) and runs its judge; on losing the lease it stops them at once.
    pub async fn lead(self: Arc<Self>, candidate: String, ttl: Duration) {
        loop {
            let mut leadership = match self.routing.store().campaign("controller", &candidate, ttl).await {
                Ok(leadership) => leadership,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot campaign for leadership; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            *self.fence.lock().expect("fence") = leadership.fence().cloned();
            self.leading.store(true, Ordering::Relaxed);
            tracing::info!(candidate, "leading the controllers");
            let scanner = tokio::spawn(self.clone().adopt_active_rollouts());
            leadership.lost().await;
            self.leading.store(false, Ordering::Relaxed);
            *self.fence.lock().expect("fence") = None;
            scanner.abort();
            for slot in self.slots.values() {
                if let Some(runner) = slot.live.lock().expect("live").runner.take() {
                    runner.abort();
                }
            }
            tracing::warn!(candidate, "lost the leadership; rollouts are left to the new leader");
        }
    }

    /// Where the judge's counters come from (this gateway's, or Prometheus').
    pub fn metrics(&self) -> &Arc<dyn MetricsSource> {
        &self.metrics
    }

    /// Where the gateways' breaker states come from.
    pub fn breakers(&self) -> &Arc<dyn BreakerSource> {
        &self.breakers
    }

    /// `canary_controller_leading` for `/metrics`.
    pub fn leadership_gauge(&self) -> LeadingGauge {
        LeadingGauge(self.leading.clone())
    }

    /// Starts campaigning in the background as this process (`host-pid`), with a 5 s lease.
    pub fn spawn_leader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let candidate = format!("{}-{}", host.trim(), std::process::id());
        tokio::spawn(self.clone().lead(candidate, Duration::from_secs(5)))
    }

    /// While leading: every tick, runs a judge for each active rollout that has none here.
    async fn adopt_active_rollouts(self: Arc<Self>) {
        let mut interval = tokio::time::interval(self.settings.tick);
        loop {
            interval.tick().await;
            for service in self.slots.keys() {
                let running =
                    self.slots[service].live.lock().expect("live").runner.as_ref().is_some_and(|r| !r.is_finished());
                if running {
                    continue;
                }
                match self.refresh(service).await {
                    Ok(Some(rollout)) => {
                        tracing::info!(service, rollout = %rollout.id, phase = rollout.phase.name(), step = rollout.step, "running the judge of an active rollout");
                        self.spawn_runner(service);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(service, error = %e, "cannot read the active rollout"),
                }
            }
        }
    }

    /// Reads the active rollout of `service` from the store into the live view.
    pub async fn refresh(&self, service: &str) -> Result<Option<Rollout>, ControllerError> {
        let active = self.load_active(service).await?;
        let slot = self.slot(service)?;
        let mut live = slot.live.lock().expect("live");
        if active.is_none() {
            live.judge = None;
        }
        live.active = active.clone();
        Ok(active.map(|(r, _)| r))
    }

    /// The active rollout of `service` and its record's revision, as the store has it.
    async fn load_active(&self, service: &str) -> Result<Option<(Rollout, Revision)>, ControllerError> {
        self.slot(service)?;
        let store = self.routing.store();
        let Some(lock) = store.get(&keys::rollout_lock(service)).await? else { return Ok(None) };
        let id = String::from_utf8_lossy(&lock.value).into_owned();
        let Some(entry) = store.get(&keys::rollout(service, &id)).await? else { return Ok(None) };
        let rollout = decode_rollout(&entry.value)?;
        Ok((!rollout.phase.is_terminal()).then_some((rollout, entry.revision)))
    }

    /// The active rollout of `service` as this controller last saw it.
    pub fn active(&self, service: &str) -> Result<Option<Rollout>, ControllerError> {
        let live = self.slot(service)?.live.lock().expect("live");
        Ok(live.active.as_ref().map(|(r, _)| r.clone()))
    }

    /// Refuses a hand-made routing change while a rollout owns the routing.
    pub async fn ensure_no_rollout(&self, service: &str) -> Result<(), ControllerError> {
        match self.load_active(service).await? {
            Some((r, _)) => Err(ControllerError::RolloutInProgress { service: service.to_owned(), rollout: r.id }),
            None => Ok(()),
        }
    }

    /// Starts a rollout; refused while another one of the service is active.
    pub async fn start(self: &Arc<Self>, service: &str, request: StartRollout) -> Result<RolloutView, ControllerError> {
        let slot = self.slot(service)?.clone();
        let steps = match request.steps {
            None => default_steps(),
            Some(StepsInput::Text(text)) => {
                canary_core::rollout::parse_steps(&text).map_err(ControllerError::Invalid)?
            }
            Some(StepsInput::List(steps)) => {
                check_steps(&steps).map_err(ControllerError::Invalid)?;
                steps
            }
        };
        let analysis = request.analysis.unwrap_or_default();
        analysis.judge_config().validate().map_err(|e| ControllerError::Invalid(e.to_string()))?;
        let _serial = slot.transitions.lock().await;
        for _ in 0..ATTEMPTS {
            let (spec, spec_revision) = self.routing.current(service).await?;
            if spec.stable.version == request.version {
                return Err(ControllerError::Invalid(format!(
                    "version {} is already the stable version",
                    request.version.as_str()
                )));
            }
            let now = now_ms();
            let id = format!("{service}-{now:x}");
            let pending = Rollout {
                id: id.clone(),
                service: service.to_owned(),
                stable: spec.stable.clone(),
                canary: VersionConfig { version: request.version.clone(), upstreams: request.upstreams.clone() },
                steps: steps.clone(),
                drain: request.drain.unwrap_or(HumanDuration(Duration::from_secs(600))),
                max_step_wait: request.max_step_wait.unwrap_or(HumanDuration(Duration::from_secs(600))),
                analysis,
                phase: Phase::Pending,
                step: 0,
                step_started_ms: now,
                step_banked_ms: 0,
                created_ms: now,
                updated_ms: now,
                transitions: 0,
                reason: None,
            };
            let baseline = self.stable_baseline(service, &spec).await;
            let slow_bucket = runner::slow_bucket(&analysis, &baseline);
            let transition = pending.apply(&Command::Begin, now)?;
            let lock = keys::rollout_lock(service);
            let txn = Txn::new().require_absent(lock.clone()).put(lock.clone(), id.clone().into_bytes());
            match self.commit(service, txn, transition, spec, spec_revision, Some(slow_bucket), 0, false).await? {
                Some((rollout, revision)) => {
                    slot.live.lock().expect("live").active = Some((rollout, revision));
                    if self.is_leading() {
                        self.spawn_runner(service);
                    }
                    return self.view(service, None);
                }
                None => {
                    if let Some(holder) = self.routing.store().get(&lock).await? {
                        return Err(ControllerError::RolloutInProgress {
                            service: service.to_owned(),
                            rollout: String::from_utf8_lossy(&holder.value).into_owned(),
                        });
                    }
                }
            }
        }
        Err(ControllerError::Contended(keys::routing(service)))
    }

    /// Stable's latency histogram so far, the judge's baseline for the tail threshold.
    async fn stable_baseline(&self, service: &str, spec: &RouteSpec) -> [u64; canary_core::latency::LATENCY_BUCKETS] {
        match self.metrics.counts(service, spec.stable.version.as_str()).await {
            Ok(counts) => counts.latency_buckets,
            Err(e) => {
                tracing::warn!(service, error = %e, "no stable latency baseline");
                [0; canary_core::latency::LATENCY_BUCKETS]
            }
        }
    }

    /// Applies a person's `command` to the active rollout of `service`.
    pub async fn act(&self, service: &str, command: Command) -> Result<RolloutView, ControllerError> {
        self.transition(service, command, false).await
    }

    /// Applies `command`; `fenced` transitions (the judge's) commit only while this controller
    /// still leads, so a deposed leader that has not noticed yet cannot move a rollout.
    pub(crate) async fn transition(
        &self,
        service: &str,
        command: Command,
        fenced: bool,
    ) -> Result<RolloutView, ControllerError> {
        let slot = self.slot(service)?.clone();
        let _serial = slot.transitions.lock().await;
        for _ in 0..ATTEMPTS {
            if fenced && !self.is_leading() {
                return Err(ControllerError::NotLeader);
            }
            let (rollout, revision) =
                self.load_active(service).await?.ok_or_else(|| ControllerError::NoActiveRollout(service.to_owned()))?;
            let transition = rollout.apply(&command, now_ms())?;
            let (spec, spec_revision) = self.routing.current(service).await?;
            let slow_bucket = spec.slow_bucket;
            // Ending a rollout releases the service's lock in the same commit; the record's
            // revision, compared in `commit`, is what makes this writer the only one.
            let txn = if transition.rollout.phase.is_terminal() {
                Txn::new().delete(keys::rollout_lock(service))
            } else {
                Txn::new()
            };
            match self.commit(service, txn, transition, spec, spec_revision, slow_bucket, revision, fenced).await? {
                Some((next, next_revision)) => {
                    let ended = next.phase.is_terminal();
                    let view = {
                        let mut live = slot.live.lock().expect("live");
                        live.active = (!ended).then(|| (next.clone(), next_revision));
                        if ended {
                            live.judge = None;
                        }
                        RolloutView::new(next, live.judge.clone())
                    };
                    return Ok(view);
                }
                None => {
                    self.refresh(service).await?;
                }
            }
        }
        Err(ControllerError::Contended(keys::rollouts(service)))
    }

    /// Commits a transition with its event and routing; `Ok(None)` on a conflict.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        service: &str,
        txn: Txn,
        transition: Transition,
        mut spec: RouteSpec,
        spec_revision: Revision,
        slow_bucket: Option<u8>,
        rollout_revision: Revision,
        fenced: bool,
    ) -> Result<Option<(Rollout, Revision)>, ControllerError> {
        let Transition { rollout, event, route } = transition;
        let now = now_ms();
        route_change::apply(&mut spec, &route, &rollout, slow_bucket, now);
        let routing_changed = route != canary_core::rollout::RouteChange::None;
        if routing_changed {
            spec.generation += 1;
        }
        let record_key = keys::rollout(service, &rollout.id);
        let mut txn = txn
            .require_revision(record_key.clone(), rollout_revision)
            .put(record_key, serde_json::to_vec(&rollout).expect("rollouts serialize"))
            .put(
                keys::rollout_event(service, &rollout.id, event.seq),
                serde_json::to_vec(&event).expect("events serialize"),
            );
        if fenced && let Some(fence) = self.fence.lock().expect("fence").clone() {
            txn = txn.require_revision(fence.key, fence.revision);
        }
        if routing_changed {
            txn = txn
                .require_revision(keys::routing(service), spec_revision)
                .put(keys::routing(service), serde_json::to_vec(&spec).expect("route specs serialize"));
        }
        match self.routing.store().commit(txn).await? {
            TxnOutcome::Conflict { .. } => Ok(None),
            TxnOutcome::Committed { revision } => {
                if routing_changed {
                    self.routing.wait_applied(revision).await;
                }
                tracing::info!(service, rollout = %rollout.id, phase = rollout.phase.name(), "{}", event.message);
                let view = RolloutView::new(rollout.clone(), None);
                let _ = self.updates.send(Update {
                    kind: "rollout",
                    service: service.to_owned(),
                    rollout: Some(view),
                    event: Some(event),
                });
                Ok(Some((rollout, revision)))
            }
        }
    }

    /// The active rollout's view, or the latest one's when `id` is `None` and none is active.
    pub fn view(&self, service: &str, rollout: Option<Rollout>) -> Result<RolloutView, ControllerError> {
        let live = self.slot(service)?.live.lock().expect("live");
        let rollout = rollout
            .or_else(|| live.active.as_ref().map(|(r, _)| r.clone()))
            .ok_or_else(|| ControllerError::NoActiveRollout(service.to_owned()))?;
        Ok(RolloutView::new(rollout, live.judge.clone()))
    }

    /// The active rollout, or else the most recent one.
    pub async fn current_or_latest(&self, service: &str) -> Result<RolloutView, ControllerError> {
        if let Some(active) = self.refresh(service).await? {
            return self.view(service, Some(active));
        }
        let latest = self.history(service).await?.into_iter().last();
        match latest {
            Some(r) => Ok(RolloutView::new(r, None)),
            None => Err(ControllerError::NoActiveRollout(service.to_owned())),
        }
    }

    /// Every rollout of `service`, oldest first.
    pub async fn history(&self, service: &str) -> Result<Vec<Rollout>, ControllerError> {
        self.slot(service)?;
        let listing = self.routing.store().list(&keys::rollouts(service)).await?;
        listing.entries.iter().map(|e| decode_rollout(&e.value)).collect()
    }

    /// The event log of `service`, oldest first, at most the last `limit`.
    pub async fn events(&self, service: &str, limit: usize) -> Result<Vec<Event>, ControllerError> {
        self.slot(service)?;
        let listing = self.routing.store().list(&keys::events(service)).await?;
        let skip = listing.entries.len().saturating_sub(limit);
        listing.entries[skip..].iter().map(|e| decode(&e.value, "event")).collect()
    }

    fn spawn_runner(self: &Arc<Self>, service: &str) {
        let Ok(slot) = self.slot(service) else { return };
        let handle = tokio::spawn(runner::run(self.clone(), service.to_owned()));
        let mut live = slot.live.lock().expect("live");
        if let Some(old) = live.runner.replace(handle) {
            old.abort();
        }
    }

    fn set_judge_view(&self, service: &str, view: JudgeView) {
        let Ok(slot) = self.slot(service) else { return };
        let rollout = {
            let mut live = slot.live.lock().expect("live");
            live.judge = Some(view.clone());
            live.active.as_ref().map(|(r, _)| r.clone())
        };
        if let Some(rollout) = rollout {
            let _ = self.updates.send(Update {
                kind: "tick",
                service: service.to_owned(),
                rollout: Some(RolloutView::new(rollout, Some(view))),
                event: None,
            });
        }
    }
}

impl RolloutView {
    fn new(rollout: Rollout, judge: Option<JudgeView>) -> RolloutView {
        let now = now_ms();
        let hold = rollout.steps.get(rollout.step).map_or(0.0, |s| s.hold.0.as_secs_f64());
        RolloutView {
            weight: rollout.weight().percent(),
            held_seconds: rollout.held_ms(now) as f64 / 1000.0,
            hold_seconds: hold,
            judge: if rollout.phase.is_terminal() { None } else { judge },
            rollout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: usize) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": "web-1", "service": "web",
            "stable": {"version": "v1", "upstreams": ["127.0.0.1:9001"]},
            "canary": {"version": "v2", "upstreams": ["127.0.0.1:9002"]},
            "steps": [{"weight": 10.0, "hold": "1s"}, {"weight": 100.0, "hold": "0s"}],
            "drain": "10m", "maxStepWait": "10m", "phase": "progressing", "step": step,
            "stepStartedMs": 0, "stepBankedMs": 0, "createdMs": 0, "updatedMs": 0, "transitions": 1,
            "reason": null
        }))
        .unwrap()
    }

    #[test]
    fn a_stored_rollout_is_checked_before_its_plan_is_indexed() {
        let rollout = decode_rollout(&record(1)).unwrap();
        assert_eq!(rollout.weight(), canary_core::Weight::FULL);
        let err = decode_rollout(&record(2)).unwrap_err();
        assert!(matches!(&err, ControllerError::Corrupt(why) if why.contains("step 3 of a plan of 2")), "{err}");
    }

    #[test]
    fn an_unreadable_record_is_the_servers_fault() {
        let err = decode_rollout(b"{\"id\": 7").unwrap_err();
        assert!(matches!(err, ControllerError::Corrupt(_)), "{err}");
        let api = crate::api::envelope::ApiError::from(err);
        assert_eq!(api.code, canary_core::api::Code::Internal);
        assert_eq!(api.code.http_status(), 500);
    }
}
