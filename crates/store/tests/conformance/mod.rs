//! The contract every backend must keep, written once and run against each.
//!
//! Each check works under its own key prefix, so one store (one etcd server) serves them all.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use canary_store::{
    CasOutcome, EventKind, PrefixFollower, Store, StoreError, Txn, TxnOutcome, WatchEvent, WatchStream,
};
use futures_util::StreamExt;
use tokio::time::timeout;

/// Runs every check under `root` (which should end with `/`).
pub async fn run_all(store: Arc<dyn Store>, root: &str) {
    let checks: [(&str, Check); 13] = [
        ("get_put_delete", |s, p| Box::pin(get_put_delete(s, p))),
        ("revisions_are_store_wide_and_increasing", |s, p| Box::pin(revisions_are_store_wide_and_increasing(s, p))),
        ("cas_create_update_delete", |s, p| Box::pin(cas_create_update_delete(s, p))),
        ("list_returns_only_the_prefix_in_key_order", |s, p| Box::pin(list_returns_only_the_prefix_in_key_order(s, p))),
        ("transition_and_event_commit_together", |s, p| Box::pin(transition_and_event_commit_together(s, p))),
        ("invalid_requests_are_refused", |s, p| Box::pin(invalid_requests_are_refused(s, p))),
        ("watch_after_list_sees_every_change_once", |s, p| Box::pin(watch_after_list_sees_every_change_once(s, p))),
        ("watch_from_zero_starts_now", |s, p| Box::pin(watch_from_zero_starts_now(s, p))),
        ("watch_replays_from_a_recent_revision", |s, p| Box::pin(watch_replays_from_a_recent_revision(s, p))),
        ("racing_cas_has_one_winner_per_revision", |s, p| Box::pin(racing_cas_has_one_winner_per_revision(s, p))),
        ("counter_under_contention_loses_no_update", |s, p| Box::pin(counter_under_contention_loses_no_update(s, p))),
        ("leadership_is_exclusive_and_handed_over_on_resign", |s, p| {
            Box::pin(leadership_is_exclusive_and_handed_over_on_resign(s, p))
        }),
        ("follower_mirrors_the_prefix", |s, p| Box::pin(follower_mirrors_the_prefix(s, p))),
    ];
    for (name, check) in checks {
        eprintln!("conformance [{}]: {name}", store.backend());
        check(Arc::clone(&store), format!("{root}{name}/")).await;
    }
}

type Check = fn(Arc<dyn Store>, String) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

const WAIT: Duration = Duration::from_secs(5);

/// The next event of `stream`, failing the test after a few seconds.
pub async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

/// Asserts nothing arrives on `stream` for a short while.
pub async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(item) = timeout(Duration::from_millis(300), stream.next()).await {
        panic!("expected no watch event, got {item:?}");
    }
}

async fn get_put_delete(store: Arc<dyn Store>, p: String) {
    let key = format!("{p}routing");
    assert_eq!(store.get(&key).await.unwrap(), None);

    let first = store.put(&key, b"{\"weight\":100}".to_vec()).await.unwrap();
    assert!(first > 0);
    let entry = store.get(&key).await.unwrap().expect("written key is readable");
    assert_eq!((entry.key.as_str(), entry.value.as_slice()), (key.as_str(), &b"{\"weight\":100}"[..]));
    assert_eq!(entry.revision, first);

    let second = store.put(&key, b"{\"weight\":500}".to_vec()).await.unwrap();
    assert!(second > first);
    assert_eq!(store.get(&key).await.unwrap().unwrap().revision, second);

    let deleted = store.delete(&key).await.unwrap().expect("existing key is deleted");
    assert!(deleted > second);
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert_eq!(store.delete(&key).await.unwrap(), None, "deleting an absent key changes nothing");
}

async fn revisions_are_store_wide_and_increasing(store: Arc<dyn Store>, p: String) {
    let a = store.put(&format!("{p}a"), vec![1]).await.unwrap();
    let b = store.put(&format!("{p}b"), vec![2]).await.unwrap();
    let a2 = store.put(&format!("{p}a"), vec![3]).await.unwrap();
    assert!(a < b && b < a2, "one counter across keys: {a} {b} {a2}");
    let listing = store.list(&p).await.unwrap();
    assert!(listing.revision >= a2);
    let revisions: Vec<_> = listing.entries.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, [a2, b]);
}

