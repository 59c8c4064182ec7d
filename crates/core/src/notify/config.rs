//! `[[notify]]`: where rollout events are sent, checked as the file is read so a mistake names
//! its key and line.

use std::time::Duration;

use serde::Deserialize;
use xxhash_rust::xxh3::xxh3_64;

use super::events::EventFilter;
use crate::config::HumanDuration;

/// The shortest secret a webhook may be signed with.
pub const MIN_SECRET_LEN: usize = 16;

/// What kind of receiver a sink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// One signed JSON object per event, for any HTTP receiver.
    Webhook,
    /// A Slack incoming webhook (or a chat that speaks its format): text and blocks.
    Slack,
}

impl SinkKind {
    /// The kind as the file spells it.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Slack => "slack",
        }
    }
}

/// An `http://` or `https://` URL with a host (`https://` verified against the system's roots,
/// or the bundle `SSL_CERT_FILE` names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SinkUrl(String);

impl TryFrom<String> for SinkUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, Self::Error> {
        let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
            return Err(format!("url {url:?} must start with https:// or http://"));
        };
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || host.contains(char::is_whitespace) || url.contains(char::is_control) {
            return Err(format!("url {url:?} has no host, or has spaces in it"));
        }
        Ok(SinkUrl(url))
    }
}

impl SinkUrl {
    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A webhook's signing secret: at least [`MIN_SECRET_LEN`] characters.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SinkSecret(String);

impl std::fmt::Debug for SinkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkSecret(…)")
    }
}

impl TryFrom<String> for SinkSecret {
    type Error = String;
    fn try_from(secret: String) -> Result<Self, Self::Error> {
        if secret.chars().count() < MIN_SECRET_LEN {
            return Err(format!("secret must be at least {MIN_SECRET_LEN} characters"));
        }
        Ok(SinkSecret(secret))
    }
}

impl SinkSecret {
    /// The secret's bytes, to sign with.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// One `[[notify]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The receiver's kind.
    pub kind: SinkKind,
    /// Where events are posted.
    pub url: SinkUrl,
    /// Signs each webhook body (`x-canary-signature`); a Slack URL is its own secret.
    #[serde(default)]
    pub secret: Option<SinkSecret>,
    /// The events sent (`["*"]`, the default, is every one).
    #[serde(default)]
    pub events: EventFilter,
    /// Names the sink in `/metrics` and in the store, where its delivered cursor is kept;
    /// default: the kind and a hash of the URL, so a changed URL starts a new cursor.
    #[serde(default)]
    pub name: Option<String>,
    /// After a restart or a change of leader, events older than this are not sent any more.
    #[serde(default = "default_replay")]
    pub replay: HumanDuration,
    /// How long one attempt may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_replay() -> HumanDuration {
    HumanDuration(Duration::from_secs(15 * 60))
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

impl SinkConfig {
    /// The sink's name: the configured one, else `<kind>-<hash of the url>`.
    pub fn sink_name(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("{}-{:08x}", self.kind.name(), xxh3_64(self.url.as_str().as_bytes()) as u32),
        }
    }
}

/// The checks across a sink's keys and across sinks.
pub fn check_sinks(sinks: &[SinkConfig]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for (i, sink) in sinks.iter().enumerate() {
        let at = format!("[[notify]] #{} ({} {})", i + 1, sink.kind.name(), sink.url.as_str());
        if let Some(name) = &sink.name {
            crate::names::check_id(name, "notify").map_err(|e| format!("{at}: {e}"))?;
        }
        if sink.kind == SinkKind::Slack && sink.secret.is_some() {
            return Err(format!("{at}: a slack sink takes no secret (its URL is the secret); remove `secret`"));
        }
        if sink.replay.0 > Duration::from_secs(24 * 3600) {
            return Err(format!("{at}: replay must be at most 24h"));
        }
        if sink.timeout.0 < Duration::from_millis(100) || sink.timeout.0 > Duration::from_secs(60) {
            return Err(format!("{at}: timeout must be between 100ms and 1m"));
        }
        if !names.insert(sink.sink_name()) {
            return Err(format!("{at}: another [[notify]] has the same name {:?}; set `name`", sink.sink_name()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        notify: Vec<SinkConfig>,
    }

    fn parse(text: &str) -> Result<Vec<SinkConfig>, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        check_sinks(&file.notify)?;
        Ok(file.notify)
    }

    #[test]
    fn a_webhook_and_a_slack_sink_read_with_their_defaults() {
        let sinks = parse(
            "[[notify]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9999/hook\"\nsecret = \"0123456789abcdef\"\n\
             events = [\"rolled_back\", \"paused\"]\n\
             [[notify]]\nkind = \"slack\"\nurl = \"http://chat.internal/hooks/T/B/X\"\n",
        )
        .unwrap();
        assert_eq!(sinks[0].kind, SinkKind::Webhook);
        assert_eq!(sinks[0].replay.0, Duration::from_secs(900));
        assert!(sinks[1].events.is_all());
        assert!(sinks[1].sink_name().starts_with("slack-"));
        assert_ne!(sinks[0].sink_name(), sinks[1].sink_name());
    }

    #[test]
    fn bad_sinks_are_refused_naming_what_is_wrong() {
        let sink = |body: &str| parse(&format!("[[notify]]\n{body}\n")).unwrap_err();
        let e = sink("kind = \"email\"\nurl = \"http://x\"");
        assert!(e.contains("unknown variant `email`") && e.contains("webhook") && e.contains("line 2"), "{e}");
        let e = sink("kind = \"webhook\"\nurl = \"ftp://x\"");
        assert!(e.contains("must start with https:// or http://"), "{e}");
        assert!(parse("[[notify]]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\n").is_ok());
        let e = sink("kind = \"webhook\"\nurl = \"http:///hook\"");
        assert!(e.contains("no host"), "{e}");
        let e = sink("kind = \"webhook\"\nurl = \"http://x\"\nsecret = \"short\"");
        assert!(e.contains("at least 16 characters") && e.contains("line 4"), "{e}");
        let e = sink("kind = \"webhook\"\nurl = \"http://x\"\nevents = [\"rolledback\"]");
        assert!(e.contains("unknown event \"rolledback\"") && e.contains("rolled_back"), "{e}");
        let e = sink("kind = \"slack\"\nurl = \"http://x\"\nsecret = \"0123456789abcdef\"");
        assert!(e.contains("takes no secret"), "{e}");
        let e = sink("kind = \"webhook\"\nurl = \"http://x\"\nurl2 = 1");
        assert!(e.contains("unknown field `url2`"), "{e}");
    }

    #[test]
    fn two_sinks_with_one_name_are_refused() {
        let one = "[[notify]]\nkind = \"webhook\"\nurl = \"http://x/a\"\n";
        let e = parse(&format!("{one}{one}")).unwrap_err();
        assert!(e.contains("same name"), "{e}");
    }
}
