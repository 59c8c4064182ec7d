//! The configuration file (`canary.toml`): raw serde types checked as they are read.
//!
//! Every value type validates itself while it is deserialized, so an error names the key and
//! the line it came from (`toml` attaches the span). Checks that span several keys (duplicate
//! service names, a non-loopback admin listener without a token) run afterwards and name the
//! service and key instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::admin::AdminConfig;
use crate::gate::{GateConfig, check_gates};
use crate::names;
use crate::team::{TeamMetric, check_team_metrics};
use crate::weight::Weight;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Settings shared by every gateway listener.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// Where rollouts, events and routing are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// The rollout controller.
    #[serde(default)]
    pub controller: ControllerConfig,
    /// Where the judge reads the per-version counters.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The services, one gateway listener each.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
    /// Where rollout events are sent (`[[notify]]`, see [`crate::notify`]).
    #[serde(default)]
    pub notify: Vec<crate::notify::SinkConfig>,
}

/// `[store]`: an embedded database file (default) or etcd.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum StoreConfig {
    /// `kind = "embedded"`: one redb file; a relative path is relative to the config file.
    Embedded {
        /// The database file.
        #[serde(default = "default_store_path")]
        path: PathBuf,
    },
    /// `kind = "etcd"`: several gateways and controllers share an etcd cluster.
    Etcd {
        /// `http://host:port` endpoints.
        endpoints: Vec<String>,
        /// The etcd user to authenticate as, when etcd has authentication enabled.
        #[serde(default)]
        username: Option<String>,
        /// That user's password, inline…
        #[serde(default)]
        password: Option<String>,
        /// …or in a file (trailing whitespace ignored).
        #[serde(default)]
        password_file: Option<PathBuf>,
        /// The CA that signed etcd's server certificates, for `https://` endpoints (default:
        /// the system's roots).
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// A client certificate for etcd's `--client-cert-auth` (PEM), with `key_file`.
        #[serde(default)]
        cert_file: Option<PathBuf>,
        /// The client certificate's private key (PEM).
        #[serde(default)]
        key_file: Option<PathBuf>,
    },
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Embedded { path: default_store_path() }
    }
}

/// An etcd store's endpoints and user: at least one endpoint, and a password for a user.
fn check_etcd(endpoints: &[String], username: Option<&str>, has_password: bool) -> Result<(), ConfigError> {
    if endpoints.is_empty() {
        return Err(ConfigError::Invalid("[store]: kind \"etcd\" needs at least one endpoint".into()));
    }
    match (username, has_password) {
        (Some(""), _) => Err(ConfigError::Invalid("[store]: username must not be empty".into())),
        (Some(_), false) => Err(ConfigError::Invalid("[store]: username needs password or password_file".into())),
        (None, true) => Err(ConfigError::Invalid("[store]: password needs a username".into())),
        _ => Ok(()),
    }
}

/// An etcd store's TLS: every endpoint `https://` or none, TLS files only for `https://`, and a
/// client certificate with its key.
fn check_etcd_tls(endpoints: &[String], ca: bool, (cert, key): (bool, bool)) -> Result<(), ConfigError> {
    let https = endpoints.iter().filter(|e| e.starts_with("https://")).count();
    if https != 0 && https != endpoints.len() {
        return Err(ConfigError::Invalid("[store]: endpoints must be all https:// or all http://".into()));
    }
    if https == 0 && (ca || cert || key) {
        return Err(ConfigError::Invalid("[store]: ca_file, cert_file and key_file need https:// endpoints".into()));
    }
    if cert != key {
        return Err(ConfigError::Invalid("[store]: cert_file and key_file go together".into()));
    }
    Ok(())
}

fn default_store_path() -> PathBuf {
    PathBuf::from("canary-data/canary.redb")
}

/// `[metrics]`: the judge's counters come from this process's gateway (default) or from a
/// Prometheus server that scrapes every gateway.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "source", rename_all = "lowercase")]
pub enum MetricsConfig {
    /// `source = "local"`: the gateway in this process.
    #[default]
    Local,
    /// `source = "prometheus"`: raw counter values scraped from every gateway.
    Prometheus {
        /// Base URL of the Prometheus server, e.g. `http://127.0.0.1:9090`.
        url: String,
        /// Its scrape interval for the gateways: queries are aligned to it.
        #[serde(default = "default_scrape_interval")]
        scrape_interval: HumanDuration,
    },
}

