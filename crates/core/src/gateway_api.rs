//! `canary export gateway-api`: a Kubernetes Gateway API `HTTPRoute` per service that delivers
//! each request to the version the gateway chose.
//!
//! The layout is the one of `canary export istio` with a Gateway in place of the mesh: our
//! gateway decides a version per user (bucket, pin, override) and adds
//! `x-canary-version: <version>` to the request; it is given one upstream for both versions, the
//! address of a Gateway (an in-cluster Envoy Gateway, Istio, Cilium, NGINX Gateway Fabric, …),
//! and the Gateway does the last hop. Each version runs behind its own Kubernetes Service
//! (`web-v1`, `web-v2`: the `--backend` pattern), and the route attached to the Gateway
//!
//! - sends `x-canary-version: <canary>` to the canary's Service,
//! - sends `x-canary-version: <stable>` to the stable Service,
//! - and sends everything else (requests that did not come through the gateway, or name a
//!   version that is gone) to the stable Service, through a rule without a match.
//!
//! Gateway API ranks a rule with a header match above one without, whatever their order, so the
//! default rule never shadows the other two. Rules are named by role (`canary`, `stable`,
//! `default`), so the route reads the same in every rollout. A route without hostnames claims
//! every host of its Gateway listener; two such routes on one listener would take each other's
//! requests, so several services are exported only with a `{service}` hostname pattern.
//!
//! Names are checked and the YAML written as [`crate::kubernetes`] describes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::config::{Config, ServiceConfig};
use crate::kubernetes::{
    ExportError, Metadata, Object, VERSION_HEADER, check_dns_label, check_dns_subdomain, check_service_name, document,
    invalid, kubernetes_name, select_services,
};

/// The API group and version of the objects written.
pub const API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// The default `--backend` pattern: the Service of one version of one service.
pub const DEFAULT_BACKEND: &str = "{service}-{version}";
/// The default port of the backend Services.
pub const DEFAULT_PORT: u16 = 80;
/// The most hostnames an HTTPRoute may list (`spec.hostnames` `maxItems`).
const MAX_HOSTNAMES: usize = 16;

/// Choices of `canary export gateway-api` that the configuration file does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayApiOptions {
    /// `metadata.namespace` of every route; `None` leaves it to `kubectl apply -n`. The backend
    /// Services are looked up in the route's namespace.
    pub namespace: Option<String>,
    /// The name of the Gateway the routes attach to.
    pub parent: String,
    /// The Gateway's namespace, when it is not the route's.
    pub parent_namespace: Option<String>,
    /// The Gateway listener (`sectionName`) to attach to; `None` attaches to every listener that
    /// allows the route.
    pub parent_section: Option<String>,
    /// The `Host` header values the route applies to (`shop.example.com`, `*.example.com`);
    /// `{service}` is replaced by the service's Kubernetes name. Empty: every host of the
    /// listener.
    pub hostnames: Vec<String>,
    /// The backend Service of a version: `{service}` and `{version}` are replaced by the
    /// service's Kubernetes name and the version written as a name (lower case, `.` and `_` as
    /// `-`). Default: [`DEFAULT_BACKEND`].
    pub backend: String,
    /// The port of the backend Services. Default: [`DEFAULT_PORT`].
    pub port: u16,
}

impl GatewayApiOptions {
    /// The options of a route attached to the Gateway `parent`, everything else by default.
    pub fn new(parent: impl Into<String>) -> Self {
        GatewayApiOptions {
            namespace: None,
            parent: parent.into(),
            parent_namespace: None,
            parent_section: None,
            hostnames: Vec::new(),
            backend: DEFAULT_BACKEND.into(),
            port: DEFAULT_PORT,
        }
    }
}

