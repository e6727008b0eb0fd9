//! The `Lainlet` service: `Version` and `Status` (spec §5, mirroring `/version` and `/debug`).

mod encoding;

use std::collections::BTreeMap;

use lainlet_gojson::push_go_string;
use serde::Deserialize;

use crate::error::MapError;
use crate::json::{null_as_empty, parse, GoInt};
use crate::message::{StatusReply, VersionReply, WatcherStatus};
use encoding::{base64_decode, base64_encode, rfc3339_unix_seconds};

/// The version the original reports (`version.Version`), also lainlet's `/version` body.
pub const VERSION: &str = "2.4.3+git";

/// `<major>.<minor>` of [`VERSION`], the original's `version.APIVersion`.
pub const API_VERSION: &str = "2.4";

/// `Lainlet.Version`: `VersionReply{Version: "2.4.3+git", APIVersion: "2.4"}`.
pub fn version_reply() -> VersionReply {
    VersionReply {
        version: VERSION.to_owned(),
        api_version: API_VERSION.to_owned(),
    }
}

/// One of the original's five API watchers, as `Lainlet.Status` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Watcher {
    /// `/lain/config`.
    Config,
    /// Containers, by node.
    Container,
    /// Pod groups.
    Podgroup,
    /// Dependency portals.
    Depends,
    /// Nodes.
    Nodes,
}

impl Watcher {
    /// Every watcher.
    pub const ALL: [Watcher; 5] = [
        Watcher::Config,
        Watcher::Container,
        Watcher::Podgroup,
        Watcher::Depends,
        Watcher::Nodes,
    ];

    /// The key in `StatusReply.Status`: `configwatcher`, `containerwatcher`,
    /// `podgroupwatcher`, `dependswatcher`, `nodeswatcher`.
    pub fn grpc_name(self) -> &'static str {
        match self {
            Watcher::Config => "configwatcher",
            Watcher::Container => "containerwatcher",
            Watcher::Podgroup => "podgroupwatcher",
            Watcher::Depends => "dependswatcher",
            Watcher::Nodes => "nodeswatcher",
        }
    }

    /// The key in `/debug`'s `watchers` object: `config`, `container`, `podgroup`,
    /// `depends`, `nodes`.
    pub fn debug_name(self) -> &'static str {
        match self {
            Watcher::Config => "config",
            Watcher::Container => "container",
            Watcher::Podgroup => "podgroup",
            Watcher::Depends => "depends",
            Watcher::Nodes => "nodes",
        }
    }

    /// The watcher `/debug` calls `name`.
    pub fn from_debug_name(name: &str) -> Option<Watcher> {
        Watcher::ALL.into_iter().find(|w| w.debug_name() == name)
    }
}

/// A store event as the original's `store.Event` holds it; `WatcherStatus.LastEvent` is its
/// `encoding/json` text (see [`StoreEvent::to_go_json`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreEvent {
    /// `-1` error, `0` get, `1` set, `2` update, `3` delete, `4` init.
    pub action: i64,
    /// The etcd key of the event.
    pub key: String,
    /// The revision of the event.
    pub modified_index: u64,
    /// The key-values of the event; `None` for the zero event of a watcher that has seen
    /// none (Go's nil slice, written `null`), `Some` otherwise (written as an array).
    pub data: Option<Vec<KvPair>>,
}

/// A key-value of a [`StoreEvent`] (the original's `store.KVPair`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvPair {
    /// The etcd key.
    pub key: String,
    /// The raw value (written as base64, as Go writes a `[]byte`).
    pub value: Vec<u8>,
    /// The revision of the last write of the key.
    pub last_index: u64,
}

impl StoreEvent {
    /// The event as Go's `json.Marshal(store.Event)` writes it:
    /// `{"Action":2,"Key":"/lain/…","ModifiedIndex":7,"Data":[{"Key":"/lain/…","Value":"<base64>","LastIndex":7}]}`
    /// (`"Data":null` when `data` is `None`).
    pub fn to_go_json(&self) -> Vec<u8> {
        let mut out = String::with_capacity(64);
        out.push_str(&format!("{{\"Action\":{},\"Key\":", self.action));
        push_go_string(&mut out, &self.key);
        out.push_str(&format!(
            ",\"ModifiedIndex\":{},\"Data\":",
            self.modified_index
        ));
        match &self.data {
            None => out.push_str("null"),
            Some(pairs) => {
                out.push('[');
                for (i, pair) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str("{\"Key\":");
                    push_go_string(&mut out, &pair.key);
                    out.push_str(",\"Value\":");
                    push_go_string(&mut out, &base64_encode(&pair.value));
                    out.push_str(&format!(",\"LastIndex\":{}}}", pair.last_index));
                }
                out.push(']');
            }
        }
        out.push('}');
        out.into_bytes()
    }
}

