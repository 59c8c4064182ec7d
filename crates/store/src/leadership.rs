//! One interface for "am I the controller that acts?", on both backends.

use tokio::sync::{OwnedMutexGuard, watch};

use crate::etcd::EtcdHold;
use crate::{Compare, Result};

/// Leadership of one election, returned by [`Store::campaign`](crate::Store::campaign).
///
/// While it is held, the holder may act; [`lost`](Self::lost) resolves when it is not held any
/// more. Every state change the leader makes should go through a [`Txn`](crate::Txn) with
/// [`fenced_by`](crate::Txn::fenced_by): even a leader that has not noticed its loss yet (a
/// paused process, a slow keep-alive) cannot write once another leader exists.
///
/// Dropping it stops the keep-alive without telling the store, as a crash would: on etcd the
/// others take over when the lease runs out (within its TTL). [`resign`](Self::resign) hands
/// over at once.
pub struct Leadership {
    election: String,
    candidate: String,
    fence: Option<Compare>,
    held: watch::Receiver<bool>,
    holder: Holder,
}

pub(crate) enum Holder {
    /// An in-process lock: one leader per election among the users of one embedded store.
    /// The sender keeps `held` open (and true) for as long as the lock is held.
    Embedded { _guard: OwnedMutexGuard<()>, _held: watch::Sender<bool> },
    /// A lease and a leader key in etcd, kept alive by a background task.
    Etcd(Box<EtcdHold>),
}

impl Leadership {
    pub(crate) fn new(
        election: String,
        candidate: String,
        fence: Option<Compare>,
        held: watch::Receiver<bool>,
        holder: Holder,
    ) -> Self {
        Self { election, candidate, fence, held, holder }
    }

    /// The election's name.
    pub fn election(&self) -> &str {
        &self.election
    }

    /// Who campaigned for it.
    pub fn candidate(&self) -> &str {
        &self.candidate
    }

    /// Whether the leadership is still held, as far as this process knows.
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Resolves once the leadership is lost: the lease expired or was revoked, or the leader
    /// key was removed or taken. Never resolves on the embedded store until resigned.
    pub async fn lost(&mut self) {
        // An error means the keeper is gone, which is a loss too.
        let _ = self.held.wait_for(|held| !held).await;
    }

    /// The compare that holds only while this leadership does (etcd: the leader key is still
    /// the one this campaign created); `None` on the embedded store.
    pub fn fence(&self) -> Option<&Compare> {
        self.fence.as_ref()
    }

    /// Gives the leadership up at once, so another candidate can take over without waiting for
    /// a TTL. On etcd this revokes the lease; if etcd is unreachable it fails, and the lease
    /// lapses on its own within its TTL.
    pub async fn resign(self) -> Result<()> {
        match self.holder {
            Holder::Embedded { .. } => Ok(()),
            Holder::Etcd(hold) => hold.resign().await,
        }
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("election", &self.election)
            .field("candidate", &self.candidate)
            .field("held", &self.is_held())
            .field("fence", &self.fence)
            .finish()
    }
}
