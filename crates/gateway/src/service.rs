//! A proxied service: its fixed settings and its current routing snapshot.
//!
//! The snapshot ([`Route`]) is immutable and swapped whole through an `ArcSwap`: a request
//! loads it once and keeps it to the end, so the version it chose, the upstreams it used and
//! the metrics it recorded all belong to one routing state. Changes are serialized by a mutex
//! (they are rare), validated, and only then swapped in.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use canary_core::api::{ServiceView, VersionView};
use canary_core::config::{KeySource, ServiceConfig, VersionConfig};
use canary_core::metrics::VersionCounts;
use canary_core::{RouteError, RouteSpec, RoutingTable, Side};
use http::HeaderValue;

use crate::metrics::{MetricsRegistry, RangeStats, VersionStats};
use crate::pool::ConnectSettings;
use crate::upstream::{EjectPolicy, UpstreamRegistry, UpstreamSet};

/// One version as the data plane uses it.
#[derive(Debug)]
pub struct VersionTarget {
    /// Its name as the `x-canary-version` header value.
    pub header: HeaderValue,
    /// Its addresses.
    pub upstreams: Arc<UpstreamSet>,
    /// Its counters.
    pub stats: Arc<VersionStats>,
    /// Its counters per cohort range, under this snapshot's salt.
    pub ranges: Arc<RangeStats>,
}

impl VersionTarget {
    /// A copy of its counters with its counters per cohort range under this snapshot's salt.
    pub fn counts_with_ranges(&self) -> VersionCounts {
        let mut counts = self.stats.counts();
        counts.cohorts.push(self.ranges.counts());
        counts
    }
}

/// One immutable routing snapshot of a service.
#[derive(Debug)]
pub struct Route {
    /// The desired state this snapshot was built from.
    pub spec: RouteSpec,
    /// The decision table.
    pub table: RoutingTable,
    /// The stable version.
    pub stable: VersionTarget,
    /// The canary, if any.
    pub canary: Option<VersionTarget>,
    /// The previous stable, while it drains.
    pub draining: Option<VersionTarget>,
    /// The rolled-back canary, while its open pages finish loading.
    pub retired: Option<VersionTarget>,
    /// The users seen in this rollout, shared by every snapshot of the same rollout id.
    pub users: Arc<crate::sketch::UserSketch>,
    /// The canary's and stable's counters when this canary first got routing in this rollout:
    /// the breaker's baseline, so failures before its first look still count.
    pub canary_since: Option<Arc<(VersionCounts, VersionCounts)>>,
}

impl Route {
    /// The target of a side; a side the table lacks falls back to stable.
    #[inline]
    pub fn target(&self, side: Side) -> &VersionTarget {
        match side {
            Side::Stable => &self.stable,
            Side::Canary => self.canary.as_ref().unwrap_or(&self.stable),
            Side::Draining => self.draining.as_ref().unwrap_or(&self.stable),
            Side::Retired => self.retired.as_ref().unwrap_or(&self.stable),
        }
    }
}

/// A user key source with its header name parsed once.
#[derive(Debug, Clone)]
pub enum KeyFrom {
    /// A request header.
    Header(http::HeaderName),
    /// A cookie.
    Cookie(String),
}

impl KeyFrom {
    fn new(source: &KeySource) -> KeyFrom {
        match source {
            KeySource::Header(name) => KeyFrom::Header(
                http::HeaderName::from_bytes(name.as_bytes()).expect("checked when the config was read"),
            ),
            KeySource::Cookie(name) => KeyFrom::Cookie(name.clone()),
        }
    }
}

