//! One sink's loop: while leading, send what the log holds after the sink's cursor, then
//! follow the log; move the cursor after each event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use canary_core::clock::unix_ms;
use canary_core::notify::delivery::too_old;
use canary_core::notify::{Attempt, Backoff, Cursor, Notification, SinkConfig};
use canary_core::rollout::{Event, Rollout};
use canary_store::{EventKind, Store, StoreError, keys};
use futures_util::StreamExt;

use super::metrics::{NotifyMetrics, Outcome};
use super::send;
use crate::Controller;

/// How often a sink that does not lead, or waits for events, looks at the leadership.
const LEADER_POLL: Duration = Duration::from_millis(250);

/// Rollout records kept to describe their events; a few rollouts run at once.
const CACHED_ROLLOUTS: usize = 64;

/// One `[[notify]]` sink and its delivery state.
pub(super) struct Sink {
    config: SinkConfig,
    name: String,
    controller: Arc<Controller>,
    metrics: NotifyMetrics,
    client: reqwest::Client,
    backoff: Backoff,
    rollouts: HashMap<String, Rollout>,
    /// When this process configured the sink: a sink without a stored cursor is owed the
    /// events from then on, also those logged before it first led.
    since_ms: u64,
}

impl Sink {
    pub(super) fn new(config: SinkConfig, controller: Arc<Controller>, metrics: NotifyMetrics) -> Sink {
        let client = send::client(&config);
        let name = config.sink_name();
        let (backoff, rollouts, since_ms) = (Backoff::default(), HashMap::new(), unix_ms());
        Sink { config, name, controller, metrics, client, backoff, rollouts, since_ms }
    }