/// Writes the HTTPRoute of every service in `config`, or of `service` only, as one YAML stream:
/// a comment header that explains the mode, then one `---` document per route. Nothing is written
/// unless every route is valid.
pub fn export(config: &Config, service: Option<&str>, options: &GatewayApiOptions) -> Result<String, ExportError> {
    let services = select_services(config, service)?;
    check_options(options, services.len())?;

    let routes = services.iter().map(|s| ServiceRoute::new(s, options)).collect::<Result<Vec<_>, _>>()?;
    check_backends_apart(&routes)?;
    let mut out = String::from(HEADER);
    for route in &routes {
        out.push_str(&route.comment(options));
        out.push_str(&document(&route.object));
    }
    Ok(out)
}

const HEADER: &str = "\
# Written by `canary export gateway-api`.
#
# In this mode the Sticky Canary gateway picks the version of every request (user key, session
# pin, weight) and sends it upstream as `x-canary-version: <version>`; the Gateway these routes
# attach to delivers the request to that version's Service. Give the gateway the Gateway's
# address as the upstream of both versions. Requests without the header go to stable. The
# gateway forwards the client's Host header and the Gateway picks routes by it: list the host
# names clients use with --hostname, or leave them out to claim every host of the listener. The
# versions below come from the configuration file: export again when they change.
";

fn check_options(options: &GatewayApiOptions, count: usize) -> Result<(), ExportError> {
    for (what, ns) in [("namespace", &options.namespace), ("parent namespace", &options.parent_namespace)] {
        if let Some(ns) = ns {
            check_dns_label(what, ns)?;
        }
    }
    check_dns_subdomain("parent Gateway name", &options.parent)?;
    if let Some(section) = &options.parent_section {
        check_dns_subdomain("parent section (listener name)", section)?;
    }
    if options.port == 0 {
        return Err(invalid("backend port", "0", "a port from 1 to 65535"));
    }
    if !options.backend.contains("{version}") {
        return Err(invalid(
            "--backend",
            &options.backend,
            "it must contain {version}, or both versions get one Service",
        ));
    }
    if options.hostnames.len() > MAX_HOSTNAMES {
        let count = options.hostnames.len().to_string();
        return Err(invalid("number of hostnames", &count, "an HTTPRoute lists at most 16 hostnames"));
    }
    if count > 1 {
        if options.hostnames.is_empty() {
            return Err(ExportError::OneServiceOnly {
                what: "a route without --hostname (it claims every host of the listener)",
                count,
                hint: ", or give each its own host with --hostname \"{service}.example.com\"",
            });
        }
        if options.hostnames.iter().any(|h| !h.contains("{service}")) {
            return Err(ExportError::OneServiceOnly {
                what: "--hostname without {service}",
                count,
                hint: ", or write the hostname as a pattern like \"{service}.example.com\"",
            });
        }
    }
    Ok(())
}

/// A hostname as Gateway API takes it: an RFC 1123 name, optionally under a `*.` wildcard, and no
/// IP address.
fn check_hostname(hostname: &str) -> Result<(), ExportError> {
    if hostname.parse::<IpAddr>().is_ok() {
        return Err(invalid("hostname", hostname, "a host name, not an IP address"));
    }
    check_dns_subdomain("hostname", hostname.strip_prefix("*.").unwrap_or(hostname))
}

/// The version as it appears in a Service name: lower case, `.` and `_` written as `-`.
fn version_as_name(version: &str) -> String {
    version.to_ascii_lowercase().replace(['.', '_'], "-")
}

/// One service's route, and what its comment says.
struct ServiceRoute {
    service: String,
    stable: Backend,
    canary: Option<Backend>,
    object: Object<HttpRouteSpec>,
}

/// One version and the Service that serves it.
struct Backend {
    version: String,
    service: String,
}

