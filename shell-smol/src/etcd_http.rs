//! trillium-client as the HTTP client of the common etcd clients (the v3 JSON gateway,
//! `lainlet_shell_common::gateway`, and the v2 keys API, `lainlet_shell_common::etcd_v2`;
//! the protocols and their limits are `lainlet_core`'s). etcd's v2 API answers HTTP/1.1
//! without `Connection: keep-alive`, so trillium opens one connection per v2 request.

use std::future::IntoFuture;

use lainlet_core::v2::{CLUSTER_ID_HEADER, INDEX_HEADER};
use lainlet_shell_common::http::{Head, HttpBody, HttpClient, Payload};
use smol::io::AsyncReadExt;
use trillium_client::Conn;

use crate::tls::EtcdHttp;

/// trillium-client on smol (TLS through [`crate::tls`]).
#[derive(Clone)]
pub struct Trillium(pub EtcdHttp);

impl HttpClient for Trillium {
    type Body = TrilliumBody;

    async fn send(
        &self,
        method: &'static str,
        url: String,
        authorization: Option<String>,
        body: Option<Payload>,
    ) -> anyhow::Result<Head<TrilliumBody>> {
        let client = self.0.client();
        let mut conn = match method {
            "PUT" => client.put(url.as_str()),
            "DELETE" => client.delete(url.as_str()),
            "POST" => client.post(url.as_str()),
            _ => client.get(url.as_str()),
        };
        if let Some(body) = body {
            conn = conn
                .with_request_header("Content-Type", body.content_type)
                .with_body(body.bytes);
        }
        if let Some(value) = authorization {
            conn = conn.with_request_header("Authorization", value);
        }
        let conn = conn.into_future().await?;
        let header = |name: &'static str| conn.response_headers().get_str(name).map(str::to_owned);
        let (etcd_index, cluster_id) = (header(INDEX_HEADER), header(CLUSTER_ID_HEADER));
        Ok(Head {
            status: conn.status().map_or(0, |s| s as u16),
            etcd_index,
            cluster_id,
            body: TrilliumBody(conn),
        })
    }
}

/// An answer's body, read from its connection.
pub struct TrilliumBody(Conn);

impl HttpBody for TrilliumBody {
    async fn chunk(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 16 * 1024];
        let mut body = self.0.response_body().with_max_len(u64::MAX);
        let n = body.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some(buf))
    }
}
