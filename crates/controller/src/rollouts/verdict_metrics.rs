//! The judge's verdicts and the rollouts' phases on `/metrics`, so teams alert and chart with
//! their usual tools: per active rollout and metric the e-value, the estimate, the bounds, and
//! the step decision; per rollout its phase. A team metric's series carry its own name as the
//! `metric` label.

use std::sync::Arc;

use canary_core::api::JudgeView;
use canary_core::judge::StepDecision;
use canary_core::rollout::{Phase, Rollout};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Controller;

const PHASES: [Phase; 7] = [
    Phase::Pending,
    Phase::Progressing,
    Phase::Paused,
    Phase::AwaitingApproval,
    Phase::Promoted,
    Phase::Aborted,
    Phase::Failed,
];
const DECISIONS: [(StepDecision, &str); 4] = [
    (StepDecision::Rollback, "rollback"),
    (StepDecision::NeedsAttention, "needs_attention"),
    (StepDecision::Advance, "advance"),
    (StepDecision::Hold, "hold"),
];

/// The collector over one controller's live rollouts.
pub struct VerdictMetrics(pub(super) Arc<Controller>);

impl std::fmt::Debug for VerdictMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerdictMetrics")
    }
}

/// One active rollout with the judge's latest look, copied out of the live view for a scrape.
struct Seen {
    rollout: Rollout,
    judge: Option<JudgeView>,
}

impl Controller {
    /// The judge's verdicts and the rollouts' phases, for `/metrics`.
    pub fn verdict_metrics(self: &Arc<Self>) -> VerdictMetrics {
        VerdictMetrics(self.clone())
    }

    fn seen(&self) -> Vec<Seen> {
        let mut seen = Vec::new();
        for slot in self.slots.values() {
            let live = slot.live.lock().expect("live");
            if let Some((rollout, _)) = &live.active {
                seen.push(Seen { rollout: rollout.clone(), judge: live.judge.clone() });
            }
        }
        seen
    }
}

impl Collector for VerdictMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let seen = self.0.seen();
        let mut phase = encoder.encode_descriptor(
            "canary_rollout_phase",
            "1 for the phase each active rollout is in",
            None,
            MetricType::Gauge,
        )?;
        for s in &seen {
            for p in PHASES {
                let labels =
                    [("service", s.rollout.service.as_str()), ("rollout", s.rollout.id.as_str()), ("phase", p.name())];
                ConstGauge::new(i64::from(s.rollout.phase == p)).encode(phase.encode_family(&labels)?)?;
            }
        }
        let mut decision = encoder.encode_descriptor(
            "canary_judge_decision",
            "1 for the judge's step decision at its latest look",
            None,
            MetricType::Gauge,
        )?;
        for (s, judge) in seen.iter().filter_map(|s| Some((s, s.judge.as_ref()?))) {
            for (d, name) in DECISIONS {
                let labels =
                    [("service", s.rollout.service.as_str()), ("rollout", s.rollout.id.as_str()), ("decision", name)];
                ConstGauge::new(i64::from(judge.decision == d)).encode(decision.encode_family(&labels)?)?;
            }
        }
        encode_verdicts(&mut encoder, &seen)
    }
}

/// Per metric: the e-value, its threshold, the estimate and the bounds, where they are known.
fn encode_verdicts(encoder: &mut DescriptorEncoder, seen: &[Seen]) -> Result<(), std::fmt::Error> {
    type Pick = fn(&canary_core::judge::MetricVerdict) -> Option<f64>;
    let families: [(&str, &str, Pick); 5] = [
        ("canary_judge_e_value", "Evidence that the canary is worse than its tolerance", |v| v.e_value),
        // A team value metric has no α, hence no threshold.
        ("canary_judge_threshold", "The e-value at which the metric rolls back (1/alpha)", |v| {
            (v.alpha > 0.0).then_some(v.threshold)
        }),
        ("canary_judge_estimate", "Canary / stable for the metric", |v| v.estimate),
        ("canary_judge_lower_bound", "Anytime-valid lower bound of canary / stable", |v| v.interval.lower),
        ("canary_judge_upper_bound", "Anytime-valid upper bound of canary / stable", |v| v.interval.upper),
    ];
    for (name, help, pick) in families {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (s, judge) in seen.iter().filter_map(|s| Some((s, s.judge.as_ref()?))) {
            for verdict in &judge.verdicts {
                let Some(value) = pick(verdict).filter(|v| v.is_finite()) else { continue };
                let labels = [
                    ("service", s.rollout.service.as_str()),
                    ("rollout", s.rollout.id.as_str()),
                    ("metric", verdict.name()),
                ];
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}
