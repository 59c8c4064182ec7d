//! The names notifications give rollout events, from the event log's actions, and the filter a
//! sink subscribes with.

use serde::Deserialize;

use crate::rollout::{Event, Phase};

/// What a notification reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventName {
    /// The rollout began: the canary gets its first users.
    Started,
    /// The rollout moved to its next step.
    StepAdvanced,
    /// Held by a person or by the judge.
    Paused,
    /// Going on after a pause.
    Resumed,
    /// A step marked `approve` waits for a person.
    ApprovalNeeded,
    /// A person approved.
    Approved,
    /// A person rejected; the rollout is aborted.
    Rejected,
    /// A release gate began.
    GateStarted,
    /// A release gate passed.
    GatePassed,
    /// A release gate failed.
    GateFailed,
    /// The judge or a breaker rolled the canary back.
    RolledBack,
    /// The canary became the new stable.
    Promoted,
    /// A person stopped the rollout.
    Aborted,
}

/// Every name, in the order the documentation lists them.
pub const EVENT_NAMES: [EventName; 13] = [
    EventName::Started,
    EventName::StepAdvanced,
    EventName::Paused,
    EventName::Resumed,
    EventName::ApprovalNeeded,
    EventName::Approved,
    EventName::Rejected,
    EventName::GateStarted,
    EventName::GatePassed,
    EventName::GateFailed,
    EventName::RolledBack,
    EventName::Promoted,
    EventName::Aborted,
];

impl EventName {
    /// The name as configuration and payloads spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::Started => "started",
            EventName::StepAdvanced => "step_advanced",
            EventName::Paused => "paused",
            EventName::Resumed => "resumed",
            EventName::ApprovalNeeded => "approval_needed",
            EventName::Approved => "approved",
            EventName::Rejected => "rejected",
            EventName::GateStarted => "gate_started",
            EventName::GatePassed => "gate_passed",
            EventName::GateFailed => "gate_failed",
            EventName::RolledBack => "rolled_back",
            EventName::Promoted => "promoted",
            EventName::Aborted => "aborted",
        }
    }

    /// The name spelled `text`.
    pub fn parse(text: &str) -> Option<EventName> {
        EVENT_NAMES.into_iter().find(|n| n.as_str() == text)
    }

    /// What a logged event reports: its own name first, then what else it also is (an approval
    /// of the last step is also a promotion; a rejection is also an abort). `None` for an
    /// action this version does not name.
    pub fn of(event: &Event) -> Option<(EventName, Option<EventName>)> {
        let ended_as = |phase: Phase| match phase {
            Phase::Promoted => Some(EventName::Promoted),
            Phase::Aborted => Some(EventName::Aborted),
            Phase::Failed => Some(EventName::RolledBack),
            _ => None,
        };
        let name = match event.action.as_str() {
            "begin" => EventName::Started,
            "advance" if event.to == Phase::Promoted => EventName::Promoted,
            "advance" => EventName::StepAdvanced,
            "pause" => EventName::Paused,
            "resume" => EventName::Resumed,
            "await_approval" => EventName::ApprovalNeeded,
            "approve" => EventName::Approved,
            "reject" => EventName::Rejected,
            "promote" => EventName::Promoted,
            "abort" => EventName::Aborted,
            "fail" => EventName::RolledBack,
            other => EventName::parse(other)?,
        };
        let also = ended_as(event.to).filter(|&also| also != name);
        Some((name, also))
    }
}

/// The events a sink wants: every one (`"*"`), or those named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct EventFilter(Option<Vec<EventName>>);

impl TryFrom<Vec<String>> for EventFilter {
    type Error = String;
    fn try_from(names: Vec<String>) -> Result<Self, Self::Error> {
        if names.is_empty() {
            return Err("events must name at least one event, or be [\"*\"] for all".into());
        }
        if names.iter().any(|n| n == "*") {
            return Ok(EventFilter(None));
        }
        let known = || EVENT_NAMES.map(EventName::as_str).join(", ");
        let parsed = names
            .iter()
            .map(|n| EventName::parse(n).ok_or_else(|| format!("unknown event {n:?}; known: *, {}", known())));
        Ok(EventFilter(Some(parsed.collect::<Result<_, _>>()?)))
    }
}

impl EventFilter {
    /// Whether every event passes.
    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }

    /// Whether an event of these names passes.
    pub fn wants(&self, name: EventName, also: Option<EventName>) -> bool {
        match &self.0 {
            None => true,
            Some(names) => names.contains(&name) || also.is_some_and(|a| names.contains(&a)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, to: Phase) -> Event {
        Event {
            rollout_id: "web-1".into(),
            seq: 3,
            at_ms: 0,
            action: action.into(),
            from: Phase::Progressing,
            to,
            step: 1,
            weight: 25.0,
            message: String::new(),
            reason: None,
            by: None,
        }
    }

    #[test]
    fn every_logged_action_has_its_name() {
        let cases = [
            ("begin", Phase::Progressing, "started", None),
            ("advance", Phase::Progressing, "step_advanced", None),
            ("advance", Phase::Promoted, "promoted", None),
            ("await_approval", Phase::AwaitingApproval, "approval_needed", None),
            ("approve", Phase::Progressing, "approved", None),
            ("approve", Phase::Promoted, "approved", Some(EventName::Promoted)),
            ("reject", Phase::Aborted, "rejected", Some(EventName::Aborted)),
            ("fail", Phase::Failed, "rolled_back", None),
            ("abort", Phase::Aborted, "aborted", None),
            ("gate_failed", Phase::Progressing, "gate_failed", None),
        ];
        for (action, to, name, also) in cases {
            let (got, got_also) = EventName::of(&event(action, to)).unwrap();
            assert_eq!((got.as_str(), got_also), (name, also), "{action}");
        }
        assert_eq!(EventName::of(&event("something_new", Phase::Progressing)), None);
    }

    #[test]
    fn a_filter_passes_what_it_names_or_everything() {
        let filter = EventFilter::try_from(vec!["rolled_back".to_owned(), "promoted".to_owned()]).unwrap();
        assert!(filter.wants(EventName::RolledBack, None));
        assert!(filter.wants(EventName::Approved, Some(EventName::Promoted)));
        assert!(!filter.wants(EventName::Paused, None));
        assert!(EventFilter::try_from(vec!["*".to_owned()]).unwrap().wants(EventName::Paused, None));
        assert!(EventFilter::try_from(Vec::new()).unwrap_err().contains("at least one"));
    }
}
