//! etcd's v3 store through its JSON gateway, the v3 client of the smol shell: HTTP/1.1 by
//! trillium-client (TLS through [`crate::tls`]), the request bodies and answers by [`lainlet_core::gateway`] (the v2 keys
//! store's client is [`crate::etcd_v2`]).
//!
//! * snapshot: `POST /v3/kv/range` for the `/lain/` prefix;
//! * watch: one streaming `POST /v3/watch` creating the prefix watch from the start revision;
//!   the response is chunked, one JSON object per line. The gateway answers only once the
//!   request body is complete, so it cannot carry later requests (`progress_request`); a
//!   silent watch is checked by the engine's quorum check (a linearizable range on another
//!   connection, see `lainlet_core::CheckPolicy`);
//! * quorum check and drift check's key listing: keys-only `POST /v3/kv/range`;
//! * authentication: `POST /v3/auth/authenticate` for a token sent as `Authorization`, at
//!   each connection and again when etcd says the token expired (`invalid auth token`; the
//!   call is then made once more).

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use lainlet_core::fleet::announcer::{FleetWrite, FleetWritten};
use lainlet_core::fleet::wire;
use lainlet_core::{
    gateway, EtcdIdentity, KeyListing, Probe, Snapshot, WatchResponse, CALL_TIMEOUT, MAX_ANSWER,
    PROBE_TIMEOUT,
};
use lainlet_shell_common::etcd::{EtcdClient, EtcdWatch};
use lainlet_shell_common::sync::{first, Either};
use smol::io::AsyncReadExt;
use smol::Timer;
use tracing::debug;
use trillium_client::{Client, Conn};

use crate::tls::EtcdHttp;

/// Longest line of the watch stream accepted (one watch response).
const MAX_LINE: usize = MAX_ANSWER;

/// The gateway of one endpoint at a time.
pub struct GatewayClient {
    http: Client,
    /// Where `http` comes from: a new client when the TLS files changed.
    source: EtcdHttp,
    credentials: Option<(String, String)>,
    endpoint: Option<Endpoint>,
}

#[derive(Clone)]
struct Endpoint {
    /// `http://host:port` or `https://host:port`.
    url: String,
    /// The user and password to authenticate with, if any.
    credentials: Option<(String, String)>,
    /// The token of the last authentication (shared with the watch's copy of the endpoint).
    token: Arc<Mutex<Option<String>>>,
}