/// A service's settings that do not change while it runs.
#[derive(Debug)]
pub struct ServiceSettings {
    /// Service name.
    pub name: String,
    /// Configured listen address.
    pub listen: SocketAddr,
    /// Where user keys come from, in order.
    pub key_sources: Vec<KeyFrom>,
    /// Networks whose override header is honoured.
    pub trusted: Vec<ipnet::IpNet>,
    /// Token that makes the override header trusted from anywhere.
    pub force_token: Option<String>,
    /// Session pin lifetime in seconds.
    pub pin_ttl_secs: u64,
    /// Protocols a client may switch to (`Upgrade`), lower case.
    pub upgrades: Vec<String>,
    /// Upstream connection settings.
    pub connect: ConnectSettings,
    /// Time allowed for the response head.
    pub request_timeout: Duration,
    /// Passive ejection.
    pub eject: EjectPolicy,
    /// Whether the listener speaks TLS (cookies get `Secure`).
    pub tls: bool,
    /// Whether responses carry `x-canary-version`.
    pub version_header_in_response: bool,
}

impl ServiceSettings {
    /// Whether a client at `ip` may choose its version with the override header.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

/// The registries every service builds its snapshots from.
#[derive(Debug, Default)]
pub struct Shared {
    /// Counters per version.
    pub metrics: Arc<MetricsRegistry>,
    /// One entry per upstream address.
    pub upstreams: UpstreamRegistry,
}

/// A proxied service.
#[derive(Debug)]
pub struct Service {
    /// Fixed settings.
    pub settings: ServiceSettings,
    route: ArcSwap<Route>,
    changes: Mutex<()>,
    canary_open: AtomicBool,
    trip_reason: Mutex<Option<String>>,
    breaker: canary_core::config::BreakerConfig,
    bound: OnceLock<SocketAddr>,
    shared: Arc<Shared>,
}

impl Service {
    /// A service from its configuration.
    pub fn new(config: &ServiceConfig, version_header_in_response: bool, shared: Arc<Shared>) -> Service {
        let settings = ServiceSettings {
            name: config.name.as_str().to_owned(),
            listen: config.listen,
            key_sources: config.user_key.iter().map(KeyFrom::new).collect(),
            trusted: config.trusted_cidrs.iter().map(|c| c.0).collect(),
            force_token: config.force_token.as_ref().map(|t| t.as_str().to_owned()),
            pin_ttl_secs: config.pin_ttl.0.as_secs(),
            upgrades: config.upgrades.iter().map(|p| p.as_str().to_owned()).collect(),
            connect: ConnectSettings { connect_timeout: config.connect_timeout.0, idle_timeout: config.idle_timeout.0 },
            request_timeout: config.request_timeout.0,
            eject: EjectPolicy { failures: config.eject.failures, duration: config.eject.duration.0 },
            tls: config.tls.is_some(),
            version_header_in_response,
        };
        let spec = RouteSpec::from_config(config);
        let route = build_route(&settings.name, spec, &shared, None);
        Service {
            settings,
            route: ArcSwap::from_pointee(route),
            changes: Mutex::new(()),
            canary_open: AtomicBool::new(true),
            trip_reason: Mutex::new(None),
            breaker: config.breaker.clone(),
            bound: OnceLock::new(),
            shared,
        }
    }

    /// The registries this service's snapshots draw from.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Service name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The current snapshot; hold it for the whole request.
    #[inline]
    pub fn route(&self) -> Arc<Route> {
        self.route.load_full()
    }

    /// Whether the local breaker lets requests reach the canary.
    #[inline]
    pub fn canary_open(&self) -> bool {
        self.canary_open.load(Ordering::Relaxed)
    }

    /// Closes the local breaker of the canary: requests may reach it again.
    pub fn set_canary_open(&self, open: bool) {
        if open {
            *self.trip_reason.lock().expect("breaker lock") = None;
        }
        self.canary_open.store(open, Ordering::Relaxed);
    }

    /// Trips the local breaker: no new request reaches the canary.
    pub fn trip_canary(&self, why: String) {
        *self.trip_reason.lock().expect("breaker lock") = Some(why);
        self.canary_open.store(false, Ordering::Relaxed);
    }

