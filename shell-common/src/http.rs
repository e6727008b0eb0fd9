//! What a shell's HTTP/1.1 client lends the common etcd clients ([`crate::etcd_v2`], the v2
//! keys API; [`crate::gateway`], the v3 JSON gateway): one request sent, its answer's head,
//! and its body a piece at a time ([`HttpClient`]: hyper's client in `lainlet`,
//! trillium-client in `lainlet-smol`). Everything above that — paths, bodies, limits,
//! retries — is common.

use std::future::Future;

use anyhow::bail;

/// The head of an answer, and its body to read.
pub struct Head<B> {
    /// The HTTP status.
    pub status: u16,
    /// The `X-Etcd-Index` header, if any.
    pub etcd_index: Option<String>,
    /// The `X-Etcd-Cluster-Id` header, if any.
    pub cluster_id: Option<String>,
    /// The body, without its transfer encoding.
    pub body: B,
}

/// A request's body and its `Content-Type`.
pub struct Payload {
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub bytes: Vec<u8>,
}

impl Payload {
    /// An `application/x-www-form-urlencoded` body (the v2 keys API's writes).
    pub fn form(form: String) -> Payload {
        Payload {
            content_type: "application/x-www-form-urlencoded",
            bytes: form.into_bytes(),
        }
    }

    /// An `application/json` body (the v3 gateway's calls).
    pub fn json(bytes: Vec<u8>) -> Payload {
        Payload {
            content_type: "application/json",
            bytes,
        }
    }
}

/// One HTTP/1.1 request, as a shell's HTTP client sends it (connections pooled where etcd
/// allows, so a whole answer leaves its connection for the next request).
pub trait HttpClient: Clone + Send + Sync + 'static {
    /// An answer's body.
    type Body: HttpBody;

    /// Sends `method url` (`GET`, `PUT`, `DELETE`, `POST`) with `Authorization:
    /// authorization` and `body` if given, and returns the head.
    fn send(
        &self,
        method: &'static str,
        url: String,
        authorization: Option<String>,
        body: Option<Payload>,
    ) -> impl Future<Output = anyhow::Result<Head<Self::Body>>> + Send;

    /// Sends `GET url` (with `Authorization: authorization` if given) and returns the head.
    fn get(
        &self,
        url: String,
        authorization: Option<String>,
    ) -> impl Future<Output = anyhow::Result<Head<Self::Body>>> + Send {
        self.send("GET", url, authorization, None)
    }
}

/// The body of an answer, a piece at a time.
pub trait HttpBody: Send {
    /// The next bytes; `Ok(None)` at the end of the body. Dropping the future before it is
    /// ready must lose nothing (it is polled once to see what is ready).
    fn chunk(&mut self) -> impl Future<Output = anyhow::Result<Option<Vec<u8>>>> + Send;
}

/// A body read to its end; an error once it is longer than `max` bytes.
pub async fn read_all<B: HttpBody>(body: &mut B, max: usize) -> anyhow::Result<Vec<u8>> {
    let mut all = Vec::new();
    while let Some(chunk) = body.chunk().await? {
        if all.len().saturating_add(chunk.len()) > max {
            bail!("an answer larger than {max} bytes");
        }
        all.extend_from_slice(&chunk);
    }
    Ok(all)
}
