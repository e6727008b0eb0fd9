//! The fleet (opt-in, `--announce`): every lainlet keeps one key alive under
//! [`FLEET_PREFIX`]`<hostname>` — a v3 lease kept alive, or a v2 TTL refreshed in place — whose
//! value ([`Announcement`]) says what it runs and which revision it has applied. Every lainlet
//! reads those keys with its one watch (they are not part of any v2 view), and `GET /fleet`
//! lists the live ones; with `?revision=R` it says which have applied R (a deploy tool waits
//! for `"complete":true`).
//!
//! * [`announcer`] — when to write what (a pure heartbeat state machine, driven by
//!   [`crate::Engine::poll_fleet`]);
//! * [`FleetTable`] — the announcements read from etcd, and the `/fleet` rendering.
//!
//! **No write in reaction to an event.** Announcements are writes every lainlet sees; a
//! lainlet writes only when its heartbeat is due, and then a new value only if what it
//! reports changed *other than by the fleet's own writes*: the revision it reports moves only
//! with changes of the state the v2 views serve ([`FleetTable::relevant_revision`]), so the
//! fleet's writes never make anyone write again.

pub mod announcer;
pub mod wire;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::json::to_bytes;

/// The etcd prefix of the fleet's keys: `/lain/lainlet/nodes/<hostname>`.
pub const FLEET_PREFIX: &str = "/lain/lainlet/nodes/";

/// How long the status page keeps showing a lainlet whose key went away (greyed).
pub const GONE_SHOWN_FOR: Duration = Duration::from_secs(600);

/// The value of a fleet key: what one lainlet says about itself (compact JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The node's host name (`--hostname`; also the key's last segment).
    pub node: String,
    /// The node's IP (`--ip`).
    pub ip: String,
    /// lainlet's version.
    pub version: String,
    /// Which binary: `lainlet` (tokio) or `lainlet-smol`.
    pub shell: String,
    /// The etcd store it reads: `v2` or `v3`.
    pub store: String,
    /// The etcd revision (v2: index) it had applied when it wrote this value.
    pub revision: i64,
    /// How many revisions it was behind etcd then, as far as it knew.
    pub lag: i64,
    /// Its open watch connections then.
    pub watchers: usize,
    /// When it started, in seconds since the Unix epoch.
    pub started_at: u64,
}

impl Announcement {
    /// The value as written to etcd.
    pub fn encode(&self) -> Vec<u8> {
        to_bytes(self).to_vec()
    }
}

/// One fleet key as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The value, or why it does not decode (it is listed, and never counts as applied).
    pub announcement: Result<Announcement, String>,
    /// The revision of the key's last write.
    pub mod_revision: i64,
    /// The raw value (kept for the state file).
    pub raw: Bytes,
}

/// A member that went away (its key deleted or expired), shown greyed on the status page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoneMember {
    /// Its last good announcement.
    pub announcement: Announcement,
    /// When its key went away.
    pub since: Instant,
}

/// The announcements under [`FLEET_PREFIX`], and what a `?revision=R` question needs to know
/// about this lainlet's own progress.
#[derive(Clone, Debug, Default)]
pub struct FleetTable {
    members: BTreeMap<String, Member>,
    gone: BTreeMap<String, GoneMember>,
    /// The revision this lainlet has applied.
    applied: i64,
    /// The newest revision at which the state the v2 views serve changed (as this lainlet
    /// applied it; a snapshot counts as a change at its revision when it changed anything).
    relevant: i64,
    /// This lainlet's own host name (its own progress is known without its key).
    own_host: String,
}

/// The host name a fleet key names, if it is one (`None` for other keys and for the prefix
/// itself).
pub fn host_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(FLEET_PREFIX).filter(|h| !h.is_empty())
}

/// Whether `key` is the fleet's (at or below `/lain/lainlet/`); such keys are never part of a
/// v2 view.
pub fn is_fleet_key(key: &str) -> bool {
    key.starts_with(FLEET_PREFIX) || key == FLEET_PREFIX.trim_end_matches('/')
}

