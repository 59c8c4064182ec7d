//! Real Chromium for the browser tests: where the workspace is, and the browser, the driver
//! and node, or a panic that says what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root, where `tests/browser` is.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The browser and the driver, or a panic that says what to install.
pub fn browser_tools(root: &Path) -> PathBuf {
    let chromium = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(
        chromium.exists(),
        "{} is missing: the browser tests drive real Chromium. Install it with \
         `apt-get install chromium` (or set CHROMIUM to a Chromium binary).",
        chromium.display()
    );
    let driver = root.join("tests/browser/node_modules/playwright-core/package.json");
    assert!(
        driver.exists(),
        "{} is missing: run `npm ci --prefix tests/browser` (needs node and npm).",
        driver.display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "`node` is not on PATH: install Node.js 20 or later (Debian: `apt-get install nodejs npm`)."
    );
    chromium
}
