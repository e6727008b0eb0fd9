//! etcd's v2 keys API as an [`EtcdClient`], the same in both shells: the requests, answers
//! and limits are [`lainlet_core::v2`]'s and the core's, and a shell lends only its HTTP/1.1
//! client ([`HttpClient`]: hyper's in `lainlet`, trillium-client in `lainlet-smol`). Every
//! read is one `GET`, its answer read whole (the fleet's writes are a `PUT` or `DELETE`):
//!
//! * snapshot, probe, quorum check ([`v2::PROBE_PATH`]: etcd's index and cluster ID), and the
//!   drift check's listing (v2 has no keys-only read: it is the snapshot read);
//! * watch: a long poll of [`v2::watch_path`] — one event per answer, as etcd's own v2 client
//!   and the original lainlet watch. It works the same through a member and through etcd
//!   2.3.7's `--proxy on` (which does not flush a `stream=true` answer). How long a poll may
//!   wait is the engine's (`EtcdStep::Watch::until`).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use lainlet_core::fleet::announcer::{FleetWrite, FleetWritten};
use lainlet_core::fleet::wire;
use lainlet_core::v2::{self, Answer};
use lainlet_core::{
    EtcdIdentity, KeyListing, Probe, Snapshot, WatchResponse, CALL_TIMEOUT, MAX_ANSWER,
    PROBE_TIMEOUT,
};

use crate::announce::FleetClient;
use crate::etcd::{EtcdClient, EtcdWatch};
use crate::http::{read_all, Head, HttpBody, HttpClient, Payload};
use crate::socket::Runtime;
use crate::sync::{first, Either};

/// How long a long poll is given to answer from etcd's history (which it does at once).
const HISTORY_ANSWER: Duration = Duration::from_secs(1);

/// The v2 keys API of one endpoint at a time.
pub struct V2Client<H: HttpClient, R> {
    http: H,
    rt: R,
    authorization: Option<String>,
    base: Option<String>,
}

impl<H: HttpClient, R: Runtime> V2Client<H, R> {
    /// A client over `http`, authenticating with `credentials` (user, password) if given.
    pub fn new(http: H, rt: R, credentials: Option<(String, String)>) -> V2Client<H, R> {
        V2Client {
            http,
            rt,
            authorization: credentials.map(|(user, password)| v2::basic_auth(&user, &password)),
            base: None,
        }
    }

    fn endpoint(&self) -> anyhow::Result<Endpoint<H, R>> {
        let base = self.base.clone().ok_or_else(|| anyhow!("not connected"))?;
        Ok(Endpoint {
            http: self.http.clone(),
            rt: self.rt.clone(),
            authorization: self.authorization.clone(),
            base,
        })
    }
}

/// What a watch needs of its client.
#[derive(Clone)]
struct Endpoint<H, R> {
    http: H,
    rt: R,
    authorization: Option<String>,
    base: String,
}

impl<H: HttpClient, R: Runtime> Endpoint<H, R> {
    async fn head(&self, path: &str) -> anyhow::Result<Head<H::Body>> {
        let url = format!("{}{path}", self.base);
        self.http
            .get(url, self.authorization.clone())
            .await
            .with_context(|| format!("GET {path} at {}", self.base))
    }

    /// `GET path`, its body read whole.
    async fn exchange(&self, path: &str) -> anyhow::Result<Called> {
        let mut head = self.head(path).await?;
        let body = read_all(&mut head.body, MAX_ANSWER).await?;
        Ok(Called {
            status: head.status,
            etcd_index: head.etcd_index,
            cluster_id: head.cluster_id,
            body,
        })
    }

    /// `GET path`, its body read whole, within `limit`.
    async fn call(&self, path: &str, limit: Duration) -> anyhow::Result<Called> {
        match first(self.exchange(path), self.rt.sleep(limit)).await {
            Either::Left(r) => r,
            Either::Right(()) => bail!("GET {path} at {}: no answer within {limit:?}", self.base),
        }
    }
}

/// A whole answer, as [`Endpoint::call`] read it.
struct Called {
    status: u16,
    etcd_index: Option<String>,
    cluster_id: Option<String>,
    body: Vec<u8>,
}

impl Called {
    /// The answer as the v2 codec reads it.
    fn answer(&self) -> Answer<'_> {
        Answer {
            status: self.status,
            etcd_index: self.etcd_index.as_deref(),
            cluster_id: self.cluster_id.as_deref(),
            body: &self.body,
        }
    }
}

impl<H: HttpClient, R: Runtime> EtcdClient for V2Client<H, R> {
    type Watch = V2Watch<H, R>;

    async fn check_quorum(&mut self) -> anyhow::Result<EtcdIdentity> {
        let called = self.endpoint()?.call(v2::PROBE_PATH, PROBE_TIMEOUT).await?;
        v2::parse_quorum(called.answer()).map_err(|e| anyhow!(e))
    }

    /// One quorum read of the key; if it was written again or deleted since `revision`, a
    /// long poll from `revision`, which etcd answers at once from its history with the first
    /// write at or after it (in the history served, the write at `revision` itself). A poll
    /// that waits has no such write in etcd's history: `None`.
    async fn prove_put(&mut self, key: &str, revision: i64) -> anyhow::Result<Option<i64>> {
        let endpoint = self.endpoint()?;
        let called = endpoint
            .call(&v2::key_read_path(key), PROBE_TIMEOUT)
            .await?;
        match v2::parse_proof(called.answer())? {
            Some(found) if found <= revision => return Ok(Some(found)),
            _ => {}
        }
        let path = v2::key_wait_path(key, revision);
        match first(endpoint.exchange(&path), self.rt.sleep(HISTORY_ANSWER)).await {
            Either::Left(called) => Ok(v2::parse_proof(called?.answer())?),
            Either::Right(()) => Ok(None),
        }
    }

