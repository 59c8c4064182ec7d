//! Behaviour only the embedded store has: the file, its durability, its in-process watch.
//! The shared contract is checked by `tests/redb.rs`.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;

use super::*;

fn store_in(dir: &tempfile::TempDir) -> RedbStore {
    RedbStore::open(dir.path().join("canary.redb")).unwrap()
}

#[tokio::test]
async fn committed_data_and_the_revision_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (rollout_revision, last) = {
        let store = store_in(&dir);
        store.put("/canary/services/web/routing", b"{}".to_vec()).await.unwrap();
        let txn = Txn::new()
            .require_absent("/canary/rollouts/web/r1")
            .put("/canary/rollouts/web/r1", b"progressing".to_vec())
            .put("/canary/events/web/00000000000000000001", b"started".to_vec());
        let TxnOutcome::Committed { revision } = store.commit(txn).await.unwrap() else { panic!() };
        let last = store.delete("/canary/services/web/routing").await.unwrap().unwrap();
        (revision, last)
    };
    let store = store_in(&dir);
    let rollout = store.get("/canary/rollouts/web/r1").await.unwrap().unwrap();
    assert_eq!((rollout.value.as_slice(), rollout.revision), (&b"progressing"[..], rollout_revision));
    assert_eq!(store.get("/canary/services/web/routing").await.unwrap(), None);
    assert_eq!(store.list("/canary/").await.unwrap().revision, last);
    let next = store.put("/canary/services/web/routing", b"{}".to_vec()).await.unwrap();
    assert_eq!(next, last + 1, "revisions continue where they stopped, never reused");
}

#[tokio::test]
async fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = store_in(&dir);
    let second = RedbStore::open(dir.path().join("canary.redb"));
    assert!(matches!(second, Err(StoreError::Unavailable { .. })), "{:?}", second.err());
}

#[tokio::test]
async fn a_value_without_its_revision_header_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.redb");
    drop(store_in(&dir));
    {
        let db = Database::create(&path).unwrap();
        let wtx = db.begin_write().unwrap();
        wtx.open_table(KV).unwrap().insert("/canary/x", &b"abc"[..]).unwrap();
        wtx.commit().unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    let err = store.get("/canary/x").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("/canary/x"), "the error names the key: {err}");
    assert!(matches!(store.list("/canary/").await, Err(StoreError::Corrupt { .. })));
    let cas = store.compare_and_swap("/canary/x", 1, vec![]).await;
    assert!(matches!(cas, Err(StoreError::Corrupt { .. })));
}

#[tokio::test]
async fn a_file_from_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.redb");
    drop(store_in(&dir));
    {
        let db = Database::create(&path).unwrap();
        let wtx = db.begin_write().unwrap();
        wtx.open_table(META).unwrap().insert(META_FORMAT, FORMAT + 1).unwrap();
        wtx.commit().unwrap();
    }
    let err = RedbStore::open(&path).err().expect("open must fail");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.redb");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    assert!(RedbStore::open(&path).is_err());
}

#[tokio::test]
async fn watching_from_before_the_open_needs_a_list_first() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store = store_in(&dir);
        store.put("/canary/services/web/routing", b"1".to_vec()).await.unwrap()
    };
    let store = store_in(&dir);
    match store.watch("/canary/services/", before).await {
        Err(StoreError::Compacted { requested, earliest }) => {
            assert_eq!((requested, earliest), (before, before + 1));
        }
        other => panic!("history from before the open is gone: {:?}", other.map(|_| ())),
    }
    let listing = store.list("/canary/services/").await.unwrap();
    let mut stream = store.watch("/canary/services/", listing.revision + 1).await.unwrap();
    let revision = store.put("/canary/services/web/routing", b"2".to_vec()).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().revision, revision);
}

