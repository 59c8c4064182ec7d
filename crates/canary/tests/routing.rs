//! Sticky assignment through a real gateway process: stickiness, weights, pins, overrides.

mod support;

use std::collections::HashMap;

use futures_util::StreamExt;
use support::{Gateway, Upstream, client, config, get_as, pin_of, version_of};

async fn versions_of(gateway: &Gateway, keys: &[String]) -> HashMap<String, String> {
    let client = client();
    futures_util::stream::iter(keys.iter().cloned())
        .map(|key| {
            let client = client.clone();
            async move {
                let response = get_as(&client, gateway, &key, None).await;
                assert_eq!(response.status(), 200);
                let version = version_of(&response);
                assert_eq!(response.headers()["x-served-by"], version.as_str(), "header and upstream disagree");
                assert_eq!(response.headers()["x-seen-canary-version"], version.as_str());
                (key, version)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

fn canary_share(assignment: &HashMap<String, String>) -> f64 {
    let canary = assignment.values().filter(|v| *v == "v2").count();
    100.0 * canary as f64 / assignment.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keys_are_sticky_and_split_by_weight() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 10.0, ""));
    let keys = keys(10_000);
    let first = versions_of(&gateway, &keys).await;
    let mut reversed = keys.clone();
    reversed.reverse();
    let second = versions_of(&gateway, &reversed).await;
    assert_eq!(first, second, "some keys changed version between two passes");
    let share = canary_share(&first);
    assert!((share - 10.0).abs() <= 1.0, "canary share {share}% at weight 10%");
    assert_eq!(v1.hits() + v2.hits(), 20_000);
    assert_eq!(v2.hits() as f64 / 200.0, share, "upstream hit counts disagree with the headers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_weight_never_moves_a_key_back_to_stable() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 0.0, ""));
    let keys = keys(10_000);
    let mut before = versions_of(&gateway, &keys).await;
    assert_eq!(canary_share(&before), 0.0);
    for weight in [1.0, 5.0, 25.0, 50.0, 100.0] {
        gateway.set_weight("web", weight).await;
        let after = versions_of(&gateway, &keys).await;
        let moved_back = keys.iter().filter(|k| before[*k] == "v2" && after[*k] == "v1").count();
        assert_eq!(moved_back, 0, "{moved_back} keys moved canary -> stable at {weight}%");
        let share = canary_share(&after);
        assert!((share - weight).abs() <= 1.0, "canary share {share}% at weight {weight}%");
        before = after;
    }
}

/// A user that the bucket puts on stable at `low` and on the canary at `high`.
async fn user_moving_between(gateway: &Gateway, low: f64, high: f64) -> String {
    let keys = keys(2_000);
    gateway.set_weight("web", low).await;
    let at_low = versions_of(gateway, &keys).await;
    gateway.set_weight("web", high).await;
    let at_high = versions_of(gateway, &keys).await;
    keys.into_iter().find(|k| at_low[k] == "v1" && at_high[k] == "v2").expect("some user moves")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_pin_holds_its_version_across_a_weight_rise() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 0.0, ""));
    let user = user_moving_between(&gateway, 10.0, 60.0).await;
    gateway.set_weight("web", 10.0).await;
    let client = client();
    let first = get_as(&client, &gateway, &user, None).await;
    assert_eq!(version_of(&first), "v1");
    let pin = pin_of(&first).expect("first response sets a pin");
    gateway.set_weight("web", 60.0).await;
    let cookie = format!("canary_pin={pin}");
    for _ in 0..5 {
        let asset = get_as(&client, &gateway, &user, Some(&cookie)).await;
        assert_eq!(version_of(&asset), "v1", "a pinned subresource request changed version");
    }
    // A top-level navigation is a session boundary: the bucket decides again.
    let navigation = client
        .get(gateway.url("web", "/"))
        .header("x-user-id", &user)
        .header("cookie", &cookie)
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .send()
        .await
        .unwrap();
    assert_eq!(version_of(&navigation), "v2");
    assert!(pin_of(&navigation).unwrap().contains(".v2."), "navigation re-pins to the new version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_to_a_zero_weight_canary_and_forged_pins_are_ignored() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 100.0, ""));
    let client = client();
    let response = get_as(&client, &gateway, "someone", None).await;
    assert_eq!(version_of(&response), "v2");
    let canary_pin = format!("canary_pin={}", pin_of(&response).unwrap());
    assert_eq!(version_of(&get_as(&client, &gateway, "someone", Some(&canary_pin)).await), "v2");
    gateway.set_weight("web", 0.0).await;
    let after = get_as(&client, &gateway, "someone", Some(&canary_pin)).await;
    assert_eq!(version_of(&after), "v1", "a pin to a 0% canary was honoured");
    assert!(pin_of(&after).unwrap().contains(".v1."), "the stale pin is replaced");

    // Forged: a pin to v2 signed with another secret, and one with a tampered version.
    gateway.set_weight("web", 0.01).await;
    let stable_user = "u0";
    let real = pin_of(&get_as(&client, &gateway, stable_user, None).await).unwrap();
    assert!(real.contains(".v1."));
    let tampered = format!("canary_pin={}", real.replacen(".v1.", ".v2.", 1));
    let invented = "canary_pin=web-v2.v2.99999999999.AAAAAAAAAAAAAAAAAAAAAA".to_owned();
    for forged in [tampered, invented] {
        let response = get_as(&client, &gateway, stable_user, Some(&forged)).await;
        assert_eq!(version_of(&response), "v1", "forged pin {forged} was honoured");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_pinned_to_stable_stay_there_at_full_weight() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 0.0, ""));
    let client = client();
    let first = get_as(&client, &gateway, "loyal", None).await;
    let cookie = format!("canary_pin={}", pin_of(&first).unwrap());
    gateway.set_weight("web", 100.0).await;
    assert_eq!(version_of(&get_as(&client, &gateway, "loyal", Some(&cookie)).await), "v1");
    assert_eq!(version_of(&get_as(&client, &gateway, "newcomer", None).await), "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_override_header_works_from_trusted_addresses_only() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let extra = "trusted_cidrs = [\"127.0.0.2/32\"]\nforce_token = \"qa-token-1234567890\"";
    let gateway = Gateway::start(&config(&v1, &v2, 0.0, extra));
    let untrusted = client();
    let trusted =
        reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let force = |c: &reqwest::Client, value: &str| {
        c.get(gateway.url("web", "/")).header("x-user-id", "qa").header("x-canary-force", value).send()
    };
    assert_eq!(version_of(&force(&untrusted, "canary").await.unwrap()), "v1", "untrusted override honoured");
    let forced = force(&trusted, "canary").await.unwrap();
    assert_eq!(version_of(&forced), "v2");
    assert!(pin_of(&forced).is_none(), "a forced request must not pin the session");
    gateway.set_weight("web", 100.0).await;
    assert_eq!(version_of(&force(&trusted, "stable").await.unwrap()), "v1");
    // The token makes any address trusted, and never reaches the upstream.
    let with_token = untrusted
        .get(gateway.url("web", "/"))
        .header("x-user-id", "qa")
        .header("x-canary-force", "stable")
        .header("x-canary-force-token", "qa-token-1234567890")
        .send()
        .await
        .unwrap();
    assert_eq!(version_of(&with_token), "v1");
    assert_eq!(with_token.headers()["x-seen-force-token"], "");
    let wrong_token = untrusted
        .get(gateway.url("web", "/"))
        .header("x-user-id", "qa")
        .header("x-canary-force", "stable")
        .header("x-canary-force-token", "guess")
        .send()
        .await
        .unwrap();
    assert_eq!(version_of(&wrong_token), "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_users_get_a_minted_id_and_stay_sticky() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 50.0, ""));
    let client = client();
    for _ in 0..20 {
        let first = client.get(gateway.url("web", "/")).send().await.unwrap();
        let cookies: Vec<String> = first
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect();
        let uid = cookies.iter().find(|c| c.starts_with("canary_uid=")).expect("uid cookie minted");
        let version = version_of(&first);
        for _ in 0..3 {
            let again = client.get(gateway.url("web", "/")).header("cookie", uid.as_str()).send().await.unwrap();
            assert_eq!(version_of(&again), version);
            assert!(
                again.headers().get_all("set-cookie").iter().all(|c| !c.to_str().unwrap().starts_with("canary_uid="))
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_key_source_is_used_when_the_header_is_absent() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&config(&v1, &v2, 50.0, ""));
    let client = client();
    for i in 0..200 {
        let key = format!("user-{i}");
        let by_header = version_of(&get_as(&client, &gateway, &key, None).await);
        let by_cookie =
            client.get(gateway.url("web", "/")).header("cookie", format!("uid={key}")).send().await.unwrap();
        assert_eq!(version_of(&by_cookie), by_header, "cookie uid and header disagree for {key}");
    }
}
