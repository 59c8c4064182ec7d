//! Steady synthetic traffic through a gateway, counting what users saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Background users sending GETs with `x-user-id` keys; stops when dropped.
pub struct Traffic {
    pub sent: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    pub by_version: Arc<Mutex<std::collections::HashMap<String, u64>>>,
    target: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// `lanes` concurrent users cycling through `users` keys, each pausing `pause` between requests.
    pub fn start(target: SocketAddr, users: usize, lanes: usize, pause: Duration) -> Traffic {
        Traffic::start_as("user", target, users, lanes, pause)
    }

    /// Like [`Traffic::start`], with keys `<prefix>-<n>`: users of their own, as behind a load
    /// balancer that sends each user to one gateway.
    pub fn start_as(prefix: &str, target: SocketAddr, users: usize, lanes: usize, pause: Duration) -> Traffic {
        let prefix: Arc<str> = Arc::from(prefix);
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let by_version = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let target = Arc::new(Mutex::new(target));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..lanes)
            .map(|lane| {
                let (client, sent, failed, by_version, target, stop, prefix) = (
                    client.clone(),
                    sent.clone(),
                    failed.clone(),
                    by_version.clone(),
                    target.clone(),
                    stop.clone(),
                    prefix.clone(),
                );
                tokio::spawn(async move {
                    let mut i = lane;
                    while !stop.load(Relaxed) {
                        let addr = *target.lock().unwrap();
                        let key = format!("{prefix}-{}", i % users);
                        i += lanes;
                        sent.fetch_add(1, Relaxed);
                        match client.get(format!("http://{addr}/")).header("x-user-id", key).send().await {
                            Ok(r) if r.status().is_success() => {
                                let v =
                                    r.headers().get("x-canary-version").and_then(|v| v.to_str().ok()).unwrap_or("?");
                                *by_version.lock().unwrap().entry(v.to_owned()).or_default() += 1;
                            }
                            _ => {
                                failed.fetch_add(1, Relaxed);
                            }
                        }
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Traffic { sent, failed, by_version, target, stop, tasks }
    }

    /// Points the users at a new address (after a restart).
    pub fn retarget(&self, addr: SocketAddr) {
        *self.target.lock().unwrap() = addr;
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Relaxed)
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    /// Requests answered by `version`.
    pub fn answered_by(&self, version: &str) -> u64 {
        self.by_version.lock().unwrap().get(version).copied().unwrap_or(0)
    }

    /// Stops the users and waits for them.
    pub async fn stop(mut self) {
        self.stop.store(true, Relaxed);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}
