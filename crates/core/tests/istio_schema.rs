//! `canary export istio` against Istio's own CustomResourceDefinitions.
//!
//! The CRDs (`shared/schemas/istio-crds.gen.yaml`, from istio/api) carry an `openAPIV3Schema` per
//! served version; each exported document is checked against the served `v1` schema of its kind,
//! read as `support` describes. None of the CEL rules in these two schemas concern the fields we
//! write.

mod support;

use std::sync::OnceLock;

use canary_core::config::Config;
use canary_core::istio::{ExportError, IstioOptions, export};
use serde_json::{Value, json};
use support::{read_crds, served_v1_schema, shared_schema, strict_validator};

const CRDS: &str = "istio-crds.gen.yaml";

struct Validators {
    virtual_service: jsonschema::Validator,
    destination_rule: jsonschema::Validator,
}

fn validators() -> &'static Validators {
    static V: OnceLock<Validators> = OnceLock::new();
    V.get_or_init(|| {
        let crds = read_crds(&shared_schema(CRDS));
        let build = |kind: &str| {
            strict_validator(served_v1_schema(&crds, "networking.istio.io", kind), "networking.istio.io/v1", kind)
        };
        Validators { virtual_service: build("VirtualService"), destination_rule: build("DestinationRule") }
    })
}

