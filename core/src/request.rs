//! Turning an HTTP request line into a route and parameters (spec §2.1, §3.1).

use std::borrow::Cow;

use crate::error::ApiError;
use crate::views::Endpoint;

/// HTTP method, as far as the v2 API distinguishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: like GET, the shell sends no body.
    Head,
    /// Anything else: `404 page not found` on a known path.
    Other,
}

impl Method {
    /// Parses a method name.
    pub fn parse(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            _ => Method::Other,
        }
    }
}

/// How a watch is delivered to its client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Delivery {
    /// Server-Sent-Events frames ([`crate::Engine::poll_frame`]).
    #[default]
    Sse,
    /// The view's JSON each time it changes ([`crate::Engine::poll_update`]), for a shell that
    /// converts it (the gRPC `Watch` calls).
    Raw,
}

/// One HTTP request as the shell received it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The path, without the query string (`/v2/procwatcher/`).
    pub path: &'a str,
    /// The raw query string without `?` (`appname=hello&watch=1`), empty if none.
    pub query: &'a str,
    /// The `Last-Event-ID` header (a resuming SSE client), if any.
    pub last_event_id: Option<&'a str>,
    /// How a watch is delivered.
    pub delivery: Delivery,
}

impl<'a> Request<'a> {
    /// A request for a path that may carry a query string (`/v2/nodes?name=node1`).
    pub fn new(method: Method, path_and_query: &'a str) -> Self {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        Request {
            method,
            path,
            query,
            last_event_id: None,
            delivery: Delivery::Sse,
        }
    }

    /// The same request carrying a `Last-Event-ID` header.
    pub fn with_last_event_id(mut self, id: Option<&'a str>) -> Self {
        self.last_event_id = id;
        self
    }

    /// The same request, delivered as [`Delivery`] if it is a watch.
    pub fn with_delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// Whether [`crate::Engine::handle_request`] answers this request with
    /// [`crate::Reply::Stream`]: a `GET` of a `/v2` view whose `watch` parameter is true, or a
    /// `GET` of the status page's stream (`/status/stream`). A pure
    /// function of the request line, so a shell can choose its transport (e.g. write the exact
    /// SSE head itself, spec §3.2) before it hands the request to the engine.
    pub fn is_watch(&self) -> bool {
        match Route::parse(self.path) {
            _ if self.method != Method::Get => false,
            Some(Route::View(_)) => Query::parse(self.query).watch() == Ok(true),
            Some(Route::StatusStream) => true,
            _ => false,
        }
    }
}

/// Where a path leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// A `/v2` view.
    View(Endpoint),
    /// `/appname`.
    AppName,
    /// `/debug`.
    Debug,
    /// `/version`.
    Version,
    /// `/healthz` (new): 200 once the first snapshot is applied.
    Healthz,
    /// `/metrics` (new): Prometheus text format.
    Metrics,
    /// `/` and `/status` (new): the live status page (HTML), for local callers only.
    Status,
    /// `/status/stream` (new): the status page's SSE stream, for local callers only.
    StatusStream,
}

impl Route {
    /// Routes a path: exact match, one optional trailing slash.
    pub fn parse(path: &str) -> Option<Route> {
        let path = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        if let Some(e) = Endpoint::from_path(path) {
            return Some(Route::View(e));
        }
        match path {
            "/appname" => Some(Route::AppName),
            "/debug" => Some(Route::Debug),
            "/version" => Some(Route::Version),
            "/healthz" => Some(Route::Healthz),
            "/metrics" => Some(Route::Metrics),
            "/" | "/status" => Some(Route::Status),
            "/status/stream" => Some(Route::StatusStream),
            _ => None,
        }
    }
}

