//! Cross-crate test support for lainlet.
//!
//! The [`harness`] module is the end-to-end test harness: it starts a **real** etcd
//! ([`EtcdServer`]) and the **real** service binaries ([`Service`]) on loopback ports and talks to
//! them over HTTP ([`HttpClient`]) and Server-Sent Events ([`SseStream`]). No mocks; nothing
//! leaves `127.0.0.0/8`. Everything is std + `serde_json`/`base64`, plus `socket2` (binding a
//! client to a chosen source address), `libc` (signals) and `form_urlencoded` (etcd v2 bodies).
//!
//! A typical end-to-end test:
//!
//! ```no_run
//! use lainlet_tests::*;
//! use std::time::Duration;
//!
//! conformance_test!(fn proxywatcher_sees_a_put(kind) {
//!     let etcd = EtcdServer::new().unwrap();
//!     etcd.put("/lain/config/vip", b"\"192.168.77.201\"");
//!     let svc = Service::command(kind).web_auto().etcd(&etcd).start().unwrap();
//!     let mut watch = svc.watch("/v2/configwatcher?target=vip&watch=1");
//!     let init = watch.next_frame(Duration::from_secs(5)).expect("init frame");
//!     assert_eq!(init.event, "init");
//! });
//! # fn main() {}
//! ```
//!
//! Tests that must hold for both etcd stores (the v3 store, and the v2 keys store real LAIN
//! clusters use) are written once with [`store_conformance_test!`], which generates one test per
//! binary, store and etcd setup (`name::lainlet_v3`, `name::lainlet_v2` on etcd 3.4,
//! `name::lainlet_v2_etcd2` on an etcd 2.3.7 member, `name::lainlet_v2_proxy` through a 2.3.7
//! proxy, and the same four `name::lainlet_smol_*`; see [`EtcdSetup`]); the body writes through
//! [`EtcdServer::with_store`]:
//!
//! ```no_run
//! use lainlet_tests::*;
//!
//! store_conformance_test!(fn a_put_is_readable_in_either_store(kind, store) {
//!     let etcd = EtcdServer::new().unwrap();
//!     let w = etcd.with_store(store);
//!     let rev = w.put("/lain/config/vip", b"\"192.168.77.201\"");
//!     assert_eq!(w.get_prefix("/lain/config/")[0].2, rev);
//!     let _ = kind; // start the service reading `store` here
//! });
//! # fn main() {}
//! ```
//!
//! `LAINLET_TEST_ETCD_TLS=1` runs the suite over TLS: each etcd 3.4 the tests start requires
//! client certificates (made by the test) and the services connect with `--etcd-ca`,
//! `--etcd-cert` and `--etcd-key` (see [`ETCD_TLS_ENV`]).
//!
//! Selection by environment: `LAINLET_TEST_KINDS` (`lainlet,lainlet-smol`; default: the binaries
//! that are built) and `LAINLET_TEST_STORES` (`v3,v2,v2-etcd2,v2-proxy`; default all).
//! Deselected combinations print a skip note and pass. etcd 2.3.7 is `$LAINLET_TEST_ETCD2`
//! (default `target/etcd-2.3.7/etcd`, built by `scripts/build-etcd-2.3.7.sh`); without it the
//! 2.3.7 tests are skipped with a note, except under `CI=true`, where they fail.
//!
//! More of the harness: [`EtcdCluster`] (a 3-member etcd on loopback whose members can be killed,
//! paused and restarted, for quorum-loss and failover tests), and [`run_python`] /
//! [`spawn_python`] for the Python test clients in `tests/python/` (webrouter's `sseclient`,
//! `grpcio`, selenium driving headless Chromium), which run in the virtualenv that
//! `scripts/ensure-deps.sh --with-python` creates (`--with-browser` installs Chromium).
//!
//! The service binaries are **not** built by `cargo test -p lainlet-tests`; build them first
//! (`cargo build --workspace --bins`) or point `LAINLET_TEST_BIN` / `LAINLET_TEST_BIN_SMOL` at them.
//! See [`ServiceKind`] for how binaries are located and selected.

#![warn(missing_docs)]

pub mod harness;

pub use harness::client::EtcdClient;
pub use harness::cluster::{EtcdCluster, EtcdMember};
pub use harness::etcd::{EtcdServer, ETCD_ENV, ETCD_TLS_ENV};
pub use harness::faults::{http_answer, FaultyProxy};
pub use harness::http::{read_response, HttpClient, HttpResponse};
pub use harness::pki::{CertFiles, TestPki, Usage};
pub use harness::proxy::EtcdProxy;
pub use harness::python::{
    python, python_dir, run_python, spawn_python, venv_dir, PythonProcess, VENV_ENV,
};
pub use harness::relay::Relay;
pub use harness::service::{
    run_for_kind, workspace_root, Service, ServiceCommand, ServiceKind, KINDS_ENV,
};
pub use harness::setup::{
    etcd2_binary, is_ci, run_for_setup, selected_setups, setup_selected, skip_unless_etcd34,
    EtcdSetup, ETCD2_ENV, STORE_SETUPS,
};
pub use harness::sse::{Frame, SseParser, SseStream};
pub use harness::store::{run_for_store, Store, StoreWriter, STORES_ENV};
pub use harness::util::{copy_dir, free_addr, free_port, log_tail, wait_for, wait_until, TempDir};
