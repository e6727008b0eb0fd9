//! What the shell feeds the engine: etcd key-values, snapshots and watch events.
//!
//! These mirror etcd v3's data model without depending on any etcd crate: the shell converts
//! its client's types into these.

/// One key-value pair as read from etcd v3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full etcd key, e.g. `/lain/deployd/pod_groups/hello/hello.web.web`.
    pub key: String,
    /// The raw value bytes (deployd writes compact JSON; config values are plain text).
    pub value: Vec<u8>,
    /// The revision of the last modification of this key (etcd's `mod_revision`).
    pub mod_revision: i64,
}

/// A consistent read of every key under `/lain/` at one etcd revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The store revision the read was served at (etcd's response header revision).
    /// The watch that follows must start at `revision + 1`.
    pub revision: i64,
    /// The key-values; order does not matter.
    pub kvs: Vec<KeyValue>,
}

/// One event of an etcd v3 watch.
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
}

impl WatchEvent {
    /// The full etcd key the event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision at which the event happened.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}
