//! The admin API through a real process: the envelope on every answer, bad input refused with
//! a clear message and nothing changed, the token, `/metrics` and the probes.

mod support;

use serde_json::{Value, json};
use support::{Gateway, Upstream, client, config, get_as, version_of};

fn assert_envelope(body: &Value, code: &str) {
    assert_eq!(body["code"], code, "{body}");
    assert!(body["clientMessage"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body.get("systemMessage").is_some() && body.get("data").is_some(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_changes_through_the_api() {
    let (v1, v2, v3) = (Upstream::start("v1").await, Upstream::start("v2").await, Upstream::start("v3").await);
    let gateway = Gateway::start(&config(&v1, &v2, 0.0, ""));
    let (status, body) = gateway.get("/api/v1/services").await;
    assert_eq!(status, 200);
    assert_envelope(&body, "OK");
    assert_eq!(body["data"][0]["name"], "web");
    assert_eq!(body["data"][0]["canary"]["version"], "v2");

    let (status, body) = gateway.put("/api/v1/services/web/weight", json!({"weight": 12.5})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["weight"], 12.5);

    let canary = json!({"version": "v3", "upstreams": [v3.addr.to_string()], "weight": 100});
    let (status, body) = gateway.put("/api/v1/services/web/canary", canary).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["rolloutId"], "web-v3");
    let client = client();
    assert_eq!(version_of(&get_as(&client, &gateway, "anyone", None).await), "v3");

    let response = client
        .delete(format!("{}/api/v1/services/web/canary", gateway.admin))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(version_of(&get_as(&client, &gateway, "anyone", None).await), "v1");
    let (_, body) = gateway.get("/api/v1/services/web").await;
    assert_eq!(body["data"]["canary"], Value::Null);
    assert_eq!(body["data"]["weight"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 10.0, ""));
    let (_, before) = gateway.get("/api/v1/services/web").await;
    let http = client();
    let put_raw = |path: &str, content_type: &str, body: &'static str| {
        http.put(format!("{}{path}", gateway.admin)).header("content-type", content_type).body(body).send()
    };
    let cases = [
        (
            put_raw("/api/v1/services/web/weight", "application/json", r#"{"weight": 150}"#).await.unwrap(),
            400,
            "INVALID_ARGUMENT",
            "out of range",
        ),
        (
            put_raw("/api/v1/services/web/weight", "application/json", r#"{"weight": 0.001}"#).await.unwrap(),
            400,
            "INVALID_ARGUMENT",
            "0.01",
        ),
        (
            put_raw("/api/v1/services/web/weight", "application/json", r#"{"weight": "#).await.unwrap(),
            400,
            "INVALID_ARGUMENT",
            "not valid JSON",
        ),
        (
            put_raw("/api/v1/services/web/weight", "application/json", r#"{"wieght": 5}"#).await.unwrap(),
            400,
            "INVALID_ARGUMENT",
            "wieght",
        ),
        (
            put_raw("/api/v1/services/web/weight", "text/plain", r#"{"weight": 5}"#).await.unwrap(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "JSON",
        ),
        (
            put_raw("/api/v1/services/nope/weight", "application/json", r#"{"weight": 5}"#).await.unwrap(),
            404,
            "NOT_FOUND",
            "nope",
        ),
        (
            put_raw(
                "/api/v1/services/web/canary",
                "application/json",
                r#"{"version": "v1", "upstreams": ["127.0.0.1:1"]}"#,
            )
            .await
            .unwrap(),
            400,
            "INVALID_ARGUMENT",
            "stable",
        ),
        (
            put_raw(
                "/api/v1/services/web/canary",
                "application/json",
                r#"{"version": "v 9", "upstreams": ["127.0.0.1:1"]}"#,
            )
            .await
            .unwrap(),
            400,
            "INVALID_ARGUMENT",
            "may only contain",
        ),
        (
            put_raw("/api/v1/services/web/canary", "application/json", r#"{"version": "v9", "upstreams": []}"#)
                .await
                .unwrap(),
            400,
            "INVALID_ARGUMENT",
            "at least one",
        ),
        (
            put_raw(
                "/api/v1/services/web/canary",
                "application/json",
                r#"{"version": "v9", "upstreams": ["no-port"]}"#,
            )
            .await
            .unwrap(),
            400,
            "INVALID_ARGUMENT",
            "host:port",
        ),
        (put_raw("/api/v1/nothing-here", "application/json", "{}").await.unwrap(), 404, "NOT_FOUND", "endpoint"),
        (put_raw("/api/v1/services", "application/json", "{}").await.unwrap(), 405, "METHOD_NOT_ALLOWED", "PUT"),
    ];
    for (response, status, code, needle) in cases {
        assert_eq!(response.status().as_u16(), status);
        let body: Value = response.json().await.unwrap();
        assert_envelope(&body, code);
        assert!(body["clientMessage"].as_str().unwrap().contains(needle), "{needle:?} not in {body}");
    }
    let (_, after) = gateway.get("/api/v1/services/web").await;
    assert_eq!(before["data"], after["data"], "a refused call changed the routing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_canary_then_setting_weight_is_a_failed_precondition() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 10.0, ""));
    let client = client();
    client
        .delete(format!("{}/api/v1/services/web/canary", gateway.admin))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let (status, body) = gateway.put("/api/v1/services/web/weight", json!({"weight": 5})).await;
    assert_eq!(status, 409);
    assert_envelope(&body, "FAILED_PRECONDITION");
    let response = client
        .delete(format!("{}/api/v1/services/web/canary", gateway.admin))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_guards_the_api_but_not_the_probes() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let text = config(&v1, &v2, 0.0, "").replace(
        "listen = \"127.0.0.1:0\"\n\n[gateway]",
        "listen = \"127.0.0.1:0\"\ntoken = \"s3cret-admin\"\n\n[gateway]",
    );
    let gateway = Gateway::start(&text);
    let client = client();
    let url = format!("{}/api/v1/services", gateway.admin);
    let denied = client.get(&url).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    assert_envelope(&denied.json().await.unwrap(), "UNAUTHENTICATED");
    assert_eq!(client.get(&url).bearer_auth("wrong").send().await.unwrap().status(), 401);
    assert_eq!(client.get(&url).bearer_auth("s3cret-admin").send().await.unwrap().status(), 200);
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let response = client.get(format!("{}{probe}", gateway.admin)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{probe}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_per_version_and_status_class() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 0.0, ""));
    let client = client();
    for path in ["/", "/", "/status/503", "/status/404"] {
        client.get(gateway.url("web", path)).header("x-user-id", "m").send().await.unwrap();
    }
    let text = gateway.metrics().await;
    for line in [
        r#"canary_requests_total{service="web",version="v1",code_class="2xx"} 2"#,
        r#"canary_requests_total{service="web",version="v1",code_class="5xx"} 1"#,
        r#"canary_requests_total{service="web",version="v1",code_class="4xx"} 1"#,
        r#"canary_request_duration_seconds_count{service="web",version="v1"} 4"#,
        r#"canary_routing_decisions_total{service="web",version="v1",reason="bucket"} 4"#,
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
}
