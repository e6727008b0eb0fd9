//! The state file's format: what [`crate::Engine::poll_state_save`] hands out, encoded to bytes
//! (the shell writes them atomically), and decoded again at start
//! ([`crate::Engine::handle_saved_state`]) into a state that is served only as *unproven*
//! until etcd shows that it continues the history saved (DESIGN rule 8).
//!
//! ```text
//! "LAINLETS"            8 bytes, the magic
//! version               u32 LE (FORMAT_VERSION)
//! body length           u64 LE
//! body                  see below
//! checksum              u64 LE: FNV-1a 64 of everything before it
//! ```
//!
//! The body (integers little-endian; strings and byte strings as u32 length + bytes):
//! store (`2`/`3`), whether its choice was settled, cluster ID (flag + u64), applied revision,
//! the newest put (flag + key + revision), the history's horizon (flag + i64), the keys
//! (count; key, mod_revision, value each), the history entries (count; revision, age in ms,
//! family, cache key each). Anything else — another magic, another version, a wrong length or
//! checksum, bytes left over — is a typed [`StateFileError`], never a panic.

use std::time::Duration;

use bytes::Bytes;

use crate::etcd::Store;
use crate::state::Family;

/// The magic the file starts with.
pub const MAGIC: &[u8; 8] = b"LAINLETS";

/// The version of the format written; files of another version are ignored.
pub const FORMAT_VERSION: u32 = 1;

/// Why a state file is not used. Each is logged once and counted; none is fatal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateFileError {
    /// The file does not start with [`MAGIC`] (not a lainlet state file, or empty).
    #[error("not a lainlet state file (no LAINLETS header)")]
    NotAStateFile,
    /// The file ends before its header or body says it does.
    #[error("truncated: {0}")]
    Truncated(&'static str),
    /// The checksum does not match the contents.
    #[error("corrupt: checksum mismatch")]
    Corrupt,
    /// Written by another version of the format.
    #[error("format version {found}, this lainlet reads version {FORMAT_VERSION}")]
    OtherVersion {
        /// The version in the file.
        found: u32,
    },
    /// The checksum matches but the contents do not parse (a bug, or a deliberate forgery).
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// Saved from the other etcd store than the one `--etcd-api` reads.
    #[error("saved from the etcd {file} store, but --etcd-api reads {configured}")]
    OtherStore {
        /// The store in the file.
        file: Store,
        /// The store configured.
        configured: Store,
    },
    /// The engine already holds a state (a file is only loaded before the first snapshot).
    #[error("a state is already loaded")]
    AlreadyLoaded,
}

/// One entry of the resume history: cache key `key` of `family` changed at `revision`, `age`
/// before the save.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SavedChange {
    pub revision: i64,
    pub age: Duration,
    pub family: Family,
    pub key: String,
}

/// A key as saved: etcd key, mod_revision, raw value.
pub(crate) type SavedKey = (String, i64, Bytes);

/// The engine's persistent state: everything a restart needs to serve at once and to resume
/// following etcd from where it stopped. Built by [`crate::Engine::poll_state_save`] (cheap:
/// values are shared, not copied) and turned into bytes with [`SavedState::encode`] outside
/// the engine's lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedState {
    pub(crate) store: Store,
    pub(crate) settled: bool,
    pub(crate) cluster_id: Option<u64>,
    pub(crate) revision: i64,
    pub(crate) newest_put: Option<(String, i64)>,
    pub(crate) horizon: Option<i64>,
    pub(crate) keys: Vec<SavedKey>,
    pub(crate) history: Vec<SavedChange>,
}

impl SavedState {
    /// The etcd store the state was read from.
    pub fn store(&self) -> Store {
        self.store
    }

    /// The revision (v2: index) the state reflects.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The cluster ID of the etcd the state came from, if known.
    pub fn cluster_id(&self) -> Option<u64> {
        self.cluster_id
    }

