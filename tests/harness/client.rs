//! [`EtcdClient`]: the panicking key-value helpers test bodies call on an
//! [`EtcdServer`](crate::EtcdServer) or an [`EtcdCluster`](crate::EtcdCluster), written once
//! over the crate's request plumbing (v3 JSON gateway in `kv`, v2 keys API in `v2`).
//!
//! The trait is re-exported at the crate root, so `use lainlet_tests::*;` brings the methods
//! into scope. It is sealed: only the harness's own etcd types implement it.

use std::io;

use serde_json::Value;

use super::http::HttpResponse;
use super::kv::{self, EtcdApi};
use super::store::{Store, StoreWriter};
use super::v2;

/// The key-value helpers shared by [`EtcdServer`](crate::EtcdServer) (one etcd) and
/// [`EtcdCluster`](crate::EtcdCluster) (requests go through the first live member).
///
/// v3 helpers (`put`, `get_prefix`, …) and v2 helpers (`v2_put`, `v2_get_prefix`, …) panic with
/// etcd's answer on failure, so test bodies stay short; [`EtcdClient::gateway`] and
/// [`EtcdClient::v2_request`] return errors instead, to observe them (e.g. quorum loss). The v2
/// and v3 stores are separate: keys written with [`EtcdClient::v2_put`] are invisible to
/// [`EtcdClient::get`] and vice versa, and the v2 index counts independently of the v3 revision.
pub trait EtcdClient: EtcdApi + Sized {
    /// What failure messages name as the place of the failed call: `"127.0.0.1:<port>"` for
    /// a server, `"cluster <endpoints>"` for a cluster.
    fn describe(&self) -> String;

    /// POSTs `body` to gateway `path` (e.g. `"/v3/kv/range"`); the JSON answer, or an error
    /// carrying the HTTP status and etcd's message (or the I/O error, e.g. a timeout).
    fn gateway(&self, path: &str, body: &Value) -> io::Result<Value> {
        kv::gateway(self, path, body)
    }

    /// Puts `key` = `value` (v3); returns the new revision.
    fn put(&self, key: &str, value: impl AsRef<[u8]>) -> i64 {
        ok(self, "put", key, kv::put(self, key, value.as_ref()))
    }

