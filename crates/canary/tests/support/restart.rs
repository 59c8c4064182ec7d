//! Killing and restarting a `canary serve` process on the same config and store.

use super::Gateway;

impl Gateway {
    /// `kill -9`: no signal handler runs, nothing is flushed.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `canary serve` again on the same config file (and so the same store).
    pub fn restart(&mut self) {
        self.kill9();
        let (child, admin, services) = super::spawn_serve(&self.dir.path().join("canary.toml"), self.role.as_deref());
        self.child = Some(child);
        self.admin = admin;
        self.services = services;
    }
}

impl Gateway {
    /// Whether the process is still running.
    pub fn child_alive(&self) -> bool {
        self.child.is_some()
    }
}

impl Gateway {
    /// Starts `canary serve --take-over` on the same config and store: this handle then drives
    /// the new process, and the old one, which drains and exits, is returned.
    pub fn take_over(&mut self) -> std::process::Child {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_canary"));
        command.args(["serve", "--take-over", "--config"]).arg(self.dir.path().join("canary.toml"));
        command.args(["--role", self.role.as_deref().unwrap_or("all"), "--log", "warn"]);
        let child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start canary serve --take-over");
        let (child, admin, services) = super::wait_for_listeners(child);
        self.admin = admin;
        self.services = services;
        self.child.replace(child).expect("a running process to take over")
    }
}