fn default_scrape_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

/// `[controller]`: how rollouts are driven.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// How often the judge looks at the data.
    #[serde(default = "default_tick")]
    pub tick: HumanDuration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig { tick: default_tick() }
    }
}

fn default_tick() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

/// `[gateway]`: settings of the data plane as a whole.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Worker threads, each with its own runtime and listener socket; default: one per CPU.
    pub workers: Option<usize>,
    /// Secret that signs session pins; every gateway of a fleet must share it.
    pub pin_secret: Option<String>,
    /// File holding the pin secret.
    pub pin_secret_file: Option<PathBuf>,
    /// Whether responses carry `x-canary-version` back to the client.
    #[serde(default = "yes")]
    pub version_header_in_response: bool,
    /// How long `SIGTERM` waits for in-flight requests before exiting.
    #[serde(default = "default_drain_timeout")]
    pub shutdown_timeout: HumanDuration,
    /// Time a client has to send a complete request head: a new connection its first one
    /// from the moment it is accepted, a kept-alive one from the head's first byte.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// Time a client connection with no request in flight waits for its next one (HTTP/1.1
    /// keep-alive and HTTP/2 alike).
    #[serde(default = "default_client_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Time a TLS client has to finish its handshake.
    #[serde(default = "default_tls_handshake_timeout")]
    pub tls_handshake_timeout: HumanDuration,
    /// How often an HTTP/2 connection that has been quiet this long is pinged.
    #[serde(default = "default_http2_keepalive_interval")]
    pub http2_keepalive_interval: HumanDuration,
    /// How long an HTTP/2 ping may go unanswered before its connection is closed.
    #[serde(default = "default_http2_keepalive_timeout")]
    pub http2_keepalive_timeout: HumanDuration,
    /// Client connections open at once over all workers; beyond it idle ones are closed to
    /// make room, else new ones are refused. Default: what the descriptor limit allows.
    pub max_connections: Option<usize>,
    /// Where `canary serve` answers `canary serve --take-over` (a Unix socket; a relative path
    /// is relative to the config file). Default: `handover.sock` beside the embedded store's
    /// file, or `canary-data/handover.sock` beside the config with etcd.
    pub handover_socket: Option<PathBuf>,
}

/// `[[service]]`: one proxied service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Service name (letters, digits, `_`, `-`).
    pub name: ServiceName,
    /// Address the gateway listens on for this service.
    pub listen: SocketAddr,
    /// Where the user key comes from, first present wins; else the anonymous cookie.
    #[serde(default = "default_user_key")]
    pub user_key: Vec<KeySource>,
    /// Client networks whose `x-canary-force` header is honoured.
    #[serde(default)]
    pub trusted_cidrs: Vec<Cidr>,
    /// A token that, sent as `x-canary-force-token`, makes `x-canary-force` trusted from anywhere.
    pub force_token: Option<ForceToken>,
    /// Protocols a client may switch to through the gateway (`Upgrade`), tunnelled to the
    /// upstream; a request to switch to any other is forwarded as a plain request.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<UpgradeProtocol>,
    /// Inactivity after which a session pin lapses (a sliding window).
    #[serde(default = "default_pin_ttl")]
    pub pin_ttl: HumanDuration,
    /// After a rollback or an abort, how long the pages the canary already served may still
    /// load their chunks and data from it (their next page load goes to stable); 0 = none.
    #[serde(default = "default_rollback_grace")]
    pub rollback_grace: HumanDuration,
    /// A fixed bucket salt, to keep one early-adopter cohort across rollouts.
    pub salt: Option<String>,
    /// The stable version.
    pub stable: VersionConfig,
    /// The canary, if one is deployed at start.
    pub canary: Option<VersionConfig>,
    /// Percent of users on the canary, 0..=100 in 0.01 steps.
    #[serde(default)]
    pub weight: Weight,
    /// Time allowed to open a connection to an upstream.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Time allowed from sending a request upstream to receiving its response head.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// Idle upstream connections are closed after this long.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Passive ejection of failing upstream addresses.
    #[serde(default)]
    pub eject: EjectConfig,
    /// TLS for client connections (HTTP/1.1 and HTTP/2 through ALPN).
    pub tls: Option<TlsConfig>,
    /// The local breaker that stops traffic to a failing canary at once.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// The team's own metrics, judged in every rollout of the service unless the rollout
    /// names its own (`[[service.metric]]`, see [`crate::team`]).
    #[serde(default, rename = "metric")]
    pub metrics: Vec<TeamMetric>,
    /// Release gates: the team's own checks before a rollout moves on (`[[service.gate]]`,
    /// see [`crate::gate`]).
    #[serde(default, rename = "gate")]
    pub gates: Vec<GateConfig>,
}

