//! The engine: the whole service logic behind one `&mut` API (see the crate docs for the run
//! loop and the call-order contract).
//!
//! | part | what it owns |
//! | --- | --- |
//! | [`mirror`] | which etcd keys exist at which revision, the applied revision, bad values |
//! | [`views`] | each distinct (endpoint, selection): its rendering, fragments, watchers |
//! | [`subscribers`] | each watch: its latest-value slot, heartbeats, wake-ups |
//! | [`etcd`] | the etcd connection policy and state |
//! | [`observe`] | `/healthz`, `/metrics`, `/debug` from what each part reports |

mod backfill;
mod checks;
mod diff;
mod drift;
mod etcd;
mod fleet;
mod history;
mod mirror;
mod observe;
mod persist;
mod subscribers;
mod version;
mod views;

pub use backfill::{BackfillOutcome, EtcdWakeup};
pub use checks::{CheckPolicy, DriftOutcome, QuorumOutcome};
pub use diff::apply as apply_patch;
pub use etcd::{EtcdStatus, StoreDecision};
pub use history::HistoryWindow;
pub use mirror::{Action, Change, DecodeFailure};
pub use persist::Restored;
pub use subscribers::{DeliveryStats, Update};
pub use version::{Rendering, ViewVersion};
pub use views::SubscriberId;

use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use crate::auth::{host_of, strip_port, Authorizer};
use crate::error::ApiError;
use crate::etcd::{BackoffPolicy, EtcdApi};
use crate::input::{Snapshot, WatchEvent};
use crate::json::to_bytes;
use crate::request::{Delivery, Method, Query, Request, Route, StreamOptions};
use crate::response::{Reply, Response};
use crate::sse::Frame;
use crate::state::{ClusterState, Family, Source};
use crate::views::{resolve, BodyShape, Endpoint, Members, RenderContext, ViewKey};
use etcd::EtcdLink;
use history::{History, Since};
use mirror::Mirror;
use subscribers::{Mode, Opening, Subscribers};
use views::ViewTable;

/// The version string `/version` returns: the v2 API level of the original lainlet, which
/// clients may compare against.
pub const V2_VERSION: &str = "2.4.3+git";

/// Settings of an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// This node's IP (`-ip`): callers from it are local, and it is the default node of
    /// `/v2/localspecquery`. Empty if not given.
    pub node_ip: String,
    /// This machine's host name (`/v2/rebellion/localprocs`).
    pub hostname: String,
    /// Authorisation on (`false` with `-noauth`).
    pub auth: bool,
    /// How many views nobody watches are kept rendered for GETs.
    pub max_unwatched_views: usize,
    /// The build's own version, shown by `/debug` and `/metrics`.
    pub build_version: String,
    /// How many etcd endpoints the shell can connect to (`-etcd a,b,c`).
    pub etcd_endpoints: usize,
    /// Retry timing after etcd failures.
    pub backoff: BackoffPolicy,
    /// Which etcd store to read (`--etcd-api`; auto-detected by default).
    pub etcd_api: EtcdApi,
    /// How often a provisional store choice is checked again (auto-detection).
    pub store_reprobe: std::time::Duration,
    /// Seeds the back-off jitter (any value; a shell passes something random).
    pub seed: u64,
    /// How much change history is kept for resuming watches.
    pub history: HistoryWindow,
    /// The quorum and drift checks beside the open watch.
    pub checks: CheckPolicy,
    /// When the process started (the status page's uptime, the time until it served); `None`:
    /// the first status request's time.
    pub started: Option<Instant>,
    /// The etcd endpoints as the shell connects to them (the status page names the one in
    /// use); empty in demo mode or when not told.
    pub etcd_urls: Vec<String>,
    /// How often a changed state is handed out for the state file
    /// ([`Engine::poll_state_save`]); `None`: no state file (and raw values are not kept).
    pub state_save_every: Option<std::time::Duration>,
    /// The fleet heartbeat (`--announce`); `None`: this lainlet does not announce itself
    /// (it still reads the fleet's keys and serves `/fleet`).
    pub announce: Option<crate::fleet::announcer::AnnounceConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            node_ip: String::new(),
            hostname: String::new(),
            auth: true,
            max_unwatched_views: 1024,
            build_version: env!("CARGO_PKG_VERSION").to_owned(),
            etcd_endpoints: 1,
            backoff: BackoffPolicy::default(),
            etcd_api: EtcdApi::Auto,
            store_reprobe: std::time::Duration::from_secs(10),
            seed: 1,
            history: HistoryWindow::default(),
            checks: CheckPolicy::default(),
            started: None,
            etcd_urls: Vec::new(),
            state_save_every: None,
            announce: None,
        }
    }
}

