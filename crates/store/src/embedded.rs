//! The embedded backend: one redb file on local disk.
//!
//! Layout of the file (format 1):
//!
//! - table `kv`: key → 8-byte big-endian revision of the last write, then the value's bytes;
//! - table `meta`: `revision` → the store's revision, `format` → 1.
//!
//! redb runs one write transaction at a time and commits it durably (fsync) before
//! `commit` returns, so a transaction here is atomic and durable across `kill -9` and power
//! loss, and "the next revision" is simply the stored one plus one, read and written inside
//! that transaction.
//!
//! Watch is in-process: after each commit, the committed changes are published on a tokio
//! broadcast channel and kept in a bounded window of recent commits for replay. Publishing
//! happens while the writer lock is still held, so subscribers see commits in revision order
//! and a new watcher's replay and live feed neither overlap nor leave a gap. History before the
//! window (and everything before this process opened the file) is not replayable: such a watch
//! fails with [`StoreError::Compacted`], and the caller lists first, as with etcd.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, stream};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, watch};

use crate::leadership::{Holder, Leadership};
use crate::{
    Compare, Entry, EventKind, Listing, Op, Result, Revision, Store, StoreError, Txn, TxnOutcome, WatchEvent,
    WatchStream, check_key,
};

const BACKEND: &str = "redb";
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_FORMAT: &str = "format";
const FORMAT: u64 = 1;
const REVISION_HEADER: usize = 8;

/// Settings of the embedded store; `Default` suits the single-machine product.
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// How many recent changes are kept in memory for watches that start in the past.
    pub replay_window: usize,
    /// How many commits a live watcher may fall behind before it gets [`StoreError::Lagged`].
    pub watch_buffer: usize,
    /// Verify every page's checksum when opening, so a damaged file is reported as
    /// [`StoreError::Corrupt`] instead of being trusted (redb may panic on a damaged file it
    /// did not check). It reads the whole file: cheap for a rollout store of a few megabytes.
    pub check_integrity_on_open: bool,
    /// Upper bound of redb's page cache, in bytes.
    pub cache_bytes: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self { replay_window: 4096, watch_buffer: 1024, check_integrity_on_open: true, cache_bytes: 64 << 20 }
    }
}

/// The embedded [`Store`]: a redb database file. Cheap to clone; clones share the file.
///
/// Only one process may open a file at a time (a second open fails with
/// [`StoreError::Unavailable`]), which is also why leadership here is an in-process lock.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    writer: Mutex<Writer>,
    elections: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Everything that changes with a commit, behind the one writer lock.
struct Writer {
    revision: Revision,
    /// Recent commits, oldest first, each a non-empty list of changes at one revision.
    history: VecDeque<Arc<Vec<WatchEvent>>>,
    history_events: usize,
    replay_window: usize,
    /// The oldest revision a watch can start from.
    earliest_replayable: Revision,
    changes: broadcast::Sender<Arc<Vec<WatchEvent>>>,
}

