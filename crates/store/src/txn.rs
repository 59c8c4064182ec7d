//! Multi-key transactions: compares on revisions, then puts and deletes, all or nothing.

use std::collections::{BTreeMap, HashSet};

use crate::leadership::Leadership;
use crate::{Entry, Result, Revision, StoreError, check_key};

/// "`key`'s revision is `revision`" (0: `key` does not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: String,
    /// The revision it must have.
    pub revision: Revision,
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store `value` at `key`.
    Put {
        /// The key written.
        key: String,
        /// The bytes stored.
        value: Vec<u8>,
    },
    /// Remove `key` (nothing happens if it is absent).
    Delete {
        /// The key removed.
        key: String,
    },
}

impl Op {
    /// The key this operation writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// A transaction: when every [`Compare`] holds, every [`Op`] applies in one commit at one new
/// revision; otherwise nothing is written.
///
/// ```
/// use canary_store::{Txn, keys};
/// // Move rollout r1 of web from the revision we read, and log the move, atomically.
/// let txn = Txn::new()
///     .require_revision(keys::rollout("web", "r1"), 41)
///     .put(keys::rollout("web", "r1"), br#"{"phase":"progressing"}"#.to_vec())
///     .require_absent(keys::event("web", 7))
///     .put(keys::event("web", 7), br#"{"to":"progressing"}"#.to_vec());
/// assert_eq!(txn.ops().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    compares: Vec<Compare>,
    ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `key` to be at `revision` (0: absent).
    pub fn require_revision(mut self, key: impl Into<String>, revision: Revision) -> Self {
        self.compares.push(Compare { key: key.into(), revision });
        self
    }

    /// Requires `key` not to exist.
    pub fn require_absent(self, key: impl Into<String>) -> Self {
        self.require_revision(key, 0)
    }

    /// Requires the caller to still hold `leadership` (a no-op on the embedded store, where
    /// leadership cannot be lost to another process).
    pub fn fenced_by(self, leadership: &Leadership) -> Self {
        self.fenced(leadership.fence())
    }

    /// Requires `fence` to still hold, when there is one: [`Txn::fenced_by`] for a caller that
    /// keeps the leadership's fence rather than the leadership itself.
    pub fn fenced(mut self, fence: Option<&Compare>) -> Self {
        if let Some(fence) = fence {
            self.compares.push(fence.clone());
        }
        self
    }

    /// Stores `value` at `key`.
    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put { key: key.into(), value });
        self
    }

    /// Removes `key`.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// The compares, in the order given.
    pub fn compares(&self) -> &[Compare] {
        &self.compares
    }

    /// The writes, in the order given.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Checks what both backends require: non-empty keys, and no key written twice (etcd
    /// rejects that, so redb must too, or code tested on one would break on the other).
    pub(crate) fn validate(&self) -> Result<()> {
        for compare in &self.compares {
            check_key(&compare.key)?;
        }
        let mut written = HashSet::new();
        for op in &self.ops {
            check_key(op.key())?;
            if !written.insert(op.key()) {
                return Err(StoreError::InvalidArgument(format!("transaction writes {} twice", op.key())));
            }
        }
        Ok(())
    }

    pub(crate) fn into_parts(self) -> (Vec<Compare>, Vec<Op>) {
        (self.compares, self.ops)
    }
}

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every compare held and every op applied. `revision` is the commit's revision, or the
    /// store's current one when the ops changed nothing (deletes of absent keys only).
    Committed {
        /// Revision of the commit.
        revision: Revision,
    },
    /// A compare failed and nothing was written. `current` holds what every compared key
    /// holds now (`None`: absent), so the caller can retry without reading again.
    Conflict {
        /// Compared key → its entry now.
        current: BTreeMap<String, Option<Entry>>,
    },
}

impl TxnOutcome {
    /// Whether the transaction applied.
    pub fn is_committed(&self) -> bool {
        matches!(self, TxnOutcome::Committed { .. })
    }

    /// The commit's revision, or [`StoreError::Conflict`] naming the first compare of `txn`
    /// that failed: for callers that treat a lost race as an error.
    pub fn committed(self, txn_compares: &[Compare]) -> Result<Revision> {
        match self {
            TxnOutcome::Committed { revision } => Ok(revision),
            TxnOutcome::Conflict { current } => {
                let failed = txn_compares.iter().find(|c| {
                    let now = current.get(&c.key).and_then(|e| e.as_ref()).map_or(0, |e| e.revision);
                    now != c.revision
                });
                let (key, expected) = failed.map_or_else(|| (String::from("?"), 0), |c| (c.key.clone(), c.revision));
                Err(StoreError::Conflict { key, expected })
            }
        }
    }
}

/// How a compare-and-swap (or compare-and-delete) on one key ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The write applied at `revision`.
    Won {
        /// Revision of the write.
        revision: Revision,
    },
    /// Another writer got there first; `current` is what the key holds now.
    Lost {
        /// The key's entry now (`None`: absent).
        current: Option<Entry>,
    },
}

impl CasOutcome {
    pub(crate) fn from_txn(key: &str, outcome: TxnOutcome) -> Self {
        match outcome {
            TxnOutcome::Committed { revision } => CasOutcome::Won { revision },
            TxnOutcome::Conflict { mut current } => CasOutcome::Lost { current: current.remove(key).flatten() },
        }
    }

    /// Whether the write applied.
    pub fn won(&self) -> bool {
        matches!(self, CasOutcome::Won { .. })
    }

    /// The new revision, or [`StoreError::Conflict`] when the write lost.
    pub fn into_result(self, key: &str, expected: Revision) -> Result<Revision> {
        match self {
            CasOutcome::Won { revision } => Ok(revision),
            CasOutcome::Lost { .. } => Err(StoreError::Conflict { key: key.to_owned(), expected }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_written_twice_is_rejected() {
        let txn = Txn::new().put("/a", vec![1]).delete("/a");
        assert!(matches!(txn.validate(), Err(StoreError::InvalidArgument(_))));
    }

    #[test]
    fn an_empty_key_is_rejected() {
        assert!(Txn::new().require_absent("").validate().is_err());
        assert!(Txn::new().put("", vec![]).validate().is_err());
        assert!(Txn::new().require_absent("/a").put("/a", vec![]).validate().is_ok());
    }

    #[test]
    fn a_conflict_names_the_compare_that_failed() {
        let txn = Txn::new().require_revision("/a", 3).require_revision("/b", 5);
        let current = BTreeMap::from([
            ("/a".to_owned(), Some(Entry { key: "/a".into(), value: vec![], revision: 3 })),
            ("/b".to_owned(), None),
        ]);
        let err = TxnOutcome::Conflict { current }.committed(txn.compares()).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { key, expected: 5 } if key == "/b"));
    }
}
