//! `canary export gateway-api` against the Gateway API's own HTTPRoute CustomResourceDefinition.
//!
//! The CRD (`shared/schemas/gateway-api-httproutes-v1.6.1.yaml`, standard channel) carries the
//! `openAPIV3Schema` of `v1`; every exported route is checked against it, read as `support`
//! describes. The CRD also carries rules a JSON Schema validator cannot see: CEL
//! `x-kubernetes-validations`, a list-map key, and rules its descriptions state. The ones a route
//! of ours could break are checked here in Rust, as the API server (or the Gateway) applies them,
//! defaults filled in:
//!
//! - header matches of one match have distinct names (`x-kubernetes-list-map-keys: [name]`;
//!   header names compare without case);
//! - a backendRef to a Service (group `""`, kind `Service`, the defaults) has a port;
//! - all rules together hold fewer than 128 matches (a rule without matches has one);
//! - an `Exact` or `PathPrefix` path is absolute and clean (no `//`, `/./`, `/../`, `%2f`, `#`,
//!   no trailing `/.` or `/..`, only URL path characters);
//! - two parentRefs to the same parent both name a section, and different ones;
//! - from the descriptions: hostnames are not IP addresses, rule names are unique in a route,
//!   and a backendRef to a Service names one (an RFC 1035 label);
//! - and, ours: a route has a parent, or it attaches to nothing and routes nothing.

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::OnceLock;

use canary_core::config::Config;
use canary_core::gateway_api::{API_VERSION, GatewayApiOptions, export};
use canary_core::kubernetes::ExportError;
use serde_json::{Value, json};
use support::{read_crds, served_v1_schema, shared_schema, strict_validator};

const CRD: &str = "gateway-api-httproutes-v1.6.1.yaml";

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let crds = read_crds(&shared_schema(CRD));
        let schema = served_v1_schema(&crds, "gateway.networking.k8s.io", "HTTPRoute");
        strict_validator(schema, API_VERSION, "HTTPRoute")
    })
}

