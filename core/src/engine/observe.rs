//! `/healthz`, `/metrics` and `/debug`: what the engine knows about itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Serialize;

use super::{Engine, RequestContext, Response};
use crate::input::EtcdStatus;
use crate::json::to_bytes;
use crate::request::Endpoint;
use crate::state::Family;
use crate::views::family_of;

/// Engine-level counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub snapshots: u64,
    pub event_batches: u64,
    pub requests: u64,
    pub etcd_disconnects: u64,
    pub ready_at: Option<Instant>,
}

impl Engine {
    fn etcd_state_name(&self) -> &'static str {
        match self.etcd {
            EtcdStatus::Watching => "watching",
            EtcdStatus::Disconnected { .. } => "disconnected",
            EtcdStatus::Demo => "demo",
        }
    }

    pub(super) fn healthz(&self) -> Response {
        #[derive(Serialize)]
        struct Health<'a> {
            status: &'a str,
            etcd: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            reason: Option<&'a str>,
            revision: Option<i64>,
        }
        let reason = match &self.etcd {
            EtcdStatus::Disconnected { reason } => Some(reason.as_str()),
            _ => None,
        };
        let (status, code) = match (self.is_ready(), reason) {
            (false, _) => ("starting", 503),
            (true, Some(_)) => ("stale", 200),
            (true, None) => ("ok", 200),
        };
        let body = Health {
            status,
            etcd: self.etcd_state_name(),
            reason,
            revision: self.applied_revision(),
        };
        let mut r = Response::text(code, to_bytes(&body));
        r.content_type = "application/json";
        r
    }

    pub(super) fn metrics(&self) -> Response {
        let mut m = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(m, "{name}{labels} {value}");
            }
        };
        let one = |v: f64| vec![(String::new(), v)];
        metric(
            "lainlet_build_info",
            "gauge",
            "Build version of this lainlet.",
            &[(
                format!("{{version=\"{}\"}}", self.config.build_version),
                1.0,
            )],
        );
        metric(
            "lainlet_ready",
            "gauge",
            "1 once the first etcd snapshot is applied.",
            &one(f64::from(u8::from(self.is_ready()))),
        );
        let watching = ["watching", "disconnected", "demo"]
            .into_iter()
            .map(|s| {
                (
                    format!("{{state=\"{s}\"}}"),
                    f64::from(u8::from(self.etcd_state_name() == s)),
                )
            })
            .collect::<Vec<_>>();
        metric(
            "lainlet_etcd_watch_state",
            "gauge",
            "State of the single etcd watch.",
            &watching,
        );
        metric(
            "lainlet_etcd_disconnects_total",
            "counter",
            "Times the etcd connection or watch was lost.",
            &one(self.counters.etcd_disconnects as f64),
        );
        metric(
            "lainlet_applied_revision",
            "gauge",
            "etcd revision of the served state.",
            &one(self.applied_revision().unwrap_or(0) as f64),
        );
        metric(
            "lainlet_snapshots_total",
            "counter",
            "etcd snapshots applied (initial load and resyncs).",
            &one(self.counters.snapshots as f64),
        );
        metric(
            "lainlet_event_batches_total",
            "counter",
            "etcd watch responses applied.",
            &one(self.counters.event_batches as f64),
        );
        metric(
            "lainlet_decode_errors_total",
            "counter",
            "etcd values that failed to decode.",
            &one(self.mirror.decode_failures_total as f64),
        );
        metric(
            "lainlet_undecodable_keys",
            "gauge",
            "Keys whose current value does not decode.",
            &one(self.mirror.failures.len() as f64),
        );
        let keys = Family::ALL
            .iter()
            .map(|f| {
                (
                    format!("{{family=\"{}\"}}", f.debug_name()),
                    self.state.len(*f) as f64,
                )
            })
            .collect::<Vec<_>>();
        metric(
            "lainlet_cache_keys",
            "gauge",
            "Cache keys held per family.",
            &keys,
        );
        metric(
            "lainlet_requests_total",
            "counter",
            "HTTP requests answered by the engine.",
            &one(self.counters.requests as f64),
        );
        let mut per_endpoint: BTreeMap<&str, usize> =
            Endpoint::ALL.iter().map(|e| (e.path(), 0)).collect();
        for view in self.subs.views().flatten() {
            *per_endpoint.entry(view.endpoint.path()).or_default() += 1;
        }
        let subs = per_endpoint
            .into_iter()
            .map(|(p, n)| (format!("{{endpoint=\"{p}\"}}"), n as f64))
            .collect::<Vec<_>>();
        metric(
            "lainlet_subscribers",
            "gauge",
            "Open watch connections per endpoint.",
            &subs,
        );
        metric(
            "lainlet_views",
            "gauge",
            "Distinct views held (watched or cached).",
            &one(self.views.len() as f64),
        );
        metric(
            "lainlet_renders_total",
            "counter",
            "View renderings.",
            &one(self.views.renders_total as f64),
        );
        let d = self.subs.stats;
        metric(
            "lainlet_frames_out_total",
            "counter",
            "SSE frames handed to connections.",
            &one(d.frames as f64),
        );
        metric(
            "lainlet_bytes_out_total",
            "counter",
            "Bytes of SSE frames handed to connections.",
            &one(d.bytes as f64),
        );
        metric(
            "lainlet_conflated_frames_total",
            "counter",
            "Frames replaced by newer state before a slow connection took them.",
            &one(d.conflated as f64),
        );
        metric(
            "lainlet_heartbeats_total",
            "counter",
            "Heartbeat frames handed to connections.",
            &one(d.heartbeats as f64),
        );
        let mut r = Response::text(200, m);
        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
        r
    }

    pub(super) fn debug(&self, ctx: &RequestContext) -> Response {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Data {
            key: String,
            value: String,
            last_index: i64,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct LastEvent {
            action: i64,
            key: String,
            modified_index: i64,
            data: Vec<Data>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Status {
            num_receivers: usize,
            update_time: String,
            last_event: LastEvent,
            total_keys: usize,
        }
        #[derive(Serialize)]
        struct Failure<'a> {
            revision: i64,
            error: String,
            #[serde(skip)]
            _key: &'a str,
        }
        #[derive(Serialize)]
        struct Etcd<'a> {
            state: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            reason: Option<&'a str>,
            applied_revision: Option<i64>,
        }
        #[derive(Serialize)]
        struct Debug<'a> {
            connections: usize,
            goroutines: usize,
            watchers: BTreeMap<&'static str, Status>,
            version: &'a str,
            etcd: Etcd<'a>,
            decode_errors: BTreeMap<&'a str, Failure<'a>>,
            subscribers: usize,
        }
        let mut receivers: BTreeMap<Family, usize> = BTreeMap::new();
        for view in self.subs.views().flatten() {
            *receivers.entry(family_of(view.endpoint)).or_default() += 1;
        }
        let watchers = Family::ALL
            .iter()
            .map(|family| {
                let last = self.mirror.last_events.get(family);
                let status = Status {
                    num_receivers: receivers.get(family).copied().unwrap_or(0),
                    update_time: last
                        .map_or_else(|| ZERO_TIME.to_owned(), |_| self.update_time(*family, ctx)),
                    last_event: LastEvent {
                        action: last.map_or(0, |e| e.action),
                        key: last.map_or_else(String::new, |e| e.key.clone()),
                        modified_index: last.map_or(0, |e| e.revision),
                        data: last
                            .and_then(|e| e.value.as_ref().map(|v| (e, v.as_slice())))
                            .map(|(e, v)| Data {
                                key: e.key.clone(),
                                value: base64::engine::general_purpose::STANDARD.encode(v),
                                last_index: e.revision,
                            })
                            .into_iter()
                            .collect(),
                    },
                    total_keys: self.state.len(*family),
                };
                (family.debug_name(), status)
            })
            .collect();
        let decode_errors = self
            .mirror
            .failures
            .iter()
            .map(|(k, f)| {
                (
                    k.as_str(),
                    Failure {
                        revision: f.revision,
                        error: f.error.to_string(),
                        _key: k,
                    },
                )
            })
            .collect();
        let body = Debug {
            connections: ctx.connections,
            goroutines: ctx.connections + 2,
            watchers,
            version: &self.config.build_version,
            etcd: Etcd {
                state: self.etcd_state_name(),
                reason: match &self.etcd {
                    EtcdStatus::Disconnected { reason } => Some(reason),
                    _ => None,
                },
                applied_revision: self.applied_revision(),
            },
            decode_errors,
            subscribers: self.subs.len(),
        };
        Response::text(200, to_bytes(&body))
    }

    fn update_time(&self, family: Family, ctx: &RequestContext) -> String {
        let at = self
            .mirror
            .last_event_at
            .get(&family)
            .copied()
            .unwrap_or(ctx.now);
        let wall = ctx
            .wall
            .checked_sub(ctx.now.saturating_duration_since(at))
            .unwrap_or(ctx.wall);
        rfc3339(wall)
    }
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Formats a wall-clock time as RFC 3339 in UTC with whole seconds.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn wall_times_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_523_330_400);
        assert_eq!(rfc3339(t), "2018-04-10T03:20:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
