//! The live status page (`/` and `/status`) and its stream (`/status/stream`), for local
//! callers only (loopback or this node's `-ip`): the page shows cluster data.
//!
//! The page is one self-contained HTML file compiled into the binary (`status.html`: inline
//! CSS and JS, no external scripts, fonts or requests; its `Content-Security-Policy` forbids
//! any). It opens `/status/stream`, an SSE stream made by the engine like every other watch: a
//! subscriber in [`Mode::Status`] whose heartbeat deadline is its period ([`PERIOD`]). When
//! the deadline comes round, [`Engine::handle_timeout`] renders the status JSON once
//! ([`Engine::refresh_status`]) and puts it into the slot of every status stream that is due
//! (a page that reads slowly gets the newest status, never a queue). The shells serve it with
//! their ordinary watch loop. Rates (frames/s, bytes/s, conflations) are computed in the page
//! from the counters of consecutive frames, so the engine keeps no samples.
//!
//! Time: the uptime is `now − EngineConfig::started` (or the first status request's `now`);
//! ages (a decode failure's "since") are durations, which the page turns into dates with the
//! browser's clock. The engine reads no clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::auth::host_of;
use crate::engine::subscribers::{Mode, Opening};
use crate::engine::{Engine, EtcdStatus, RequestContext, V2_VERSION};
use crate::json::to_bytes;
use crate::request::Method;
use crate::response::{Reply, Response};
use crate::sse::{frame_body, EventName};
use crate::state::Family;

/// How often a status stream gets a frame.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Most (endpoint, selection) rows a status frame lists; the rest are counted.
const MAX_VIEW_ROWS: usize = 500;

/// Most decode failures a status frame lists; the rest are counted.
const MAX_FAILURE_ROWS: usize = 500;

/// The page itself.
const PAGE: &str = include_str!("status.html");

/// The page's headers: nothing may be loaded from anywhere but lainlet itself.
const PAGE_HEADERS: &[(&str, &str)] = &[
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
    ),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
];

/// The answer to a caller that is not local.
const FORBIDDEN: &str = "403 forbidden: the status page shows cluster data and is served to \
                         local callers only (loopback or this node's -ip)\n";

/// What the status part of the engine keeps.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatusState {
    /// The first `now` a status request brought, the uptime's origin when the shell gave no
    /// start time.
    first_seen: Option<Instant>,
}

#[derive(Serialize)]
struct StatusJson<'a> {
    version: &'a str,
    api_version: &'static str,
    /// `etcd` or `demo`.
    mode: &'static str,
    /// As `/healthz`: `starting`, `ok` or `stale`.
    health: &'static str,
    node_ip: &'a str,
    hostname: &'a str,
    auth: bool,
    uptime_ms: u64,
    ready_after_ms: Option<u64>,
    etcd: EtcdJson<'a>,
    snapshots: u64,
    resyncs: u64,
    event_batches: u64,
    requests: u64,
    keys: BTreeMap<&'static str, usize>,
    decode_failures: Vec<FailureJson<'a>>,
    decode_failures_more: usize,
    decode_failures_total: u64,
    watchers: WatchersJson<'a>,
    delivery: DeliveryJson,
    views: usize,
    renders: u64,
    fleet: FleetStatusJson<'a>,
}

/// The fleet table of the status page.
#[derive(Serialize)]
struct FleetStatusJson<'a> {
    /// Whether this lainlet announces itself (`--announce`), and its heartbeat counters.
    announcing: bool,
    heartbeats: Option<&'a crate::fleet::announcer::AnnounceStats>,
    /// Live members first (by host name), then the ones gone in the last 10 minutes.
    members: Vec<FleetRow<'a>>,
}

#[derive(Serialize)]
struct FleetRow<'a> {
    host: &'a str,
    alive: bool,
    /// The member's announcement (`None`: its value does not decode, see `error`).
    announcement: Option<&'a crate::fleet::Announcement>,
    error: Option<&'a str>,
    /// For a gone member: how long ago its key went away.
    gone_ms: Option<u64>,
}

