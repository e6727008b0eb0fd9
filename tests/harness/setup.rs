//! Which etcd a test runs against: Debian's etcd 3.4 (v3, or v2 emulation with
//! `--enable-v2`), an etcd **2.3.7** member, or a 2.3.7 member **behind a 2.3.7 proxy**
//! (`etcd --proxy on`), the setup of most LAIN nodes.
//!
//! [`EtcdServer::new`](crate::EtcdServer::new) starts the setup of the running thread
//! ([`EtcdSetup::current`], 3.4 unless a test says otherwise).
//! [`store_conformance_test!`](crate::store_conformance_test) runs its v2 body once per v2 setup
//! by setting it ([`run_for_setup`]), so the body is written once:
//!
//! | test suffix | store | etcd | the service's `--etcd` |
//! | --- | --- | --- | --- |
//! | `_v3` | v3 | 3.4 | the member |
//! | `_v2` | v2 | 3.4 `--enable-v2` | the member |
//! | `_v2_etcd2` | v2 | 2.3.7 member | the member |
//! | `_v2_proxy` | v2 | 2.3.7 member + 2.3.7 proxy | the proxy (writes go to the member) |
//!
//! `LAINLET_TEST_STORES` selects them by name (`v3`, `v2`, `v2-etcd2`, `v2-proxy`, comma
//! separated; default: all). The 2.3.7 binary is `$LAINLET_TEST_ETCD2`, default
//! `<workspace>/target/etcd-2.3.7/etcd` (built by `scripts/build-etcd-2.3.7.sh`). When it is
//! missing, a 2.3.7 test is skipped with a note saying how to build it, unless `CI=true` or
//! its setup is named in `LAINLET_TEST_STORES`: then it fails.

use std::cell::Cell;
use std::io;
use std::path::PathBuf;

use super::service::workspace_root;
use super::store::{Store, STORES_ENV};

/// Environment variable naming the etcd 2.3.7 binary (default
/// `<workspace>/target/etcd-2.3.7/etcd`).
pub const ETCD2_ENV: &str = "LAINLET_TEST_ETCD2";

/// Which etcd processes a test's [`EtcdServer`](crate::EtcdServer) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtcdSetup {
    /// Debian's etcd 3.4 (`--enable-v2=true`): the v3 store and the v2 emulation.
    Etcd34,
    /// One etcd 2.3.7 member (v2 only); clients talk to it directly.
    Etcd2,
    /// One etcd 2.3.7 member and a 2.3.7 v2 proxy (`--proxy on`) in front of it: the service
    /// talks to the proxy ([`EtcdServer::endpoint`](crate::EtcdServer::endpoint)), the
    /// harness's writes and reads go to the member.
    Etcd2Proxy,
}

thread_local! {
    /// The setup [`EtcdServer::new`](crate::EtcdServer::new) starts on this thread.
    static CURRENT: Cell<EtcdSetup> = const { Cell::new(EtcdSetup::Etcd34) };
}

/// Every (store, setup) pair a store conformance test runs on, in test order.
pub const STORE_SETUPS: [(Store, EtcdSetup); 4] = [
    (Store::V3, EtcdSetup::Etcd34),
    (Store::V2, EtcdSetup::Etcd34),
    (Store::V2, EtcdSetup::Etcd2),
    (Store::V2, EtcdSetup::Etcd2Proxy),
];

impl EtcdSetup {
    /// The setup [`EtcdServer::new`](crate::EtcdServer::new) uses on this thread (default
    /// [`EtcdSetup::Etcd34`]).
    pub fn current() -> EtcdSetup {
        CURRENT.with(Cell::get)
    }

    /// Runs `body` with `self` as this thread's [`EtcdSetup::current`], restoring the previous
    /// one afterwards (also when `body` panics).
    pub fn scoped<T>(self, body: impl FnOnce() -> T) -> T {
        struct Restore(EtcdSetup);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(self)));
        body()
    }

    /// A short description for messages: `"etcd 3.4"`, `"etcd 2.3.7"`,
    /// `"etcd 2.3.7 behind a 2.3.7 proxy"`.
    pub fn describe(self) -> &'static str {
        match self {
            EtcdSetup::Etcd34 => "etcd 3.4",
            EtcdSetup::Etcd2 => "etcd 2.3.7",
            EtcdSetup::Etcd2Proxy => "etcd 2.3.7 behind a 2.3.7 proxy",
        }
    }

    /// Whether the member is etcd 2.3.7 (v2 only: no v3 gateway, no `--enable-v2` flag).
    pub fn is_etcd2(self) -> bool {
        matches!(self, EtcdSetup::Etcd2 | EtcdSetup::Etcd2Proxy)
    }

    /// Whether a proxy stands between the service and the member.
    pub fn has_proxy(self) -> bool {
        self == EtcdSetup::Etcd2Proxy
    }

    /// The etcd binary this setup runs: 3.4 from
    /// [`EtcdServer::find_binary`](crate::EtcdServer::find_binary), 2.3.7 from [`etcd2_binary`].
    pub fn binary(self) -> io::Result<PathBuf> {
        if self.is_etcd2() {
            etcd2_binary()
        } else {
            super::etcd::EtcdServer::find_binary()
        }
    }

    /// Whether a test on this setup can run: `true` if its binary exists; otherwise prints a
    /// skip note and returns `false`, or panics with the reason when `CI=true` or the setup is
    /// named in `LAINLET_TEST_STORES` (a missing oracle is then a failure, not a skip).
    pub fn available_or_skip(self) -> bool {
        match self.binary() {
            Ok(_) => true,
            Err(e) if is_ci() => panic!("CI=true: {} is required: {e}", self.describe()),
            Err(e) if explicitly_selected(self) => {
                panic!("{STORES_ENV} names {}: {e}", self.describe())
            }
            Err(e) => {
                eprintln!("[harness] skipping on {}: {e}", self.describe());
                false
            }
        }
    }
}

