//! etcd's v3 store through its JSON gateway as an [`EtcdClient`] and a [`FleetClient`] (the v3
//! client of `lainlet-smol`; `lainlet` speaks gRPC): the request bodies and answers are
//! [`lainlet_core::gateway`]'s and [`lainlet_core::fleet::wire`]'s, the limits the core's, and
//! a shell lends only its HTTP/1.1 client ([`HttpClient`]) and timer ([`Runtime`]).
//!
//! * snapshot: `POST /v3/kv/range` for the `/lain/` prefix;
//! * watch: one streaming `POST /v3/watch` creating the prefix watch from the start revision;
//!   the response is chunked, one JSON object per line ([`gateway::WatchLines`]). The gateway
//!   answers only once the request body is complete, so it cannot carry later requests
//!   (`progress_request`); a silent watch is checked by the engine's quorum check (a
//!   linearizable range on another connection, see `lainlet_core::CheckPolicy`);
//! * quorum check and drift check's key listing: keys-only `POST /v3/kv/range`;
//! * authentication: `POST /v3/auth/authenticate` for a token sent as `Authorization`, at
//!   each connection and again when etcd says the token expired (`invalid auth token`; the
//!   call is then made once more);
//! * the fleet heartbeat: `/v3/lease/grant` once, `/v3/kv/put` under the lease, one
//!   `/v3/lease/keepalive` message per heartbeat, `/v3/lease/revoke` at shutdown.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use lainlet_core::fleet::announcer::{FleetWrite, FleetWritten};
use lainlet_core::fleet::wire;
use lainlet_core::{
    gateway, EtcdIdentity, KeyListing, Probe, Snapshot, WatchResponse, CALL_TIMEOUT, MAX_ANSWER,
    PROBE_TIMEOUT,
};
use tracing::debug;

use crate::announce::FleetClient;
use crate::etcd::{EtcdClient, EtcdWatch};
use crate::http::{read_all, Head, HttpBody, HttpClient, Payload};
use crate::socket::Runtime;
use crate::sync::{first, Either};

/// Longest line of the watch stream accepted (one watch response).
const MAX_LINE: usize = MAX_ANSWER;

/// Largest error answer to a watch request read (for its message).
const MAX_WATCH_ERROR: usize = 64 * 1024;

/// The gateway of one endpoint at a time.
pub struct GatewayClient<H, R> {
    http: H,
    rt: R,
    credentials: Option<(String, String)>,
    endpoint: Option<Endpoint<H, R>>,
}

/// One endpoint, with its token.
struct Endpoint<H, R> {
    http: H,
    rt: R,
    /// `http://host:port` or `https://host:port`.
    url: String,
    /// The user and password to authenticate with, if any.
    credentials: Option<(String, String)>,
    /// The token of the last authentication.
    token: Mutex<Option<String>>,
}

impl<H: HttpClient, R: Runtime> GatewayClient<H, R> {
    /// A client over `http` that authenticates with `credentials` (user, password) if given.
    pub fn new(http: H, rt: R, credentials: Option<(String, String)>) -> GatewayClient<H, R> {
        GatewayClient {
            http,
            rt,
            credentials,
            endpoint: None,
        }
    }

    fn endpoint(&self) -> anyhow::Result<&Endpoint<H, R>> {
        self.endpoint
            .as_ref()
            .ok_or_else(|| anyhow!("not connected"))
    }
}

impl<H: HttpClient, R: Runtime> Endpoint<H, R> {
    /// Sends `POST path` with `body` (JSON) and the token, if any.
    async fn post(&self, path: &str, body: Vec<u8>) -> anyhow::Result<Head<H::Body>> {
        let url = format!("{}{path}", self.url);
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let body = Some(Payload::json(body));
        self.http.send("POST", url, token, body).await
    }