#[derive(Serialize)]
struct EtcdJson<'a> {
    /// `v2` or `v3` (`None` in demo mode, or until auto-detection chose).
    store: Option<&'static str>,
    /// Why that store (`--etcd-api`, or the detection rule's reason).
    store_reason: Option<&'a str>,
    state: &'static str,
    reason: Option<&'a str>,
    endpoints: &'a [String],
    endpoint: Option<&'a str>,
    disconnects: u64,
    applied_revision: Option<i64>,
    etcd_revision: i64,
    lag: i64,
}

#[derive(Serialize)]
struct FailureJson<'a> {
    key: &'a str,
    error: String,
    revision: i64,
    age_ms: u64,
}

#[derive(Serialize)]
struct WatchersJson<'a> {
    total: usize,
    status_pages: usize,
    by_endpoint: BTreeMap<&'static str, usize>,
    views: Vec<ViewRow<'a>>,
    views_more: usize,
}

#[derive(Serialize)]
struct ViewRow<'a> {
    endpoint: &'static str,
    selection: &'a str,
    watchers: usize,
}

#[derive(Serialize)]
struct DeliveryJson {
    frames: u64,
    bytes: u64,
    conflated: u64,
    heartbeats: u64,
}

impl Engine {
    /// How long after the start ([`crate::EngineConfig::started`]) the first snapshot was
    /// applied (`None` before it, or without a start time).
    pub fn ready_after(&self) -> Option<Duration> {
        let started = self.config.started?;
        Some(self.counters.ready_at?.saturating_duration_since(started))
    }

    /// The status JSON at `now` (what each frame of `/status/stream` carries).
    pub fn status_json(&mut self, now: Instant) -> Bytes {
        let origin = match self.config.started {
            Some(started) => started,
            None => *self.status.first_seen.get_or_insert(now),
        };
        let age = |at: Instant| millis(now.saturating_duration_since(at));
        let stale_reason = self.stale_reason();
        let applied = self.applied_revision();
        let etcd = &self.etcd;
        let demo = etcd.status == EtcdStatus::Demo;
        let (health, _) = self.health_status();
        let mut failures = self.mirror.failures();
        let decode_failures: Vec<FailureJson> = failures
            .by_ref()
            .take(MAX_FAILURE_ROWS)
            .map(|(key, f)| FailureJson {
                key,
                error: f.error.to_string(),
                revision: f.revision,
                age_ms: age(f.since),
            })
            .collect();
        let decode_failures_more = failures.count();
        let per_view = self.subs.count_by_view();
        let total = per_view.values().sum();
        let views_more = per_view.len().saturating_sub(MAX_VIEW_ROWS);
        let views = per_view
            .iter()
            .take(MAX_VIEW_ROWS)
            .map(|(key, &watchers)| ViewRow {
                endpoint: key.endpoint.path(),
                selection: &key.selector,
                watchers,
            })
            .collect();
        let by_endpoint = self
            .subs
            .count_by_endpoint()
            .into_iter()
            .map(|(e, n)| (e.path(), n))
            .collect();
        let delivery = self.subs.stats();
        let mirror = self.mirror.stats();
        let view_stats = self.views.stats();
        let body = StatusJson {
            version: &self.config.build_version,
            api_version: V2_VERSION,
            mode: if demo { "demo" } else { "etcd" },
            health,
            node_ip: &self.config.node_ip,
            hostname: &self.config.hostname,
            auth: self.config.auth,
            uptime_ms: age(origin),
            ready_after_ms: self
                .counters
                .ready_at
                .map(|at| millis(at.saturating_duration_since(origin.min(at)))),
            etcd: EtcdJson {
                store: self.served_store().map(|s| s.name()),
                store_reason: self
                    .etcd_store()
                    .map(|(_, why)| why)
                    .filter(|why| !demo && !why.is_empty()),
                state: etcd.status.name(),
                reason: stale_reason.as_deref(),
                endpoints: &self.config.etcd_urls,
                endpoint: etcd
                    .endpoint
                    .filter(|_| !demo)
                    .and_then(|i| self.config.etcd_urls.get(i))
                    .map(String::as_str),
                disconnects: etcd.disconnects,
                applied_revision: applied,
                etcd_revision: etcd.etcd_revision,
                lag: (etcd.etcd_revision - applied.unwrap_or(0)).max(0),
            },
            snapshots: self.counters.snapshots,
            resyncs: self.counters.snapshots.saturating_sub(1),
            event_batches: self.counters.event_batches,
            requests: self.counters.requests,
            keys: Family::ALL
                .iter()
                .map(|f| (f.debug_name(), self.state.len(*f)))
                .collect(),
            decode_failures,
            decode_failures_more,
            decode_failures_total: mirror.decode_failures_total,
            watchers: WatchersJson {
                total,
                status_pages: self.subs.status_count(),
                by_endpoint,
                views,
                views_more,
            },
            delivery: DeliveryJson {
                frames: delivery.frames,
                bytes: delivery.bytes,
                conflated: delivery.conflated,
                heartbeats: delivery.heartbeats,
            },
            views: view_stats.views,
            renders: view_stats.renders_total,
            fleet: self.fleet_status(now),
        };
        to_bytes(&body)
    }

