//! Each public connection, an async task over the request framer
//! (`lainlet_shell_common::framer`): it streams watches (the common watch loop), passes plain
//! requests to tiny_http (see `backend.rs` for why it sits behind this front), and refuses what
//! the framer refuses.
//!
//! Requests of a connection are answered in order: a plain request's response is written in
//! full before the next head is looked at, so a watch pipelined after GETs still gets the
//! exact SSE head right after their responses.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use lainlet_core::Response;
use lainlet_shell_common::conn::ConnectionPolicy;
use lainlet_shell_common::framer::{Action, Framer};
use lainlet_shell_common::sniff::Refusal;
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
    let mut framer = Framer::new(Instant::now(), front.policy);
    loop {
        let Some(action) = framer.poll_action() else {
            if let Err(e) = read(&front, &tcp, &mut framer).await {
                return match e {
                    Stop::Shutdown => close(&Smol, &tcp, &[]).await,
                    Stop::Failed(e) => debug!(%peer, "connection ended: {e}"),
                };
            }
            continue;
        };
        let len = match action {
            Action::Pass { len, start: true } => len,
            Action::Pass { len, start: false } => {
                // A body: no endpoint reads one.
                framer.handle_passed(Instant::now(), len);
                continue;
            }
            Action::TakeOver(request) => {
                // A task of its own, the size of the watch loop alone: this connection's
                // future (its framer, the backend exchange) is freed now, not kept for as long
                // as the watch lasts.
                let shared = shared.clone();
                let watch = async move {
                    watch::serve(&shared, &Smol, &tcp, &[], &request, peer).await;
                    drop(open);
                };
                return front.executor.spawn(watch).detach();
            }
            Action::Refuse(refusal) => {
                debug!(%peer, "refused: {refusal:?}");
                return refuse(&Smol, &tcp, &refusal.response()).await;
            }
            Action::TimedOut(waiting) => {
                debug!(%peer, "connection closed: waited too long for {waiting:?}");
                return match front.policy.timed_out(waiting) {
                    Some(response) => refuse(&Smol, &tcp, &response).await,
                    None => close(&Smol, &tcp, &[]).await,
                };
            }
            Action::End => return,
        };
        let Some(forward) = forward_head(&framer.buffered()[..len], peer) else {
            return refuse(&Smol, &tcp, &Refusal::Malformed.response()).await;
        };
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
        // The wait for the next request starts now that the response is out.
        framer.handle_passed(Instant::now(), len);
        if !forward.keep_alive || shared.is_shutting_down() {
            return close(&Smol, &tcp, &[]).await;
        }
    }
}

/// Why reading stopped.
enum Stop {
    /// Shutdown found the connection between requests.
    Shutdown,
    /// The socket failed.
    Failed(io::Error),
}

/// Reads what the socket has into the framer, or tells it the time when its deadline passes.
/// Shutdown ends a connection between requests.
async fn read(front: &Front, tcp: &Tcp, framer: &mut Framer) -> Result<(), Stop> {
    let deadline = framer.poll_timeout();
    let idle = framer.is_idle();
    let stop = async {
        match (deadline, idle) {
            (Some(at), true) => first(Smol.sleep_until(at), front.shared.shut_down()).await,
            (Some(at), false) => {
                Smol.sleep_until(at).await;
                Either::Left(())
            }
            (None, _) => std::future::pending().await,
        }
    };
    let mut chunk = [0u8; 4096];
    match first(fill(tcp, &mut chunk), stop).await {
        Either::Left(Ok(0)) => framer.handle_eof(),
        Either::Left(Ok(n)) => framer.handle_read(Instant::now(), &chunk[..n]),
        Either::Left(Err(e)) => return Err(Stop::Failed(e)),
        Either::Right(Either::Left(())) => framer.handle_timeout(Instant::now()),
        Either::Right(Either::Right(())) => return Err(Stop::Shutdown),
    }
    Ok(())
}

/// Reads what the socket has into `chunk`; `Ok(0)` at end of stream.
async fn fill(tcp: &Tcp, chunk: &mut [u8]) -> io::Result<usize> {
    loop {
        match tcp.try_read(chunk) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.readable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}
