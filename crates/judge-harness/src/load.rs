//! The load generator: sticky users of very unequal activity, each behaving like a browser.
//!
//! Traffic is open-loop: requests start on a clock at the configured rate, whoever is slow. Each
//! request goes to a user drawn by Zipf activity (rank k sends a share ∝ 1/k^s, so a few users
//! send most requests), carries the user's `x-user-id` and the `canary_pin` cookie the gateway
//! last set for them, and is either a page navigation (the user's first request, then a small
//! share) or a `fetch` from the open page, which the pin keeps on its version.
//!
//! A service's users come in cohorts: a new cohort is a new set of people (new ids, no pins),
//! which the rollouts start so that each rollout meets its own users.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_distr::{Distribution, Zipf};
use tokio::sync::Semaphore;

use crate::trace::{Trace, TracedRequest};
use crate::users::user_id;

/// Requests in flight per service at most; beyond that the generator waits (saturated).
const MAX_IN_FLIGHT: usize = 256;
/// The generator's clock.
const TICK: Duration = Duration::from_millis(10);

/// How the users behave.
#[derive(Debug, Clone, Copy)]
pub struct LoadSettings {
    /// Users per cohort.
    pub users: usize,
    /// Requests per second.
    pub rps: f64,
    /// Zipf exponent of the users' activity.
    pub zipf: f64,
    /// Share of a user's later requests that are navigations.
    pub navigation_share: f64,
}

/// What one service's users saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests sent.
    pub requests: AtomicU64,
    /// Answers with a 5xx status.
    pub server_errors: AtomicU64,
    /// Requests that got no answer at all.
    pub unanswered: AtomicU64,
}

/// One browser: its pin cookie and whether it opened the site yet.
#[derive(Debug, Default)]
struct Browser {
    pin: Mutex<Option<String>>,
    opened: AtomicBool,
}

#[derive(Debug)]
struct Cohort {
    number: u64,
    browsers: Vec<Browser>,
}

impl Cohort {
    fn new(number: u64, users: usize) -> Cohort {
        Cohort { number, browsers: (0..users).map(|_| Browser::default()).collect() }
    }
}

/// The users of one service.
#[derive(Debug)]
pub struct ServiceLoad {
    service: String,
    base: String,
    settings: LoadSettings,
    cohort: Mutex<Arc<Cohort>>,
    trace: Option<Trace>,
    /// What the users saw.
    pub tally: Tally,
}

impl ServiceLoad {
    /// Users of `service`, whose gateway is at `base` (`http://ADDR`); every answer goes to
    /// `trace` if there is one.
    pub fn new(service: &str, base: String, settings: LoadSettings, trace: Option<Trace>) -> ServiceLoad {
        ServiceLoad {
            service: service.to_owned(),
            base,
            settings,
            cohort: Mutex::new(Arc::new(Cohort::new(1, settings.users))),
            trace,
            tally: Tally::default(),
        }
    }

    /// Replaces every user by a new one: new ids, no pins.
    pub fn new_cohort(&self) {
        let mut cohort = self.cohort.lock().expect("cohort");
        *cohort = Arc::new(Cohort::new(cohort.number + 1, self.settings.users));
    }

    /// Sends the users' traffic until the task is dropped.
    pub async fn run(self: Arc<Self>, client: reqwest::Client) {
        let zipf = Zipf::new(self.settings.users as f64, self.settings.zipf).expect("users and exponent are checked");
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut clock = tokio::time::interval(TICK);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let per_tick = self.settings.rps * TICK.as_secs_f64();
        let mut owed = 0.0;
        loop {
            clock.tick().await;
            owed += per_tick;
            while owed >= 1.0 {
                owed -= 1.0;
                let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
                let rank = (zipf.sample(&mut rand::rng()) as usize).clamp(1, self.settings.users);
                let cohort = self.cohort.lock().expect("cohort").clone();
                let (load, client) = (self.clone(), client.clone());
                tokio::spawn(async move {
                    load.send(&client, &cohort, rank).await;
                    drop(permit);
                });
            }
        }
    }

    /// One request of the user of rank `rank` (1-based) in `cohort`.
    async fn send(&self, client: &reqwest::Client, cohort: &Cohort, rank: usize) {
        let browser = &cohort.browsers[rank - 1];
        let first = !browser.opened.swap(true, Relaxed);
        let navigation = first || rand::random::<f64>() < self.settings.navigation_share;
        let mut request = if navigation {
            client
                .get(format!("{}/", self.base))
                .header("sec-fetch-dest", "document")
                .header("sec-fetch-mode", "navigate")
                .header("accept", "text/html")
        } else {
            client
                .get(format!("{}/api/items", self.base))
                .header("sec-fetch-dest", "empty")
                .header("sec-fetch-mode", "cors")
                .header("accept", "application/json")
        };
        request = request.header("x-user-id", user_id(&self.service, cohort.number, rank));
        let pin = browser.pin.lock().expect("pin").clone();
        if let Some(pin) = pin {
            request = request.header("cookie", format!("canary_pin={pin}"));
        }
        self.tally.requests.fetch_add(1, Relaxed);
        let sent = tokio::time::Instant::now();
        let Ok(response) = request.send().await else {
            self.tally.unanswered.fetch_add(1, Relaxed);
            return;
        };
        if let Some(trace) = &self.trace {
            let version = response.headers().get("x-canary-version").and_then(|v| v.to_str().ok()).unwrap_or("?");
            trace.request(&TracedRequest {
                service: &self.service,
                version,
                latency_ms: sent.elapsed().as_secs_f64() * 1000.0,
                navigation,
                status: response.status().as_u16(),
            });
        }
        if let Some(pin) = new_pin(&response) {
            *browser.pin.lock().expect("pin") = Some(pin);
        }
        if response.status().is_server_error() {
            self.tally.server_errors.fetch_add(1, Relaxed);
        }
        // Read the body so the connection goes back to the pool.
        if response.bytes().await.is_err() {
            self.tally.unanswered.fetch_add(1, Relaxed);
        }
    }
}

/// The `canary_pin` a response sets, if it sets one.
fn new_pin(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("canary_pin="))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
}