/// What the JSON Schema says is wrong with `doc`.
fn schema_problems(doc: &Value) -> Vec<String> {
    validator().iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

/// What the rules in the module comment say is wrong with `doc`.
fn rule_problems(doc: &Value) -> Vec<String> {
    let spec = &doc["spec"];
    let mut p = parent_problems(spec);
    p.extend(hostname_problems(spec));
    let rules = spec["rules"].as_array().cloned().unwrap_or_default();
    let mut names = BTreeSet::new();
    let mut total_matches = 0;
    for (i, rule) in rules.iter().enumerate() {
        if let Some(name) = rule["name"].as_str()
            && !names.insert(name)
        {
            p.push(format!("rules[{i}].name {name:?} is not unique"));
        }
        let matches = matches_or_default(rule);
        total_matches += matches.len();
        for (j, m) in matches.iter().enumerate() {
            p.extend(match_problems(m).into_iter().map(|e| format!("rules[{i}].matches[{j}]: {e}")));
        }
        for (j, backend) in rule["backendRefs"].as_array().into_iter().flatten().enumerate() {
            p.extend(backend_problems(backend).into_iter().map(|e| format!("rules[{i}].backendRefs[{j}]: {e}")));
        }
    }
    if total_matches >= 128 {
        p.push(format!("{total_matches} matches across all rules; fewer than 128 are allowed"));
    }
    p
}

fn parent_problems(spec: &Value) -> Vec<String> {
    let parents = spec["parentRefs"].as_array().cloned().unwrap_or_default();
    if parents.is_empty() {
        return vec!["no parentRefs: the route attaches to nothing".into()];
    }
    let key = |p: &Value| {
        let field = |f: &str, default: &str| p[f].as_str().unwrap_or(default).to_owned();
        let parent = [
            field("group", "gateway.networking.k8s.io"),
            field("kind", "Gateway"),
            field("namespace", ""),
            field("name", ""),
        ];
        (parent, field("sectionName", ""))
    };
    let mut problems = Vec::new();
    for (i, a) in parents.iter().enumerate() {
        for b in &parents[i + 1..] {
            let ((pa, sa), (pb, sb)) = (key(a), key(b));
            if pa == pb && (sa.is_empty() || sb.is_empty()) {
                problems.push(format!("parentRefs name {:?} twice: sectionName must be specified", pa[3]));
            } else if pa == pb && sa == sb {
                problems.push(format!("parentRefs name {:?} section {sa:?} twice: sectionName must be unique", pa[3]));
            }
        }
    }
    problems
}

fn hostname_problems(spec: &Value) -> Vec<String> {
    let hostnames = spec["hostnames"].as_array().into_iter().flatten().filter_map(Value::as_str);
    hostnames.filter(|h| h.parse::<IpAddr>().is_ok()).map(|h| format!("hostname {h:?} is an IP address")).collect()
}

/// A rule's matches; without any it has one that matches every path.
fn matches_or_default(rule: &Value) -> Vec<Value> {
    match rule["matches"].as_array() {
        Some(m) => m.clone(),
        None => vec![json!({"path": {"type": "PathPrefix", "value": "/"}})],
    }
}

fn match_problems(m: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let mut headers = BTreeSet::new();
    for h in m["headers"].as_array().into_iter().flatten() {
        let name = h["name"].as_str().unwrap_or_default().to_ascii_lowercase();
        if !headers.insert(name.clone()) {
            p.push(format!("header {name:?} is matched twice"));
        }
    }
    let default_path = json!({"type": "PathPrefix", "value": "/"});
    let path = m.get("path").unwrap_or(&default_path);
    let kind = path["type"].as_str().unwrap_or("PathPrefix");
    let value = path["value"].as_str().unwrap_or("/");
    if matches!(kind, "Exact" | "PathPrefix") {
        p.extend(path_problems(value).into_iter().map(|e| format!("path {value:?} {e}")));
    }
    p
}

fn path_problems(value: &str) -> Vec<&'static str> {
    // The CRD's own pattern for the characters of an `Exact` or `PathPrefix` path.
    static PATH_CHARS: OnceLock<jsonschema::Validator> = OnceLock::new();
    let chars = PATH_CHARS.get_or_init(|| {
        let pattern = r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$";
        jsonschema::validator_for(&json!({"type": "string", "pattern": pattern})).unwrap()
    });
    let mut p = Vec::new();
    if !value.starts_with('/') {
        p.push("must start with '/'");
    }
    if ["//", "/./", "/../", "%2f", "%2F", "#"].iter().any(|bad| value.contains(bad)) {
        p.push("must not contain '//', '/./', '/../', '%2f' or '#'");
    }
    if value.ends_with("/..") || value.ends_with("/.") {
        p.push("must not end with '/.' or '/..'");
    }
    if !chars.is_valid(&json!(value)) {
        p.push("has characters a URL path cannot hold");
    }
    p
}

fn backend_problems(backend: &Value) -> Vec<String> {
    let group = backend["group"].as_str().unwrap_or("");
    let kind = backend["kind"].as_str().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Vec::new();
    }
    let mut p = Vec::new();
    if backend.get("port").is_none() {
        p.push("a Service reference must have a port".to_owned());
    }
    let name = backend["name"].as_str().unwrap_or_default();
    let b = name.as_bytes();
    let rfc1035 = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-';
    if !rfc1035 {
        p.push(format!("{name:?} is not a Service name"));
    }
    p
}

/// Everything wrong with `doc`, by either check.
fn problems(doc: &Value) -> Vec<String> {
    let mut p = schema_problems(doc);
    p.extend(rule_problems(doc));
    p
}

/// Parses an export and checks every route, returning them.
fn parse_valid(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("the export parses as YAML");
    let mut names = BTreeSet::new();
    for doc in &docs {
        let p = problems(doc);
        assert!(p.is_empty(), "{} is invalid: {p:#?}\n{yaml}", doc["metadata"]["name"]);
        let name = (doc["metadata"]["namespace"].to_string(), doc["metadata"]["name"].to_string());
        assert!(names.insert(name), "two routes share a name:\n{yaml}");
    }
    docs
}

