//! etcd's v2 keys API for the smol shell: trillium-client as the `GET` of the common v2
//! client (`lainlet_shell_common::etcd_v2`; the protocol and its limits are
//! `lainlet_core`'s). etcd answers HTTP/1.1 without
//! `Connection: keep-alive`, so trillium opens one connection per request.

use std::future::IntoFuture;

use lainlet_core::v2::{CLUSTER_ID_HEADER, INDEX_HEADER};
use lainlet_shell_common::etcd_v2::{Head, HttpBody, HttpGet};
use smol::io::AsyncReadExt;
use trillium_client::Conn;

use crate::tls::EtcdHttp;

/// trillium-client on smol (TLS through [`crate::tls`]).
#[derive(Clone)]
pub struct Trillium(pub EtcdHttp);

impl HttpGet for Trillium {
    type Body = TrilliumBody;

    async fn get(
        &self,
        url: String,
        authorization: Option<String>,
    ) -> anyhow::Result<Head<TrilliumBody>> {
        self.send("GET", url, authorization, None).await
    }

    async fn send(
        &self,
        method: &'static str,
        url: String,
        authorization: Option<String>,
        form: Option<String>,
    ) -> anyhow::Result<Head<TrilliumBody>> {
        let client = self.0.client();
        let mut conn = match method {
            "PUT" => client.put(url.as_str()),
            "DELETE" => client.delete(url.as_str()),
            _ => client.get(url.as_str()),
        };
        if let Some(form) = form {
            conn = conn
                .with_request_header("Content-Type", "application/x-www-form-urlencoded")
                .with_body(form);
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
