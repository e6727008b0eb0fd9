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
//! The v2 body also runs on etcd 2.3.7, directly and behind a 2.3.7 proxy (see
//! [`setup`](super::setup)). `LAINLET_TEST_STORES` (comma list of `v3`, `v2`, `v2-etcd2`,
//! `v2-proxy`; default all) selects what [`run_for_store`] and
//! [`run_for_setup`](crate::run_for_setup) run; the others are skipped with a note.

use std::io;
use std::path::Path;

use super::kv::{self, EtcdApi};
use super::setup::{self, EtcdSetup};
use super::v2;

/// Environment variable selecting the stores and etcd setups tests run on (`v3`, `v2`,
/// `v2-etcd2`, `v2-proxy`; default all; see [`setup`](super::setup)).
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

    /// The stores with at least one setup selected by `LAINLET_TEST_STORES` (default: both).
    /// Panics on an unknown name.
    pub fn selected() -> Vec<Store> {
        let pairs = setup::selected_setups();
        Store::ALL
            .into_iter()
            .filter(|s| pairs.iter().any(|(store, _)| store == s))
            .collect()
    }
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Runs `body(store)` on etcd 3.4 if `store` on 3.4 (`v3` or `v2`) is selected by
/// `LAINLET_TEST_STORES`; otherwise prints a skip note. The same as
/// [`run_for_setup`](crate::run_for_setup)`(store, EtcdSetup::Etcd34, body)`.
pub fn run_for_store(store: Store, body: impl FnOnce(Store)) {
    setup::run_for_setup(store, EtcdSetup::Etcd34, body)
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

    /// Watchers registered in this store, from the member's `/metrics`: v3
    /// `etcd_debugging_mvcc_watcher_total` (one per watched range), v2
    /// `etcd_debugging_store_watchers` (3.4) or `etcd_store_watchers` (2.3.7): one per open
    /// v2 watch request (a long-poll counts while it waits).
    pub fn watchers(&self) -> u64 {
        let names: &[&str] = match self.store {
            Store::V3 => &["etcd_debugging_mvcc_watcher_total"],
            Store::V2 => &["etcd_debugging_store_watchers", "etcd_store_watchers"],
        };
        let page = self.ok("metrics", "", self.api.send("GET", "/metrics", &[], b""));
        let text = page.text();
        names
            .iter()
            .find_map(|name| {
                text.lines()
                    .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                    .find_map(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or_else(|| panic!("none of {names:?} in etcd's /metrics")) as u64
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

/// Defines a test that runs once per service binary **and** etcd store and setup: a module
/// `name` with `name::lainlet_v3`, `name::lainlet_v2` (etcd 3.4's v2 emulation),
/// `name::lainlet_v2_etcd2` (an etcd 2.3.7 member), `name::lainlet_v2_proxy` (a 2.3.7 member
/// behind a 2.3.7 proxy, the service connected to the proxy), and the same four
/// `name::lainlet_smol_*`. Each goes through [`run_for_setup`](crate::run_for_setup)
/// (`LAINLET_TEST_STORES`, the 2.3.7 binary; checked first, so a deselected setup needs no
/// binary), which makes [`EtcdServer::new`](crate::EtcdServer::new) start that setup, and
/// [`run_for_kind`](crate::run_for_kind) (`LAINLET_TEST_KINDS`). Attributes (e.g. `#[ignore]`)
/// apply to all eight. A body that needs etcd 3.4 opts out with
/// [`skip_unless_etcd34`](crate::skip_unless_etcd34).
///
/// ```ignore
/// store_conformance_test!(fn delete_is_exact(kind, store) {
///     let etcd = EtcdServer::new().unwrap();
///     let w = etcd.with_store(store);
///     w.put("/lain/deployd/pod_groups/hello/hello.web.web", "{}");
///     // … start `kind` reading `store` at `etcd.endpoint()` …
/// });
/// ```
#[macro_export]
macro_rules! store_conformance_test {
    ($(#[$meta:meta])* fn $name:ident($kind:ident, $store:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($kind: $crate::ServiceKind, $store: $crate::Store) $body

            fn run(kind: $crate::ServiceKind, store: $crate::Store, setup: $crate::EtcdSetup) {
                $crate::run_for_setup(store, setup, |store| {
                    $crate::run_for_kind(kind, |kind| body(kind, store))
                })
            }

            $(#[$meta])*
            #[test]
            fn lainlet_v3() {
                run($crate::ServiceKind::Tokio, $crate::Store::V3, $crate::EtcdSetup::Etcd34)
            }

            $(#[$meta])*
            #[test]
            fn lainlet_v2() {
                run($crate::ServiceKind::Tokio, $crate::Store::V2, $crate::EtcdSetup::Etcd34)
            }

            $(#[$meta])*
            #[test]
            fn lainlet_v2_etcd2() {
                run($crate::ServiceKind::Tokio, $crate::Store::V2, $crate::EtcdSetup::Etcd2)
            }

            $(#[$meta])*
            #[test]
            fn lainlet_v2_proxy() {
                run($crate::ServiceKind::Tokio, $crate::Store::V2, $crate::EtcdSetup::Etcd2Proxy)
            }

            $(#[$meta])*
            #[test]
            fn lainlet_smol_v3() {
                run($crate::ServiceKind::Smol, $crate::Store::V3, $crate::EtcdSetup::Etcd34)
            }

            $(#[$meta])*
            #[test]
            fn lainlet_smol_v2() {
                run($crate::ServiceKind::Smol, $crate::Store::V2, $crate::EtcdSetup::Etcd34)
            }

            $(#[$meta])*
            #[test]
            fn lainlet_smol_v2_etcd2() {
                run($crate::ServiceKind::Smol, $crate::Store::V2, $crate::EtcdSetup::Etcd2)
            }

            $(#[$meta])*
            #[test]
            fn lainlet_smol_v2_proxy() {
                run($crate::ServiceKind::Smol, $crate::Store::V2, $crate::EtcdSetup::Etcd2Proxy)
            }
        }
    };
}