/// The backend Service a Gateway sends a request with `version` in `x-canary-version` to: the
/// match with the most header matches wins (every path matches), the first rule on a tie.
fn backend_for(route: &Value, version: Option<&str>) -> String {
    let mut best: Option<(usize, &Value)> = None;
    for rule in route["spec"]["rules"].as_array().unwrap() {
        for m in matches_or_default(rule) {
            let headers = m["headers"].as_array().cloned().unwrap_or_default();
            let hit = headers.iter().all(|h| {
                h["name"].as_str().unwrap().eq_ignore_ascii_case("x-canary-version")
                    && h["type"] == "Exact"
                    && Some(h["value"].as_str().unwrap()) == version
            });
            if hit && best.is_none_or(|(n, _)| headers.len() > n) {
                best = Some((headers.len(), rule));
            }
        }
    }
    let (_, rule) = best.expect("some rule matches every request");
    assert_eq!(rule["backendRefs"].as_array().unwrap().len(), 1, "one backend per rule: {rule:#}");
    rule["backendRefs"][0]["name"].as_str().unwrap().to_owned()
}

fn config(text: &str) -> Config {
    Config::from_toml(text).unwrap()
}

const TWO_SERVICES: &str = r#"
[[service]]
name = "web"
listen = "127.0.0.1:8080"
stable = { version = "v1", upstreams = ["internal.infra.svc.cluster.local:80"] }
canary = { version = "v2", upstreams = ["internal.infra.svc.cluster.local:80"] }
weight = 5

[[service]]
name = "Search_API"
listen = "127.0.0.1:8081"
stable = { version = "1.10", upstreams = ["internal.infra.svc.cluster.local:80"] }
"#;

fn web() -> Value {
    let yaml = export(&config(TWO_SERVICES), Some("web"), &GatewayApiOptions::new("internal")).unwrap();
    parse_valid(&yaml).remove(0)
}

#[test]
fn the_crd_file_is_found_beside_the_repository() {
    let path = shared_schema(CRD);
    assert!(path.is_file(), "{} is missing: shared/ must sit beside the checkout", path.display());
}

#[test]
fn the_canary_header_reaches_the_canary_and_everything_else_stable() {
    let route = web();
    assert_eq!(backend_for(&route, Some("v2")), "web-v2");
    assert_eq!(backend_for(&route, Some("v1")), "web-v1");
    assert_eq!(backend_for(&route, None), "web-v1");
    assert_eq!(backend_for(&route, Some("v3")), "web-v1", "a version the route does not know goes to stable");

    let on = |version: &str| json!([{"headers": [{"type": "Exact", "name": "x-canary-version", "value": version}]}]);
    let to = |service: &str| json!([{"name": service, "port": 80}]);
    assert_eq!(
        route["spec"],
        json!({"parentRefs": [{"name": "internal"}], "rules": [
            {"name": "canary", "matches": on("v2"), "backendRefs": to("web-v2")},
            {"name": "stable", "matches": on("v1"), "backendRefs": to("web-v1")},
            {"name": "default", "backendRefs": to("web-v1")},
        ]})
    );
    assert!(route["metadata"].get("namespace").is_none());
}

#[test]
fn every_service_gets_a_valid_route_shaped_by_the_options() {
    let options = GatewayApiOptions {
        namespace: Some("shop".into()),
        parent_namespace: Some("infra".into()),
        parent_section: Some("http".into()),
        hostnames: vec!["{service}.shop.example.com".into(), "{service}.internal".into()],
        backend: "{service}-{version}-svc".into(),
        port: 8080,
        ..GatewayApiOptions::new("internal")
    };
    let yaml = export(&config(TWO_SERVICES), None, &options).unwrap();
    let docs = parse_valid(&yaml);
    let names: Vec<&str> = docs.iter().map(|d| d["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web", "search-api"]);
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "shop" && d["apiVersion"] == API_VERSION));
    assert_eq!(
        docs[0]["spec"]["parentRefs"],
        json!([{"name": "internal", "namespace": "infra", "sectionName": "http"}])
    );
    assert_eq!(docs[0]["spec"]["hostnames"], json!(["web.shop.example.com", "web.internal"]));
    assert_eq!(docs[0]["spec"]["rules"][0]["backendRefs"], json!([{"name": "web-v2-svc", "port": 8080}]));

    // Without a canary there is one rule, and the version is a string in YAML and a name in the
    // Service.
    assert_eq!(docs[1]["spec"]["hostnames"], json!(["search-api.shop.example.com", "search-api.internal"]));
    assert_eq!(
        docs[1]["spec"]["rules"],
        json!([{"name": "default", "backendRefs": [{"name": "search-api-1-10-svc", "port": 8080}]}])
    );
    assert_eq!(backend_for(&docs[1], Some("1.10")), "search-api-1-10-svc");
    assert!(yaml.contains("# Service \"Search_API\": stable 1.10 = Service search-api-1-10-svc:8080, canary none."));
}

