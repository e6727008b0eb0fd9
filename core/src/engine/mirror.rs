//! The raw mirror of etcd: which keys exist at which revision, which values failed to decode,
//! and the rules that keep the decoded state consistent with etcd (rules 1–3 and 7 in the crate
//! docs). A v2 directory delete removes every key below the directory (path-segment aware).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use bytes::Bytes;

use crate::input::{KeyValue, Snapshot, WatchEvent};
use crate::model::{decode_config, decode_node, DecodeError, Depends, PodGroup};
use crate::state::{classify, ClusterState, Decoded, Family, Source};

/// Whether a change came from a put or a delete (decides `update` vs `delete` events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A put (or a resync that found a new or changed value).
    Put,
    /// A delete (or a resync that found a key gone).
    Delete,
}

/// One cache key whose data changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The family of the cache key.
    pub family: Family,
    /// The cache key.
    pub key: String,
    /// Put or delete.
    pub kind: ChangeKind,
}

/// A value that did not decode. The key keeps its last good value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeFailure {
    /// The revision of the bad value.
    pub revision: i64,
    /// Why it did not decode.
    pub error: DecodeError,
    /// Since when the key's value has not decoded (the first of consecutive bad values).
    pub since: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    mod_revision: i64,
    fingerprint: (u64, usize),
    decoded: bool,
}

/// The kind of an applied operation, as `/debug`'s `LastEvent.Action` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A key was set (etcd's `set`, `create`, `update`, `compareAndSwap`, or a v3 put).
    Set,
    /// A key was deleted.
    Delete,
}

impl Action {
    /// The original's action code: it mapped every kind of put to UPDATE (`2`, spec §1.1),
    /// deletes to DELETE (`3`).
    pub fn code(self) -> i64 {
        match self {
            Action::Set => 2,
            Action::Delete => 3,
        }
    }
}

/// What an applied operation was, for `/debug`'s `LastEvent`.
#[derive(Clone, Debug)]
pub struct LastEvent {
    /// Set or delete.
    pub action: Action,
    /// The etcd key.
    pub key: String,
    /// Its revision.
    pub revision: i64,
    /// The value for a put (shared with the mirror's copy, if it keeps values).
    pub value: Option<Bytes>,
}

/// The mirror of the keys lainlet reads.
#[derive(Debug, Default)]
pub struct Mirror {
    entries: HashMap<String, Entry>,
    /// etcd key → the failure of its current value.
    failures: BTreeMap<String, DecodeFailure>,
    /// The revision of the last applied snapshot or event batch; `None` before the first
    /// snapshot.
    applied_revision: Option<i64>,
    /// Per family, the last applied operation and when.
    last_events: BTreeMap<Family, (LastEvent, Instant)>,
    /// Total number of values that failed to decode.
    decode_failures_total: u64,
    /// The next snapshot comes from the other store: compare values, not revisions (the two
    /// stores count revisions independently).
    compare_values: bool,
    /// The newest put applied: its key and revision (what a reconnect proves etcd still has).
    newest_put: Option<(String, i64)>,
    /// The raw value of every key, when kept (for the state file; `None`: not kept).
    values: Option<HashMap<String, Bytes>>,
}

/// What the mirror reports about itself (`/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorStats {
    /// etcd keys mirrored.
    pub keys: usize,
    /// Keys whose current value does not decode.
    pub undecodable_keys: usize,
    /// Values that failed to decode since start.
    pub decode_failures_total: u64,
}

impl Mirror {
    /// The `mod_revision` of etcd key `key`, if the mirror holds it (decodable or not).
    pub fn mod_revision(&self, key: &str) -> Option<i64> {
        self.entries.get(key).map(|e| e.mod_revision)
    }

    /// Every etcd key the mirror holds.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The revision the mirror reflects; `None` before the first snapshot.
    pub fn applied_revision(&self) -> Option<i64> {
        self.applied_revision
    }

    /// Values that currently fail to decode, by etcd key.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &DecodeFailure)> {
        self.failures.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The last operation applied to `family`, and when.
    pub fn last_event(&self, family: Family) -> Option<(&LastEvent, Instant)> {
        self.last_events.get(&family).map(|(e, at)| (e, *at))
    }

    /// What the mirror reports about itself.
    pub fn stats(&self) -> MirrorStats {
        MirrorStats {
            keys: self.entries.len(),
            undecodable_keys: self.failures.len(),
            decode_failures_total: self.decode_failures_total,
        }
    }

    /// Marks `revision` as applied (a progress notification: etcd has sent every event up to
    /// it). Ignored before the first snapshot.
    pub fn advance_to(&mut self, revision: i64) {
        if let Some(applied) = &mut self.applied_revision {
            *applied = (*applied).max(revision);
        }
    }

