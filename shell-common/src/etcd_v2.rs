//! etcd's v2 keys API as an [`EtcdClient`], the same in both shells: the requests and answers
//! are [`lainlet_core::v2`]'s, the time limits and the liveness check are here, and a shell
//! lends only an HTTP/1.1 `GET` ([`HttpGet`]: hyper's client in `lainlet`, trillium-client in
//! `lainlet-smol`).
//!
//! * snapshot, probe: one `GET` each, read whole within a time limit;
//! * watch: one `GET` of [`v2::watch_path`]; a streaming answer is decoded as it comes, one
//!   that is not (`in_history`: one event from etcd's history) is read whole first, so its
//!   connection can be reused for the next one;
//! * checks beside the watch (the engine says when): a quorum read ([`v2::PROBE_PATH`]), and a
//!   listing of the keys for the drift check (v2 has no keys-only read: it is the snapshot
//!   read, values included).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use lainlet_core::v2::{self, Answer, WatchDecoder};
use lainlet_core::{KeyListing, Probe, Snapshot, WatchResponse};

use crate::etcd::{EtcdClient, EtcdWatch};
use crate::socket::Runtime;
use crate::sync::{first, Either};
use tracing::warn;

/// Time limit of a call that should answer promptly (the snapshot, a watch's head).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Time etcd has to answer a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read whole (a big cluster's snapshot is one answer).
pub const MAX_ANSWER: usize = 512 << 20;

/// The head of an answer to a `GET`, and its body to read.
pub struct Head<B> {
    /// The HTTP status.
    pub status: u16,
    /// The `X-Etcd-Index` header, if any.
    pub etcd_index: Option<String>,
    /// The body, without its transfer encoding.
    pub body: B,
}

/// One HTTP/1.1 `GET`, as a shell's HTTP client does it (connections pooled, so a whole
/// answer leaves its connection for the next request).
pub trait HttpGet: Clone + Send + Sync + 'static {
    /// An answer's body.
    type Body: HttpBody;

    /// Sends `GET url` (with `Authorization: authorization` if given) and returns the head.
    fn get(
        &self,
        url: String,
        authorization: Option<String>,
    ) -> impl Future<Output = anyhow::Result<Head<Self::Body>>> + Send;
}

/// The body of an answer, a piece at a time.
pub trait HttpBody: Send {
    /// The next bytes; `Ok(None)` at the end of the body. Dropping the future before it is
    /// ready must lose nothing (it is polled once to see what is ready).
    fn chunk(&mut self) -> impl Future<Output = anyhow::Result<Option<Vec<u8>>>> + Send;
}

/// The v2 keys API of one endpoint at a time.
pub struct V2Client<H: HttpGet, R> {
    http: H,
    rt: R,
    authorization: Option<String>,
    base: Option<String>,
    /// A live stream opened just before the last snapshot read, and the index it starts after
    /// (see [`V2Client::read_snapshot`]).
    opened: Option<(V2Watch<H, R>, i64)>,
}

