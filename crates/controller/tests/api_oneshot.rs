//! The admin API's handlers through the router without a socket (`oneshot`): every answer is
//! the envelope, a refused call changes nothing, and rollouts are steered by their verbs.

mod support;

use axum::Router;
use axum::http::{Method, StatusCode};
use canary_controller::router;
use serde_json::{Value, json};
use support::{call, state};

async fn api(router: &Router, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let (status, content_type, body) = call(router, method, path, None, body).await;
    assert_eq!(content_type.as_deref(), Some("application/json"), "{path}: every answer is JSON");
    let envelope: Value = serde_json::from_slice(&body).unwrap();
    for field in ["code", "clientMessage", "systemMessage", "data"] {
        assert!(envelope.get(field).is_some(), "{path}: the envelope lacks {field}: {envelope}");
    }
    (status, envelope)
}

#[tokio::test]
async fn services_are_listed_and_their_weight_changes_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(state(dir.path(), None).await);
    let (status, list) = api(&router, Method::GET, "/api/v1/services", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"][0]["name"], "web");
    assert_eq!(list["data"][0]["canary"]["version"], "v2");

    let (status, set) = api(&router, Method::PUT, "/api/v1/services/web/weight", Some(json!({"weight": 12.5}))).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["data"]["weight"], 12.5);
    let (_, again) = api(&router, Method::GET, "/api/v1/services/web", None).await;
    assert_eq!(again["data"]["weight"], 12.5, "the next read sees the stored weight");
    assert_eq!(again["data"]["generation"].as_u64(), set["data"]["generation"].as_u64());
}

#[tokio::test]
async fn bad_calls_get_the_envelope_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(state(dir.path(), None).await);
    let (status, missing) = api(&router, Method::GET, "/api/v1/services/nope", None).await;
    assert_eq!((status, missing["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")));
    let (status, bad) = api(&router, Method::PUT, "/api/v1/services/web/weight", Some(json!({"weight": 101}))).await;
    assert_eq!((status, bad["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")), "{bad}");
    let (_, unchanged) = api(&router, Method::GET, "/api/v1/services/web", None).await;
    assert_eq!(unchanged["data"]["weight"], 0.0);
    let (status, _) = api(&router, Method::DELETE, "/api/v1/services/web/weight", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_rollout_holds_the_lock_until_it_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(state(dir.path(), None).await);
    let start = json!({"version": "v3", "upstreams": ["127.0.0.1:9"], "steps": "10%/1m,100%"});
    let (status, started) = api(&router, Method::POST, "/api/v1/services/web/rollouts", Some(start.clone())).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let (status, second) = api(&router, Method::POST, "/api/v1/services/web/rollouts", Some(start)).await;
    assert_eq!((status, second["code"].as_str()), (StatusCode::CONFLICT, Some("ROLLOUT_IN_PROGRESS")));
    let (status, weight) = api(&router, Method::PUT, "/api/v1/services/web/weight", Some(json!({"weight": 50}))).await;
    assert_eq!((status, weight["code"].as_str()), (StatusCode::CONFLICT, Some("ROLLOUT_IN_PROGRESS")));
    let (status, resumed) = api(&router, Method::POST, "/api/v1/services/web/rollout/resume", None).await;
    assert_eq!((status, resumed["code"].as_str()), (StatusCode::CONFLICT, Some("FAILED_PRECONDITION")));
    let abort = Some(json!({"reason": "a test"}));
    let (status, aborted) = api(&router, Method::POST, "/api/v1/services/web/rollout/abort", abort).await;
    assert_eq!(status, StatusCode::OK, "{aborted}");
    assert_eq!(aborted["data"]["phase"], "aborted", "{aborted}");
    let (_, service) = api(&router, Method::GET, "/api/v1/services/web", None).await;
    assert_eq!(service["data"]["weight"], 0.0, "aborted: everyone on stable");
}

