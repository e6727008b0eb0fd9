//! Streaming one watch on a connection the shell has taken over (spec §3), written once for
//! both shells over [`Socket`].
//!
//! The task writes [`SSE_HEAD`] and then, each time the engine wakes it, every frame
//! [`Shared::poll_frame`] gives — one at a time, so that while a slow client is being written
//! to, newer states are conflated in the core rather than queued here. Between frames it also
//! reads (and drops) whatever the client sends: end of stream or an error means the client is
//! gone, and the engine is told. A frame marked `close` ends the stream, and so does shutdown.
//! Nothing here blocks anyone else: the engine lock is only taken to poll a frame.

use std::io;
use std::net::IpAddr;

use lainlet_core::{Request, SubscriberId, SSE_HEAD};
use tracing::debug;

use crate::sniff::WatchRequest;
use crate::socket::{close, discard, write_parts, Runtime, Socket, WriteEnd};
use crate::sync::{first, Either, Notify};
use crate::{Opened, Shared};

/// Why a stream ended.
enum End {
    /// The engine closed it (after an `error` frame).
    Closed,
    /// The client went away or the socket failed.
    Gone(io::Error),
    /// The service is shutting down.
    Shutdown,
}

impl From<WriteEnd> for End {
    fn from(end: WriteEnd) -> End {
        match end {
            WriteEnd::Gone(e) => End::Gone(e),
            WriteEnd::Stopped => End::Shutdown,
        }
    }
}

/// Serves the watch `request` from `peer` on `sock` until it ends, after writing `unwritten`
/// (responses to earlier requests on this connection the socket had not taken yet). A request
/// the engine answers plainly (bad parameter, not ready, …) gets that response, then the
/// connection closes.
pub async fn serve<S: Socket, R: Runtime>(
    shared: &Shared,
    rt: &R,
    sock: &S,
    unwritten: &[u8],
    request: &WatchRequest,
    peer: IpAddr,
) {
    let req = Request::new(request.method, &request.target)
        .with_last_event_id(request.last_event_id.as_deref());
    let (id, notify) = match shared.request(&req, &shared.context(peer)) {
        Opened::Stream { id, notify } => (id, notify),
        Opened::Response(r) => {
            let mut bytes = unwritten.to_vec();
            bytes.extend(r.to_http1(false));
            return close(rt, sock, &bytes).await;
        }
    };
    debug!(%peer, target = %request.target, watch = id.0, "watch opened");
    let end = match write_parts(sock, &[unwritten, SSE_HEAD], shared.shut_down()).await {
        Ok(()) => stream(shared, sock, id, &notify).await,
        Err(end) => end.into(),
    };
    shared.disconnect(id);
    match end {
        End::Gone(e) => debug!(%peer, watch = id.0, "watch ended, client gone: {e}"),
        End::Closed | End::Shutdown => {
            debug!(%peer, watch = id.0, "watch ended by the server");
            close(rt, sock, &[]).await;
        }
    }
}

async fn stream<S: Socket>(shared: &Shared, sock: &S, id: SubscriberId, notify: &Notify) -> End {
    loop {
        let Some(frame) = shared.poll_frame(id) else {
            if let Err(end) = wait(shared, sock, notify).await {
                return end;
            }
            continue;
        };
        let id_line = frame.id_line();
        let parts = [id_line.as_bytes(), &frame.body];
        if let Err(end) = write_parts(sock, &parts, shared.shut_down()).await {
            return end.into();
        }
        if frame.close {
            return End::Closed;
        }
    }
}

/// Waits for a wake-up from the engine, dropping client bytes meanwhile. Shutdown wakes the
/// watch the same way ([`Shared::begin_shutdown`]), so no watch registers with the shutdown
/// latch for each frame.
async fn wait<S: Socket>(shared: &Shared, sock: &S, notify: &Notify) -> Result<(), End> {
    loop {
        if shared.is_shutting_down() {
            return Err(End::Shutdown);
        }
        let readable = async {
            sock.readable().await?;
            discard(sock)
        };
        match first(notify.notified(), readable).await {
            Either::Left(()) if shared.is_shutting_down() => return Err(End::Shutdown),
            Either::Left(()) => return Ok(()),
            Either::Right(Ok(true)) => {}
            Either::Right(Ok(false)) => {
                return Err(End::Gone(io::ErrorKind::UnexpectedEof.into()));
            }
            Either::Right(Err(e)) => return Err(End::Gone(e)),
        }
    }
}