    /// The value of `key` (v3, linearizable), if present.
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        ok(self, "get", key, kv::get(self, key))
    }

    /// Every `(key, value, mod_revision)` whose key starts with `prefix` (v3), in key order
    /// (`""` = every key).
    fn get_prefix(&self, prefix: &str) -> Vec<(String, Vec<u8>, i64)> {
        ok(self, "get_prefix", prefix, kv::get_prefix(self, prefix))
    }

    /// Deletes `key` (exactly, v3); returns the revision after the call (unchanged if absent).
    fn delete(&self, key: &str) -> i64 {
        ok(self, "delete", key, kv::delete(self, key))
    }

    /// Deletes every key starting with `prefix` in one revision (v3); returns the revision
    /// after.
    fn delete_prefix(&self, prefix: &str) -> i64 {
        ok(
            self,
            "delete_prefix",
            prefix,
            kv::delete_prefix(self, prefix),
        )
    }

    /// The v3 store's current revision (a linearizable range).
    fn current_revision(&self) -> i64 {
        ok(self, "current_revision", "", kv::current_revision(self))
    }

    /// Puts many keys fast (v3): batched transactions (≤ 128 puts, ≤ 1 MiB each; a key repeated
    /// in one batch starts a new one). Returns the revision after the last batch.
    fn load<K, V>(&self, items: impl IntoIterator<Item = (K, V)>) -> i64
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        ok(self, "load", "", kv::load(self, kv::owned_items(items)))
    }

    /// A writer for `store` (v2 keys API or v3) on this server or cluster, so one test body can
    /// run against either: see [`StoreWriter`].
    fn with_store(&self, store: Store) -> StoreWriter<'_> {
        StoreWriter::new(self, store)
    }

    /// Sends a raw request to the v2 keys API (`path_and_query` like
    /// `"/v2/keys/lain?recursive=true"`) and returns the answer whatever its status, to observe
    /// errors (e.g. `401` "The event in requested index is outdated and cleared").
    fn v2_request(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> io::Result<HttpResponse> {
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("Content-Type", "application/x-www-form-urlencoded")]
        };
        self.send(method, path_and_query, headers, body)
    }

    /// v2: sets `key` = `value` (must be UTF-8: v2 values are strings); returns the node's
    /// `modifiedIndex`.
    fn v2_put(&self, key: &str, value: impl AsRef<[u8]>) -> i64 {
        ok(
            self,
            "v2 put",
            key,
            v2::put(self, key, value.as_ref(), None),
        )
    }

    /// v2: like [`EtcdClient::v2_put`] with a TTL; etcd deletes the key after `ttl_secs`
    /// (an `expire` event). Returns the node's `modifiedIndex`.
    fn v2_put_ttl(&self, key: &str, value: impl AsRef<[u8]>, ttl_secs: u64) -> i64 {
        ok(
            self,
            "v2 put",
            key,
            v2::put(self, key, value.as_ref(), Some(ttl_secs)),
        )
    }

    /// v2: the value of leaf `key` (quorum read), if it exists (`None` for a directory).
    fn v2_get(&self, key: &str) -> Option<Vec<u8>> {
        ok(self, "v2 get", key, v2::get(self, key))
    }

    /// v2: deletes leaf `key`; returns the index of the delete, or the current index if the key
    /// did not exist.
    fn v2_delete(&self, key: &str) -> i64 {
        ok(self, "v2 delete", key, v2::delete(self, key, ""))
    }

    /// v2: deletes directory `key`: only if empty (`?dir=true`, else etcd's error 108 panics),
    /// or with everything below it (`recursive`: `?recursive=true`, one `delete` event with
    /// `node.dir` true and no per-key events). Returns the index of the delete, or the current
    /// index if nothing was there.
    fn v2_delete_dir(&self, key: &str, recursive: bool) -> i64 {
        let query = if recursive {
            "?recursive=true"
        } else {
            "?dir=true"
        };
        ok(self, "v2 delete dir", key, v2::delete(self, key, query))
    }

    /// v2: creates the (empty) directory `key` (a `set` event with `node.dir`; no key for the
    /// service). Panics if `key` exists. Returns its `modifiedIndex`.
    fn v2_mkdir(&self, key: &str) -> i64 {
        ok(self, "v2 mkdir", key, v2::mkdir(self, key))
    }

    /// v2: the store's current index (`X-Etcd-Index` of a quorum GET); a watch from here + 1
    /// sees exactly the later writes.
    fn v2_index(&self) -> i64 {
        ok(self, "v2 index", "", v2::index(self))
    }

    /// v2: every leaf `(key, value, modifiedIndex)` whose key starts with `prefix` (a string
    /// prefix as in v3: `/lain/a` matches `/lain/a/x` and `/lain/ab`), sorted by key bytes;
    /// directories dropped. From a quorum, recursive, sorted GET.
    fn v2_get_prefix(&self, prefix: &str) -> Vec<(String, Vec<u8>, i64)> {
        ok(self, "v2 get_prefix", prefix, v2::get_prefix(self, prefix))
    }

    /// v2: deletes every leaf under the string `prefix`: a directory named by `prefix` (with or
    /// without a trailing `/`) recursively in one event, any other matching key one by one.
    /// Returns the index after.
    fn v2_delete_prefix(&self, prefix: &str) -> i64 {
        ok(
            self,
            "v2 delete_prefix",
            prefix,
            v2::delete_prefix(self, prefix),
        )
    }

    /// v2: puts every item (one PUT each, from a few threads; a repeated key's last value wins).
    /// Values must be UTF-8. Returns the index after the last write.
    fn v2_load<K, V>(&self, items: impl IntoIterator<Item = (K, V)>) -> i64
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        ok(self, "v2 load", "", v2::load(self, kv::owned_items(items)))
    }
}

/// Unwraps the result of operation `what` on `key`, panicking with etcd's answer and
/// [`EtcdClient::describe`].
fn ok<T>(etcd: &impl EtcdClient, what: &str, key: &str, r: io::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("etcd {what} {key:?} on {} failed: {e}", etcd.describe()))
}
