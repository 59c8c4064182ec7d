//! `deploy/systemd/canary.service` as systemd itself reads it: `systemd-analyze verify` finds
//! nothing to say about it, its sandbox rates as well exposed as a network service can be, and
//! its stop timeout leaves the gateway's drain time to finish.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use canary_core::config::{Config, HumanDuration};

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd/canary.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A copy of the unit in a temp dir, starting the binary this build made, since `verify`
/// checks that `ExecStart`'s program exists.
fn unit_copy(dir: &Path) -> PathBuf {
    let text = unit_text();
    assert!(text.contains("ExecStart=/usr/local/bin/canary serve --config /etc/canary/canary.toml\n"));
    let path = dir.join("canary.service");
    std::fs::write(&path, text.replace("/usr/local/bin/canary", env!("CARGO_BIN_EXE_canary"))).unwrap();
    path
}

fn systemd_analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let output = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze is needed for this test: install Debian's systemd package");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The value of `key=` in the unit (the last one, as systemd reads it).
fn setting(key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    unit_text().lines().rev().find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}

#[test]
fn systemd_verifies_the_unit_without_a_word() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let (ok, text) = systemd_analyze(&["verify"], &unit);
    // `verify` exits 0 even for keys it ignores; anything it says about the unit is a fault.
    let about_unit: Vec<&str> = text.lines().filter(|l| l.contains("canary.service")).collect();
    assert!(ok && about_unit.is_empty(), "systemd-analyze verify:\n{text}");

    // The check is real: a misspelt key and a missing binary are caught.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    let bad = broken.join("canary.service");
    let text = std::fs::read_to_string(&unit).unwrap().replace("ProtectHome=yes", "ProtectHom=yes");
    std::fs::write(&bad, text.replace(env!("CARGO_BIN_EXE_canary"), "/nonexistent/canary")).unwrap();
    let (ok, text) = systemd_analyze(&["verify"], &bad);
    assert!(!ok && text.contains("ProtectHom") && text.contains("/nonexistent/canary"), "{text}");
}

#[test]
fn the_sandbox_is_tight() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = systemd_analyze(&["security", "--offline=yes"], &unit_copy(dir.path()));
    assert!(ok, "{text}");
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for canary.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.0, "exposure {level} (0 = fully sandboxed, 10 = not at all):\n{text}");
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("StateDirectory", "canary"),
        ("ConfigurationDirectory", "canary"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("CapabilityBoundingSet", ""),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Type", "notify"),
        ("NotifyAccess", "all"),
    ] {
        assert_eq!(setting(key).as_deref(), Some(value), "{key}");
    }
}

#[test]
fn stopping_waits_longer_than_the_gateway_drains() {
    let config = Config::from_toml(
        "[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nstable = { version = \"v1\", upstreams = [\"127.0.0.1:9\"] }\n",
    )
    .unwrap();
    let drain = config.gateway.shutdown_timeout.0;
    let stop = setting("TimeoutStopSec").expect("TimeoutStopSec");
    let stop = HumanDuration::try_from(stop).unwrap().0;
    assert!(stop > drain + Duration::from_secs(5), "TimeoutStopSec {stop:?} leaves no margin over {drain:?}");
}
