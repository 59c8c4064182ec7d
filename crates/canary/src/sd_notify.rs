//! systemd's readiness protocol (`Type=notify`): one datagram to `$NOTIFY_SOCKET` once every
//! listener is up. It names this process the service's main one, which is what lets a process
//! that took over after `systemctl reload` be followed by systemd (`NotifyAccess=all`).

use std::os::unix::net::UnixDatagram;

/// Tells systemd this process is ready and is the service's main process; nothing outside
/// systemd (no `NOTIFY_SOCKET`).
pub fn ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let message = format!("READY=1\nMAINPID={}\n", std::process::id());
    if let Err(e) = send(&path, message.as_bytes()) {
        tracing::warn!(error = %e, "cannot tell systemd this process is ready");
    }
}

fn send(path: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    // A leading '@' names a socket in Linux's abstract namespace.
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(message, &address)?;
    } else {
        socket.send_to(message, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_datagram_says_ready_and_names_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let systemd = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), format!("READY=1\nMAINPID={}\n", std::process::id()).as_bytes()).unwrap();
        let mut buffer = [0u8; 128];
        let n = systemd.recv(&mut buffer).unwrap();
        let text = std::str::from_utf8(&buffer[..n]).unwrap();
        assert_eq!(text, format!("READY=1\nMAINPID={}\n", std::process::id()));
    }
}