impl<H: HttpGet, R: Runtime> V2Client<H, R> {
    /// A client over `http`, authenticating with `credentials` (user, password) if given.
    pub fn new(http: H, rt: R, credentials: Option<(String, String)>) -> V2Client<H, R> {
        V2Client {
            http,
            rt,
            authorization: credentials.map(|(user, password)| v2::basic_auth(&user, &password)),
            base: None,
            opened: None,
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

impl<H: HttpGet, R: Runtime> Endpoint<H, R> {
    async fn head(&self, path: &str) -> anyhow::Result<Head<H::Body>> {
        let url = format!("{}{path}", self.base);
        self.http
            .get(url, self.authorization.clone())
            .await
            .with_context(|| format!("GET {path} at {}", self.base))
    }

    /// `GET path`, its body read whole, within `limit`.
    async fn call(&self, path: &str, limit: Duration) -> anyhow::Result<Called> {
        let exchange = async {
            let mut head = self.head(path).await?;
            let body = read_all(&mut head.body).await?;
            let etcd_index = head.etcd_index;
            Ok::<_, anyhow::Error>(Called {
                status: head.status,
                etcd_index,
                body,
            })
        };
        match first(exchange, self.rt.sleep(limit)).await {
            Either::Left(r) => r,
            Either::Right(()) => bail!("GET {path} at {}: no answer within {limit:?}", self.base),
        }
    }
}

/// A whole answer, as [`Endpoint::call`] read it.
struct Called {
    status: u16,
    etcd_index: Option<String>,
    body: Vec<u8>,
}

impl Called {
    /// The answer as the v2 codec reads it.
    fn answer(&self) -> Answer<'_> {
        Answer {
            status: self.status,
            etcd_index: self.etcd_index.as_deref(),
            body: &self.body,
        }
    }
}

/// A body read to its end (at most [`MAX_ANSWER`] bytes).
async fn read_all<B: HttpBody>(body: &mut B) -> anyhow::Result<Vec<u8>> {
    let mut all = Vec::new();
    while let Some(chunk) = body.chunk().await? {
        if all.len().saturating_add(chunk.len()) > MAX_ANSWER {
            bail!("an answer larger than {MAX_ANSWER} bytes");
        }
        all.extend_from_slice(&chunk);
    }
    Ok(all)
}

/// Starts the watch `path` (from `start_revision`; 0 for a live one): the watch, and the index
/// its answer's `X-Etcd-Index` says it starts after.
async fn open<H: HttpGet, R: Runtime>(
    endpoint: Endpoint<H, R>,
    path: &str,
    start_revision: i64,
    in_history: bool,
) -> anyhow::Result<(V2Watch<H, R>, i64)> {
    {
        let head = match first(endpoint.head(path), endpoint.rt.sleep(CALL_TIMEOUT)).await {
            Either::Left(head) => head.context("starting the watch")?,
            Either::Right(()) => bail!("starting the watch: no answer within {CALL_TIMEOUT:?}"),
        };
        let after = head
            .etcd_index
            .as_deref()
            .and_then(|i| i.trim().parse::<i64>().ok())
            .filter(|_| head.status == 200);
        let decoder = WatchDecoder::new(head.status, head.etcd_index.as_deref(), !in_history);
        let watch = V2Watch {
            body: head.body,
            decoder,
            whole: in_history || head.status != 200,
            body_done: false,
            finished: false,
            endpoint,
            next_index: start_revision.max(after.map_or(0, |a| a + 1)),
            quiet_since: Instant::now(),
            busy: false,
        };
        Ok((watch, after.unwrap_or(i64::MAX)))
    }
}

impl<H: HttpGet, R: Runtime> EtcdClient for V2Client<H, R> {
    type Watch = V2Watch<H, R>;

    async fn check_quorum(&mut self) -> anyhow::Result<()> {
        let called = self.endpoint()?.call(v2::PROBE_PATH, PROBE_TIMEOUT).await?;
        v2::parse_quorum(called.answer()).map_err(|e| anyhow!(e))
    }

    async fn list_keys(&mut self, _at_revision: i64) -> anyhow::Result<KeyListing> {
        let endpoint = self.endpoint()?;
        let called = endpoint.call(v2::SNAPSHOT_PATH, CALL_TIMEOUT).await?;
        Ok(v2::parse_keys(called.answer())?)
    }

    async fn connect(&mut self, url: &str) -> anyhow::Result<()> {
        self.base = None;
        self.opened = None;
        if !url.starts_with("http://") {
            bail!("{url}: the v2 keys API is read over plain http (use --etcd-api v3 for TLS)");
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

    /// Reads the snapshot, after opening a live stream (from etcd's current index, so it
    /// never answers from history): the watch that follows the snapshot is that stream, and
    /// no event can fall between the two however fast etcd is written (its events up to the
    /// snapshot's index are replays the engine ignores). Without it, a watch from the index
    /// after the snapshot would start in etcd's history, one event per request.
    async fn read_snapshot(&mut self) -> anyhow::Result<Snapshot> {
        self.opened = None;
        let live = open(self.endpoint()?, v2::LIVE_WATCH_PATH, 0, false).await;
        let endpoint = self.endpoint()?;
        let called = endpoint.call(v2::SNAPSHOT_PATH, CALL_TIMEOUT).await?;
        let snapshot = v2::parse_snapshot(called.answer())?;
        if let Ok((watch, after)) = live {
            if after <= snapshot.revision {
                self.opened = Some((watch, after));
            }
        }
        Ok(snapshot)
    }

    async fn watch(
        &mut self,
        start_revision: i64,
        in_history: bool,
    ) -> anyhow::Result<V2Watch<H, R>> {
        if let Some((watch, after)) = self.opened.take() {
            if after < start_revision {
                return Ok(watch); // it has every event from `after + 1` on
            }
        }
        let path = v2::watch_path(start_revision, in_history);
        Ok(open(self.endpoint()?, &path, start_revision, in_history)
            .await?
            .0)
    }
}

/// One v2 watch answer.
pub struct V2Watch<H: HttpGet, R> {
    body: H::Body,
    decoder: WatchDecoder,
    /// Read the body whole before decoding (an answer that is not a stream).
    whole: bool,
    body_done: bool,
    finished: bool,
    /// For the deaf-stream check: the endpoint, and the index after the last event delivered.
    endpoint: Endpoint<H, R>,
    next_index: i64,
    quiet_since: Instant,
    /// The last two pieces came less than [`BUSY_GAP`] apart: a silence is suspect sooner.
    busy: bool,
}

impl<H: HttpGet, R: Runtime> V2Watch<H, R> {
    /// The next piece of the body; `None` at its end.
    async fn chunk(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        self.body.chunk().await.context("watch")
    }
}

/// Whether etcd stopped sending on a stream whose next index is `next_index`: a one-shot
/// watch from there answers an event the stream never delivered ([`v2::missed_by_stream`]);
/// then etcd's index (`X-Etcd-Index` of that answer). An answer from etcd's history comes at
/// once; none within [`DEAF_ANSWER`] means nothing was missed.
async fn deaf<H: HttpGet, R: Runtime>(
    endpoint: &Endpoint<H, R>,
    next_index: i64,
    busy: bool,
) -> anyhow::Result<Option<i64>> {
    {
        let path = v2::watch_path(next_index, true);
        let ask = async {
            let mut head = endpoint.head(&path).await?;
            let body = first(read_all(&mut head.body), endpoint.rt.sleep(DEAF_ANSWER)).await;
            let Either::Left(body) = body else {
                return Ok(None); // a long poll: nothing happened since
            };
            let answer = Answer {
                status: head.status,
                etcd_index: head.etcd_index.as_deref(),
                body: &body?,
            };
            let index = head
                .etcd_index
                .as_deref()
                .and_then(|i| i.trim().parse().ok());
            Ok::<_, anyhow::Error>(v2::missed_by_stream(answer, busy).then(|| index.unwrap_or(0)))
        };
        match first(ask, endpoint.rt.sleep(PROBE_TIMEOUT)).await {
            Either::Left(r) => r.context("checking a quiet watch stream"),
            Either::Right(()) => {
                bail!("checking a quiet watch stream: no answer within {PROBE_TIMEOUT:?}")
            }
        }
    }
}

/// Silence on a v2 stream after which it is checked ([`deaf`]).
pub const DEAF_AFTER: Duration = Duration::from_secs(3);
/// The same after a busy stream (events less than [`BUSY_GAP`] apart): etcd drops watchers
/// exactly when it writes fast, and a busy stream that falls silent is suspect at once.
pub const DEAF_AFTER_BUSY: Duration = Duration::from_millis(300);
/// Pieces of a stream closer than this make it busy.
pub const BUSY_GAP: Duration = Duration::from_millis(100);
/// How long the check waits for an answer from etcd's history.
const DEAF_ANSWER: Duration = Duration::from_secs(1);

impl<H: HttpGet, R: Runtime> EtcdWatch for V2Watch<H, R> {
    async fn next(&mut self) -> anyhow::Result<Option<WatchResponse>> {
        loop {
            if self.whole && !self.body_done {
                let mut total = 0usize;
                while let Some(bytes) = self.chunk().await? {
                    total = total.saturating_add(bytes.len());
                    if total > MAX_ANSWER {
                        bail!("watch: an answer larger than {MAX_ANSWER} bytes");
                    }
                    self.decoder.push(&bytes).context("watch")?;
                }
                self.body_done = true;
            }
            if let Some(message) = self.decoder.poll() {
                let message = message.context("watch")?;
                if let Some(index) = message.last_event_revision {
                    self.next_index = self.next_index.max(index.saturating_add(1));
                }
                return Ok(Some(message));
            }
            if self.decoder.is_done() || self.finished {
                return Ok(None);
            }
            if self.body_done {
                self.finished = true;
                return Ok(Some(self.decoder.finish().context("watch")?));
            }
            let after = if self.busy {
                DEAF_AFTER_BUSY
            } else {
                DEAF_AFTER
            };
            let (rt, quiet) = (self.endpoint.rt.clone(), self.quiet_since + after);
            let read = first(self.chunk(), rt.sleep_until(quiet)).await;
            match read {
                Either::Left(r) => match r? {
                    Some(bytes) => self.decoder.push(&bytes).context("watch")?,
                    None => self.body_done = true,
                },
                Either::Right(()) => {
                    let missed = deaf(&self.endpoint, self.next_index, self.busy).await?;
                    if let Some(etcd_index) = missed {
                        warn!(
                            "etcd stopped sending on the v2 watch stream after index {} (its \
                             v2 store drops a watcher that falls 100 events behind): \
                             catching up",
                            self.next_index - 1
                        );
                        self.finished = true;
                        return Ok(Some(WatchResponse {
                            header_revision: etcd_index,
                            last: true,
                            ..WatchResponse::default()
                        }));
                    }
                    self.quiet_since = Instant::now();
                    self.busy = false;
                    continue;
                }
            }
            let now = Instant::now();
            self.busy = now.saturating_duration_since(self.quiet_since) < BUSY_GAP;
            self.quiet_since = now;
            // A backlog: take what the body already holds, decoded as one batch. The HTTP
            // client may hand a chunk over from a task of its own: let it run once before
            // deciding that nothing more is there.
            let mut yielded = false;
            for _ in 0..READY_CHUNKS {
                if self.body_done {
                    break;
                }
                match ready_now(self.body.chunk()).await {
                    Some(Ok(Some(bytes))) => {
                        self.decoder.push(&bytes).context("watch")?;
                        yielded = false;
                    }
                    Some(Ok(None)) => self.body_done = true,
                    Some(Err(e)) => return Err(e.context("watch")),
                    None if !yielded => {
                        yield_once().await;
                        yielded = true;
                    }
                    None => break,
                }
            }
        }
    }
}

/// Chunks taken without waiting after one that was waited for (etcd sends one event per
/// chunk, so this bounds a batch read from a backlog).
const READY_CHUNKS: usize = 256;

/// Lets the other tasks of the runtime run once (wakes itself, then is pending once).
async fn yield_once() {
    let mut done = false;
    std::future::poll_fn(|cx| {
        if done {
            return std::task::Poll::Ready(());
        }
        done = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// `f`'s output if it is ready at once. It is polled with the task's own waker (a waker that
/// does nothing could be the last one the body's channel keeps, and its next wake-up lost).
/// The body futures here may be dropped when pending: nothing is consumed then.
async fn ready_now<F: Future>(f: F) -> Option<F::Output> {
    match first(f, std::future::ready(())).await {
        Either::Left(v) => Some(v),
        Either::Right(()) => None,
    }
}
