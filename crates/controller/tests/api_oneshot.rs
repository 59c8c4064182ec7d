//! The admin API's handlers through the router without a socket (`oneshot`): every answer is
//! the envelope, a refused call changes nothing, and rollouts are steered by their verbs.

mod support;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use canary_controller::router;
use canary_core::admin::{Access, Tokens};
use serde_json::{Value, json};
use support::{call, send, state, state_with_access};

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

/// A request as a browser or a script sends it: `headers` as given, nothing added.
fn raw(method: Method, path: &str, headers: &[(&str, &str)], body: &'static str) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body)).unwrap()
}

fn assert_envelope(what: &str, content_type: Option<&str>, envelope: &Value, code: &str) {
    assert_eq!(content_type, Some("application/json"), "{what}: not JSON");
    assert_eq!(envelope["code"], code, "{what}: {envelope}");
    for field in ["clientMessage", "systemMessage", "data"] {
        assert!(envelope.get(field).is_some(), "{what}: the envelope lacks {field}: {envelope}");
    }
}

async fn started(router: &Router) {
    let start = json!({"version": "v3", "upstreams": ["127.0.0.1:9"], "steps": "10%/1m,100%"});
    let (status, started) = api(router, Method::POST, "/api/v1/services/web/rollouts", Some(start)).await;
    assert_eq!(status, StatusCode::OK, "{started}");
}