/// Decoded query parameters, in order.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a query string like Go's `url.ParseQuery`: `&`-separated, `+` is a space,
    /// percent escapes decoded; a pair with a `;` or a bad escape is skipped.
    pub fn parse(query: &str) -> Query {
        let pairs = query
            .split('&')
            .filter(|part| !part.is_empty() && !part.contains(';'))
            .filter_map(|part| {
                let (k, v) = part.split_once('=').unwrap_or((part, ""));
                Some((unescape(k)?, unescape(v)?))
            })
            .collect();
        Query { pairs }
    }

    /// The first value of `name`; an empty value counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Whether the request asks for a watch stream (spec §3.1). Go's `ParseBool` words plus
    /// `yes`/`no`/`on`/`off` are understood; the original took any other value for "watch", we
    /// refuse it with a clear error instead.
    pub fn watch(&self) -> Result<bool, ApiError> {
        self.flag("watch")
    }

    /// A boolean parameter: absent or empty is `false`; a value that is not a boolean word is
    /// an error.
    pub fn flag(&self, name: &'static str) -> Result<bool, ApiError> {
        let Some(value) = self.get(name) else {
            return Ok(false);
        };
        match value.to_ascii_lowercase().as_str() {
            "1" | "t" | "true" | "y" | "yes" | "on" => Ok(true),
            "0" | "f" | "false" | "n" | "no" | "off" => Ok(false),
            _ => Err(ApiError::InvalidParameter {
                name,
                value: value.to_owned(),
            }),
        }
    }

    /// How a watch stream is to be written (the opt-in `rev`, `diff`, `since` parameters and
    /// the `Last-Event-ID` header; see [`StreamOptions`]).
    pub fn stream_options(&self, last_event_id: Option<&str>) -> Result<StreamOptions, ApiError> {
        let diff = self.flag("diff")?;
        let since = match self.get("since") {
            None => None,
            Some(v) => Some(revision(v).ok_or_else(|| ApiError::InvalidParameter {
                name: "since",
                value: v.to_owned(),
            })?),
        };
        let revisions = self.flag("rev")? || diff || since.is_some();
        let resume = match last_event_id.map(str::trim).filter(|_| revisions) {
            // A browser's EventSource sends the last id it saw, which is newer than the URL's.
            Some(id) => {
                Some(revision(id).ok_or_else(|| ApiError::InvalidLastEventId(id.to_owned()))?)
            }
            None => since,
        };
        Ok(StreamOptions {
            heartbeat: self.heartbeat_secs().map(std::time::Duration::from_secs),
            revisions,
            diff,
            resume,
        })
    }

    /// The heartbeat period in seconds (spec §3.1): a decimal integer with an optional sign;
    /// anything that is not positive disables heartbeats. Capped at one day.
    pub fn heartbeat_secs(&self) -> Option<u64> {
        let v = self.get("heartbeat")?;
        let n: i64 = v.parse().ok()?;
        (n > 0).then(|| (n as u64).min(86_400))
    }
}

/// How a watch stream is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// Heartbeat period (`heartbeat=<secs>`).
    pub heartbeat: Option<std::time::Duration>,
    /// `rev=1` (implied by `diff=1` and `since`): frame ids are etcd revisions, heartbeats and
    /// errors carry no id.
    pub revisions: bool,
    /// `diff=1`: after `init`, one `patch` per change instead of the whole view.
    pub diff: bool,
    /// The revision to resume from (`Last-Event-ID`, else `since`), in revision mode only.
    pub resume: Option<i64>,
}

