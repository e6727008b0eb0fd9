//! Writing to either etcd store: the v3 store through etcd-client, the v2 keys store through
//! form-encoded `PUT /v2/keys/<key>` requests on hyper's pooled HTTP/1.1 client (the way
//! deployd writes). Every write has a time limit.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use clap::ValueEnum;
use etcd_client::{Client, GetOptions, KvClient, Txn, TxnOp};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Time limit of one write.
const PUT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most puts per v3 preload transaction, and their most bytes (etcd: 128 ops, 1.5 MiB).
const TXN_OPS: usize = 128;
const TXN_BYTES: usize = 1 << 20;
/// Concurrent PUTs of a v2 preload (the v2 API has no transactions).
const V2_LOAD_TASKS: usize = 16;

/// One of etcd's two stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Store {
    /// The v2 keys API (`/v2/keys`; etcd started with `--enable-v2`).
    V2,
    /// The v3 API.
    V3,
}

impl Store {
    /// `"v2"` or `"v3"`, as lainlet's `--etcd-api` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Store::V2 => "v2",
            Store::V3 => "v3",
        }
    }
}

/// A writer to one store of one etcd.
#[derive(Clone)]
pub enum Writer {
    /// etcd-client's KV service.
    V3(KvClient),
    /// The keys API at `base` (`http://host:port`).
    V2 {
        http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
        base: String,
    },
}

impl Writer {
    /// A writer to `store` of the etcd at `etcd`.
    pub async fn connect(store: Store, etcd: SocketAddr) -> anyhow::Result<Writer> {
        let url = format!("http://{etcd}");
        Ok(match store {
            Store::V3 => {
                let client = tokio::time::timeout(PUT_TIMEOUT, Client::connect([url], None))
                    .await
                    .map_err(|_| anyhow!("connecting to etcd timed out"))?
                    .context("connecting to etcd")?;
                Writer::V3(client.kv_client())
            }
            Store::V2 => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                    .build(connector);
                Writer::V2 { http, base: url }
            }
        })
    }

    /// Puts `key` = `value` (v2: must be UTF-8, as v2 values are strings).
    pub async fn put(&mut self, key: &str, value: Vec<u8>) -> anyhow::Result<()> {
        let writing = async {
            match self {
                Writer::V3(kv) => {
                    kv.put(key, value, None).await?;
                    Ok(())
                }
                Writer::V2 { http, base } => v2_put(http, base, key, value).await,
            }
        };
        tokio::time::timeout(PUT_TIMEOUT, writing)
            .await
            .map_err(|_| anyhow!("put {key}: timed out"))?
            .with_context(|| format!("put {key}"))
    }

    /// Puts every item: v3 in batched transactions, v2 one PUT each from a few tasks.
    pub async fn load(&mut self, items: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        match self {
            Writer::V3(kv) => v3_load(kv, items).await,
            Writer::V2 { .. } => {
                let queue = Arc::new(Mutex::new(items));
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..V2_LOAD_TASKS {
                    let (queue, mut writer) = (queue.clone(), self.clone());
                    tasks.spawn(async move {
                        loop {
                            let next = queue.lock().expect("load queue").pop();
                            let Some((key, value)) = next else {
                                return Ok::<_, anyhow::Error>(());
                            };
                            writer.put(&key, value).await?;
                        }
                    });
                }
                while let Some(done) = tasks.join_next().await {
                    done??;
                }
                Ok(())
            }
        }
    }
}

async fn v2_put(
    http: &hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    base: &str,
    key: &str,
    value: Vec<u8>,
) -> anyhow::Result<()> {
    if !key
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'%' && b != b'?' && b != b'#')
    {
        bail!("{key:?}: only plain keys are written by this tool");
    }
    let value = String::from_utf8(value).context("v2 values are strings (UTF-8)")?;
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("value", &value)
        .finish();
    let request = hyper::Request::put(format!("{base}/v2/keys{key}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))?;
    let response = http.request(request).await?;
    let status = response.status().as_u16();
    let answer = response.into_body().collect().await?.to_bytes();
    if status != 200 && status != 201 {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&answer).trim());
    }
    Ok(())
}

async fn v3_load(kv: &mut KvClient, items: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    let mut ops = Vec::new();
    let mut size = 0;
    for (key, value) in items {
        if ops.len() == TXN_OPS || size + key.len() + value.len() > TXN_BYTES {
            txn(kv, std::mem::take(&mut ops)).await?;
            size = 0;
        }
        size += key.len() + value.len();
        ops.push(TxnOp::put(key, value, None));
    }
    if !ops.is_empty() {
        txn(kv, ops).await?;
    }
    Ok(())
}

async fn txn(kv: &mut KvClient, ops: Vec<TxnOp>) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(30), kv.txn(Txn::new().and_then(ops)))
        .await
        .map_err(|_| anyhow!("preload transaction timed out"))?
        .context("preload transaction")?;
    Ok(())
}

impl Writer {
    /// The store's current revision: v3 a one-key range's header revision, v2 the
    /// `X-Etcd-Index` of a GET.
    pub async fn current_revision(&mut self) -> anyhow::Result<i64> {
        let reading = async {
            match self {
                Writer::V3(kv) => {
                    let options = GetOptions::new()
                        .with_limit(1)
                        .with_keys_only()
                        .with_serializable();
                    let answer = kv.get("/", Some(options)).await?;
                    answer
                        .header()
                        .map(|h| h.revision())
                        .ok_or_else(|| anyhow!("a range without a header"))
                }
                Writer::V2 { http, base } => {
                    let request = hyper::Request::get(format!("{base}/v2/keys/"))
                        .body(Full::new(Bytes::new()))?;
                    let response = http.request(request).await?;
                    let index = response
                        .headers()
                        .get("x-etcd-index")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                        .ok_or_else(|| anyhow!("an answer without X-Etcd-Index"));
                    response.into_body().collect().await?;
                    index
                }
            }
        };
        tokio::time::timeout(PUT_TIMEOUT, reading)
            .await
            .map_err(|_| anyhow!("reading the revision timed out"))?
    }
}

/// Runs `work` with a writer to `store` of the etcd at `etcd` on a thread and current-thread
/// runtime of its own named `name` (so the writes' timing is not the clients'), and waits for
/// its result.
pub async fn on_own_thread<T, F, Fut>(
    name: &str,
    store: Store,
    etcd: SocketAddr,
    work: F,
) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(Writer) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    rt.block_on(async { work(Writer::connect(store, etcd).await?).await })
                });
            let _ = tx.send(result);
        })
        .with_context(|| format!("starting the {name} thread"))?;
    rx.await.map_err(|_| anyhow!("the {name} thread died"))?
}
