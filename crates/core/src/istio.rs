//! `canary export istio`: the Istio objects that deliver each request to the version the gateway
//! chose.
//!
//! This is the layout Toss Bank runs: their "SSR API gateway" decides a version per user and adds
//! `x-canary-version: <version>` to the request, and an Istio VirtualService routes on that header
//! to the pods of the version. Our gateway makes the same decision (bucket, pin, override) and
//! adds the same header, so in this mode it is given one upstream for both versions, the
//! Kubernetes Service (`web.shop.svc.cluster.local:80`), and the mesh does the last hop:
//!
//! - a `DestinationRule` names one subset per version, `stable` and (when configured) `canary`,
//!   each selecting the pods whose version label (`version` by default) is the version's name;
//! - a `VirtualService` for the Service host sends `x-canary-version: <canary>` to the canary
//!   subset, `x-canary-version: <stable>` to the stable subset, and everything else (requests
//!   that did not come through the gateway, or name a version that is gone) to stable.
//!
//! Subsets are named by role, not by version, so the routes read the same in every rollout and
//! only the label values and header values change when versions do.
//!
//! Names are checked and the YAML written as [`crate::kubernetes`] describes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Config, ServiceConfig};
pub use crate::kubernetes::{ExportError, VERSION_HEADER, kubernetes_name};
use crate::kubernetes::{
    Metadata, Object, check_dns_label, check_dns_subdomain, check_label_key, check_label_value, document,
    select_services,
};

/// The DestinationRule subset of the stable version.
pub const STABLE_SUBSET: &str = "stable";
/// The DestinationRule subset of the canary version.
pub const CANARY_SUBSET: &str = "canary";
/// The API group and version of the objects written.
pub const API_VERSION: &str = "networking.istio.io/v1";

/// Choices of `canary export istio` that the configuration file does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IstioOptions {
    /// `metadata.namespace` of every object; `None` leaves it to `kubectl apply -n`. It should be
    /// the Service's namespace: short hosts are read relative to the namespace of the object.
    pub namespace: Option<String>,
    /// The Kubernetes Service host (`web`, `web.shop.svc.cluster.local`). `{service}` in it is
    /// replaced by the service's Kubernetes name, so one pattern serves several services. Default:
    /// the Kubernetes name of the service (its name in lower case, `_` written as `-`).
    pub host: Option<String>,
    /// Further hosts of the VirtualService: the `Host` header values the gateway forwards (it
    /// passes the client's `Host` through), so the mesh applies the routes to them too.
    pub public_hosts: Vec<String>,
    /// The pod label whose value is the version name (`version: v2`). Default: `version`.
    pub version_label: String,
}

impl Default for IstioOptions {
    fn default() -> Self {
        IstioOptions { namespace: None, host: None, public_hosts: Vec::new(), version_label: "version".into() }
    }
}

/// Writes the DestinationRule and VirtualService of every service in `config`, or of `service`
/// only, as one YAML stream: a comment header that explains the mode, then one `---` document per
/// object. Nothing is written unless every object is valid.
pub fn export(config: &Config, service: Option<&str>, options: &IstioOptions) -> Result<String, ExportError> {
    let services = select_services(config, service)?;
    check_options(options, services.len())?;

    let mut out = String::from(HEADER);
    for s in services {
        let objects = ServiceObjects::new(s, options)?;
        out.push_str(&objects.comment());
        out.push_str(&document(&objects.destination_rule));
        out.push_str(&document(&objects.virtual_service));
    }
    Ok(out)
}

const HEADER: &str = "\
# Written by `canary export istio`.
#
# In this mode the Sticky Canary gateway picks the version of every request (user key, session
# pin, weight) and sends it upstream as `x-canary-version: <version>`; Istio delivers the request
# to that version's pods. Give the gateway the Kubernetes Service as the upstream of both
# versions and run it inside the mesh (with a sidecar), so its outbound requests pass these
# routes. Requests without the header go to stable. The gateway forwards the client's Host
# header and the mesh picks routes by it: send the Service host, or list the public host names
# with --public-host. The versions below come from the configuration file: export again when
# they change.
";

