//! etcd key-value operations over HTTP, shared by [`EtcdServer`](crate::EtcdServer) and
//! [`EtcdCluster`](crate::EtcdCluster): the v3 JSON gateway (`POST /v3/kv/*`, keys and values
//! base64) here, the v2 keys API in [`v2`](super::v2). Everything returns `io::Result`; the
//! public, panicking helpers are [`EtcdClient`](crate::EtcdClient)'s.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::http::HttpResponse;

/// Most puts per gateway transaction in `load` (etcd's default `--max-txn-ops`).
const TXN_OPS: usize = 128;
/// Most encoded bytes per gateway transaction in `load` (limit is 1.5 MiB).
const TXN_BYTES: usize = 1 << 20;

/// Something that answers etcd's client HTTP API: one server, or a cluster (any live member).
///
/// `pub` only to be the supertrait of the public [`EtcdClient`](crate::EtcdClient); the module is
/// private, so nothing outside the crate can name (or implement) it.
pub trait EtcdApi: Sync {
    /// Sends one request (`path_and_query` like `"/v3/kv/put"` or `"/v2/keys/lain?recursive=true"`)
    /// and returns the answer whatever its status; `Err` only for I/O failures.
    fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<HttpResponse>;
}

/// POSTs `body` to gateway `path`; the JSON answer, or an error with the status and etcd's text.
pub(crate) fn gateway(api: &dyn EtcdApi, path: &str, body: &Value) -> io::Result<Value> {
    let bytes = serde_json::to_vec(body).map_err(io::Error::other)?;
    let resp = api.send(
        "POST",
        path,
        &[("Content-Type", "application/json")],
        &bytes,
    )?;
    if resp.status != 200 {
        return Err(io::Error::other(format!(
            "etcd {path}: HTTP {}: {}",
            resp.status,
            resp.text()
        )));
    }
    serde_json::from_slice(&resp.body).map_err(io::Error::other)
}

/// `put key value`; the new revision.
pub(crate) fn put(api: &dyn EtcdApi, key: &str, value: &[u8]) -> io::Result<i64> {
    let body = json!({ "key": B64.encode(key), "value": B64.encode(value) });
    Ok(header_revision(&gateway(api, "/v3/kv/put", &body)?))
}

/// The value of `key`, if present.
pub(crate) fn get(api: &dyn EtcdApi, key: &str) -> io::Result<Option<Vec<u8>>> {
    let body = json!({ "key": B64.encode(key) });
    Ok(kvs(&gateway(api, "/v3/kv/range", &body)?)
        .pop()
        .map(|kv| kv.1))
}

/// Every `(key, value, mod_revision)` under `prefix`, in key order.
pub(crate) fn get_prefix(
    api: &dyn EtcdApi,
    prefix: &str,
) -> io::Result<Vec<(String, Vec<u8>, i64)>> {
    let (key, end) = prefix_range(prefix);
    let body = json!({ "key": B64.encode(key), "range_end": B64.encode(end) });
    Ok(kvs(&gateway(api, "/v3/kv/range", &body)?))
}

/// Deletes exactly `key`; the revision after the call.
pub(crate) fn delete(api: &dyn EtcdApi, key: &str) -> io::Result<i64> {
    let body = json!({ "key": B64.encode(key) });
    Ok(header_revision(&gateway(api, "/v3/kv/deleterange", &body)?))
}

/// Deletes every key under `prefix` in one revision; the revision after.
pub(crate) fn delete_prefix(api: &dyn EtcdApi, prefix: &str) -> io::Result<i64> {
    let (key, end) = prefix_range(prefix);
    let body = json!({ "key": B64.encode(key), "range_end": B64.encode(end) });
    Ok(header_revision(&gateway(api, "/v3/kv/deleterange", &body)?))
}

/// The store's current revision (a linearizable count-only range).
pub(crate) fn current_revision(api: &dyn EtcdApi) -> io::Result<i64> {
    let body = json!({ "key": B64.encode([0u8]), "count_only": true });
    Ok(header_revision(&gateway(api, "/v3/kv/range", &body)?))
}

/// Batched transactional puts (≤ 128 puts, ≤ 1 MiB each; a key repeated in one batch starts a
/// new one); the revision after the last batch.
pub(crate) fn load(api: &dyn EtcdApi, items: Vec<(String, Vec<u8>)>) -> io::Result<i64> {
    let mut batch: Vec<Value> = Vec::new();
    let mut keys = HashSet::new();
    let mut bytes = 0;
    let mut revision = None;
    let txn = |ops: Vec<Value>| -> io::Result<i64> {
        Ok(header_revision(&gateway(
            api,
            "/v3/kv/txn",
            &json!({ "success": ops }),
        )?))
    };
    for (k, v) in items {
        let (k, v) = (B64.encode(k), B64.encode(v));
        if batch.len() == TXN_OPS || bytes + k.len() + v.len() > TXN_BYTES || keys.contains(&k) {
            revision = Some(txn(std::mem::take(&mut batch))?);
            keys.clear();
            bytes = 0;
        }
        bytes += k.len() + v.len() + 40;
        keys.insert(k.clone());
        batch.push(json!({ "request_put": { "key": k, "value": v } }));
    }
    if !batch.is_empty() {
        revision = Some(txn(batch)?);
    }
    match revision {
        Some(r) => Ok(r),
        None => current_revision(api),
    }
}

/// Collects `(key, value)` pairs into owned bytes (what every `load` takes).
pub(crate) fn owned_items<K, V>(items: impl IntoIterator<Item = (K, V)>) -> Vec<(String, Vec<u8>)>
where
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    items
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_vec()))
        .collect()
}

/// Reads a fixture directory: `MANIFEST.tsv` lines `<etcd key>\t<file>` (`#` comments), each
/// value read byte-for-byte from `<dir>/<file>`. Panics on unreadable files or bad lines.
pub(crate) fn read_manifest(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let manifest = dir.join("MANIFEST.tsv");
    let text = fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("read {}: {e}", manifest.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, file) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("bad manifest line {l:?}"));
            let path = dir.join(file.trim());
            let value = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (key.to_owned(), value)
        })
        .collect()
}

/// `[key, range_end)` covering every key that starts with `prefix` (`""`: every key).
pub(crate) fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (prefix.as_bytes().to_vec(), end);
        }
    }
    (prefix.as_bytes().to_vec(), vec![0])
}

/// An int64 field of a gateway answer (sent as a JSON string; omitted when zero).
pub(crate) fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The `header.revision` of a gateway answer.
pub(crate) fn header_revision(v: &Value) -> i64 {
    int(&v["header"]["revision"])
}

fn b64(v: &Value) -> Vec<u8> {
    v.as_str()
        .map(|s| B64.decode(s).expect("etcd sent invalid base64"))
        .unwrap_or_default()
}

fn kvs(v: &Value) -> Vec<(String, Vec<u8>, i64)> {
    let Some(list) = v["kvs"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .map(|kv| {
            let key = String::from_utf8_lossy(&b64(&kv["key"])).into_owned();
            (key, b64(&kv["value"]), int(&kv["mod_revision"]))
        })
        .collect()
}
