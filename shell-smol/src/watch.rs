//! Streaming one watch on its connection (spec §3), as an async task: no thread waits for an
//! idle watch; its cost is the task, the socket's registration with the reactor, and the
//! engine's subscriber slot.
//!
//! The task writes [`SSE_HEAD`] and then, each time the engine wakes it, every frame
//! [`Shared::poll_frame`] gives — one at a time, so that while a slow client is being written
//! to, newer states are conflated in the core rather than queued here. Between frames it also
//! reads (and drops) whatever the client sends: end of stream or an error means the client is
//! gone, and the engine is told. A frame marked `close` ends the stream, and so does shutdown.

use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, TcpStream};

use async_io::Async;
use lainlet_core::{Reply, Request, SubscriberId, SSE_HEAD};
use lainlet_shell_common::sniff::WatchRequest;
use lainlet_shell_common::sync::{first, Either, Notify};
use lainlet_shell_common::{OpenConnection, Shared};
use tracing::debug;

use crate::front::close;

/// Why a stream ended.
enum End {
    /// The engine closed it (after an `error` frame).
    Closed,
    /// The client went away or the socket failed.
    Gone(io::Error),
    /// The service is shutting down.
    Shutdown,
}

/// Serves the watch `request` on `tcp` until it ends; `open` counts the connection meanwhile.
pub async fn serve(
    shared: &Shared,
    tcp: Async<TcpStream>,
    request: WatchRequest,
    peer: IpAddr,
    open: OpenConnection,
) {
    let req = Request::new(request.method, &request.target);
    let opened = shared.request(&req, &shared.context(peer));
    let (id, notify) = match (opened.reply, opened.notify) {
        (Reply::Stream(id), Some(notify)) => (id, notify),
        (Reply::Response(r), _) => {
            // Refused (bad parameter, not ready, …): a plain response, then close.
            return close(tcp, &r.to_http1(false)).await;
        }
        (Reply::Stream(id), None) => return shared.disconnect(id),
    };
    debug!(%peer, target = %request.target, watch = id.0, "watch opened");
    let end = match write(shared, &tcp, &[SSE_HEAD]).await {
        Ok(()) => stream(shared, &tcp, id, &notify).await,
        Err(end) => end,
    };
    shared.disconnect(id);
    match end {
        End::Gone(e) => debug!(%peer, watch = id.0, "watch ended, client gone: {e}"),
        End::Closed | End::Shutdown => {
            debug!(%peer, watch = id.0, "watch ended by the server");
            close(tcp, &[]).await;
        }
    }
    drop(open);
}

async fn stream(shared: &Shared, tcp: &Async<TcpStream>, id: SubscriberId, notify: &Notify) -> End {
    loop {
        let Some(frame) = shared.poll_frame(id) else {
            if let Err(end) = wait(shared, tcp, notify).await {
                return end;
            }
            continue;
        };
        let id_line = frame.id_line();
        if let Err(end) = write(shared, tcp, &[id_line.as_bytes(), &frame.body]).await {
            return end;
        }
        if frame.close {
            return End::Closed;
        }
    }
}

/// Waits for a wake-up from the engine, dropping client bytes meanwhile.
async fn wait(shared: &Shared, tcp: &Async<TcpStream>, notify: &Notify) -> Result<(), End> {
    loop {
        let readable = async {
            tcp.readable().await?;
            discard(tcp.get_ref())
        };
        match first(first(notify.notified(), readable), shared.shut_down()).await {
            Either::Left(Either::Left(())) => return Ok(()),
            Either::Left(Either::Right(Ok(true))) => {}
            Either::Left(Either::Right(Ok(false))) => {
                return Err(End::Gone(io::ErrorKind::UnexpectedEof.into()));
            }
            Either::Left(Either::Right(Err(e))) => return Err(End::Gone(e)),
            Either::Right(()) => return Err(End::Shutdown),
        }
    }
}

/// Reads and drops what the client sent; `Ok(false)` once it has closed.
fn discard(mut tcp: &TcpStream) -> io::Result<bool> {
    let mut scratch = [0u8; 2048];
    loop {
        match tcp.read(&mut scratch) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes `parts` in order (vectored), giving up on shutdown.
async fn write(shared: &Shared, tcp: &Async<TcpStream>, parts: &[&[u8]]) -> Result<(), End> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        let writing = tcp.write_with(|mut s| {
            let mut skip = done;
            let slices: Vec<IoSlice<'_>> = parts
                .iter()
                .filter_map(|p| {
                    let rest = p.get(skip.min(p.len())..).filter(|r| !r.is_empty());
                    skip = skip.saturating_sub(p.len());
                    rest.map(IoSlice::new)
                })
                .collect();
            s.write_vectored(&slices)
        });
        match first(writing, shared.shut_down()).await {
            Either::Left(Ok(0)) => return Err(End::Gone(io::ErrorKind::WriteZero.into())),
            Either::Left(Ok(n)) => done += n,
            Either::Left(Err(e)) => return Err(End::Gone(e)),
            Either::Right(()) => return Err(End::Shutdown),
        }
    }
    Ok(())
}
