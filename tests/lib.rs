//! Cross-crate test support for lainlet.
//!
//! The [`harness`] module is the end-to-end test harness: it starts a **real** etcd
//! ([`EtcdServer`]) and the **real** service binaries ([`Service`]) on loopback ports and talks to
//! them over HTTP ([`HttpClient`]) and Server-Sent Events ([`SseStream`]). No mocks; nothing
//! leaves `127.0.0.0/8`. Everything is std + `serde_json`/`base64`, plus `socket2` (binding a
//! client to a chosen source address) and `libc` (signals).
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
//! The service binaries are **not** built by `cargo test -p lainlet-tests`; build them first
//! (`cargo build --workspace --bins`) or point `LAINLET_TEST_BIN` / `LAINLET_TEST_BIN_SMOL` at them.
//! See [`ServiceKind`] for how binaries are located and selected.

#![warn(missing_docs)]

pub mod harness;

pub use harness::etcd::{EtcdServer, ETCD_ENV};
pub use harness::http::{read_response, HttpClient, HttpResponse};
pub use harness::service::{
    run_for_kind, workspace_root, Service, ServiceCommand, ServiceKind, KINDS_ENV,
};
pub use harness::sse::{Frame, SseParser, SseStream};
pub use harness::util::{free_addr, free_port, log_tail, wait_for, wait_until, TempDir};