#[test]
fn several_services_need_a_hostname_of_their_own() {
    let e = export(&config(TWO_SERVICES), None, &GatewayApiOptions::new("internal")).unwrap_err();
    assert!(matches!(e, ExportError::OneServiceOnly { .. }), "{e}");
    assert!(e.to_string().contains("--hostname \"{service}.example.com\""), "{e}");
    let fixed = GatewayApiOptions { hostnames: vec!["shop.example.com".into()], ..GatewayApiOptions::new("internal") };
    let e = export(&config(TWO_SERVICES), None, &fixed).unwrap_err();
    assert!(e.to_string().contains("--service NAME"), "{e}");
    assert!(export(&config(TWO_SERVICES), Some("web"), &fixed).is_ok());
}

#[test]
fn an_unknown_service_is_a_clear_error() {
    let e = export(&config(TWO_SERVICES), Some("shop"), &GatewayApiOptions::new("internal")).unwrap_err();
    assert_eq!(e.to_string(), "no service named \"shop\" in the configuration; it has: web, Search_API");
}

/// Changes a copy of `doc` and returns what the checks say about it, failing if they accept it.
fn broken(doc: &Value, change: impl FnOnce(&mut Value)) -> (Vec<String>, Vec<String>) {
    let mut doc = doc.clone();
    change(&mut doc);
    let (schema, rules) = (schema_problems(&doc), rule_problems(&doc));
    assert!(!schema.is_empty() || !rules.is_empty(), "accepted a broken route: {doc:#}");
    (schema, rules)
}

