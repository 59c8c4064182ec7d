//! The etcd backend, for several gateways and controllers sharing one store.
//!
//! It speaks etcd's v3 API through the JSON gateway etcd serves beside gRPC ([`client`]); the
//! messages are the same, so everything below reads as it would with a gRPC client.
//!
//! Revisions are etcd's own: an entry's revision is its `mod_revision`, a listing's is the
//! response header's. A transaction is one etcd `Txn` whose compares are `mod_revision == R`
//! (etcd treats an absent key as `mod_revision == 0`, which gives "must not exist" for free),
//! and whose failure branch reads the compared keys back so a loser learns what won.
//!
//! Leadership is a lease plus a leader key created only if absent and bound to that lease.
//! A background task renews the lease every third of its TTL and checks the key is still the
//! one it created; if neither can be confirmed before the lease would have run out, the
//! leadership counts as lost. The leader key's revision is the fence that
//! [`Txn::fenced_by`](crate::Txn::fenced_by) adds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, stream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::leadership::{Holder, Leadership};
use crate::{
    Compare, Entry, EventKind, Listing, Op, Result, Revision, Store, StoreError, Txn, TxnOutcome, WatchEvent,
    WatchStream, check_key, keys,
};

mod client;
mod wire;

pub use client::EtcdClient;
use client::Lines;
use wire::{KeyValue, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse, WatchResponse, WriteResponse};

const BACKEND: &str = "etcd";

/// Keys fetched per request when listing, so a large prefix never makes one huge answer.
const LIST_PAGE: i64 = 500;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Deadline of each unary request (get, put, txn, lease calls), and of a watch's first answer.
    pub request_timeout: Duration,
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// Interval of TCP keep-alive probes, which detect a dead peer under an idle watch.
    pub keep_alive_interval: Duration,
    /// Where leader keys live: `<leader_prefix><election>`.
    pub leader_prefix: String,
    /// The etcd user to authenticate as, when etcd has authentication enabled.
    pub credentials: Option<EtcdCredentials>,
    /// TLS to etcd's `https://` endpoints: whom to trust, and the client certificate to show.
    pub tls: Option<EtcdTls>,
}

/// How to reach etcd over TLS, in PEM.
#[derive(Clone, Default)]
pub struct EtcdTls {
    /// The certificate authority that signed etcd's server certificates (`--trusted-ca-file`
    /// on the etcd side); without it, the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and its private key, one after the other (etcd's
    /// `--client-cert-auth`).
    pub identity_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity_pem.is_some())
            .finish()
    }
}

/// An etcd user name and password (`etcdctl user add`). The password never appears in `Debug`.
#[derive(Clone)]
pub struct EtcdCredentials {
    /// The user name.
    pub user: String,
    /// The user's password.
    pub password: String,
}

impl std::fmt::Debug for EtcdCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCredentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            keep_alive_interval: Duration::from_secs(10),
            leader_prefix: keys::LEADERS.to_owned(),
            credentials: None,
            tls: None,
        }
    }
}