/// Facts about the request that only the shell knows.
#[derive(Clone, Copy, Debug)]
pub struct RequestContext {
    /// The TCP peer's address: the caller's identity (spec §2.2).
    pub peer: IpAddr,
    /// Monotonic now.
    pub now: Instant,
    /// Wall-clock now (only `/debug` shows wall-clock times).
    pub wall: SystemTime,
    /// Open HTTP connections, including this one (`/debug`).
    pub connections: usize,
}

/// The sans-IO lainlet engine. See the crate docs for the call-order contract.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    state: ClusterState,
    mirror: Mirror,
    views: ViewTable,
    subs: Subscribers,
    etcd: EtcdLink,
    checks: checks::Checks,
    history: History,
    /// Resumes from before the history, waiting for etcd's listing of that revision.
    backfill: backfill::Backfill,
    /// Whether a pod group was seen whose key is not `<Spec.Namespace>/<Spec.Name>` (then a
    /// resuming diff watch of a view keyed by those cannot name its members: it gets `init`).
    misnamed_pod_group: bool,
    counters: observe::Counters,
    status: observe::StatusState,
    persist: persist::Persist,
    /// The fleet heartbeat, with `--announce`.
    announcer: Option<crate::fleet::announcer::Announcer>,
}

impl Engine {
    /// A new engine with no data: it answers 503 until the first snapshot.
    pub fn new(config: EngineConfig) -> Self {
        let views = ViewTable::new(config.max_unwatched_views);
        let etcd = EtcdLink::new(&config);
        let history = History::new(config.history);
        let mut mirror = Mirror::default();
        if config.state_save_every.is_some() {
            mirror.keep_values();
        }
        let announcer = config
            .announce
            .clone()
            .map(|a| crate::fleet::announcer::Announcer::new(a, &config.hostname));
        let state = ClusterState {
            fleet: crate::fleet::FleetTable::new(&config.hostname),
            ..ClusterState::default()
        };
        Engine {
            config,
            state,
            announcer,
            mirror,
            views,
            subs: Subscribers::default(),
            etcd,
            history,
            backfill: backfill::Backfill::default(),
            misnamed_pod_group: false,
            checks: checks::Checks::default(),
            counters: observe::Counters::default(),
            status: observe::StatusState::default(),
            persist: persist::Persist::default(),
        }
    }

    /// Applies a consistent read of `/lain/`. The first one loads the state; a later one
    /// (after a broken watch or a compaction) is diffed against the mirror, and watchers
    /// receive ordinary updates and deletes for what really changed.
    pub fn handle_snapshot(&mut self, now: Instant, snapshot: Snapshot) {
        let mut changes = Vec::new();
        let first = self.mirror.applied_revision().is_none();
        let fleet_changed = self.replace_fleet(now, &snapshot.kvs);
        self.mirror
            .apply_snapshot(now, &mut self.state, snapshot, &mut changes);
        self.etcd.handle_snapshot();
        self.persist.handle_verified();
        self.counters.snapshots += 1;
        // Known from the first snapshot on, or again after a switch of store cleared it.
        let revision = self.applied_revision().unwrap_or(0);
        self.history.start(revision);
        self.after_changes(now, &changes);
        self.after_fleet(now, fleet_changed, first || !changes.is_empty());
        if first {
            self.counters.ready_at = Some(now);
        }
    }

