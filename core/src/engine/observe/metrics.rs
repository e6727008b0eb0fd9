//! `/metrics`: every metric is one row of [`Engine::metric_table`], built from what the parts
//! report, and encoded in the Prometheus text format (0.0.4) by the `prometheus` crate.

use prometheus::core::Collector;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::engine::{Engine, EtcdStatus};
use crate::etcd::Store;
use crate::response::Response;
use crate::state::Family;
use crate::views::Endpoint;

/// Whether a metric only grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A count since start (`_total` is appended to the name).
    Counter,
}

/// Label pairs of one sample.
type Labels = Vec<(&'static str, String)>;

/// One metric: its name, help text, kind, and samples (label pairs → value).
#[derive(Debug)]
struct Metric {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Labels, i64)>,
}

impl Metric {
    fn one(name: &'static str, kind: Kind, help: &'static str, value: impl TryInto<i64>) -> Self {
        Metric::labelled(name, kind, help, [(Vec::new(), value)])
    }

    fn labelled<V: TryInto<i64>>(
        name: &'static str,
        kind: Kind,
        help: &'static str,
        samples: impl IntoIterator<Item = (Labels, V)>,
    ) -> Self {
        let samples = samples
            .into_iter()
            .map(|(labels, v)| (labels, v.try_into().unwrap_or(i64::MAX)))
            .collect();
        Metric {
            name,
            help,
            kind,
            samples,
        }
    }

    /// The metric as a `prometheus` collector holding its samples.
    fn collector(&self) -> Result<Box<dyn Collector>, prometheus::Error> {
        let label_names: Vec<&str> = self
            .samples
            .first()
            .map(|(labels, _)| labels.iter().map(|(k, _)| *k).collect())
            .unwrap_or_default();
        Ok(match self.kind {
            Kind::Gauge => {
                let vec = IntGaugeVec::new(Opts::new(self.name, self.help), &label_names)?;
                for (labels, value) in &self.samples {
                    vec.get_metric_with_label_values(&label_values(labels))?
                        .set(*value);
                }
                Box::new(vec)
            }
            Kind::Counter => {
                let name = format!("{}_total", self.name);
                let vec = IntCounterVec::new(Opts::new(name, self.help), &label_names)?;
                for (labels, value) in &self.samples {
                    vec.get_metric_with_label_values(&label_values(labels))?
                        .inc_by(value.unsigned_abs());
                }
                Box::new(vec)
            }
        })
    }
}

fn label_values(labels: &Labels) -> Vec<&str> {
    labels.iter().map(|(_, v)| v.as_str()).collect()
}

/// The metric table in the text format.
fn encode(table: &[Metric]) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    for metric in table {
        registry.register(metric.collector()?)?;
    }
    let mut text = String::with_capacity(4096);
    TextEncoder::new().encode_utf8(&registry.gather(), &mut text)?;
    Ok(text)
}

impl Engine {
    pub(in crate::engine) fn metrics(&self) -> Response {
        match encode(&self.metric_table()) {
            Ok(text) => {
                let mut r = Response::text(200, text);
                r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                r
            }
            Err(e) => Response::text(
                500,
                format!("lainlet: the metrics could not be encoded: {e}"),
            ),
        }
    }

