//! Change streams, and [`PrefixFollower`]: the list-then-watch loop every follower needs.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use crate::{Entry, Result, Revision, Store, StoreError};

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was removed.
    Delete,
}

/// One change of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key changed.
    pub key: String,
    /// The new value; empty for a delete.
    pub value: Vec<u8>,
    /// Revision of the commit; all changes of one transaction share it.
    pub revision: Revision,
}

/// A stream of changes in revision order. After an `Err` the stream ends: list again and
/// watch again ([`PrefixFollower`] does).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// Shortest and longest pause between two failed attempts to resynchronise.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Keeps a mirror of every key under a prefix, following the store by revision.
///
/// It lists the prefix, watches from the listing's revision + 1, and applies each change.
/// When the watch fails (the store restarted, history was compacted, the follower lagged) it
/// reports the error once, then lists again, turns the difference into changes, and watches
/// again, pausing between failed attempts (100 ms doubling to 5 s). A gateway calls
/// [`next`](Self::next) in a loop, applies the changes it gets, and on an error logs it and
/// keeps serving its last snapshot (fail static).
///
/// ```no_run
/// # async fn follow(store: std::sync::Arc<dyn canary_store::Store>) {
/// let mut routes = canary_store::PrefixFollower::new(store, canary_store::keys::SERVICES);
/// loop {
///     match routes.next().await {
///         Ok(changes) => { /* validate and swap in the snapshots that changed */ }
///         Err(e) => tracing::warn!(error = %e, "routing watch interrupted; serving last snapshot"),
///     }
/// }
/// # }
/// ```
pub struct PrefixFollower {
    store: Arc<dyn Store>,
    prefix: String,
    entries: BTreeMap<String, Entry>,
    revision: Revision,
    stream: Option<WatchStream>,
    synced_once: bool,
    retry_after: Option<Duration>,
}

impl PrefixFollower {
    /// A follower of `prefix`; nothing is read until the first [`next`](Self::next).
    pub fn new(store: Arc<dyn Store>, prefix: impl Into<String>) -> Self {
        Self {
            store,
            prefix: prefix.into(),
            entries: BTreeMap::new(),
            revision: 0,
            stream: None,
            synced_once: false,
            retry_after: None,
        }
    }

    /// The mirror: every key under the prefix as of [`revision`](Self::revision).
    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    /// The revision the mirror reflects (0 before the first listing).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Waits for the next changes and applies them to the mirror.
    ///
    /// The first successful call returns the whole initial listing as puts (possibly none).
    /// After a resynchronisation it returns the difference between the old mirror and the
    /// new listing: puts for new or rewritten keys, deletes for keys that are gone.
    pub async fn next(&mut self) -> Result<Vec<WatchEvent>> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                if let Some(pause) = self.retry_after {
                    tokio::time::sleep(pause).await;
                }
                let changes = match self.resync().await {
                    Ok(changes) => changes,
                    Err(e) => {
                        self.back_off();
                        return Err(e);
                    }
                };
                self.retry_after = None;
                if !changes.is_empty() || !self.synced_once {
                    self.synced_once = true;
                    return Ok(changes);
                }
                continue;
            };
            match stream.next().await {
                Some(Ok(event)) => {
                    self.apply(&event);
                    return Ok(vec![event]);
                }
                Some(Err(e)) => {
                    self.stream = None;
                    self.back_off();
                    return Err(e);
                }
                None => {
                    self.stream = None;
                    self.back_off();
                    return Err(StoreError::Unavailable {
                        backend: self.store.backend(),
                        detail: format!("watch of {} ended", self.prefix),
                    });
                }
            }
        }
    }

    fn back_off(&mut self) {
        self.retry_after = Some(match self.retry_after {
            None => RETRY_MIN,
            Some(pause) => (pause * 2).min(RETRY_MAX),
        });
    }

    /// Lists, diffs against the mirror, replaces it, and starts a watch after the listing.
    async fn resync(&mut self) -> Result<Vec<WatchEvent>> {
        let listing = self.store.list(&self.prefix).await?;
        let stream = self.store.watch(&self.prefix, listing.revision + 1).await?;
        let fresh: BTreeMap<String, Entry> = listing.entries.into_iter().map(|e| (e.key.clone(), e)).collect();
        let mut changes = Vec::new();
        for (key, old) in &self.entries {
            if !fresh.contains_key(key) {
                changes.push(WatchEvent {
                    kind: EventKind::Delete,
                    key: key.clone(),
                    value: Vec::new(),
                    revision: listing.revision.max(old.revision),
                });
            }
        }
        for (key, entry) in &fresh {
            if self.entries.get(key) != Some(entry) {
                changes.push(WatchEvent {
                    kind: EventKind::Put,
                    key: key.clone(),
                    value: entry.value.clone(),
                    revision: entry.revision,
                });
            }
        }
        self.entries = fresh;
        self.revision = listing.revision;
        self.stream = Some(stream);
        Ok(changes)
    }

    fn apply(&mut self, event: &WatchEvent) {
        match event.kind {
            EventKind::Put => {
                self.entries.insert(
                    event.key.clone(),
                    Entry { key: event.key.clone(), value: event.value.clone(), revision: event.revision },
                );
            }
            EventKind::Delete => {
                self.entries.remove(&event.key);
            }
        }
        self.revision = self.revision.max(event.revision);
    }
}
