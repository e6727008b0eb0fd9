//! etcd through its v3 JSON gateway (grpc-gateway), the etcd client of the smol shell.
//!
//! * snapshot: `POST /v3/kv/range` for `[/lain/, /lain0)`, keys and values base64, int64s as
//!   JSON strings, empty fields omitted (a `PUT` event has no `type`, an empty value no
//!   `value`);
//! * watch: one streaming `POST /v3/watch` whose body creates the prefix watch from the start
//!   revision. The response is chunked: one JSON object per line, `{"result": WatchResponse}`
//!   or `{"error": …}`. etcd's gateway answers only once the request body is complete, so it
//!   cannot carry later requests (`progress_request`); instead, after [`PROBE_AFTER`] without a
//!   message, a small serializable range on a second connection must answer within
//!   [`PROBE_TIMEOUT`], or the watch counts as broken (what the gRPC shell's keep-alive pings
//!   detect: a member that stopped answering while its sockets stay open);
//! * authentication: `POST /v3/auth/authenticate` for a token sent as `Authorization`.
//!
//! What the messages mean (revisions, compaction, cancel) is decided by the core
//! ([`lainlet_core::EtcdSync::handle_watch_response`]); order and back-off by the common
//! driver.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use async_io::Timer;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use lainlet_core::{Snapshot, WatchEvent, WatchResponse};
use lainlet_shell_common::etcd::{key_value, EtcdClient, EtcdWatch, PREFIX};
use lainlet_shell_common::sync::{first, Either};
use serde_json::{json, Value};

use crate::http_client::{timeout, Chunks, Conn, Framing};

/// Time limit of a call that should answer promptly (connect, range, watch creation).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of the TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Silence on the watch after which etcd is probed.
const PROBE_AFTER: Duration = Duration::from_secs(10);
/// Time etcd has to answer a probe before the watch counts as broken.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway of one endpoint at a time.
pub struct GatewayClient {
    credentials: Option<(String, String)>,
    endpoint: Option<Endpoint>,
}

#[derive(Clone)]
struct Endpoint {
    /// `host:port`, for the `Host` header.
    authority: String,
    addr: SocketAddr,
    token: Option<String>,
}

impl GatewayClient {
    /// A client that authenticates with `credentials` (user, password) if given.
    pub fn new(credentials: Option<(String, String)>) -> GatewayClient {
        GatewayClient {
            credentials,
            endpoint: None,
        }
    }

    fn endpoint(&self) -> anyhow::Result<&Endpoint> {
        self.endpoint
            .as_ref()
            .ok_or_else(|| anyhow!("not connected"))
    }
}

impl Endpoint {
    fn request(&self, path: &str, extra: &str) -> String {
        let auth = match &self.token {
            Some(token) => format!("Authorization: {token}\r\n"),
            None => String::new(),
        };
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}{extra}",
            self.authority
        )
    }

    async fn open(&self) -> io::Result<Conn> {
        timeout(CONNECT_TIMEOUT, "connecting", Conn::connect(self.addr)).await
    }

    /// A request with a JSON body.
    fn with_body(&self, path: &str, body: &Value) -> String {
        let body = body.to_string();
        let mut request = self.request(
            path,
            &format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ),
        );
        request.push_str(&body);
        request
    }

    /// One unary call: `body` in, the JSON answer out (an error for any status but 200).
    async fn call(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call_within(CALL_TIMEOUT, path, body).await
    }

    /// [`Endpoint::call`] with a time limit.
    async fn call_within(
        &self,
        limit: Duration,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let request = self.with_body(path, body);
        let exchange = async {
            let mut conn = self.open().await?;
            conn.send(request.as_bytes()).await?;
            let head = conn.read_head().await?;
            Ok((head.status, conn.read_body(head).await?))
        };
        let (status, answer) = timeout(limit, path, exchange).await?;
        if status != 200 {
            bail!(
                "{path}: HTTP {status}: {}",
                String::from_utf8_lossy(&answer).trim()
            );
        }
        serde_json::from_slice(&answer).with_context(|| format!("{path}: bad JSON"))
    }
}

