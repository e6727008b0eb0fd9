//! The HTTP side: one hyper HTTP/1.1 connection per socket, and the engine's responses as
//! hyper responses.
//!
//! Every connection runs hyper over a [`SniffIo`] (see `io.rs` for why): hyper answers the
//! plain requests; when the sniffer has withheld a watch request or refused a head, hyper hands
//! the socket back and the common code streams the watch or writes the refusal.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::IpAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::StatusCode;
use lainlet_shell_common::conn::ConnectionPolicy;
use lainlet_shell_common::sniff::{MAX_HEAD, MAX_HEADERS};
use lainlet_shell_common::socket::close;
use lainlet_shell_common::{watch, OpenConnection, Shared};
use tracing::debug;

use crate::io::{SniffIo, Takeover};
use crate::rt::{Tcp, Tokio};

/// Serves one connection: hyper for its plain requests, then the watch or refusal the
/// sniffer took away from hyper, if any.
pub async fn serve_connection(
    shared: Arc<Shared>,
    open: OpenConnection,
    tcp: tokio::net::TcpStream,
    peer: IpAddr,
    policy: ConnectionPolicy,
) {
    let for_service = shared.clone();
    let service = service_fn(move |req| {
        std::future::ready(Ok::<_, Infallible>(answer(&for_service, peer, &req)))
    });
    let mut conn = http1::Builder::new()
        .half_close(true)
        .title_case_headers(true)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEAD)
        .serve_connection(SniffIo::new(tcp, policy), service);
    let for_shutdown = shared.clone();
    let mut down = pin!(for_shutdown.shut_down());
    let mut graceful = false;
    let result = poll_fn(|cx| {
        if !graceful && down.as_mut().poll(cx).is_ready() {
            graceful = true;
            Pin::new(&mut conn).graceful_shutdown();
        }
        conn.poll_without_shutdown(cx)
    })
    .await;
    if let Err(e) = &result {
        debug!(%peer, "connection ended: {e}");
    }
    let (tcp, unwritten, takeover) = conn.into_parts().io.into_parts();
    let tcp = Tcp(tcp);
    match takeover {
        Some(Takeover::Watch(request)) if result.is_ok() && !graceful => {
            // A task of its own: the memory of this (hyper-sized) one is released.
            tokio::spawn(async move {
                watch::serve(&shared, &Tokio, &tcp, &unwritten, &request, peer).await;
                drop(open);
            });
        }
        Some(Takeover::Refuse(refusal)) if result.is_ok() => {
            debug!(%peer, "refused: {refusal:?}");
            let mut bytes = unwritten;
            bytes.extend(refusal.response().to_http1(false));
            close(&Tokio, &tcp, &bytes).await;
        }
        Some(Takeover::TimedOut(waiting)) if result.is_ok() => {
            debug!(%peer, "connection closed: waited too long for {waiting:?}");
            let mut bytes = unwritten;
            if let Some(response) = policy.timed_out(waiting) {
                bytes.extend(response.to_http1(false));
            }
            close(&Tokio, &tcp, &bytes).await;
        }
        _ => close(&Tokio, &tcp, &unwritten).await,
    }
}

/// One plain request through the engine, as a hyper response.
fn answer(
    shared: &Shared,
    peer: IpAddr,
    req: &hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let response = shared.answer(req.method().as_str(), target, peer);
    // hyper omits the body for HEAD, keeping `Content-Length`.
    let mut out = hyper::Response::new(Full::new(response.body.clone()));
    *out.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    let headers = out.headers_mut();
    for (name, value) in response.headers() {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(response.body.len()));
    if req.headers().contains_key(hyper::header::TRANSFER_ENCODING) {
        // The sniffer cannot follow a chunked request body: end the connection after it.
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    out
}
