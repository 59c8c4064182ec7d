//! etcd's v3 API as its JSON gateway speaks it: the protobuf messages in proto3's JSON mapping.
//!
//! Two quirks of that mapping shape every type here: 64-bit integers travel as strings
//! (`"revision": "42"`), and fields at their default value are left out (`succeeded` is absent
//! when false, `kvs` when empty). Keys and values are base64.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes as base64, both ways.
pub(crate) mod b64 {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// An int64 as proto3's JSON writes it (a string), read also from a plain number.
pub(crate) mod int64 {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(value: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Int64 {
            Text(String),
            Number(i64),
        }
        match Int64::deserialize(d)? {
            Int64::Number(n) => Ok(n),
            Int64::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// `ResponseHeader`: only the revision matters here.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, with = "int64")]
    pub revision: i64,
}

/// `mvccpb.KeyValue`.
#[derive(Debug, Deserialize)]
pub(crate) struct KeyValue {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(default, with = "b64")]
    pub value: Vec<u8>,
    #[serde(default, with = "int64")]
    pub mod_revision: i64,
    #[serde(default, with = "int64")]
    pub lease: i64,
}

/// `RangeRequest`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct RangeRequest {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub range_end: Vec<u8>,
    #[serde(with = "int64", skip_serializing_if = "is_zero")]
    pub limit: i64,
    #[serde(with = "int64", skip_serializing_if = "is_zero")]
    pub revision: i64,
}

/// `RangeResponse`.
#[derive(Debug, Deserialize)]
pub(crate) struct RangeResponse {
    pub header: Option<Header>,
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
    #[serde(default)]
    pub more: bool,
}

/// `PutRequest`.
#[derive(Debug, Serialize)]
pub(crate) struct PutRequest {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    #[serde(with = "int64", skip_serializing_if = "is_zero")]
    pub lease: i64,
}

/// `DeleteRangeRequest` (one key).
#[derive(Debug, Serialize)]
pub(crate) struct DeleteRequest {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
}

/// The answer of a put, a delete or a compaction: the header, and for a delete the count.
#[derive(Debug, Deserialize)]
pub(crate) struct WriteResponse {
    pub header: Option<Header>,
    #[serde(default, with = "int64")]
    pub deleted: i64,
}

/// `Compare` on one key's `mod_revision` or `create_revision`, always `EQUAL`.
#[derive(Debug, Serialize)]
pub(crate) struct Compare {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    pub target: &'static str,
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "option_int64")]
    pub mod_revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "option_int64")]
    pub create_revision: Option<i64>,
}

fn option_int64<S: Serializer>(value: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => int64::serialize(v, s),
        None => s.serialize_none(),
    }
}

impl Compare {
    /// `key`'s `mod_revision == revision` (0: the key is absent).
    pub(crate) fn mod_revision(key: &str, revision: i64) -> Self {
        Self { key: key.into(), target: "MOD", result: "EQUAL", mod_revision: Some(revision), create_revision: None }
    }

    /// `key`'s `create_revision == revision` (0: the key is absent).
    pub(crate) fn create_revision(key: &str, revision: i64) -> Self {
        Self { key: key.into(), target: "CREATE", result: "EQUAL", mod_revision: None, create_revision: Some(revision) }
    }
}

/// `RequestOp`: one operation of a transaction branch.
#[derive(Debug, Serialize)]
pub(crate) enum RequestOp {
    #[serde(rename = "request_put")]
    Put(PutRequest),
    #[serde(rename = "request_delete_range")]
    Delete(DeleteRequest),
    #[serde(rename = "request_range")]
    Range(RangeRequest),
}

/// `TxnRequest`.
#[derive(Debug, Serialize)]
pub(crate) struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