impl GatewayClient {
    /// A client over `source` that authenticates with `credentials` (user, password) if given.
    pub fn new(source: EtcdHttp, credentials: Option<(String, String)>) -> GatewayClient {
        GatewayClient {
            http: source.client(),
            source,
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
    fn post(&self, http: &Client, path: &str, body: Vec<u8>) -> Conn {
        let mut conn = http
            .post(format!("{}{path}", self.url))
            .with_request_header("Content-Type", "application/json")
            .with_body(body);
        if let Some(token) = self.token() {
            conn = conn.with_request_header("Authorization", token);
        }
        conn
    }

    fn token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Authenticates with the credentials (if any) for a new token.
    async fn authenticate(&self, http: &Client) -> anyhow::Result<()> {
        let Some((name, password)) = &self.credentials else {
            return Ok(());
        };
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let body = gateway::auth_request(name, password);
        // Without the token retry of `exchange`: this call is what gets a new token.
        let path = "/v3/auth/authenticate";
        let (status, answer) = self
            .exchange_once(http, CALL_TIMEOUT, path, body)
            .await
            .with_context(|| format!("authenticating to {}", self.url))?;
        let answer = answer_of(path, status, answer)
            .with_context(|| format!("authenticating to {}", self.url))?;
        let token = gateway::parse_token(&answer)?;
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
        Ok(())
    }

    /// One unary call within `limit`: the answer's bytes (an error for any status but 200).
    async fn call(
        &self,
        http: &Client,
        limit: Duration,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<Vec<u8>> {
        let (status, answer) = self.exchange(http, limit, path, body).await?;
        answer_of(path, status, answer)
    }

    /// One unary call within `limit`: the answer's status and bytes. When etcd says the
    /// token is no longer valid (it expired: `--auth-token-ttl`), a new one is asked for
    /// and the call made once more.
    async fn exchange(
        &self,
        http: &Client,
        limit: Duration,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let (status, answer) = self.exchange_once(http, limit, path, body.clone()).await?;
        if self.credentials.is_none() || !gateway_token_expired(status, &answer) {
            return Ok((status, answer));
        }
        debug!(
            "etcd: the auth token of {} expired; authenticating again",
            self.url
        );
        self.authenticate(http).await?;
        self.exchange_once(http, limit, path, body).await
    }
}

/// Whether an answer says the request's auth token is not (or no longer) valid.
fn gateway_token_expired(status: u16, answer: &[u8]) -> bool {
    status == 401 && String::from_utf8_lossy(answer).contains("invalid auth token")
}

/// The answer's bytes: an error for any status but 200.
fn answer_of(path: &str, status: u16, answer: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if status != 200 {
        bail!(
            "{path}: HTTP {status}: {}",
            String::from_utf8_lossy(&answer).trim()
        );
    }
    Ok(answer)
}

impl Endpoint {
    /// One unary call within `limit`: the answer's status and bytes.
    async fn exchange_once(
        &self,
        http: &Client,
        limit: Duration,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let exchange = async {
            let mut conn = self.post(http, path, body).await?;
            let status = conn.status().map_or(0, |s| s as u16);
            let answer = conn
                .response_body()
                .with_max_len(MAX_ANSWER as u64)
                .read_bytes()
                .await?;
            Ok::<_, trillium_client::Error>((status, answer))
        };
        match first(exchange, Timer::after(limit)).await {
            Either::Left(r) => Ok(r.with_context(|| format!("{path} at {}", self.url))?),
            Either::Right(_) => bail!("{path} at {}: no answer within {limit:?}", self.url),
        }
    }
}

impl EtcdClient for GatewayClient {
    type Watch = GatewayWatch;

    async fn connect(&mut self, url: &str) -> anyhow::Result<()> {
        self.endpoint = None;
        // The TLS files as they are now (a rotated certificate from this connection on).
        self.http = self.source.client();
        let endpoint = Endpoint {
            url: url.trim_end_matches('/').to_owned(),
            credentials: self.credentials.clone(),
            token: Arc::new(Mutex::new(None)),
        };
        endpoint.authenticate(&self.http).await?;
        self.endpoint = Some(endpoint);
        Ok(())
    }

    async fn probe(&mut self) -> Probe {
        let endpoint = match self.endpoint() {
            Ok(e) => e,
            Err(e) => return Probe::Failed(e.to_string()),
        };
        let body = gateway::keys_probe_request();
        match endpoint
            .exchange(&self.http, PROBE_TIMEOUT, "/v3/kv/range", body)
            .await
        {
            Ok((status, answer)) => gateway::parse_keys_probe(status, &answer),
            Err(e) => Probe::Failed(format!("{e:#}")),
        }
    }

    async fn read_snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let answer = self
            .endpoint()?
            .call(
                &self.http,
                CALL_TIMEOUT,
                "/v3/kv/range",
                gateway::range_request(),
            )
            .await?;
        Ok(gateway::parse_range(&answer)?)
    }

    async fn watch(&mut self, start_revision: i64) -> anyhow::Result<GatewayWatch> {
        let endpoint = self.endpoint()?.clone();
        let start = endpoint
            .post(
                &self.http,
                "/v3/watch",
                gateway::watch_request(start_revision),
            )
            .into_future();
        let mut conn = match first(start, Timer::after(CALL_TIMEOUT)).await {
            Either::Left(conn) => conn.context("starting the watch")?,
            Either::Right(_) => bail!("starting the watch: no answer within {CALL_TIMEOUT:?}"),
        };
        let status = conn.status().map_or(0, |s| s as u16);
        if status != 200 {
            let body = conn.response_body().with_max_len(64 * 1024);
            let text = body.read_bytes().await.unwrap_or_default();
            bail!(
                "starting the watch: HTTP {status}: {}",
                String::from_utf8_lossy(&text).trim()
            );
        }
        Ok(GatewayWatch {
            conn,
            pending: Vec::new(),
        })
    }

    /// The key as of `revision`; if etcd cannot tell (compacted), as of now (proven if it was
    /// not written since).
    async fn prove_put(&mut self, key: &str, revision: i64) -> anyhow::Result<Option<i64>> {
        let endpoint = self.endpoint()?.clone();
        let ask = |at| {
            let body = gateway::proof_request(key, at);
            endpoint.exchange(&self.http, PROBE_TIMEOUT, "/v3/kv/range", body)
        };
        let (status, answer) = ask(Some(revision)).await?;
        let then = match gateway::parse_proof(status, &answer) {
            Ok(found) => return Ok(found),
            Err(e) => e,
        };
        let (status, answer) = ask(None).await?;
        match gateway::parse_proof(status, &answer)? {
            Some(found) if found == revision => Ok(Some(found)),
            _ => Err(anyhow!(then).context(format!("reading {key} at revision {revision}"))),
        }
    }

    async fn check_quorum(&mut self) -> anyhow::Result<EtcdIdentity> {
        // Linearizable (no `serializable`): answered only through the raft leader. The time
        // limit is the caller's.
        let body = gateway::keys_probe_request();
        let (status, answer) = self
            .endpoint()?
            .exchange(&self.http, CALL_TIMEOUT, "/v3/kv/range", body)
            .await?;
        gateway::parse_quorum(status, &answer).map_err(|e| anyhow!(e))
    }

    async fn list_keys(&mut self, at_revision: i64) -> anyhow::Result<KeyListing> {
        let body = gateway::keys_request(at_revision);
        let answer = self
            .endpoint()?
            .call(&self.http, CALL_TIMEOUT, "/v3/kv/range", body)
            .await
            .with_context(|| format!("listing the keys at revision {at_revision}"))?;
        Ok(gateway::parse_keys(&answer, at_revision)?)
    }
}

/// One streaming watch.
pub struct GatewayWatch {
    /// The streaming response; its body is read a chunk at a time.
    conn: Conn,
    /// Decoded body bytes not yet parsed (a partial line).
    pending: Vec<u8>,
}

impl EtcdWatch for GatewayWatch {
    async fn next(&mut self) -> anyhow::Result<Option<WatchResponse>> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(gateway::parse_watch_line(&line).context("watch")?));
            }
            if self.pending.len() > MAX_LINE {
                bail!("watch: a message longer than {MAX_LINE} bytes");
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut body = self.conn.response_body().with_max_len(u64::MAX);
            let read = body.read(&mut chunk);
            match read.await {
                Ok(0) => return Ok(None),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(anyhow!(e).context("watch")),
            }
        }
    }
}

