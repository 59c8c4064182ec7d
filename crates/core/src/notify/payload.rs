//! What a sink is sent for one logged event: a [`Notification`] (the webhook's JSON body, as
//! is) or the Slack message made from it.

use serde::Serialize;
use serde_json::{Value, json};

use super::events::EventName;
use crate::rollout::{Event, Rollout};

/// One event as a webhook receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// `<rollout id>/<event number>`: the same for every attempt and every node, so a
    /// receiver drops what it has already seen.
    pub id: String,
    /// What happened (`rolled_back`, `approval_needed`, …).
    pub event: &'static str,
    /// What else it is: `promoted` for an approval of the last step, `aborted` for a rejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub also: Option<&'static str>,
    /// The service.
    pub service: String,
    /// The rollout's id.
    pub rollout: String,
    /// The stable version when the rollout started.
    pub stable: String,
    /// The canary.
    pub canary: String,
    /// The step after the event, from 1.
    pub step: usize,
    /// The steps of the plan.
    pub steps: usize,
    /// The canary's weight after the event, in percent.
    pub weight: f64,
    /// The phase before.
    pub from: &'static str,
    /// The phase after.
    pub phase: &'static str,
    /// Why: the judge's reason for a rollback, a person's for a pause or an approval.
    pub reason: Option<String>,
    /// Who approved or rejected.
    pub by: Option<String>,
    /// The event log's line, for a person.
    pub message: String,
    /// When, in Unix ms.
    pub at_ms: u64,
    /// When, in RFC 3339 (UTC).
    pub at: String,
}

impl Notification {
    /// The notification of `event` of `rollout`; `None` for an action this version does not
    /// name.
    pub fn new(rollout: &Rollout, event: &Event) -> Option<Notification> {
        let (name, also) = EventName::of(event)?;
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.at_ms);
        Some(Notification {
            id: format!("{}/{}", event.rollout_id, event.seq),
            event: name.as_str(),
            also: also.map(EventName::as_str),
            service: rollout.service.clone(),
            rollout: rollout.id.clone(),
            stable: rollout.stable.version.as_str().to_owned(),
            canary: rollout.canary.version.as_str().to_owned(),
            step: event.step + 1,
            steps: rollout.steps.len(),
            weight: event.weight,
            from: event.from.name(),
            phase: event.to.name(),
            reason: event.reason.clone(),
            by: event.by.clone(),
            message: event.message.clone(),
            at_ms: event.at_ms,
            at: humantime::format_rfc3339_millis(at).to_string(),
        })
    }

    /// The names it answers to, for a sink's filter.
    pub fn names(&self) -> (EventName, Option<EventName>) {
        let parse = |n: &str| EventName::parse(n).expect("made from a name");
        (parse(self.event), self.also.map(parse))
    }

    /// The webhook body.
    pub fn webhook_body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("notifications serialize")
    }

    /// The one line a chat shows: what happened and why.
    pub fn line(&self) -> String {
        format!(
            "{} *{}* {} → {}: {}",
            emoji(self.names().0),
            escape(&self.service),
            escape(&self.stable),
            escape(&self.canary),
            escape(&self.message)
        )
    }

    /// A Slack incoming-webhook message: `text` for notifications and clients without blocks,
    /// and section blocks with `mrkdwn` text (the line, then where the rollout stands).
    pub fn slack_message(&self) -> Value {
        let line = truncate(&self.line(), 2900);
        let details = format!(
            "rollout `{}` · step {} of {} · canary at {}% · {} → {}",
            escape(&self.rollout),
            self.step,
            self.steps,
            self.weight,
            self.from,
            self.phase
        );
        let section = |text: &str| json!({"type": "section", "text": {"type": "mrkdwn", "text": text}});
        json!({ "text": line, "blocks": [section(&line), section(&details)] })
    }
}

fn emoji(name: EventName) -> &'static str {
    match name {
        EventName::Started => ":rocket:",
        EventName::StepAdvanced => ":arrow_up:",
        EventName::Paused => ":double_vertical_bar:",
        EventName::Resumed => ":arrow_forward:",
        EventName::ApprovalNeeded => ":raised_hand:",
        EventName::Approved => ":white_check_mark:",
        EventName::Rejected | EventName::Aborted => ":no_entry:",
        EventName::GateStarted => ":hourglass_flowing_sand:",
        EventName::GatePassed => ":heavy_check_mark:",
        EventName::GateFailed => ":x:",
        EventName::RolledBack => ":rotating_light:",
        EventName::Promoted => ":tada:",
    }
}

/// Slack's mrkdwn reads `&`, `<` and `>` as markup; text from the event log must not be.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// At most `max` characters (a section's text holds 3,000).
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{Command, fixture};

    fn rolled_back() -> Notification {
        let r = fixture("10%/1s,25%/1s,100%").apply(&Command::Begin, 0).unwrap().rollout;
        let r = r.apply(&Command::Advance, 1_000).unwrap().rollout;
        let t = r.apply(&Command::Fail("canary error rate 5.00% (50/1000) against stable's 1.00% <x>".into()), 2_000);
        let t = t.unwrap();
        Notification::new(&t.rollout, &t.event).unwrap()
    }

    #[test]
    fn a_rollback_says_which_rollout_where_and_why() {
        let n = rolled_back();
        assert_eq!((n.id.as_str(), n.event, n.phase, n.from), ("web-1/2", "rolled_back", "failed", "progressing"));
        assert_eq!((n.step, n.steps, n.weight), (2, 3, 0.0));
        assert_eq!((n.stable.as_str(), n.canary.as_str()), ("v1", "v2"));
        assert!(n.reason.as_deref().unwrap().starts_with("canary error rate 5.00%"));
        assert_eq!(n.at, "1970-01-01T00:00:02.000Z");
        let body: Value = serde_json::from_slice(&n.webhook_body()).unwrap();
        assert_eq!(body["id"], "web-1/2");
        assert_eq!(body["atMs"], 2000);
        assert!(body.get("also").is_none());
    }

    #[test]
    fn the_slack_message_is_text_and_section_blocks_of_mrkdwn() {
        let message = rolled_back().slack_message();
        let text = message["text"].as_str().unwrap();
        assert!(text.starts_with(":rotating_light: *web* v1 → v2: rolled back: canary error rate 5.00%"), "{text}");
        assert!(text.ends_with("&lt;x&gt;"), "markup in a reason is escaped: {text}");
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 2);
        for block in blocks {
            assert_eq!(block["type"], "section");
            assert_eq!(block["text"]["type"], "mrkdwn");
            assert!(!block["text"]["text"].as_str().unwrap().is_empty());
        }
        assert_eq!(blocks[0]["text"]["text"], text);
    }

    #[test]
    fn long_text_is_cut_to_what_a_section_holds() {
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
