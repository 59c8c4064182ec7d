//! The conformance suite against the embedded store.

mod conformance;

use std::sync::Arc;

use canary_store::{RedbStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_keeps_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("canary.redb")).unwrap());
    conformance::run_all(store, "/conformance/").await;
}