impl RedbStore {
    /// Opens (or creates) the store at `path` with default options. Blocks on file I/O.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, RedbOptions::default())
    }

    /// Opens (or creates) the store at `path`. Blocks on file I/O.
    pub fn open_with(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        file::prepare(&path)?;
        let mut builder = Database::builder();
        builder.set_cache_size(options.cache_bytes);
        builder.set_check_integrity_on_open(options.check_integrity_on_open);
        let db = builder.create(&path).map_err(|e| {
            let e = redb::Error::from(e);
            if matches!(e, redb::Error::DatabaseAlreadyOpen) {
                unavailable(format!("{} is already open in another process", path.display()))
            } else {
                db_error(e)
            }
        })?;
        let revision = initialise(&db)?;
        let (changes, _) = broadcast::channel(options.watch_buffer.max(1));
        let writer = Writer {
            revision,
            history: VecDeque::new(),
            history_events: 0,
            replay_window: options.replay_window,
            earliest_replayable: revision + 1,
            changes,
        };
        Ok(Self {
            inner: Arc::new(Inner { db, path, writer: Mutex::new(writer), elections: Mutex::new(HashMap::new()) }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs blocking redb work off the async runtime's threads.
    async fn blocking<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| unavailable(format!("store worker failed: {e}")))?
    }
}

/// Creates the tables on first open, checks the format, and reads the stored revision.
fn initialise(db: &Database) -> Result<Revision> {
    let wtx = db.begin_write().map_err(db_error)?;
    let revision = {
        wtx.open_table(KV).map_err(db_error)?;
        let mut meta = wtx.open_table(META).map_err(db_error)?;
        let format = meta.get(META_FORMAT).map_err(db_error)?.map(|v| v.value());
        match format {
            None => {
                meta.insert(META_FORMAT, FORMAT).map_err(db_error)?;
            }
            Some(FORMAT) => {}
            Some(other) => {
                return Err(corrupt(format!(
                    "file format {other} is not supported (this build reads format {FORMAT})"
                )));
            }
        }
        meta.get(META_REVISION).map_err(db_error)?.map_or(0, |v| v.value())
    };
    wtx.commit().map_err(db_error)?;
    Ok(revision)
}

impl Inner {
    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A panic inside a write leaves redb's transaction aborted and `Writer` untouched
        // (it changes only after a commit), so the state behind a poisoned lock is sound.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let rtx = self.db.begin_read().map_err(db_error)?;
        let kv = rtx.open_table(KV).map_err(db_error)?;
        let value = kv.get(key).map_err(db_error)?;
        value.map(|v| decode(key, v.value())).transpose()
    }

    fn list(&self, prefix: &str) -> Result<Listing> {
        let rtx = self.db.begin_read().map_err(db_error)?;
        let kv = rtx.open_table(KV).map_err(db_error)?;
        let meta = rtx.open_table(META).map_err(db_error)?;
        let revision = meta.get(META_REVISION).map_err(db_error)?.map_or(0, |v| v.value());
        let mut entries = Vec::new();
        for item in kv.range(prefix..).map_err(db_error)? {
            let (key, value) = item.map_err(db_error)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            entries.push(decode(key, value.value())?);
        }
        Ok(Listing { entries, revision })
    }

    /// Checks the compares and applies the ops in one durable write transaction.
    /// Returns the outcome and the changes committed (empty when nothing changed).
    fn apply(&self, compares: &[Compare], ops: Vec<Op>) -> Result<(TxnOutcome, Vec<WatchEvent>)> {
        let mut writer = self.writer();
        let mut wtx = self.db.begin_write().map_err(db_error)?;
        wtx.set_durability(Durability::Immediate).map_err(db_error)?;
        let next = writer.revision + 1;
        let mut events = Vec::new();
        {
            let mut kv = wtx.open_table(KV).map_err(db_error)?;
            let mut current = BTreeMap::new();
            let mut failed = false;
            for compare in compares {
                let entry = kv
                    .get(compare.key.as_str())
                    .map_err(db_error)?
                    .map(|v| decode(&compare.key, v.value()))
                    .transpose()?;
                failed |= entry.as_ref().map_or(0, |e| e.revision) != compare.revision;
                current.insert(compare.key.clone(), entry);
            }
            if failed {
                drop(kv);
                wtx.abort().map_err(db_error)?;
                return Ok((TxnOutcome::Conflict { current }, Vec::new()));
            }
            for op in ops {
                match op {
                    Op::Put { key, value } => {
                        kv.insert(key.as_str(), encode(next, &value).as_slice()).map_err(db_error)?;
                        events.push(WatchEvent { kind: EventKind::Put, key, value, revision: next });
                    }
                    Op::Delete { key } => {
                        if kv.remove(key.as_str()).map_err(db_error)?.is_some() {
                            events.push(WatchEvent { kind: EventKind::Delete, key, value: Vec::new(), revision: next });
                        }
                    }
                }
            }
        }
        if events.is_empty() {
            // Deleting absent keys changes nothing, and etcd does not advance its revision
            // for that either.
            wtx.abort().map_err(db_error)?;
            return Ok((TxnOutcome::Committed { revision: writer.revision }, events));
        }
        {
            let mut meta = wtx.open_table(META).map_err(db_error)?;
            meta.insert(META_REVISION, next).map_err(db_error)?;
        }
        wtx.commit().map_err(db_error)?;
        writer.publish(next, events.clone());
        Ok((TxnOutcome::Committed { revision: next }, events))
    }

    /// Replays retained changes from `from` on and subscribes to later ones, atomically with
    /// respect to commits.
    fn subscribe(&self, prefix: &str, from: Revision) -> Result<Subscription> {
        let writer = self.writer();
        let from = if from == 0 { writer.revision + 1 } else { from };
        if from < writer.earliest_replayable {
            return Err(StoreError::Compacted { requested: from, earliest: writer.earliest_replayable });
        }
        let replay = writer
            .history
            .iter()
            .flat_map(|commit| commit.iter())
            .filter(|e| e.revision >= from && e.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok(Subscription { replay, receiver: writer.changes.subscribe(), from })
    }
}

/// A new watcher's start: the retained changes it missed, and the feed of later commits.
struct Subscription {
    replay: Vec<WatchEvent>,
    receiver: broadcast::Receiver<Arc<Vec<WatchEvent>>>,
    /// The first revision wanted (`0` resolved to the next commit).
    from: Revision,
}

impl Writer {
    fn publish(&mut self, revision: Revision, events: Vec<WatchEvent>) {
        self.revision = revision;
        let commit = Arc::new(events);
        self.history_events += commit.len();
        self.history.push_back(Arc::clone(&commit));
        while self.history_events > self.replay_window {
            let Some(oldest) = self.history.pop_front() else {
                break;
            };
            self.history_events -= oldest.len();
            self.earliest_replayable = oldest[0].revision + 1;
        }
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(commit);
    }
}

#[async_trait]
impl Store for RedbStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        check_key(key)?;
        let key = key.to_owned();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| inner.list(&prefix)).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        match self.commit(Txn::new().put(key, value)).await? {
            TxnOutcome::Committed { revision } => Ok(revision),
            TxnOutcome::Conflict { .. } => Err(unavailable("a put without compares conflicted")),
        }
    }

    async fn delete(&self, key: &str) -> Result<Option<Revision>> {
        let txn = Txn::new().delete(key);
        txn.validate()?;
        let (_, ops) = txn.into_parts();
        let (outcome, events) = self.blocking(move |inner| inner.apply(&[], ops)).await?;
        Ok(match outcome {
            TxnOutcome::Committed { revision } if !events.is_empty() => Some(revision),
            _ => None,
        })
    }

    async fn commit(&self, txn: Txn) -> Result<TxnOutcome> {
        txn.validate()?;
        let (compares, ops) = txn.into_parts();
        let (outcome, _) = self.blocking(move |inner| inner.apply(&compares, ops)).await?;
        Ok(outcome)
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let owned_prefix = prefix.to_owned();
        let Subscription { replay, receiver, from } =
            self.blocking(move |inner| inner.subscribe(&owned_prefix, from)).await?;
        let prefix = prefix.to_owned();
        let live = stream::unfold(Some(receiver), move |receiver| {
            let prefix = prefix.clone();
            async move {
                let mut receiver = receiver?;
                loop {
                    match receiver.recv().await {
                        Ok(commit) => {
                            let matching: Vec<WatchEvent> = commit
                                .iter()
                                .filter(|e| e.revision >= from && e.key.starts_with(&prefix))
                                .cloned()
                                .collect();
                            if !matching.is_empty() {
                                return Some((Ok(matching), Some(receiver)));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            return Some((Err(StoreError::Lagged { missed }), None));
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            return Some((Err(unavailable("the store was closed")), None));
                        }
                    }
                }
            }
        })
        .flat_map(|batch| {
            let items: Vec<Result<WatchEvent>> = match batch {
                Ok(events) => events.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            stream::iter(items)
        });
        Ok(Box::pin(stream::iter(replay.into_iter().map(Ok)).chain(live)))
    }

    async fn campaign(&self, election: &str, candidate: &str, _ttl: Duration) -> Result<Leadership> {
        check_key(election)?;
        let lock = {
            let mut elections = self.inner.elections.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(elections.entry(election.to_owned()).or_default())
        };
        let guard = lock.lock_owned().await;
        let (held_tx, held_rx) = watch::channel(true);
        Ok(Leadership::new(
            election.to_owned(),
            candidate.to_owned(),
            None,
            held_rx,
            Holder::Embedded { _guard: guard, _held: held_tx },
        ))
    }
}

fn encode(revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(REVISION_HEADER + value.len());
    bytes.extend_from_slice(&revision.to_be_bytes());
    bytes.extend_from_slice(value);
    bytes
}

fn decode(key: &str, bytes: &[u8]) -> Result<Entry> {
    let Some((header, value)) = bytes.split_first_chunk::<REVISION_HEADER>() else {
        return Err(corrupt(format!("value of {key} is {} bytes, shorter than its revision header", bytes.len())));
    };
    let revision = u64::from_be_bytes(*header);
    if revision == 0 {
        return Err(corrupt(format!("value of {key} has revision 0")));
    }
    Ok(Entry { key: key.to_owned(), value: value.to_vec(), revision })
}

fn unavailable(detail: impl Into<String>) -> StoreError {
    StoreError::Unavailable { backend: BACKEND, detail: detail.into() }
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { backend: BACKEND, detail: detail.into() }
}

fn db_error(e: impl Into<redb::Error>) -> StoreError {
    let e = e.into();
    match e {
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_) => corrupt(e.to_string()),
        redb::Error::ValueTooLarge(_) => StoreError::Rejected { backend: BACKEND, detail: e.to_string() },
        _ => unavailable(e.to_string()),
    }
}

mod file;
#[cfg(test)]
mod tests;
