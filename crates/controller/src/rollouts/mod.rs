//! Rollouts: starting them under a per-service lock, moving them through their state machine,
//! and persisting every transition before it takes effect.
//!
//! Every transition is one store transaction that compares the rollout record's revision and
//! the routing's revision, then writes the next record, its event and the new routing together
//! (and takes or releases the service's rollout lock). Two controllers, or an API call racing a
//! tick, can never both apply a transition: the loser sees a conflict, re-reads and re-decides.
//! Only after the commit does the local gateway get the new routing.

mod evidence;
mod gating;
mod leadership;
mod route_change;
mod runner;
mod team;
mod trains;
mod transitions;
mod verdict_metrics;
mod views;

pub use verdict_metrics::VerdictMetrics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canary_core::api::{JudgeView, Update};
use canary_core::clock::unix_ms as now_ms;
use canary_core::rollout::Rollout;
use canary_store::{Compare, Revision};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::error::ControllerError;
use crate::metrics_source::{BreakerSource, MetricsSource};
use crate::routing::Routing;
use crate::team_metrics::TeamQueries;

/// Attempts at a transition before giving up on a contended record.
const ATTEMPTS: usize = 16;

#[derive(Default)]
struct Live {
    active: Option<(Rollout, Revision)>,
    judge: Option<JudgeView>,
    runner: Option<tokio::task::JoinHandle<()>>,
    /// The release gates running or last run at the current step; dropped, they are killed.
    gates: Option<crate::gates::StageRun>,
    /// The record's transition count at which this service's runner last said the rollout
    /// should move on, if its last look said so: a release train moves once all its members say so.
    ready_at: Option<u64>,
}

#[derive(Default)]
struct Slot {
    transitions: tokio::sync::Mutex<()>,
    live: Mutex<Live>,
}

/// Settings of the rollout controller.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// How often the judge looks.
    pub tick: Duration,
    /// The Prometheus team metrics ask when they name none of their own (`[metrics] url`).
    pub prometheus_url: Option<String>,
    /// Where release gates run and write their output.
    pub gates: crate::gates::GateSettings,
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
    team_queries: TeamQueries,
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
            team_queries: TeamQueries::new(settings.prometheus_url.as_deref()),
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

    /// Where the judge's counters come from (this gateway's, or Prometheus').
    pub fn metrics(&self) -> &Arc<dyn MetricsSource> {
        &self.metrics
    }

    /// Where the gateways' breaker states come from.
    pub fn breakers(&self) -> &Arc<dyn BreakerSource> {
        &self.breakers
    }

    /// Where the team metrics' queries go.
    pub fn team_queries(&self) -> &TeamQueries {
        &self.team_queries
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