/// The JSON Schema must reject what the API server would: otherwise the tests above prove nothing.
#[test]
fn routes_the_schema_refuses_fail_validation() {
    let route = web();
    let (p, _) = broken(&route, |d| d["apiVersion"] = json!("gateway.networking.k8s.io/v1beta2"));
    assert!(p.iter().any(|e| e.starts_with("/apiVersion")), "{p:?}");
    let (p, _) =
        broken(&route, |d| d["spec"]["rules"][0]["matches"][0]["headers"][0]["name"] = json!("x canary version"));
    assert!(p.iter().any(|e| e.starts_with("/spec/rules/0/matches/0/headers/0/name")), "{p:?}");
    let (p, _) = broken(&route, |d| {
        let default = d["spec"]["rules"][2].clone();
        d["spec"]["rules"] = Value::Array((0..17).map(|_| default.clone()).collect());
    });
    assert!(p.iter().any(|e| e.starts_with("/spec/rules:")), "{p:?}");
    let (p, _) = broken(&route, |d| d["spec"]["hostnames"] = json!(["Shop.example.com"]));
    assert!(p.iter().any(|e| e.starts_with("/spec/hostnames/0")), "{p:?}");
    let (p, _) = broken(&route, |d| d["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!("100"));
    assert!(p.iter().any(|e| e.starts_with("/spec/rules/0/backendRefs/0/weight")), "{p:?}");
    let (p, _) = broken(&route, |d| d["spec"]["rules"][0]["backendRefs"][0]["port"] = json!(0));
    assert!(p.iter().any(|e| e.starts_with("/spec/rules/0/backendRefs/0/port")), "{p:?}");
    // A misspelt field (`backendRef` for `backendRefs`) is unknown.
    let (p, _) = broken(&route, |d| {
        let rule = d["spec"]["rules"][0].as_object_mut().unwrap();
        let refs = rule.remove("backendRefs").unwrap();
        rule.insert("backendRef".into(), refs);
    });
    assert!(p.iter().any(|e| e.contains("backendRef")), "{p:?}");
    let (p, _) = broken(&route, |d| d["spec"]["rules"][0]["matches"][0]["headers"][0]["type"] = json!("Prefix"));
    assert!(p.iter().any(|e| e.starts_with("/spec/rules/0/matches/0/headers/0/type")), "{p:?}");
    let (p, _) = broken(&route, |d| d["metadata"]["name"] = json!("Web_1"));
    assert!(p.iter().any(|e| e.starts_with("/metadata/name")), "{p:?}");
}

/// Routes the JSON Schema lets through but the API server or the Gateway refuses: the checks in
/// Rust must catch each one.
#[test]
fn routes_only_the_rules_in_rust_refuse_fail_validation() {
    let route = web();
    let rules_only = |change: &dyn Fn(&mut Value)| {
        let (schema, rules) = broken(&route, change);
        assert!(schema.is_empty(), "the JSON Schema sees this one too: {schema:?}");
        rules.join("; ")
    };
    let p = rules_only(&|d| {
        d["spec"].as_object_mut().unwrap().remove("parentRefs");
    });
    assert!(p.contains("no parentRefs"), "{p}");
    let p = rules_only(&|d| {
        d["spec"]["rules"][0]["backendRefs"][0].as_object_mut().unwrap().remove("port");
    });
    assert!(p.contains("rules[0].backendRefs[0]: a Service reference must have a port"), "{p}");
    let p = rules_only(&|d| {
        let header = d["spec"]["rules"][0]["matches"][0]["headers"][0].clone();
        let mut again = header.clone();
        again["name"] = json!("X-Canary-Version");
        d["spec"]["rules"][0]["matches"][0]["headers"] = json!([header, again]);
    });
    assert!(p.contains("\"x-canary-version\" is matched twice"), "{p}");
    // 16 rules of 8 matches each: within both maxItems, but 128 in all.
    let p = rules_only(&|d| {
        let mut rule = d["spec"]["rules"][0].clone();
        let m = rule["matches"][0].clone();
        rule["matches"] = Value::Array(vec![m; 8]);
        d["spec"]["rules"] = Value::Array(
            (0..16)
                .map(|i| {
                    let mut r = rule.clone();
                    r["name"] = json!(format!("rule-{i}"));
                    r
                })
                .collect(),
        );
    });
    assert!(p.contains("128 matches"), "{p}");
    let p = rules_only(&|d| {
        d["spec"]["rules"][1]["matches"][0]["path"] = json!({"type": "PathPrefix", "value": "/shop//cart"})
    });
    assert!(p.contains("rules[1].matches[0]: path \"/shop//cart\" must not contain"), "{p}");
    let p = rules_only(&|d| d["spec"]["rules"][1]["matches"][0]["path"] = json!({"type": "Exact", "value": "shop"}));
    assert!(p.contains("must start with '/'"), "{p}");
    let p = rules_only(&|d| d["spec"]["rules"][1]["matches"][0]["path"] = json!({"value": "/a b"}));
    assert!(p.contains("characters a URL path cannot hold"), "{p}");
    let p = rules_only(&|d| {
        d["spec"]["parentRefs"] = json!([{"name": "internal"}, {"name": "internal", "sectionName": "http"}])
    });
    assert!(p.contains("sectionName must be specified"), "{p}");
    let p = rules_only(&|d| {
        d["spec"]["parentRefs"] =
            json!([{"name": "internal", "sectionName": "http"}, {"name": "internal", "sectionName": "http"}])
    });
    assert!(p.contains("sectionName must be unique"), "{p}");
    let p = rules_only(&|d| d["spec"]["hostnames"] = json!(["10.0.0.1"]));
    assert!(p.contains("IP address"), "{p}");
    let p = rules_only(&|d| d["spec"]["rules"][1]["name"] = json!("canary"));
    assert!(p.contains("rules[1].name \"canary\" is not unique"), "{p}");
    let p = rules_only(&|d| d["spec"]["rules"][2]["backendRefs"][0]["name"] = json!("1-10"));
    assert!(p.contains("\"1-10\" is not a Service name"), "{p}");

    // A path match that keeps to the rules, and a reference to another kind without a port, pass.
    let mut fine = route.clone();
    fine["spec"]["rules"][1]["matches"][0]["path"] = json!({"type": "PathPrefix", "value": "/shop/%7Ecart"});
    fine["spec"]["rules"][2]["backendRefs"][0] = json!({"group": "example.com", "kind": "Backend", "name": "web"});
    assert_eq!(problems(&fine), Vec::<String>::new());
}
