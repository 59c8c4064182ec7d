//! `SIGHUP` (`systemctl reload`) re-reads the config: a valid file is handed to a new process
//! that takes the listening sockets over, so services come and go and stable's upstreams change
//! without a failed request; an invalid one changes nothing and is reported.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use support::Upstream;
use support::traffic::Traffic;
use tokio::time::Instant;

/// A `canary serve` whose standard output and log go to files, so that the lines of a process
/// that takes over from it can be read too.
struct Node {
    dir: tempfile::TempDir,
    child: Child,
}

impl Node {
    fn start(config: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("canary.toml"), config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_canary"))
            .args(["serve", "--log", "info", "--config"])
            .arg(dir.path().join("canary.toml"))
            .stdout(std::fs::File::create(dir.path().join("out.txt")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("log.txt")).unwrap())
            .spawn()
            .unwrap();
        Node { dir, child }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("log.txt")).unwrap_or_default()
    }

    /// The listeners of the `generation`-th process (1 = the first) once it reported them:
    /// each process prints its services, then its admin listener.
    async fn listeners(&self, generation: usize) -> Vec<(String, String)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = std::fs::read_to_string(self.path("out.txt")).unwrap_or_default();
            let mut generations = vec![Vec::new()];
            for line in out.lines() {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let current = generations.last_mut().unwrap();
                match parts.as_slice() {
                    ["listening", "service", name, url] => current.push((name.to_string(), url.to_string())),
                    ["listening", "admin", url] => {
                        current.push(("admin".to_owned(), url.to_string()));
                        generations.push(Vec::new());
                    }
                    _ => {}
                }
            }
            if generations.len() > generation {
                return generations.swap_remove(generation - 1);
            }
            assert!(Instant::now() < deadline, "process {generation} did not report its listeners:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn hang_up(&self) {
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// The process that took over, as the first one's log names it.
    fn successor(&self) -> Option<u32> {
        let log = self.log();
        let line = log.lines().find(|l| l.contains("takes over with it"))?;
        let pid = line.split("process ").nth(1)?.split_whitespace().next()?;
        pid.parse().ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(pid) = self.successor() {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
}

fn config(services: &[(&str, &Upstream)]) -> String {
    let mut text = String::from(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[gateway]\nworkers = 2\npin_secret = \"end-to-end-test-secret\"\n",
    );
    for (name, stable) in services {
        text.push_str(&format!(
            "[[service]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nstable = {{ version = \"v1\", upstreams = [\"{}\"] }}\n",
            stable.addr
        ));
    }
    text
}

fn url_of(listeners: &[(String, String)], name: &str) -> String {
    listeners.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name} in {listeners:?}")).1.clone()
}

async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_applies_a_changed_file_without_a_failed_request() {
    let (first, second) = (Upstream::start("v1").await, Upstream::start("v1").await);
    let mut node = Node::start(&config(&[("web", &first)]));
    let before = node.listeners(1).await;
    let web = url_of(&before, "web");
    let traffic = Traffic::start(web.trim_start_matches("http://").parse().unwrap(), 100, 6, Duration::from_millis(2));
    tokio::time::sleep(Duration::from_millis(500)).await;

    std::fs::write(node.path("canary.toml"), config(&[("web", &second), ("api", &first)])).unwrap();
    node.hang_up();
    let after = node.listeners(2).await;
    let status = wait_exit(&mut node.child, Duration::from_secs(30)).await;
    assert!(status.success(), "the first process drained and exited cleanly: {status:?}\n{}", node.log());
    assert_eq!(url_of(&after, "web"), web, "web keeps its socket");
    assert_eq!(url_of(&after, "admin"), url_of(&before, "admin"), "so does the admin API");
    let served_before = second.hits();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (sent, failed) = (traffic.sent(), traffic.failed());
    println!("reload under load: {sent} requests, {failed} failed");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed across the reload:\n{}", node.log());
    assert!(second.hits() > served_before, "web's stable now runs where the file says");
    let api = reqwest::get(format!("{}/", url_of(&after, "api"))).await.expect("the new service answers");
    assert_eq!(api.status(), 200);
    traffic.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_with_an_invalid_file_keeps_the_running_config_and_says_why() {
    let stable = Upstream::start("v1").await;
    let mut node = Node::start(&config(&[("web", &stable)]));
    let web = url_of(&node.listeners(1).await, "web");
    std::fs::write(node.path("canary.toml"), config(&[("web", &stable)]).replace("workers = 2", "workers = 0"))
        .unwrap();
    node.hang_up();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.log().contains("is not valid; keeping the running configuration") {
        assert!(Instant::now() < deadline, "no word about the invalid file:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(node.log().contains("workers must be at least 1"), "the validate message is logged:\n{}", node.log());
    assert!(node.child.try_wait().unwrap().is_none(), "the process keeps running");
    assert_eq!(reqwest::get(format!("{web}/")).await.unwrap().status(), 200);
    assert!(node.successor().is_none());
}
