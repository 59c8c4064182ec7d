//! A real Prometheus for tests: scrapes the given targets every second, from its own temp dir
//! and a free loopback port, killed by PID when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

pub struct Prometheus {
    child: Option<Child>,
    pub url: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port` of admin listeners) every second and
    /// waits until it is ready. Fails the test when the binary is missing: CI installs it.
    pub async fn start(targets: &[String]) -> Prometheus {
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("prometheus is not installed: apt-get install prometheus (CI's .ci/run does)");
        let mut dir = tempfile::tempdir().unwrap();
        let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: canary\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_configs:\n      - targets: [{list}]\n"
        );
        for _ in 0..5 {
            std::fs::write(dir.path().join("prometheus.yml"), &config).unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = Command::new(binary)
                .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start prometheus");
            let mut server = Prometheus { child: Some(child), url: format!("http://127.0.0.1:{port}"), dir };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(r) = reqwest::get(format!("{}/-/ready", server.url)).await
                    && r.status().is_success()
                {
                    return server;
                }
                if server.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!("prometheus did not come up on {port}; retrying:\n{}", server.log());
            server.kill();
            dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
        }
        panic!("prometheus did not start");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Prometheus {
    /// Waits until Prometheus has scraped `targets` targets successfully, at most `limit`: a
    /// Prometheus that just started answers queries seconds before its first scrape lands.
    pub async fn wait_until_scraped(&self, targets: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        let url = format!("{}/api/v1/query?query=up%20%3D%3D%201", self.url);
        loop {
            let answer: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
            if answer["data"]["result"].as_array().map_or(0, Vec::len) >= targets {
                return;
            }
            assert!(Instant::now() < deadline, "prometheus did not scrape {targets} targets:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
