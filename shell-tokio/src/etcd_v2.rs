//! etcd's v2 keys API for the production shell: hyper's pooled HTTP/1.1 client (hyper-util's
//! `legacy::Client` over tokio) as the `GET` of the common v2 client
//! (`lainlet_shell_common::etcd_v2`, which holds the time limits and the liveness check; the
//! protocol is `lainlet_core::v2`).

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lainlet_core::v2::{CLUSTER_ID_HEADER, INDEX_HEADER};
use lainlet_shell_common::etcd_v2::{Head, HttpBody, HttpGet};

/// hyper's client: connections to etcd are kept open and reused between requests.
#[derive(Clone)]
pub struct Hyper(Client<HttpConnector, Empty<Bytes>>);

impl Hyper {
    /// A client that gives a connection attempt 3 s (as the gRPC client).
    pub fn new() -> Hyper {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Hyper(client)
    }
}

impl HttpGet for Hyper {
    type Body = HyperBody;

    async fn get(
        &self,
        url: String,
        authorization: Option<String>,
    ) -> anyhow::Result<Head<HyperBody>> {
        let mut request = hyper::Request::get(url.as_str());
        if let Some(value) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, value);
        }
        let request = request.body(Empty::new()).context("building the request")?;
        let response = self.0.request(request).await?;
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
