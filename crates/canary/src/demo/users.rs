//! A synthetic population of browser users: each loads the page, then its script, carrying
//! its cookies like a browser does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the population saw so far.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests that failed (5xx, 404 on an asset, or no response).
    pub failed_requests: AtomicU64,
    /// Script requests answered 404: a page and its asset from different versions.
    pub asset_404s: AtomicU64,
    /// The version each user's latest page came from.
    pub page_version: Mutex<HashMap<usize, String>>,
    /// Users that saw at least one failure.
    pub failed_users: Mutex<std::collections::HashSet<usize>>,
}

/// Runs `users` users against `base` until `stop` turns true.
pub async fn run(base: String, users: usize, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    let mut tasks = Vec::new();
    // A few hundred concurrent browsers at most; users take turns within each lane.
    let lanes = users.clamp(1, 64);
    for lane in 0..lanes {
        let (client, base, tally, stop) = (client.clone(), base.clone(), tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut pins: HashMap<usize, String> = HashMap::new();
            let mut turn = 0usize;
            while !stop.load(Relaxed) {
                let user = lane + lanes * (turn % users.div_ceil(lanes));
                turn += 1;
                if user >= users {
                    continue;
                }
                visit(&client, &base, user, &mut pins, &tally).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn visit(client: &reqwest::Client, base: &str, user: usize, pins: &mut HashMap<usize, String>, tally: &Tally) {
    let key = format!("demo-user-{user}");
    let page = fetch(client, &format!("{base}/"), &key, pins.get(&user), "document", tally).await;
    let Some((version, body, pin)) = page else {
        tally.failed_users.lock().expect("tally").insert(user);
        return;
    };
    if let Some(pin) = pin {
        pins.insert(user, pin);
    }
    tally.page_version.lock().expect("tally").insert(user, version);
    let Some(script) = body.split("src=\"").nth(1).and_then(|s| s.split('"').next()) else {
        return;
    };
    let asset = fetch(client, &format!("{base}{script}"), &key, pins.get(&user), "script", tally).await;
    if asset.is_none() {
        tally.failed_users.lock().expect("tally").insert(user);
    }
}

/// One request; `None` when it failed. Returns the version, the body and a new pin if set.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    pin: Option<&String>,
    dest: &str,
    tally: &Tally,
) -> Option<(String, String, Option<String>)> {
    tally.requests.fetch_add(1, Relaxed);
    let mut request = client.get(url).header("x-user-id", key).header("sec-fetch-dest", dest);
    if let Some(pin) = pin {
        request = request.header("cookie", format!("canary_pin={pin}"));
    }
    let failed = || {
        tally.failed_requests.fetch_add(1, Relaxed);
        None
    };
    let Ok(response) = request.send().await else {
        return failed();
    };
    let status = response.status();
    let version = response.headers().get("x-canary-version").and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned();
    let new_pin = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("canary_pin="))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    if status == reqwest::StatusCode::NOT_FOUND && dest == "script" {
        tally.asset_404s.fetch_add(1, Relaxed);
        return failed();
    }
    if !status.is_success() {
        return failed();
    }
    Some((version, body, new_pin))
}