fn check_options(options: &IstioOptions, count: usize) -> Result<(), ExportError> {
    if let Some(ns) = &options.namespace {
        check_dns_label("namespace", ns)?;
    }
    check_label_key(&options.version_label)?;
    if count > 1 {
        if options.host.as_deref().is_some_and(|h| !h.contains("{service}")) {
            return Err(ExportError::OneServiceOnly {
                what: "--host without {service}",
                count,
                hint: ", or write the host as a pattern like \"{service}.shop.svc.cluster.local\"",
            });
        }
        if !options.public_hosts.is_empty() {
            return Err(ExportError::OneServiceOnly { what: "--public-host", count, hint: "" });
        }
    }
    for h in &options.public_hosts {
        let plain = h.strip_prefix("*.").unwrap_or(h);
        check_dns_subdomain("public host", plain)?;
    }
    Ok(())
}

/// The two objects of one service.
struct ServiceObjects {
    service: String,
    namespace: Option<String>,
    host: String,
    stable: String,
    canary: Option<String>,
    destination_rule: Object<DestinationRuleSpec>,
    virtual_service: Object<VirtualServiceSpec>,
}

impl ServiceObjects {
    fn new(s: &ServiceConfig, options: &IstioOptions) -> Result<Self, ExportError> {
        let name = kubernetes_name(s.name.as_str())?;
        let host = match &options.host {
            Some(pattern) => pattern.replace("{service}", &name),
            None => name.clone(),
        };
        check_dns_subdomain("host", &host)?;
        let stable = s.stable.version.as_str().to_owned();
        let canary = s.canary.as_ref().map(|c| c.version.as_str().to_owned());
        for v in std::iter::once(&stable).chain(&canary) {
            check_label_value(v)?;
        }

        let metadata = Metadata::new(name, options.namespace.clone());
        let subset = |subset: &'static str, version: &str| Subset {
            name: subset,
            labels: BTreeMap::from([(options.version_label.clone(), version.to_owned())]),
        };
        let mut subsets = vec![subset(STABLE_SUBSET, &stable)];
        subsets.extend(canary.as_deref().map(|v| subset(CANARY_SUBSET, v)));
        let destination_rule = Object::new(
            API_VERSION,
            "DestinationRule",
            metadata.clone(),
            DestinationRuleSpec { host: host.clone(), subsets },
        );

        let to =
            |subset: &'static str| vec![RouteDestination { destination: Destination { host: host.clone(), subset } }];
        let on_header = |version: &str| {
            vec![HttpMatch { headers: BTreeMap::from([(VERSION_HEADER, StringMatch { exact: version.to_owned() })]) }]
        };
        let mut http = Vec::new();
        if let Some(c) = &canary {
            // Without a canary every request goes to stable, so the default route alone says it.
            http.push(HttpRoute { name: CANARY_SUBSET, matches: on_header(c), route: to(CANARY_SUBSET) });
            http.push(HttpRoute { name: STABLE_SUBSET, matches: on_header(&stable), route: to(STABLE_SUBSET) });
        }
        http.push(HttpRoute { name: "default", matches: Vec::new(), route: to(STABLE_SUBSET) });
        let mut hosts = vec![host.clone()];
        hosts.extend(options.public_hosts.iter().filter(|h| **h != host).cloned());
        let virtual_service = Object::new(API_VERSION, "VirtualService", metadata, VirtualServiceSpec { hosts, http });

        Ok(ServiceObjects {
            service: s.name.as_str().to_owned(),
            namespace: options.namespace.clone(),
            host,
            stable,
            canary,
            destination_rule,
            virtual_service,
        })
    }

    /// What the gateway's configuration looks like in this mode, for this service.
    fn comment(&self) -> String {
        let upstream = match &self.namespace {
            _ if self.host.contains('.') => format!("{}:80", self.host),
            Some(ns) => format!("{}.{ns}.svc.cluster.local:80", self.host),
            None => format!("{}.<namespace>.svc.cluster.local:80", self.host),
        };
        let mut c = format!(
            "\n# Service {:?}: subset {STABLE_SUBSET} = {}, subset {CANARY_SUBSET} = {}.\n\
             # Its gateway upstreams, e.g.:\n\
             #   stable = {{ version = {:?}, upstreams = [{upstream:?}] }}\n",
            self.service,
            self.stable,
            self.canary.as_deref().unwrap_or("none"),
            self.stable,
        );
        if let Some(canary) = &self.canary {
            c.push_str(&format!("#   canary = {{ version = {canary:?}, upstreams = [{upstream:?}] }}\n"));
        }
        c
    }
}

