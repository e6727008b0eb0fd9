//! One writer API for both etcd stores, so one test body runs against either.
//!
//! etcd 3.x keeps two separate stores: the **v3** store (gRPC / JSON gateway; revisions) and,
//! with `--enable-v2=true` (always on in the harness), the **v2** keys store (`/v2/keys`;
//! `modifiedIndex`/`X-Etcd-Index`) that real LAIN clusters use. [`StoreWriter`] dispatches on a
//! [`Store`], and [`store_conformance_test!`](crate::store_conformance_test) runs a test body
//! once per service binary and store:
//!
//! ```ignore
//! store_conformance_test!(fn config_put_shows_up(kind, store) {
//!     let etcd = EtcdServer::new().unwrap();
//!     let w = etcd.with_store(store);
//!     let rev = w.put("/lain/config/vip", "\"192.168.77.201\"");
//!     assert_eq!(w.current_revision(), rev);
//!     // … start `kind` against `etcd` reading `store`, and check its views …
//! });
//! ```
//!
//! `LAINLET_TEST_STORES` (comma list of `v2`, `v3`; default both) selects the stores that
//! [`run_for_store`] runs; the others are skipped with a note.

use std::io;
use std::path::Path;

use super::kv::{self, EtcdApi};
use super::v2;

/// Environment variable selecting the stores [`run_for_store`] runs (`v2,v3`; default both).
pub const STORES_ENV: &str = "LAINLET_TEST_STORES";

/// Which etcd store a test writes to (and the service reads from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Store {
    /// The v2 keys API (`/v2/keys`, form-encoded string values, directories, `modifiedIndex`).
    V2,
    /// The v3 API (gRPC / JSON gateway, byte values, flat keys, revisions).
    V3,
}

impl Store {
    /// Both stores, v3 first.
    pub const ALL: [Store; 2] = [Store::V3, Store::V2];

    /// `"v2"` or `"v3"`.
    pub fn name(self) -> &'static str {
        match self {
            Store::V2 => "v2",
            Store::V3 => "v3",
        }
    }

    /// The store named `name` (`"v2"`/`"v3"`, case-insensitive).
    pub fn from_name(name: &str) -> Option<Store> {
        Store::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The stores selected by `LAINLET_TEST_STORES` (default: both). Panics on an unknown name.
    pub fn selected() -> Vec<Store> {
        match std::env::var(STORES_ENV) {
            Ok(list) if !list.trim().is_empty() => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|name| {
                    Store::from_name(name)
                        .unwrap_or_else(|| panic!("{STORES_ENV}: unknown store {name:?} (v2, v3)"))
                })
                .collect(),
            _ => Store::ALL.to_vec(),
        }
    }
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Runs `body(store)` if `store` is selected by `LAINLET_TEST_STORES`; otherwise prints a skip
/// note. Used by [`store_conformance_test!`](crate::store_conformance_test).
pub fn run_for_store(store: Store, body: impl FnOnce(Store)) {
    if Store::selected().contains(&store) {
        body(store)
    } else {
        eprintln!("[harness] skipping store {store}: not in {STORES_ENV}");
    }
}

/// Writes and reads one store of an [`EtcdServer`](crate::EtcdServer) or
/// [`EtcdCluster`](crate::EtcdCluster) (from their `with_store`), with the same calls for
/// both. "Revision" means the v3 revision or the v2 store index; the two count independently.
/// Every call panics with etcd's answer on failure. v2 values must be UTF-8.
pub struct StoreWriter<'a> {
    api: &'a dyn EtcdApi,
    store: Store,
}

impl std::fmt::Debug for StoreWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<'a> StoreWriter<'a> {
    pub(crate) fn new(api: &'a dyn EtcdApi, store: Store) -> StoreWriter<'a> {
        StoreWriter { api, store }
    }

    /// The store this writer writes to.
    pub fn store(&self) -> Store {
        self.store
    }

    /// Puts `key` = `value`; the revision (v3) or `modifiedIndex` (v2) of the write.
    pub fn put(&self, key: &str, value: impl AsRef<[u8]>) -> i64 {
        let value = value.as_ref();
        self.ok(
            "put",
            key,
            match self.store {
                Store::V3 => kv::put(self.api, key, value),
                Store::V2 => v2::put(self.api, key, value, None),
            },
        )
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.ok(
            "get",
            key,
            match self.store {
                Store::V3 => kv::get(self.api, key),
                Store::V2 => v2::get(self.api, key),
            },
        )
    }

    /// Deletes exactly `key`; the revision after (unchanged if the key was absent).
    pub fn delete(&self, key: &str) -> i64 {
        self.ok(
            "delete",
            key,
            match self.store {
                Store::V3 => kv::delete(self.api, key),
                Store::V2 => v2::delete(self.api, key, ""),
            },
        )
    }

    /// Deletes every key starting with `prefix`; the revision after. v3: one range delete (one
    /// revision). v2: a directory named by `prefix` is deleted recursively in one event, other
    /// matching keys one by one.
    pub fn delete_prefix(&self, prefix: &str) -> i64 {
        self.ok(
            "delete_prefix",
            prefix,
            match self.store {
                Store::V3 => kv::delete_prefix(self.api, prefix),
                Store::V2 => v2::delete_prefix(self.api, prefix),
            },
        )
    }

    /// Puts many keys (v3: batched transactions; v2: one PUT each from a few threads, a repeated
    /// key's last value wins); the revision after.
    pub fn load<K, V>(&self, items: impl IntoIterator<Item = (K, V)>) -> i64
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let items = kv::owned_items(items);
        self.ok(
            "load",
            "",
            match self.store {
                Store::V3 => kv::load(self.api, items),
                Store::V2 => v2::load(self.api, items),
            },
        )
    }

