//! The admin API as the CLI speaks to it: one client that unwraps the envelope
//! `{code, clientMessage, systemMessage, data}` and tells a refusal from an API that cannot be
//! reached, and the paths of the calls.

use std::time::Duration;

use anyhow::{Context, anyhow};
use canary_core::api::{Code, Envelope};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// `GET` it for every service's routing.
pub const SERVICES_PATH: &str = "/api/v1/services";

/// Every rollout of a service, oldest first; `POST` starts one.
pub fn rollouts_path(service: &str) -> String {
    format!("/api/v1/services/{}/rollouts", segment(service))
}

/// The service's active rollout, else its latest.
pub fn rollout_path(service: &str) -> String {
    format!("/api/v1/services/{}/rollout", segment(service))
}

/// A service name as one path segment: anything but letters, digits, `-`, `_` and `.` is
/// percent-encoded, so a name with `/` or `?` is looked up (and refused) as a name.
pub fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A successful answer.
pub struct Answer<T> {
    /// The envelope's `clientMessage`.
    pub client_message: String,
    /// The envelope's `data`, read.
    pub data: T,
    /// The envelope's `data` as sent, for `--json`.
    pub sent: Value,
}

/// Why a call failed: the API said no, or it could not be reached at all.
pub enum CallError {
    /// `NOT_FOUND`: no such service, or no rollout of it.
    NotFound(anyhow::Error),
    /// An envelope with another code than `OK`, or an answer that is not an envelope.
    Refused(anyhow::Error),
    /// No answer (connection refused, timeout, …).
    Unreachable(anyhow::Error),
}

impl From<CallError> for anyhow::Error {
    fn from(e: CallError) -> anyhow::Error {
        match e {
            CallError::NotFound(e) | CallError::Refused(e) | CallError::Unreachable(e) => e,
        }
    }
}

/// Reads the text of an answer from `url`: an envelope whose code is `OK` and whose data is a
/// `T`, else the refusal in the envelope's words.
fn read_answer<T: DeserializeOwned>(
    url: &str,
    status: reqwest::StatusCode,
    text: &str,
) -> Result<Answer<T>, CallError> {
    let envelope: Envelope<Value> = serde_json::from_str(text).map_err(|_| {
        CallError::Refused(anyhow!(
            "{url} did not answer with an admin API envelope (HTTP {status}); is --admin the admin listener?"
        ))
    })?;
    if envelope.code != Code::Ok {
        tracing::debug!(code = ?envelope.code, system_message = envelope.system_message, "refused");
        let error = anyhow!("{} [{}]", envelope.client_message, code_name(envelope.code));
        return Err(if envelope.code == Code::NotFound {
            CallError::NotFound(error)
        } else {
            CallError::Refused(error)
        });
    }
    let sent = envelope.data.unwrap_or(Value::Null);
    let data = T::deserialize(&sent)
        .map_err(|e| CallError::Refused(anyhow!("{url} sent data this canary cannot read: {e}")))?;
    Ok(Answer { client_message: envelope.client_message, data, sent })
}

/// `NOT_FOUND`: the code as the API spells it.
fn code_name(code: Code) -> String {
    match serde_json::to_value(code) {
        Ok(Value::String(name)) => name,
        _ => format!("{code:?}"),
    }
}

/// A client of one admin API.
pub struct Admin {
    base: reqwest::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Admin {
    /// A client for the admin API at `base` (like `http://127.0.0.1:7070`).
    pub fn new(base: &str, token: Option<&str>) -> anyhow::Result<Admin> {
        let parsed = reqwest::Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| anyhow!("--admin {base:?} is not a URL like http://127.0.0.1:7070"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            // Below the admin listener's idle timeout (60 s by default), so a pooled connection
            // is never reused just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(20))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Admin { base: parsed, token: token.map(str::to_owned), http })
    }

    /// The base URL as given.
    fn base_text(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Calls `path` and unwraps the envelope; anything but `OK` is an error naming the
    /// envelope's `clientMessage`, and data that is not a `T` is an error too.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer<T>, CallError> {
        let url = format!("{}{path}", self.base_text());
        // Every change says JSON, body or not: the admin API refuses changes that do not,
        // which is what keeps a cross-site HTML form from steering rollouts.
        let changes = !matches!(method, reqwest::Method::GET | reqwest::Method::HEAD);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        match body {
            Some(body) => request = request.json(&body),
            None if changes => request = request.header(reqwest::header::CONTENT_TYPE, "application/json"),
            None => {}
        }
        let response = request.send().await.map_err(|e| {
            CallError::Unreachable(anyhow!(
                "cannot reach the admin API at {}: {}. Is `canary serve` running there? Set --admin or CANARY_ADMIN.",
                self.base_text(),
                root_cause(&e)
            ))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            CallError::Unreachable(anyhow!(
                "the admin API at {} stopped answering: {}",
                self.base_text(),
                root_cause(&e)
            ))
        })?;
        read_answer(&url, status, &text)
    }
}

/// The innermost cause of an error, which names what actually went wrong ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_stay_one_path_segment() {
        assert_eq!(segment("web-1_a.b"), "web-1_a.b");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn bad_admin_urls_are_refused_before_any_call() {
        assert!(Admin::new("http://127.0.0.1:7070", None).is_ok());
        for bad in ["127.0.0.1:7070", "ftp://x", "not a url", ""] {
            let e = Admin::new(bad, None).err().unwrap().to_string();
            assert!(e.contains("is not a URL"), "{bad}: {e}");
        }
    }

    fn read(text: &str) -> Result<Answer<Vec<String>>, CallError> {
        read_answer("http://127.0.0.1:7070/api/v1/x", reqwest::StatusCode::OK, text)
    }

    fn message(result: Result<Answer<Vec<String>>, CallError>) -> (&'static str, String) {
        match result {
            Ok(_) => ("ok", String::new()),
            Err(CallError::NotFound(e)) => ("not found", e.to_string()),
            Err(CallError::Refused(e)) => ("refused", e.to_string()),
            Err(CallError::Unreachable(e)) => ("unreachable", e.to_string()),
        }
    }

    #[test]
    fn an_answer_is_read_as_its_type_and_kept_as_sent() {
        let answer = read(r#"{"code":"OK","clientMessage":"Here.","systemMessage":"","data":["a","b"]}"#).ok().unwrap();
        assert_eq!(answer.client_message, "Here.");
        assert_eq!(answer.data, ["a", "b"]);
        assert_eq!(answer.sent, serde_json::json!(["a", "b"]));
    }

    #[test]
    fn a_refusal_names_the_code_as_the_api_spells_it() {
        let not_found =
            r#"{"code":"NOT_FOUND","clientMessage":"No service named \"shop\".","systemMessage":"","data":null}"#;
        assert_eq!(message(read(not_found)), ("not found", "No service named \"shop\". [NOT_FOUND]".to_owned()));
        let busy = r#"{"code":"ROLLOUT_IN_PROGRESS","clientMessage":"Busy.","systemMessage":"web-1","data":null}"#;
        assert_eq!(message(read(busy)), ("refused", "Busy. [ROLLOUT_IN_PROGRESS]".to_owned()));
        let (kind, text) = message(read("<html>hello</html>"));
        assert_eq!(kind, "refused");
        assert!(text.contains("did not answer with an admin API envelope (HTTP 200 OK)"), "{text}");
        let (kind, text) = message(read(r#"{"code":"OK","clientMessage":"","systemMessage":"","data":{"a":1}}"#));
        assert_eq!(kind, "refused");
        assert!(text.contains("sent data this canary cannot read"), "{text}");
    }
}