    /// Delivers forever: waits for the leadership, follows the log while it lasts, and reads
    /// the log again after any interruption.
    pub(super) async fn run(mut self) {
        self.metrics.announce(&self.name);
        loop {
            while !self.leading() {
                tokio::time::sleep(LEADER_POLL).await;
            }
            if let Err(e) = self.follow().await {
                tracing::warn!(sink = %self.name, error = %e, "notifications: event log interrupted; reading it again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    fn leading(&self) -> bool {
        self.controller.is_leading()
    }

    fn store(&self) -> Arc<dyn Store> {
        self.controller.routing().store().clone()
    }

    /// Sends what the log holds after the cursor, then what is added to it; returns when the
    /// leadership is lost.
    async fn follow(&mut self) -> Result<(), StoreError> {
        let store = self.store();
        let listing = store.list(keys::EVENTS).await?;
        let stored = self.load_cursor().await?;
        let fresh = stored.is_none();
        let mut cursor = stored.unwrap_or_default();
        let mut owed: Vec<_> = listing
            .entries
            .into_iter()
            .filter(|e| cursor.owes(e.revision, &e.key) && (!fresh || self.logged_since_start(&e.value)))
            .collect();
        owed.sort_by(|a, b| (a.revision, &a.key).cmp(&(b.revision, &b.key)));
        if fresh {
            // A new sink is owed what happened since this process configured it, no older news.
            let start = owed.first().map_or(listing.revision, |first| first.revision - 1);
            cursor = Cursor { revision: start, key: String::new() };
            self.save_cursor(&cursor).await?;
        }
        if !owed.is_empty() {
            tracing::info!(sink = %self.name, events = owed.len(), "notifications: catching up on the event log");
        }
        for entry in owed {
            if !self.handle(&entry.key, &entry.value, entry.revision, &mut cursor).await? {
                return Ok(());
            }
        }
        let mut changes = store.watch(keys::EVENTS, listing.revision + 1).await?;
        loop {
            match tokio::time::timeout(LEADER_POLL, changes.next()).await {
                Err(_quiet) if !self.leading() => return Ok(()),
                Err(_quiet) => {}
                Ok(None) => {
                    return Err(StoreError::Unavailable { backend: store.backend(), detail: "watch ended".into() });
                }
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(change))) if change.kind == EventKind::Put => {
                    if !self.handle(&change.key, &change.value, change.revision, &mut cursor).await? {
                        return Ok(());
                    }
                }
                Ok(Some(Ok(_deleted))) => {}
            }
        }
    }

    /// Whether a logged event happened after this process configured the sink.
    fn logged_since_start(&self, value: &[u8]) -> bool {
        serde_json::from_slice::<Event>(value).is_ok_and(|event| event.at_ms >= self.since_ms)
    }

    /// Sends one logged event if the sink wants it, then moves the cursor past it; `false`
    /// when the leadership was lost before it was done.
    async fn handle(
        &mut self,
        key: &str,
        value: &[u8],
        revision: u64,
        cursor: &mut Cursor,
    ) -> Result<bool, StoreError> {
        if !cursor.owes(revision, key) {
            return Ok(true);
        }
        if let Some(notification) = self.notification(key, value).await
            && !self.deliver(&notification).await
        {
            return Ok(false);
        }
        *cursor = Cursor { revision, key: key.to_owned() };
        self.save_cursor(cursor).await?;
        Ok(true)
    }

    /// The notification of a logged event, if the sink is to get it.
    async fn notification(&mut self, key: &str, value: &[u8]) -> Option<Notification> {
        let service = rollout_event_service(key)?;
        let event: Event = match serde_json::from_slice(value) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(sink = %self.name, key, error = %e, "notifications: unreadable event skipped");
                return None;
            }
        };
        if too_old(event.at_ms, unix_ms(), self.config.replay.0) {
            self.metrics.count(&self.name, Outcome::Skipped);
            tracing::info!(sink = %self.name, key, "notifications: event older than the replay window, not sent");
            return None;
        }
        let rollout = self.rollout(service, &event.rollout_id).await?;
        let notification = Notification::new(&rollout, &event)?;
        let (name, also) = notification.names();
        self.config.events.wants(name, also).then_some(notification)
    }

    /// The record of rollout `id`, which names the versions and the plan.
    async fn rollout(&mut self, service: &str, id: &str) -> Option<Rollout> {
        if let Some(rollout) = self.rollouts.get(id) {
            return Some(rollout.clone());
        }
        let entry = match self.store().get(&keys::rollout(service, id)).await {
            Ok(entry) => entry?,
            Err(e) => {
                tracing::warn!(sink = %self.name, rollout = id, error = %e, "notifications: cannot read the rollout");
                return None;
            }
        };
        let rollout: Rollout = serde_json::from_slice(&entry.value).ok()?;
        if self.rollouts.len() >= CACHED_ROLLOUTS {
            self.rollouts.clear();
        }
        self.rollouts.insert(id.to_owned(), rollout.clone());
        Some(rollout)
    }

    /// Tries until the receiver accepts or refuses, or the attempts run out; `false` when the
    /// leadership was lost first (the next leader sends it).
    async fn deliver(&self, notification: &Notification) -> bool {
        let (sink, id, event) = (&self.name, &notification.id, notification.event);
        let mut attempt = 0;
        loop {
            if !self.leading() {
                return false;
            }
            attempt += 1;
            match send::attempt(&self.client, &self.config, notification).await {
                Attempt::Delivered => {
                    self.metrics.count(sink, Outcome::Delivered);
                    tracing::debug!(sink = %sink, id = %id, event, "notification delivered");
                    return true;
                }
                Attempt::Refused(why) => {
                    self.metrics.count(sink, Outcome::Failed);
                    tracing::warn!(sink = %sink, id = %id, event, why, "notification refused by the receiver");
                    return true;
                }
                Attempt::Retry(why) => {
                    let Some(wait) = self.backoff.after(attempt) else {
                        self.metrics.count(sink, Outcome::Failed);
                        tracing::warn!(sink = %sink, id = %id, event, attempt, why, "notification given up");
                        return true;
                    };
                    self.metrics.count(sink, Outcome::Retry);
                    tracing::debug!(sink = %sink, id = %id, attempt, why, "notification failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn load_cursor(&self) -> Result<Option<Cursor>, StoreError> {
        let Some(entry) = self.store().get(&keys::notify_cursor(&self.name)).await? else { return Ok(None) };
        match serde_json::from_slice(&entry.value) {
            Ok(cursor) => Ok(Some(cursor)),
            Err(e) => {
                tracing::warn!(sink = %self.name, error = %e, "notifications: unreadable cursor; starting from now");
                Ok(None)
            }
        }
    }

    async fn save_cursor(&self, cursor: &Cursor) -> Result<(), StoreError> {
        let value = serde_json::to_vec(cursor).expect("cursors serialize");
        self.store().put(&keys::notify_cursor(&self.name), value).await.map(|_| ())
    }
}

/// The service of a rollout's event key (`/canary/events/<service>/<rollout>/<n>`); `None`
/// for any other key under the log's prefix.
fn rollout_event_service(key: &str) -> Option<&str> {
    let mut parts = key.strip_prefix(keys::EVENTS)?.split('/');
    let service = parts.next()?;
    (parts.next().is_some() && parts.next().is_some() && parts.next().is_none()).then_some(service)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_rollout_event_keys_name_a_service() {
        use canary_store::keys;
        assert_eq!(super::rollout_event_service(&keys::rollout_event("web", "web-1", 3)), Some("web"));
        assert_eq!(super::rollout_event_service(&keys::event("web", 3)), None);
        assert_eq!(super::rollout_event_service("/canary/rollouts/web/web-1"), None);
    }
}