/// `breaker = { window = "10s", min_requests = 20, error_ratio = 0.25, stable_factor = 5,
/// connect_failures = 5 }`: when the canary fails hard, each gateway stops sending it requests
/// on its own, without waiting for the controller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Whether the breaker runs at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The sliding window the ratios are measured over.
    #[serde(default = "default_breaker_window")]
    pub window: HumanDuration,
    /// Canary requests needed in the window before its error ratio can trip the breaker.
    #[serde(default = "default_breaker_min_requests")]
    pub min_requests: u64,
    /// Canary error ratio (5xx and refused connections) at or above which it trips...
    #[serde(default = "default_breaker_error_ratio")]
    pub error_ratio: f64,
    /// ...provided it is also this many times stable's ratio in the same window.
    #[serde(default = "default_breaker_stable_factor")]
    pub stable_factor: f64,
    /// Refused or failed canary connections in the window, with no canary response at all,
    /// that trip it.
    #[serde(default = "default_breaker_connect_failures")]
    pub connect_failures: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            window: default_breaker_window(),
            min_requests: default_breaker_min_requests(),
            error_ratio: default_breaker_error_ratio(),
            stable_factor: default_breaker_stable_factor(),
            connect_failures: default_breaker_connect_failures(),
        }
    }
}

fn default_breaker_window() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_breaker_min_requests() -> u64 {
    20
}
fn default_breaker_error_ratio() -> f64 {
    0.25
}
fn default_breaker_stable_factor() -> f64 {
    5.0
}
fn default_breaker_connect_failures() -> u64 {
    5
}

/// A version and the addresses that serve it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    /// Version name, sent upstream as `x-canary-version`.
    pub version: VersionName,
    /// `host:port` addresses, balanced round robin.
    pub upstreams: Upstreams,
}

/// `eject = { failures = 5, duration = "10s" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EjectConfig {
    /// Consecutive connection failures or timeouts that eject an address.
    #[serde(default = "default_eject_failures")]
    pub failures: u32,
    /// How long an ejected address is skipped.
    #[serde(default = "default_eject_duration")]
    pub duration: HumanDuration,
}

impl Default for EjectConfig {
    fn default() -> Self {
        EjectConfig { failures: default_eject_failures(), duration: default_eject_duration() }
    }
}

/// `tls = { cert = "cert.pem", key = "key.pem" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            workers: None,
            pin_secret: None,
            pin_secret_file: None,
            version_header_in_response: true,
            shutdown_timeout: default_drain_timeout(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_client_idle_timeout(),
            tls_handshake_timeout: default_tls_handshake_timeout(),
            http2_keepalive_interval: default_http2_keepalive_interval(),
            http2_keepalive_timeout: default_http2_keepalive_timeout(),
            max_connections: None,
            handover_socket: None,
        }
    }
}

/// The longest `rollback_grace`: beyond it a rolled-back canary serves open pages for longer than
/// anyone keeps a page open without a navigation.
const MAX_ROLLBACK_GRACE: Duration = Duration::from_secs(3600);