    fn set_token(&self, token: Option<String>) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// Authenticates with the credentials (if any) for a new token.
    async fn authenticate(&self) -> anyhow::Result<()> {
        let Some((name, password)) = &self.credentials else {
            return Ok(());
        };
        self.set_token(None);
        let body = gateway::auth_request(name, password);
        // Without the token retry of `exchange`: this call is what gets a new token.
        let path = "/v3/auth/authenticate";
        let (status, answer) = self
            .exchange_once(CALL_TIMEOUT, path, body)
            .await
            .with_context(|| format!("authenticating to {}", self.url))?;
        let answer = answer_of(path, status, answer)
            .with_context(|| format!("authenticating to {}", self.url))?;
        self.set_token(Some(gateway::parse_token(&answer)?));
        Ok(())
    }

    /// One unary call within `limit`: the answer's bytes (an error for any status but 200).
    async fn call(&self, limit: Duration, path: &str, body: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        let (status, answer) = self.exchange(limit, path, body).await?;
        answer_of(path, status, answer)
    }

    /// One unary call within `limit`: the answer's status and bytes. When etcd says the
    /// token is no longer valid (it expired: `--auth-token-ttl`), a new one is asked for
    /// and the call made once more.
    async fn exchange(
        &self,
        limit: Duration,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let (status, answer) = self.exchange_once(limit, path, body.clone()).await?;
        if self.credentials.is_none() || !gateway::token_expired(status, &answer) {
            return Ok((status, answer));
        }
        debug!(
            "etcd: the auth token of {} expired; authenticating again",
            self.url
        );
        self.authenticate().await?;
        self.exchange_once(limit, path, body).await
    }

    /// One unary call within `limit`: the answer's status and bytes.
    async fn exchange_once(
        &self,
        limit: Duration,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let exchange = async {
            let mut head = self.post(path, body).await?;
            let answer = read_all(&mut head.body, MAX_ANSWER).await?;
            anyhow::Ok((head.status, answer))
        };
        match first(exchange, self.rt.sleep(limit)).await {
            Either::Left(r) => r.with_context(|| format!("{path} at {}", self.url)),
            Either::Right(()) => bail!("{path} at {}: no answer within {limit:?}", self.url),
        }
    }
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

impl<H: HttpClient, R: Runtime> EtcdClient for GatewayClient<H, R> {
    type Watch = GatewayWatch<H::Body>;

    async fn connect(&mut self, url: &str) -> anyhow::Result<()> {
        self.endpoint = None;
        let endpoint = Endpoint {
            http: self.http.clone(),
            rt: self.rt.clone(),
            url: url.trim_end_matches('/').to_owned(),
            credentials: self.credentials.clone(),
            token: Mutex::new(None),
        };
        endpoint.authenticate().await?;
        self.endpoint = Some(endpoint);
        Ok(())
    }

    async fn probe(&mut self) -> Probe {
        let endpoint = match self.endpoint() {
            Ok(e) => e,
            Err(e) => return Probe::Failed(e.to_string()),
        };
        let body = gateway::keys_probe_request();
        match endpoint.exchange(PROBE_TIMEOUT, "/v3/kv/range", body).await {
            Ok((status, answer)) => gateway::parse_keys_probe(status, &answer),
            Err(e) => Probe::Failed(format!("{e:#}")),
        }
    }

    async fn read_snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let body = gateway::range_request();
        let answer = self
            .endpoint()?
            .call(CALL_TIMEOUT, "/v3/kv/range", body)
            .await?;
        Ok(gateway::parse_range(&answer)?)
    }

