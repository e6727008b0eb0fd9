//! The public listener: accept with the connection limit, then for each connection read one
//! request head after another (async, no thread), stream watches here and pass plain requests
//! to tiny_http (see `backend.rs` for why it sits behind this front).
//!
//! Requests of a connection are answered in order: a plain request's response is written in
//! full before the next head is looked at, so a watch pipelined after GETs still gets the
//! exact SSE head right after their responses.

use std::io;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use async_executor::Executor;
use async_io::{Async, Timer};
use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use lainlet_core::Response;
use lainlet_shell_common::sniff::{sniff, Body, Sniffed, MAX_HEAD};
use lainlet_shell_common::sync::{first, Either};
use lainlet_shell_common::{OpenConnection, Shared};
use tracing::{debug, warn};

use crate::backend::{forward_head, Backend};
use crate::watch;

/// How long a finished connection waits for the client to close (so that the last bytes
/// written are not destroyed by a reset).
const LINGER: Duration = Duration::from_secs(1);

/// What a connection needs besides its socket.
pub struct Front {
    /// The engine and its companions.
    pub shared: Arc<Shared>,
    /// tiny_http, for plain requests.
    pub backend: Backend,
    /// Beyond this many open connections, a new one is answered `503` and closed.
    pub max_connections: usize,
}

/// Accepts connections until shutdown.
pub async fn serve(front: Arc<Front>, listener: Async<TcpListener>, ex: Arc<Executor<'static>>) {
    let shared = &front.shared;
    loop {
        let (tcp, peer) = match first(listener.accept(), shared.shut_down()).await {
            Either::Left(Ok(conn)) => conn,
            Either::Left(Err(e)) => {
                // Typically out of file descriptors: back off instead of spinning.
                warn!("accept failed: {e}");
                Timer::after(Duration::from_millis(50)).await;
                continue;
            }
            Either::Right(()) => return,
        };
        let _ = tcp.get_ref().set_nodelay(true);
        let open = shared.open_connection();
        if open.count > front.max_connections {
            drop(open);
            debug!(%peer, "connection refused: limit of {} reached", front.max_connections);
            ex.spawn(refuse(tcp, front.max_connections)).detach();
            continue;
        }
        let task = connection(front.clone(), tcp, peer.ip().to_canonical(), open);
        ex.spawn(task).detach();
    }
}

/// Serves one connection: request heads in order until it closes, a watch takes it over, or
/// shutdown finds it between requests.
async fn connection(front: Arc<Front>, tcp: Async<TcpStream>, peer: IpAddr, open: OpenConnection) {
    let shared = &front.shared;
    let mut buf = Vec::new();
    loop {
        let sniffed = loop {
            match sniff(&buf) {
                Sniffed::Partial => {}
                sniffed => break sniffed,
            }
            let read = match buf.is_empty() {
                // Between requests, shutdown ends an idle connection.
                true => match first(fill(&tcp, &mut buf), shared.shut_down()).await {
                    Either::Left(read) => read,
                    Either::Right(()) => return close(tcp, &[]).await,
                },
                false => fill(&tcp, &mut buf).await,
            };
            match read {
                Ok(0) if buf.is_empty() => return,
                Ok(0) => return close(tcp, &text(400, "400 Bad Request")).await,
                Ok(_) => {}
                Err(e) => return debug!(%peer, "connection ended: {e}"),
            }
        };
        let (head, body) = match sniffed {
            Sniffed::Watch { head: _, request } => {
                drop(buf);
                return watch::serve(shared, tcp, request, peer, open).await;
            }
            Sniffed::Plain { head, body } => (head, body),
            Sniffed::Partial | Sniffed::Invalid if buf.len() >= MAX_HEAD => {
                return close(tcp, &text(431, "431 Request Header Fields Too Large")).await;
            }
            Sniffed::Partial | Sniffed::Invalid => {
                return close(tcp, &text(400, "400 Bad Request")).await;
            }
        };
        let Some(forward) = forward_head(&buf[..head], peer) else {
            return close(tcp, &text(400, "400 Bad Request")).await;
        };
        buf.drain(..head);
        let response = match front.backend.exchange(&forward.head).await {
            Ok(r) if !r.is_empty() => r,
            // tiny_http refused the head without an answer (e.g. a header that is not ASCII).
            Ok(_) => return close(tcp, &text(400, "400 Bad Request")).await,
            Err(e) => {
                warn!(%peer, "the HTTP backend failed: {e}");
                return close(tcp, &text(500, "lainlet: internal error")).await;
            }
        };
        if let Err(e) = (&tcp).write_all(&response).await {
            return debug!(%peer, "connection ended: {e}");
        }
        drop(response);
        if !forward.keep_alive {
            return close(tcp, &[]).await;
        }
        let skipped = match body {
            Body::Length(n) => skip(&tcp, &mut buf, n).await,
            // Its end is not worth decoding for an API without request bodies.
            Body::Chunked => Ok(false),
        };
        if !matches!(skipped, Ok(true)) || shared.is_shutting_down() {
            return close(tcp, &[]).await;
        }
    }
}

/// Reads what the socket has onto the end of `buf`; `Ok(0)` at end of stream. An idle
/// connection waits without a buffer.
async fn fill(tcp: &Async<TcpStream>, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.is_empty() {
        *buf = Vec::new();
    }
    tcp.readable().await?;
    let start = buf.len();
    buf.resize(start + 4096, 0);
    let read = tcp
        .read_with(|s| io::Read::read(&mut &*s, &mut buf[start..]))
        .await;
    buf.truncate(start + *read.as_ref().unwrap_or(&0));
    read
}

/// Drops the `n` body bytes of the request just answered; `Ok(false)` if the client closed.
async fn skip(tcp: &Async<TcpStream>, buf: &mut Vec<u8>, mut n: u64) -> io::Result<bool> {
    loop {
        let here = n.min(buf.len() as u64) as usize;
        buf.drain(..here);
        n -= here as u64;
        if n == 0 {
            return Ok(true);
        }
        if fill(tcp, buf).await? == 0 {
            return Ok(false);
        }
    }
}

/// A plain-text response that ends the connection.
pub fn text(status: u16, body: &'static str) -> Vec<u8> {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        nosniff: false,
        body: Bytes::from_static(body.as_bytes()),
    }
    .to_http1(false)
}

/// Answers a connection beyond the limit with `503` and closes it.
async fn refuse(tcp: Async<TcpStream>, max_connections: usize) {
    let body = format!(
        "lainlet: too many open connections (the limit is {max_connections}); try again later\n"
    );
    let response = Response {
        status: 503,
        content_type: "text/plain; charset=utf-8",
        nosniff: false,
        body: Bytes::from(body),
    };
    close(tcp, &response.to_http1(false)).await;
}

/// Writes `last`, sends FIN, and waits (briefly) for the client to close, discarding what it
/// sends, so that the last bytes arrive rather than a reset.
pub async fn close(tcp: Async<TcpStream>, last: &[u8]) {
    let linger = async {
        (&tcp).write_all(last).await?;
        tcp.get_ref().shutdown(std::net::Shutdown::Write)?;
        let mut scratch = vec![0u8; 2048];
        while (&tcp).read(&mut scratch).await? > 0 {}
        Ok::<(), io::Error>(())
    };
    let _ = first(linger, Timer::after(LINGER)).await;
}