impl ServiceRoute {
    fn new(s: &ServiceConfig, options: &GatewayApiOptions) -> Result<Self, ExportError> {
        let name = kubernetes_name(s.name.as_str())?;
        let backend = |version: &str| -> Result<Backend, ExportError> {
            let service = options.backend.replace("{service}", &name).replace("{version}", &version_as_name(version));
            check_service_name(
                &format!("backend Service of {version:?} (from --backend {:?})", options.backend),
                &service,
            )?;
            Ok(Backend { version: version.to_owned(), service })
        };
        let stable = backend(s.stable.version.as_str())?;
        let canary = s.canary.as_ref().map(|c| backend(c.version.as_str())).transpose()?;
        let hostnames = options.hostnames.iter().map(|h| h.replace("{service}", &name)).collect::<Vec<_>>();
        hostnames.iter().try_for_each(|h| check_hostname(h))?;

        let rule = |rule: &'static str, header: Option<&str>, to: &Backend| Rule {
            name: rule,
            matches: header.map(|v| vec![HeaderMatches::exact(VERSION_HEADER, v)]).unwrap_or_default(),
            backend_refs: vec![BackendRef { name: to.service.clone(), port: options.port }],
        };
        let mut rules = Vec::new();
        if let Some(c) = &canary {
            // Without a canary every request goes to stable, so the default rule alone says it.
            rules.push(rule("canary", Some(&c.version), c));
            rules.push(rule("stable", Some(&stable.version), &stable));
        }
        rules.push(rule("default", None, &stable));
        let parent_refs = vec![ParentRef {
            name: options.parent.clone(),
            namespace: options.parent_namespace.clone(),
            section_name: options.parent_section.clone(),
        }];
        let spec = HttpRouteSpec { parent_refs, hostnames, rules };
        let object = Object::new(API_VERSION, "HTTPRoute", Metadata::new(name, options.namespace.clone()), spec);
        Ok(ServiceRoute { service: s.name.as_str().to_owned(), stable, canary, object })
    }

    /// Which Service serves which version, and what the gateway's configuration looks like.
    fn comment(&self, options: &GatewayApiOptions) -> String {
        let port = options.port;
        let gateway = match &options.parent_namespace {
            Some(ns) => format!("{ns}/{}", options.parent),
            None => options.parent.clone(),
        };
        let upstream = format!("<address of Gateway {gateway}>:<listener port>");
        let mut c = format!(
            "\n# Service {:?}: stable {} = Service {}:{port}, canary {}.\n\
             # Its gateway upstreams, e.g.:\n\
             #   stable = {{ version = {:?}, upstreams = [{upstream:?}] }}\n",
            self.service,
            self.stable.version,
            self.stable.service,
            self.canary.as_ref().map_or("none".to_owned(), |c| format!("{} = Service {}:{port}", c.version, c.service)),
            self.stable.version,
        );
        if let Some(canary) = &self.canary {
            c.push_str(&format!("#   canary = {{ version = {:?}, upstreams = [{upstream:?}] }}\n", canary.version));
        }
        c
    }
}

/// Two versions on one Service would make the route send the canary's users to the same pods as
/// stable's (or one service's users to another's), so it is refused.
fn check_backends_apart(routes: &[ServiceRoute]) -> Result<(), ExportError> {
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for route in routes {
        for b in std::iter::once(&route.stable).chain(&route.canary) {
            let who = format!("{} {}", route.service, b.version);
            if let Some(first) = seen.insert(&b.service, who.clone()) {
                return Err(ExportError::SharedBackend { backend: b.service.clone(), first, second: who });
            }
        }
    }
    Ok(())
}