    async fn watch(&mut self, start_revision: i64) -> anyhow::Result<GatewayWatch<H::Body>> {
        let endpoint = self.endpoint()?;
        let start = endpoint.post("/v3/watch", gateway::watch_request(start_revision));
        let mut head = match first(start, endpoint.rt.sleep(CALL_TIMEOUT)).await {
            Either::Left(head) => head.context("starting the watch")?,
            Either::Right(()) => bail!("starting the watch: no answer within {CALL_TIMEOUT:?}"),
        };
        if head.status != 200 {
            let text = read_all(&mut head.body, MAX_WATCH_ERROR)
                .await
                .unwrap_or_default();
            bail!(
                "starting the watch: HTTP {}: {}",
                head.status,
                String::from_utf8_lossy(&text).trim()
            );
        }
        Ok(GatewayWatch {
            body: head.body,
            lines: gateway::WatchLines::new(MAX_LINE),
        })
    }

    /// The key as of `revision`; if etcd cannot tell (compacted), as of now (proven if it was
    /// not written since).
    async fn prove_put(&mut self, key: &str, revision: i64) -> anyhow::Result<Option<i64>> {
        let endpoint = self.endpoint()?;
        let ask = |at| {
            let body = gateway::proof_request(key, at);
            endpoint.exchange(PROBE_TIMEOUT, "/v3/kv/range", body)
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
            .exchange(CALL_TIMEOUT, "/v3/kv/range", body)
            .await?;
        gateway::parse_quorum(status, &answer).map_err(|e| anyhow!(e))
    }

    async fn list_keys(&mut self, at_revision: i64) -> anyhow::Result<KeyListing> {
        let body = gateway::keys_request(at_revision);
        let answer = self
            .endpoint()?
            .call(CALL_TIMEOUT, "/v3/kv/range", body)
            .await
            .with_context(|| format!("listing the keys at revision {at_revision}"))?;
        Ok(gateway::parse_keys(&answer, at_revision)?)
    }
}

/// One streaming watch: its answer's body, read a piece at a time and split into lines.
pub struct GatewayWatch<B> {
    body: B,
    lines: gateway::WatchLines,
}

impl<B: HttpBody> EtcdWatch for GatewayWatch<B> {
    async fn next(&mut self) -> anyhow::Result<Option<WatchResponse>> {
        loop {
            if let Some(response) = self.lines.poll_response().context("watch")? {
                return Ok(Some(response));
            }
            match self.body.chunk().await {
                Ok(None) => return Ok(None),
                Ok(Some(bytes)) => self.lines.push(&bytes),
                Err(e) => return Err(e.context("watch")),
            }
        }
    }
}

/// The fleet heartbeat through the gateway: `/v3/lease/grant` once, `/v3/kv/put` under the
/// lease, one `/v3/lease/keepalive` message per heartbeat, `/v3/lease/revoke` at shutdown
/// (the bodies and answers are `lainlet_core::fleet::wire`'s).
impl<H: HttpClient, R: Runtime> FleetClient for GatewayClient<H, R> {
    async fn connect(&mut self, endpoint: &str) -> anyhow::Result<()> {
        EtcdClient::connect(self, endpoint).await
    }

    async fn write(&mut self, write: &FleetWrite) -> FleetWritten {
        let endpoint = match self.endpoint() {
            Ok(e) => e,
            Err(e) => return FleetWritten::Failed(e.to_string()),
        };
        let call = |path: &'static str, body: Vec<u8>| async move {
            endpoint
                .exchange(CALL_TIMEOUT, path, body)
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
                    let (lease, granted) = match lease {
                        Some(id) => (*id, false),
                        None => {
                            let (status, answer) =
                                call("/v3/lease/grant", wire::grant_request(*ttl)).await?;
                            (wire::parse_grant(status, &answer)?, true)
                        }
                    };
                    let (status, answer) =
                        call("/v3/kv/put", wire::put_request(key, value, lease)).await?;
                    match wire::parse_lease_call(status, &answer, false) {
                        FleetWritten::Done { .. } => Ok(FleetWritten::Done { lease: Some(lease) }),
                        // Keep the lease for the next put rather than grant one per heartbeat.
                        FleetWritten::Failed(reason) if granted => {
                            Ok(FleetWritten::Refused { lease, reason })
                        }
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