    async fn list_keys(&mut self, _at_revision: i64) -> anyhow::Result<KeyListing> {
        let endpoint = self.endpoint()?;
        let called = endpoint.call(v2::SNAPSHOT_PATH, CALL_TIMEOUT).await?;
        Ok(v2::parse_keys(called.answer())?)
    }

    async fn connect(&mut self, url: &str) -> anyhow::Result<()> {
        self.base = None;
        if !url.starts_with("http://") && !url.starts_with("https://") {
            bail!("{url}: the v2 keys API is read over http:// or https:// only");
        }
        self.base = Some(url.trim_end_matches('/').to_owned());
        Ok(())
    }

    async fn probe(&mut self) -> Probe {
        let endpoint = match self.endpoint() {
            Ok(e) => e,
            Err(e) => return Probe::Failed(format!("{e:#}")),
        };
        match endpoint.call(v2::PROBE_PATH, PROBE_TIMEOUT).await {
            Ok(called) => v2::parse_probe(called.answer()),
            Err(e) => Probe::Failed(format!("{e:#}")),
        }
    }

    /// Reads the snapshot at etcd's index R; the watch that follows asks for R + 1, which
    /// etcd answers from its history (its last 1000 events) however many writes came between.
    async fn read_snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let called = self
            .endpoint()?
            .call(v2::SNAPSHOT_PATH, CALL_TIMEOUT)
            .await?;
        Ok(v2::parse_snapshot(called.answer())?)
    }

    async fn watch(&mut self, start_revision: i64) -> anyhow::Result<V2Watch<H, R>> {
        Ok(V2Watch {
            endpoint: self.endpoint()?,
            start_revision,
            step: PollStep::Created,
            in_flight: None,
        })
    }
}

/// Largest answer to a fleet write read (etcd answers with the node, a few hundred bytes).
const MAX_WRITE_ANSWER: usize = 64 << 10;

impl<H: HttpClient, R: Runtime> FleetClient for V2Client<H, R> {
    async fn connect(&mut self, url: &str) -> anyhow::Result<()> {
        EtcdClient::connect(self, url).await
    }

    async fn write(&mut self, write: &FleetWrite) -> FleetWritten {
        let endpoint = match self.endpoint() {
            Ok(e) => e,
            Err(e) => return FleetWritten::Failed(format!("{e:#}")),
        };
        let request = wire::v2_request(write);
        let url = format!("{}{}", endpoint.base, request.path);
        let sent = self
            .http
            .send(
                request.method,
                url,
                self.authorization.clone(),
                request.form.map(Payload::form),
            )
            .await;
        let mut head = match sent {
            Ok(head) => head,
            Err(e) => {
                return FleetWritten::Failed(format!("{} {}: {e:#}", request.method, request.path))
            }
        };
        let mut body = Vec::new();
        loop {
            match head.body.chunk().await {
                Ok(Some(chunk)) if body.len().saturating_add(chunk.len()) <= MAX_WRITE_ANSWER => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => return FleetWritten::Failed("an answer too large".to_owned()),
                Ok(None) => break,
                Err(e) => return FleetWritten::Failed(format!("reading the answer: {e:#}")),
            }
        }
        let answer = Answer {
            status: head.status,
            etcd_index: head.etcd_index.as_deref(),
            cluster_id: head.cluster_id.as_deref(),
            body: &body,
        };
        wire::v2_answer(write, answer)
    }
}

/// One long poll from `start_revision`: first its `created` message (the quorum check that
/// preceded it proved the connection; a long poll has no head of its own until an event
/// comes), then the one answer etcd gives, which is the poll's last message.
pub struct V2Watch<H: HttpClient, R> {
    endpoint: Endpoint<H, R>,
    start_revision: i64,
    step: PollStep,
    /// The poll, once sent: kept here, so that a caller who stops waiting for [`EtcdWatch::next`]
    /// (a check's timer came first) and calls it again waits for the same request instead of
    /// sending another one.
    in_flight: Option<Pin<Box<dyn Future<Output = anyhow::Result<Called>> + Send>>>,
}

/// Where a [`V2Watch`] is.
enum PollStep {
    Created,
    Polling,
    Answered,
}

impl<H: HttpClient, R: Runtime> EtcdWatch for V2Watch<H, R> {
    async fn next(&mut self) -> anyhow::Result<Option<WatchResponse>> {
        match self.step {
            PollStep::Created => {
                self.step = PollStep::Polling;
                Ok(Some(WatchResponse {
                    created: true,
                    ..WatchResponse::default()
                }))
            }
            PollStep::Polling => {
                let in_flight = self.in_flight.get_or_insert_with(|| {
                    let (endpoint, path) =
                        (self.endpoint.clone(), v2::watch_path(self.start_revision));
                    Box::pin(async move { endpoint.exchange(&path).await })
                });
                let called = in_flight.as_mut().await;
                self.in_flight = None;
                self.step = PollStep::Answered;
                let called = called.context("watch")?;
                Ok(Some(v2::parse_watch(called.answer()).context("watch")?))
            }
            PollStep::Answered => Ok(None),
        }
    }
}