// The route, in the field order of the Gateway API's Go types.

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpRouteSpec {
    parent_refs: Vec<ParentRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hostnames: Vec<String>,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ParentRef {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    section_name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    name: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    matches: Vec<HeaderMatches>,
    backend_refs: Vec<BackendRef>,
}

/// An `HTTPRouteMatch` on headers only; its path defaults to every path (`PathPrefix /`).
#[derive(Debug, Clone, Serialize)]
struct HeaderMatches {
    headers: Vec<HeaderMatch>,
}

impl HeaderMatches {
    fn exact(name: &'static str, value: &str) -> Self {
        HeaderMatches { headers: vec![HeaderMatch { kind: "Exact", name, value: value.to_owned() }] }
    }
}

#[derive(Debug, Clone, Serialize)]
struct HeaderMatch {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'static str,
    value: String,
}

/// A reference to a Kubernetes Service in the route's namespace (the default group and kind).
#[derive(Debug, Clone, Serialize)]
struct BackendRef {
    name: String,
    port: u16,
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
stable = { version = "v1", upstreams = ["gateway.infra.svc.cluster.local:80"] }
canary = { version = "v2", upstreams = ["gateway.infra.svc.cluster.local:80"] }
"#;

    fn options() -> GatewayApiOptions {
        GatewayApiOptions::new("internal")
    }

    #[test]
    fn routes_each_version_header_to_its_service_and_the_rest_to_stable() {
        let yaml = export(&config(WEB), None, &options()).unwrap();
        let canary = yaml.find("value: v2").unwrap();
        let stable = yaml.find("value: v1").unwrap();
        let default = yaml.find("name: default").unwrap();
        assert!(canary < stable && stable < default, "{yaml}");
        assert!(yaml[canary..stable].contains("- name: web-v2\n      port: 80"), "{yaml}");
        assert!(yaml[default..].contains("- name: web-v1\n      port: 80"), "{yaml}");
        assert!(yaml.contains("name: x-canary-version"), "{yaml}");
        assert!(yaml.contains("<address of Gateway internal>:<listener port>"), "{yaml}");
    }

    #[test]
    fn versions_become_service_names_and_stay_strings_as_header_values() {
        let text = WEB.replace("\"v2\"", "\"V2.1_rc\"");
        let yaml = export(&config(&text), None, &options()).unwrap();
        assert!(yaml.contains("name: web-v2-1-rc\n"), "{yaml}");
        assert!(yaml.contains("value: V2.1_rc\n"), "{yaml}");
        let text = WEB.replace("\"v2\"", "\"1.10\"");
        let numeric = GatewayApiOptions { backend: "web-{version}".into(), ..options() };
        let yaml = export(&config(&text), None, &numeric).unwrap();
        assert!(!yaml.contains("value: 1.10\n") && yaml.contains("name: web-1-10\n"), "{yaml}");
    }

    #[test]
    fn versions_that_share_a_service_name_are_refused() {
        let text = WEB.replace("\"v2\"", "\"V1\"");
        let e = export(&config(&text), None, &options()).unwrap_err();
        assert!(matches!(e, ExportError::SharedBackend { ref backend, .. } if backend == "web-v1"), "{e}");
        let e = export(&config(WEB), None, &GatewayApiOptions { backend: "web".into(), ..options() }).unwrap_err();
        assert!(e.to_string().contains("{version}"), "{e}");
    }

    #[test]
    fn names_kubernetes_refuses_are_errors() {
        let bad = |o: GatewayApiOptions| export(&config(WEB), None, &o).unwrap_err();
        bad(GatewayApiOptions { namespace: Some("Shop".into()), ..options() });
        bad(GatewayApiOptions::new("Internal"));
        bad(GatewayApiOptions { parent_namespace: Some("infra_1".into()), ..options() });
        bad(GatewayApiOptions { parent_section: Some("https:443".into()), ..options() });
        bad(GatewayApiOptions { hostnames: vec!["Shop.example.com".into()], ..options() });
        bad(GatewayApiOptions { hostnames: vec!["shop.*.com".into()], ..options() });
        let e = bad(GatewayApiOptions { hostnames: vec!["10.0.0.1".into()], ..options() });
        assert!(e.to_string().contains("IP address"), "{e}");
        bad(GatewayApiOptions { hostnames: vec!["a.example.com".into(); 17], ..options() });
        bad(GatewayApiOptions { port: 0, ..options() });
        let numeric = config(&WEB.replace("\"v2\"", "\"1.10\""));
        let e = export(&numeric, None, &GatewayApiOptions { backend: "{version}-{service}".into(), ..options() });
        assert!(e.unwrap_err().to_string().contains("\"1-10-web\" is not valid: a Service name"));
        assert!(
            export(&config(WEB), None, &GatewayApiOptions { hostnames: vec!["*.example.com".into()], ..options() })
                .is_ok()
        );
    }
}
