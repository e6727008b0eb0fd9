//! # lainlet-core
//!
//! The sans-IO heart of lainlet: etcd state and events go in, HTTP responses and
//! Server-Sent-Events frames of the lainlet v2 API come out. No sockets, files, threads, async
//! runtime or clock: the shells (`lainlet` on tokio, `lainlet-smol` on smol) own all IO and call
//! into one [`Engine`].
//!
//! ## Run loop (the call-order contract)
//!
//! Every call a shell makes, in order. Inputs are `handle_*`, outputs are drained with
//! `poll_*`; the shell decides nothing, it only carries bytes and time.
//!
//! ```text
//! start:   engine = Engine::new(config)
//!          with a state file: its bytes ──▶ engine.handle_saved_state(now, bytes) → Restored
//!            (served at once as `stale`, proven at the first connect like a reconnect; see
//!            [`SavedState`]); a file that cannot be read ──▶
//!            engine.handle_state_file_error(StateIoError::Read { .. })
//!          demo mode (no etcd): engine.handle_demo(now, snapshot), and no etcd loop
//! etcd:    loop { match engine.poll_etcd(now) {
//!            Wait { until }          → sleep until then
//!            Connect { endpoint, store } → connect (that store's API, or both), then a
//!                                      quorum read (gateway::parse_quorum / v2::parse_quorum)
//!                                      → handle_quorum_check(now, result) → QuorumOutcome
//!                                      (Continues, or HistoryChanged (a re-read follows):
//!                                       handle_etcd_connected(now); Failed:
//!                                       handle_etcd_failure)
//!            Probe                   → ask each store for keys under /lain/ (v2::PROBE_PATH,
//!                                      a one-key v3 range) → handle_store_probe(now, v2, v3)
//!                                      → StoreDecision (log it) or NoStore (a failure)
//!            ProveHistory { store, key, revision }
//!                                    → ask at which revision etcd has `key` as of `revision`
//!                                      → handle_history_proof(now, answer) → QuorumOutcome
//!            ReadSnapshot { store }  → read /lain/ at revision R → handle_snapshot(now, snapshot)
//!            Watch { store, start_revision, in_history, until }
//!                                    → one prefix watch of /lain/ from there (end it at
//!                                      `until`); every message →
//!                                      handle_watch_response(now, msg) → WatchOutcome
//!                                      (Compacted, Ended: end the watch and poll again;
//!                                       Canceled or a transport error: handle_etcd_failure)
//!                                      (bare events without a watch message, as tests and
//!                                       tools have them: handle_events(now, events))
//!                                    beside the watch, loop { (due, check) =
//!                                      poll_etcd_check(now); at `due` (or at once when
//!                                      poll_etcd_wakeup() gives something) run `check` within
//!                                      etcd_check_timeout(check):
//!                                      Quorum   → handle_quorum_check(now, r) → QuorumOutcome
//!                                                 (HistoryChanged: end the watch; Failed:
//!                                                  handle_etcd_failure)
//!                                      Keys { at_revision } → handle_key_listing(now, r)
//!                                                 → DriftOutcome (Drift: end the watch)
//!                                      Backfill { at_revision } → handle_backfill(now,
//!                                                 at_revision, r) → BackfillOutcome (log) }
//!          } }
//!          Any call that fails: engine.handle_etcd_failure(now, EtcdCallError) → the
//!          back-off delay (for the log); the next poll_etcd waits it out.
//!          The store is etcd's v3 store or its v2 keys store (`--etcd-api`, detected by
//!          default; see [`Store`]); v2's index plays the revision, its answers are
//!          decoded by [`v2`], v3's JSON gateway by [`gateway`].
//! HTTP:    each request ──▶ engine.handle_request(&request, &ctx) ──▶ Reply
//!            Reply::Response(r)  → write it (omit the body for HEAD)
//!            Reply::Stream(id)   → write SSE_HEAD, then frames from engine.poll_frame(id)
//!                                  (a Delivery::Raw watch, e.g. gRPC's: engine.poll_update(id))
//!          client gone ──▶ engine.handle_disconnect(id)
//! state:   at engine.poll_state_save_timeout() (period: state_save_every()) or on SIGTERM:
//!          engine.poll_state_save(now, shutdown) → encode, write atomically →
//!          engine.handle_state_saved(now, Ok(()) or Err(StateIoError::Write { .. }))
//! fleet:   (`--announce`, see [`fleet`]) loop { match engine.poll_fleet(now) {
//!            Off → stop;  Wait { until } → sleep;
//!            Write { endpoint, write } → do it on a client of its own →
//!                                        engine.handle_fleet_written(now, FleetWritten) } }
//!          on SIGTERM: engine.poll_fleet_withdraw() → remove the key →
//!          handle_fleet_written (its counters: engine.fleet_stats())
//! timers:  at engine.poll_timeout() ──▶ engine.handle_timeout(now)
//! after every handle_* call:
//!          while let Some(id) = engine.poll_wakeup() { wake the connection of id }
//!          while let Some(_) = engine.poll_etcd_wakeup() { wake the etcd loop: a resume
//!                                                           waits for a listing }
//! a woken connection:
//!          while let Some(frame) = engine.poll_frame(id) { write frame; if frame.close { close } }
//! ```
//!
//! Read-only queries, at any time: [`Engine::is_ready`], [`Engine::ready_after`],
//! [`Engine::applied_revision`], [`Engine::etcd_status`], [`Engine::etcd_store`],
//! [`Engine::subscriber_count`], [`Engine::delivery_stats`], [`Engine::decode_failures`],
//! [`Engine::status_json`].
//!
//! Failures reported to the engine are typed ([`EtcdCallError`], [`StateIoError`]); the
//! outcomes a shell must act on are `#[must_use]` ([`QuorumOutcome`], [`WatchOutcome`],
//! [`DriftOutcome`], [`BackfillOutcome`], [`StoreDecision`]).
//!
//! A connection that writes slowly simply calls `poll_frame` less often: each watch holds at
//! most one pending frame, always the newest state (older undelivered ones are conflated), so
//! memory per watch is constant and nobody waits for anybody.
//!
//! ## Time
//!
//! Time is an argument: `now: Instant` for heartbeats, back-off and timestamps, and a
//! wall-clock `SystemTime` only where `/debug` shows dates. The engine never reads a clock, and
//! its only randomness (back-off jitter) comes from a seed in [`EngineConfig`], so every output
//! is a deterministic function of its inputs. This crate's `clippy.toml` disallows
//! `Instant::now` and `SystemTime::now`, so a clock read in the core fails CI.
//!
//! ## Rules the engine keeps
//!
//! 1. **Snapshot, then watch, without a gap.** A snapshot carries revision R and the watch
//!    starts at R + 1; events at or below the applied revision are replays and are ignored.
//!    The engine owns the applied revision; the etcd policy resumes a broken watch from it.
//! 2. **A resync is a diff, not a wipe.** After a compaction the shell reads a fresh snapshot;
//!    the engine compares it with its mirror and watchers get ordinary updates and deletes for
//!    what really changed — including selections that became empty.
//! 3. **A bad value hurts only its own key.** A value that does not decode is reported
//!    (`/debug`, `/metrics`) and its key keeps its last good value.
//! 4. **Render once, share the bytes.** All watchers and GETs of the same endpoint and
//!    selection share one rendering per change; only the `id:` line is per connection.
//! 5. **Unchanged output writes nothing**, and output is deterministic (sorted keys; arrays the
//!    original emitted in random order are sorted).
//! 6. **Slow consumers stall nobody and never end stale** (one latest-value slot each).
//! 7. **Deletes are exact**: deleting `/lain/deployd/pod_groups/hello/x` removes that pod group
//!    and never `hello-service/…`.

