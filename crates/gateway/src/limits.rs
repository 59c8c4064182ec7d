//! How many client connections a gateway process may hold, and how long each may take.
//!
//! Every proxied client connection costs two descriptors (its socket and one to the upstream,
//! pooled or in use), and the process needs more for its listeners, the store, the admin
//! listener and its clients. So unless `[gateway] max_connections` says otherwise, the
//! gateway takes for client connections half of what is left of `RLIMIT_NOFILE` after a
//! reserve of a quarter (at least 32, at most 1,024 descriptors): running out of descriptors
//! then sheds idle clients instead of failing every `accept` — the admin listener's `/healthz`
//! included.

use std::time::Duration;

use canary_core::config::GatewayConfig;

use crate::conn_clock::Deadlines;

/// Descriptors kept for everything but client connections and their upstreams.
pub fn reserved_descriptors(nofile: u64) -> u64 {
    (nofile / 4).clamp(32, 1024)
}

/// Client connections a descriptor limit of `nofile` allows.
pub fn connection_budget(nofile: u64) -> usize {
    let budget = nofile.saturating_sub(reserved_descriptors(nofile)) / 2;
    usize::try_from(budget).unwrap_or(usize::MAX).max(1)
}

/// The process's soft descriptor limit, if it has one.
pub fn descriptor_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The limits and timeouts of every client connection of a gateway.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// The header-read and idle deadlines.
    pub deadlines: Deadlines,
    /// Time a TLS client has to finish its handshake.
    pub tls_handshake: Duration,
    /// Interval of HTTP/2 keep-alive pings.
    pub http2_keepalive_interval: Duration,
    /// Time an HTTP/2 ping may go unanswered.
    pub http2_keepalive_timeout: Duration,
    /// Client connections each worker holds at most.
    pub per_worker: usize,
}

impl ConnLimits {
    /// The limits of `config` for `workers` workers under a descriptor limit of `nofile`.
    /// A configured `max_connections` above what `nofile` allows is lowered, with a warning.
    pub fn new(config: &GatewayConfig, workers: usize, nofile: Option<u64>) -> ConnLimits {
        let budget = nofile.map(connection_budget);
        let total = match (config.max_connections, budget) {
            (Some(max), Some(budget)) if max > budget => {
                tracing::warn!(
                    max_connections = max,
                    allowed = budget,
                    nofile,
                    "max_connections needs more file descriptors than the limit allows; lowered"
                );
                budget
            }
            (Some(max), _) => max,
            (None, Some(budget)) => budget,
            (None, None) => usize::MAX,
        };
        ConnLimits {
            deadlines: Deadlines { header_read: config.header_read_timeout.0, idle: config.idle_timeout.0 },
            tls_handshake: config.tls_handshake_timeout.0,
            http2_keepalive_interval: config.http2_keepalive_interval.0,
            http2_keepalive_timeout: config.http2_keepalive_timeout.0,
            per_worker: (total / workers.max(1)).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_a_reserve_and_two_descriptors_per_connection() {
        assert_eq!(connection_budget(256), (256 - 64) / 2);
        assert_eq!(connection_budget(1024), (1024 - 256) / 2);
        assert_eq!(connection_budget(1 << 20), ((1 << 20) - 1024) / 2);
        assert_eq!(connection_budget(40), 4, "a tiny limit still keeps 32 spare");
        assert_eq!(connection_budget(10), 1);
    }

    #[test]
    fn max_connections_is_split_over_workers_and_capped_by_the_descriptor_limit() {
        let mut config = GatewayConfig::default();
        assert_eq!(ConnLimits::new(&config, 2, Some(1024)).per_worker, 192);
        assert_eq!(ConnLimits::new(&config, 2, None).per_worker, usize::MAX / 2);
        config.max_connections = Some(100);
        assert_eq!(ConnLimits::new(&config, 4, Some(1024)).per_worker, 25);
        config.max_connections = Some(100_000);
        assert_eq!(ConnLimits::new(&config, 1, Some(1024)).per_worker, 384, "lowered to what fits");
        config.max_connections = Some(3);
        assert_eq!(ConnLimits::new(&config, 8, Some(1024)).per_worker, 1, "every worker takes one at least");
    }

    #[test]
    fn the_deadlines_come_from_the_config() {
        let limits = ConnLimits::new(&GatewayConfig::default(), 1, None);
        assert_eq!(limits.deadlines, Deadlines { header_read: Duration::from_secs(30), idle: Duration::from_secs(60) });
        assert_eq!(limits.tls_handshake, Duration::from_secs(10));
    }
}