/// The etcd [`Store`]. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct EtcdStore {
    client: EtcdClient,
    options: Arc<EtcdOptions>,
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`http://host:2379`). Connections are made
    /// lazily and re-made after failures, so this succeeds while etcd is down; the first
    /// request then fails with [`StoreError::Unavailable`]. A malformed endpoint is an
    /// [`StoreError::InvalidArgument`].
    pub async fn connect<E: AsRef<str>>(endpoints: &[E], options: EtcdOptions) -> Result<Self> {
        let client = EtcdClient::new(endpoints, &options)?;
        Ok(Self { client, options: Arc::new(options) })
    }

    /// The underlying client, for what the [`Store`] trait does not cover (compaction, leases).
    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    async fn range(&self, request: &RangeRequest) -> Result<RangeResponse> {
        self.client.call("/v3/kv/range", request).await
    }

    async fn txn(&self, request: &TxnRequest) -> Result<TxnResponse> {
        self.client.call("/v3/kv/txn", request).await
    }

    async fn open_watch(&self, key: Vec<u8>, range_end: Vec<u8>, start_revision: i64) -> Result<Lines> {
        let request = wire::WatchRequest { create_request: wire::WatchCreate { key, range_end, start_revision } };
        self.client.stream("/v3/watch", &request).await
    }

    async fn wait_for_vacancy(&self, key: &str, seen: Revision, patience: Duration) {
        let start = i64::try_from(seen + 1).unwrap_or(i64::MAX);
        let vacated = async {
            let mut lines = self.open_watch(key.into(), Vec::new(), start).await.ok()?;
            while let Ok(Some(response)) = lines.next::<WatchResponse>().await {
                if response.canceled {
                    return None;
                }
                if response.events.iter().any(|e| e.kind.as_deref() == Some("DELETE")) {
                    return Some(());
                }
            }
            None
        };
        // Whatever ends the wait — the key went, the watch failed, patience ran out — the
        // caller simply tries to create the key again.
        if timeout(patience, vacated).await.ok().flatten().is_none() {
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Grants a lease and creates the leader key bound to it if the key is absent.
    async fn try_lead(
        &self,
        election: &str,
        key: &str,
        candidate: &str,
        ttl_secs: i64,
    ) -> Result<(Option<Leadership>, Revision)> {
        let grant: wire::LeaseResponse =
            self.client.call("/v3/lease/grant", &wire::LeaseRequest { id: 0, ttl: ttl_secs }).await?;
        let granted_at = Instant::now();
        let lease_id = grant.id;
        let granted = Duration::from_secs(u64::try_from(grant.ttl).unwrap_or(0).max(1));
        let put = wire::PutRequest { key: key.into(), value: candidate.into(), lease: lease_id };
        let request = TxnRequest {
            compare: vec![wire::Compare::create_revision(key, 0)],
            success: vec![RequestOp::Put(put)],
            failure: Vec::new(),
        };
        let response = match self.txn(&request).await {
            Ok(response) => response,
            Err(e) => {
                let _ = self.client.revoke_lease(lease_id).await;
                return Err(e);
            }
        };
        let revision = to_revision(header_revision(response.header.as_ref())?)?;
        if !response.succeeded {
            // Someone else leads. Our lease is useless until the key is free again.
            let _ = self.client.revoke_lease(lease_id).await;
            return Ok((None, revision));
        }
        let (held_tx, held_rx) = watch::channel(true);
        let keeper = LeaseKeeperTask {
            client: self.client.clone(),
            lease_id,
            key: key.to_owned(),
            revision,
            ttl: granted,
            held: held_tx,
        };
        let task = tokio::spawn(keeper.run(granted_at + granted));
        let hold = EtcdHold { client: self.client.clone(), lease_id, task };
        let fence = Compare { key: key.to_owned(), revision };
        let holder = Holder::Etcd(Box::new(hold));
        let leadership = Leadership::new(election.to_owned(), candidate.to_owned(), Some(fence), held_rx, holder);
        Ok((Some(leadership), revision))
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        check_key(key)?;
        let response = self.range(&RangeRequest { key: key.into(), ..RangeRequest::default() }).await?;
        response.kvs.first().map(entry).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let (mut start, end) = key_range(prefix);
        let mut entries = Vec::new();
        let mut revision: Option<i64> = None;
        loop {
            // Later pages read at the first page's revision, so the whole listing is one
            // snapshot even if writes land between pages.
            let request = RangeRequest {
                key: start.clone(),
                range_end: end.clone(),
                limit: LIST_PAGE,
                revision: revision.unwrap_or(0),
            };
            let response = self.range(&request).await?;
            let page_revision = header_revision(response.header.as_ref())?;
            let revision = *revision.get_or_insert(page_revision);
            for kv in &response.kvs {
                entries.push(entry(kv)?);
            }
            match response.kvs.last() {
                Some(last) if response.more => {
                    start = last.key.clone();
                    start.push(0);
                }
                _ => return Ok(Listing { entries, revision: to_revision(revision)? }),
            }
        }
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        check_key(key)?;
        let request = wire::PutRequest { key: key.into(), value, lease: 0 };
        let response: WriteResponse = self.client.call("/v3/kv/put", &request).await?;
        to_revision(header_revision(response.header.as_ref())?)
    }

    async fn delete(&self, key: &str) -> Result<Option<Revision>> {
        check_key(key)?;
        let request = wire::DeleteRequest { key: key.into() };
        let response: WriteResponse = self.client.call("/v3/kv/deleterange", &request).await?;
        if response.deleted == 0 {
            return Ok(None);
        }
        Ok(Some(to_revision(header_revision(response.header.as_ref())?)?))
    }

    async fn commit(&self, txn: Txn) -> Result<TxnOutcome> {
        txn.validate()?;
        let (compares, ops) = txn.into_parts();
        let mut conditions = Vec::with_capacity(compares.len());
        for compare in &compares {
            conditions.push(wire::Compare::mod_revision(&compare.key, to_etcd(compare.revision)?));
        }
        let writes = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value } => RequestOp::Put(wire::PutRequest { key: key.into(), value, lease: 0 }),
                Op::Delete { key } => RequestOp::Delete(wire::DeleteRequest { key: key.into() }),
            })
            .collect();
        let compared: Vec<String> =
            compares.iter().map(|c| c.key.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let reads = compared
            .iter()
            .map(|k| RequestOp::Range(RangeRequest { key: k.as_str().into(), ..RangeRequest::default() }))
            .collect();
        let response = self.txn(&TxnRequest { compare: conditions, success: writes, failure: reads }).await?;
        if response.succeeded {
            let revision = to_revision(header_revision(response.header.as_ref())?)?;
            return Ok(TxnOutcome::Committed { revision });
        }
        if response.responses.len() != compared.len() {
            return Err(corrupt("transaction read-back has fewer answers than compared keys"));
        }
        let mut current = BTreeMap::new();
        for (key, op_response) in compared.into_iter().zip(&response.responses) {
            let Some(got) = &op_response.response_range else {
                return Err(corrupt("transaction read-back returned something other than a range"));
            };
            current.insert(key, got.kvs.first().map(entry).transpose()?);
        }
        Ok(TxnOutcome::Conflict { current })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let (start, end) = key_range(prefix);
        let start_revision = if from > 0 { to_etcd(from)? } else { 0 };
        let mut lines = self.open_watch(start, end, start_revision).await?;
        // Wait for etcd to confirm, so that a change made after `watch` returns is seen.
        let created: WatchResponse =
            lines.next().await?.ok_or_else(|| unavailable("watch closed before etcd confirmed it"))?;
        if created.canceled {
            return Err(cancellation(&created, from));
        }
        let mut pending = VecDeque::new();
        for event in &created.events {
            pending.push_back(watch_event(event)?);
        }
        let state = EtcdWatch { lines, pending, next_revision: from, finished: false };
        Ok(Box::pin(stream::unfold(state, EtcdWatch::next).fuse()))
    }

    async fn campaign(&self, election: &str, candidate: &str, ttl: Duration) -> Result<Leadership> {
        check_key(election)?;
        let key = format!("{}{election}", self.options.leader_prefix);
        let ttl_secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let ttl_secs = i64::try_from(ttl_secs.max(1))
            .map_err(|_| StoreError::InvalidArgument(format!("lease TTL {ttl:?} is too long")))?;
        loop {
            let (won, revision) = self.try_lead(election, &key, candidate, ttl_secs).await?;
            if let Some(leadership) = won {
                return Ok(leadership);
            }
            let patience = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(1));
            self.wait_for_vacancy(&key, revision, patience).await;
        }
    }
}