/// `http://host:port` → (`host:port`, its first address).
fn parse_endpoint(url: &str) -> anyhow::Result<(String, SocketAddr)> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            bail!("{url}: lainlet-smol speaks plain http to etcd, not {scheme} (use lainlet)")
        }
        None => url,
    };
    let authority = rest.trim_end_matches('/').to_owned();
    // Name resolution blocks; endpoints are normally IP addresses, which resolve at once.
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .ok_or_else(|| anyhow!("{authority}: no address"))?;
    Ok((authority, addr))
}

impl EtcdClient for GatewayClient {
    type Watch = GatewayWatch;

    async fn connect(&mut self, url: &str) -> anyhow::Result<()> {
        self.endpoint = None;
        let (authority, addr) = parse_endpoint(url)?;
        let mut endpoint = Endpoint {
            authority,
            addr,
            token: None,
        };
        if let Some((name, password)) = &self.credentials {
            let body = json!({ "name": name, "password": password });
            let answer = endpoint
                .call("/v3/auth/authenticate", &body)
                .await
                .with_context(|| format!("authenticating to {url}"))?;
            let token = answer["token"].as_str().unwrap_or_default();
            endpoint.token = Some(token.to_owned());
        }
        self.endpoint = Some(endpoint);
        Ok(())
    }

    async fn read_snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let body = json!({ "key": B64.encode(PREFIX), "range_end": B64.encode(range_end()) });
        let answer = self.endpoint()?.call("/v3/kv/range", &body).await?;
        let revision = int(&answer["header"]["revision"]);
        if revision == 0 {
            bail!("range response without a header revision");
        }
        let kvs = answer["kvs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|kv| {
                Ok(key_value(
                    &b64(&kv["key"])?,
                    b64(&kv["value"])?,
                    int(&kv["mod_revision"]),
                ))
            })
            .filter_map(Result::transpose)
            .collect::<anyhow::Result<_>>()?;
        Ok(Snapshot { revision, kvs })
    }

    async fn watch(&mut self, start_revision: i64) -> anyhow::Result<GatewayWatch> {
        let endpoint = self.endpoint()?.clone();
        let create = json!({ "create_request": {
            "key": B64.encode(PREFIX),
            "range_end": B64.encode(range_end()),
            "start_revision": start_revision.to_string(),
            "progress_notify": true,
        }});
        let request = endpoint.with_body("/v3/watch", &create);
        let start = async {
            let mut conn = endpoint.open().await?;
            conn.send(request.as_bytes()).await?;
            let head = conn.read_head().await?;
            Ok((conn, head))
        };
        let (mut conn, head) = timeout(CALL_TIMEOUT, "starting the watch", start).await?;
        if head.status != 200 || head.framing != Framing::Chunked {
            let body = timeout(CALL_TIMEOUT, "reading", conn.read_body(head)).await?;
            bail!(
                "starting the watch: HTTP {}: {}",
                head.status,
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(GatewayWatch {
            endpoint,
            conn,
            chunks: Chunks::default(),
            lines: Vec::new(),
            quiet_since: Instant::now(),
        })
    }
}

/// One streaming watch.
pub struct GatewayWatch {
    endpoint: Endpoint,
    conn: Conn,
    chunks: Chunks,
    /// Decoded body bytes not yet parsed (a partial line).
    lines: Vec<u8>,
    quiet_since: Instant,
}

impl EtcdWatch for GatewayWatch {
    async fn next(&mut self) -> anyhow::Result<Option<WatchResponse>> {
        loop {
            if let Some(end) = self.lines.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.lines.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                self.quiet_since = Instant::now();
                let message: Value = serde_json::from_slice(&line).context("watch: bad JSON")?;
                return watch_response(&message).map(Some);
            }
            let read = self.conn.read_chunks(&mut self.chunks, &mut self.lines);
            match first(read, Timer::at(self.quiet_since + PROBE_AFTER)).await {
                Either::Left(more) => {
                    if !more.context("watch")? {
                        return Ok(None);
                    }
                }
                Either::Right(_) => {
                    // Quiet for a while: is etcd still answering?
                    let probe = json!({ "key": B64.encode(PREFIX), "keys_only": true,
                                        "serializable": true });
                    self.endpoint
                        .call_within(PROBE_TIMEOUT, "/v3/kv/range", &probe)
                        .await
                        .context("etcd does not answer (probe while watching)")?;
                    self.quiet_since = Instant::now();
                }
            }
        }
    }
}