async fn cas_create_update_delete(store: Arc<dyn Store>, p: String) {
    let key = format!("{p}rollout");
    let created = match store.compare_and_swap(&key, 0, b"v1".to_vec()).await.unwrap() {
        CasOutcome::Won { revision } => revision,
        lost => panic!("create of an absent key must win: {lost:?}"),
    };
    // Creating again loses, and says what is there.
    match store.compare_and_swap(&key, 0, b"other".to_vec()).await.unwrap() {
        CasOutcome::Lost { current: Some(entry) } => {
            assert_eq!((entry.value.as_slice(), entry.revision), (&b"v1"[..], created));
        }
        other => panic!("second create must lose with the current entry: {other:?}"),
    }
    let updated = store.compare_and_swap(&key, created, b"v2".to_vec()).await.unwrap();
    let CasOutcome::Won { revision: updated } = updated else { panic!("update from current revision must win") };
    assert!(updated > created);
    // A stale revision loses and writes nothing.
    let stale = store.compare_and_swap(&key, created, b"v3".to_vec()).await.unwrap();
    assert!(!stale.won());
    assert!(matches!(
        stale.into_result(&key, created),
        Err(StoreError::Conflict { expected, .. }) if expected == created
    ));
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, b"v2");

    assert!(!store.compare_and_delete(&key, created).await.unwrap().won());
    assert!(store.compare_and_delete(&key, updated).await.unwrap().won());
    assert_eq!(store.get(&key).await.unwrap(), None);
    match store.compare_and_swap(&key, updated, b"v4".to_vec()).await.unwrap() {
        CasOutcome::Lost { current: None } => {}
        other => panic!("CAS on a deleted key must lose with current None: {other:?}"),
    }
}

async fn list_returns_only_the_prefix_in_key_order(store: Arc<dyn Store>, p: String) {
    for key in ["services/web/routing", "services/api/routing", "services/webx/routing", "other"] {
        store.put(&format!("{p}{key}"), key.as_bytes().to_vec()).await.unwrap();
    }
    let listing = store.list(&format!("{p}services/web")).await.unwrap();
    let keys: Vec<_> = listing.entries.iter().map(|e| e.key.strip_prefix(&p).unwrap()).collect();
    assert_eq!(keys, ["services/web/routing", "services/webx/routing"]);
    let listing = store.list(&format!("{p}services/")).await.unwrap();
    let keys: Vec<_> = listing.entries.iter().map(|e| e.key.strip_prefix(&p).unwrap()).collect();
    assert_eq!(keys, ["services/api/routing", "services/web/routing", "services/webx/routing"]);
    assert_eq!(listing.entries[0].value, b"services/api/routing");
    let empty = store.list(&format!("{p}nothing/")).await.unwrap();
    assert!(empty.entries.is_empty());
    assert!(empty.revision >= listing.revision);
}

async fn transition_and_event_commit_together(store: Arc<dyn Store>, p: String) {
    let rollout = format!("{p}rollouts/web/r1");
    let event = |seq: u64| format!("{p}events/web/{seq:020}");
    let created = store.put(&rollout, b"pending".to_vec()).await.unwrap();

    let step = Txn::new()
        .require_revision(&rollout, created)
        .put(&rollout, b"progressing".to_vec())
        .require_absent(event(1))
        .put(event(1), b"pending->progressing".to_vec());
    let TxnOutcome::Committed { revision } = store.commit(step).await.unwrap() else {
        panic!("transition from the current revision must commit");
    };
    let moved = store.get(&rollout).await.unwrap().unwrap();
    let logged = store.get(&event(1)).await.unwrap().unwrap();
    assert_eq!((moved.revision, logged.revision), (revision, revision), "one commit, one revision");

    // A second controller working from the old revision changes nothing at all.
    let stale = Txn::new()
        .require_revision(&rollout, created)
        .put(&rollout, b"aborted".to_vec())
        .require_absent(event(2))
        .put(event(2), b"pending->aborted".to_vec());
    let compares = stale.compares().to_vec();
    match store.commit(stale).await.unwrap() {
        TxnOutcome::Conflict { current } => {
            assert_eq!(current[&rollout].as_ref().unwrap().value, b"progressing");
            assert_eq!(current[&event(2)], None);
            let err = TxnOutcome::Conflict { current }.committed(&compares).unwrap_err();
            assert!(matches!(err, StoreError::Conflict { key, .. } if key == rollout));
        }
        committed => panic!("stale transition must conflict: {committed:?}"),
    }
    assert_eq!(store.get(&rollout).await.unwrap().unwrap().value, b"progressing");
    assert_eq!(store.get(&event(2)).await.unwrap(), None, "no event without its transition");

    // Deletes apply in the same commit too.
    let finish = Txn::new().require_revision(&rollout, revision).delete(&rollout).put(event(2), b"done".to_vec());
    assert!(store.commit(finish).await.unwrap().is_committed());
    assert_eq!(store.get(&rollout).await.unwrap(), None);
    assert_eq!(store.list(&format!("{p}events/web/")).await.unwrap().entries.len(), 2);
}