#[tokio::test]
async fn a_cross_site_form_cannot_steer_a_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(state(dir.path(), None).await);
    started(&router).await;
    let host = ("host", "127.0.0.1:7070");
    let form = ("content-type", "application/x-www-form-urlencoded");
    let empty = ("content-length", "0");
    let pause = "/api/v1/services/web/rollout/pause";
    // What `<form method=post action=http://127.0.0.1:7070/...>` on another site sends.
    let from_a_page = [host, form, empty, ("origin", "https://evil.example"), ("sec-fetch-site", "cross-site")];
    let (status, _, answer) = send(&router, raw(Method::POST, pause, &from_a_page, "")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    // The same form from a browser that sends neither Origin nor Sec-Fetch-Site.
    let (status, content_type, answer) = send(&router, raw(Method::POST, pause, &[host, form, empty], "")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");
    assert_envelope("a bodiless form post", content_type.as_deref(), &answer, "UNSUPPORTED_MEDIA_TYPE");
    let text = ("content-type", "text/plain");
    let (status, _, _) = send(&router, raw(Method::POST, pause, &[host, text], "")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // JSON, but sent by a page of another site (a fetch with no-cors cannot send it; others can try).
    let json_type = ("content-type", "application/json");
    for foreign in [("origin", "http://localhost:3000"), ("origin", "null"), ("sec-fetch-site", "cross-site")] {
        let (status, content_type, answer) =
            send(&router, raw(Method::POST, pause, &[host, json_type, foreign], "")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{foreign:?}: {answer}");
        assert_envelope("a foreign page", content_type.as_deref(), &answer, "PERMISSION_DENIED");
    }
    let delete = raw(Method::DELETE, "/api/v1/services/web/canary", &[host], "");
    assert_eq!(send(&router, delete).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE, "a bodiless DELETE needs JSON too");
    let (_, still) = api(&router, Method::GET, "/api/v1/services/web/rollout", None).await;
    assert_eq!(still["data"]["phase"], "progressing", "a refused request changed the rollout");

    // The dashboard's own page, and a script that says JSON, may.
    let own = [host, json_type, ("origin", "http://127.0.0.1:7070"), ("sec-fetch-site", "same-origin")];
    let (status, _, paused) = send(&router, raw(Method::POST, pause, &own, "")).await;
    assert_eq!((status, paused["data"]["phase"].as_str()), (StatusCode::OK, Some("paused")), "{paused}");
    let resume = "/api/v1/services/web/rollout/resume";
    let (status, _, resumed) = send(&router, raw(Method::POST, resume, &[host, json_type], "")).await;
    assert_eq!((status, resumed["data"]["phase"].as_str()), (StatusCode::OK, Some("progressing")), "{resumed}");
}

#[tokio::test]
async fn names_the_listener_does_not_answer_to_are_misdirected() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(state(dir.path(), None).await);
    for path in ["/api/v1/services", "/", "/metrics", "/dashboard/app.js"] {
        let (status, content_type, answer) =
            send(&router, raw(Method::GET, path, &[("host", "evil.example:7070")], "")).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{path}: {answer}");
        assert_envelope(path, content_type.as_deref(), &answer, "MISDIRECTED_REQUEST");
    }
    for host in ["localhost:1234", "127.0.0.1:7070", "[::1]:7070", "LOCALHOST"] {
        let (status, _, answer) = send(&router, raw(Method::GET, "/api/v1/services", &[("host", host)], "")).await;
        assert_eq!(status, StatusCode::OK, "{host}: {answer}");
    }
    // Probes answer any name: load balancers and kubelets send the node's address.
    let (status, _, _) = send(&router, raw(Method::GET, "/healthz", &[("host", "10.1.2.3:7070")], "")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn every_answer_under_the_api_is_the_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(state(dir.path(), None).await);
    let host = ("host", "127.0.0.1:7070");
    let json_type = ("content-type", "application/json");
    let cases = [
        (Method::GET, "/api/v1/services/web/events?limit=abc", StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        (Method::GET, "/api/v1/services/web/events?limit=5&since=1", StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        (Method::GET, "/api/v1/services/%FF", StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        (Method::GET, "/api/v1/services/%FF/rollout", StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        (Method::POST, "/api/v1/stream", StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
        (Method::GET, "/api/v1/stream", StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        (Method::GET, "/api/v1/nope", StatusCode::NOT_FOUND, "NOT_FOUND"),
        (Method::GET, "/api/v1", StatusCode::NOT_FOUND, "NOT_FOUND"),
        (Method::GET, "/api/v1/", StatusCode::NOT_FOUND, "NOT_FOUND"),
        (Method::GET, "/api/v1/services/", StatusCode::NOT_FOUND, "NOT_FOUND"),
        (Method::DELETE, "/api/v1/services", StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
        (Method::PATCH, "/api/v1/services/web", StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
        (Method::OPTIONS, "/api/v1/services/web/weight", StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
        (Method::POST, "/api/v1/services/web/rollout/explode", StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
    ];
    for (method, path, expected, code) in cases {
        let what = format!("{method} {path}");
        let (status, content_type, answer) = send(&router, raw(method, path, &[host, json_type], "")).await;
        assert_eq!(status, expected, "{what}: {answer}");
        assert_envelope(&what, content_type.as_deref(), &answer, code);
    }
}

#[tokio::test]
async fn a_read_token_sees_and_only_the_admin_token_acts() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens {
        admin: Some("admin-secret".into()),
        read: Some("read-secret".into()),
        metrics: Some("metrics-secret".into()),
    };
    let access = Access { tokens, ..Access::default() };
    let router = router(state_with_access(dir.path(), access, Default::default()).await);
    let (status, _, body) = call(&router, Method::GET, "/api/v1/services/web", Some("read-secret"), None).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let weight = Some(json!({"weight": 5}));
    let path = "/api/v1/services/web/weight";
    let (status, content_type, body) = call(&router, Method::PUT, path, Some("read-secret"), weight.clone()).await;
    let envelope: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{envelope}");
    assert_envelope("a change with the read token", content_type.as_deref(), &envelope, "PERMISSION_DENIED");
    for action in ["pause", "abort"] {
        let path = format!("/api/v1/services/web/rollout/{action}");
        let (status, _, _) = call(&router, Method::POST, &path, Some("read-secret"), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{action}");
    }
    let (status, _, _) = call(&router, Method::GET, "/api/v1/services", Some("metrics-secret"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the metrics token opens no API");
    let (status, _, _) = call(&router, Method::GET, "/api/v1/services", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = call(&router, Method::PUT, path, Some("admin-secret"), weight).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));

    // `/metrics` takes the metrics token, or any token that may read.
    let (status, content_type, body) = call(&router, Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let envelope: Value = serde_json::from_slice(&body).unwrap();
    assert_envelope("/metrics without a token", content_type.as_deref(), &envelope, "UNAUTHENTICATED");
    assert_eq!(call(&router, Method::GET, "/metrics", Some("nope"), None).await.0, StatusCode::UNAUTHORIZED);
    for token in ["metrics-secret", "read-secret", "admin-secret"] {
        assert_eq!(call(&router, Method::GET, "/metrics", Some(token), None).await.0, StatusCode::OK, "{token}");
    }
    // The probes stay open for load balancers.
    assert_eq!(call(&router, Method::GET, "/healthz", None, None).await.0, StatusCode::OK);
}
