//! The smol side of the common code: a [`Listener`](service::Listener) and a [`Socket`] over
//! `Async` TCP types, a [`Runtime`] over smol's timer, and the executor's threads.

use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use lainlet_shell_common::conn::ConnectionPolicy;
use lainlet_shell_common::service;
use lainlet_shell_common::socket::{Runtime, Socket};
use smol::{Async, Executor, Timer};

/// Runs `executor` on one more thread per core beyond the first (the main thread runs it
/// too): watches are written, and requests framed, on every core.
pub fn spawn_workers(executor: &Arc<Executor<'static>>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for i in 1..cores {
        let executor = executor.clone();
        let worker = move || smol::block_on(executor.run(std::future::pending::<()>()));
        if let Err(e) = std::thread::Builder::new()
            .name(format!("lainlet-smol-{i}"))
            .spawn(worker)
        {
            tracing::warn!("cannot start executor thread {i}: {e}");
        }
    }
}

/// smol's timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

impl Runtime for Smol {
    async fn sleep_until(&self, at: Instant) {
        Timer::at(at).await;
    }
}

/// An async-io TCP stream (non-blocking underneath) as a [`Socket`].
pub struct Tcp(pub Async<TcpStream>);

impl Socket for Tcp {
    async fn readable(&self) -> io::Result<()> {
        self.0.readable().await
    }

    async fn writable(&self) -> io::Result<()> {
        self.0.writable().await
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&mut self.0.get_ref()).read(buf)
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&mut self.0.get_ref()).write_vectored(bufs)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.0.get_ref().shutdown(std::net::Shutdown::Write)
    }
}

/// smol's listener; accepted sockets get TCP keepalive.
pub struct Listener(Async<TcpListener>, socket2::TcpKeepalive);

impl Listener {
    /// Registers a bound listener with async-io.
    pub fn new(listener: TcpListener, policy: &ConnectionPolicy) -> io::Result<Listener> {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(policy.keepalive)
            .with_interval((policy.keepalive / 5).max(std::time::Duration::from_secs(1)))
            .with_retries(3);
        Async::new(listener).map(|l| Listener(l, keepalive))
    }
}

impl service::Listener for Listener {
    type Socket = Tcp;

    async fn accept(&self) -> io::Result<(Tcp, SocketAddr)> {
        let (tcp, peer) = self.0.accept().await?;
        let _ = tcp.get_ref().set_nodelay(true);
        let _ = socket2::SockRef::from(tcp.get_ref()).set_tcp_keepalive(&self.1);
        Ok((Tcp(tcp), peer))
    }
}
