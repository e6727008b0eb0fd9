//! What the shell feeds the engine: etcd key-values, snapshots and watch events.
//!
//! These mirror etcd's data model without depending on any etcd crate: the shell (or the pure
//! codecs of [`crate::gateway`] and [`crate::v2`]) converts etcd's answers into these. The v3
//! store is flat; the v2 keys store is a tree, whose only extra event is
//! [`WatchEvent::DeleteDir`] (its index plays the revision).

/// One key-value pair as read from etcd (v3, or a leaf of the v2 tree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full etcd key, e.g. `/lain/deployd/pod_groups/hello/hello.web.web`.
    pub key: String,
    /// The raw value bytes (deployd writes compact JSON; config values are plain text).
    pub value: Vec<u8>,
    /// The revision of the last modification of this key (v3 `mod_revision`, v2
    /// `modifiedIndex`).
    pub mod_revision: i64,
}

/// A consistent read of every key under `/lain/` at one etcd revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The store revision the read was served at (v3: the response header revision; v2: the
    /// `X-Etcd-Index` header).
    /// The watch that follows must start at `revision + 1`.
    pub revision: i64,
    /// The key-values; order does not matter.
    pub kvs: Vec<KeyValue>,
}

/// One event of an etcd watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or its value replaced.
    Put(KeyValue),
    /// The key was deleted at `mod_revision`.
    Delete {
        /// The full etcd key.
        key: String,
        /// The revision of the deletion.
        mod_revision: i64,
    },
    /// v2 only: the directory `key` was deleted or expired at `mod_revision`, and with it every
    /// key below it (`key` + `/` …, path-segment aware: `/lain/a` never covers `/lain/ab`).
    /// etcd sends no event for the keys inside.
    DeleteDir {
        /// The directory's full key, without a trailing `/` (e.g.
        /// `/lain/deployd/pod_groups/shop`; `/lain` removes everything).
        key: String,
        /// The revision (v2 index) of the deletion.
        mod_revision: i64,
    },
}

impl WatchEvent {
    /// The full etcd key the event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } | WatchEvent::DeleteDir { key, .. } => key,
        }
    }

    /// The revision at which the event happened.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. }
            | WatchEvent::DeleteDir { mod_revision, .. } => *mod_revision,
        }
    }

    /// Whether the event can change a key lainlet reads: its key is under
    /// [`crate::PREFIX`], or it deletes a directory that contains the prefix (`/lain`). Other
    /// events (a v2 answer about a key elsewhere) are ignored and counted.
    pub fn is_under_prefix(&self) -> bool {
        let key = self.key();
        match self {
            WatchEvent::DeleteDir { .. } => {
                let dir = key.trim_end_matches('/');
                key.starts_with(crate::etcd::PREFIX)
                    || crate::etcd::PREFIX.starts_with(&format!("{dir}/"))
            }
            _ => key.starts_with(crate::etcd::PREFIX),
        }
    }
}
