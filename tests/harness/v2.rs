//! The etcd **v2 keys API** (`/v2/keys/...`), which real LAIN clusters use (spec §1.1). etcd 3.4
//! serves it with `--enable-v2=true` (the harness always passes it); its store is separate from
//! the v3 store: keys written here are invisible to v3 and vice versa, and its index
//! (`X-Etcd-Index`, a node's `modifiedIndex`) counts independently of the v3 revision.
//!
//! Writes are form-encoded (`PUT /v2/keys/<key>` with body `value=<percent-encoded>`). **v2
//! values are strings**: a value that is not UTF-8 is refused with a clear error (v3 takes any
//! bytes). The store is a tree: a key `/a/b` implies the directory `/a`; reads flatten it to
//! leaves. The public, panicking helpers are [`EtcdClient`](crate::EtcdClient)'s `v2_*`.

use std::io;

use serde_json::Value;

use super::http::HttpResponse;
use super::kv::EtcdApi;

/// How many threads [`load`] writes with (etcd batches concurrent proposals into one fsync).
const LOAD_THREADS: usize = 8;

/// `/v2/keys<key>` with every path segment percent-encoded (`/` kept as the separator); a key
/// without a leading `/` gets one.
pub(crate) fn key_path(key: &str) -> String {
    let mut out = String::from("/v2/keys");
    if !key.starts_with('/') {
        out.push('/');
    }
    for &b in key.as_bytes() {
        let keep = b.is_ascii_alphanumeric() || b"/-._~:@!$&'()*+,;=".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value as the string the v2 API stores; an `InvalidInput` error if it is not UTF-8.
fn utf8<'v>(key: &str, value: &'v [u8]) -> io::Result<&'v str> {
    std::str::from_utf8(value).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("etcd v2 values are strings: the value for {key} is not UTF-8 ({e})"),
        )
    })
}

/// A v2 error answer as an `io::Error` carrying the method, path, status and etcd's text.
fn v2_error(method: &str, path: &str, resp: &HttpResponse) -> io::Error {
    io::Error::other(format!(
        "etcd v2 {method} {path}: HTTP {}: {}",
        resp.status,
        resp.text().trim_end()
    ))
}

/// The JSON body of an answer (v2 answers are always JSON).
fn json_body(method: &str, path: &str, resp: &HttpResponse) -> io::Result<Value> {
    serde_json::from_slice(&resp.body).map_err(|e| {
        io::Error::other(format!(
            "etcd v2 {method} {path}: HTTP {}: not JSON ({e}): {:?}",
            resp.status,
            resp.text()
        ))
    })
}

/// The etcd error code of an error answer (`{"errorCode":100,…}`), if any.
fn error_code(resp: &HttpResponse) -> Option<i64> {
    let v: Value = serde_json::from_slice(&resp.body).ok()?;
    v["errorCode"].as_i64()
}

/// The store index an answer reports: the `X-Etcd-Index` header, else the error body's `index`.
fn answer_index(resp: &HttpResponse) -> Option<i64> {
    if let Some(i) = resp
        .header("x-etcd-index")
        .and_then(|v| v.trim().parse().ok())
    {
        return Some(i);
    }
    let v: Value = serde_json::from_slice(&resp.body).ok()?;
    v["index"].as_i64()
}

/// Sends a form-encoded PUT of `fields` to `key`; the node's `modifiedIndex`.
fn put_form(api: &dyn EtcdApi, key: &str, fields: &[(&str, &str)]) -> io::Result<i64> {
    let path = key_path(key);
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields {
        form.append_pair(name, value);
    }
    let body = form.finish();
    let resp = api.send(
        "PUT",
        &path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )?;
    if resp.status != 200 && resp.status != 201 {
        return Err(v2_error("PUT", &path, &resp));
    }
    let v = json_body("PUT", &path, &resp)?;
    v["node"]["modifiedIndex"]
        .as_i64()
        .ok_or_else(|| io::Error::other(format!("etcd v2 PUT {path}: no modifiedIndex in {v}")))
}

