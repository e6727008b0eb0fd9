//! End-to-end test harness: real etcd, real service binaries, loopback HTTP and SSE.
//!
//! | module | what |
//! | --- | --- |
//! | [`util`] | [`wait_until`](util::wait_until) polling, free loopback ports, temp dirs, log tails |
//! | [`http`] | a tiny blocking HTTP/1.1 client over `std::net::TcpStream` (optionally bound to a chosen source IP) |
//! | [`sse`] | an incremental Server-Sent-Events reader for `?watch=1` streams |
//! | [`client`] | [`EtcdClient`](client::EtcdClient): the panicking key-value helpers (v3 and `v2_*`) of a server or cluster |
//! | [`etcd`] | a throw-away etcd server: v3 through its JSON gateway, and the v2 keys API (`--enable-v2=true`; `v2_*` helpers) |
//! | [`setup`] | which etcd a test runs: 3.4, a 2.3.7 member, or a 2.3.7 member behind a 2.3.7 proxy |
//! | [`pki`] | test certificates (CA, server, client, expired) made with the `openssl` command line |
//! | [`proxy`] | the etcd 2.3.7 v2 proxy (`--proxy on`) in front of a 2.3.7 member |
//! | [`faults`] | a misbehaving HTTP proxy in front of etcd: canned answers for chosen requests |
//! | [`store`] | one writer for either store ([`Store`](store::Store), [`StoreWriter`](store::StoreWriter)) and running a test per store |
//! | [`cluster`] | a multi-member etcd cluster on loopback (kill / stop / start / pause members) |
//! | [`service`] | launching the service binaries under test, and running a test against each of them |
//! | [`python`] | running the Python test clients (`tests/python/`) in the test virtualenv |
//! | [`relay`] | a TCP relay that connects on from a chosen source address (authorisation tests of clients that cannot bind one) |
//!
//! Conventions: setup failures that a test cannot sensibly handle (etcd missing, a binary that
//! never becomes ready) are returned as `io::Result` with a message that says what to do;
//! convenience calls used inside test bodies (`EtcdServer::put`, `Service::get`, …) panic with a
//! descriptive message instead, and every process the harness starts prints its log tail when the
//! test that owns it panics.

pub mod client;
pub mod cluster;
pub mod etcd;
pub mod faults;
pub mod http;
pub(crate) mod kv;
pub mod pki;
pub mod proxy;
pub mod python;
pub mod relay;
pub mod service;
pub mod setup;
pub mod sse;
pub mod store;
pub mod util;
pub(crate) mod v2;