async fn invalid_requests_are_refused(store: Arc<dyn Store>, p: String) {
    let key = format!("{p}k");
    let twice = Txn::new().put(&key, vec![1]).put(&key, vec![2]);
    assert!(matches!(store.commit(twice).await, Err(StoreError::InvalidArgument(_))));
    assert!(matches!(store.put("", vec![1]).await, Err(StoreError::InvalidArgument(_))));
    assert!(matches!(store.get("").await, Err(StoreError::InvalidArgument(_))));
    assert_eq!(store.get(&key).await.unwrap(), None, "a refused transaction wrote nothing");
}

async fn watch_after_list_sees_every_change_once(store: Arc<dyn Store>, p: String) {
    let services = format!("{p}services/");
    store.put(&format!("{services}web/routing"), b"w1".to_vec()).await.unwrap();
    let listing = store.list(&services).await.unwrap();
    let mut stream = store.watch(&services, listing.revision + 1).await.unwrap();
    assert_quiet(&mut stream).await;

    let put = store.put(&format!("{services}api/routing"), b"a1".to_vec()).await.unwrap();
    store.put(&format!("{p}elsewhere"), b"x".to_vec()).await.unwrap();
    let txn = Txn::new().put(format!("{services}web/routing"), b"w2".to_vec()).delete(format!("{services}api/routing"));
    let TxnOutcome::Committed { revision: both } = store.commit(txn).await.unwrap() else { panic!() };

    let first = next_event(&mut stream).await;
    assert_eq!(
        (first.kind, first.key.as_str(), first.value.as_slice(), first.revision),
        (EventKind::Put, format!("{services}api/routing").as_str(), &b"a1"[..], put)
    );
    let second = next_event(&mut stream).await;
    let third = next_event(&mut stream).await;
    assert_eq!((second.revision, third.revision), (both, both), "a transaction's changes share its revision");
    assert_eq!((second.kind, second.value.as_slice()), (EventKind::Put, &b"w2"[..]));
    assert_eq!((third.kind, third.key.as_str()), (EventKind::Delete, format!("{services}api/routing").as_str()));
    assert!(third.value.is_empty());
    assert_quiet(&mut stream).await;
}

async fn watch_from_zero_starts_now(store: Arc<dyn Store>, p: String) {
    store.put(&format!("{p}before"), vec![1]).await.unwrap();
    let mut stream = store.watch(&p, 0).await.unwrap();
    assert_quiet(&mut stream).await;
    let after = store.put(&format!("{p}after"), vec![2]).await.unwrap();
    let event = next_event(&mut stream).await;
    assert_eq!((event.key, event.revision), (format!("{p}after"), after));
}

async fn watch_replays_from_a_recent_revision(store: Arc<dyn Store>, p: String) {
    let first = store.put(&format!("{p}a"), vec![1]).await.unwrap();
    let second = store.put(&format!("{p}b"), vec![2]).await.unwrap();
    store.delete(&format!("{p}a")).await.unwrap();
    let mut stream = store.watch(&p, second).await.unwrap();
    let replayed = next_event(&mut stream).await;
    assert_eq!((replayed.key, replayed.revision), (format!("{p}b"), second));
    let deleted = next_event(&mut stream).await;
    assert_eq!((deleted.kind, deleted.key), (EventKind::Delete, format!("{p}a")));
    assert!(first < second);
}