/// State of one etcd watch seen as a stream of single events.
struct EtcdWatch {
    lines: Lines,
    pending: VecDeque<WatchEvent>,
    /// The first revision not delivered yet, for the error message after a compaction.
    next_revision: Revision,
    finished: bool,
}

impl EtcdWatch {
    async fn next(mut self) -> Option<(Result<WatchEvent>, Self)> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                self.next_revision = event.revision + 1;
                return Some((Ok(event), self));
            }
            let failure = match self.lines.next::<WatchResponse>().await {
                Ok(Some(response)) if response.canceled => cancellation(&response, self.next_revision),
                Ok(Some(response)) => match response.events.iter().map(watch_event).collect::<Result<Vec<_>>>() {
                    Ok(events) => {
                        self.pending.extend(events);
                        continue;
                    }
                    Err(e) => e,
                },
                Ok(None) => unavailable("etcd closed the watch"),
                Err(e) => e,
            };
            self.finished = true;
            return Some((Err(failure), self));
        }
    }
}

/// What a [`Leadership`] on etcd owns: the lease and the task renewing it.
pub(crate) struct EtcdHold {
    client: EtcdClient,
    lease_id: i64,
    task: JoinHandle<()>,
}

impl EtcdHold {
    pub(crate) async fn resign(&self) -> Result<()> {
        self.task.abort();
        // Revoking the lease deletes the leader key with it, which wakes the next candidate.
        self.client.revoke_lease(self.lease_id).await
    }
}