impl std::fmt::Display for EtcdSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// The etcd 2.3.7 binary: `$LAINLET_TEST_ETCD2`, else `<workspace>/target/etcd-2.3.7/etcd`; an
/// error saying how to build it.
pub fn etcd2_binary() -> io::Result<PathBuf> {
    let (path, from_env) = match std::env::var_os(ETCD2_ENV).filter(|p| !p.is_empty()) {
        Some(p) => (PathBuf::from(p), true),
        None => (workspace_root().join("target/etcd-2.3.7/etcd"), false),
    };
    if path.is_file() {
        return Ok(path);
    }
    let how = if from_env {
        format!("{ETCD2_ENV}={} is not a file", path.display())
    } else {
        format!(
            "etcd 2.3.7 not built at {} ({ETCD2_ENV} unset): run scripts/build-etcd-2.3.7.sh \
             (needs ../shared/upstream/etcd-2.3.7.tar.gz and Debian's golang-go)",
            path.display()
        )
    };
    Err(io::Error::new(io::ErrorKind::NotFound, how))
}

/// The name of a (store, setup) pair in `LAINLET_TEST_STORES`: `v3`, `v2`, `v2-etcd2`,
/// `v2-proxy` (`None` for a pair no test runs, e.g. v3 on 2.3.7).
pub fn selection_name(store: Store, setup: EtcdSetup) -> Option<&'static str> {
    match (store, setup) {
        (Store::V3, EtcdSetup::Etcd34) => Some("v3"),
        (Store::V2, EtcdSetup::Etcd34) => Some("v2"),
        (Store::V2, EtcdSetup::Etcd2) => Some("v2-etcd2"),
        (Store::V2, EtcdSetup::Etcd2Proxy) => Some("v2-proxy"),
        (Store::V3, _) => None,
    }
}

/// The (store, setup) pairs selected by `LAINLET_TEST_STORES` (default: all of
/// [`STORE_SETUPS`]). Panics on an unknown name.
pub fn selected_setups() -> Vec<(Store, EtcdSetup)> {
    match std::env::var(STORES_ENV) {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|name| {
                STORE_SETUPS
                    .into_iter()
                    .find(|&(store, setup)| {
                        selection_name(store, setup).is_some_and(|n| n.eq_ignore_ascii_case(name))
                    })
                    .unwrap_or_else(|| {
                        panic!("{STORES_ENV}: unknown name {name:?} (v3, v2, v2-etcd2, v2-proxy)")
                    })
            })
            .collect(),
        _ => STORE_SETUPS.to_vec(),
    }
}

/// Runs `body(store)` on `setup` (as this thread's [`EtcdSetup::current`]) if the pair is
/// selected by `LAINLET_TEST_STORES` and its etcd binary exists (see
/// [`EtcdSetup::available_or_skip`]); otherwise prints a skip note.
pub fn run_for_setup(store: Store, setup: EtcdSetup, body: impl FnOnce(Store)) {
    if !setup_selected(store, setup) {
        return;
    }
    setup.scoped(|| body(store))
}

/// Whether a test of `store` on `setup` should run (selected, binary present), printing why
/// not; panics where a skip would hide a missing oracle (see
/// [`EtcdSetup::available_or_skip`]). For tests that start their setup explicitly.
pub fn setup_selected(store: Store, setup: EtcdSetup) -> bool {
    let name = selection_name(store, setup).unwrap_or("?");
    if !selected_setups().contains(&(store, setup)) {
        eprintln!("[harness] skipping {name} ({store} on {setup}): not in {STORES_ENV}");
        return false;
    }
    setup.available_or_skip()
}

/// For a test body that needs etcd 3.4 (its v3 gateway, a 3.4-only flag, a 3.4 cluster):
/// `true` (and a note saying `reason`) when this thread's setup is another, so the body can
/// `return` early: `if skip_unless_etcd34("needs …") { return; }`.
pub fn skip_unless_etcd34(reason: &str) -> bool {
    let setup = EtcdSetup::current();
    if setup == EtcdSetup::Etcd34 {
        return false;
    }
    eprintln!("[harness] not run on {setup}: {reason}");
    true
}

/// Whether `CI=true` (as in `.ci/run`).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Whether `LAINLET_TEST_STORES` names `setup` (any store).
fn explicitly_selected(setup: EtcdSetup) -> bool {
    let Ok(list) = std::env::var(STORES_ENV) else {
        return false;
    };
    list.split(',').map(str::trim).any(|name| {
        STORE_SETUPS.iter().any(|&(store, s)| {
            s == setup && selection_name(store, s).is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_has_a_distinct_name() {
        let names: Vec<_> = STORE_SETUPS
            .iter()
            .map(|&(s, e)| selection_name(s, e).unwrap())
            .collect();
        assert_eq!(names, ["v3", "v2", "v2-etcd2", "v2-proxy"]);
    }

    #[test]
    fn scoped_restores_the_previous_setup() {
        assert_eq!(EtcdSetup::current(), EtcdSetup::Etcd34);
        EtcdSetup::Etcd2Proxy.scoped(|| {
            assert_eq!(EtcdSetup::current(), EtcdSetup::Etcd2Proxy);
            EtcdSetup::Etcd2.scoped(|| assert_eq!(EtcdSetup::current(), EtcdSetup::Etcd2));
            assert_eq!(EtcdSetup::current(), EtcdSetup::Etcd2Proxy);
        });
        assert_eq!(EtcdSetup::current(), EtcdSetup::Etcd34);
    }
}