    /// Applies a put at `now`, appending what changed.
    pub fn put(
        &mut self,
        now: Instant,
        state: &mut ClusterState,
        kv: KeyValue,
        changes: &mut Vec<Change>,
    ) {
        let Some((source, cache_key)) = classify(&kv.key) else {
            return;
        };
        self.note_put(&kv.key, kv.mod_revision);
        let value = Bytes::from(kv.value);
        let fingerprint = fingerprint(&value);
        let mark = changes.len();
        let mut touched = Vec::new();
        let previous = self.entries.get(&kv.key).copied();
        let decoded = match previous {
            Some(prev) if prev.fingerprint == fingerprint => {
                // The same bytes again: no decoding; a good value is a re-put that still
                // notifies its watchers (the original did), a bad one stays bad.
                if prev.decoded {
                    state.touched_by_rewrite(source, cache_key, &mut touched);
                }
                prev.decoded
            }
            _ => match decode(source, &value) {
                Ok(value) => {
                    self.failures.remove(&kv.key);
                    state.set(source, cache_key, Some(value), &mut touched);
                    true
                }
                Err(error) => {
                    self.decode_failures_total += 1;
                    let since = self.failures.get(&kv.key).map_or(now, |f| f.since);
                    let failure = DecodeFailure {
                        revision: kv.mod_revision,
                        error,
                        since,
                    };
                    self.failures.insert(kv.key.clone(), failure);
                    false
                }
            },
        };
        changes.extend(touched.into_iter().map(|(family, key)| Change {
            family,
            key,
            kind: ChangeKind::Put,
        }));
        let entry = Entry {
            mod_revision: kv.mod_revision,
            fingerprint,
            decoded,
        };
        if changes.len() > mark {
            self.record(
                now,
                source,
                Action::Set,
                &kv.key,
                kv.mod_revision,
                Some(value.clone()),
            );
        }
        if let Some(values) = &mut self.values {
            values.insert(kv.key.clone(), value);
        }
        self.entries.insert(kv.key, entry);
    }

    /// Applies a delete at `now`, appending what changed. Removes exactly this key.
    pub fn delete(
        &mut self,
        now: Instant,
        state: &mut ClusterState,
        key: &str,
        revision: i64,
        changes: &mut Vec<Change>,
    ) {
        let Some((source, cache_key)) = classify(key) else {
            return;
        };
        self.entries.remove(key);
        self.failures.remove(key);
        if let Some(values) = &mut self.values {
            values.remove(key);
        }
        if state.contains(source, cache_key) {
            let mut touched = Vec::new();
            state.set(source, cache_key, None, &mut touched);
            changes.extend(touched.into_iter().map(|(family, key)| Change {
                family,
                key,
                kind: ChangeKind::Delete,
            }));
            self.record(now, source, Action::Delete, key, revision, None);
        }
    }

    /// Applies one etcd watch response. Events at or below the applied revision are replays
    /// and are ignored; events before the first snapshot are ignored too (the shell must
    /// snapshot first).
    pub fn apply_events(
        &mut self,
        now: Instant,
        state: &mut ClusterState,
        events: impl IntoIterator<Item = WatchEvent>,
        changes: &mut Vec<Change>,
    ) {
        let Some(base) = self.applied_revision else {
            return;
        };
        let mut newest = base;
        for event in events {
            let revision = event.revision();
            if revision <= base {
                continue;
            }
            newest = newest.max(revision);
            match event {
                WatchEvent::Put(kv) => self.put(now, state, kv, changes),
                WatchEvent::Delete { key, mod_revision } => {
                    self.delete(now, state, &key, mod_revision, changes)
                }
                WatchEvent::DeleteDir { key, mod_revision } => {
                    self.delete_dir(now, state, &key, mod_revision, changes)
                }
            }
        }
        self.applied_revision = Some(newest);
    }

    /// Applies a snapshot: the first one loads the state; later ones (after a broken watch or
    /// a compaction) are compared with the mirror and only real differences are applied.
    pub fn apply_snapshot(
        &mut self,
        now: Instant,
        state: &mut ClusterState,
        snapshot: Snapshot,
        changes: &mut Vec<Change>,
    ) {
        let mut present: HashMap<&str, ()> = HashMap::with_capacity(snapshot.kvs.len());
        for kv in &snapshot.kvs {
            present.insert(kv.key.as_str(), ());
        }
        let mut gone: Vec<String> = self
            .entries
            .keys()
            .filter(|k| !present.contains_key(k.as_str()))
            .cloned()
            .collect();
        gone.sort();
        drop(present);
        for key in gone {
            self.delete(now, state, &key, snapshot.revision, changes);
        }
        let mut kvs = snapshot.kvs;
        if let Some(newest) = kvs.iter().max_by_key(|kv| kv.mod_revision) {
            self.note_put(&newest.key, newest.mod_revision);
        }
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
        let compare_values = std::mem::take(&mut self.compare_values);
        // The first snapshot is no event: `/debug` shows zero values until the first one, as
        // the original's did.
        let first = self.applied_revision.is_none();
        for kv in kvs {
            let unchanged = match self.entries.get_mut(&kv.key) {
                Some(e) if compare_values && e.fingerprint == fingerprint(&kv.value) => {
                    e.mod_revision = kv.mod_revision;
                    true
                }
                Some(e) => !compare_values && e.mod_revision == kv.mod_revision,
                None => false,
            };
            if !unchanged {
                self.put(now, state, kv, changes);
            }
        }
        if first {
            self.last_events.clear();
        }
        self.applied_revision = Some(snapshot.revision);
    }

