//! Following etcd: the connection policy ([`EtcdSync`]: which endpoint, which store, when to
//! read a snapshot, from which revision to watch, how long to back off), the choice of the
//! store ([`store`]) and the watch messages a shell hands in ([`WatchResponse`]). The
//! [`crate::Engine`] owns the policy, so the revision it serves is the one it resumes from; a
//! shell asks [`crate::Engine::poll_etcd`] what to do and reports what happened (see the crate
//! docs for the loop). The protocols as bytes: [`gateway`] (v3's JSON gateway) and [`v2`] (the
//! v2 keys API).

pub mod gateway;
pub mod store;
mod sync;
pub mod v2;

pub use store::{choose_store, EtcdApi, NoStore, Probe, Store, StoreChoice};
pub use sync::{BackoffPolicy, EtcdStep, EtcdSync, V2_LONG_POLL_RENEW};

use std::time::Duration;

use crate::input::WatchEvent;

/// The prefix lainlet reads and watches.
pub const PREFIX: &str = "/lain/";

/// Time limit of a request to etcd that should answer promptly (a snapshot or key listing,
/// a watch's start); a shell gives up on it then and reports the failure.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Time limit of a store probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer from etcd read whole (a big cluster's snapshot is one answer); a larger one
/// is refused as an error.
pub const MAX_ANSWER: usize = 512 << 20;

/// What a quorum read says about the etcd that answered it: where its history is and which
/// cluster it belongs to. The engine compares it with the history it applied
/// ([`crate::Engine::handle_quorum_check`]): a lower revision or another cluster ID means
/// etcd's history went back (restored from a backup) and the state is read again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EtcdIdentity {
    /// The store revision (v2: `X-Etcd-Index`) when it answered; 0 if it did not say.
    pub revision: i64,
    /// etcd's cluster ID, if it said (v2: `X-Etcd-Cluster-Id`; v3: the response header's).
    pub cluster_id: Option<u64>,
}

/// The keys under [`PREFIX`] a store holds, without values, at one revision (for the drift
/// check).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyListing {
    /// The store revision the listing shows.
    pub revision: i64,
    /// Every key with its `mod_revision` (v2: `modifiedIndex`), in any order.
    pub keys: Vec<(String, i64)>,
}

/// A check a shell runs beside an open watch, when [`crate::Engine::poll_etcd_check`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtcdCheck {
    /// A linearizable read, which only a member with a quorum answers; hand the outcome to
    /// [`crate::Engine::handle_quorum_check`].
    Quorum,
    /// List the keys under `/lain/` (with their revisions, without values) at `at_revision`
    /// (v2: at the store's current index) and hand them to
    /// [`crate::Engine::handle_key_listing`].
    Keys {
        /// The revision to list at.
        at_revision: i64,
    },
    /// List the keys under `/lain/` of the v3 store at `at_revision`, a revision before the
    /// history (watches resuming from it wait), and hand them to
    /// [`crate::Engine::handle_backfill`].
    Backfill {
        /// The revision to list at.
        at_revision: i64,
    },
}

/// An answer from etcd that cannot be understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Not JSON (an HTML error page, a truncated answer, …).
    #[error("etcd sent something that is not JSON: {0}")]
    Json(String),
    /// JSON without the expected shape.
    #[error("etcd sent an unexpected answer: {0}")]
    Shape(&'static str),
    /// etcd answered with an error.
    #[error("etcd answered with an error: {0}")]
    Etcd(String),
    /// A message of a stream longer than the limit (its bytes), with no end in sight.
    #[error("a message longer than {0} bytes")]
    TooLong(usize),
}

/// Why the answer to a quorum read does not show a member with a quorum
/// ([`gateway::parse_quorum`], [`v2::parse_quorum`]); the shell reports it as a failed check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuorumReadError {
    /// HTTP 200, but not the answer a range read gets (v3 gateway).
    #[error("an unexpected answer to /v3/kv/range")]
    UnexpectedAnswer,
    /// HTTP 200 with a body that is not JSON (v2).
    #[error("HTTP 200 with something that is not JSON: {0}")]
    NotJson(String),
    /// An error status with etcd's message (v3 gateway; `?` when the JSON has none).
    #[error("HTTP {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// etcd's `message` (or `error`).
        message: String,
    },
    /// An error status whose body is not JSON (v3 gateway).
    #[error("HTTP {0}")]
    BareStatus(u16),
    /// etcd, or a proxy in front of it, answered with an error (v2).
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl WatchResponse {
    /// The keys of events that cannot concern lainlet (not under [`PREFIX`]): the engine
    /// ignores and counts them; a shell may log them.
    pub fn foreign_keys(&self) -> impl Iterator<Item = &str> {
        self.events
            .iter()
            .filter(|e| !e.is_under_prefix())
            .map(WatchEvent::key)
    }
}

/// One message of the etcd watch stream, converted by the shell from its client's type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchResponse {
    /// The reply that confirms the watch was created.
    pub created: bool,
    /// etcd canceled the watch.
    pub canceled: bool,
    /// Why etcd canceled it (may be empty).
    pub cancel_reason: String,
    /// Non-zero when the start revision was compacted away: the oldest revision etcd still has.
    pub compact_revision: i64,
    /// The revision of the response header (the store's revision when it was sent).
    pub header_revision: i64,
    /// The events the shell could convert (keys that are not UTF-8 are left out), in order.
    pub events: Vec<WatchEvent>,
    /// The `mod_revision` of the last event etcd sent, converted or not (`None` without
    /// events).
    pub last_event_revision: Option<i64>,
    /// etcd sends nothing more on this watch (v2: an answer from its history carries one
    /// event; a stream ended): after applying the message, end the watch and start the next
    /// one from the applied revision.
    pub last: bool,
}

/// What a shell does after handing a watch message to [`crate::Engine::handle_watch_response`].
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchOutcome {
    /// The watch is established (log it): the first `created` reply since the connection was
    /// made or lost its history (later ones, e.g. of each v2 long poll, are
    /// [`WatchOutcome::Applied`]); keep reading.
    Created {
        /// The first revision it delivers.
        start_revision: i64,
    },
    /// Applied (events or progress); keep reading.
    Applied,
    /// The start revision was compacted away: end this watch and ask
    /// [`crate::Engine::poll_etcd`] again (it says to read a snapshot, applied as a diff).
    Compacted {
        /// The revision lainlet had asked for.
        start_revision: i64,
        /// The oldest revision etcd still has.
        compact_revision: i64,
    },
    /// Applied, and etcd sends nothing more on this watch (v2): end it and ask
    /// [`crate::Engine::poll_etcd`] again (it says from where to watch next); not a failure.
    Ended,
    /// etcd canceled the watch: end it and report the failure
    /// ([`crate::Engine::handle_etcd_failure`]).
    Canceled {
        /// etcd's reason (may be empty).
        reason: String,
    },
}

/// A small xorshift generator for back-off jitter (no cryptographic use), seeded by the shell.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed | 1)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}