/// Sets `key` = `value` (UTF-8), with a TTL in seconds if given; the node's `modifiedIndex`.
pub(crate) fn put(
    api: &dyn EtcdApi,
    key: &str,
    value: &[u8],
    ttl_secs: Option<u64>,
) -> io::Result<i64> {
    let value = utf8(key, value)?;
    match ttl_secs {
        None => put_form(api, key, &[("value", value)]),
        Some(ttl) => put_form(api, key, &[("value", value), ("ttl", &ttl.to_string())]),
    }
}

/// Creates directory `key` (`dir=true`); its `modifiedIndex`. Fails if `key` exists.
pub(crate) fn mkdir(api: &dyn EtcdApi, key: &str) -> io::Result<i64> {
    put_form(api, key, &[("dir", "true"), ("prevExist", "false")])
}

/// `DELETE key?query`: the index of the delete, or the current index if nothing was there
/// (error 100); other errors (e.g. 108 "Directory not empty") are returned.
pub(crate) fn delete(api: &dyn EtcdApi, key: &str, query: &str) -> io::Result<i64> {
    let path = format!("{}{query}", key_path(key));
    let resp = api.send("DELETE", &path, &[], b"")?;
    match resp.status {
        200 => {
            let v = json_body("DELETE", &path, &resp)?;
            v["node"]["modifiedIndex"].as_i64().ok_or_else(|| {
                io::Error::other(format!("etcd v2 DELETE {path}: no modifiedIndex in {v}"))
            })
        }
        404 if error_code(&resp) == Some(100) => {
            answer_index(&resp).ok_or_else(|| v2_error("DELETE", &path, &resp))
        }
        _ => Err(v2_error("DELETE", &path, &resp)),
    }
}

/// A quorum (linearizable) recursive, sorted GET of `key`: the answer's `node` and the
/// `X-Etcd-Index`; `None` for the node when the key does not exist (error 100).
pub(crate) fn get_tree(api: &dyn EtcdApi, key: &str) -> io::Result<(Option<Value>, i64)> {
    let path = format!("{}?recursive=true&sorted=true&quorum=true", key_path(key));
    let resp = api.send("GET", &path, &[], b"")?;
    let index = answer_index(&resp).unwrap_or(0);
    match resp.status {
        200 => {
            let mut v = json_body("GET", &path, &resp)?;
            Ok((Some(v["node"].take()), index))
        }
        404 if error_code(&resp) == Some(100) => Ok((None, index)),
        _ => Err(v2_error("GET", &path, &resp)),
    }
}

/// The current store index: `X-Etcd-Index` of a quorum GET of the root.
pub(crate) fn index(api: &dyn EtcdApi) -> io::Result<i64> {
    let path = "/v2/keys/?quorum=true";
    let resp = api.send("GET", path, &[], b"")?;
    if resp.status != 200 {
        return Err(v2_error("GET", path, &resp));
    }
    answer_index(&resp)
        .ok_or_else(|| io::Error::other(format!("etcd v2 GET {path}: no X-Etcd-Index header")))
}

/// The value of leaf `key`, if it exists and is not a directory.
pub(crate) fn get(api: &dyn EtcdApi, key: &str) -> io::Result<Option<Vec<u8>>> {
    let (node, _) = get_tree(api, key)?;
    Ok(node
        .filter(|n| !is_dir(n))
        .map(|n| n["value"].as_str().unwrap_or_default().as_bytes().to_vec()))
}

/// Every leaf `(key, value, modifiedIndex)` whose key starts with `prefix` (a plain string
/// prefix, as in v3: `/lain/a` matches `/lain/a/x` and `/lain/ab`), sorted by key bytes;
/// directories are dropped. Reads the deepest directory that contains every match.
pub(crate) fn get_prefix(
    api: &dyn EtcdApi,
    prefix: &str,
) -> io::Result<Vec<(String, Vec<u8>, i64)>> {
    let (node, _) = get_tree(api, parent_dir(prefix))?;
    let mut leaves = Vec::new();
    if let Some(node) = &node {
        flatten(node, &mut leaves);
    }
    leaves.retain(|(k, _, _)| k.starts_with(prefix));
    leaves.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(leaves)
}

