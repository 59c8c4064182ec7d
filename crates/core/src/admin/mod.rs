//! The admin listener's settings (`[admin]`) and its access rules: which tokens allow what
//! ([`tokens`]), which `Host` names and page origins it answers ([`origin`]), and its limits.
//! `docs/security.md` describes them for operators.

pub mod origin;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, HumanDuration};
pub use origin::{AllowedHosts, HostName, is_foreign_fetch};
pub use tokens::{Refusal, Role, Tokens, constant_time_eq};

/// Default time a client has to send a request head.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a keep-alive connection may wait for its next request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default number of live-feed sockets open at once.
pub const DEFAULT_MAX_FEED_CONNECTIONS: usize = 64;

/// `[admin]`: the API, the dashboard, `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token that allows everything; required when `listen` is not loopback.
    pub token: Option<String>,
    /// File holding the admin token (trailing whitespace ignored).
    pub token_file: Option<PathBuf>,
    /// Bearer token that allows reading only (`GET` endpoints, the live feed).
    pub read_token: Option<String>,
    /// File holding the read token.
    pub read_token_file: Option<PathBuf>,
    /// Bearer token `/metrics` needs (the admin and read tokens open it too).
    pub metrics_token: Option<String>,
    /// File holding the metrics token.
    pub metrics_token_file: Option<PathBuf>,
    /// Host names the listener answers to besides the loopback names and its own address.
    #[serde(default)]
    pub allowed_hosts: Vec<HostName>,
    /// Time a client has to send a request head, from its connection or its first byte; a
    /// request body gets as long again, from the end of its head.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// Time a keep-alive connection may wait for its next request.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Live-feed sockets open at once; more upgrades are answered `503`.
    #[serde(default = "default_max_feed_connections")]
    pub max_feed_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_listen(),
            token: None,
            token_file: None,
            read_token: None,
            read_token_file: None,
            metrics_token: None,
            metrics_token_file: None,
            allowed_hosts: Vec::new(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_feed_connections: default_max_feed_connections(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}
fn default_header_read_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_HEADER_READ_TIMEOUT)
}
fn default_idle_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_IDLE_TIMEOUT)
}
fn default_max_feed_connections() -> usize {
    DEFAULT_MAX_FEED_CONNECTIONS
}

impl AdminConfig {
    /// The rules across the section's keys.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("[admin]: {m}")));
        for (inline, file, key) in [
            (self.token.is_some(), self.token_file.is_some(), "token"),
            (self.read_token.is_some(), self.read_token_file.is_some(), "read_token"),
            (self.metrics_token.is_some(), self.metrics_token_file.is_some(), "metrics_token"),
        ] {
            if inline && file {
                return invalid(&format!("set {key} or {key}_file, not both"));
            }
        }
        let has_token = self.token.is_some() || self.token_file.is_some();
        if !self.listen.ip().is_loopback() && !has_token {
            return invalid(&format!("listen {} is not loopback, so token or token_file is required", self.listen));
        }
        if !has_token && (self.read_token.is_some() || self.read_token_file.is_some()) {
            return invalid("read_token needs token or token_file: without an admin token the API is open to all");
        }
        if self.read_token.is_some() && self.read_token == self.token {
            return invalid("read_token must differ from token");
        }
        let between = |d: HumanDuration, min: Duration, max: Duration| d.0 >= min && d.0 <= max;
        if !between(self.header_read_timeout, Duration::from_secs(1), Duration::from_secs(300)) {
            return invalid("header_read_timeout must be between 1s and 5m");
        }
        if !between(self.idle_timeout, Duration::from_secs(1), Duration::from_secs(3600)) {
            return invalid("idle_timeout must be between 1s and 1h");
        }
        if !(1..=10_000).contains(&self.max_feed_connections) {
            return invalid("max_feed_connections must be between 1 and 10000");
        }
        Ok(())
    }
}

/// What the admin router checks on every request, built from `[admin]` and its token files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The configured tokens.
    pub tokens: Tokens,
    /// The names the listener answers to.
    pub hosts: AllowedHosts,
    /// Live-feed sockets open at once.
    pub max_feed_connections: usize,
    /// Time a request body has to arrive.
    pub body_timeout: Duration,
}

impl Default for Access {
    /// No token, the loopback names, the default limits.
    fn default() -> Self {
        Access {
            tokens: Tokens::default(),
            hosts: AllowedHosts::default(),
            max_feed_connections: DEFAULT_MAX_FEED_CONNECTIONS,
            body_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

impl Access {
    /// The access rules of `config` with the `tokens` read from it.
    pub fn new(config: &AdminConfig, tokens: Tokens) -> Access {
        Access {
            tokens,
            hosts: AllowedHosts::new(config.listen, &config.allowed_hosts),
            max_feed_connections: config.max_feed_connections,
            body_timeout: config.header_read_timeout.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error(admin: &str) -> String {
        Config::from_toml(&format!("[admin]\n{admin}\n")).unwrap_err().to_string()
    }

    #[test]
    fn the_defaults_are_loopback_without_tokens_and_the_documented_limits() {
        let config = Config::from_toml("").unwrap().admin;
        assert_eq!(config.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(config.header_read_timeout.0.as_secs(), 10);
        assert_eq!(config.idle_timeout.0.as_secs(), 60);
        assert_eq!(config.max_feed_connections, 64);
    }

    #[test]
    fn a_bad_allowed_host_names_the_key_and_line() {
        let e = error("listen = \"127.0.0.1:7070\"\nallowed_hosts = [\"ok.example\", \"http://bad.example\"]");
        assert!(e.contains("allowed_hosts") && e.contains("line 3") && e.contains("http://bad.example"), "{e}");
    }

    #[test]
    fn tokens_and_limits_are_checked_across_keys() {
        assert!(error("read_token = \"r\"").contains("read_token needs token"));
        assert!(error("token = \"same\"\nread_token = \"same\"").contains("must differ"));
        assert!(error("token = \"a\"\nread_token = \"r\"\nread_token_file = \"/x\"").contains("not both"));
        assert!(error("metrics_token = \"m\"\nmetrics_token_file = \"/x\"").contains("not both"));
        assert!(error("header_read_timeout = \"10ms\"").contains("header_read_timeout"));
        assert!(error("idle_timeout = \"2h\"").contains("idle_timeout"));
        assert!(error("max_feed_connections = 0").contains("max_feed_connections"));
        assert!(error("listen = \"0.0.0.0:7070\"").contains("token"));
        assert!(Config::from_toml("[admin]\nmetrics_token = \"m\"\n").is_ok(), "metrics alone may be guarded");
    }
}