/// The problems of one document, empty when it is valid.
fn problems(doc: &Value) -> Vec<String> {
    let v = validators();
    let validator = match doc["kind"].as_str() {
        Some("VirtualService") => &v.virtual_service,
        Some("DestinationRule") => &v.destination_rule,
        other => return vec![format!("unexpected kind {other:?}")],
    };
    validator.iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

/// Parses an export and checks every document, returning them.
fn parse_valid(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("the export parses as YAML");
    for doc in &docs {
        let p = problems(doc);
        assert!(p.is_empty(), "{} {} is invalid: {p:#?}\n{yaml}", doc["kind"], doc["metadata"]["name"]);
    }
    docs
}

fn config(text: &str) -> Config {
    Config::from_toml(text).unwrap()
}

const TWO_SERVICES: &str = r#"
[[service]]
name = "web"
listen = "127.0.0.1:8080"
stable = { version = "v1", upstreams = ["web.shop.svc.cluster.local:80"] }
canary = { version = "v2", upstreams = ["web.shop.svc.cluster.local:80"] }
weight = 5

[[service]]
name = "Search_API"
listen = "127.0.0.1:8081"
stable = { version = "1.10", upstreams = ["search-api.shop.svc.cluster.local:8080"] }
"#;

fn kinds_and_names(docs: &[Value]) -> Vec<(String, String)> {
    docs.iter()
        .map(|d| (d["kind"].as_str().unwrap().to_owned(), d["metadata"]["name"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn the_crd_file_is_found_beside_the_repository() {
    let path = shared_schema(CRDS);
    assert!(path.is_file(), "{} is missing: shared/ must sit beside the checkout", path.display());
}

#[test]
fn every_service_gets_a_valid_destination_rule_and_virtual_service() {
    let options = IstioOptions { namespace: Some("shop".into()), ..IstioOptions::default() };
    let yaml = export(&config(TWO_SERVICES), None, &options).unwrap();
    let docs = parse_valid(&yaml);
    let expected = [("DestinationRule", "web"), ("VirtualService", "web"), ("DestinationRule", "search-api")];
    let expected: Vec<(String, String)> = expected
        .iter()
        .chain(&[("VirtualService", "search-api")])
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
    assert_eq!(kinds_and_names(&docs), expected);
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "shop" && d["apiVersion"] == "networking.istio.io/v1"));

    let (dr, vs) = (&docs[0]["spec"], &docs[1]["spec"]);
    assert_eq!(
        dr,
        &json!({"host": "web", "subsets": [
            {"name": "stable", "labels": {"version": "v1"}},
            {"name": "canary", "labels": {"version": "v2"}},
        ]})
    );
    let route = |subset: &str| json!([{"destination": {"host": "web", "subset": subset}}]);
    let on = |version: &str| json!([{"headers": {"x-canary-version": {"exact": version}}}]);
    assert_eq!(
        vs,
        &json!({"hosts": ["web"], "http": [
            {"name": "canary", "match": on("v2"), "route": route("canary")},
            {"name": "stable", "match": on("v1"), "route": route("stable")},
            {"name": "default", "route": route("stable")},
        ]})
    );
    assert!(yaml.starts_with("# Written by `canary export istio`"), "{yaml}");
    assert!(yaml.contains("upstreams = [\"web.shop.svc.cluster.local:80\"]"), "{yaml}");
}

#[test]
fn without_a_canary_there_is_one_subset_and_one_route() {
    let yaml = export(&config(TWO_SERVICES), Some("Search_API"), &IstioOptions::default()).unwrap();
    let docs = parse_valid(&yaml);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["spec"]["subsets"], json!([{"name": "stable", "labels": {"version": "1.10"}}]));
    assert_eq!(
        docs[1]["spec"]["http"],
        json!([{"name": "default", "route": [{"destination": {"host": "search-api", "subset": "stable"}}]}])
    );
    assert!(docs[0]["metadata"].get("namespace").is_none());
}

#[test]
fn service_selects_one_and_options_shape_the_objects() {
    let options = IstioOptions {
        namespace: Some("shop".into()),
        host: Some("web.shop.svc.cluster.local".into()),
        public_hosts: vec!["shop.example.com".into(), "*.shop.example.com".into()],
        version_label: "app.kubernetes.io/version".into(),
    };
    let yaml = export(&config(TWO_SERVICES), Some("web"), &options).unwrap();
    let docs = parse_valid(&yaml);
    assert_eq!(kinds_and_names(&docs).len(), 2);
    assert_eq!(docs[0]["spec"]["host"], "web.shop.svc.cluster.local");
    assert_eq!(docs[0]["spec"]["subsets"][1]["labels"], json!({"app.kubernetes.io/version": "v2"}));
    assert_eq!(
        docs[1]["spec"]["hosts"],
        json!(["web.shop.svc.cluster.local", "shop.example.com", "*.shop.example.com"])
    );
    assert_eq!(docs[1]["spec"]["http"][2]["route"][0]["destination"]["host"], "web.shop.svc.cluster.local");

    let pattern = IstioOptions { host: Some("{service}.shop.svc.cluster.local".into()), ..IstioOptions::default() };
    let docs = parse_valid(&export(&config(TWO_SERVICES), None, &pattern).unwrap());
    assert_eq!(docs[2]["spec"]["host"], "search-api.shop.svc.cluster.local");
}

#[test]
fn an_unknown_service_is_a_clear_error() {
    let e = export(&config(TWO_SERVICES), Some("shop"), &IstioOptions::default()).unwrap_err();
    assert!(matches!(e, ExportError::UnknownService { .. }));
    assert_eq!(e.to_string(), "no service named \"shop\" in the configuration; it has: web, Search_API");
    let e = export(&config(""), None, &IstioOptions::default()).unwrap_err();
    assert_eq!(e, ExportError::NoServices);
}

#[test]
fn one_host_for_several_services_is_refused() {
    let fixed = IstioOptions { host: Some("web.shop.svc.cluster.local".into()), ..IstioOptions::default() };
    let e = export(&config(TWO_SERVICES), None, &fixed).unwrap_err();
    assert!(e.to_string().contains("--service NAME"), "{e}");
    let public = IstioOptions { public_hosts: vec!["shop.example.com".into()], ..IstioOptions::default() };
    assert!(matches!(export(&config(TWO_SERVICES), None, &public), Err(ExportError::OneServiceOnly { .. })));
}

/// The validator must reject what Istio would: otherwise the tests above prove nothing.
#[test]
fn broken_documents_fail_validation() {
    let yaml = export(&config(TWO_SERVICES), Some("web"), &IstioOptions::default()).unwrap();
    let docs = parse_valid(&yaml);
    let (dr, vs) = (&docs[0], &docs[1]);
    let broken = |doc: &Value, change: &dyn Fn(&mut Value)| {
        let mut doc = doc.clone();
        change(&mut doc);
        let p = problems(&doc);
        assert!(!p.is_empty(), "accepted a broken document: {doc:#}");
        p.join("; ")
    };

    // A route weight must be an integer.
    let p = broken(vs, &|d| d["spec"]["http"][0]["route"][0]["weight"] = json!("100"));
    assert!(p.contains("/spec/http/0/route/0/weight"), "{p}");
    // A misspelt field (`header` for `headers`) is unknown.
    let p = broken(vs, &|d| {
        let m = d["spec"]["http"][0]["match"][0].as_object_mut().unwrap();
        let headers = m.remove("headers").unwrap();
        m.insert("header".into(), headers);
    });
    assert!(p.contains("header"), "{p}");
    // A header match takes one of exact, prefix and regex.
    broken(vs, &|d| d["spec"]["http"][0]["match"][0]["headers"]["x-canary-version"]["prefix"] = json!("v"));
    // A destination needs its host.
    let p = broken(vs, &|d| {
        d["spec"]["http"][2]["route"][0]["destination"].as_object_mut().unwrap().remove("host");
    });
    assert!(p.contains("host"), "{p}");
    // Subset labels are strings; the name and apiVersion are checked too.
    broken(dr, &|d| d["spec"]["subsets"][0]["labels"]["version"] = json!(1.1));
    broken(dr, &|d| d["metadata"]["name"] = json!("Web_1"));
    broken(dr, &|d| d["apiVersion"] = json!("networking.istio.io/v1alpha3"));
}
