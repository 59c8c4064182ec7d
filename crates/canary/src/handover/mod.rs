//! Restart without a refused connection: a new `canary serve --take-over` asks the running one,
//! over a Unix socket only the same user can use, for its listening sockets. The old process
//! sends them and drains as on SIGTERM; the new one serves from the very same sockets, so
//! connections waiting in their queues are answered by the new process instead of being reset.
//! The embedded store is one writer's file: the new process opens it once the old one has
//! released it at its exit, and until then new connections wait in the kernel's queue.

mod wire;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use canary_gateway::InheritedSockets;
use tokio::sync::oneshot;

/// What a take-over asks for: the protocol's one request line.
const REQUEST: &[u8] = b"take-over v1\n";
/// The name the admin listener travels under; services travel under their names.
const ADMIN: &str = "admin";
/// How long the old process may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Sockets taken over from the process this one replaces.
#[derive(Default)]
pub struct Inherited {
    /// The admin listener.
    pub admin: Option<std::net::TcpListener>,
    /// Each service's listening sockets.
    pub services: InheritedSockets,
}

/// Takes the listening sockets of the `canary serve` answering at `path`, which then drains
/// and exits.
pub fn take_over(path: &Path) -> anyhow::Result<Inherited> {
    let stream = UnixStream::connect(path)
        .with_context(|| format!("--take-over: no running canary answers at {}", path.display()))?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    std::io::Write::write_all(&mut &stream, REQUEST).context("--take-over: cannot ask the running canary")?;
    let mut inherited = Inherited::default();
    for (name, fd) in wire::receive(&stream)? {
        let listener = std::net::TcpListener::from(fd);
        listener.set_nonblocking(true)?;
        if name == ADMIN {
            inherited.admin = Some(listener);
        } else {
            inherited.services.entry(name).or_default().push(listener);
        }
    }
    Ok(inherited)
}

/// Answers take-overs at `path` for as long as the process runs: the first one from the same
/// user gets `sockets`, and `taken` fires so the process stops as on SIGTERM.
pub fn listen(path: PathBuf, sockets: Vec<(String, std::net::TcpListener)>) -> anyhow::Result<oneshot::Receiver<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if UnixStream::connect(&path).is_ok() {
        bail!("another canary answers take-overs at {}", path.display());
    }
    // What is left is a socket file of a process that is gone.
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .with_context(|| format!("cannot listen for take-overs at {}", path.display()))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let (taken, on_taken) = oneshot::channel();
    std::thread::Builder::new()
        .name("canary-handover".into())
        .spawn(move || answer_take_overs(&listener, &sockets, taken))?;
    Ok(on_taken)
}

/// Serves take-over requests until one succeeds.
fn answer_take_overs(
    listener: &std::os::unix::net::UnixListener,
    sockets: &[(String, std::net::TcpListener)],
    taken: oneshot::Sender<()>,
) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        match hand_over(&stream, sockets) {
            Ok(()) => {
                tracing::info!("another canary took over the listening sockets: draining and stopping");
                let _ = taken.send(());
                return;
            }
            Err(e) => tracing::warn!(error = %e, "take-over refused"),
        }
    }
}

fn hand_over(stream: &UnixStream, sockets: &[(String, std::net::TcpListener)]) -> anyhow::Result<()> {
    let peer = rustix::net::sockopt::socket_peercred(stream).context("cannot tell who asks")?;
    if peer.uid != rustix::process::getuid() {
        bail!("process {} of another user asked", peer.pid.as_raw_nonzero());
    }
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let mut request = [0u8; REQUEST.len()];
    std::io::Read::read_exact(&mut &*stream, &mut request).context("no take-over request")?;
    if request != REQUEST {
        bail!("unknown request {:?}", String::from_utf8_lossy(&request));
    }
    wire::send(stream, sockets)
}

/// The admin listener under its hand-over name, with every service's sockets.
pub fn sockets(
    admin: std::net::TcpListener,
    services: &[(String, std::net::TcpListener)],
) -> anyhow::Result<Vec<(String, std::net::TcpListener)>> {
    let mut all = vec![(ADMIN.to_owned(), admin)];
    for (name, socket) in services {
        all.push((name.clone(), socket.try_clone()?));
    }
    Ok(all)
}
