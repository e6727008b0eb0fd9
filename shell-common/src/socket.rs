//! What a shell lends the common connection code: a non-blocking socket with readiness futures
//! ([`Socket`]) and a timer ([`Runtime`]). Each shell implements both in a few lines over its
//! runtime's types; everything written on top of them here is shared.
//!
//! Also here: the small socket routines both shells need — vectored writes that give up on
//! shutdown, dropping what a client sends, and closing so that the last bytes arrive
//! ([`close`]), or refusing a connection with a response ([`refuse`]).

use std::future::Future;
use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use lainlet_core::Response;

use crate::sync::{first, Either};

/// How long a refused or finished connection waits for the client to close (so that the last
/// bytes written are not destroyed by a reset).
pub const LINGER: Duration = Duration::from_secs(1);

/// A connected, non-blocking TCP socket as the shell's runtime provides it.
pub trait Socket: Sync {
    /// Resolves when the socket may be readable (or has an error). Spurious wake-ups are
    /// allowed: [`Socket::try_read`] then says `WouldBlock`.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Resolves when the socket may be writable (or has an error).
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Reads what is there without waiting (`WouldBlock` when nothing is).
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes what fits without waiting (`WouldBlock` when nothing does).
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Sends FIN.
    fn shutdown_write(&self) -> io::Result<()>;
}

/// The shell's timer.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Resolves at `at`.
    fn sleep_until(&self, at: Instant) -> impl Future<Output = ()> + Send;

    /// Resolves after `d`.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        self.sleep_until(Instant::now() + d)
    }
}

/// Why writing stopped.
#[derive(Debug)]
pub enum WriteEnd {
    /// The client went away or the socket failed.
    Gone(io::Error),
    /// The `stop` future resolved first (shutdown).
    Stopped,
}

/// Writes `parts` in order (vectored), waiting for the socket as needed, until done or `stop`
/// resolves.
pub async fn write_parts<S: Socket>(
    sock: &S,
    parts: &[&[u8]],
    stop: impl Future<Output = ()>,
) -> Result<(), WriteEnd> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    let mut stop = std::pin::pin!(stop);
    while done < total {
        // The parts not yet written (a frame has two or three; no allocation for those).
        let mut skip = done;
        let mut slices = [IoSlice::new(&[]); 4];
        let mut count = 0;
        for p in parts {
            let rest = p.get(skip.min(p.len())..).unwrap_or_default();
            skip = skip.saturating_sub(p.len());
            if !rest.is_empty() && count < slices.len() {
                slices[count] = IoSlice::new(rest);
                count += 1;
            }
        }
        match sock.try_write_vectored(&slices[..count]) {
            Ok(0) => return Err(WriteEnd::Gone(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                done += n;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(WriteEnd::Gone(e)),
        }
        match first(sock.writable(), stop.as_mut()).await {
            Either::Left(ready) => ready.map_err(WriteEnd::Gone)?,
            Either::Right(()) => return Err(WriteEnd::Stopped),
        }
    }
    Ok(())
}

/// Reads and drops what the client sent; `Ok(false)` once it has closed.
pub fn discard<S: Socket>(sock: &S) -> io::Result<bool> {
    let mut scratch = [0u8; 2048];
    loop {
        match sock.try_read(&mut scratch) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes `last`, sends FIN, and waits (at most [`LINGER`]) for the client to close, dropping
/// what it sends, so that the last bytes arrive rather than a reset.
pub async fn close<S: Socket, R: Runtime>(rt: &R, sock: &S, last: &[u8]) {
    let linger = async {
        write_parts(sock, &[last], std::future::pending())
            .await
            .map_err(|_| ())?;
        sock.shutdown_write().map_err(|_| ())?;
        loop {
            sock.readable().await.map_err(|_| ())?;
            if !discard(sock).map_err(|_| ())? {
                return Ok::<(), ()>(());
            }
        }
    };
    let _ = first(linger, rt.sleep(LINGER)).await;
}

/// Answers a connection that will not be served with `response`, and closes it.
pub async fn refuse<S: Socket, R: Runtime>(rt: &R, sock: &S, response: &Response) {
    close(rt, sock, &response.to_http1(false)).await;
}