impl Drop for EtcdHold {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Renews the leader's lease and watches over its leader key until either is lost.
struct LeaseKeeperTask {
    client: EtcdClient,
    lease_id: i64,
    key: String,
    revision: Revision,
    ttl: Duration,
    held: watch::Sender<bool>,
}

impl LeaseKeeperTask {
    async fn run(self, mut expires: Instant) {
        let reason = loop {
            tokio::select! {
                () = sleep(self.ttl / 3) => {}
                () = sleep_until(expires) => {
                    break "the lease could not be renewed before it ran out".to_owned();
                }
            }
            // The server renews the lease somewhere after we send, so `sent + ttl` is never
            // later than the server's own expiry: we give up leadership no later than etcd does.
            let sent = Instant::now();
            match timeout(expires - sent, self.renew()).await {
                Ok(Ok(Some(remaining))) => expires = sent + remaining,
                Ok(Ok(None)) => break "the lease expired or was revoked".to_owned(),
                Ok(Err(e)) => {
                    tracing::warn!(key = %self.key, error = %e, "lease renewal failed; retrying");
                    continue;
                }
                Err(_) => continue,
            }
            // If the key cannot be read, the lease deadline above decides when an unreachable
            // etcd costs us the leadership.
            let request = RangeRequest { key: self.key.as_str().into(), ..RangeRequest::default() };
            let read = timeout(self.ttl / 3, self.client.call::<_, RangeResponse>("/v3/kv/range", &request));
            if let Ok(Ok(response)) = read.await {
                let ours = response.kvs.first().is_some_and(|kv| {
                    to_revision(kv.mod_revision).ok() == Some(self.revision) && kv.lease == self.lease_id
                });
                if !ours {
                    break "the leader key was removed or taken over".to_owned();
                }
            }
        };
        tracing::warn!(key = %self.key, %reason, "leadership lost");
        let _ = self.held.send(false);
    }

    /// Sends one keep-alive; `Some(remaining TTL)` while the lease lives, `None` once it is gone.
    async fn renew(&self) -> Result<Option<Duration>> {
        let request = wire::LeaseRequest { id: self.lease_id, ttl: 0 };
        let mut lines = self.client.stream("/v3/lease/keepalive", &request).await?;
        let response: wire::LeaseResponse =
            lines.next().await?.ok_or_else(|| unavailable("lease keep-alive answered nothing"))?;
        Ok(u64::try_from(response.ttl).ok().filter(|&secs| secs > 0).map(Duration::from_secs))
    }
}

/// `[start, end)` of every key under `prefix`, as etcd wants it: an empty key is not allowed,
/// so "everything" is `["\0", "\0")`, etcd's spelling of "all keys".
fn key_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    let start = prefix.as_bytes().to_vec();
    let mut end = start.clone();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (start, end);
        }
    }
    (start, vec![0])
}

fn entry(kv: &KeyValue) -> Result<Entry> {
    let key = std::str::from_utf8(&kv.key)
        .map_err(|_| corrupt(format!("key {:?} is not UTF-8", String::from_utf8_lossy(&kv.key))))?;
    let revision = to_revision(kv.mod_revision)?;
    if revision == 0 {
        return Err(corrupt(format!("{key} has mod_revision 0")));
    }
    Ok(Entry { key: key.to_owned(), value: kv.value.clone(), revision })
}

fn watch_event(event: &wire::Event) -> Result<WatchEvent> {
    let kv = event.kv.as_ref().ok_or_else(|| corrupt("watch event without a key"))?;
    let Entry { key, value, revision } = entry(kv)?;
    match event.kind.as_deref() {
        None | Some("PUT") => Ok(WatchEvent { kind: EventKind::Put, key, value, revision }),
        Some("DELETE") => Ok(WatchEvent { kind: EventKind::Delete, key, value: Vec::new(), revision }),
        Some(other) => Err(corrupt(format!("watch event of unknown type {other:?}"))),
    }
}

fn cancellation(response: &WatchResponse, requested: Revision) -> StoreError {
    match to_revision(response.compact_revision) {
        Ok(earliest) if earliest > 0 => StoreError::Compacted { requested, earliest },
        _ => unavailable(format!("etcd cancelled the watch: {}", response.cancel_reason)),
    }
}

fn header_revision(header: Option<&wire::Header>) -> Result<i64> {
    header.map(|h| h.revision).ok_or_else(|| corrupt("response without a header"))
}

fn to_revision(revision: i64) -> Result<Revision> {
    Revision::try_from(revision).map_err(|_| corrupt(format!("negative revision {revision}")))
}

fn to_etcd(revision: Revision) -> Result<i64> {
    i64::try_from(revision).map_err(|_| StoreError::InvalidArgument(format!("revision {revision} is out of range")))
}

fn unavailable(detail: impl Into<String>) -> StoreError {
    StoreError::Unavailable { backend: BACKEND, detail: detail.into() }
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { backend: BACKEND, detail: detail.into() }
}

#[cfg(test)]
mod tests {
    use super::key_range;

    #[test]
    fn a_prefix_range_ends_just_past_the_prefix() {
        assert_eq!(key_range("/canary/"), (b"/canary/".to_vec(), b"/canary0".to_vec()));
        assert_eq!(key_range(""), (vec![0], vec![0]));
        assert_eq!(key_range("a\u{7f}"), (b"a\x7f".to_vec(), b"a\x80".to_vec()));
    }
}
