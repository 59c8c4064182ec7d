//! A small client of etcd's JSON gateway (`/v3/kv/*`, `/v3/watch`, `/v3/lease/*`), which every
//! etcd since 3.4 serves on its client port beside gRPC.
//!
//! Why not the gRPC client: its build script needs `protoc` and protobuf's include files on the
//! building machine, and the default product (the embedded store) should build with nothing but
//! Rust. The JSON gateway is the same API, message for message, over plain HTTP/1.1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{self, GatewayError, StreamLine};
use super::{BACKEND, EtcdCredentials, EtcdOptions, corrupt, unavailable};
use crate::{Result, StoreError};

/// gRPC status codes etcd answers with, as its gateway passes them on.
mod code {
    pub(super) const INVALID_ARGUMENT: i32 = 3;
    pub(super) const NOT_FOUND: i32 = 5;
    pub(super) const PERMISSION_DENIED: i32 = 7;
    pub(super) const FAILED_PRECONDITION: i32 = 9;
    pub(super) const OUT_OF_RANGE: i32 = 11;
    pub(super) const UNAUTHENTICATED: i32 = 16;
}

/// What etcd's authentication needs: the credentials, and the token they last bought.
struct Auth {
    credentials: EtcdCredentials,
    token: Mutex<Option<Arc<str>>>,
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
    auth: Option<Arc<Auth>>,
}

impl EtcdClient {
    pub(crate) fn new<E: AsRef<str>>(endpoints: &[E], options: &EtcdOptions) -> Result<Self> {
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.as_ref().trim_end_matches('/').to_owned()).collect();
        if endpoints.is_empty() {
            return Err(StoreError::InvalidArgument("etcd needs at least one endpoint".into()));
        }
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        for endpoint in &endpoints {
            let url = reqwest::Url::parse(endpoint)
                .map_err(|e| StoreError::InvalidArgument(format!("etcd endpoint {endpoint:?}: {e}")))?;
            if url.scheme() != scheme {
                return Err(StoreError::InvalidArgument(format!(
                    "etcd endpoint {endpoint:?}: {scheme}:// expected ({})",
                    if scheme == "https" { "TLS is configured" } else { "set [store] TLS files for https://" }
                )));
            }
        }
        let http = http_client(options)?;
        Ok(Self {
            http,
            endpoints: endpoints.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
            request_timeout: options.request_timeout,
            auth: options
                .credentials
                .clone()
                .map(|credentials| Arc::new(Auth { credentials, token: Mutex::new(None) })),
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

    /// Posts with the current auth token; when etcd says the token expired (simple tokens
    /// do after a few idle minutes, and with every etcd restart), authenticates once more and
    /// sends again — an unauthenticated request was not applied, so that is never a repeat.
    async fn send(&self, path: &str, body: &impl Serialize, deadline: Option<Duration>) -> Result<reqwest::Response> {
        let token = self.token().await?;
        match self.send_as(token.as_deref(), path, body, deadline).await? {
            Ok(response) => Ok(response),
            Err(error) if error.code == code::UNAUTHENTICATED && self.auth.is_some() => {
                let token = self.authenticate().await?;
                self.send_as(Some(&token), path, body, deadline).await?.map_err(|e| status_error(&e))
            }
            Err(error) => Err(status_error(&error)),
        }
    }

    /// The token to send, authenticating first when there is none yet.
    async fn token(&self) -> Result<Option<Arc<str>>> {
        let Some(auth) = &self.auth else { return Ok(None) };
        let current = auth.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        match current {
            Some(token) => Ok(Some(token)),
            None => self.authenticate().await.map(Some),
        }
    }

    /// Trades the configured user name and password for a fresh token, and keeps it.
    async fn authenticate(&self) -> Result<Arc<str>> {
        let Some(auth) = &self.auth else { return Err(unavailable("no etcd credentials are configured")) };
        let request = wire::AuthenticateRequest { name: &auth.credentials.user, password: &auth.credentials.password };
        let answer = self.send_as(None, "/v3/auth/authenticate", &request, Some(self.request_timeout)).await?;
        let response = answer.map_err(|e| status_error(&e))?;
        let bytes = response.bytes().await.map_err(|e| unavailable(format!("/v3/auth/authenticate: {e}")))?;
        let answer: wire::AuthenticateResponse = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(format!("/v3/auth/authenticate answered unreadable JSON: {e}")))?;
        let token: Arc<str> = answer.token.into();
        *auth.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token.clone());
        Ok(token)
    }

