//! What the Kubernetes exports (`canary export istio`, `canary export gateway-api`) share: the
//! choice of services, Kubernetes' naming rules, the object envelope and the YAML writer.
//!
//! Every name is checked here against the rule the API server applies, so a bad name is an
//! [`ExportError`] and not a rejected `kubectl apply`. The YAML is written by serde-saphyr (the
//! YAML crate of our stack: serde_yaml is deprecated and serde_yml unsound), which quotes any
//! string a YAML 1.1 reader such as Kubernetes' would take for a number, a boolean or null, so a
//! version called `1.10` or `on` stays a string.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Config, ServiceConfig};

/// The request header the gateway sets on every upstream request and the exported routes match.
pub const VERSION_HEADER: &str = "x-canary-version";
/// The label that marks the objects as written by an export.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "sticky-canary");

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
    /// An option that can belong to one service only was given while several are exported:
    /// their objects would all claim the same thing.
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
    /// Two versions would be sent to the same backend Service.
    #[error(
        "{first} and {second} would both be sent to the Service {backend:?}: give --backend a pattern with {{service}} and {{version}} that keeps them apart"
    )]
    SharedBackend {
        /// The Service name both resolve to.
        backend: String,
        /// The first service and version (`web v1`).
        first: String,
        /// The second service and version.
        second: String,
    },
    /// A name is not acceptable to Kubernetes or to the API the objects belong to.
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

/// The services to export: `service` only, or every one in `config`.
pub(crate) fn select_services<'c>(
    config: &'c Config,
    service: Option<&str>,
) -> Result<Vec<&'c ServiceConfig>, ExportError> {
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
    Ok(services)
}

fn known_services(config: &Config) -> String {
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    if names.is_empty() { "no services".into() } else { names.join(", ") }
}

/// The Kubernetes object name of a service: lower case, `_` written as `-` (an RFC 1123 label).
pub fn kubernetes_name(service: &str) -> Result<String, ExportError> {
    let name = service.to_ascii_lowercase().replace('_', "-");
    check_dns_label("service name (as a Kubernetes name)", &name)?;
    Ok(name)
}

pub(crate) fn invalid(what: &str, value: &str, rule: &'static str) -> ExportError {
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

/// An RFC 1123 label: namespaces, most object names.
pub(crate) fn check_dns_label(what: &str, s: &str) -> Result<(), ExportError> {
    if is_dns_label(s) { Ok(()) } else { Err(invalid(what, s, DNS_LABEL_RULE)) }
}

/// An RFC 1035 label, the stricter rule of Service names: it starts with a letter.
pub(crate) fn check_service_name(what: &str, s: &str) -> Result<(), ExportError> {
    if is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase() {
        Ok(())
    } else {
        Err(invalid(what, s, "a Service name: 1 to 63 lower-case letters, digits and '-', starting with a letter"))
    }
}

/// An RFC 1123 subdomain: host names, names of most other objects.
pub(crate) fn check_dns_subdomain(what: &str, s: &str) -> Result<(), ExportError> {
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

pub(crate) fn check_label_value(version: &str) -> Result<(), ExportError> {
    if is_label_name(version) {
        Ok(())
    } else {
        Err(invalid("version (as a pod label value)", version, "it must start and end with a letter or digit"))
    }
}

pub(crate) fn check_label_key(key: &str) -> Result<(), ExportError> {
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

/// One YAML document, `---` first.
pub(crate) fn document<T: Serialize>(object: &T) -> String {
    // Serializing these plain structs of strings and numbers cannot fail; a failure would be a
    // bug here.
    let yaml = serde_saphyr::to_string(object).expect("Kubernetes objects serialize to YAML");
    let mut doc = String::with_capacity(yaml.len() + 4);
    doc.push_str("---\n");
    doc.push_str(&yaml);
    if !doc.ends_with('\n') {
        doc.push('\n');
    }
    doc
}

/// A Kubernetes object, in the field order `kubectl get -o yaml` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Object<S> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: S,
}

impl<S> Object<S> {
    pub(crate) fn new(api_version: &'static str, kind: &'static str, metadata: Metadata, spec: S) -> Self {
        Object { api_version, kind, metadata, spec }
    }
}

/// `metadata` of an exported object: its name, its namespace, and the label that says who wrote it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Metadata {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
}

impl Metadata {
    pub(crate) fn new(name: String, namespace: Option<String>) -> Self {
        Metadata { name, namespace, labels: BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        assert_eq!(kubernetes_name("Web_Shop").unwrap(), "web-shop");
        assert!(kubernetes_name("-web").is_err());
        assert!(check_label_key("app.kubernetes.io/version").is_ok());
        assert!(check_label_key("-version").is_err());
        assert!(check_service_name("backend", "web-v1").is_ok());
        assert!(check_service_name("backend", "1-web").is_err(), "a Service name starts with a letter");
        assert!(check_dns_subdomain("host", "web.shop.svc").is_ok());
        assert!(check_dns_subdomain("host", "web..svc").is_err());
    }
}