impl FleetTable {
    /// An empty table for the lainlet running on `own_host`.
    pub fn new(own_host: &str) -> FleetTable {
        FleetTable {
            own_host: own_host.to_owned(),
            ..FleetTable::default()
        }
    }

    /// Sets (or, with `None`, removes) the member `host` at `now`; returns whether the table
    /// changed.
    pub fn set(&mut self, now: Instant, host: &str, value: Option<(Bytes, i64)>) -> bool {
        match value {
            Some((raw, mod_revision)) => {
                if self.members.get(host).is_some_and(|m| m.raw == raw) {
                    if let Some(m) = self.members.get_mut(host) {
                        m.mod_revision = mod_revision;
                    }
                    return false;
                }
                let announcement = serde_json::from_slice::<Announcement>(&raw)
                    .map_err(|e| format!("not a lainlet announcement: {e}"));
                self.gone.remove(host);
                self.members.insert(
                    host.to_owned(),
                    Member {
                        announcement,
                        mod_revision,
                        raw,
                    },
                );
                true
            }
            None => match self.members.remove(host) {
                Some(member) => {
                    if let Ok(announcement) = member.announcement {
                        let since = now;
                        self.gone.insert(
                            host.to_owned(),
                            GoneMember {
                                announcement,
                                since,
                            },
                        );
                    }
                    true
                }
                None => false,
            },
        }
    }

    /// Applies one watch event at `now` (other keys than the fleet's are ignored); returns
    /// whether the table changed.
    pub fn apply_event(&mut self, now: Instant, event: &crate::input::WatchEvent) -> bool {
        use crate::input::WatchEvent;
        match event {
            WatchEvent::Put(kv) => host_of_key(&kv.key).is_some_and(|host| {
                let raw = Bytes::copy_from_slice(&kv.value);
                self.set(now, host, Some((raw, kv.mod_revision)))
            }),
            WatchEvent::Delete { key, .. } => {
                host_of_key(key).is_some_and(|host| self.set(now, host, None))
            }
            WatchEvent::DeleteDir { key, .. } => self.delete_dir(now, key),
        }
    }