async fn racing_cas_has_one_winner_per_revision(store: Arc<dyn Store>, p: String) {
    let key = format!("{p}rollout");
    let base = store.put(&key, b"base".to_vec()).await.unwrap();
    let racers = (0..8).map(|i| {
        let store = Arc::clone(&store);
        let key = key.clone();
        tokio::spawn(
            async move { store.compare_and_swap(&key, base, format!("racer {i}").into_bytes()).await.unwrap() },
        )
    });
    let mut winners = Vec::new();
    for (i, racer) in racers.enumerate() {
        if let CasOutcome::Won { revision } = racer.await.unwrap() {
            winners.push((i, revision));
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of the racers wins: {winners:?}");
    let now = store.get(&key).await.unwrap().unwrap();
    assert_eq!(now.value, format!("racer {}", winners[0].0).into_bytes());
    assert_eq!(now.revision, winners[0].1);
}

async fn counter_under_contention_loses_no_update(store: Arc<dyn Store>, p: String) {
    const WRITERS: u64 = 4;
    const INCREMENTS: u64 = 15;
    let key = format!("{p}counter");
    let writers = (0..WRITERS).map(|_| {
        let store = Arc::clone(&store);
        let key = key.clone();
        tokio::spawn(async move {
            let mut won_at = Vec::new();
            while (won_at.len() as u64) < INCREMENTS {
                let current = store.get(&key).await.unwrap();
                let (value, revision) = current
                    .map_or((0, 0), |e| (String::from_utf8(e.value).unwrap().parse::<u64>().unwrap(), e.revision));
                let next = (value + 1).to_string().into_bytes();
                if let CasOutcome::Won { revision } = store.compare_and_swap(&key, revision, next).await.unwrap() {
                    won_at.push(revision);
                }
            }
            won_at
        })
    });
    let mut revisions = BTreeSet::new();
    for writer in writers {
        for revision in writer.await.unwrap() {
            assert!(revisions.insert(revision), "two writers won at revision {revision}");
        }
    }
    let total = store.get(&key).await.unwrap().unwrap();
    assert_eq!(total.value, (WRITERS * INCREMENTS).to_string().into_bytes());
    assert_eq!(revisions.len() as u64, WRITERS * INCREMENTS);
}

async fn leadership_is_exclusive_and_handed_over_on_resign(store: Arc<dyn Store>, p: String) {
    let election = format!("{}ctl", p.trim_start_matches('/').replace('/', "-"));
    let ttl = Duration::from_secs(2);
    let first = store.campaign(&election, "first", ttl).await.unwrap();
    assert!(first.is_held());
    assert_eq!((first.election(), first.candidate()), (election.as_str(), "first"));

    // Writes fenced by the leadership apply while it is held.
    let key = format!("{p}state");
    assert!(store.commit(Txn::new().fenced_by(&first).put(&key, vec![1])).await.unwrap().is_committed());

    let second = {
        let store = Arc::clone(&store);
        let election = election.clone();
        tokio::spawn(async move { store.campaign(&election, "second", ttl).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "a second candidate must wait while the first leads");

    let resigned_at = tokio::time::Instant::now();
    first.resign().await.unwrap();
    let mut second = timeout(WAIT, second).await.expect("the second candidate takes over").unwrap();
    assert!(resigned_at.elapsed() < ttl, "resigning hands over without waiting for the TTL");
    assert!(second.is_held());
    assert!(store.commit(Txn::new().fenced_by(&second).put(&key, vec![2])).await.unwrap().is_committed());
    assert!(timeout(Duration::from_millis(200), second.lost()).await.is_err(), "still held");
    second.resign().await.unwrap();
}

async fn follower_mirrors_the_prefix(store: Arc<dyn Store>, p: String) {
    let services = format!("{p}services/");
    store.put(&format!("{services}web/routing"), b"w1".to_vec()).await.unwrap();
    let mut follower = PrefixFollower::new(Arc::clone(&store), services.clone());
    let initial = timeout(WAIT, follower.next()).await.unwrap().unwrap();
    assert_eq!(initial.len(), 1);
    assert_eq!(initial[0].value, b"w1");

    store.put(&format!("{services}api/routing"), b"a1".to_vec()).await.unwrap();
    store.delete(&format!("{services}web/routing")).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(timeout(WAIT, follower.next()).await.unwrap().unwrap());
    }
    assert_eq!(seen[0].kind, EventKind::Put);
    assert_eq!(seen[1].kind, EventKind::Delete);
    let keys: Vec<_> = follower.entries().keys().cloned().collect();
    assert_eq!(keys, [format!("{services}api/routing")]);
    assert_eq!(follower.revision(), seen[1].revision);
}
