//! A small single-page app of one version, as a frontend build deploys one: a page that loads
//! its entry script, lazy chunks with content-hashed names only this version has (any other
//! `/assets/` path is a `404`, as on a static file server), and runtime data that is not
//! hashed (`/api/data.json`). Every request is counted.
//!
//! The page's script follows `x-canary-version-gone` the way docs/gateway.md shows: a data
//! response carrying it makes the page load itself again at its next route change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The lazy chunks every version of the app has, each under a name of its own build.
pub const CHUNKS: [&str; 2] = ["alpha", "beta"];

/// One version of the app on a loopback port.
pub struct App {
    pub addr: SocketAddr,
    pub version: String,
    hits: Arc<AtomicU64>,
    fail_with: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The path of `chunk` in `version`'s build: its name carries a hash of the build, so another
/// version's server does not have it.
pub fn chunk_path(version: &str, chunk: &str) -> String {
    let hash = canary_core::bucket::hash(version.as_bytes(), chunk.as_bytes());
    format!("/assets/{chunk}-{:08x}.js", hash as u32)
}

impl App {
    pub async fn start(version: &str) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let fail_with = Arc::new(AtomicU16::new(0));
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (v, h, f, conns) = (version.to_owned(), hits.clone(), fail_with.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (v, h, f) = (v.clone(), h.clone(), f.clone());
                let connection = tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        h.fetch_add(1, Ordering::Relaxed);
                        let failing = f.load(Ordering::Relaxed);
                        let v = v.clone();
                        async move { Ok::<_, hyper::Error>(serve(&v, failing, &req)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                conns.lock().unwrap().push(connection.abort_handle());
            }
        });
        App { addr, version: version.to_owned(), hits, fail_with, task, connections }
    }

    /// Requests this version received.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Makes every later request answer `status` (0 = behave normally).
    pub fn fail_with(&self, status: u16) {
        self.fail_with.store(status, Ordering::Relaxed);
    }

    /// Crashes: closes the listener and every open connection.
    pub fn stop(&self) {
        self.task.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

fn serve(version: &str, failing: u16, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let reply = |status: StatusCode, kind: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .header("x-served-by", version)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    if let Some(status) = StatusCode::from_u16(failing).ok().filter(|_| failing != 0) {
        return reply(status, "text/plain", format!("{version} failing\n"));
    }
    if path == "/api/data.json" {
        return reply(StatusCode::OK, "application/json", format!(r#"{{"version":"{version}"}}"#));
    }
    if path.starts_with("/assets/") {
        return match CHUNKS.iter().find(|c| chunk_path(version, c) == path) {
            Some(chunk) => reply(
                StatusCode::OK,
                "text/javascript",
                format!("export const version = {version:?};\nexport const chunk = {chunk:?};\n"),
            ),
            None => reply(StatusCode::NOT_FOUND, "text/plain", format!("{path}: not in build {version}\n")),
        };
    }
    reply(StatusCode::OK, "text/html; charset=utf-8", page(version))
}

/// The page: it names its version, knows its own chunks' paths, loads them only when asked
/// (`window.openChunk(name)`), and reloads at a route change (`window.routeChange(path)`)
/// once a response said its version is gone.
fn page(version: &str) -> String {
    let chunks: Vec<String> = CHUNKS.iter().map(|c| format!("{c:?}: {:?}", chunk_path(version, c))).collect();
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><meta name="app-version" content="{version}"><title>app {version}</title></head>
<body><h1>app {version}</h1>
<script type="module">
const chunks = {{ {chunks} }};
// The version-gone handler of docs/gateway.md.
let versionGone = false;
async function api(path) {{
  const response = await fetch(path);
  if (response.headers.has('x-canary-version-gone')) versionGone = true;
  return response.json();
}}
window.routeChange = (path) => {{
  if (versionGone) {{ location.assign(path); return 'reload'; }}
  history.pushState(null, '', path);
  return 'client';
}};
window.openChunk = async (name) => {{
  const module = await import(chunks[name]);
  const data = await api('/api/data.json');
  return {{ chunk: module.chunk, chunkVersion: module.version, dataVersion: data.version, versionGone }};
}};
window.appReady = true;
</script>
</body></html>
"#,
        chunks = chunks.join(", ")
    )
}
