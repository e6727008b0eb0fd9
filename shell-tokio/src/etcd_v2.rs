//! etcd's v2 keys API for the production shell: hyper's pooled HTTP/1.1 client (hyper-util's
//! `legacy::Client` over tokio, rustls through hyper-rustls for `https://`) as the HTTP client of the common v2 client
//! (`lainlet_shell_common::etcd_v2`, which holds the time limits and the liveness check; the
//! protocol is `lainlet_core::v2`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lainlet_core::v2::{CLUSTER_ID_HEADER, INDEX_HEADER};
use lainlet_shell_common::etcd_tls::EtcdTls;
use lainlet_shell_common::http::{Head, HttpBody, HttpClient, Payload};
use lainlet_shell_common::rustls;

/// The connector: TCP, and rustls for `https://` endpoints.
type Connector = HttpsConnector<HttpConnector>;

/// hyper's pooled client over [`Connector`].
type PooledClient = Client<Connector, Full<Bytes>>;

/// hyper's client: connections to etcd are kept open and reused between requests; over TLS
/// with the etcd TLS files as they are (a new client, so new connections, once they change).
#[derive(Clone)]
pub struct Hyper {
    tls: Option<Arc<EtcdTls>>,
    /// The client, and the generation of the TLS files it was built with.
    client: Arc<Mutex<(u64, PooledClient)>>,
}

impl Hyper {
    /// A client that gives a connection attempt 3 s (as the gRPC client), with `tls`.
    pub fn new(tls: Option<Arc<EtcdTls>>) -> Hyper {
        let material = tls.as_ref().map(|t| t.current());
        let generation = material.as_ref().map_or(0, |m| m.generation);
        let client = build(material.map(|m| m.rustls_config()));
        Hyper {
            tls,
            client: Arc::new(Mutex::new((generation, client))),
        }
    }

    /// The client for the TLS files as they are now.
    fn client(&self) -> PooledClient {
        let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tls) = &self.tls {
            let material = tls.current();
            if material.generation != client.0 {
                *client = (material.generation, build(Some(material.rustls_config())));
            }
        }
        client.1.clone()
    }
}

/// A pooled client over TLS with `config` (without: `https://` URLs cannot be verified and
/// fail; start-up refuses them without `--etcd-ca`).
fn build(config: Option<Arc<rustls::ClientConfig>>) -> PooledClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(3)));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let config = config.map_or_else(lainlet_shell_common::etcd_tls::trusting_nobody, |c| {
        (*c).clone()
    });
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

impl HttpClient for Hyper {
    type Body = HyperBody;

    async fn send(
        &self,
        method: &'static str,
        url: String,
        authorization: Option<String>,
        body: Option<Payload>,
    ) -> anyhow::Result<Head<HyperBody>> {
        let mut request = hyper::Request::builder().method(method).uri(url.as_str());
        if let Some(value) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, value);
        }
        let body = match body {
            Some(body) => {
                request = request.header(hyper::header::CONTENT_TYPE, body.content_type);
                Full::new(Bytes::from(body.bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).context("building the request")?;
        let response = self.client().request(request).await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (etcd_index, cluster_id) = (header(INDEX_HEADER), header(CLUSTER_ID_HEADER));
        Ok(Head {
            status: response.status().as_u16(),
            etcd_index,
            cluster_id,
            body: HyperBody(response.into_body()),
        })
    }
}

/// An answer's body as hyper delivers it.
pub struct HyperBody(Incoming);

impl HttpBody for HyperBody {
    async fn chunk(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        loop {
            match self.0.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data.to_vec()));
                    }
                }
            }
        }
    }
}