/// The fleet heartbeat through the gateway: `/v3/lease/grant` once, `/v3/kv/put` under the
/// lease, one `/v3/lease/keepalive` message per heartbeat, `/v3/lease/revoke` at shutdown
/// (the bodies and answers are `lainlet_core::fleet::wire`'s).
impl lainlet_shell_common::announce::FleetClient for GatewayClient {
    async fn connect(&mut self, endpoint: &str) -> anyhow::Result<()> {
        EtcdClient::connect(self, endpoint).await
    }

    async fn write(&mut self, write: &FleetWrite) -> FleetWritten {
        let endpoint = match self.endpoint() {
            Ok(e) => e,
            Err(e) => return FleetWritten::Failed(e.to_string()),
        };
        let http = &self.http;
        let call = |path: &'static str, body: Vec<u8>| async move {
            endpoint
                .exchange(http, CALL_TIMEOUT, path, body)
                .await
                .map_err(|e| FleetWritten::Failed(format!("{path}: {e:#}")))
        };
        let result = async {
            match write {
                FleetWrite::Put {
                    key,
                    value,
                    ttl,
                    lease,
                    ..
                } => {
                    let lease = match lease {
                        Some(id) => *id,
                        None => {
                            let (status, answer) =
                                call("/v3/lease/grant", wire::grant_request(*ttl)).await?;
                            wire::parse_grant(status, &answer)?
                        }
                    };
                    let (status, answer) =
                        call("/v3/kv/put", wire::put_request(key, value, lease)).await?;
                    match wire::parse_lease_call(status, &answer, false) {
                        FleetWritten::Done { .. } => Ok(FleetWritten::Done { lease: Some(lease) }),
                        other => Ok(other),
                    }
                }
                FleetWrite::Refresh { lease: None, .. } => Ok(FleetWritten::Gone),
                FleetWrite::Refresh {
                    lease: Some(id), ..
                } => {
                    let (status, answer) =
                        call("/v3/lease/keepalive", wire::lease_request(*id)).await?;
                    Ok(wire::parse_lease_call(status, &answer, false))
                }
                // Every v3 key is put under a lease: without one nothing was written.
                FleetWrite::Withdraw { lease: None, .. } => Ok(FleetWritten::Done { lease: None }),
                FleetWrite::Withdraw {
                    lease: Some(id), ..
                } => {
                    let (status, answer) =
                        call("/v3/lease/revoke", wire::lease_request(*id)).await?;
                    Ok(wire::parse_lease_call(status, &answer, true))
                }
            }
        };
        result.await.unwrap_or_else(|failed: FleetWritten| failed)
    }
}