/// `TxnResponse`; of the branch's answers only ranges are read (the failure branch's read-back).
#[derive(Debug, Deserialize)]
pub(crate) struct TxnResponse {
    pub header: Option<Header>,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

/// `ResponseOp`.
#[derive(Debug, Deserialize)]
pub(crate) struct ResponseOp {
    pub response_range: Option<RangeResponse>,
}

/// `WatchRequest` with its `create_request`.
#[derive(Debug, Serialize)]
pub(crate) struct WatchRequest {
    pub create_request: WatchCreate,
}

/// `WatchCreateRequest`.
#[derive(Debug, Serialize)]
pub(crate) struct WatchCreate {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub range_end: Vec<u8>,
    #[serde(with = "int64", skip_serializing_if = "is_zero")]
    pub start_revision: i64,
}

/// One line of a streamed answer: `{"result": …}` or `{"error": …}`.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamLine<T> {
    pub result: Option<T>,
    pub error: Option<GatewayError>,
}

/// `WatchResponse`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WatchResponse {
    #[serde(default)]
    pub canceled: bool,
    #[serde(default, with = "int64")]
    pub compact_revision: i64,
    #[serde(default)]
    pub cancel_reason: String,
    #[serde(default)]
    pub events: Vec<Event>,
}

/// `mvccpb.Event`: `type` is absent for a put (the enum's default).
#[derive(Debug, Deserialize)]
pub(crate) struct Event {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub kv: Option<KeyValue>,
}

/// `LeaseGrantRequest`, `LeaseKeepAliveRequest` and `LeaseRevokeRequest` (`TTL` only for grants).
#[derive(Debug, Serialize)]
pub(crate) struct LeaseRequest {
    #[serde(rename = "ID", with = "int64", skip_serializing_if = "is_zero")]
    pub id: i64,
    #[serde(rename = "TTL", with = "int64", skip_serializing_if = "is_zero")]
    pub ttl: i64,
}

/// `LeaseGrantResponse` and `LeaseKeepAliveResponse`: a TTL of 0 (absent) means the lease is gone.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LeaseResponse {
    #[serde(rename = "ID", default, with = "int64")]
    pub id: i64,
    #[serde(rename = "TTL", default, with = "int64")]
    pub ttl: i64,
}

/// `CompactionRequest`.
#[derive(Debug, Serialize)]
pub(crate) struct CompactionRequest {
    #[serde(with = "int64")]
    pub revision: i64,
}

/// The gateway's error body: the gRPC status code and its message.
#[derive(Debug, Deserialize)]
pub(crate) struct GatewayError {
    #[serde(default)]
    pub code: i32,
    #[serde(default)]
    pub message: String,
}

/// `AuthenticateRequest`.
#[derive(Serialize)]
pub(crate) struct AuthenticateRequest<'a> {
    pub name: &'a str,
    pub password: &'a str,
}

/// `AuthenticateResponse`: the token to send as `Authorization` with every later request.
#[derive(Deserialize)]
pub(crate) struct AuthenticateResponse {
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_fields_travel_as_strings_and_defaults_are_left_out() {
        let request = RangeRequest { key: b"/a".to_vec(), revision: 7, ..RangeRequest::default() };
        assert_eq!(serde_json::to_string(&request).unwrap(), r#"{"key":"L2E=","revision":"7"}"#);
        let compare = Compare::mod_revision("/a", 0);
        assert_eq!(
            serde_json::to_string(&compare).unwrap(),
            r#"{"key":"L2E=","target":"MOD","result":"EQUAL","mod_revision":"0"}"#
        );
    }

    #[test]
    fn a_response_without_optional_fields_reads_as_defaults() {
        let txn: TxnResponse = serde_json::from_str(r#"{"header":{"revision":"12"}}"#).unwrap();
        assert!(!txn.succeeded);
        assert_eq!(txn.header.unwrap().revision, 12);
        let line: StreamLine<WatchResponse> =
            serde_json::from_str(r#"{"result":{"events":[{"type":"DELETE","kv":{"key":"L2E=","mod_revision":9}}]}}"#)
                .unwrap();
        let event = &line.result.unwrap().events[0];
        assert_eq!(event.kind.as_deref(), Some("DELETE"));
        assert_eq!(event.kv.as_ref().unwrap().mod_revision, 9);
    }
}