    fn metric_table(&self) -> Vec<Metric> {
        use Kind::{Counter, Gauge};
        let mirror = self.mirror.stats();
        let views = self.views.stats();
        let delivery = self.subs.stats();
        let history = self.history.stats();
        let applied = self.applied_revision().unwrap_or(0);
        let label = |k: &'static str, v: &str| vec![(k, v.to_owned())];
        let per_endpoint = self.subs.count_by_endpoint();
        vec![
            Metric::labelled(
                "lainlet_build_info",
                Gauge,
                "Build version of this lainlet.",
                [(label("version", &self.config.build_version), 1)],
            ),
            Metric::one(
                "lainlet_ready",
                Gauge,
                "1 once the first etcd snapshot is applied.",
                i64::from(self.is_ready()),
            ),
            Metric::labelled(
                "lainlet_etcd_watch_state",
                Gauge,
                "State of the single etcd watch.",
                EtcdStatus::NAMES
                    .iter()
                    .map(|s| (label("state", s), i64::from(self.etcd.status.name() == *s))),
            ),
            Metric::labelled(
                "lainlet_etcd_store",
                Gauge,
                "The etcd store read (1 for the one in use; all 0 until auto-detection chose).",
                Store::ALL.iter().map(|s| {
                    (
                        label("store", s.name()),
                        i64::from(self.served_store() == Some(*s)),
                    )
                }),
            ),
            Metric::one(
                "lainlet_etcd_store_switches",
                Counter,
                "Times auto-detection switched to the other etcd store.",
                self.etcd.store_switches,
            ),
            Metric::one(
                "lainlet_etcd_history_lost",
                Counter,
                "Watches that started behind etcd's history (v3 compaction, v2 error 401) and \
                 forced a new snapshot.",
                self.etcd.history_lost,
            ),
            Metric::one(
                "lainlet_etcd_history_resets",
                Counter,
                "Times etcd's history was found not to continue the one served (a lower \
                 revision, another cluster ID, or the newest write applied not in etcd: \
                 restored from a backup) and /lain/ was read again.",
                self.etcd.history_resets,
            ),
            Metric::one(
                "lainlet_etcd_foreign_events",
                Counter,
                "Watch events about keys outside /lain/ (ignored).",
                self.etcd.foreign_events,
            ),
            Metric::one(
                "lainlet_etcd_disconnects",
                Counter,
                "Times the etcd connection or watch was lost.",
                self.etcd.disconnects,
            ),
            Metric::one(
                "lainlet_etcd_quorum_check_failures",
                Counter,
                "Quorum checks of a silent etcd watch (a linearizable read) that failed.",
                self.checks.quorum_failures,
            ),
            Metric::one(
                "lainlet_drift_checks",
                Counter,
                "Comparisons of the served state with a listing of etcd's keys.",
                self.checks.drift_checks,
            ),
            Metric::one(
                "lainlet_drift_repairs",
                Counter,
                "Drift checks that found a difference (each repaired by a new snapshot).",
                self.checks.drift_repairs,
            ),
            Metric::one(
                "lainlet_applied_revision",
                Gauge,
                "etcd revision of the served state.",
                applied,
            ),
            Metric::one(
                "lainlet_etcd_revision",
                Gauge,
                "Newest etcd store revision reported by etcd.",
                self.etcd.etcd_revision,
            ),
            Metric::one(
                "lainlet_revision_lag",
                Gauge,
                "Revisions the served state is behind the newest one etcd reported (events \
                 outside /lain/ count until the next progress notification).",
                (self.etcd.etcd_revision - applied).max(0),
            ),
            Metric::one(
                "lainlet_fleet_members",
                Gauge,
                "Live lainlets announced under /lain/lainlet/nodes/ (this one included when it announces).",
                self.state.fleet.members().len(),
            ),
            Metric::labelled(
                "lainlet_fleet_heartbeats",
                Counter,
                "Fleet heartbeat writes by this lainlet (--announce), by kind: put (a new value), refresh (the TTL only), failed (etcd did not do it; retried at the next heartbeat), expired (the key or lease had run out and was put again).",
                {
                    let s = self.fleet_stats().cloned().unwrap_or_default();
                    [
                        (label("kind", "put"), s.puts),
                        (label("kind", "refresh"), s.refreshes),
                        (label("kind", "failed"), s.failures),
                        (label("kind", "expired"), s.expired),
                    ]
                },
            ),
            Metric::one(
                "lainlet_snapshots",
                Counter,
                "etcd snapshots applied (initial load and resyncs).",
                self.counters.snapshots,
            ),
            Metric::one(
                "lainlet_state_file_saves",
                Counter,
                "States written to the state file.",
                self.persist.saves,
            ),
            Metric::one(
                "lainlet_state_file_save_failures",
                Counter,
                "Writes of the state file that failed (full or read-only disk; the service goes on).",
                self.persist.save_failures,
            ),
            Metric::one(
                "lainlet_state_file_load_failures",
                Counter,
                "State files not used at start (unreadable, corrupt, truncated, another version or store).",
                self.persist.load_failures,
            ),
            Metric::one(
                "lainlet_state_file_rejected",
                Counter,
                "States loaded from the state file whose history etcd did not continue (read again).",
                self.persist.rejected,
            ),
            Metric::one(
                "lainlet_state_file_unproven",
                Gauge,
                "1 while the state served was loaded from the state file and is not yet proven against etcd.",
                i64::from(self.saved_state_note().is_some()),
            ),
            Metric::one(
                "lainlet_event_batches",
                Counter,
                "etcd watch responses applied.",
                self.counters.event_batches,
            ),
            Metric::one(
                "lainlet_decode_errors",
                Counter,
                "etcd values that failed to decode.",
                mirror.decode_failures_total,
            ),
            Metric::one(
                "lainlet_undecodable_keys",
                Gauge,
                "Keys whose current value does not decode.",
                mirror.undecodable_keys,
            ),
            Metric::labelled(
                "lainlet_cache_keys",
                Gauge,
                "Cache keys held per family.",
                Family::ALL
                    .iter()
                    .map(|f| (label("family", f.debug_name()), self.state.len(*f))),
            ),
            Metric::one(
                "lainlet_requests",
                Counter,
                "HTTP requests answered by the engine.",
                self.counters.requests,
            ),
            Metric::labelled(
                "lainlet_subscribers",
                Gauge,
                "Open watch connections per endpoint.",
                Endpoint::ALL.iter().map(|e| {
                    let n = per_endpoint.get(e).copied().unwrap_or(0);
                    (label("endpoint", e.path()), n)
                }),
            ),
            Metric::one(
                "lainlet_views",
                Gauge,
                "Distinct views held (watched or cached).",
                views.views,
            ),
            Metric::one(
                "lainlet_renders",
                Counter,
                "View renderings.",
                views.renders_total,
            ),
            Metric::one(
                "lainlet_frames_out",
                Counter,
                "SSE frames handed to connections.",
                delivery.frames,
            ),
            Metric::one(
                "lainlet_bytes_out",
                Counter,
                "Bytes of SSE frames handed to connections.",
                delivery.bytes,
            ),
            Metric::one(
                "lainlet_conflated_frames",
                Counter,
                "Frames replaced by newer state before a slow connection took them.",
                delivery.conflated,
            ),
            Metric::one(
                "lainlet_history_entries",
                Gauge,
                "Changes kept for resuming watches (rev=1 with Last-Event-ID or since).",
                history.entries,
            ),
            Metric::one(
                "lainlet_history_oldest_revision",
                Gauge,
                "The oldest revision lainlet's own history answers resumes from (v3: older ones wait for a listing from etcd).",
                history.horizon,
            ),
            Metric::one(
                "lainlet_resume_listings",
                Counter,
                "etcd listings read for watches resuming from before the history (v3).",
                self.backfill.listings,
            ),
            Metric::one(
                "lainlet_resumes_waiting",
                Gauge,
                "Watches resuming from before the history that wait for etcd's listing.",
                self.backfill.waiting(),
            ),
            Metric::one(
                "lainlet_heartbeats",
                Counter,
                "Heartbeat frames handed to connections.",
                delivery.heartbeats,
            ),
        ]
    }
}
