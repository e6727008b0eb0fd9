//! Streaming one watch on a connection taken back from hyper (spec §3).
//!
//! The task writes [`SSE_HEAD`] and then, each time the engine wakes it, every frame
//! [`Shared::poll_frame`] gives — one at a time, so that while a slow client is being written
//! to, newer states are conflated in the core rather than queued here. Between frames it also
//! reads (and drops) whatever the client sends: end of stream or an error means the client is
//! gone, and the engine is told. A frame marked `close` ends the stream, and so does shutdown.
//! Nothing here blocks anyone else: the engine lock is only taken to poll a frame.

use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::sync::Arc;

use lainlet_core::{Reply, Request, SubscriberId, SSE_HEAD};
use lainlet_shell_common::sniff::WatchRequest;
use lainlet_shell_common::sync::Notify;
use lainlet_shell_common::Shared;
use tokio::net::TcpStream;
use tracing::debug;

use crate::http::{close, discard};

/// Why a stream ended.
enum End {
    /// The engine closed it (after an `error` frame).
    Closed,
    /// The client went away or the socket failed.
    Gone(io::Error),
    /// The service is shutting down.
    Shutdown,
}

/// Serves the watch `request` on `tcp`, after writing `unwritten` (responses to earlier
/// requests on this connection that hyper produced but the socket had not taken yet).
pub async fn serve(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    unwritten: Vec<u8>,
    request: WatchRequest,
    peer: IpAddr,
) {
    let req = Request::new(request.method, &request.target);
    let opened = shared.request(&req, &shared.context(peer));
    let (id, notify) = match (opened.reply, opened.notify) {
        (Reply::Stream(id), Some(notify)) => (id, notify),
        (Reply::Response(r), _) => {
            // The core's is_watch and handle_request disagree: still answer properly.
            let mut bytes = unwritten;
            bytes.extend(r.to_http1(false));
            close(tcp, &bytes).await;
            return;
        }
        (Reply::Stream(id), None) => {
            shared.disconnect(id);
            return;
        }
    };
    debug!(%peer, target = %request.target, watch = id.0, "watch opened");
    let mut head = unwritten;
    head.extend_from_slice(SSE_HEAD);
    let wrote = write(shared, &tcp, &[&head]).await;
    drop(head);
    let end = match wrote {
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
}

async fn stream(shared: &Shared, tcp: &TcpStream, id: SubscriberId, notify: &Notify) -> End {
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
async fn wait(shared: &Shared, tcp: &TcpStream, notify: &Notify) -> Result<(), End> {
    loop {
        tokio::select! {
            () = notify.notified() => return Ok(()),
            ready = tcp.readable() => {
                ready.map_err(End::Gone)?;
                if !discard(tcp).map_err(End::Gone)? {
                    return Err(End::Gone(io::ErrorKind::UnexpectedEof.into()));
                }
            }
            () = shared.shut_down() => return Err(End::Shutdown),
        }
    }
}

/// Writes `parts` in order (vectored), giving up on shutdown.
async fn write(shared: &Shared, tcp: &TcpStream, parts: &[&[u8]]) -> Result<(), End> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        tokio::select! {
            ready = tcp.writable() => ready.map_err(End::Gone)?,
            () = shared.shut_down() => return Err(End::Shutdown),
        }
        let mut skip = done;
        let slices: Vec<IoSlice<'_>> = parts
            .iter()
            .filter_map(|p| {
                let rest = p.get(skip.min(p.len())..).filter(|r| !r.is_empty());
                skip = skip.saturating_sub(p.len());
                rest.map(IoSlice::new)
            })
            .collect();
        match tcp.try_write_vectored(&slices) {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(End::Gone(e)),
        }
    }
    Ok(())
}