    /// Applies the events of one etcd watch response (events of one revision belong to one
    /// response). Events at or below the applied revision are ignored.
    pub fn handle_events(&mut self, now: Instant, events: impl IntoIterator<Item = WatchEvent>) {
        let mut changes = Vec::new();
        let before = self.mirror.applied_revision();
        // The fleet's events go to its table as they pass (the mirror ignores their keys).
        let mut fleet = std::mem::take(&mut self.state.fleet);
        let mut fleet_changed = false;
        let events = events.into_iter().inspect(|event| {
            if before.is_some_and(|base| event.revision() > base) {
                fleet_changed |= fleet.apply_event(now, event);
            }
        });
        self.mirror
            .apply_events(now, &mut self.state, events, &mut changes);
        self.state.fleet = fleet;
        if self.mirror.applied_revision() != before {
            self.counters.event_batches += 1;
        }
        self.after_changes(now, &changes);
        self.after_fleet(now, fleet_changed, !changes.is_empty());
    }

    /// Serves `snapshot` as a built-in data set, without etcd (demo mode).
    pub fn handle_demo(&mut self, now: Instant, snapshot: Snapshot) {
        self.handle_snapshot(now, snapshot);
        self.etcd.handle_demo();
    }

    /// Answers one HTTP request.
    pub fn handle_request(&mut self, request: &Request<'_>, ctx: &RequestContext) -> Reply {
        let Some(route) = Route::parse(request.path) else {
            return Reply::Response(Response::text(404, "404 not found"));
        };
        if request.method == Method::Other {
            let mut r = Response::text(404, "404 page not found\n");
            r.nosniff = true;
            return Reply::Response(r);
        }
        self.counters.requests += 1;
        let query = Query::parse(request.query);
        let response = match route {
            Route::Version => Response::text(200, V2_VERSION),
            Route::Healthz => self.healthz(),
            Route::Metrics => self.metrics(),
            Route::Debug => self.debug(ctx),
            Route::AppName => self.app_name(&query, ctx.peer),
            Route::Status => self.status_page(ctx),
            Route::StatusStream => return self.status_stream(request.method, ctx),
            Route::View(endpoint) => return self.view_request(endpoint, request, &query, ctx),
        };
        Reply::Response(response)
    }

    /// The client of a watch went away.
    pub fn handle_disconnect(&mut self, id: SubscriberId) {
        if let Some(view) = self.subs.close(id) {
            self.detach(id, &view);
        }
    }

