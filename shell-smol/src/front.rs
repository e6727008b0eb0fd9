//! Each public connection: read one request head after another (async, no thread), stream watches (the common watch loop), pass
//! plain requests to tiny_http (see `backend.rs` for why it sits behind this front), and refuse
//! what the sniffer refuses.
//!
//! Requests of a connection are answered in order: a plain request's response is written in
//! full before the next head is looked at, so a watch pipelined after GETs still gets the
//! exact SSE head right after their responses.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use lainlet_core::Response;
use lainlet_shell_common::conn::{ConnectionPolicy, Waiting};
use lainlet_shell_common::sniff::{sniff, Body, Refusal, Sniffed};
use lainlet_shell_common::socket::{close, refuse, write_parts, Runtime, Socket};
use lainlet_shell_common::sync::{first, Either};
use lainlet_shell_common::{watch, OpenConnection, Shared};
use tracing::{debug, warn};

use smol::Executor;

use crate::backend::{forward_head, Backend};
use crate::rt::{Smol, Tcp};

/// What a connection needs besides its socket.
pub struct Front {
    /// The engine and its companions.
    pub shared: Arc<Shared>,
    /// tiny_http, for plain requests.
    pub backend: Backend,
    /// Head and idle timeouts.
    pub policy: ConnectionPolicy,
    /// Where a watch gets a task of its own.
    pub executor: Arc<Executor<'static>>,
}

/// Serves one connection: request heads in order until it closes, a watch takes it over, or
/// shutdown finds it between requests.
pub async fn connection(front: Arc<Front>, tcp: Tcp, peer: IpAddr, open: OpenConnection) {
    let shared = &front.shared;
    let mut buf = Vec::new();
    loop {
        let mut waiting = (Waiting::Request, Instant::now());
        let sniffed = loop {
            match sniff(&buf) {
                Sniffed::Partial => {}
                sniffed => break sniffed,
            }
            if !buf.is_empty() && waiting.0 == Waiting::Request {
                waiting = (Waiting::Head, Instant::now());
            }
            let deadline = Smol.sleep_until(front.policy.deadline(waiting.0, waiting.1));
            // Shutdown ends a connection between requests, a deadline any waiting one.
            let idle = buf.is_empty();
            let stop = async {
                match idle {
                    true => first(deadline, shared.shut_down()).await,
                    false => {
                        deadline.await;
                        Either::Left(())
                    }
                }
            };
            let read = match first(fill(&tcp, &mut buf), stop).await {
                Either::Left(read) => read,
                Either::Right(Either::Right(())) => return close(&Smol, &tcp, &[]).await,
                Either::Right(Either::Left(())) => {
                    debug!(%peer, "connection closed: waited too long for {:?}", waiting.0);
                    return match front.policy.timed_out(waiting.0) {
                        Some(response) => refuse(&Smol, &tcp, &response).await,
                        None => close(&Smol, &tcp, &[]).await,
                    };
                }
            };
            match read {
                Ok(0) if buf.is_empty() => return,
                Ok(0) => break Sniffed::Refuse(Refusal::Malformed),
                Ok(_) => {}
                Err(e) => return debug!(%peer, "connection ended: {e}"),
            }
        };
        let (head, body) = match sniffed {
            Sniffed::Watch { request, .. } => {
                // A task of its own, the size of the watch loop alone: this connection's
                // future (its read buffer, the backend exchange) is freed now, not kept for
                // as long as the watch lasts.
                let shared = shared.clone();
                let watch = async move {
                    watch::serve(&shared, &Smol, &tcp, &[], &request, peer).await;
                    drop(open);
                };
                return front.executor.spawn(watch).detach();
            }
            Sniffed::Refuse(refusal) => {
                debug!(%peer, "refused: {refusal:?}");
                return refuse(&Smol, &tcp, &refusal.response()).await;
            }
            Sniffed::Plain { head, body } => (head, body),
            Sniffed::Partial => unreachable!("the loop above reads until a full head"),
        };
        let Some(forward) = forward_head(&buf[..head], peer) else {
            return refuse(&Smol, &tcp, &Refusal::Malformed.response()).await;
        };
        buf.drain(..head);
        let response = match front.backend.exchange(&forward.head).await {
            Ok(r) => r,
            Err(e) => {
                warn!(%peer, "the HTTP backend failed: {e}");
                let r = Response::text(500, "lainlet: internal error");
                return refuse(&Smol, &tcp, &r).await;
            }
        };
        if let Err(e) = write_parts(&tcp, &[&response], std::future::pending()).await {
            return debug!(%peer, "connection ended: {e:?}");
        }
        drop(response);
        let skipped = match body {
            Body::Length(n) if forward.keep_alive => skip(&tcp, &mut buf, n).await,
            // A chunked body's end is not worth decoding for an API that reads no body.
            _ => Ok(false),
        };
        if !matches!(skipped, Ok(true)) || shared.is_shutting_down() {
            return close(&Smol, &tcp, &[]).await;
        }
    }
}

/// Reads what the socket has onto the end of `buf`; `Ok(0)` at end of stream. An idle
/// connection waits without a buffer.
async fn fill(tcp: &Tcp, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.is_empty() {
        *buf = Vec::new();
    }
    let mut chunk = [0u8; 4096];
    loop {
        match tcp.try_read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.readable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Drops the `n` body bytes of the request just answered; `Ok(false)` if the client closed.
async fn skip(tcp: &Tcp, buf: &mut Vec<u8>, mut n: u64) -> io::Result<bool> {
    loop {
        let here = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
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
