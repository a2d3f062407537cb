//! The JSON forms of keys, values and transactions.
//!
//! Keys and values are bytes. In JSON a key or value that is UTF-8 text is a string field
//! (`key`, `value`); any other bytes go base64-encoded in `key_base64` / `value_base64`.
//! Requests accept either form.

use axum::http::StatusCode;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use flotilla_core::kv::{
    Compare, CompareOp, CompareTarget, KeyValue, OpResult, RangeEnd, RangeRequest, Txn, TxnOp, TxnReply,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::HttpError;

/// Put `bytes` into `object` as `field` (text) or `field_base64`.
pub(crate) fn put_bytes(object: &mut Map<String, Value>, field: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(field.to_string(), json!(text)),
        Err(_) => object.insert(format!("{field}_base64"), json!(STANDARD.encode(bytes))),
    };
}

/// A key and its state as JSON; without the value when `keys_only`.
pub(crate) fn key_value(kv: &KeyValue, keys_only: bool) -> Value {
    let mut object = Map::new();
    put_bytes(&mut object, "key", &kv.key);
    if !keys_only {
        put_bytes(&mut object, "value", &kv.value);
    }
    object.insert("create_revision".into(), json!(kv.create_revision));
    object.insert("mod_revision".into(), json!(kv.mod_revision));
    object.insert("version".into(), json!(kv.version));
    object.insert("lease".into(), json!(kv.lease));
    Value::Object(object)
}

fn bad(message: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, "malformed", message)
}

/// Bytes given as text or as base64 (exactly one of the two).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Bytes2 {
    text: Option<String>,
    base64: Option<String>,
}

impl Bytes2 {
    fn take(self, field: &str, required: bool) -> Result<Option<Vec<u8>>, HttpError> {
        match (self.text, self.base64) {
            (Some(t), None) => Ok(Some(t.into_bytes())),
            (None, Some(b)) => {
                STANDARD.decode(b).map(Some).map_err(|e| bad(format!("{field}_base64 is not base64: {e}")))
            }
            (None, None) if !required => Ok(None),
            (None, None) => Err(bad(format!("{field} (or {field}_base64) is required"))),
            (Some(_), Some(_)) => Err(bad(format!("give {field} or {field}_base64, not both"))),
        }
    }
}

/// The JSON body of `POST /v1/txn/{ns}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TxnBody {
    #[serde(default)]
    compare: Vec<CompareBody>,
    #[serde(default)]
    success: Vec<OpBody>,
    #[serde(default)]
    failure: Vec<OpBody>,
}

/// One compare: `{"key": "k", "target": "mod_revision", "op": "=", "value": 5}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareBody {
    key: Option<String>,
    key_base64: Option<String>,
    /// `value`, `version`, `create_revision`, `mod_revision`, `lease` or `exists`.
    target: String,
    /// `=` (default), `!=`, `>` or `<`.
    #[serde(default)]
    op: Option<String>,
    /// A string for `value` (or `value_base64`), a number for revisions, version and lease, a
    /// boolean for `exists`.
    value: Option<Value>,
    value_base64: Option<String>,
}

/// One operation: exactly one of `put`, `delete`, `get` (one key) or `range`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpBody {
    put: Option<PutBody>,
    delete: Option<RangeBody>,
    get: Option<RangeBody>,
    range: Option<RangeBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    key: Option<String>,
    key_base64: Option<String>,
    value: Option<String>,
    value_base64: Option<String>,
    #[serde(default)]
    lease: u64,
    #[serde(default)]
    prev_kv: bool,
}

/// A key or range: `key` alone is one key; with `prefix: true` every key starting with it;
/// with `range_end` the keys up to it (excluded); with `from_key: true` every key from it on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeBody {
    key: Option<String>,
    key_base64: Option<String>,
    #[serde(default)]
    prefix: bool,
    range_end: Option<String>,
    #[serde(default)]
    from_key: bool,
    #[serde(default)]
    limit: u64,
    #[serde(default)]
    revision: u64,
    #[serde(default)]
    keys_only: bool,
    #[serde(default)]
    prev_kv: bool,
}

impl TxnBody {
    /// The transaction this body describes, or why it is malformed.
    pub(crate) fn into_txn(self) -> Result<Txn, HttpError> {
        let compares = self.compare.into_iter().map(CompareBody::into_compare).collect::<Result<_, _>>()?;
        let success = self.success.into_iter().map(OpBody::into_op).collect::<Result<_, _>>()?;
        let failure = self.failure.into_iter().map(OpBody::into_op).collect::<Result<_, _>>()?;
        Ok(Txn { compares, success, failure })
    }
}

fn key_of(text: Option<String>, base64: Option<String>) -> Result<Vec<u8>, HttpError> {
    Ok(Bytes2 { text, base64 }.take("key", true)?.unwrap_or_default())
}