impl GatewayConfig {
    /// The rules of the section's limits and timeouts.
    fn check(&self) -> Result<(), ConfigError> {
        let secs = Duration::from_secs;
        let bounds = [
            (self.header_read_timeout, "header_read_timeout", secs(1), secs(300), "1s and 5m"),
            (self.idle_timeout, "idle_timeout", secs(1), secs(3600), "1s and 1h"),
            (self.tls_handshake_timeout, "tls_handshake_timeout", Duration::from_millis(100), secs(60), "100ms and 1m"),
            (self.http2_keepalive_interval, "http2_keepalive_interval", secs(1), secs(3600), "1s and 1h"),
            (self.http2_keepalive_timeout, "http2_keepalive_timeout", secs(1), secs(300), "1s and 5m"),
        ];
        for (value, key, min, max, range) in bounds {
            if value.0 < min || value.0 > max {
                return Err(ConfigError::Invalid(format!("[gateway]: {key} must be between {range}")));
            }
        }
        if self.max_connections == Some(0) {
            return Err(ConfigError::Invalid("[gateway]: max_connections must be at least 1".into()));
        }
        if self.workers == Some(0) {
            return Err(ConfigError::Invalid("[gateway]: workers must be at least 1".into()));
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}
fn default_user_key() -> Vec<KeySource> {
    vec![KeySource::Header("x-user-id".into()), KeySource::Cookie("uid".into())]
}
fn default_upgrades() -> Vec<UpgradeProtocol> {
    vec![UpgradeProtocol("websocket".into())]
}
fn default_pin_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 60))
}
fn default_rollback_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(5 * 60))
}
fn default_drain_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_header_read_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_client_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_tls_handshake_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_http2_keepalive_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(20))
}
fn default_http2_keepalive_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(20))
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_eject_failures() -> u32 {
    5
}
fn default_eject_duration() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// A duration written the human way: `"30m"`, `"2s"`, `"1h 30m"`, `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration(pub Duration);

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| format!("{s:?} is not a duration like \"30s\", \"5m\" or \"1h\": {e}"))
    }
}

impl From<HumanDuration> for String {
    fn from(d: HumanDuration) -> String {
        humantime::format_duration(d.0).to_string()
    }
}

/// A service name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

impl TryFrom<String> for ServiceName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        names::check_id(&s, "service").map(|()| ServiceName(s))
    }
}

impl From<ServiceName> for String {
    fn from(n: ServiceName) -> String {
        n.0
    }
}

impl ServiceName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A version name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct VersionName(String);

impl TryFrom<String> for VersionName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        names::check_version(&s).map(|()| VersionName(s))
    }
}

impl From<VersionName> for String {
    fn from(n: VersionName) -> String {
        n.0
    }
}

impl VersionName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A non-empty list of `host:port` upstream addresses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Upstreams(Vec<String>);

impl TryFrom<Vec<String>> for Upstreams {
    type Error = String;
    fn try_from(list: Vec<String>) -> Result<Self, Self::Error> {
        if list.is_empty() {
            return Err("upstreams must list at least one \"host:port\" address".into());
        }
        for addr in &list {
            check_host_port(addr)?;
        }
        Ok(Upstreams(list))
    }
}

impl From<Upstreams> for Vec<String> {
    fn from(u: Upstreams) -> Vec<String> {
        u.0
    }
}

impl Upstreams {
    /// The addresses.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

fn check_host_port(addr: &str) -> Result<(), String> {
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("upstream {addr:?} is not a \"host:port\" address");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if host_ok { Ok(()) } else { Err(bad()) }
}

/// Where a user key is read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum KeySource {
    /// A request header (lower-case name).
    Header(String),
    /// A cookie.
    Cookie(String),
}

impl TryFrom<String> for KeySource {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let token = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        match s.split_once(':') {
            Some(("header", name)) if token(name) => Ok(KeySource::Header(name.to_ascii_lowercase())),
            Some(("cookie", name)) if token(name) => Ok(KeySource::Cookie(name.to_owned())),
            _ => Err(format!("user key source {s:?} must be \"header:NAME\" or \"cookie:NAME\"")),
        }
    }
}

impl From<KeySource> for String {
    fn from(k: KeySource) -> String {
        match k {
            KeySource::Header(n) => format!("header:{n}"),
            KeySource::Cookie(n) => format!("cookie:{n}"),
        }
    }
}

/// The override token: at least [`ForceToken::MIN_CHARS`] visible ASCII characters, since it
/// lets anyone who knows it choose a version from anywhere.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ForceToken(String);

impl ForceToken {
    /// The shortest token accepted.
    pub const MIN_CHARS: usize = 16;

    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ForceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForceToken(..)")
    }
}

impl TryFrom<String> for ForceToken {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        // Header values lose surrounding spaces and cannot hold control bytes: such a token
        // could never match, so it is refused rather than silently useless.
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("force_token must be visible ASCII characters, without spaces".into());
        }
        if s.len() < ForceToken::MIN_CHARS {
            return Err(format!(
                "force_token must be at least {} characters (it has {}): it makes x-canary-force trusted from anywhere",
                ForceToken::MIN_CHARS,
                s.len()
            ));
        }
        Ok(ForceToken(s))
    }
}

/// A protocol name of the `Upgrade` header (`websocket`), kept in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct UpgradeProtocol(String);