/// Deletes every leaf under the string `prefix`: the directory itself recursively (one event,
/// `node.dir` true) when `prefix` names a directory (with or without a trailing `/`), then any
/// other matching key one by one (`/lain/a` also matches `/lain/ab`). `""` and `"/"` empty the
/// whole store, one recursive delete per top-level node. The index after.
pub(crate) fn delete_prefix(api: &dyn EtcdApi, prefix: &str) -> io::Result<i64> {
    let dir = prefix.trim_end_matches('/');
    if dir.is_empty() {
        if let (Some(root), _) = get_tree(api, "/")? {
            for child in root["nodes"].as_array().into_iter().flatten() {
                let key = child["key"].as_str().unwrap_or_default();
                delete(api, key, "?recursive=true")?;
            }
        }
        return index(api);
    }
    if let (Some(node), _) = get_tree(api, dir)? {
        if is_dir(&node) {
            delete(api, dir, "?recursive=true")?;
        }
    }
    for (key, _, _) in get_prefix(api, prefix)? {
        delete(api, &key, "")?;
    }
    index(api)
}

/// Puts every item (one PUT each; the v2 API has no transactions) from a few threads; a key's
/// writes stay in order (each key belongs to one thread), so the last value of a repeated key
/// wins. The index after the last write.
pub(crate) fn load(api: &dyn EtcdApi, items: Vec<(String, Vec<u8>)>) -> io::Result<i64> {
    for (key, value) in &items {
        utf8(key, value)?;
    }
    let mut shards: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); LOAD_THREADS];
    for (key, value) in items {
        let shard = key
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        shards[shard % LOAD_THREADS].push((key, value));
    }
    std::thread::scope(|s| {
        let workers: Vec<_> = shards
            .into_iter()
            .filter(|shard| !shard.is_empty())
            .map(|shard| {
                s.spawn(move || -> io::Result<()> {
                    for (key, value) in shard {
                        put(api, &key, &value, None)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("v2 load worker panicked"))
    })?;
    index(api)
}

/// The directory to read for a string prefix: everything before its last `/` (`"/"` for none).
fn parent_dir(prefix: &str) -> &str {
    match prefix.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &prefix[..i],
    }
}

/// Whether a v2 node is a directory.
fn is_dir(node: &Value) -> bool {
    node["dir"].as_bool().unwrap_or(false)
}

/// Appends the leaves of `node` (itself, if it is one) as `(key, value, modifiedIndex)`.
fn flatten(node: &Value, out: &mut Vec<(String, Vec<u8>, i64)>) {
    if is_dir(node) {
        for child in node["nodes"].as_array().into_iter().flatten() {
            flatten(child, out);
        }
    } else if let Some(key) = node["key"].as_str() {
        let value = node["value"]
            .as_str()
            .unwrap_or_default()
            .as_bytes()
            .to_vec();
        out.push((
            key.to_owned(),
            value,
            node["modifiedIndex"].as_i64().unwrap_or(0),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::{key_path, parent_dir};

    #[test]
    fn key_paths_are_percent_encoded_per_segment() {
        assert_eq!(key_path("/lain/config/vip"), "/v2/keys/lain/config/vip");
        assert_eq!(
            key_path("/lain/nodes/nodes/node1:192.168.77.21:22"),
            "/v2/keys/lain/nodes/nodes/node1:192.168.77.21:22"
        );
        assert_eq!(key_path("a b/%?#é"), "/v2/keys/a%20b/%25%3F%23%C3%A9");
    }

    #[test]
    fn parent_dirs() {
        assert_eq!(parent_dir(""), "/");
        assert_eq!(parent_dir("/lain"), "/");
        assert_eq!(parent_dir("/lain/"), "/lain");
        assert_eq!(parent_dir("/lain/ab"), "/lain");
        assert_eq!(parent_dir("/lain/a/"), "/lain/a");
    }
}