//!
//! References like "spec §2.4" point into the lainlet v2 compatibility contract
//! (`lainlet-v2.md` in the project's shared documents): the original lainlet's observable
//! behaviour, which these docs restate where the code depends on it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
// The unit tests play the shell and read the clock; the core itself may not (clippy.toml).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

mod auth;
mod engine;
mod error;
mod etcd;
pub mod fleet;
mod input;
mod model;
mod persist;
mod request;
mod response;
mod sse;
mod state;
mod views;

/// Go-compatible JSON output, shared with the gRPC mapping and the fixtures.
use lainlet_gojson as json;

pub use auth::is_local_peer;
pub use engine::{
    apply_patch, Action, BackfillOutcome, CheckPolicy, DecodeFailure, DeliveryStats, DriftOutcome,
    Engine, EngineConfig, EtcdStatus, EtcdWakeup, HistoryWindow, QuorumOutcome, Rendering,
    RequestContext, Restored, StoreDecision, SubscriberId, Update, ViewVersion, V2_VERSION,
};
pub use error::{ApiError, EtcdCallError, StateIoError};
pub use etcd::{
    gateway, v2, BackoffPolicy, CodecError, EtcdApi, EtcdCheck, EtcdIdentity, EtcdStep, KeyListing,
    NoStore, Probe, QuorumReadError, Store, StoreChoice, WatchOutcome, WatchResponse, CALL_TIMEOUT,
    MAX_ANSWER, PREFIX, PROBE_TIMEOUT, V2_LONG_POLL_RENEW,
};
pub use input::{KeyValue, Snapshot, WatchEvent};
pub use model::DecodeError;
pub use persist::{SavedState, StateFileError, FORMAT_VERSION as STATE_FILE_VERSION};
pub use request::{Delivery, Method, Request, Route, StreamOptions};
pub use response::{reason_phrase, Reply, Response, TEXT_PLAIN};
pub use sse::{EventName, Frame, SSE_HEAD};
pub use views::Endpoint;

#[cfg(test)]
mod tests {
    /// The sources of every `impl Engine` block.
    const ENGINE_SOURCES: [&str; 10] = [
        include_str!("engine/mod.rs"),
        include_str!("engine/etcd.rs"),
        include_str!("engine/fleet.rs"),
        include_str!("engine/checks.rs"),
        include_str!("engine/backfill.rs"),
        include_str!("engine/persist.rs"),
        include_str!("engine/observe/health.rs"),
        include_str!("engine/observe/debug.rs"),
        include_str!("engine/observe/status.rs"),
        include_str!("engine/observe/metrics.rs"),
    ];

    /// The public methods of `impl Engine` blocks in `source`.
    fn engine_methods(source: &str) -> Vec<&str> {
        let mut inside = false;
        let mut methods = Vec::new();
        for line in source.lines() {
            if line.starts_with("impl Engine") {
                inside = true;
            } else if line == "}" {
                inside = false;
            } else if let Some(rest) = line.strip_prefix("    pub fn ").filter(|_| inside) {
                methods.extend(rest.split(['(', '<']).next());
            }
        }
        methods
    }

    #[test]
    fn the_crate_docs_name_every_public_engine_method() {
        let docs: String = include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .collect();
        let methods: Vec<&str> = ENGINE_SOURCES
            .into_iter()
            .flat_map(engine_methods)
            .collect();
        assert!(methods.len() > 30, "{methods:?}");
        let missing: Vec<&&str> = methods
            .iter()
            .filter(|m| {
                !docs.contains(&format!("{m}(")) && !docs.contains(&format!("Engine::{m}`"))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "the run loop in lib.rs does not name {missing:?}"
        );
    }
}
