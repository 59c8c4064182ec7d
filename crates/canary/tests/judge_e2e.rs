//! The judge through real `canary serve` processes: sessions pinned before a rollout and the
//! lag of Prometheus counts do not pause it as a split mismatch while a gateway stuck on the
//! old weight does, the evidence survives a `kill -9` of the controller, and observe mode
//! records a worse verdict without acting on it.

#[path = "../../store/tests/support/etcd_server.rs"]
#[allow(dead_code)]
mod etcd_server;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use etcd_server::EtcdServer;
use futures_util::future::join_all;
use serde_json::{Value, json};
use support::browser::Browser;
use support::link::Link;
use support::prometheus::Prometheus;
use support::traffic::Traffic;
use support::{Gateway, Upstream};
use tokio::time::Instant;

async fn post(node: &Gateway, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new().post(format!("{}{path}", node.admin)).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Starts a rollout of `canary` on `service`; panics unless it was accepted.
async fn start_rollout(node: &Gateway, service: &str, canary: &Upstream, steps: &str, analysis: Value) {
    let body = json!({
        "version": canary.version,
        "upstreams": [canary.addr.to_string()],
        "steps": steps,
        "analysis": analysis,
    });
    let (status, answer) = post(node, &format!("/api/v1/services/{service}/rollouts"), body).await;
    assert_eq!(status, 200, "{answer}");
}

async fn rollout(node: &Gateway, service: &str) -> Value {
    node.get(&format!("/api/v1/services/{service}/rollout")).await.1["data"].clone()
}

fn phase(view: &Value) -> &str {
    view["phase"].as_str().unwrap_or("")
}

fn terminal(view: &Value) -> bool {
    matches!(phase(view), "promoted" | "aborted" | "failed")
}

/// The judge's verdict on `metric` in a rollout view, if the judge has looked.
fn verdict<'a>(view: &'a Value, metric: &str) -> Option<&'a Value> {
    view["judge"]["verdicts"].as_array()?.iter().find(|v| v["metric"] == metric)
}

async fn events(node: &Gateway, service: &str) -> Vec<Value> {
    let (_, events) = node.get(&format!("/api/v1/services/{service}/events?limit=1000")).await;
    events["data"].as_array().unwrap().clone()
}

async fn actions(node: &Gateway, service: &str) -> Vec<String> {
    events(node, service).await.iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect()
}

/// Settings that let a healthy canary be shown safe within seconds on loopback, as the demo's
/// do: with no errors and no slow requests on either side, the error rate and the slow share
/// are shown within 5 points after a few hundred requests, and p50/p90 within 3× stable's (or
/// the latency floor) although a debug build under load has a long tail.
fn quick_analysis() -> Value {
    let within_5_points = json!({"worseAbove": 1.5, "safeBelow": 2.0, "absolute": 0.05});
    json!({
        "minRequestsPerVersion": 40,
        "minRequestsPerStep": 10,
        "tolerances": {
            "errors": within_5_points,
            "latencyTail": within_5_points,
            "latencyQuantiles": {"worseAbove": 1.2, "safeBelow": 3.0},
        },
    })
}

/// What the browsers of [`Visitors`] saw.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    failed: AtomicU64,
    /// Requests of a loaded page answered by another version than the page.
    mixed: AtomicU64,
    new_users: AtomicU64,
}

