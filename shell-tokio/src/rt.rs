//! The tokio side of the common code: a [`Listener`](service::Listener) and a [`Socket`] over
//! tokio's TCP types, and a [`Runtime`] over its timer.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::Instant;

use lainlet_shell_common::conn::ConnectionPolicy;
use lainlet_shell_common::service;
use lainlet_shell_common::socket::{Runtime, Socket};
use tokio::net::{TcpListener, TcpStream};

/// tokio's timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    fn sleep_until(&self, at: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(at.into())
    }
}

/// A tokio TCP stream as a [`Socket`].
pub struct Tcp(pub TcpStream);

impl Socket for Tcp {
    async fn readable(&self) -> io::Result<()> {
        self.0.readable().await
    }

    async fn writable(&self) -> io::Result<()> {
        self.0.writable().await
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.0).shutdown(std::net::Shutdown::Write)
    }
}

/// tokio's listener; accepted sockets get TCP keepalive.
pub struct Listener(TcpListener, socket2::TcpKeepalive);

impl Listener {
    /// Registers a bound, non-blocking listener with tokio.
    pub fn new(listener: std::net::TcpListener, policy: &ConnectionPolicy) -> io::Result<Listener> {
        TcpListener::from_std(listener).map(|l| Listener(l, keepalive(policy)))
    }
}

/// TCP keepalive after `policy.keepalive` of silence, then probes every fifth of it, three
/// times.
fn keepalive(policy: &ConnectionPolicy) -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(policy.keepalive)
        .with_interval((policy.keepalive / 5).max(std::time::Duration::from_secs(1)))
        .with_retries(3)
}

impl service::Listener for Listener {
    type Socket = Tcp;

    async fn accept(&self) -> io::Result<(Tcp, SocketAddr)> {
        let (tcp, peer) = self.0.accept().await?;
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&self.1);
        Ok((Tcp(tcp), peer))
    }
}