/// A revision as a client sends it: a decimal number ≥ 0.
fn revision(text: &str) -> Option<i64> {
    let text = text.trim();
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn unescape(s: &str) -> Option<String> {
    if !s.contains(['%', '+']) {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(match String::from_utf8_lossy(&out) {
        Cow::Borrowed(s) => s.to_owned(),
        Cow::Owned(s) => s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_exactly_with_one_optional_trailing_slash() {
        assert_eq!(
            Route::parse("/v2/procwatcher/"),
            Some(Route::View(Endpoint::Proc))
        );
        assert_eq!(
            Route::parse("/v2/procwatcher"),
            Some(Route::View(Endpoint::Proc))
        );
        assert_eq!(Route::parse("/v2/procwatcher//"), None);
        assert_eq!(Route::parse("/v2/apps"), None);
        assert_eq!(Route::parse("/v2/appname"), None);
        assert_eq!(Route::parse("/v2/localspecwatcher"), None);
        assert_eq!(Route::parse("/v2/backupctl"), None);
        assert_eq!(Route::parse("/appname/"), Some(Route::AppName));
        assert_eq!(Route::parse("/"), Some(Route::Status));
        assert_eq!(Route::parse("/status/"), Some(Route::Status));
        assert_eq!(Route::parse("/status/stream"), Some(Route::StatusStream));
        assert_eq!(Route::parse("/index.html"), None);
    }

    #[test]
    fn query_parameters_decode_like_go_and_the_first_value_wins() {
        let q = Query::parse("appname=a%2Fb+c&appname=second&empty=&bad=%zz&semi=1;2&target");
        assert_eq!(q.get("appname"), Some("a/b c"));
        assert_eq!(q.get("empty"), None);
        assert_eq!(q.get("bad"), None);
        assert_eq!(q.get("semi"), None);
        assert_eq!(q.get("target"), None);
    }

    #[test]
    fn watch_values_are_booleans_and_garbage_is_refused() {
        for (v, expected) in [
            ("1", true),
            ("true", true),
            ("TRUE", true),
            ("yes", true),
            ("0", false),
            ("false", false),
            ("False", false),
            ("no", false),
        ] {
            assert_eq!(
                Query::parse(&format!("watch={v}")).watch().unwrap(),
                expected,
                "{v}"
            );
        }
        assert!(!Query::parse("watch=").watch().unwrap());
        assert!(!Query::parse("").watch().unwrap());
        assert!(Query::parse("watch=maybe").watch().is_err());
    }

    #[test]
    fn only_gets_of_views_with_a_true_watch_are_watches() {
        let w = |m, p| Request::new(m, p).is_watch();
        assert!(w(Method::Get, "/v2/procwatcher/?appname=x&watch=1"));
        assert!(w(Method::Get, "/v2/localspecquery?watch=true"));
        assert!(!w(Method::Head, "/v2/procwatcher?watch=1"));
        assert!(!w(Method::Other, "/v2/procwatcher?watch=1"));
        assert!(!w(Method::Get, "/v2/procwatcher?watch=0"));
        assert!(!w(Method::Get, "/v2/procwatcher?watch=maybe"));
        assert!(!w(Method::Get, "/debug?watch=1"));
        assert!(!w(Method::Get, "/v2/nothing?watch=1"));
        assert!(w(Method::Get, "/status/stream"));
        assert!(!w(Method::Head, "/status/stream"));
        assert!(!w(Method::Get, "/status?watch=1"));
    }

    #[test]
    fn stream_options_are_opt_in_and_refuse_garbage() {
        let opts = |q: &str, id: Option<&str>| Query::parse(q).stream_options(id);
        let plain = opts("watch=1", Some("17")).unwrap();
        assert!(!plain.revisions && !plain.diff);
        assert_eq!(
            plain.resume, None,
            "a Last-Event-ID without rev=1 is ignored"
        );
        let rev = opts("watch=1&rev=1", Some(" 17 ")).unwrap();
        assert!(rev.revisions && !rev.diff);
        assert_eq!(rev.resume, Some(17));
        let diff = opts("watch=1&diff=1&since=5", None).unwrap();
        assert!(diff.revisions && diff.diff);
        assert_eq!(diff.resume, Some(5));
        assert_eq!(
            opts("rev=1&since=5", Some("9")).unwrap().resume,
            Some(9),
            "the header is newer than the URL"
        );
        assert!(
            opts("since=3", None).unwrap().revisions,
            "since implies rev=1"
        );
        assert!(opts("rev=2", None).is_err());
        assert!(opts("diff=maybe", None).is_err());
        assert!(opts("since=-1", None).is_err());
        assert!(opts("since=1e3", None).is_err());
        assert!(opts("since=99999999999999999999", None).is_err());
        assert_eq!(
            opts("rev=1", Some("abc")),
            Err(ApiError::InvalidLastEventId("abc".into()))
        );
    }

    #[test]
    fn heartbeat_accepts_positive_integers_only() {
        let hb = |q: &str| Query::parse(q).heartbeat_secs();
        assert_eq!(hb("heartbeat=5"), Some(5));
        assert_eq!(hb("heartbeat=%2B5"), Some(5));
        assert_eq!(
            hb("heartbeat=+5"),
            None,
            "+ is a space in a query, as in Go"
        );
        assert_eq!(hb("heartbeat=0"), None);
        assert_eq!(hb("heartbeat=-3"), None);
        assert_eq!(hb("heartbeat=5s"), None);
        assert_eq!(hb("heartbeat=99999999999999999999"), None);
        assert_eq!(hb("heartbeat=9999999999"), Some(86_400));
    }
}