impl Tally {
    /// Counts one answer of a request from a page served by `page`.
    fn answer(&self, response: reqwest::Result<reqwest::Response>, page: Option<&str>) {
        self.requests.fetch_add(1, Relaxed);
        match response {
            Ok(r) if r.status().is_success() => {
                if support::browser::version_header(&r).as_deref() != page {
                    self.mixed.fetch_add(1, Relaxed);
                }
            }
            _ => {
                self.failed.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Browsers on the site: sessions that loaded a page before the rollout and keep using it
/// (its API calls, now and then a new page), and new visitors arriving all the time.
struct Visitors {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Visitors {
    fn start(site: &str, sessions: Vec<Browser>, lanes: usize) -> Visitors {
        let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
        let mut groups: Vec<Vec<Browser>> = (0..lanes).map(|_| Vec::new()).collect();
        for (i, session) in sessions.into_iter().enumerate() {
            groups[i % lanes].push(session);
        }
        let mut tasks: Vec<_> = groups
            .into_iter()
            .map(|group| tokio::spawn(returning(site.to_owned(), group, tally.clone(), stop.clone())))
            .collect();
        tasks.extend((0..2).map(|_| tokio::spawn(arriving(site.to_owned(), tally.clone(), stop.clone()))));
        Visitors { tally, stop, tasks }
    }

    async fn stop(mut self) -> Arc<Tally> {
        self.stop.store(true, Relaxed);
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
        self.tally
    }
}

/// Each session in turn calls its page's API, and every tenth visit loads a new page; about
/// every two seconds per session.
async fn returning(site: String, mut sessions: Vec<Browser>, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let client = support::client();
    let api = format!("{site}api/cart");
    for visit in 0u64.. {
        for session in &mut sessions {
            if stop.load(Relaxed) {
                return;
            }
            let answer = if visit % 10 == 9 {
                session.navigate(&client, &site).await
            } else {
                session.fetch(&client, &api).await
            };
            tally.answer(answer, session.page_version());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// New visitors, one after another: a page load and two of its API calls each.
async fn arriving(site: String, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let client = support::client();
    let api = format!("{site}api/cart");
    while !stop.load(Relaxed) {
        let mut visitor = Browser::new();
        let answer = visitor.navigate(&client, &site).await;
        tally.answer(answer, visitor.page_version());
        tally.new_users.fetch_add(1, Relaxed);
        for _ in 0..2 {
            let answer = visitor.fetch(&client, &api).await;
            tally.answer(answer, visitor.page_version());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `count` browsers that each loaded the site's first page, 50 at a time.
async fn pinned_sessions(site: &str, count: usize) -> Vec<Browser> {
    let client = support::client();
    let mut sessions = Vec::with_capacity(count);
    while sessions.len() < count {
        let loads = (0..50).map(|_| async {
            let mut browser = Browser::new();
            browser.navigate(&client, site).await.unwrap();
            browser
        });
        sessions.extend(join_all(loads).await);
    }
    sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_pinned_before_a_rollout_do_not_pause_it_as_a_split_mismatch() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gateway = Gateway::start(&support::stable_only_config(&v1, ""));
    let site = gateway.url("web", "/");
    let sessions = pinned_sessions(&site, 400).await;
    for session in &sessions {
        assert_eq!(session.page_version(), Some("v1"));
        assert!(session.cookie("canary_pin").is_some() && session.cookie("canary_uid").is_some());
    }
    let visitors = Visitors::start(&site, sessions, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    start_rollout(&gateway, "web", &v2, "50%/5s,100%", quick_analysis()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut split = Value::Null;
    let view = loop {
        let view = rollout(&gateway, "web").await;
        if let Some(guard) = verdict(&view, "sampleRatio") {
            split = guard.clone();
        }
        if terminal(&view) || phase(&view) == "paused" || Instant::now() > deadline {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let tally = visitors.stop().await;
    assert_eq!(phase(&view), "promoted", "{view}\nlast split verdict: {split}");
    assert_eq!(actions(&gateway, "web").await, ["begin", "advance", "advance"]);
    // The guard was live: it counted the visitors the rule assigned, on both versions.
    assert_eq!(split["reason"], "sampleRatioConsistent", "{split}");
    let (canary_users, stable_users) = (split["canary"]["requests"].as_u64(), split["stable"]["requests"].as_u64());
    assert!(canary_users >= Some(30) && stable_users >= Some(30), "{split}");
    let (requests, failed) = (tally.requests.load(Relaxed), tally.failed.load(Relaxed));
    assert_eq!(failed, 0, "{failed} of {requests} requests failed");
    assert_eq!(tally.mixed.load(Relaxed), 0, "a loaded page got answers from another version");
    println!("{} new visitors, {requests} page requests; split verdict {split}", tally.new_users.load(Relaxed));
}

/// A node of a cluster on etcd at `etcd`, reading the gateways' counters from `prometheus`.
fn node_config(etcd: &str, prometheus: &str, stable: &Upstream) -> String {
    support::fleet::node_config(etcd, prometheus, stable, "")
}

/// Polls `node`'s `/metrics` until a line equals `line`, at most `limit`.
async fn wait_for_metric(node: &Gateway, line: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !node.metrics().await.lines().any(|l| l == line) {
        assert!(Instant::now() < deadline, "{} never showed {line}", node.admin);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two gateways on one etcd, the second through a link the test can cut, scraped by a real
/// Prometheus, and a controller that reads it.
struct Fleet {
    up_to_date: Gateway,
    cut_off: Gateway,
    controller: Gateway,
    link: Link,
    _prometheus: Prometheus,
    _etcd: EtcdServer,
}

impl Fleet {
    async fn start(stable: &Upstream) -> Fleet {
        let etcd = EtcdServer::start().await;
        let link = Link::to(etcd.endpoint().trim_start_matches("http://").parse().unwrap()).await;
        // Prometheus needs the gateways' addresses, so they start with a URL they never use.
        let unused = "http://127.0.0.1:9";
        let up_to_date = Gateway::start_role(&node_config(&etcd.endpoint(), unused, stable), "gateway");
        let cut_off = Gateway::start_role(&node_config(&link.url(), unused, stable), "gateway");
        let targets: Vec<String> =
            [&up_to_date, &cut_off].iter().map(|g| g.admin.trim_start_matches("http://").to_owned()).collect();
        let prometheus = Prometheus::start(&targets).await;
        prometheus.wait_until_scraped(targets.len(), Duration::from_secs(20)).await;
        let controller = Gateway::start_role(&node_config(&etcd.endpoint(), &prometheus.url, stable), "controller");
        wait_for_metric(&controller, "canary_controller_leading 1", Duration::from_secs(20)).await;
        Fleet { up_to_date, cut_off, controller, link, _prometheus: prometheus, _etcd: etcd }
    }

    /// Polls the controller until the rollout stops progressing, at most `limit`, keeping the
    /// last split verdict it showed.
    async fn until_not_progressing(&self, limit: Duration) -> (Value, Value) {
        let deadline = Instant::now() + limit;
        let mut split = Value::Null;
        loop {
            let view = rollout(&self.controller, "web").await;
            if let Some(guard) = verdict(&view, "sampleRatio") {
                split = guard.clone();
            }
            if phase(&view) != "progressing" || Instant::now() > deadline {
                return (view, split);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lagging_counts_steps_do_not_pause_but_a_gateway_cut_off_from_the_store_does() {
    let (v1, v2, v3) = (Upstream::start("v1").await, Upstream::start("v2").await, Upstream::start("v3").await);
    let started = Instant::now();
    let fleet = Fleet::start(&v1).await;
    println!("fleet up after {:?}", started.elapsed());
    // New users all the time: every request has a key of its own, half through each gateway.
    let users = 1_000_000;
    let via_up_to_date = Traffic::start_as("a", fleet.up_to_date.addr("web"), users, 2, Duration::from_millis(5));
    let via_cut_off = Traffic::start_as("b", fleet.cut_off.addr("web"), users, 2, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Prometheus shows the gateways seconds late: right after each step the counts still hold
    // users the previous weight split, which must not read as a split mismatch.
    start_rollout(&fleet.controller, "web", &v2, "50%/3s,100%", quick_analysis()).await;
    let (view, split) = fleet.until_not_progressing(Duration::from_secs(60)).await;
    assert_eq!(phase(&view), "promoted", "{view}\nlast split verdict: {split}");
    assert_eq!(split["reason"], "sampleRatioConsistent", "{split}");
    assert!(split["canary"]["requests"].as_u64() >= Some(100), "{split}");
    println!("promoted after {:?}: {split}", started.elapsed());

    // A partition between one gateway and the store: it keeps serving its last routing, so
    // the users it sees are not split at all.
    fleet.link.cut();
    wait_for_metric(&fleet.cut_off, "canary_store_up 0", Duration::from_secs(20)).await;
    start_rollout(&fleet.controller, "web", &v3, "50%/1m,100%", json!({"minRequestsPerVersion": 30})).await;
    let (view, split) = fleet.until_not_progressing(Duration::from_secs(30)).await;
    assert_eq!(phase(&view), "paused", "{view}");
    let reason = view["reason"].as_str().unwrap_or("");
    assert!(reason.contains("users do not split as the weight says"), "{view}");
    assert_eq!(split["reason"], "sampleRatioMismatch", "{split}");
    // About half the canary users the weight predicts: the cut-off gateway sent it none.
    assert!(split["estimate"].as_f64().unwrap() < 0.8, "{split}");
    assert!(via_up_to_date.answered_by("v3") > 0);
    assert_eq!(via_cut_off.answered_by("v3"), 0, "the cut-off gateway sent users to the canary");
    via_up_to_date.stop().await;
    via_cut_off.stop().await;
    println!("paused {:.1} s into the rollout: {split}", view["heldSeconds"].as_f64().unwrap_or(0.0));
}

/// The rollout's view once the judge's counts stopped moving (no traffic): two looks a few
/// ticks apart that agree.
async fn settled_view(node: &Gateway) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = Value::Null;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let view = rollout(node, "web").await;
        let errors = verdict(&view, "errors").cloned().unwrap_or_default();
        if errors["canary"].is_object() && errors == last {
            return view;
        }
        assert!(Instant::now() < deadline, "the judge's counts never settled: {view}");
        last = errors;
    }
}

/// The first view with the judge's look after `since_ms` (Unix ms), at most `limit` away.
async fn judged_after(node: &Gateway, since_ms: u64, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let view = rollout(node, "web").await;
        if view["judge"]["atMs"].as_u64() > Some(since_ms) {
            return view;
        }
        assert!(Instant::now() < deadline, "the judge did not look again: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Runs traffic until the canary served `requests` in the judge's eyes, then stops it and
/// returns the errors verdict once the judge's counts stopped moving.
async fn evidence_after(gateway: &Gateway, requests: u64) -> Value {
    let traffic = Traffic::start(gateway.addr("web"), 500, 6, Duration::from_millis(3));
    let deadline = Instant::now() + Duration::from_secs(30);
    while verdict(&rollout(gateway, "web").await, "errors").and_then(|v| v["canary"]["requests"].as_u64())
        < Some(requests)
    {
        assert!(Instant::now() < deadline, "the canary never served {requests} requests");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    traffic.stop().await;
    verdict(&settled_view(gateway).await, "errors").unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_the_judge_continues_with_the_evidence_it_had() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    // 2 % errors on stable, 3.3 % on the canary: evidence of harm grows, too slowly to decide
    // within this test.
    v1.fail_every(50);
    v2.fail_every(30);
    let mut gateway = Gateway::start(&support::stable_only_config(&v1, ""));
    start_rollout(&gateway, "web", &v2, "50%/10m,100%", json!({"minRequestsPerVersion": 40})).await;
    let id = rollout(&gateway, "web").await["id"].clone();
    let before = evidence_after(&gateway, 3000).await;
    // Evidence to keep: about a hundred canary errors, an e-value moved away from 1.
    assert!(before["canary"]["events"].as_u64() > Some(50), "{before}");

    gateway.kill9();
    let restarted_at = unix_ms();
    gateway.restart();
    let view = judged_after(&gateway, restarted_at, Duration::from_secs(10)).await;
    assert_eq!((&view["id"], phase(&view), &view["step"]), (&id, "progressing", &json!(0)), "{view}");
    let after = verdict(&view, "errors").unwrap().clone();
    for side in ["canary", "stable"] {
        assert_eq!(after[side], before[side], "{side}'s counts changed across the restart");
    }
    let (e_before, e_after) = (before["eValue"].as_f64().unwrap(), after["eValue"].as_f64().unwrap());
    assert!((e_after / e_before - 1.0).abs() < 1e-9, "e-value {e_before} before, {e_after} after the restart");

    // The restarted gateway counts from zero; the judge skips that tick and adds what follows.
    let canary_before = before["canary"]["requests"].as_u64().unwrap();
    let later = evidence_after(&gateway, canary_before + 500).await;
    assert!(later["canary"]["events"].as_u64() > before["canary"]["events"].as_u64(), "{later}");
    assert_eq!(phase(&rollout(&gateway, "web").await), "progressing");
    assert_eq!(actions(&gateway, "web").await, ["begin"]);
    println!("errors before the kill: {before}\nafter the restart: {after}\nlater: {later}");
}

/// Two services, `dry` and `live`, each with its own stable version.
fn two_services_config(dry: &Upstream, live: &Upstream) -> String {
    let service = |name: &str, stable: &Upstream| {
        format!(
            "[[service]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nstable = {{ version = \"v1\", upstreams = [\"{}\"] }}\n",
            stable.addr
        )
    };
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[gateway]\nworkers = 1\npin_secret = \"end-to-end-test-secret\"\n\
         [controller]\ntick = \"100ms\"\n{}{}",
        service("dry", dry),
        service("live", live)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_shows_a_worse_canary_and_promotes_it_on_the_holds_while_the_judge_rolls_it_back() {
    let upstreams = [Upstream::start("v1").await, Upstream::start("v1").await];
    let canaries = [Upstream::start("v2").await, Upstream::start("v2").await];
    // 1 % errors on stable, 12.5 % on the canary: clearly worse, and below the local breaker's
    // 25 % floor, so only the judge can tell.
    for (stable, canary) in upstreams.iter().zip(&canaries) {
        stable.fail_every(100);
        canary.fail_every(8);
    }
    let gateway = Gateway::start(&two_services_config(&upstreams[0], &upstreams[1]));
    let traffic = [
        Traffic::start_as("dry", gateway.addr("dry"), 500, 4, Duration::from_millis(3)),
        Traffic::start_as("live", gateway.addr("live"), 500, 4, Duration::from_millis(3)),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hold = Duration::from_secs(5);
    let steps = format!("50%/{}s,100%", hold.as_secs());
    let analysis = json!({"minRequestsPerVersion": 40, "minRequestsPerStep": 10});
    let mut dry_run = analysis.clone();
    dry_run["observe"] = json!(true);
    start_rollout(&gateway, "dry", &canaries[0], &steps, dry_run).await;
    start_rollout(&gateway, "live", &canaries[1], &steps, analysis).await;
    let started = Instant::now();
    let mut worse_in_dry_run = None;
    let (dry, live) = loop {
        let (dry, live) = (rollout(&gateway, "dry").await, rollout(&gateway, "live").await);
        if let Some(errors) = verdict(&dry, "errors").filter(|v| v["verdict"] == "worse") {
            worse_in_dry_run.get_or_insert_with(|| (started.elapsed(), errors.clone()));
        }
        if (terminal(&dry) && terminal(&live)) || started.elapsed() > Duration::from_secs(40) {
            break (dry, live);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(phase(&dry), "promoted", "{dry}");
    let (seen_at, errors) = worse_in_dry_run.expect("the dry run never showed the canary's errors as worse");
    assert_eq!(errors["reason"], "evidenceOfHarm", "{errors}");
    let log = events(&gateway, "dry").await;
    let steps: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(steps, ["begin", "advance", "advance"]);
    let held_ms = log[1]["atMs"].as_u64().unwrap() - log[0]["atMs"].as_u64().unwrap();
    assert!(held_ms >= hold.as_millis() as u64, "left the first step after {held_ms} ms: {log:?}");
    let (_, service) = gateway.get("/api/v1/services/dry").await;
    assert_eq!(service["data"]["stable"]["version"], "v2", "{service}");
    assert_eq!(phase(&live), "failed", "{live}");
    let reason = live["reason"].as_str().unwrap_or("");
    assert!(reason.contains("error rate") && !reason.contains("breaker"), "{live}");
    println!("dry run: errors shown worse {seen_at:?} after the start: {errors}\nlive: {reason}");
    for users in traffic {
        users.stop().await;
    }
}
