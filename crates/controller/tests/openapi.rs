//! `GET /api/v1/openapi.json`: the admin router answers it without a socket (`oneshot`), the
//! document is valid OpenAPI 3.1 by an independent validator, and it lists exactly the routes
//! the router serves under `/api/v1`, method by method.
//!
//! The state is the real one `canary serve` builds, on an embedded store in a temporary folder
//! (see `support`).

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use axum::Router;
use axum::http::{Method, StatusCode};
use canary_controller::router;
use serde_json::Value;
use support::{call, state};

/// The pinned version `.ci/run` installs.
const VALIDATOR: &str = "openapi-spec-validator==0.9.0";

async fn served_document(router: &Router) -> Value {
    let (status, content_type, body) = call(router, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    serde_json::from_slice(&body).expect("the document is JSON")
}

#[tokio::test]
async fn the_admin_router_serves_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(state(dir.path(), None).await);
    let doc = served_document(&router).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Sticky Canary admin API");
    assert_eq!(doc, serde_json::to_value(canary_controller::api::openapi::document()).unwrap());

    // The answers are documented as the envelope around their data.
    let weight = &doc["paths"]["/api/v1/services/{name}/weight"]["put"];
    let ok = &weight["responses"]["200"]["content"]["application/json"]["schema"];
    let envelope = resolve(&doc, ok);
    let required: Vec<&str> = envelope["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(required, ["code", "clientMessage", "systemMessage", "data"], "{envelope:#}");
    assert!(weight["responses"]["409"].is_object() && weight["responses"]["401"].is_object(), "{weight:#}");
    let codes = &resolve(&doc, &envelope["properties"]["code"])["enum"];
    assert!(codes.as_array().unwrap().contains(&Value::from("ROLLOUT_IN_PROGRESS")), "{codes}");
    let body = &weight["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(resolve(&doc, &resolve(&doc, body)["properties"]["weight"])["maximum"], 100, "{doc:#}");
}

#[tokio::test]
async fn the_document_is_behind_the_token_like_the_rest_of_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(state(dir.path(), Some("s3cret")).await);
    let (status, _, body) = call(&router, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["code"], "UNAUTHENTICATED");
    let (status, _, body) = call(&router, Method::GET, "/api/v1/openapi.json", Some("s3cret"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["openapi"], "3.1.0");
}

/// Follows a `$ref` into `components`, or returns the schema as it is.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.strip_prefix("#/components/schemas/").expect("a local schema reference");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// Runs the Python `openapi-spec-validator` on `doc`, as OpenAPI 3.1.
fn validate(doc: &Value) -> std::process::Output {
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    std::fs::write(file.path(), serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let run = Command::new("python3")
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): install Python 3 and `pip install {VALIDATOR}`"));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !stderr.contains("No module named openapi_spec_validator"),
        "the validator is missing: `python3 -m pip install {VALIDATOR}` (.ci/run does)"
    );
    run
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let dir = tempfile::tempdir().unwrap();
    let doc = served_document(&router(state(dir.path(), None).await)).await;
    let run = validate(&doc);
    let said = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "openapi-spec-validator refused the document:\n{said}");
    assert!(said.contains("OK"), "{said}");

    // The validator must refuse what is not OpenAPI, or the check above proves nothing.
    let mut broken = doc.clone();
    broken["paths"]["/api/v1/services/{name}"]["get"]["parameters"] = Value::Array(Vec::new());
    assert!(!validate(&broken).status.success(), "accepted a path parameter without its definition");
    let mut broken = doc;
    broken["paths"]["/api/v1/services"]["get"]["responses"]["200"].as_object_mut().unwrap().remove("description");
    assert!(!validate(&broken).status.success(), "accepted a response without a description");
}

/// The methods an OpenAPI path item can hold, but `head`: axum answers HEAD for every GET.
const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "patch", "trace"];

/// The `(method, path)` pairs the document lists.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().unwrap();
    paths
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().unwrap().keys().filter(|m| METHODS.contains(&m.as_str()));
            methods.map(move |m| (m.clone(), path.clone()))
        })
        .collect()
}

/// The route paths under `/api/v1` in the router's route table, as axum prints it.
fn route_table_paths(router: &Router) -> BTreeSet<String> {
    let table = format!("{router:?}");
    let quoted = table.split('"').skip(1).step_by(2);
    let paths: BTreeSet<String> = quoted.filter(|s| s.starts_with("/api/v1")).map(str::to_owned).collect();
    assert!(paths.contains("/api/v1/services/{name}"), "cannot read the route table: {table}");
    paths
}

/// A request path for a route path: its parameters filled with values of the test state.
fn concrete(path: &str) -> String {
    path.replace("{name}", "web").replace("{action}", "pause").replace("{id}", "train-0")
}

/// The `(method, path)` pairs the router serves under `/api/v1`: every path of its route table,
/// with each method the router does not refuse itself (`405`, or the fallback's "no route").
/// No handler answers `405`: only the router's method check does.
async fn served(router: &Router) -> BTreeSet<(String, String)> {
    let mut served = BTreeSet::new();
    for path in route_table_paths(router) {
        assert!(!concrete(&path).contains('{'), "no test value for a parameter of {path}");
        for method in METHODS {
            let http_method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let (status, _, body) = call(router, http_method, &concrete(&path), None, None).await;
            let no_route =
                status == StatusCode::NOT_FOUND && String::from_utf8_lossy(&body).contains("matches no route");
            if status != StatusCode::METHOD_NOT_ALLOWED && !no_route {
                served.insert((method.to_owned(), path.clone()));
            }
        }
    }
    served
}

#[tokio::test]
async fn every_route_served_is_documented_and_every_documented_route_served() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(state(dir.path(), None).await);
    let doc = served_document(&router).await;
    let documented = documented(&doc);
    let served = served(&router).await;
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served but not documented"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not served"
    );
    for route in [("put", "/api/v1/services/{name}/canary"), ("delete", "/api/v1/services/{name}/canary")] {
        assert!(served.contains(&(route.0.to_owned(), route.1.to_owned())), "{route:?} missing from {served:?}");
    }
    assert!(served.contains(&("get".to_owned(), "/api/v1/stream".to_owned())), "{served:?}");
    assert_eq!(served.len(), 15, "{served:#?}");
}

#[tokio::test]
async fn the_document_lists_the_approval_actions_and_phase() {
    let dir = tempfile::tempdir().unwrap();
    let doc = served_document(&router(state(dir.path(), None).await)).await;
    let act = &doc["paths"]["/api/v1/services/{name}/rollout/{action}"]["post"];
    let action = act["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "action").expect("the action");
    let actions = &resolve(&doc, &action["schema"])["enum"];
    for name in ["promote", "abort", "pause", "resume", "approve", "reject"] {
        assert!(actions.as_array().unwrap().contains(&Value::from(name)), "{name} missing from {actions}");
    }
    let body = resolve(&doc, &doc["components"]["schemas"]["ActionBody"]);
    assert!(body["properties"]["by"].is_object(), "{body:#}");
    let phase = resolve(&doc, &doc["components"]["schemas"]["Phase"]);
    assert!(phase["enum"].as_array().unwrap().contains(&Value::from("awaitingApproval")), "{phase:#}");
}