    /// `/` and `/status`: the page, for local callers (the shell omits the body for `HEAD`).
    pub(in crate::engine) fn status_page(&self, ctx: &RequestContext) -> Response {
        if !self.is_local_caller(ctx) {
            return forbidden();
        }
        Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            nosniff: false,
            extra_headers: PAGE_HEADERS,
            body: Bytes::from_static(PAGE.as_bytes()),
        }
    }

    /// `/status/stream`: a status stream for a local `GET` (its first frame at once, then one
    /// every [`PERIOD`]); a `HEAD` gets the stream's content type and no body.
    pub(in crate::engine) fn status_stream(
        &mut self,
        method: Method,
        ctx: &RequestContext,
    ) -> Reply {
        if !self.is_local_caller(ctx) {
            return Reply::Response(forbidden());
        }
        if method != Method::Get {
            let mut r = Response::text(200, "");
            r.content_type = "text/event-stream";
            return Reply::Response(r);
        }
        let applied = self.applied_revision().unwrap_or(0);
        let opening = Opening::Status(Bytes::new());
        let id = self
            .subs
            .open(ctx.now, None, Mode::Status, opening, Some(PERIOD), applied);
        // Made after opening, so that it counts this page.
        let body = frame_body(EventName::Status, &self.status_json(ctx.now));
        self.subs.deliver_status(id, &body);
        Reply::Stream(id)
    }

    /// Gives every status stream whose period came round the status at `now` (rendered once).
    pub(in crate::engine) fn refresh_status(&mut self, now: Instant) {
        let due = self.subs.take_status_due();
        if due.is_empty() {
            return;
        }
        let body = frame_body(EventName::Status, &self.status_json(now));
        for id in due {
            self.subs.deliver_status(id, &body);
        }
    }

    fn is_local_caller(&self, ctx: &RequestContext) -> bool {
        self.authorizer().is_local(&host_of(ctx.peer))
    }
}

fn forbidden() -> Response {
    let mut r = Response::text(403, FORBIDDEN);
    r.extra_headers = &[("Cache-Control", "no-store")];
    r
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Engine {
    fn fleet_status(&self, now: Instant) -> FleetStatusJson<'_> {
        let fleet = &self.state.fleet;
        let alive = fleet.members().iter().map(|(host, m)| FleetRow {
            host,
            alive: true,
            announcement: m.announcement.as_ref().ok(),
            error: m.announcement.as_ref().err().map(String::as_str),
            gone_ms: None,
        });
        let gone = fleet.gone().iter().map(|(host, g)| FleetRow {
            host,
            alive: false,
            announcement: Some(&g.announcement),
            error: None,
            gone_ms: Some(millis(now.saturating_duration_since(g.since))),
        });
        FleetStatusJson {
            announcing: self.fleet_stats().is_some(),
            heartbeats: self.fleet_stats(),
            members: alive.chain(gone).collect(),
        }
    }
}