    /// The key of the newest put saved (what a start proves etcd still has at its revision).
    pub fn newest_key(&self) -> Option<&str> {
        self.newest_put.as_ref().map(|(k, _)| k.as_str())
    }

    /// The revision of the newest put saved.
    pub fn newest_revision(&self) -> Option<i64> {
        self.newest_put.as_ref().map(|(_, r)| *r)
    }

    /// Number of etcd keys saved.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .keys
            .iter()
            .map(|(k, _, v)| k.len() + v.len() + 16)
            .sum::<usize>()
            + self.history.len() * 48
            + 128;
        let mut body = Writer(Vec::with_capacity(size));
        body.u8(match self.store {
            Store::V2 => 2,
            Store::V3 => 3,
        });
        body.u8(u8::from(self.settled));
        body.opt_u64(self.cluster_id);
        body.i64(self.revision);
        match &self.newest_put {
            Some((key, revision)) => {
                body.u8(1);
                body.bytes(key.as_bytes());
                body.i64(*revision);
            }
            None => body.u8(0),
        }
        body.opt_u64(self.horizon.map(|h| h as u64));
        body.u64(self.keys.len() as u64);
        for (key, revision, value) in &self.keys {
            body.bytes(key.as_bytes());
            body.i64(*revision);
            body.bytes(value);
        }
        body.u64(self.history.len() as u64);
        for c in &self.history {
            body.i64(c.revision);
            body.u64(u64::try_from(c.age.as_millis()).unwrap_or(u64::MAX));
            body.u8(family_code(c.family));
            body.bytes(c.key.as_bytes());
        }
        let body = body.0;
        let mut out = Vec::with_capacity(body.len() + 28);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Reads a file's bytes back (see the module docs for what is refused).
    pub fn decode(bytes: &[u8]) -> Result<SavedState, StateFileError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            if !bytes.is_empty() && MAGIC.starts_with(bytes) {
                return Err(StateFileError::Truncated("in the header"));
            }
            return Err(StateFileError::NotAStateFile);
        }
        let mut header = Reader {
            rest: &bytes[MAGIC.len()..],
            short: StateFileError::Truncated("in the header"),
        };
        let version = header.u32()?;
        if version != FORMAT_VERSION {
            return Err(StateFileError::OtherVersion { found: version });
        }
        let len = usize::try_from(header.u64()?)
            .map_err(|_| StateFileError::Truncated("the body is longer than the file"))?;
        let start = MAGIC.len() + 12;
        let end = start
            .checked_add(len)
            .filter(|end| end.checked_add(8).is_some_and(|e| e <= bytes.len()))
            .ok_or(StateFileError::Truncated(
                "the body is longer than the file",
            ))?;
        if end + 8 != bytes.len() {
            return Err(StateFileError::Corrupt);
        }
        let stored = u64::from_le_bytes(bytes[end..end + 8].try_into().expect("8 bytes"));
        if checksum(&bytes[..end]) != stored {
            return Err(StateFileError::Corrupt);
        }
        let mut r = Reader {
            rest: &bytes[start..end],
            short: StateFileError::Malformed("the body ends early"),
        };
        let store = match r.u8()? {
            2 => Store::V2,
            3 => Store::V3,
            _ => return Err(StateFileError::Malformed("unknown store")),
        };
        let settled = r.flag()?;
        let cluster_id = r.opt_u64()?;
        let revision = r.i64()?;
        let newest_put = match r.flag()? {
            true => Some((r.string()?, r.i64()?)),
            false => None,
        };
        let horizon = r.opt_u64()?.map(|h| h as i64);
        let count = r.count()?;
        let mut keys = Vec::with_capacity(count.min(r.rest.len() / 16));
        for _ in 0..count {
            let key = r.string()?;
            let mod_revision = r.i64()?;
            let value = Bytes::copy_from_slice(r.bytes()?);
            keys.push((key, mod_revision, value));
        }
        let count = r.count()?;
        let mut history = Vec::with_capacity(count.min(r.rest.len() / 21));
        for _ in 0..count {
            let revision = r.i64()?;
            let age = Duration::from_millis(r.u64()?);
            let family = family_of(r.u8()?)?;
            let key = r.string()?;
            history.push(SavedChange {
                revision,
                age,
                family,
                key,
            });
        }
        if !r.rest.is_empty() {
            return Err(StateFileError::Malformed("bytes after the body"));
        }
        Ok(SavedState {
            store,
            settled,
            cluster_id,
            revision,
            newest_put,
            horizon,
            keys,
            history,
        })
    }
}

