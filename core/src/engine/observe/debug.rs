//! `/debug`: the original's fields (spec §2.4.16: connections, goroutines, one status per
//! watcher family) plus the etcd state, the applied revision and every value that failed to
//! decode.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Serialize;

use crate::engine::{Engine, RequestContext};
use crate::json::to_bytes;
use crate::response::Response;
use crate::state::Family;

/// One watcher family's status, as the original's `/debug` showed it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WatcherStatus {
    num_receivers: usize,
    update_time: String,
    last_event: LastEventJson,
    total_keys: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LastEventJson {
    action: i64,
    key: String,
    modified_index: i64,
    data: Vec<DataJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DataJson {
    key: String,
    value: String,
    last_index: i64,
}

#[derive(Serialize)]
struct FailureJson {
    revision: i64,
    error: String,
}

#[derive(Serialize)]
struct EtcdJson<'a> {
    state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    applied_revision: Option<i64>,
    /// What `--etcd-api` asked for (`auto`, `v2`, `v3`).
    api: &'a str,
    /// The store read (`None` until auto-detection chose one).
    store: Option<&'a str>,
    /// Why that store.
    #[serde(skip_serializing_if = "Option::is_none")]
    store_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct DebugJson<'a> {
    connections: usize,
    goroutines: usize,
    watchers: BTreeMap<&'static str, WatcherStatus>,
    version: &'a str,
    etcd: EtcdJson<'a>,
    decode_errors: BTreeMap<&'a str, FailureJson>,
    subscribers: usize,
}

impl Engine {
    pub(in crate::engine) fn debug(&self, ctx: &RequestContext) -> Response {
        // Raw values (secrets, whole pod groups) only for super callers; the fields stay.
        let show_values = self.authorizer().is_super(&crate::auth::host_of(ctx.peer));
        let mut receivers: BTreeMap<Family, usize> = BTreeMap::new();
        for (endpoint, n) in self.subs.count_by_endpoint() {
            *receivers.entry(endpoint.family()).or_default() += n;
        }
        let watchers = Family::ALL
            .iter()
            .map(|&family| {
                let receivers = receivers.get(&family).copied().unwrap_or(0);
                let status = self.watcher_status(family, receivers, ctx, show_values);
                (family.debug_name(), status)
            })
            .collect();
        let decode_errors = self
            .mirror
            .failures()
            .map(|(key, f)| {
                let failure = FailureJson {
                    revision: f.revision,
                    error: f.error.to_string(),
                };
                (key, failure)
            })
            .collect();
        let body = DebugJson {
            connections: ctx.connections,
            goroutines: ctx.connections + 2,
            watchers,
            version: &self.config.build_version,
            etcd: EtcdJson {
                state: self.etcd.status.name(),
                reason: self.etcd.status.reason(),
                applied_revision: self.applied_revision(),
                api: self.etcd.api_name(),
                store: self.served_store().map(|s| s.name()),
                store_reason: self.etcd_store().map(|(_, why)| why),
            },
            decode_errors,
            subscribers: self.subs.len(),
        };
        Response::text(200, to_bytes(&body))
    }

    fn watcher_status(
        &self,
        family: Family,
        num_receivers: usize,
        ctx: &RequestContext,
        show_values: bool,
    ) -> WatcherStatus {
        let last = self.mirror.last_event(family);
        let data = last
            .and_then(|(e, _)| e.value.as_ref().map(|v| (e, v)))
            .map(|(e, v)| DataJson {
                key: e.key.clone(),
                // Redacted: an empty value (valid base64, so readers keep working).
                value: match show_values {
                    true => base64::engine::general_purpose::STANDARD.encode(&v[..]),
                    false => String::new(),
                },
                last_index: e.revision,
            });
        WatcherStatus {
            num_receivers,
            update_time: last.map_or_else(|| ZERO_TIME.to_owned(), |(_, at)| wall_time(at, ctx)),
            last_event: LastEventJson {
                action: last.map_or(0, |(e, _)| e.action.code()),
                key: last.map_or_else(String::new, |(e, _)| e.key.clone()),
                modified_index: last.map_or(0, |(e, _)| e.revision),
                data: data.into_iter().collect(),
            },
            total_keys: self.state.len(family),
        }
    }
}

/// The wall-clock time of the monotonic instant `at`, as RFC 3339.
fn wall_time(at: std::time::Instant, ctx: &RequestContext) -> String {
    let wall = ctx
        .wall
        .checked_sub(ctx.now.saturating_duration_since(at))
        .unwrap_or(ctx.wall);
    rfc3339(wall)
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
