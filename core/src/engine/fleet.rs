//! The fleet inside the engine: the fleet's keys are taken out of what etcd sends (no v2 view
//! ever sees them) into [`crate::fleet::FleetTable`], `/fleet` views are told when the table
//! or this lainlet's progress changed, and the heartbeat ([`Announcer`]) is driven with the
//! engine's facts.
//!
//! ```text
//! loop { match engine.poll_fleet(now) {
//!          Off               → stop
//!          Wait { until }    → sleep until then (or until shutdown)
//!          Write { endpoint, write } → do it → engine.handle_fleet_written(now, result)
//!        } }
//! shutdown: engine.poll_fleet_withdraw() → do it (bounded) → handle_fleet_written
//! ```

use std::time::Instant;

use bytes::Bytes;

use super::mirror::{Change, ChangeKind};
use super::Engine;
use crate::fleet::announcer::{
    AnnounceStats, Announcer, Facts, FleetStep, FleetWrite, FleetWritten,
};
use crate::fleet::{host_of_key, Announcement};
use crate::input::KeyValue;
use crate::state::Family;
use crate::views::RenderContext;

impl Engine {
    /// What the fleet heartbeat should do next (see the module docs); [`FleetStep::Off`]
    /// without `--announce`.
    pub fn poll_fleet(&mut self, now: Instant) -> FleetStep {
        let facts = self.fleet_facts();
        match &mut self.announcer {
            None => FleetStep::Off,
            Some(a) => a.poll(now, facts),
        }
    }

    /// The result of the write [`Engine::poll_fleet`] or [`Engine::poll_fleet_withdraw`]
    /// handed out.
    pub fn handle_fleet_written(&mut self, now: Instant, result: FleetWritten) {
        if let Some(a) = &mut self.announcer {
            a.handle_written(now, result);
        }
    }

    /// At shutdown: the write that removes this lainlet's key, if it holds one.
    pub fn poll_fleet_withdraw(&mut self) -> Option<FleetWrite> {
        self.announcer.as_mut()?.poll_withdraw()
    }

    /// The heartbeat's counters, when `--announce` is on.
    pub fn fleet_stats(&self) -> Option<&AnnounceStats> {
        self.announcer.as_ref().map(Announcer::stats)
    }

    fn fleet_facts(&self) -> Facts {
        let store = self.served_store().zip(self.etcd.endpoint);
        let announcement = match (&self.announcer, self.applied_revision(), store) {
            (Some(a), Some(applied), Some((store, _))) => Some(Announcement {
                node: self.config.hostname.clone(),
                ip: self.config.node_ip.clone(),
                version: self.config.build_version.clone(),
                shell: a.config().shell.clone(),
                store: store.to_string(),
                revision: applied,
                lag: (self.etcd.etcd_revision - applied).max(0),
                watchers: self.subs.len(),
                started_at: a.config().started_at,
            }),
            _ => None,
        };
        Facts {
            store,
            announcement,
            relevant_revision: self.state.fleet.relevant_revision(),
        }
    }

    /// Replaces the fleet table with the fleet's keys in `kvs` (a snapshot or a saved
    /// state); returns whether it changed.
    pub(super) fn replace_fleet(&mut self, now: Instant, kvs: &[KeyValue]) -> bool {
        let members = kvs
            .iter()
            .filter_map(|kv| {
                let host = host_of_key(&kv.key)?;
                Some((
                    host.to_owned(),
                    Bytes::copy_from_slice(&kv.value),
                    kv.mod_revision,
                ))
            })
            .collect();
        self.state.fleet.replace(now, members)
    }

    /// The fleet's keys as the state file saves them.
    pub(super) fn saved_fleet_keys(&self) -> impl Iterator<Item = (String, i64, Bytes)> + '_ {
        self.state.fleet.members().iter().map(|(host, m)| {
            (
                format!("{}{host}", crate::fleet::FLEET_PREFIX),
                m.mod_revision,
                m.raw.clone(),
            )
        })
    }

    /// After a snapshot or events: records this lainlet's progress (`relevant`: whether the
    /// served v2 state changed) and re-renders the `/fleet` views when the table or the
    /// progress changed (their watchers get the new state; unchanged bytes send nothing).
    pub(super) fn after_fleet(&mut self, now: Instant, table_changed: bool, relevant: bool) {
        let applied = self.applied_revision().unwrap_or(0);
        let progressed = self.state.fleet.handle_progress(applied, relevant);
        self.state.fleet.expire_gone(now);
        if !table_changed && !progressed {
            return;
        }
        let change = Change {
            family: Family::Fleet,
            key: String::new(),
            kind: ChangeKind::Put,
        };
        let ctx = RenderContext {
            hostname: &self.config.hostname,
        };
        let updates = self.views.apply(&[change], &self.state, &ctx, applied);
        for update in updates {
            let Some(view) = self.views.get_mut(&update.key) else {
                continue;
            };
            for &sub in &view.subscribers {
                self.subs.deliver(sub, &update.version);
            }
        }
    }
}