#[tokio::test]
async fn the_replay_window_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions { replay_window: 3, ..RedbOptions::default() };
    let store = RedbStore::open_with(dir.path().join("canary.redb"), options).unwrap();
    let mut revisions = Vec::new();
    for i in 0..5u8 {
        revisions.push(store.put("/k", vec![i]).await.unwrap());
    }
    // The last three commits are replayable, the two before are not.
    assert!(matches!(
        store.watch("/", revisions[1]).await,
        Err(StoreError::Compacted { earliest, .. }) if earliest == revisions[2]
    ));
    let mut stream = store.watch("/", revisions[2]).await.unwrap();
    for &expected in &revisions[2..] {
        assert_eq!(stream.next().await.unwrap().unwrap().revision, expected);
    }
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_told_to_relist() {
    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions { watch_buffer: 2, ..RedbOptions::default() };
    let store = RedbStore::open_with(dir.path().join("canary.redb"), options).unwrap();
    let mut stream = store.watch("/", 0).await.unwrap();
    for i in 0..5u8 {
        store.put("/k", vec![i]).await.unwrap();
    }
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(matches!(err, StoreError::Lagged { missed: 3 }), "{err}");
    assert!(err.needs_relist());
    assert!(stream.next().await.is_none(), "the stream ends after its error");
}

#[tokio::test]
async fn watchers_learn_when_the_store_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let mut stream = store.watch("/", 0).await.unwrap();
    drop(store);
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
}

#[tokio::test]
async fn leadership_is_released_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let ttl = Duration::from_secs(1);
    let first = store.campaign("controller", "a", ttl).await.unwrap();
    assert!(first.fence().is_none(), "one process: nothing to fence against");
    let waiting = tokio::time::timeout(Duration::from_millis(100), store.campaign("controller", "b", ttl));
    assert!(waiting.await.is_err(), "the election is taken");
    let other = store.campaign("another-election", "b", ttl).await.unwrap();
    drop(first);
    let second = store.campaign("controller", "b", ttl).await.unwrap();
    assert!(second.is_held() && other.is_held());
}

/// Environment variable that turns [`crash_writer_child`] into a writer that runs until killed.
const CRASH_DIR: &str = "CANARY_STORE_CRASH_DIR";

/// Not a test on its own: the child process of
/// `a_writer_killed_mid_stream_never_splits_a_transition_from_its_event`. It steps a rollout
/// record and appends its event in one transaction per step, forever.
#[tokio::test]
async fn crash_writer_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let store = RedbStore::open(Path::new(&dir).join("canary.redb")).unwrap();
    let mut revision = 0;
    for step in 1u64.. {
        let txn = Txn::new()
            .require_revision("/canary/rollouts/web/r1", revision)
            .put("/canary/rollouts/web/r1", step.to_string().into_bytes())
            .require_absent(crate::keys::event("web", step))
            .put(crate::keys::event("web", step), format!("step {step}").into_bytes());
        let TxnOutcome::Committed { revision: next } = store.commit(txn).await.unwrap() else {
            panic!("single writer lost a CAS")
        };
        revision = next;
        if step == 20 {
            std::fs::write(Path::new(&dir).join("ready"), b"").unwrap();
        }
    }
}

#[tokio::test]
async fn a_writer_killed_mid_stream_never_splits_a_transition_from_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "embedded::tests::crash_writer_child", "--nocapture"])
        .env(CRASH_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = dir.path().join("ready");
    let started = tokio::time::Instant::now();
    while !ready.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "writer child never got going");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("writer child exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let it get into the middle of some commit, then SIGKILL.
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap();
    child.wait().unwrap();

    let store = store_in(&dir);
    let rollout = store.get("/canary/rollouts/web/r1").await.unwrap().unwrap();
    let step: u64 = String::from_utf8(rollout.value).unwrap().parse().unwrap();
    let events = store.list(&crate::keys::events("web")).await.unwrap().entries;
    assert!(step >= 20);
    assert_eq!(events.len() as u64, step, "one event per committed step, no more, no less");
    let last = events.last().unwrap();
    assert_eq!(last.key, crate::keys::event("web", step));
    assert_eq!(last.revision, rollout.revision, "the last step and its event share one commit");
}

#[tokio::test]
async fn the_store_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.redb");
    drop(store_in(&dir));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(store_in(&dir));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "tightened on open");
}

#[tokio::test]
async fn an_empty_store_file_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.redb");
    std::fs::write(&path, b"").unwrap();
    let refused = RedbStore::open(&path).err().expect("an empty file is not a store");
    assert!(matches!(refused, StoreError::Corrupt { .. }), "{refused:?}");
    assert!(refused.to_string().contains("is empty (0 bytes)"), "{refused}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "nothing was written into it");
}
