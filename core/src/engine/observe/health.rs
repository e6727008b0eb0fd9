//! `/healthz`: `503` until the first snapshot is applied, then `200` with `ok`, or `stale` while
//! etcd is unreachable (the last known state is being served); `store` names the etcd store
//! read (`v2`, `v3`; absent until auto-detection chose one, and in demo mode).

use serde::Serialize;

use crate::engine::Engine;
use crate::json::to_bytes;
use crate::response::Response;

impl Engine {
    /// `starting` (status 503) until the first snapshot, then `stale` while etcd is unreachable
    /// or `ok` (200): what `/healthz` and the status page say.
    pub(in crate::engine) fn health_status(&self) -> (&'static str, u16) {
        match (self.is_ready(), self.etcd.status.reason()) {
            (false, _) => ("starting", 503),
            (true, Some(_)) => ("stale", 200),
            (true, None) => ("ok", 200),
        }
    }

    /// Why the state served may be stale: etcd's status, and while a state loaded from the
    /// state file is unproven, that too.
    pub(in crate::engine) fn stale_reason(&self) -> Option<String> {
        let reason = self.etcd.status.reason();
        match (reason, self.saved_state_note()) {
            (Some(r), Some(note)) if !r.starts_with("started from the state file") => {
                Some(format!("{r}; {note}"))
            }
            (Some(_), Some(note)) => Some(note),
            (r, _) => r.map(str::to_owned),
        }
    }

    pub(in crate::engine) fn healthz(&self) -> Response {
        #[derive(Serialize)]
        struct Health<'a> {
            status: &'a str,
            etcd: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            reason: Option<&'a str>,
            revision: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            store: Option<&'a str>,
        }
        let reason = self.stale_reason();
        let (status, code) = self.health_status();
        let body = Health {
            status,
            etcd: self.etcd.status.name(),
            reason: reason.as_deref(),
            revision: self.applied_revision(),
            store: self.served_store().map(|s| s.name()),
        };
        let mut r = Response::text(code, to_bytes(&body));
        r.content_type = "application/json";
        r
    }
}
