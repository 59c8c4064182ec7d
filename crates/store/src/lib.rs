//! Sticky Canary's persistence layer: one small key/value trait, [`Store`], with two backends.
//!
//! - [`RedbStore`] (the default): an embedded database file on local disk, for the
//!   single-machine product. Pure Rust, durable commits, one writer at a time.
//! - [`EtcdStore`]: an etcd cluster, for several gateways and controllers sharing state.
//!
//! The controller keeps rollout records and their event log here; gateways follow the routing
//! snapshots they serve. Keys are `/`-separated strings, values are opaque bytes (callers store
//! JSON). The layout lives in [`keys`].
//!
//! # Revisions
//!
//! The store has one revision counter. Every commit that changes something advances it, and
//! every key written in that commit carries the commit's revision as its [`Entry::revision`]
//! (etcd's `mod_revision`; redb persists its own counter). So revisions are
//! store-wide, strictly increasing, never reused, and shared by all keys of one
//! transaction. A revision is never 0: 0 means "no such key".
//!
//! # Compare-and-swap
//!
//! [`Store::compare_and_swap`] writes `V` at `K` only if `K`'s revision is still `R`
//! (`R = 0`: `K` must not exist). Of several writers racing from the same revision exactly one
//! wins; the others get [`CasOutcome::Lost`] with what `K` holds now, and retry from there.
//! [`Txn`] generalises this to several keys: every compare must hold, and then every put and
//! delete applies in one atomic, durable commit (one etcd `Txn`, one redb write transaction).
//! The controller uses it to move a rollout record and append its event together, so a
//! process killed at any instant never leaves a transition without its event or the reverse.
//! A [`Leadership`] adds its fence to a transaction ([`Txn::fenced_by`]), so a controller that
//! lost its lease can no longer write.
//!
//! # Watch
//!
//! [`Store::watch`] streams every change under a prefix from a revision on, in revision order.
//! The pattern is always *list, then watch from the list's revision + 1*: nothing is missed and
//! nothing is seen twice. A watch can fail — the store went away, etcd compacted the history
//! the watcher needed ([`StoreError::Compacted`]), a slow watcher fell behind
//! ([`StoreError::Lagged`]) — and then the caller lists again and watches again.
//! [`PrefixFollower`] does exactly that, with backoff, and keeps a mirror of the prefix.
//!
//! - etcd replays history from any revision it has not compacted.
//! - redb keeps no history on disk: it replays from an in-memory window of recent commits
//!   made by this process since it opened the file. A watch from before that window fails with
//!   [`StoreError::Compacted`], exactly like a compacted etcd; after a list it always works.
//!
//! # Fail static
//!
//! Gateways must keep serving the last routing snapshot they validated while the store is
//! unreachable: a watch error is something to log and retry, never a reason to drop routes.
//! [`StoreError::Unavailable`] is the error that says "try again later"; nothing in this crate
//! retries writes on its own, because only the caller knows whether a write is still wanted.
//!
//! # Leadership
//!
//! [`Store::campaign`] blocks until the caller leads an election. On etcd this is a lease with
//! a TTL, kept alive in the background, plus a leader key created only if absent; losing the
//! lease or the key ends the leadership ([`Leadership::lost`]). The embedded store serves one
//! process, so leadership there is an in-process lock that is held until resigned or dropped.

mod embedded;
mod error;
mod etcd;
pub mod keys;
mod leadership;
mod txn;
mod watch;

use std::time::Duration;

use async_trait::async_trait;

pub use embedded::{RedbOptions, RedbStore};
pub use error::{Result, StoreError};
pub use etcd::{EtcdCredentials, EtcdOptions, EtcdStore, EtcdTls};
pub use leadership::Leadership;
pub use txn::{CasOutcome, Compare, Op, Txn, TxnOutcome};
pub use watch::{EventKind, PrefixFollower, WatchEvent, WatchStream};

/// A store-wide revision: strictly increasing with every commit that changes something;
/// 0 stands for "absent".
pub type Revision = u64;

/// One key with its value and the revision of the commit that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, e.g. `/canary/services/web/routing`.
    pub key: String,
    /// The bytes stored (JSON by convention).
    pub value: Vec<u8>,
    /// Revision of the last write to this key; never 0.
    pub revision: Revision,
}

/// The keys under a prefix, read in one consistent snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Entries in ascending key order.
    pub entries: Vec<Entry>,
    /// The store's revision at the snapshot: watch from `revision + 1` to miss nothing.
    pub revision: Revision,
}

/// The key/value store the controller and the gateways share.
///
/// Implemented by [`RedbStore`] and [`EtcdStore`]; use it as `Arc<dyn Store>` to pick the
/// backend from configuration.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name for logs: `"redb"` or `"etcd"`.
    fn backend(&self) -> &'static str;

    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<Entry>>;

    /// Reads every key that starts with `prefix` (all keys for `""`), in key order, with the
    /// revision of the snapshot.
    async fn list(&self, prefix: &str) -> Result<Listing>;

    /// Writes `value` at `key` unconditionally; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision>;

    /// Deletes `key` unconditionally; returns the revision of the deletion, or `None` when the
    /// key did not exist (and nothing changed).
    async fn delete(&self, key: &str) -> Result<Option<Revision>>;

    /// Applies a multi-key transaction atomically: when every compare holds, every operation
    /// is applied in one durable commit; otherwise nothing is written.
    async fn commit(&self, txn: Txn) -> Result<TxnOutcome>;

    /// Streams the changes under `prefix` with revision `>= from`, in revision order.
    /// `from = 0` means "changes after now". Fails with [`StoreError::Compacted`] when the
    /// backend no longer has the history from `from` on: list again and watch from the
    /// listing's revision + 1.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream>;

    /// Waits until `candidate` leads `election`, and returns the leadership. The lease behind it
    /// lasts `ttl` without a keep-alive (etcd rounds up to whole seconds, with a floor of its
    /// own); the embedded store ignores `ttl`. Fails with [`StoreError::Unavailable`] when
    /// the store cannot be reached; the caller retries.
    async fn campaign(&self, election: &str, candidate: &str, ttl: Duration) -> Result<Leadership>;

    /// Writes `value` at `key` if `key`'s revision is still `expected` (0: `key` must not
    /// exist).
    async fn compare_and_swap(&self, key: &str, expected: Revision, value: Vec<u8>) -> Result<CasOutcome> {
        let txn = Txn::new().require_revision(key, expected).put(key, value);
        Ok(CasOutcome::from_txn(key, self.commit(txn).await?))
    }

    /// Deletes `key` if its revision is still `expected`.
    async fn compare_and_delete(&self, key: &str, expected: Revision) -> Result<CasOutcome> {
        let txn = Txn::new().require_revision(key, expected).delete(key);
        Ok(CasOutcome::from_txn(key, self.commit(txn).await?))
    }
}

/// Rejects keys that no backend can store sensibly.
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument("empty key".into()));
    }
    Ok(())
}
