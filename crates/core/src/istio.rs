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
//! The output is plain data: every name is checked against Kubernetes' rules here, so a bad
//! name is an [`ExportError`] and not a rejected `kubectl apply`. The YAML is written by
//! serde-saphyr (the YAML crate of our stack: serde_yaml is deprecated and serde_yml unsound),
//! which quotes any string a YAML 1.1 reader such as Kubernetes' would take for a number, a
//! boolean or null, so a version called `1.10` or `on` stays a string.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Config, ServiceConfig};

/// The request header the gateway sets and the VirtualService matches.
pub const VERSION_HEADER: &str = "x-canary-version";
/// The DestinationRule subset of the stable version.
pub const STABLE_SUBSET: &str = "stable";
/// The DestinationRule subset of the canary version.
pub const CANARY_SUBSET: &str = "canary";
/// The API group and version of the objects written.
pub const API_VERSION: &str = "networking.istio.io/v1";
/// The label that marks the objects as written by this export.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "sticky-canary");

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

/// Why nothing was exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// `--service` named a service the configuration does not have.
    #[error("no service named {name:?} in the configuration; it has: {known}")]
    UnknownService {
        /// The name asked for.
        name: String,
        /// The services the configuration has, comma separated.
        known: String,
    },
    /// The configuration has no `[[service]]`.
    #[error("the configuration has no [[service]] to export")]
    NoServices,
    /// A fixed host or public hosts were given while several services are exported: their
    /// VirtualServices would all claim the same host.
    #[error(
        "{what} can belong to one service only, but {count} services are exported: pick one with --service NAME{hint}"
    )]
    OneServiceOnly {
        /// The option at fault.
        what: &'static str,
        /// How many services were selected.
        count: usize,
        /// A suggestion, or empty.
        hint: &'static str,
    },
    /// A name is not acceptable to Kubernetes or Istio.
    #[error("{what} {value:?} is not valid: {rule}")]
    Invalid {
        /// What the name is for.
        what: String,
        /// The name.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
}

/// Writes the DestinationRule and VirtualService of every service in `config`, or of `service`
/// only, as one YAML stream: a comment header that explains the mode, then one `---` document per
/// object. Nothing is written unless every object is valid.
pub fn export(config: &Config, service: Option<&str>, options: &IstioOptions) -> Result<String, ExportError> {
    let services: Vec<&ServiceConfig> = match service {
        Some(name) => vec![
            config
                .service(name)
                .ok_or_else(|| ExportError::UnknownService { name: name.to_owned(), known: known_services(config) })?,
        ],
        None => config.services.iter().collect(),
    };
    if services.is_empty() {
        return Err(ExportError::NoServices);
    }
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

fn known_services(config: &Config) -> String {
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    if names.is_empty() { "no services".into() } else { names.join(", ") }
}

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

        let metadata = Metadata {
            name,
            namespace: options.namespace.clone(),
            labels: BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())]),
        };
        let subset = |subset: &'static str, version: &str| Subset {
            name: subset,
            labels: BTreeMap::from([(options.version_label.clone(), version.to_owned())]),
        };
        let mut subsets = vec![subset(STABLE_SUBSET, &stable)];
        subsets.extend(canary.as_deref().map(|v| subset(CANARY_SUBSET, v)));
        let destination_rule =
            Object::new("DestinationRule", metadata.clone(), DestinationRuleSpec { host: host.clone(), subsets });

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
        let virtual_service = Object::new("VirtualService", metadata, VirtualServiceSpec { hosts, http });

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

fn document<T: Serialize>(object: &T) -> String {
    // Serializing these plain structs of strings cannot fail; a failure would be a bug here.
    let yaml = serde_saphyr::to_string(object).expect("Istio objects serialize to YAML");
    let mut doc = String::with_capacity(yaml.len() + 4);
    doc.push_str("---\n");
    doc.push_str(&yaml);
    if !doc.ends_with('\n') {
        doc.push('\n');
    }
    doc
}

/// The Kubernetes object name of a service: lower case, `_` written as `-` (an RFC 1123 label).
pub fn kubernetes_name(service: &str) -> Result<String, ExportError> {
    let name = service.to_ascii_lowercase().replace('_', "-");
    check_dns_label("service name (as a Kubernetes name)", &name)?;
    Ok(name)
}

fn invalid(what: &str, value: &str, rule: &'static str) -> ExportError {
    ExportError::Invalid { what: what.to_owned(), value: value.to_owned(), rule }
}

const DNS_LABEL_RULE: &str = "1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit";

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn check_dns_label(what: &str, s: &str) -> Result<(), ExportError> {
    if is_dns_label(s) { Ok(()) } else { Err(invalid(what, s, DNS_LABEL_RULE)) }
}

fn check_dns_subdomain(what: &str, s: &str) -> Result<(), ExportError> {
    if s.len() <= 253 && s.split('.').all(is_dns_label) {
        Ok(())
    } else {
        Err(invalid(what, s, "a DNS name: dot-separated labels of lower-case letters, digits and '-'"))
    }
}

/// A label name or value: at most 63 of `A-Za-z0-9-_.`, starting and ending alphanumeric.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn check_label_value(version: &str) -> Result<(), ExportError> {
    if is_label_name(version) {
        Ok(())
    } else {
        Err(invalid("version (as a pod label value)", version, "it must start and end with a letter or digit"))
    }
}

fn check_label_key(key: &str) -> Result<(), ExportError> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(is_dns_label));
    if prefix_ok && is_label_name(name) {
        Ok(())
    } else {
        Err(invalid(
            "version label",
            key,
            "a label key: an optional DNS prefix and '/', then up to 63 of letters, digits, '-', '_' and '.'",
        ))
    }
}

// The objects, in the field order `kubectl get -o yaml` shows.

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Object<S> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: S,
}

impl<S> Object<S> {
    fn new(kind: &'static str, metadata: Metadata, spec: S) -> Self {
        Object { api_version: API_VERSION, kind, metadata, spec }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Metadata {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
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
        assert_eq!(kubernetes_name("Web_Shop").unwrap(), "web-shop");
        assert!(kubernetes_name("-web").is_err());
        let bad = |o: IstioOptions| export(&config(WEB), None, &o).unwrap_err();
        bad(IstioOptions { namespace: Some("Shop".into()), ..IstioOptions::default() });
        bad(IstioOptions { host: Some("web..svc".into()), ..IstioOptions::default() });
        bad(IstioOptions { version_label: "-version".into(), ..IstioOptions::default() });
        bad(IstioOptions { public_hosts: vec!["Shop.example.com".into()], ..IstioOptions::default() });
        assert!(check_label_key("app.kubernetes.io/version").is_ok());
    }
}
