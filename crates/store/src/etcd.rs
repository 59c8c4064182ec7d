//! The etcd backend, for several gateways and controllers sharing one store.
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
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, ResponseHeader, Txn as EtcdTxn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures_util::{StreamExt, stream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::leadership::{Holder, Leadership};
use crate::{
    Compare, Entry, EventKind, Listing, Op, Result, Revision, Store, StoreError, Txn, TxnOutcome, WatchEvent,
    WatchStream, check_key, keys,
};

const BACKEND: &str = "etcd";

/// Keys fetched per request when listing, so a large prefix never exceeds the client's
/// message size limit.
const LIST_PAGE: i64 = 500;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Deadline of each unary request (get, put, txn, lease calls).
    pub request_timeout: Duration,
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 pings that detect a dead connection under an idle watch.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection counts as dead.
    pub keep_alive_timeout: Duration,
    /// Where leader keys live: `<leader_prefix><election>`.
    pub leader_prefix: String,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            leader_prefix: keys::LEADERS.to_owned(),
        }
    }
}

/// The etcd [`Store`]. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    options: Arc<EtcdOptions>,
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`http://host:2379`). Connections are made
    /// lazily and re-made after failures, so this succeeds while etcd is down; the first
    /// request then fails with [`StoreError::Unavailable`].
    pub async fn connect<E: AsRef<str>>(endpoints: &[E], options: EtcdOptions) -> Result<Self> {
        let connect = ConnectOptions::new()
            .with_timeout(options.request_timeout)
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(options.keep_alive_interval, options.keep_alive_timeout)
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(connect)).await.map_err(etcd_error)?;
        Ok(Self { client, options: Arc::new(options) })
    }

    /// The underlying client, for what the [`Store`] trait does not cover (compaction,
    /// cluster status).
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn wait_for_vacancy(&self, key: &str, seen: Revision, patience: Duration) {
        let mut watcher = self.client.watch_client();
        let start = i64::try_from(seen + 1).unwrap_or(i64::MAX);
        let options = WatchOptions::new().with_start_revision(start);
        let vacated = async {
            let mut stream = watcher.watch(key, Some(options)).await.ok()?;
            while let Ok(Some(response)) = stream.message().await {
                if response.canceled() {
                    return None;
                }
                if response.events().iter().any(|e| e.event_type() == EventType::Delete) {
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
}

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        check_key(key)?;
        let response = self.client.kv_client().get(key, None).await.map_err(etcd_error)?;
        response.kvs().first().map(entry).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let (mut start, end) = key_range(prefix);
        let mut kv = self.client.kv_client();
        let mut entries = Vec::new();
        let mut revision: Option<i64> = None;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(LIST_PAGE);
            // Later pages read at the first page's revision, so the whole listing is one
            // snapshot even if writes land between pages.
            if let Some(revision) = revision {
                options = options.with_revision(revision);
            }
            let response = kv.get(start.clone(), Some(options)).await.map_err(etcd_error)?;
            let page_revision = header_revision(response.header())?;
            let revision = *revision.get_or_insert(page_revision);
            for kv in response.kvs() {
                entries.push(entry(kv)?);
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => {
                    return Ok(Listing { entries, revision: to_revision(revision)? });
                }
            }
        }
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        check_key(key)?;
        let response = self.client.kv_client().put(key, value, None).await.map_err(etcd_error)?;
        to_revision(header_revision(response.header())?)
    }

    async fn delete(&self, key: &str) -> Result<Option<Revision>> {
        check_key(key)?;
        let response = self.client.kv_client().delete(key, None).await.map_err(etcd_error)?;
        if response.deleted() == 0 {
            return Ok(None);
        }
        Ok(Some(to_revision(header_revision(response.header())?)?))
    }

    async fn commit(&self, txn: Txn) -> Result<TxnOutcome> {
        txn.validate()?;
        let (compares, ops) = txn.into_parts();
        let mut conditions = Vec::with_capacity(compares.len());
        for compare in &compares {
            conditions.push(EtcdCompare::mod_revision(
                compare.key.as_str(),
                CompareOp::Equal,
                to_etcd(compare.revision)?,
            ));
        }
        let writes: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(key, value, None),
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let compared: Vec<String> =
            compares.iter().map(|c| c.key.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let reads: Vec<TxnOp> = compared.iter().map(|k| TxnOp::get(k.as_str(), None)).collect();
        let request = EtcdTxn::new().when(conditions).and_then(writes).or_else(reads);
        let response = self.client.kv_client().txn(request).await.map_err(etcd_error)?;
        if response.succeeded() {
            let revision = to_revision(header_revision(response.header())?)?;
            return Ok(TxnOutcome::Committed { revision });
        }
        let mut current = BTreeMap::new();
        for (key, op_response) in compared.into_iter().zip(response.op_responses()) {
            let TxnOpResponse::Get(got) = op_response else {
                return Err(corrupt("transaction read-back returned something other than a get"));
            };
            let found = got.kvs().first().map(entry).transpose()?;
            current.insert(key, found);
        }
        Ok(TxnOutcome::Conflict { current })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let (start, end) = key_range(prefix);
        let mut options = WatchOptions::new().with_range(end);
        if from > 0 {
            options = options.with_start_revision(to_etcd(from)?);
        }
        let mut stream = self.client.watch_client().watch(start, Some(options)).await.map_err(etcd_error)?;
        // Wait for etcd to confirm, so that a change made after `watch` returns is seen.
        let created = stream
            .message()
            .await
            .map_err(etcd_error)?
            .ok_or_else(|| unavailable("watch closed before etcd confirmed it"))?;
        if created.canceled() {
            return Err(cancellation(&created, from));
        }
        let mut pending = VecDeque::new();
        for event in created.events() {
            pending.push_back(watch_event(event)?);
        }
        let state = EtcdWatch { stream, pending, next_revision: from, finished: false };
        Ok(Box::pin(stream::unfold(state, EtcdWatch::next).fuse()))
    }

    async fn campaign(&self, election: &str, candidate: &str, ttl: Duration) -> Result<Leadership> {
        check_key(election)?;
        let key = format!("{}{election}", self.options.leader_prefix);
        let ttl_secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let ttl_secs = i64::try_from(ttl_secs.max(1))
            .map_err(|_| StoreError::InvalidArgument(format!("lease TTL {ttl:?} is too long")))?;
        loop {
            let mut leases = self.client.lease_client();
            let grant = leases.grant(ttl_secs, None).await.map_err(etcd_error)?;
            let granted_at = Instant::now();
            let lease_id = grant.id();
            let granted = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0).max(1));
            let request = EtcdTxn::new()
                .when([EtcdCompare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), candidate, Some(PutOptions::new().with_lease(lease_id)))]);
            let response = match self.client.kv_client().txn(request).await {
                Ok(response) => response,
                Err(e) => {
                    let _ = leases.revoke(lease_id).await;
                    return Err(etcd_error(e));
                }
            };
            let revision = to_revision(header_revision(response.header())?)?;
            if response.succeeded() {
                let (held_tx, held_rx) = watch::channel(true);
                let keeper = LeaseKeeperTask {
                    client: self.client.clone(),
                    lease_id,
                    key: key.clone(),
                    revision,
                    ttl: granted,
                    held: held_tx,
                };
                let task = tokio::spawn(keeper.run(granted_at + granted));
                let hold = EtcdHold { client: self.client.clone(), lease_id, task };
                let fence = Compare { key, revision };
                return Ok(Leadership::new(
                    election.to_owned(),
                    candidate.to_owned(),
                    Some(fence),
                    held_rx,
                    Holder::Etcd(Box::new(hold)),
                ));
            }
            // Someone else leads. Our lease is useless until the key is free again.
            let _ = leases.revoke(lease_id).await;
            self.wait_for_vacancy(&key, revision, granted).await;
        }
    }
}