    /// Loads a fixture directory (`MANIFEST.tsv`, see
    /// [`EtcdServer::load_manifest`](crate::EtcdServer::load_manifest)); the revision after.
    pub fn load_manifest(&self, dir: &Path) -> i64 {
        self.load(kv::read_manifest(dir))
    }

    /// Every `(key, value, revision)` whose key starts with `prefix`, sorted by key: the keys
    /// and values as the service sees them (v2: leaves only, `modifiedIndex`).
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, Vec<u8>, i64)> {
        self.ok(
            "get_prefix",
            prefix,
            match self.store {
                Store::V3 => kv::get_prefix(self.api, prefix),
                Store::V2 => v2::get_prefix(self.api, prefix),
            },
        )
    }

    /// Like [`StoreWriter::put`], but an error instead of a panic (to write while etcd may
    /// be down).
    pub fn try_put(&self, key: &str, value: impl AsRef<[u8]>) -> io::Result<i64> {
        match self.store {
            Store::V3 => kv::put(self.api, key, value.as_ref()),
            Store::V2 => v2::put(self.api, key, value.as_ref(), None),
        }
    }

    /// Watchers registered in this store, from etcd's `/metrics`: v3
    /// `etcd_debugging_mvcc_watcher_total` (one per watched range), v2
    /// `etcd_debugging_store_watchers` (one per open v2 watch request).
    pub fn watchers(&self) -> u64 {
        let name = match self.store {
            Store::V3 => "etcd_debugging_mvcc_watcher_total",
            Store::V2 => "etcd_debugging_store_watchers",
        };
        let page = self.ok("metrics", "", self.api.send("GET", "/metrics", &[], b""));
        page.text()
            .lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} not in etcd's /metrics")) as u64
    }

    /// The store's current revision: v3 header revision, v2 `X-Etcd-Index`.
    pub fn current_revision(&self) -> i64 {
        self.ok(
            "current_revision",
            "",
            match self.store {
                Store::V3 => kv::current_revision(self.api),
                Store::V2 => v2::index(self.api),
            },
        )
    }

    fn ok<T>(&self, what: &str, key: &str, r: io::Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("etcd {} {what} {key:?} failed: {e}", self.store))
    }
}

/// Defines a test that runs once per service binary **and** etcd store: a module `name` with
/// `name::lainlet_v3`, `name::lainlet_v2`, `name::lainlet_smol_v3` and `name::lainlet_smol_v2`,
/// each going through [`run_for_store`](crate::run_for_store) (`LAINLET_TEST_STORES`; checked
/// first, so a deselected store needs no binary) and [`run_for_kind`](crate::run_for_kind)
/// (`LAINLET_TEST_KINDS`). Attributes (e.g.
/// `#[ignore]`) apply to all four.
///
/// ```ignore
/// store_conformance_test!(fn delete_is_exact(kind, store) {
///     let etcd = EtcdServer::new().unwrap();
///     let w = etcd.with_store(store);
///     w.put("/lain/deployd/pod_groups/hello/hello.web.web", "{}");
///     // … start `kind` reading `store` …
/// });
/// ```
#[macro_export]
macro_rules! store_conformance_test {
    ($(#[$meta:meta])* fn $name:ident($kind:ident, $store:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($kind: $crate::ServiceKind, $store: $crate::Store) $body

            fn run(kind: $crate::ServiceKind, store: $crate::Store) {
                $crate::run_for_store(store, |store| $crate::run_for_kind(kind, |kind| body(kind, store)))
            }

            $(#[$meta])*
            #[test]
            fn lainlet_v3() {
                run($crate::ServiceKind::Tokio, $crate::Store::V3)
            }

            $(#[$meta])*
            #[test]
            fn lainlet_v2() {
                run($crate::ServiceKind::Tokio, $crate::Store::V2)
            }

            $(#[$meta])*
            #[test]
            fn lainlet_smol_v3() {
                run($crate::ServiceKind::Smol, $crate::Store::V3)
            }

            $(#[$meta])*
            #[test]
            fn lainlet_smol_v2() {
                run($crate::ServiceKind::Smol, $crate::Store::V2)
            }
        }
    };
}