#[derive(Debug, Clone, Serialize)]
struct DestinationRuleSpec {
    host: String,
    subsets: Vec<Subset>,
}

#[derive(Debug, Clone, Serialize)]
struct Subset {
    name: &'static str,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
struct VirtualServiceSpec {
    hosts: Vec<String>,
    http: Vec<HttpRoute>,
}

#[derive(Debug, Clone, Serialize)]
struct HttpRoute {
    name: &'static str,
    #[serde(rename = "match", skip_serializing_if = "Vec::is_empty")]
    matches: Vec<HttpMatch>,
    route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, Serialize)]
struct HttpMatch {
    headers: BTreeMap<&'static str, StringMatch>,
}

#[derive(Debug, Clone, Serialize)]
struct StringMatch {
    exact: String,
}

#[derive(Debug, Clone, Serialize)]
struct RouteDestination {
    destination: Destination,
}

#[derive(Debug, Clone, Serialize)]
struct Destination {
    host: String,
    subset: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(services: &str) -> Config {
        Config::from_toml(services).unwrap()
    }

    const WEB: &str = r#"
[[service]]
name = "web"
listen = "127.0.0.1:8080"
stable = { version = "v1", upstreams = ["web.shop.svc.cluster.local:80"] }
canary = { version = "v2", upstreams = ["web.shop.svc.cluster.local:80"] }
"#;

    #[test]
    fn routes_each_version_header_to_its_subset_and_the_rest_to_stable() {
        let yaml = export(&config(WEB), None, &IstioOptions::default()).unwrap();
        let vs = &yaml[yaml.find("kind: VirtualService").unwrap()..];
        let canary = vs.find("exact: v2").unwrap();
        let stable = vs.find("exact: v1").unwrap();
        let default = vs.find("name: default").unwrap();
        assert!(canary < stable && stable < default, "{yaml}");
        assert!(vs[default..].contains("subset: stable"), "{yaml}");
        assert!(yaml.contains("x-canary-version:"), "{yaml}");
        assert!(yaml.contains("version: v2") && yaml.contains("host: web\n"), "{yaml}");
        assert!(yaml.contains("upstreams = [\"web.<namespace>.svc.cluster.local:80\"]"), "{yaml}");
    }

    #[test]
    fn versions_that_read_as_other_types_stay_strings() {
        for version in ["1.10", "1_0", "on", "y", "no", "null", "0x1F", "1e3", "2024-11-01", "012"] {
            let text = WEB.replace("\"v2\"", &format!("{version:?}"));
            let yaml = export(&config(&text), None, &IstioOptions::default()).unwrap();
            assert!(!yaml.contains(&format!("exact: {version}\n")), "{version} is not quoted:\n{yaml}");
            assert!(!yaml.contains(&format!("version: {version}\n")), "{version} is not quoted:\n{yaml}");
        }
    }

    #[test]
    fn names_kubernetes_refuses_are_errors() {
        let text = WEB.replace("\"v2\"", "\"v2-\"");
        let e = export(&config(&text), None, &IstioOptions::default()).unwrap_err();
        assert!(e.to_string().contains("\"v2-\""), "{e}");
        let bad = |o: IstioOptions| export(&config(WEB), None, &o).unwrap_err();
        bad(IstioOptions { namespace: Some("Shop".into()), ..IstioOptions::default() });
        bad(IstioOptions { host: Some("web..svc".into()), ..IstioOptions::default() });
        bad(IstioOptions { version_label: "-version".into(), ..IstioOptions::default() });
        bad(IstioOptions { public_hosts: vec!["Shop.example.com".into()], ..IstioOptions::default() });
    }
}
