//! A small client of etcd's JSON gateway (`/v3/kv/*`, `/v3/watch`, `/v3/lease/*`), which every
//! etcd since 3.4 serves on its client port beside gRPC.
//!
//! Why not the gRPC client: its build script needs `protoc` and protobuf's include files on the
//! building machine, and the default product (the embedded store) should build with nothing but
//! Rust. The JSON gateway is the same API, message for message, over plain HTTP/1.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{self, GatewayError, StreamLine};
use super::{BACKEND, EtcdOptions, corrupt, unavailable};
use crate::{Result, StoreError};

/// gRPC status codes etcd answers with, as its gateway passes them on.
mod code {
    pub(super) const INVALID_ARGUMENT: i32 = 3;
    pub(super) const NOT_FOUND: i32 = 5;
    pub(super) const FAILED_PRECONDITION: i32 = 9;
    pub(super) const OUT_OF_RANGE: i32 = 11;
}

/// The HTTP side of [`EtcdStore`](super::EtcdStore): endpoints, deadlines and error mapping.
/// Cheap to clone; clones share connections and the endpoint that last answered.
#[derive(Clone)]
pub struct EtcdClient {
    http: reqwest::Client,
    endpoints: Arc<[String]>,
    /// Index of the endpoint tried first: the one that answered last.
    preferred: Arc<AtomicUsize>,
    request_timeout: Duration,
}

impl EtcdClient {
    pub(crate) fn new<E: AsRef<str>>(endpoints: &[E], options: &EtcdOptions) -> Result<Self> {
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.as_ref().trim_end_matches('/').to_owned()).collect();
        if endpoints.is_empty() {
            return Err(StoreError::InvalidArgument("etcd needs at least one endpoint".into()));
        }
        for endpoint in &endpoints {
            let url = reqwest::Url::parse(endpoint)
                .map_err(|e| StoreError::InvalidArgument(format!("etcd endpoint {endpoint:?}: {e}")))?;
            if url.scheme() != "http" {
                return Err(StoreError::InvalidArgument(format!(
                    "etcd endpoint {endpoint:?}: only http:// endpoints are supported"
                )));
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .tcp_keepalive(options.keep_alive_interval)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| unavailable(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            endpoints: endpoints.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
            request_timeout: options.request_timeout,
        })
    }

    /// One unary call: `body` posted to `path`, the answer decoded.
    pub(crate) async fn call<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R> {
        let response = self.send(path, body, Some(self.request_timeout)).await?;
        let bytes = response.bytes().await.map_err(|e| unavailable(format!("{path}: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("{path} answered unreadable JSON: {e}")))
    }

    /// A streaming call (a watch): the response head within the request deadline, then lines
    /// for as long as etcd sends them.
    pub(crate) async fn stream(&self, path: &str, body: &impl Serialize) -> Result<Lines> {
        let head = tokio::time::timeout(self.request_timeout, self.send(path, body, None)).await;
        let response =
            head.map_err(|_| unavailable(format!("{path}: no answer within {:?}", self.request_timeout)))??;
        Ok(Lines { response, buffer: Vec::new(), path: path.to_owned() })
    }

    /// Posts to the preferred endpoint, moving on to the next one only when the connection
    /// could not be made, so a request that may have been applied is never sent twice.
    async fn send(&self, path: &str, body: &impl Serialize, deadline: Option<Duration>) -> Result<reqwest::Response> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_error = String::new();
        for attempt in 0..self.endpoints.len() {
            let index = (first + attempt) % self.endpoints.len();
            let mut request = self.http.post(format!("{}{path}", self.endpoints[index])).json(body);
            if let Some(deadline) = deadline {
                request = request.timeout(deadline);
            }
            match request.send().await {
                Ok(response) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return check_status(path, response).await;
                }
                Err(e) if e.is_connect() => last_error = format!("{}: {e}", self.endpoints[index]),
                Err(e) => return Err(unavailable(format!("{path}: {e}"))),
            }
        }
        Err(unavailable(format!("no etcd endpoint answered ({last_error})")))
    }

    /// Compacts the history up to `revision`, as an operator's maintenance would.
    pub async fn compact(&self, revision: crate::Revision) -> Result<()> {
        let revision = super::to_etcd(revision)?;
        let _: wire::WriteResponse = self.call("/v3/kv/compaction", &wire::CompactionRequest { revision }).await?;
        Ok(())
    }

    /// The lease `key` is bound to, if the key exists and has one.
    pub async fn lease_of(&self, key: &str) -> Result<Option<i64>> {
        let request = wire::RangeRequest { key: key.into(), ..wire::RangeRequest::default() };
        let response: wire::RangeResponse = self.call("/v3/kv/range", &request).await?;
        Ok(response.kvs.first().map(|kv| kv.lease).filter(|&lease| lease != 0))
    }

    /// Revokes a lease, deleting every key bound to it. A lease that is already gone is fine.
    pub async fn revoke_lease(&self, id: i64) -> Result<()> {
        let request = wire::LeaseRequest { id, ttl: 0 };
        match self.call::<_, wire::WriteResponse>("/v3/lease/revoke", &request).await {
            Ok(_) => Ok(()),
            Err(StoreError::Rejected { detail, .. }) if detail.starts_with("not found") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Turns a non-2xx answer into the error its gRPC code stands for.
async fn check_status(path: &str, response: reqwest::Response) -> Result<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<GatewayError>(&body) {
        Ok(error) => Err(status_error(&error)),
        Err(_) => Err(unavailable(format!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&body)))),
    }
}

pub(crate) fn status_error(error: &GatewayError) -> StoreError {
    match error.code {
        code::INVALID_ARGUMENT | code::OUT_OF_RANGE | code::FAILED_PRECONDITION => {
            StoreError::Rejected { backend: BACKEND, detail: error.message.clone() }
        }
        code::NOT_FOUND => StoreError::Rejected { backend: BACKEND, detail: format!("not found: {}", error.message) },
        other => unavailable(format!("gRPC code {other}: {}", error.message)),
    }
}

/// The lines of a streamed answer, each one JSON message.
pub(crate) struct Lines {
    response: reqwest::Response,
    buffer: Vec<u8>,
    path: String,
}

impl Lines {
    /// The next message; `Ok(None)` when etcd ended the stream.
    pub(crate) async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return self.decode(&line).map(Some);
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) if self.buffer.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                Ok(None) => {
                    let rest = std::mem::take(&mut self.buffer);
                    return self.decode(&rest).map(Some);
                }
                Err(e) => return Err(unavailable(format!("{}: {e}", self.path))),
            }
        }
    }

    fn decode<T: DeserializeOwned>(&self, line: &[u8]) -> Result<T> {
        let line: StreamLine<T> = serde_json::from_slice(line)
            .map_err(|e| corrupt(format!("{} streamed unreadable JSON: {e}", self.path)))?;
        match (line.result, line.error) {
            (_, Some(error)) => Err(status_error(&error)),
            (Some(result), None) => Ok(result),
            (None, None) => Err(corrupt(format!("{} streamed a line with neither result nor error", self.path))),
        }
    }
}