    /// Posts to the preferred endpoint, moving on to the next one only when the connection
    /// could not be made, so a request that may have been applied is never sent twice. The
    /// inner error is etcd's own refusal, for the caller to act on.
    async fn send_as(
        &self,
        token: Option<&str>,
        path: &str,
        body: &impl Serialize,
        deadline: Option<Duration>,
    ) -> Result<Result<reqwest::Response, GatewayError>> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_error = String::new();
        for attempt in 0..self.endpoints.len() {
            let index = (first + attempt) % self.endpoints.len();
            let mut request = self.http.post(format!("{}{path}", self.endpoints[index])).json(body);
            if let Some(deadline) = deadline {
                request = request.timeout(deadline);
            }
            if let Some(token) = token {
                request = request.header(reqwest::header::AUTHORIZATION, token);
            }
            match request.send().await {
                Ok(response) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return refusal_of(path, response).await;
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

/// The HTTP client, with the TLS settings when etcd is reached over https.
fn http_client(options: &EtcdOptions) -> Result<reqwest::Client> {
    let invalid = |what: &str, e: reqwest::Error| StoreError::InvalidArgument(format!("etcd TLS: {what}: {e}"));
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .tcp_keepalive(options.keep_alive_interval)
        .tcp_nodelay(true);
    if let Some(tls) = &options.tls {
        if let Some(ca) = &tls.ca_pem {
            for certificate in reqwest::Certificate::from_pem_bundle(ca).map_err(|e| invalid("the CA file", e))? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some(identity) = &tls.identity_pem {
            builder = builder
                .identity(reqwest::Identity::from_pem(identity).map_err(|e| invalid("the client certificate", e))?);
        }
    }
    builder.build().map_err(|e| unavailable(format!("cannot build the HTTP client: {e}")))
}

/// A 2xx answer as it is; otherwise etcd's refusal, or an error when it is not one of etcd's.
async fn refusal_of(path: &str, response: reqwest::Response) -> Result<Result<reqwest::Response, GatewayError>> {
    if response.status().is_success() {
        return Ok(Ok(response));
    }
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<GatewayError>(&body) {
        Ok(error) => Ok(Err(error)),
        Err(_) => Err(unavailable(format!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&body)))),
    }
}

pub(crate) fn status_error(error: &GatewayError) -> StoreError {
    if let Some(denied) = access_error(error) {
        return denied;
    }
    match error.code {
        code::INVALID_ARGUMENT | code::OUT_OF_RANGE | code::FAILED_PRECONDITION => {
            StoreError::Rejected { backend: BACKEND, detail: error.message.clone() }
        }
        code::NOT_FOUND => StoreError::Rejected { backend: BACKEND, detail: format!("not found: {}", error.message) },
        other => unavailable(format!("gRPC code {other}: {}", error.message)),
    }
}

/// etcd's refusals of who we are, each with what the operator should change.
fn access_error(error: &GatewayError) -> Option<StoreError> {
    let message = &error.message;
    let detail = match error.code {
        code::PERMISSION_DENIED => format!("{message}: grant the user read and write on the /canary/ prefix"),
        code::UNAUTHENTICATED => format!("{message}: check [store] username and password"),
        code::INVALID_ARGUMENT if message.contains("user name is empty") => {
            format!("{message}: etcd has authentication enabled; set [store] username and password")
        }
        code::INVALID_ARGUMENT if message.contains("authentication failed") => {
            format!("{message}: check [store] username and password")
        }
        code::FAILED_PRECONDITION if message.contains("authentication is not enabled") => {
            format!("{message}: remove [store] username and password, or enable authentication in etcd")
        }
        _ => return None,
    };
    Some(StoreError::Denied { backend: BACKEND, detail })
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
