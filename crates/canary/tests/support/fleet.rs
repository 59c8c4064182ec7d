//! The config of one node of a several-node fleet: etcd for the store, Prometheus for the
//! judge's counts, one service `web` with stable `v1`.

use super::Upstream;

/// A node on etcd at `etcd`, reading the gateways' counters from `prometheus`; `service_lines`
/// go at the end of the service's table (a canary, breaker settings).
pub fn node_config(etcd: &str, prometheus: &str, stable: &Upstream, service_lines: &str) -> String {
    format!(
        r#"{}
[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = {{ version = "v1", upstreams = ["{}"] }}
{service_lines}
"#,
        node_head(etcd, prometheus),
        stable.addr
    )
}

/// Everything of a node's config but its services.
pub fn node_head(etcd: &str, prometheus: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[gateway]
workers = 1
pin_secret = "multi-node-shared-secret"
[store]
kind = "etcd"
endpoints = ["{etcd}"]
[controller]
tick = "200ms"
[metrics]
source = "prometheus"
url = "{prometheus}"
scrape_interval = "1s"
"#
    )
}
