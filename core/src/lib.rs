//! # lainlet-core
//!
//! The sans-IO heart of lainlet: etcd state and events go in, HTTP responses and
//! Server-Sent-Events frames of the lainlet v2 API come out. No sockets, files, threads, async
//! runtime or clock: the shells (`lainlet` on tokio, `lainlet-smol` on smol) own all IO and call
//! into one [`Engine`].
//!
//! ## Run loop (the call-order contract)
//!
//! ```text
//! etcd:    range /lain/ at revision R ──▶ engine.handle_snapshot(now, snapshot)
//!          watch /lain/ from R+1, each response ──▶ engine.handle_events(now, events)
//!          watch broken / compacted ──▶ read again ──▶ engine.handle_snapshot(now, snapshot)
//!          connection state ──▶ engine.handle_etcd_status(now, status)
//! HTTP:    each request ──▶ engine.handle_request(&request, &ctx) ──▶ Reply
//!            Reply::Response(r)  → write it (omit the body for HEAD)
//!            Reply::Stream(id)   → write SSE_HEAD, then frames from engine.poll_frame(id)
//!          client gone ──▶ engine.handle_disconnect(id)
//! timers:  at engine.poll_timeout() ──▶ engine.handle_timeout(now)
//! after every handle_* call:
//!          while let Some(id) = engine.poll_wakeup() { wake the connection of id }
//! a woken connection:
//!          while let Some(frame) = engine.poll_frame(id) { write frame; if frame.close { close } }
//! ```
//!
//! A connection that writes slowly simply calls `poll_frame` less often: each watch holds at
//! most one pending frame, always the newest state (older undelivered ones are conflated), so
//! memory per watch is constant and nobody waits for anybody.
//!
//! ## Time
//!
//! Time is an argument: `now: Instant` for heartbeats and timestamps, and a wall-clock
//! `SystemTime` only where `/debug` shows dates. The engine never reads a clock, so every
//! output is a deterministic function of its inputs.
//!
//! ## Rules kept (see DESIGN.md)
//!
//! Snapshot then watch without a gap (events at or below the applied revision are ignored);
//! a resync is a diff, not a wipe; a bad value hurts only its own key; each view is rendered
//! once per change and the bytes are shared; unchanged output writes nothing; deletes are
//! exact.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod engine;
pub mod error;
pub mod etcd_sync;
pub mod http1;
pub mod input;
pub mod json;
pub mod model;
pub mod request;
pub mod sse;
pub mod state;
pub mod views;

pub use engine::{
    Change, ChangeKind, DecodeFailure, DeliveryStats, Engine, EngineConfig, Reply, RequestContext,
    Response, SubscriberId, V2_VERSION,
};
pub use error::ApiError;
pub use etcd_sync::{BackoffPolicy, EtcdSync, SyncStep, WatchResponse, WatchStep};
pub use input::{EtcdStatus, KeyValue, Snapshot, WatchEvent};
pub use request::{Endpoint, Method, Request, Route};
pub use sse::{EventName, Frame, SSE_HEAD};
