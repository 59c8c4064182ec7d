//! What can go wrong, worded so an operator knows what to do next.

use crate::Revision;

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Errors of every backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or failed to do I/O. Retrying later may work;
    /// gateways keep serving what they have.
    #[error("{backend} store unavailable: {detail}")]
    Unavailable {
        /// `"redb"` or `"etcd"`.
        backend: &'static str,
        /// What failed.
        detail: String,
    },
    /// A compare-and-swap lost: `key` no longer has the revision the caller expected.
    #[error("conflict on {key}: its revision is no longer {expected}")]
    Conflict {
        /// The key that moved on.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
    },
    /// The store holds data this crate cannot read: a damaged file, a key that is not UTF-8,
    /// a value without its revision header. Never retried; needs an operator.
    #[error("corrupt data in {backend} store: {detail}")]
    Corrupt {
        /// `"redb"` or `"etcd"`.
        backend: &'static str,
        /// What was found, and where.
        detail: String,
    },
    /// The history a watch needed is gone. List again, then watch from the listing's
    /// revision + 1.
    #[error(
        "cannot watch from revision {requested}: the earliest revision still watchable is \
         {earliest}; list again and watch from there"
    )]
    Compacted {
        /// The revision the watch asked for.
        requested: Revision,
        /// The oldest revision a watch may start from now.
        earliest: Revision,
    },
    /// A watcher read too slowly and changes were dropped for it. List again and rewatch.
    #[error("watcher fell behind and missed {missed} commits; list again and watch again")]
    Lagged {
        /// How many commits were dropped.
        missed: u64,
    },
    /// The backend refused the request as malformed or too large (etcd's limits on request
    /// size and transaction length, for example).
    #[error("{backend} rejected the request: {detail}")]
    Rejected {
        /// `"redb"` or `"etcd"`.
        backend: &'static str,
        /// The backend's reason.
        detail: String,
    },
    /// The backend refused who we are: wrong user name or password, a user without the
    /// permission, or authentication switched on in etcd while no credentials are configured.
    #[error("{backend} refused access: {detail}")]
    Denied {
        /// `"redb"` or `"etcd"`.
        backend: &'static str,
        /// The backend's reason and what to change.
        detail: String,
    },
    /// The caller asked for something no backend can do: an empty key, a transaction that
    /// writes one key twice.
    #[error("invalid store request: {0}")]
    InvalidArgument(String),
}

impl StoreError {
    /// Whether the same call may succeed later without any change by the caller.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// Whether a watcher that got this error must list again before it watches again.
    pub fn needs_relist(&self) -> bool {
        matches!(self, StoreError::Compacted { .. } | StoreError::Lagged { .. } | StoreError::Unavailable { .. })
    }
}