    /// Time has come (see [`Engine::poll_timeout`]): marks due heartbeats, makes the frames
    /// of status streams whose period came round, and answers resumes that waited too long
    /// for etcd's listing with `init`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_held_resumes(now);
        self.subs.handle_timeout(now);
        self.refresh_status(now);
    }

    /// When [`Engine::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.subs.poll_timeout(), self.held_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A watch that has something to write; drain until `None` after every `handle_*` call
    /// and wake the connection of each.
    pub fn poll_wakeup(&mut self) -> Option<SubscriberId> {
        self.subs.poll_wakeup()
    }

    /// The next frame to write on a watch: the newest pending state (older undelivered states
    /// were conflated into it), else a due heartbeat, else `None`.
    pub fn poll_frame(&mut self, id: SubscriberId) -> Option<Frame> {
        let (frame, closed_view) = self.subs.poll_frame(id)?;
        if let Some(view) = closed_view {
            self.detach(id, &view);
        }
        Some(frame)
    }

    /// The next state for a watch opened with [`Delivery::Raw`]: its first state, then one per
    /// change (the newest; older undelivered ones were conflated), or the error that ended it.
    pub fn poll_update(&mut self, id: SubscriberId) -> Option<Update> {
        let (update, closed_view) = self.subs.poll_update(id)?;
        if let Some(view) = closed_view {
            self.detach(id, &view);
        }
        Some(update)
    }

    /// Whether the first snapshot has been applied.
    pub fn is_ready(&self) -> bool {
        self.mirror.applied_revision().is_some()
    }

    /// The etcd revision the served state reflects.
    pub fn applied_revision(&self) -> Option<i64> {
        self.mirror.applied_revision()
    }

    /// Number of open watch connections.
    pub fn subscriber_count(&self) -> usize {
        self.subs.len()
    }

    /// Delivery counters (frames, bytes, conflations, heartbeats).
    pub fn delivery_stats(&self) -> DeliveryStats {
        self.subs.stats()
    }

    /// Values that currently fail to decode, by etcd key.
    pub fn decode_failures(&self) -> impl Iterator<Item = (&str, &DecodeFailure)> {
        self.mirror.failures()
    }

    fn after_changes(&mut self, now: Instant, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let revision = self.applied_revision().unwrap_or(0);
        self.history.record(now, revision, changes);
        self.misnamed_pod_group |= changes
            .iter()
            .filter(|c| c.family == Family::PodGroup)
            .filter_map(|c| Some((c, self.state.pod_groups.get(&c.key)?)))
            .any(|(c, pg)| c.key.split_once('/') != Some((&pg.namespace, &pg.name)));
        let ctx = RenderContext {
            hostname: &self.config.hostname,
        };
        let updates = self.views.apply(changes, &self.state, &ctx, revision);
        for update in updates {
            let Some(view) = self.views.get_mut(&update.key) else {
                continue;
            };
            for &sub in &view.subscribers {
                self.subs.deliver(sub, &update.version);
            }
        }
    }

    fn view_request(
        &mut self,
        endpoint: Endpoint,
        request: &Request<'_>,
        query: &Query,
        ctx: &RequestContext,
    ) -> Reply {
        let watch = match query.watch() {
            Ok(watch) => watch && request.method == Method::Get,
            Err(e) => return Reply::Response(Response::error(&e)),
        };
        let options = match query.stream_options(request.last_event_id) {
            Ok(o) if watch && o.diff && endpoint.spec().body == BodyShape::Array => {
                return Reply::Response(Response::error(&ApiError::DiffNotSupported(
                    endpoint.path(),
                )))
            }
            Ok(o) => o,
            Err(e) if watch => return Reply::Response(Response::error(&e)),
            Err(_) => StreamOptions::default(),
        };
        let resolved = if !self.is_ready() {
            Err(ApiError::NotReady)
        } else if watch && !endpoint.spec().watchable {
            Err(ApiError::WatchNotSupported)
        } else {
            let host = host_of(ctx.peer);
            resolve(endpoint, query, &host, &self.authorizer())
        };
        if !watch {
            let response = match resolved.and_then(|key| self.rendering(&key)) {
                Ok(json) => Response::text(200, json),
                Err(e) => Response::error(&e),
            };
            return Reply::Response(response);
        }
        let mode = match (request.delivery, options.revisions) {
            (Delivery::Raw, _) => Mode::Raw,
            (Delivery::Sse, true) => Mode::Revisions { diff: options.diff },
            (Delivery::Sse, false) => Mode::Original { base: 0 },
        };
        let key = match resolved {
            Ok(key) => key,
            Err(e) => {
                let opening = Opening::Final(e);
                let applied = self.applied_revision().unwrap_or(0);
                let id = self
                    .subs
                    .open(ctx.now, None, mode, opening, options.heartbeat, applied);
                return Reply::Stream(id);
            }
        };
        Reply::Stream(self.open_watch(ctx.now, key, mode, &options))
    }

    /// Opens a watch of `key`: an `init`, or for a resuming `rev=1` watch whatever the history
    /// says the client is missing. A resume from before the history waits for etcd's
    /// listing of that revision when the store can give one (see [`backfill`]).
    fn open_watch(
        &mut self,
        now: Instant,
        key: ViewKey,
        mode: Mode,
        options: &StreamOptions,
    ) -> SubscriberId {
        let applied = self.applied_revision().unwrap_or(0);
        let resume = options.resume.filter(|_| mode != Mode::Raw);
        let id = self
            .subs
            .open_waiting(now, mode, options.heartbeat, applied);
        match resume {
            Some(r) if !self.history.has_backfill(r) && self.can_backfill(r) => {
                self.hold_resume(now, id, key, mode, r);
            }
            _ => {
                self.start_watch(now, id, key, mode, resume.unwrap_or(-1));
            }
        }
        id
    }

    /// Starts watch `id` on `key`: what the history says a client at revision `resume` is
    /// missing (`-1`: not resuming, an `init`). Returns `false` if the watch is gone.
    fn start_watch(
        &mut self,
        _now: Instant,
        id: SubscriberId,
        key: ViewKey,
        mode: Mode,
        resume: i64,
    ) -> bool {
        let applied = self.applied_revision().unwrap_or(0);
        let since = match resume {
            // The history records v2 changes only: a resumed `/fleet` watch starts afresh.
            _ if key.family() == Family::Fleet => Since::Unknown,
            r if r >= 0 => {
                let exact = self.selects_exactly(&key);
                self.history.since(r, applied, &key, exact)
            }
            _ => Since::Unknown,
        };
        let name_safe =
            !self.misnamed_pod_group || key.endpoint.spec().members == Members::CacheKey;
        let ctx_render = RenderContext {
            hostname: &self.config.hostname,
        };
        let view = self.views.view(&key, &self.state, &ctx_render, applied);
        let current = view.current().clone();
        let mode = match mode {
            Mode::Original { .. } => Mode::Original { base: view.touches },
            other => other,
        };
        if let Err(e) = &current.rendering {
            let opening = Opening::Final(e.clone());
            return self.subs.start(id, None, mode, opening, applied);
        }
        let diff = mode == Mode::Revisions { diff: true };
        let opening = match since {
            Since::Unknown => Opening::Init(current),
            Since::Unchanged => Opening::Quiet(current),
            Since::Changed(_) if !diff => Opening::Update(current),
            Since::Changed(Some(members)) if name_safe => Opening::Patch(members, current),
            Since::Changed(_) => Opening::Init(current),
        };
        let started = self.subs.start(id, Some(key), mode, opening, applied);
        if started {
            view.subscribers.insert(id);
        }
        started
    }

    /// Whether `key`'s selector is a cache key the state holds (an exact hit, spec §2.1).
    fn selects_exactly(&self, key: &ViewKey) -> bool {
        let source = match key.family() {
            Family::Config => Source::Config,
            Family::PodGroup => Source::PodGroup,
            Family::Depends => Source::Depends,
            Family::Nodes => Source::Node,
            Family::Container | Family::Fleet => return false,
        };
        key.selector != "*" && self.state.contains(source, &key.selector)
    }

    fn rendering(&mut self, key: &ViewKey) -> Result<Bytes, ApiError> {
        let ctx = RenderContext {
            hostname: &self.config.hostname,
        };
        let revision = self.applied_revision().unwrap_or(0);
        let view = self.views.view(key, &self.state, &ctx, revision);
        view.current().rendering.clone()
    }

    fn detach(&mut self, id: SubscriberId, view: &ViewKey) {
        if let Some(v) = self.views.get_mut(view) {
            v.subscribers.remove(&id);
        }
    }

    pub(crate) fn authorizer(&self) -> Authorizer<'_> {
        Authorizer {
            state: &self.state,
            node_ip: &self.config.node_ip,
            enabled: self.config.auth,
        }
    }

    fn app_name(&self, query: &Query, peer: IpAddr) -> Response {
        if !self.is_ready() {
            return Response::error(&ApiError::NotReady);
        }
        let caller = host_of(peer);
        let auth = self.authorizer();
        if let Err(e) = auth.require_super(&caller) {
            return Response::error(&e);
        }
        let ip = query.get("ip").map_or(caller.as_str(), strip_port);
        match auth.app_name(ip) {
            Ok(app) => {
                let body = to_bytes(&std::collections::BTreeMap::from([("appname", app)]));
                Response::text(200, body)
            }
            Err(e) => Response::error(&e),
        }
    }
}