#[tokio::test]
async fn a_firing_alert_for_the_service_rolls_its_rollout_back() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(state(dir.path(), None).await);
    let start = json!({"version": "v3", "upstreams": ["127.0.0.1:9"], "steps": "10%/1m,100%"});
    let (status, _) = api(&router, Method::POST, "/api/v1/services/web/rollouts", Some(start)).await;
    assert_eq!(status, StatusCode::OK);
    // Alertmanager's webhook payload, version 4, as it sends it.
    let notification = |status: &str, service: &str| {
        json!({
            "version": "4", "groupKey": "{}:{alertname=\"CheckoutErrors\"}", "status": status,
            "receiver": "canary", "groupLabels": {"alertname": "CheckoutErrors"},
            "commonLabels": {"alertname": "CheckoutErrors", "service": service},
            "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "truncatedAlerts": 0,
            "alerts": [{
                "status": status,
                "labels": {"alertname": "CheckoutErrors", "service": service, "severity": "page"},
                "annotations": {"summary": "checkout success below 99 %"},
                "startsAt": "2026-12-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph", "fingerprint": "c0ffee"
            }]
        })
    };
    let (status, other) = api(&router, Method::POST, "/api/v1/alerts", Some(notification("firing", "api"))).await;
    assert_eq!(status, StatusCode::OK, "{other}");
    assert_eq!(other["data"]["unmatched"], 1, "another service's alert stops nothing");
    let (status, resolved) = api(&router, Method::POST, "/api/v1/alerts", Some(notification("resolved", "web"))).await;
    assert_eq!((status, resolved["data"]["rolledBack"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    let (_, still) = api(&router, Method::GET, "/api/v1/services/web/rollout", None).await;
    assert_eq!(still["data"]["phase"], "progressing");

    let (status, fired) = api(&router, Method::POST, "/api/v1/alerts", Some(notification("firing", "web"))).await;
    assert_eq!(status, StatusCode::OK, "{fired}");
    assert_eq!(fired["data"]["rolledBack"].as_array().unwrap().len(), 1, "{fired}");
    let (_, rollout) = api(&router, Method::GET, "/api/v1/services/web/rollout", None).await;
    assert_eq!(rollout["data"]["phase"], "failed");
    let reason = rollout["data"]["reason"].as_str().unwrap();
    assert_eq!(reason, "alert CheckoutErrors firing: checkout success below 99 %");
    let (status, bad) = api(&router, Method::POST, "/api/v1/alerts", Some(json!({"nope": 1}))).await;
    assert_eq!((status, bad["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")));
}

#[tokio::test]
async fn a_rollout_takes_its_team_metrics_from_the_request_checked_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(state(dir.path(), None).await);
    let start = |metric: Value| json!({"version": "v3", "upstreams": ["127.0.0.1:9"], "steps": "10%/1m,100%", "analysis": {"teamMetrics": [metric]}});
    let failures = json!({
        "name": "checkout_failures", "kind": "ratio", "direction": "lower-is-better",
        "events": "sum(checkouts_total{version=\"{version}\",outcome=\"failed\"})",
        "trials": "sum(checkouts_total{version=\"{version}\"})",
    });
    let path = "/api/v1/services/web/rollouts";
    // This controller has no [metrics] Prometheus, so the metric must name its own.
    let (status, refused) = api(&router, Method::POST, path, Some(start(failures.clone()))).await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")));
    assert!(refused["clientMessage"].as_str().unwrap().contains("no Prometheus to ask"), "{refused}");
    let mut typo = failures.clone();
    typo["events"] = json!("sum(checkouts_total{version=\"{verison}\"})");
    let (status, refused) = api(&router, Method::POST, path, Some(start(typo))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(refused.to_string().contains("unknown placeholder {verison}"), "{refused}");
    let (_, none) = api(&router, Method::GET, "/api/v1/services/web/rollout", None).await;
    assert_eq!(none["code"], "NOT_FOUND", "a refused start leaves nothing behind: {none}");

    let mut own = failures;
    own["prometheus"] = json!("http://127.0.0.1:9");
    let (status, started) = api(&router, Method::POST, path, Some(start(own))).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let (_, current) = api(&router, Method::GET, "/api/v1/services/web/rollout", None).await;
    let kept = &current["data"]["analysis"]["teamMetrics"];
    assert_eq!(
        (kept[0]["name"].as_str(), kept[0]["prometheus"].as_str()),
        (Some("checkout_failures"), Some("http://127.0.0.1:9"))
    );
}
