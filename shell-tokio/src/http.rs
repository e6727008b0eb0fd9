//! The HTTP side: the accept loop with its connection limit, one hyper HTTP/1.1 connection per
//! socket, and the request → engine → response mapping.
//!
//! Every connection runs hyper over a [`SniffIo`] (see `io.rs` for why): hyper answers the
//! plain requests, and when the sniffer has withheld a watch request, hyper hands the socket
//! back and `watch.rs` streams the watch on it with the original's exact head.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::IpAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::StatusCode;
use lainlet_core::{Method, Reply, Request, Response};
use lainlet_shell_common::sniff::{MAX_HEAD, MAX_HEADERS};
use lainlet_shell_common::{OpenConnection, Shared};
use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, error, warn};

use crate::io::SniffIo;
use crate::watch;

/// How long a refused or finished connection waits for the client to close (so that the last
/// bytes written are not destroyed by a reset).
const LINGER: Duration = Duration::from_secs(1);

/// Accepts connections until shutdown. Beyond `max_connections` open connections, a new one
/// is answered `503` and closed.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, max_connections: usize) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shared.shut_down() => return,
        };
        let _ = tcp.set_nodelay(true);
        let open = shared.open_connection();
        if open.count > max_connections {
            drop(open);
            debug!(%peer, "connection refused: limit of {max_connections} reached");
            tokio::spawn(refuse(tcp, max_connections));
            continue;
        }
        tokio::spawn(serve_connection(
            shared.clone(),
            open,
            tcp,
            peer.ip().to_canonical(),
        ));
    }
}

async fn serve_connection(shared: Arc<Shared>, open: OpenConnection, tcp: TcpStream, peer: IpAddr) {
    let for_service = shared.clone();
    let service = service_fn(move |req| {
        std::future::ready(Ok::<_, Infallible>(answer(&for_service, peer, &req)))
    });
    let mut conn = http1::Builder::new()
        .half_close(true)
        .title_case_headers(true)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEAD)
        .serve_connection(SniffIo::new(tcp), service);
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
    let (tcp, unwritten, watch) = conn.into_parts().io.into_parts();
    match watch {
        Some(request) if result.is_ok() && !graceful => {
            // A task of its own: the memory of this (hyper-sized) one is released.
            tokio::spawn(async move {
                watch::serve(&shared, tcp, unwritten, request, peer).await;
                drop(open);
            });
        }
        _ => close(tcp, &unwritten).await,
    }
}

/// One plain request through the engine.
fn answer(
    shared: &Shared,
    peer: IpAddr,
    req: &hyper::Request<Incoming>,
) -> hyper::Response<OnceBody> {
    let method = Method::parse(req.method().as_str());
    let request = Request {
        method,
        path: req.uri().path(),
        query: req.uri().query().unwrap_or(""),
    };
    let opened = shared.request(&request, &shared.context(peer));
    let response = match opened.reply {
        Reply::Response(r) => r,
        Reply::Stream(id) => {
            // Unreachable: the sniffer takes every watch away from hyper.
            error!(%peer, uri = %req.uri(), "a watch request reached hyper; refusing it");
            shared.disconnect(id);
            Response {
                status: 500,
                content_type: "text/plain; charset=utf-8",
                nosniff: false,
                body: Bytes::from_static(b"lainlet: this watch request could not be served"),
            }
        }
    };
    debug!(%peer, method = %req.method(), uri = %req.uri(), status = response.status, "request");
    let mut out = hyper::Response::new(OnceBody(Some(response.body.clone())));
    *out.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    let headers = out.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(response.content_type),
    );
    if response.nosniff {
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(response.body.len()));
    if req.headers().contains_key(hyper::header::TRANSFER_ENCODING) {
        // The sniffer cannot follow a chunked request body: end the connection after it.
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    out
}

/// A response body held in memory (hyper omits it for HEAD, keeping `Content-Length`).
pub struct OnceBody(Option<Bytes>);

impl Body for OnceBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// Answers a connection beyond the limit with `503` and closes it.
async fn refuse(tcp: TcpStream, max_connections: usize) {
    let text = format!(
        "lainlet: too many open connections (the limit is {max_connections}); try again later\n"
    );
    let bytes = Response {
        status: 503,
        content_type: "text/plain; charset=utf-8",
        nosniff: false,
        body: Bytes::from(text),
    }
    .to_http1(false);
    let _ = tokio::time::timeout(LINGER, write_all(&tcp, &bytes)).await;
    close(tcp, &[]).await;
}

/// Writes `bytes` on a socket shared with readers (`&TcpStream`).
pub async fn write_all(tcp: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes what is left, sends FIN, and waits (briefly) for the client to close, discarding
/// what it sends, so that the last bytes arrive rather than a reset.
pub async fn close(mut tcp: TcpStream, unwritten: &[u8]) {
    let linger = async {
        write_all(&tcp, unwritten).await?;
        poll_fn(|cx| Pin::new(&mut tcp).poll_shutdown(cx)).await?;
        loop {
            tcp.readable().await?;
            if !discard(&tcp)? {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, linger).await;
}

/// Reads and drops what the client sent; `Ok(false)` once it has closed.
pub fn discard(tcp: &TcpStream) -> std::io::Result<bool> {
    let mut scratch = [0u8; 2048];
    match tcp.try_read(&mut scratch) {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(true),
        Err(e) => Err(e),
    }
}
