//! The store contract, restarts, compaction and leader election against a real etcd.
//!
//! Each test starts its own etcd (`/usr/bin/etcd`, or `$ETCD_BIN`) on free loopback ports and
//! kills it when done. Without the binary these tests fail: CI installs `etcd-server`.

mod conformance;
mod support {
    #[allow(dead_code, reason = "the shared etcd helper also sets up authentication, tested elsewhere")]
    pub mod etcd_server;
}

use std::sync::Arc;
use std::time::Duration;

use canary_store::{EventKind, PrefixFollower, Store, StoreError, Txn, WatchStream};
use futures_util::StreamExt;
use support::etcd_server::EtcdServer;
use tokio::time::{Instant, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_keeps_the_store_contract() {
    let server = EtcdServer::start().await;
    let store: Arc<dyn Store> = Arc::new(server.store().await);
    conformance::run_all(store, "/conformance/").await;
}

/// Calls `follower.next()` until `done` holds, tolerating the errors a restart causes.
async fn follow_until(
    follower: &mut PrefixFollower,
    limit: Duration,
    done: impl Fn(&PrefixFollower) -> bool,
) -> Vec<StoreError> {
    let deadline = Instant::now() + limit;
    let mut errors = Vec::new();
    while !done(follower) {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, follower.next()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => panic!("follower did not converge within {limit:?}; errors: {errors:?}"),
        }
    }
    errors
}

