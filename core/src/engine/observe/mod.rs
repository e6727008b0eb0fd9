//! What the engine tells about itself: `/healthz` ([`health`]), `/metrics` ([`metrics`]),
//! `/debug` ([`debug`]) and the live status page with its stream ([`status`]), each built from
//! what the engine's parts report (their `stats()`).

mod debug;
mod health;
mod metrics;
mod status;

pub use status::StatusState;

use std::time::Instant;

/// Counters kept by the engine itself (the parts keep their own).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Snapshots applied (the first load and resyncs).
    pub snapshots: u64,
    /// Watch responses that advanced the applied revision.
    pub event_batches: u64,
    /// Requests answered.
    pub requests: u64,
    /// When the first snapshot was applied.
    pub ready_at: Option<Instant>,
}