    /// Applies the delete of directory `dir` (v2) at `now`: every key below it, path-segment
    /// aware (`/lain/a` covers `/lain/a/x`, never `/lain/ab/x`).
    pub fn delete_dir(
        &mut self,
        now: Instant,
        state: &mut ClusterState,
        dir: &str,
        revision: i64,
        changes: &mut Vec<Change>,
    ) {
        let below = format!("{}/", dir.trim_end_matches('/'));
        let mut keys: Vec<String> = self
            .entries
            .keys()
            .chain(self.failures.keys())
            .filter(|k| k.starts_with(&below))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            self.delete(now, state, &key, revision, changes);
        }
    }

    /// The store read changes, or etcd's history is another one (restored from a backup):
    /// the next snapshot is compared by value (an identical value changes nothing), since
    /// the revisions applied so far belong to the other history.
    pub fn handle_store_switch(&mut self) {
        self.compare_values = true;
        self.newest_put = None;
    }

    /// The newest put applied, as (key, revision): etcd continues the history served only if
    /// it has that key written at that revision.
    pub fn newest_put(&self) -> Option<(&str, i64)> {
        self.newest_put.as_ref().map(|(k, r)| (k.as_str(), *r))
    }

    /// Keeps the raw value of every key from now on (for [`Mirror::saved_keys`]); call
    /// before the first snapshot.
    pub fn keep_values(&mut self) {
        self.values.get_or_insert_with(HashMap::new);
    }

    /// Every key with its `mod_revision` and raw value, sorted by key; `None` unless values
    /// are kept.
    pub fn saved_keys(&self) -> Option<Vec<(String, i64, Bytes)>> {
        let values = self.values.as_ref()?;
        let mut keys: Vec<(String, i64, Bytes)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| Some((k.clone(), e.mod_revision, values.get(k)?.clone())))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        Some(keys)
    }

    /// Restores the newest put applied (from a state file).
    pub fn restore_newest_put(&mut self, newest: Option<(String, i64)>) {
        self.newest_put = newest;
    }

    fn note_put(&mut self, key: &str, revision: i64) {
        if self.newest_put.as_ref().is_none_or(|(_, r)| revision >= *r) {
            self.newest_put = Some((key.to_owned(), revision));
        }
    }

    fn record(
        &mut self,
        now: Instant,
        source: Source,
        action: Action,
        key: &str,
        revision: i64,
        value: Option<Bytes>,
    ) {
        let event = LastEvent {
            action,
            key: key.to_owned(),
            revision,
            value,
        };
        // The container family's status stays at zero values, as the original's did (it kept
        // that status on a copy, spec §2.4.16).
        self.last_events.insert(source.family(), (event, now));
    }
}

fn decode(source: Source, value: &[u8]) -> Result<Decoded, DecodeError> {
    Ok(match source {
        Source::Config => Decoded::Config(decode_config(value)),
        Source::PodGroup => Decoded::PodGroup(PodGroup::decode(value)?),
        Source::Depends => Decoded::Depends(Depends::decode(value)?),
        Source::Node => Decoded::Node(decode_node(value)?),
    })
}

/// A fast 64-bit fingerprint of a value, to skip decoding a re-put of identical bytes. Not a
/// cryptographic hash: whoever can forge a collision can also write etcd directly.
fn fingerprint(value: &[u8]) -> (u64, usize) {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = value.len() as u64;
    let mut chunks = value.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        h = (h.rotate_left(23) ^ word).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(23) ^ u64::from(b)).wrapping_mul(K);
    }
    h ^= h >> 29;
    (h.wrapping_mul(K), value.len())
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn fingerprints_tell_nearby_values_apart() {
        let a = br#"{"ContainerIp":"172.20.0.2"}"#;
        let b = br#"{"ContainerIp":"172.20.0.3"}"#;
        assert_ne!(fingerprint(a), fingerprint(b));
        assert_eq!(fingerprint(a), fingerprint(a));
        assert_ne!(fingerprint(b"12345678a"), fingerprint(b"12345678b"));
    }
}
