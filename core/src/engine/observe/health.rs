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
        let reason = self.etcd.status.reason();
        let (status, code) = self.health_status();
        let body = Health {
            status,
            etcd: self.etcd.status.name(),
            reason,
            revision: self.applied_revision(),
            store: self.served_store().map(|s| s.name()),
        };
        let mut r = Response::text(code, to_bytes(&body));
        r.content_type = "application/json";
        r
    }
}