/// One message of the watch stream.
fn watch_response(message: &Value) -> anyhow::Result<WatchResponse> {
    let Some(result) = message.get("result") else {
        bail!("watch: {}", message.get("error").unwrap_or(message));
    };
    let raw_events = result["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut events = Vec::with_capacity(raw_events.len());
    for event in raw_events {
        let kv = &event["kv"];
        let revision = int(&kv["mod_revision"]);
        let Some(kv) = key_value(&b64(&kv["key"])?, b64(&kv["value"])?, revision) else {
            continue;
        };
        events.push(match event["type"].as_str() {
            Some("DELETE") => WatchEvent::Delete {
                key: kv.key,
                mod_revision: kv.mod_revision,
            },
            _ => WatchEvent::Put(kv),
        });
    }
    Ok(WatchResponse {
        created: result["created"].as_bool().unwrap_or(false),
        canceled: result["canceled"].as_bool().unwrap_or(false),
        cancel_reason: result["cancel_reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        compact_revision: int(&result["compact_revision"]),
        // The answer to our progress request (watch id -1) proves that etcd is alive, not that
        // every event up to its header was sent (etcd 3.4 answers it at once, even while the
        // watcher is still catching up): it must not advance the revision to resume from.
        header_revision: match int(&result["watch_id"]) {
            -1 => 0,
            _ => int(&result["header"]["revision"]),
        },
        last_event_revision: raw_events.last().map(|e| int(&e["kv"]["mod_revision"])),
        events,
    })
}

/// The end of the `/lain/` prefix range.
fn range_end() -> String {
    "/lain0".to_owned()
}

/// An int64 field (sent as a JSON string; omitted when zero).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// A bytes field (base64; omitted when empty).
fn b64(v: &Value) -> anyhow::Result<Vec<u8>> {
    match v.as_str() {
        Some(s) => B64.decode(s).context("etcd sent invalid base64"),
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_messages_convert_with_their_omitted_defaults() {
        let m: Value = serde_json::from_str(
            r#"{"result":{"header":{"revision":"5"},"events":[
                {"kv":{"key":"L2xhaW4vZQ==","create_revision":"5","mod_revision":"5"}},
                {"type":"DELETE","kv":{"key":"L2xhaW4vYQ==","mod_revision":"6"}}]}}"#,
        )
        .unwrap();
        let r = watch_response(&m).unwrap();
        assert_eq!(r.header_revision, 5);
        assert_eq!(r.last_event_revision, Some(6));
        assert!(!r.created && !r.canceled);
        assert_eq!(
            r.events,
            vec![
                WatchEvent::Put(lainlet_core::KeyValue {
                    key: "/lain/e".into(),
                    value: vec![],
                    mod_revision: 5
                }),
                WatchEvent::Delete {
                    key: "/lain/a".into(),
                    mod_revision: 6
                }
            ]
        );
        let compacted: Value = serde_json::from_str(
            r#"{"result":{"header":{},"canceled":true,"compact_revision":"4"}}"#,
        )
        .unwrap();
        let r = watch_response(&compacted).unwrap();
        assert!(r.canceled);
        assert_eq!(r.compact_revision, 4);
        let probe: Value =
            serde_json::from_str(r#"{"result":{"header":{"revision":"9"},"watch_id":"-1"}}"#)
                .unwrap();
        assert_eq!(watch_response(&probe).unwrap().header_revision, 0);
        let error: Value = serde_json::from_str(r#"{"error":{"message":"boom"}}"#).unwrap();
        assert!(watch_response(&error).is_err());
        assert!(parse_endpoint("https://127.0.0.1:2379").is_err());
        assert_eq!(
            parse_endpoint("http://127.0.0.1:2379/").unwrap().0,
            "127.0.0.1:2379"
        );
    }
}
