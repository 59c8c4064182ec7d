//! A synthetic population of browser users: at a steady rate a random user loads the page
//! (a top-level navigation) and then its script, carrying its pin cookie like a browser does.
//!
//! Traffic is open-loop (visits start on a clock, not when earlier ones finish), so a slow or
//! failing version does not quietly lower the load it is judged on.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::upstream::ERROR_KIND_HEADER;

/// Visits in flight at most; beyond that the generator waits (the machine is saturated).
const MAX_IN_FLIGHT: u32 = 512;

/// What the population saw so far.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests answered by the canary.
    pub canary_requests: AtomicU64,
    /// Requests that failed, other than with the app's baseline errors: a `500` from the
    /// canary's fault, a 502/504 made by the gateway, or no answer at all.
    pub failed_requests: AtomicU64,
    /// The app's own `500`s (1 % on either version), counted apart: no rollout causes them.
    pub baseline_errors: AtomicU64,
    /// Script requests answered 404: a page and its script from different versions.
    pub asset_404s: AtomicU64,
    /// Users that saw at least one failed request (as counted in `failed_requests`).
    pub failed_users: Mutex<HashSet<usize>>,
}

/// Who the users are and where they go.
pub struct Population {
    /// The gateway's base URL.
    pub base: String,
    /// Number of users.
    pub users: usize,
    /// Page visits per second.
    pub visits_per_second: u32,
    /// The canary's version name.
    pub canary: String,
}

/// Sends the population's traffic until `stop` turns true, then waits for visits in flight.
pub async fn run(population: Arc<Population>, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let pins: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize));
    let mut clock = tokio::time::interval(Duration::from_millis(10));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_tick = f64::from(population.visits_per_second) / 100.0;
    let mut owed = 0.0;
    while !stop.load(Relaxed) {
        clock.tick().await;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
            let user = rand::random_range(0..population.users);
            let (client, population, pins, tally) = (client.clone(), population.clone(), pins.clone(), tally.clone());
            tokio::spawn(async move {
                visit(&client, &population, user, &pins, &tally).await;
                drop(permit);
            });
        }
    }
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT).await;
}

/// One user, one browser: the page, then its script, sharing a cookie jar (the pin).
struct Browser<'a> {
    client: &'a reqwest::Client,
    population: &'a Population,
    user: usize,
    key: String,
    pins: &'a Mutex<HashMap<usize, String>>,
    tally: &'a Tally,
}

async fn visit(
    client: &reqwest::Client,
    population: &Population,
    user: usize,
    pins: &Mutex<HashMap<usize, String>>,
    tally: &Tally,
) {
    let browser = Browser { client, population, user, key: format!("demo-user-{user}"), pins, tally };
    let Some(body) = browser.get("/", "document").await else { return };
    if let Some(script) = body.split("src=\"").nth(1).and_then(|s| s.split('"').next()) {
        browser.get(script, "script").await;
    }
}

impl Browser<'_> {
    /// One request; the body when it succeeded. Keeps any new pin and counts the outcome.
    async fn get(&self, path: &str, dest: &str) -> Option<String> {
        let tally = self.tally;
        tally.requests.fetch_add(1, Relaxed);
        let pin = self.pins.lock().expect("pins").get(&self.user).cloned();
        let url = format!("{}{path}", self.population.base);
        let mut request = self.client.get(url).header("x-user-id", &self.key).header("sec-fetch-dest", dest);
        if let Some(pin) = pin {
            request = request.header("cookie", format!("canary_pin={pin}"));
        }
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let version =
                    response.headers().get("x-canary-version").and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned();
                let new_pin = response
                    .headers()
                    .get_all("set-cookie")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(|c| c.strip_prefix("canary_pin="))
                    .and_then(|c| c.split(';').next())
                    .map(str::to_owned);
                if let Some(pin) = new_pin {
                    self.pins.lock().expect("pins").insert(self.user, pin);
                }
                let baseline = response.headers().get(ERROR_KIND_HEADER).is_some_and(|v| v == "baseline");
                response.text().await.ok().map(|body| (status, version, baseline, body))
            }
            Err(_) => None,
        };
        let Some((status, version, baseline, body)) = answer else {
            self.failed();
            return None;
        };
        if version == self.population.canary {
            tally.canary_requests.fetch_add(1, Relaxed);
        }
        if baseline {
            tally.baseline_errors.fetch_add(1, Relaxed);
            return None;
        }
        if status == reqwest::StatusCode::NOT_FOUND && dest == "script" {
            tally.asset_404s.fetch_add(1, Relaxed);
            return None;
        }
        if !status.is_success() {
            self.failed();
            return None;
        }
        Some(body)
    }

    fn failed(&self) {
        self.tally.failed_requests.fetch_add(1, Relaxed);
        self.tally.failed_users.lock().expect("tally").insert(self.user);
    }
}