    /// Removes every member below the v2 directory `dir` (a directory delete or expiry);
    /// returns whether the table changed.
    pub fn delete_dir(&mut self, now: Instant, dir: &str) -> bool {
        let dir = dir.trim_end_matches('/');
        let below = |key: &str| {
            key.strip_prefix(dir)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        let hosts: Vec<String> = self
            .members
            .keys()
            .filter(|h| below(&format!("{FLEET_PREFIX}{h}")))
            .cloned()
            .collect();
        let mut changed = false;
        for host in hosts {
            changed |= self.set(now, &host, None);
        }
        changed
    }

    /// Replaces the members with those of a snapshot (`(host, raw, mod_revision)`); returns
    /// whether the table changed.
    pub fn replace(&mut self, now: Instant, members: Vec<(String, Bytes, i64)>) -> bool {
        let mut changed = false;
        let keep: std::collections::BTreeSet<&str> =
            members.iter().map(|(h, _, _)| h.as_str()).collect();
        let stale: Vec<String> = self
            .members
            .keys()
            .filter(|h| !keep.contains(h.as_str()))
            .cloned()
            .collect();
        for host in stale {
            changed |= self.set(now, &host, None);
        }
        for (host, raw, revision) in members {
            changed |= self.set(now, &host, Some((raw, revision)));
        }
        changed
    }

    /// Records this lainlet's progress: `applied` now, and whether the state the v2 views
    /// serve changed with it. Returns whether a `?revision=` answer may have changed.
    pub fn handle_progress(&mut self, applied: i64, relevant_change: bool) -> bool {
        let before = (self.applied, self.relevant);
        self.applied = self.applied.max(applied);
        if relevant_change {
            self.relevant = self.relevant.max(applied);
        }
        before != (self.applied, self.relevant)
    }

    /// The newest revision at which the served v2 state changed.
    pub fn relevant_revision(&self) -> i64 {
        self.relevant
    }

    /// Forgets members gone for longer than [`GONE_SHOWN_FOR`].
    pub fn expire_gone(&mut self, now: Instant) {
        self.gone
            .retain(|_, g| now.saturating_duration_since(g.since) < GONE_SHOWN_FOR);
    }

    /// The live members, by host name.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    /// The members that went away recently, by host name.
    pub fn gone(&self) -> &BTreeMap<String, GoneMember> {
        &self.gone
    }

    /// Whether `member` (host `host`) has applied revision `r`: it reported `r` or later, or
    /// it reported at least the newest revision at or below `r` where the served state
    /// changed — which this lainlet knows when it has applied `r` itself and nothing relevant
    /// changed since (the fleet's own writes move revisions without changing any view). This
    /// lainlet's own entry uses its live progress.
    pub fn has_applied(&self, host: &str, member: &Member, r: i64) -> bool {
        let reported = if host == self.own_host {
            self.applied
        } else {
            match &member.announcement {
                Ok(a) => a.revision,
                Err(_) => return false,
            }
        };
        reported >= r || (self.relevant <= r && r <= self.applied && reported >= self.relevant)
    }

    /// The `/fleet` body for the selection key (`*`, or a revision).
    pub fn render(&self, selector: &str) -> Result<Bytes, ApiError> {
        let members: BTreeMap<&str, MemberJson<'_>> = self
            .members
            .iter()
            .map(|(host, m)| (host.as_str(), MemberJson::of(m)))
            .collect();
        if selector == "*" {
            return Ok(to_bytes(&FleetJson {
                members,
                count: self.members.len(),
            }));
        }
        let revision: i64 = selector.parse().map_err(|_| ApiError::InvalidParameter {
            name: "revision",
            value: selector.to_owned(),
        })?;
        let (mut applied, mut pending) = (Vec::new(), Vec::new());
        for (host, member) in &self.members {
            match self.has_applied(host, member, revision) {
                true => applied.push(host.as_str()),
                false => pending.push(host.as_str()),
            }
        }
        Ok(to_bytes(&RevisionJson {
            revision,
            complete: pending.is_empty() && !applied.is_empty(),
            applied,
            pending,
            members,
            count: self.members.len(),
        }))
    }
}

/// The selection key of a `revision` parameter: `*` when absent, else the revision as a
/// canonical decimal (`007` → `7`); not a non-negative integer is a 400.
pub fn revision_selector(value: Option<&str>) -> Result<String, ApiError> {
    match value {
        None | Some("") | Some("*") => Ok("*".to_owned()),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|r| *r >= 0)
            .map(|r| r.to_string())
            .ok_or_else(|| ApiError::InvalidParameter {
                name: "revision",
                value: v.to_owned(),
            }),
    }
}

#[derive(Serialize)]
struct FleetJson<'a> {
    count: usize,
    members: BTreeMap<&'a str, MemberJson<'a>>,
}

#[derive(Serialize)]
struct RevisionJson<'a> {
    revision: i64,
    complete: bool,
    applied: Vec<&'a str>,
    pending: Vec<&'a str>,
    count: usize,
    members: BTreeMap<&'a str, MemberJson<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum MemberJson<'a> {
    Good(&'a Announcement),
    Bad { error: &'a str, mod_revision: i64 },
}

impl<'a> MemberJson<'a> {
    fn of(m: &'a Member) -> MemberJson<'a> {
        match &m.announcement {
            Ok(a) => MemberJson::Good(a),
            Err(e) => MemberJson::Bad {
                error: e,
                mod_revision: m.mod_revision,
            },
        }
    }
}

#[cfg(test)]
mod tests;