async fn first_error(stream: &mut WatchStream) -> StoreError {
    match timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Err(e))) => e,
        other => panic!("expected the watch to fail, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_resync_after_etcd_restarts() {
    let mut server = EtcdServer::start().await;
    let store: Arc<dyn Store> = Arc::new(server.store().await);
    let web = canary_store::keys::routing("web");
    let api = canary_store::keys::routing("api");
    let before = store.put(&web, b"web v1".to_vec()).await.unwrap();

    let mut follower = PrefixFollower::new(Arc::clone(&store), canary_store::keys::SERVICES);
    let initial = follower.next().await.unwrap();
    assert_eq!(initial.len(), 1);
    let mut raw = store.watch(canary_store::keys::SERVICES, before + 1).await.unwrap();

    server.kill();
    let err = first_error(&mut raw).await;
    assert!(err.needs_relist(), "a dead etcd ends the watch with a retryable error: {err}");
    let err = timeout(Duration::from_secs(10), follower.next()).await.unwrap().unwrap_err();
    assert!(err.is_transient(), "{err}");
    // Fail static: the mirror still holds the last routing snapshot.
    assert_eq!(follower.entries()[&web].value, b"web v1");

    server.restart().await;
    let writer = server.store().await;
    writer.put(&api, b"api v1".to_vec()).await.unwrap();
    writer.delete(&web).await.unwrap();
    let listing = writer.list(canary_store::keys::SERVICES).await.unwrap();

    follow_until(&mut follower, Duration::from_secs(20), |f| f.revision() >= listing.revision).await;
    let keys: Vec<_> = follower.entries().keys().cloned().collect();
    assert_eq!(keys, std::slice::from_ref(&api), "the delete made while disconnected is applied too");
    assert_eq!(follower.entries()[&api].value, b"api v1");

    // etcd keeps its history across the restart: a watch from before it replays everything.
    let mut replay = store.watch(canary_store::keys::SERVICES, before + 1).await.unwrap();
    let put = conformance::next_event(&mut replay).await;
    let deleted = conformance::next_event(&mut replay).await;
    assert_eq!((put.kind, put.key.as_str()), (EventKind::Put, api.as_str()));
    assert_eq!((deleted.kind, deleted.key.as_str()), (EventKind::Delete, web.as_str()));

    // And the follower keeps following live changes.
    writer.put(&web, b"web v2".to_vec()).await.unwrap();
    follow_until(&mut follower, Duration::from_secs(10), |f| f.entries().contains_key(&web)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_compacted_history_asks_for_a_relist() {
    let server = EtcdServer::start().await;
    let store = server.store().await;
    let prefix = "/compaction/";
    let old = store.put("/compaction/a", vec![1]).await.unwrap();
    for i in 0..5u8 {
        store.put("/compaction/a", vec![i]).await.unwrap();
    }
    let latest = store.list(prefix).await.unwrap().revision;
    store.client().compact(latest).await.unwrap();

    let err = match store.watch(prefix, old + 1).await {
        Err(e) => e,
        Ok(mut stream) => first_error(&mut stream).await,
    };
    assert!(
        matches!(err, StoreError::Compacted { requested, earliest } if requested == old + 1 && earliest == latest),
        "{err}"
    );
    assert!(err.needs_relist());
    // The remedy works: list, then watch after the listing.
    let listing = store.list(prefix).await.unwrap();
    let mut stream = store.watch(prefix, listing.revision + 1).await.unwrap();
    let revision = store.put("/compaction/b", vec![9]).await.unwrap();
    assert_eq!(conformance::next_event(&mut stream).await.revision, revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_when_the_leader_dies_or_loses_its_lease() {
    let mut server = EtcdServer::start().await;
    let store: Arc<dyn Store> = Arc::new(server.store().await);
    let ttl = Duration::from_secs(2);
    let campaign = |candidate: &'static str| {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.campaign("controller", candidate, ttl).await.unwrap() })
    };

    let first = campaign("a").await.unwrap();
    assert!(first.is_held());
    let second = campaign("b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "one leader at a time");

    // The leader's process dies: no resign, its lease just stops being renewed.
    let died = Instant::now();
    drop(first);
    let mut second = timeout(ttl + Duration::from_secs(3), second)
        .await
        .expect("the other candidate takes over within the TTL")
        .unwrap();
    assert!(died.elapsed() <= ttl + Duration::from_secs(2), "took {:?}", died.elapsed());
    let leader_key = canary_store::keys::leader("controller");
    assert_eq!(store.get(&leader_key).await.unwrap().unwrap().value, b"b");

    // Someone revokes the leader's lease: it notices, and a waiting candidate takes over.
    let third = campaign("c");
    let observer = server.store().await;
    let lease = observer.client().lease_of(&leader_key).await.unwrap().expect("the leader key has a lease");
    observer.client().revoke_lease(lease).await.unwrap();
    timeout(ttl, second.lost()).await.expect("the leader notices the revoked lease within the TTL");
    assert!(!second.is_held());
    let mut third = timeout(Duration::from_secs(5), third).await.unwrap().unwrap();

    // The fence keeps the deposed leader from writing, even if it has not noticed.
    let stale = store.commit(Txn::new().fenced_by(&second).put("/state", vec![1])).await.unwrap();
    assert!(!stale.is_committed(), "a deposed leader's fenced write must fail");
    let fresh = store.commit(Txn::new().fenced_by(&third).put("/state", vec![2])).await.unwrap();
    assert!(fresh.is_committed());

    // etcd itself goes away: the leader gives up within the TTL rather than act blind.
    server.kill();
    timeout(ttl + Duration::from_secs(1), third.lost())
        .await
        .expect("leadership counts as lost once the lease cannot be renewed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_and_leadership_outlive_the_request_timeout() {
    let server = EtcdServer::start().await;
    let store = server.store().await; // request timeout: 2 s
    let mut stream = store.watch("/long/", 0).await.unwrap();
    let mut leader = store.campaign("long", "a", Duration::from_secs(2)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(leader.is_held(), "renewals keep the lease beyond the request timeout");
    let revision = store.put("/long/key", vec![1]).await.unwrap();
    assert_eq!(conformance::next_event(&mut stream).await.revision, revision);
    assert!(timeout(Duration::from_millis(100), leader.lost()).await.is_err());
}