impl UpgradeProtocol {
    /// The protocol name, lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UpgradeProtocol {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        // RFC 9110 §5.6.2 token characters; a version (`name/1`) is not part of the name.
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if s.is_empty() || !s.bytes().all(tchar) {
            return Err(format!("upgrade protocol {s:?} must be a protocol name like \"websocket\""));
        }
        let name = s.to_ascii_lowercase();
        if name == "h2c" {
            // An HTTP/2 connection tunnelled raw would carry every later request past routing,
            // pins and metrics; clients that want HTTP/2 get it from the gateway itself.
            return Err("upgrade protocol \"h2c\" cannot be tunnelled: the gateway speaks HTTP/2 itself".into());
        }
        Ok(UpgradeProtocol(name))
    }
}

/// A client network, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr(pub ipnet::IpNet);

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(Cidr(net));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| Cidr(ipnet::IpNet::from(ip)))
            .map_err(|_| format!("{s:?} is not a network like \"10.0.0.0/8\" or an address"))
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.0.to_string()
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML did not parse or a value was invalid; the message names key and line.
    #[error(transparent)]
    Parse(#[from] toml::de::Error),
    /// A rule across several keys failed.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Parses and checks a configuration file's text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    /// Reads, parses and checks a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml(&text)
    }

    /// The checks that span several keys.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut seen_names = std::collections::HashSet::new();
        let mut seen_listens = std::collections::HashMap::new();
        seen_listens.insert(self.admin.listen, "[admin]".to_owned());
        for s in &self.services {
            let name = s.name.as_str();
            if !seen_names.insert(name) {
                return invalid(format!("service {name:?} is defined twice"));
            }
            if s.listen.port() != 0
                && let Some(other) = seen_listens.insert(s.listen, format!("service {name:?}"))
            {
                return invalid(format!("service {name:?}: listen {} is already used by {other}", s.listen));
            }
            if let Some(canary) = &s.canary
                && canary.version == s.stable.version
            {
                return invalid(format!("service {name:?}: canary.version must differ from stable.version"));
            }
            if s.canary.is_none() && s.weight != Weight::ZERO {
                return invalid(format!("service {name:?}: weight {} needs a [service.canary]", s.weight));
            }
            if let Some(salt) = &s.salt {
                names::check_id(salt, "salt").map_err(ConfigError::Invalid)?;
            }
            if s.pin_ttl.0 < Duration::from_secs(60) {
                return invalid(format!("service {name:?}: pin_ttl must be at least 1m"));
            }
            if s.rollback_grace.0 > MAX_ROLLBACK_GRACE {
                return invalid(format!(
                    "service {name:?}: rollback_grace must be at most 1h (a rolled-back canary keeps serving open pages that long)"
                ));
            }
            let b = &s.breaker;
            if !(b.error_ratio > 0.0 && b.error_ratio <= 1.0) || b.stable_factor < 1.0 || b.min_requests == 0 {
                return invalid(format!(
                    "service {name:?}: breaker needs 0 < error_ratio <= 1, stable_factor >= 1, min_requests >= 1"
                ));
            }
            if b.window.0 < Duration::from_secs(1) {
                return invalid(format!("service {name:?}: breaker.window must be at least 1s"));
            }
            if s.eject.failures == 0 {
                return invalid(format!("service {name:?}: eject.failures must be at least 1"));
            }
            check_team_metrics(&s.metrics, self.prometheus_url().is_some())
                .map_err(|e| ConfigError::Invalid(format!("service {name:?}: {e}")))?;
            check_gates(&s.gates).map_err(|e| ConfigError::Invalid(format!("service {name:?}: {e}")))?;
        }
        self.admin.check()?;
        if self.gateway.pin_secret.is_some() && self.gateway.pin_secret_file.is_some() {
            return invalid("[gateway]: set pin_secret or pin_secret_file, not both".into());
        }
        self.check_store()?;
        self.check_metrics_source()?;
        if self.controller.tick.0 < Duration::from_millis(50) || self.controller.tick.0 > Duration::from_secs(60) {
            return invalid("[controller]: tick must be between 50ms and 1m".into());
        }
        crate::notify::check_sinks(&self.notify).map_err(ConfigError::Invalid)?;
        self.gateway.check()
    }

    /// `[store]`: an etcd store's endpoints, credentials and TLS, and a pin secret kept out of it.
    fn check_store(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        let StoreConfig::Etcd { endpoints, username, password, password_file, ca_file, cert_file, key_file } =
            &self.store
        else {
            return Ok(());
        };
        check_etcd(endpoints, username.as_deref(), password.is_some() || password_file.is_some())?;
        check_etcd_tls(endpoints, ca_file.is_some(), (cert_file.is_some(), key_file.is_some()))?;
        if password.is_some() && password_file.is_some() {
            return invalid("[store]: set password or password_file, not both");
        }
        if self.gateway.pin_secret.is_none() && self.gateway.pin_secret_file.is_none() {
            return invalid(
                "[store]: kind \"etcd\" needs [gateway] pin_secret or pin_secret_file (the same on every node): \
                 a secret kept in etcd could be read by anyone who reaches etcd, and used to forge pins",
            );
        }
        Ok(())
    }

    /// `[metrics]`: a Prometheus URL and a scrape interval it can keep.
    fn check_metrics_source(&self) -> Result<(), ConfigError> {
        if let MetricsConfig::Prometheus { url, scrape_interval } = &self.metrics {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "[metrics]: url {url:?} must start with http:// or https://"
                )));
            }
            if scrape_interval.0 < Duration::from_millis(100) {
                return Err(ConfigError::Invalid("[metrics]: scrape_interval must be at least 100ms".into()));
            }
        }
        Ok(())
    }

    /// The Prometheus of `[metrics] source = "prometheus"`, which team metrics ask unless
    /// they name their own.
    pub fn prometheus_url(&self) -> Option<&str> {
        match &self.metrics {
            MetricsConfig::Prometheus { url, .. } => Some(url),
            MetricsConfig::Local => None,
        }
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[admin]
listen = "127.0.0.1:7070"

[[service]]
name = "web"
listen = "127.0.0.1:8080"
user_key = ["header:x-user-id", "cookie:uid"]
trusted_cidrs = ["10.0.0.0/8", "127.0.0.1"]
pin_ttl = "30m"
stable = { version = "v1", upstreams = ["127.0.0.1:9001"] }
canary = { version = "v2", upstreams = ["127.0.0.1:9002", "backend.internal:80"] }
weight = 12.5
"#;

    #[test]
    fn the_documented_example_parses() {
        let c = Config::from_toml(GOOD).unwrap();
        let s = &c.services[0];
        assert_eq!(s.weight.basis_points(), 1250);
        assert_eq!(s.pin_ttl.0, Duration::from_secs(1800));
        assert_eq!(s.user_key[1], KeySource::Cookie("uid".into()));
        assert_eq!(s.canary.as_ref().unwrap().upstreams.as_slice().len(), 2);
    }

    fn error(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn rollback_grace_defaults_to_five_minutes_and_is_bounded() {
        assert_eq!(Config::from_toml(GOOD).unwrap().services[0].rollback_grace.0, Duration::from_secs(300));
        let with =
            |grace: &str| GOOD.replace("pin_ttl = \"30m\"", &format!("pin_ttl = \"30m\"\nrollback_grace = {grace:?}"));
        assert_eq!(Config::from_toml(&with("0s")).unwrap().services[0].rollback_grace.0, Duration::ZERO);
        assert!(error(&with("2h")).contains("rollback_grace must be at most 1h"), "{}", error(&with("2h")));
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let e = error(&GOOD.replace("pin_ttl", "pin_tll"));
        assert!(e.contains("pin_tll") && e.contains("line 10"), "{e}");
    }

    #[test]
    fn bad_values_name_the_line() {
        let e = error(&GOOD.replace("weight = 12.5", "weight = 150"));
        assert!(e.contains("out of range") && e.contains("line 13"), "{e}");
        let e = error(&GOOD.replace("\"30m\"", "\"soon\""));
        assert!(e.contains("soon") && e.contains("line 10"), "{e}");
        let e = error(&GOOD.replace("127.0.0.1:9001", "nowhere"));
        assert!(e.contains("nowhere") && e.contains("line 11"), "{e}");
        let e = error(&GOOD.replace("header:x-user-id", "query:u"));
        assert!(e.contains("query:u") && e.contains("line 8"), "{e}");
    }

    const TEAM_METRICS: &str = r#"
[[service.metric]]
name = "checkout_success"
kind = "ratio"
direction = "higher-is-better"
events = 'sum(shop_checkouts_total{service="{service}",version="{version}",outcome="ok"})'
trials = 'sum(shop_checkouts_total{service="{service}",version="{version}"})'
worse_above = 1.5
prometheus = "http://127.0.0.1:9090"

[[service.metric]]
name = "checkout_p99"
kind = "value"
direction = "lower-is-better"
query = 'histogram_quantile(0.99, sum by (le) (rate(shop_checkout_seconds_bucket{version="{version}"}[5m])))'
margin = 0.2
observe = true
prometheus = "http://127.0.0.1:9090"
"#;

    #[test]
    fn a_short_or_empty_force_token_names_the_key_and_line() {
        for token in ["", "short-token", "fifteen-chars!!", "with space in it 1234"] {
            let e = error(&GOOD.replace("pin_ttl = \"30m\"", &format!("pin_ttl = \"30m\"\nforce_token = {token:?}")));
            assert!(e.contains("force_token must be") && e.contains("line 11"), "{token:?}: {e}");
        }
        let ok = GOOD.replace("pin_ttl = \"30m\"", "pin_ttl = \"30m\"\nforce_token = \"sixteen-chars-ok\"");
        let c = Config::from_toml(&ok).unwrap();
        assert_eq!(c.services[0].force_token.as_ref().unwrap().as_str(), "sixteen-chars-ok");
    }

    #[test]
    fn upgrades_default_to_websocket_and_bad_names_name_the_line() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.services[0].upgrades, vec![UpgradeProtocol("websocket".into())]);
        let with = |list: &str| GOOD.replace("pin_ttl = \"30m\"", &format!("pin_ttl = \"30m\"\nupgrades = {list}"));
        let c = Config::from_toml(&with("[\"WebSocket\", \"my-proto\"]")).unwrap();
        let names: Vec<&str> = c.services[0].upgrades.iter().map(UpgradeProtocol::as_str).collect();
        assert_eq!(names, ["websocket", "my-proto"]);
        assert!(Config::from_toml(&with("[]")).unwrap().services[0].upgrades.is_empty());
        for bad in ["[\"h2c\"]", "[\"\"]", "[\"web socket\"]", "[\"websocket/13\"]"] {
            let e = error(&with(bad));
            assert!(e.contains("upgrade protocol") && e.contains("line 11"), "{bad}: {e}");
        }
    }

    #[test]
    fn team_metrics_are_read_per_service() {
        let c = Config::from_toml(&format!("{GOOD}{TEAM_METRICS}")).unwrap();
        let metrics = &c.services[0].metrics;
        assert_eq!(metrics.len(), 2);
        assert_eq!((metrics[0].name(), metrics[0].worse_above), ("checkout_success", Some(1.5)));
        assert_eq!((metrics[1].margin, metrics[1].observe), (Some(0.2), true));
        assert_eq!(c.prometheus_url(), None);
    }

    #[test]
    fn team_metric_values_name_the_key_and_line() {
        let text = format!("{GOOD}{TEAM_METRICS}");
        let e = error(&text.replace("worse_above = 1.5", "worse_above = 0.5"));
        assert!(e.contains("worse_above must be between 1 and 20") && e.contains("line 21"), "{e}");
        let e = error(&text.replace("version=\"{version}\",outcome", "version=\"{verison}\",outcome"));
        assert!(e.contains("unknown placeholder {verison}") && e.contains("line 19"), "{e}");
        let e = error(&text.replace("margin = 0.2", "margn = 0.2"));
        assert!(e.contains("margn") && e.contains("line 29"), "{e}");
    }

    #[test]
    fn team_metric_rules_across_keys_name_the_service_and_metric() {
        let text = format!("{GOOD}{TEAM_METRICS}");
        let e = error(&text.replace("margin = 0.2\n", ""));
        assert_eq!(e, "service \"web\": metric \"checkout_p99\": kind = \"value\" needs `margin`");
        let e = error(&text.replace("prometheus = \"http://127.0.0.1:9090\"\n", ""));
        assert!(e.contains("service \"web\": metric \"checkout_success\": no Prometheus to ask"), "{e}");
        let shared = format!(
            "{}\n[metrics]\nsource = \"prometheus\"\nurl = \"http://127.0.0.1:9090\"\n",
            text.replace("prometheus = \"http://127.0.0.1:9090\"\n", "")
        );
        assert!(Config::from_toml(&shared).is_ok(), "the [metrics] Prometheus is the default");
    }

    #[test]
    fn gateway_limits_default_and_are_bounded() {
        let g = Config::from_toml(GOOD).unwrap().gateway;
        let secs = |d: HumanDuration| d.0.as_secs();
        assert_eq!((secs(g.header_read_timeout), secs(g.idle_timeout), secs(g.tls_handshake_timeout)), (30, 60, 10));
        assert_eq!((secs(g.http2_keepalive_interval), secs(g.http2_keepalive_timeout)), (20, 20));
        assert_eq!(g.max_connections, None);
        let with = |line: &str| format!("[gateway]\n{line}\n{GOOD}");
        for (line, key) in [
            ("header_read_timeout = \"500ms\"", "header_read_timeout"),
            ("idle_timeout = \"2h\"", "idle_timeout"),
            ("tls_handshake_timeout = \"10ms\"", "tls_handshake_timeout"),
            ("http2_keepalive_interval = \"0s\"", "http2_keepalive_interval"),
            ("http2_keepalive_timeout = \"10m\"", "http2_keepalive_timeout"),
            ("max_connections = 0", "max_connections"),
            ("workers = 0", "workers"),
        ] {
            let e = error(&with(line));
            assert!(e.starts_with("[gateway]: ") && e.contains(key), "{line}: {e}");
        }
        let c = Config::from_toml(&with("max_connections = 5000\nheader_read_timeout = \"1s\"")).unwrap();
        assert_eq!((c.gateway.max_connections, c.gateway.header_read_timeout.0), (Some(5000), Duration::from_secs(1)));
    }

    #[test]
    fn cross_key_rules_name_the_service() {
        let twice = format!("{GOOD}\n{}", &GOOD[GOOD.find("[[service]]").unwrap()..].replace("8080", "8081"));
        assert!(error(&twice).contains("defined twice"));
        let same = GOOD.replace("version = \"v2\"", "version = \"v1\"");
        assert!(error(&same).contains("must differ"));
        let open = GOOD.replace("127.0.0.1:7070", "0.0.0.0:7070");
        assert!(error(&open).contains("token"));
    }

    #[test]
    fn an_etcd_store_needs_a_configured_pin_secret_and_whole_credentials() {
        let etcd = |extra: &str, gateway: &str| {
            format!("{gateway}\n[store]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n{extra}\n{GOOD}")
        };
        let secret = "[gateway]\npin_secret = \"sixteen-characters-at-least\"";
        let e = error(&etcd("", ""));
        assert!(e.contains("needs [gateway] pin_secret or pin_secret_file"), "{e}");
        assert!(Config::from_toml(&etcd("", secret)).is_ok());
        let e = error(&etcd("username = \"canary\"", secret));
        assert!(e.contains("username needs password or password_file"), "{e}");
        let e = error(&etcd("password = \"pw\"", secret));
        assert!(e.contains("password needs a username"), "{e}");
        let e = error(&etcd("username = \"canary\"\npassword = \"pw\"\npassword_file = \"/run/pw\"", secret));
        assert!(e.contains("not both"), "{e}");
        assert!(Config::from_toml(&etcd("username = \"canary\"\npassword_file = \"/run/pw\"", secret)).is_ok());
    }

    #[test]
    fn etcd_tls_needs_https_endpoints_and_a_whole_client_certificate() {
        let etcd = |endpoints: &str, extra: &str| {
            format!(
                "[gateway]\npin_secret = \"sixteen-characters-at-least\"\n[store]\nkind = \"etcd\"\nendpoints = [{endpoints}]\n{extra}\n{GOOD}"
            )
        };
        let https = "\"https://10.0.0.1:2379\", \"https://10.0.0.2:2379\"";
        assert!(Config::from_toml(&etcd(https, "ca_file = \"/etc/ca.pem\"")).is_ok());
        assert!(Config::from_toml(&etcd(https, "")).is_ok(), "the system's roots");
        let e = error(&etcd("\"https://10.0.0.1:2379\", \"http://10.0.0.2:2379\"", ""));
        assert!(e.contains("all https:// or all http://"), "{e}");
        let e = error(&etcd("\"http://10.0.0.1:2379\"", "ca_file = \"/etc/ca.pem\""));
        assert!(e.contains("need https:// endpoints"), "{e}");
        let e = error(&etcd(https, "cert_file = \"/etc/client.pem\""));
        assert!(e.contains("cert_file and key_file go together"), "{e}");
    }
}
