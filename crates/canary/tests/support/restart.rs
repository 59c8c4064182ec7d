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