impl CompareBody {
    fn into_compare(self) -> Result<Compare, HttpError> {
        let key = key_of(self.key, self.key_base64)?;
        let mut op = match self.op.as_deref().unwrap_or("=") {
            "=" | "==" => CompareOp::Equal,
            "!=" => CompareOp::NotEqual,
            ">" => CompareOp::Greater,
            "<" => CompareOp::Less,
            other => return Err(bad(format!("unknown compare op {other:?}: use =, !=, > or <"))),
        };
        let number = |v: &Option<Value>| {
            v.as_ref()
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(format!("target {} needs a number value", self.target)))
        };
        let target = match self.target.as_str() {
            "value" => {
                let text = self.value.as_ref().map(|v| v.as_str().map(str::to_string));
                let text = match text {
                    Some(Some(t)) => Some(t),
                    Some(None) => return Err(bad("target value needs a string value")),
                    None => None,
                };
                CompareTarget::Value(
                    Bytes2 { text, base64: self.value_base64 }.take("value", true)?.unwrap_or_default(),
                )
            }
            "version" => CompareTarget::Version(number(&self.value)?),
            "create_revision" => CompareTarget::CreateRevision(number(&self.value)?),
            "mod_revision" => CompareTarget::ModRevision(number(&self.value)?),
            "lease" => CompareTarget::Lease(number(&self.value)?),
            "exists" => {
                let exists = self
                    .value
                    .as_ref()
                    .and_then(Value::as_bool)
                    .ok_or_else(|| bad("target exists needs true or false"))?;
                if op != CompareOp::Equal {
                    return Err(bad("target exists only compares with ="));
                }
                // Present: version > 0; absent: version = 0.
                if exists {
                    op = CompareOp::Greater;
                }
                CompareTarget::Version(0)
            }
            other => {
                return Err(bad(format!(
                "unknown compare target {other:?}: use value, version, create_revision, mod_revision, lease or exists"
            )))
            }
        };
        Ok(Compare { key, op, target })
    }
}

impl OpBody {
    fn into_op(self) -> Result<TxnOp, HttpError> {
        match (self.put, self.delete, self.get, self.range) {
            (Some(put), None, None, None) => Ok(TxnOp::Put {
                key: key_of(put.key, put.key_base64)?,
                value: Bytes2 { text: put.value, base64: put.value_base64 }.take("value", true)?.unwrap_or_default(),
                lease: put.lease,
                prev_kv: put.prev_kv,
            }),
            (None, Some(delete), None, None) => {
                let prev_kv = delete.prev_kv;
                let request = delete.into_range()?;
                Ok(TxnOp::Delete { key: request.key, end: request.end, prev_kv })
            }
            (None, None, Some(get), None) => {
                let request = get.into_range()?;
                if request.end != RangeEnd::Key {
                    return Err(bad("get reads one key: use range for a prefix or a range"));
                }
                Ok(TxnOp::Range(request))
            }
            (None, None, None, Some(range)) => Ok(TxnOp::Range(range.into_range()?)),
            _ => Err(bad("each operation is exactly one of put, delete, get or range")),
        }
    }
}

impl RangeBody {
    fn into_range(self) -> Result<RangeRequest, HttpError> {
        let key = key_of(self.key, self.key_base64)?;
        let end = match (self.prefix, self.range_end, self.from_key) {
            (false, None, false) => RangeEnd::Key,
            (true, None, false) => RangeEnd::Prefix,
            (false, Some(end), false) => RangeEnd::Before(end.into_bytes()),
            (false, None, true) => RangeEnd::All,
            _ => return Err(bad("give at most one of prefix, range_end and from_key")),
        };
        Ok(RangeRequest {
            key,
            end,
            after: None,
            limit: self.limit,
            revision: self.revision,
            keys_only: self.keys_only,
        })
    }
}

/// The JSON answer to a transaction.
pub(crate) fn txn_reply(reply: &TxnReply, index: u64) -> Value {
    let results: Vec<Value> = reply.results.iter().map(op_result).collect();
    json!({ "succeeded": reply.succeeded, "revision": reply.revision, "index": index, "results": results })
}

/// The JSON of one operation's result.
fn op_result(result: &OpResult) -> Value {
    match result {
        OpResult::Put { prev, existed } => {
            let mut put = json!({ "existed": existed });
            if let Some(prev) = prev {
                put["prev"] = key_value(prev, false);
            }
            json!({ "put": put })
        }
        OpResult::Delete { deleted, prev } => {
            let prev: Vec<Value> = prev.iter().map(|kv| key_value(kv, false)).collect();
            json!({ "delete": { "deleted": deleted, "prev": prev } })
        }
        OpResult::Range(range) => {
            let kvs: Vec<Value> = range.kvs.iter().map(|kv| key_value(kv, false)).collect();
            json!({ "range": { "kvs": kvs, "more": range.more } })
        }
        // Only etcd's API sends nested transactions; their results nest the same way.
        OpResult::Txn { succeeded, results } => {
            let results: Vec<Value> = results.iter().map(op_result).collect();
            json!({ "txn": { "succeeded": succeeded, "results": results } })
        }
    }
}
