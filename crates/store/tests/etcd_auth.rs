//! etcd with authentication enabled: the store logs in with the configured user, says clearly
//! what is wrong when it cannot, and logs in again when etcd forgets its token (a restart).

mod support {
    #[allow(dead_code, reason = "the shared etcd helper also restarts, which these tests do not need")]
    pub mod etcd_server;
}

use std::time::Duration;

use canary_store::{EtcdCredentials, Store, StoreError};
use support::etcd_server::EtcdServer;

const CANARY_PASSWORD: &str = "canary-password-for-tests";

fn user(name: &str, password: &str) -> Option<EtcdCredentials> {
    Some(EtcdCredentials { user: name.into(), password: password.into() })
}

fn denied_detail(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(StoreError::Denied { detail, .. }) => detail,
        other => panic!("expected a refusal of access, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_logs_in_and_says_what_is_wrong_when_it_cannot() {
    let server = EtcdServer::start().await;
    server.enable_auth("canary", CANARY_PASSWORD).await;

    let anonymous = server.store().await;
    let detail = denied_detail(anonymous.put("/canary/probe", b"x".to_vec()).await);
    assert!(detail.contains("set [store] username and password"), "{detail}");

    let wrong = server.store_as(user("canary", "not-the-password")).await;
    let detail = denied_detail(wrong.get("/canary/probe").await);
    assert!(detail.contains("check [store] username and password"), "{detail}");

    let canary = server.store_as(user("canary", CANARY_PASSWORD)).await;
    canary.put("/canary/probe", b"pinned".to_vec()).await.expect("the canary user writes under /canary/");
    let entry = canary.get("/canary/probe").await.unwrap().expect("written");
    assert_eq!(entry.value, b"pinned");
    let detail = denied_detail(canary.put("/elsewhere", b"x".to_vec()).await);
    assert!(detail.contains("grant the user read and write on the /canary/ prefix"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_replaced_without_an_error() {
    let server = EtcdServer::start_with(&["--auth-token-ttl=1"]).await;
    server.enable_auth("canary", CANARY_PASSWORD).await;
    let canary = server.store_as(user("canary", CANARY_PASSWORD)).await;
    canary.put("/canary/before", b"1".to_vec()).await.expect("logged in");

    // The token etcd handed out lives one idle second; the next request carries a dead one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    canary.put("/canary/after", b"2".to_vec()).await.expect("the store logs in again by itself");
    assert!(canary.get("/canary/before").await.unwrap().is_some());
}