/// State of one etcd watch seen as a stream of single events.
struct EtcdWatch {
    stream: etcd_client::WatchStream,
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
            let failure = match self.stream.message().await {
                Ok(Some(response)) if response.canceled() => cancellation(&response, self.next_revision),
                Ok(Some(response)) => match response.events().iter().map(watch_event).collect::<Result<Vec<_>>>() {
                    Ok(events) => {
                        self.pending.extend(events);
                        continue;
                    }
                    Err(e) => e,
                },
                Ok(None) => unavailable("etcd closed the watch"),
                Err(e) => etcd_error(e),
            };
            self.finished = true;
            return Some((Err(failure), self));
        }
    }
}

/// What a [`Leadership`] on etcd owns: the lease and the task renewing it.
pub(crate) struct EtcdHold {
    client: Client,
    lease_id: i64,
    task: JoinHandle<()>,
}

impl EtcdHold {
    pub(crate) async fn resign(&self) -> Result<()> {
        self.task.abort();
        // Revoking the lease deletes the leader key with it, which wakes the next candidate.
        self.client.lease_client().revoke(self.lease_id).await.map_err(etcd_error)?;
        Ok(())
    }
}

impl Drop for EtcdHold {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Renews the leader's lease and watches over its leader key until either is lost.
struct LeaseKeeperTask {
    client: Client,
    lease_id: i64,
    key: String,
    revision: Revision,
    ttl: Duration,
    held: watch::Sender<bool>,
}

impl LeaseKeeperTask {
    async fn run(self, mut expires: Instant) {
        let mut keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
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
            match timeout(expires - sent, self.renew(&mut keeper)).await {
                Ok(Ok(Some(remaining))) => expires = sent + remaining,
                Ok(Ok(None)) => break "the lease expired or was revoked".to_owned(),
                Ok(Err(e)) => {
                    tracing::warn!(key = %self.key, error = %e, "lease renewal failed; retrying");
                    keeper = None;
                    continue;
                }
                Err(_) => {
                    keeper = None;
                    continue;
                }
            }
            // If the key cannot be read, the lease deadline above decides when an unreachable
            // etcd costs us the leadership.
            let mut kv = self.client.kv_client();
            let read = timeout(self.ttl / 3, kv.get(self.key.as_str(), None));
            if let Ok(Ok(response)) = read.await {
                let ours = response.kvs().first().is_some_and(|kv| {
                    to_revision(kv.mod_revision()).ok() == Some(self.revision) && kv.lease() == self.lease_id
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
    async fn renew(&self, keeper: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>) -> Result<Option<Duration>> {
        let (sender, responses) = match keeper {
            Some(pair) => pair,
            None => {
                let pair = match self.client.lease_client().keep_alive(self.lease_id).await {
                    Ok(pair) => pair,
                    // etcd-client reports a lease it cannot find this way.
                    Err(etcd_client::Error::LeaseKeepAliveError(_)) => return Ok(None),
                    Err(e) => return Err(etcd_error(e)),
                };
                keeper.insert(pair)
            }
        };
        sender.keep_alive().await.map_err(etcd_error)?;
        let response = responses
            .message()
            .await
            .map_err(etcd_error)?
            .ok_or_else(|| unavailable("lease keep-alive stream closed"))?;
        Ok(u64::try_from(response.ttl()).ok().filter(|&secs| secs > 0).map(Duration::from_secs))
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
    let key = std::str::from_utf8(kv.key())
        .map_err(|_| corrupt(format!("key {:?} is not UTF-8", String::from_utf8_lossy(kv.key()))))?;
    let revision = to_revision(kv.mod_revision())?;
    if revision == 0 {
        return Err(corrupt(format!("{key} has mod_revision 0")));
    }
    Ok(Entry { key: key.to_owned(), value: kv.value().to_vec(), revision })
}

fn watch_event(event: &etcd_client::Event) -> Result<WatchEvent> {
    let kv = event.kv().ok_or_else(|| corrupt("watch event without a key"))?;
    let Entry { key, value, revision } = entry(kv)?;
    Ok(match event.event_type() {
        EventType::Put => WatchEvent { kind: EventKind::Put, key, value, revision },
        EventType::Delete => WatchEvent { kind: EventKind::Delete, key, value: Vec::new(), revision },
    })
}

fn cancellation(response: &etcd_client::WatchResponse, requested: Revision) -> StoreError {
    match to_revision(response.compact_revision()) {
        Ok(earliest) if earliest > 0 => StoreError::Compacted { requested, earliest },
        _ => unavailable(format!("etcd cancelled the watch: {}", response.cancel_reason())),
    }
}

fn header_revision(header: Option<&ResponseHeader>) -> Result<i64> {
    header.map(ResponseHeader::revision).ok_or_else(|| corrupt("response without a header"))
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

fn etcd_error(e: etcd_client::Error) -> StoreError {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                StoreError::Rejected { backend: BACKEND, detail: status.message().to_owned() }
            }
            code => unavailable(format!("{code:?}: {}", status.message())),
        },
        etcd_client::Error::InvalidArgs(detail) => StoreError::InvalidArgument(detail),
        etcd_client::Error::InvalidUri(e) => StoreError::InvalidArgument(e.to_string()),
        etcd_client::Error::Utf8Error(e) => corrupt(e.to_string()),
        other => unavailable(other.to_string()),
    }
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