/// What `Lainlet.Status` reports for one watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherStatusInput {
    /// Which watcher.
    pub watcher: Watcher,
    /// Watch registrations on the watcher's views.
    pub num_receivers: i64,
    /// Unix seconds of the last store event (Go's zero time, `-62135596800`, if none).
    pub update_time: i64,
    /// The last store event.
    pub last_event: StoreEvent,
    /// Keys held by the watcher.
    pub total_keys: i64,
}

/// `Lainlet.Status`: `StatusReply{Goroutines, Status: {name: WatcherStatus}}`, counts
/// truncated to int32 like the original's `int32(...)`.
pub fn status_reply(
    goroutines: i32,
    watchers: impl IntoIterator<Item = WatcherStatusInput>,
) -> StatusReply {
    let status = watchers
        .into_iter()
        .map(|w| {
            let status = WatcherStatus {
                num_receivers: GoInt(w.num_receivers).to_int32(),
                update_time: w.update_time,
                last_event: w.last_event.to_go_json(),
                total_keys: GoInt(w.total_keys).to_int32(),
            };
            (w.watcher.grpc_name().to_owned(), status)
        })
        .collect();
    StatusReply { goroutines, status }
}

/// The [`WatcherStatusInput`]s and goroutine count in lainlet's `/debug` JSON:
/// `{"goroutines": n, "watchers": {"config": S, "container": S, "depends": S, "nodes": S,
/// "podgroup": S}, …}` with S = `{"NumReceivers", "UpdateTime" (RFC 3339), "LastEvent":
/// {"Action", "Key", "ModifiedIndex", "Data": [{"Key", "Value" (base64), "LastIndex"}]},
/// "TotalKeys"}`. Other members and unknown watcher names are ignored.
pub fn watcher_statuses_from_debug(
    debug_json: &[u8],
) -> Result<(i64, Vec<WatcherStatusInput>), MapError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct DebugPair {
        key: String,
        value: String,
        last_index: u64,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct DebugEvent {
        action: GoInt,
        key: String,
        modified_index: u64,
        #[serde(default, deserialize_with = "null_as_empty")]
        data: Vec<DebugPair>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct DebugStatus {
        num_receivers: GoInt,
        update_time: String,
        last_event: DebugEvent,
        total_keys: GoInt,
    }
    #[derive(Deserialize)]
    struct Debug {
        goroutines: GoInt,
        watchers: BTreeMap<String, DebugStatus>,
    }
    const VIEW: &str = "/debug";
    let debug: Debug = parse(VIEW, debug_json)?;
    let mut statuses = Vec::with_capacity(Watcher::ALL.len());
    for (name, s) in debug.watchers {
        let Some(watcher) = Watcher::from_debug_name(&name) else {
            continue;
        };
        let update_time = rfc3339_unix_seconds(&s.update_time).ok_or_else(|| MapError::Value {
            view: VIEW,
            reason: format!(
                "{name}: UpdateTime {:?} is not an RFC 3339 time",
                s.update_time
            ),
        })?;
        let DebugEvent {
            action,
            key,
            modified_index,
            data,
        } = s.last_event;
        let pairs = data
            .into_iter()
            .map(|p| {
                let value = base64_decode(&p.value).ok_or_else(|| MapError::Value {
                    view: VIEW,
                    reason: format!("{name}: LastEvent value of {:?} is not base64", p.key),
                })?;
                Ok(KvPair {
                    key: p.key,
                    value,
                    last_index: p.last_index,
                })
            })
            .collect::<Result<Vec<_>, MapError>>()?;
        // /debug writes `[]` for a watcher without events; the original's zero event had a nil
        // slice, which encoding/json writes as `null`.
        let is_zero_event =
            action.0 == 0 && key.is_empty() && modified_index == 0 && pairs.is_empty();
        statuses.push(WatcherStatusInput {
            watcher,
            num_receivers: s.num_receivers.0,
            update_time,
            last_event: StoreEvent {
                action: action.0,
                key,
                modified_index,
                data: (!is_zero_event).then_some(pairs),
            },
            total_keys: s.total_keys.0,
        });
    }
    Ok((debug.goroutines.0, statuses))
}

/// `Lainlet.Status` from lainlet's `/debug` JSON (see [`watcher_statuses_from_debug`]), with
/// `Goroutines` from its `goroutines` member.
pub fn status_reply_from_debug(debug_json: &[u8]) -> Result<StatusReply, MapError> {
    let (goroutines, watchers) = watcher_statuses_from_debug(debug_json)?;
    Ok(status_reply(GoInt(goroutines).to_int32(), watchers))
}