    /// Why the breaker tripped, while it is tripped.
    pub fn trip_reason(&self) -> Option<String> {
        self.trip_reason.lock().expect("breaker lock").clone()
    }

    /// The breaker settings.
    pub fn breaker(&self) -> &canary_core::config::BreakerConfig {
        &self.breaker
    }

    /// Records the address the listener actually bound (port 0 resolves here).
    pub fn set_bound(&self, addr: SocketAddr) {
        let _ = self.bound.set(addr);
    }

    /// The bound address, once listening.
    pub fn bound(&self) -> Option<SocketAddr> {
        self.bound.get().copied()
    }

    /// Replaces the routing spec, if it is valid and newer than the current one.
    pub fn apply(&self, spec: RouteSpec) -> Result<(), RouteError> {
        spec.check()?;
        let _guard = self.changes.lock().expect("route change lock");
        if spec.generation <= self.route.load().spec.generation {
            return Ok(());
        }
        self.swap(spec);
        Ok(())
    }

    fn swap(&self, spec: RouteSpec) {
        let previous = self.route.load_full();
        let route = build_route(&self.settings.name, spec, &self.shared, Some(&previous));
        tracing::info!(
            service = %self.settings.name,
            generation = route.spec.generation,
            weight = %route.spec.weight,
            canary = route.table.canary.as_deref().unwrap_or("-"),
            "routing changed"
        );
        self.route.store(Arc::new(route));
    }

    /// The service as the admin API shows it.
    pub fn view(&self) -> ServiceView {
        let route = self.route();
        let spec = &route.spec;
        let version = |v: &VersionConfig| VersionView {
            version: v.version.as_str().to_owned(),
            upstreams: v.upstreams.as_slice().to_vec(),
        };
        ServiceView {
            name: self.settings.name.clone(),
            listen: self.bound().unwrap_or(self.settings.listen).to_string(),
            rollout_id: spec.rollout_id.clone(),
            stable: version(&spec.stable),
            canary: spec.canary.as_ref().map(version),
            weight: spec.weight.percent(),
            canary_tripped: !self.canary_open(),
            trip_reason: self.trip_reason(),
            draining: spec.draining.as_ref().map(|d| d.version.version.as_str().to_owned()),
            retired: spec.retired_at(canary_core::clock::unix_ms()).map(str::to_owned),
            generation: spec.generation,
        }
    }
}

fn build_route(service: &str, spec: RouteSpec, shared: &Shared, previous: Option<&Route>) -> Route {
    let users = match previous {
        Some(p) if p.spec.rollout_id == spec.rollout_id => p.users.clone(),
        _ => Arc::default(),
    };
    let table = spec.table();
    let cohort = canary_core::cohort::cohort_id(&table.salt);
    let target = |v: &VersionConfig| VersionTarget {
        header: HeaderValue::from_str(v.version.as_str()).expect("version names are valid header values"),
        upstreams: shared.upstreams.set(v.upstreams.as_slice()),
        stats: shared.metrics.version(service, v.version.as_str()),
        ranges: shared.metrics.ranges(service, v.version.as_str(), &cohort),
    };
    let stable = target(&spec.stable);
    let canary = spec.canary.as_ref().map(target);
    let canary_version = |s: &RouteSpec| s.canary.as_ref().map(|c| c.version.clone());
    let same_canary =
        |p: &&Route| p.spec.rollout_id == spec.rollout_id && canary_version(&p.spec) == canary_version(&spec);
    let canary_since = match (previous.filter(same_canary), &canary) {
        (Some(p), Some(_)) => p.canary_since.clone(),
        (None, Some(c)) => Some(Arc::new((c.counts_with_ranges(), stable.stats.counts()))),
        (_, None) => None,
    };
    Route {
        table,
        stable,
        canary,
        draining: spec.draining.as_ref().map(|d| target(&d.version)),
        retired: spec.retired.as_ref().map(|r| target(&r.version)),
        users,
        canary_since,
        spec,
    }
}