fn family_code(family: Family) -> u8 {
    Family::ALL
        .iter()
        .position(|f| *f == family)
        .expect("every family is in ALL") as u8
}

fn family_of(code: u8) -> Result<Family, StateFileError> {
    Family::ALL
        .get(usize::from(code))
        .copied()
        .ok_or(StateFileError::Malformed("unknown family"))
}

/// FNV-1a, 64 bits, eight bytes a round: catches torn writes and flipped bits (not forgery:
/// whoever can write the file can write a matching sum).
fn checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        h ^= u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        h = h.wrapping_mul(PRIME);
        h ^= h >> 32;
    }
    for &b in chunks.remainder() {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        let len = u32::try_from(b.len()).expect("a value under 4 GiB");
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(b);
    }
}

struct Reader<'a> {
    rest: &'a [u8],
    short: StateFileError,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateFileError> {
        if self.rest.len() < n {
            return Err(self.short.clone());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, StateFileError> {
        Ok(self.take(1)?[0])
    }
    fn flag(&mut self) -> Result<bool, StateFileError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(StateFileError::Malformed("a flag that is neither 0 nor 1")),
        }
    }
    fn u32(&mut self) -> Result<u32, StateFileError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, StateFileError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn i64(&mut self) -> Result<i64, StateFileError> {
        Ok(self.u64()? as i64)
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, StateFileError> {
        match self.flag()? {
            true => Ok(Some(self.u64()?)),
            false => Ok(None),
        }
    }
    fn count(&mut self) -> Result<usize, StateFileError> {
        usize::try_from(self.u64()?).map_err(|_| StateFileError::Malformed("a count too large"))
    }
    fn bytes(&mut self) -> Result<&'a [u8], StateFileError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, StateFileError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| StateFileError::Malformed("a key not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedState {
        SavedState {
            store: Store::V2,
            settled: true,
            cluster_id: Some(0xdead_beef),
            revision: 42,
            newest_put: Some(("/lain/config/vip".into(), 41)),
            horizon: Some(30),
            keys: vec![
                (
                    "/lain/config/vip".into(),
                    41,
                    Bytes::from_static(b"1.2.3.4"),
                ),
                ("/lain/config/domain".into(), 7, Bytes::from_static(b"")),
            ],
            history: vec![SavedChange {
                revision: 41,
                age: Duration::from_millis(1500),
                family: Family::Config,
                key: "vip".into(),
            }],
        }
    }

    #[test]
    fn a_saved_state_reads_back_equal() {
        let s = sample();
        assert_eq!(SavedState::decode(&s.encode()), Ok(s));
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_is_refused_without_a_panic() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(SavedState::decode(&bytes[..len]).is_err(), "{len}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(SavedState::decode(&b).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn another_version_or_no_header_is_named_as_such() {
        let mut bytes = sample().encode();
        bytes[8] = 9;
        assert_eq!(
            SavedState::decode(&bytes),
            Err(StateFileError::OtherVersion { found: 9 })
        );
        assert_eq!(
            SavedState::decode(b"{\"json\": true}"),
            Err(StateFileError::NotAStateFile)
        );
        assert_eq!(
            SavedState::decode(b"LAIN"),
            Err(StateFileError::Truncated("in the header"))
        );
        let mut short = sample().encode();
        short.truncate(40);
        assert!(matches!(
            SavedState::decode(&short),
            Err(StateFileError::Truncated(_))
        ));
    }
}
