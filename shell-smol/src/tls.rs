//! The trillium connector of `lainlet-smol`'s etcd clients (v3 JSON gateway and v2 keys API):
//! TCP through trillium-smol, and rustls through futures-rustls for `https://` endpoints,
//! verified against `--etcd-ca` (by IP address or DNS name, as the endpoint names etcd).
//! [`EtcdHttp`] rebuilds its client when the TLS files change on disk, so the next connection
//! uses a rotated certificate. A TLS failure is an error of that connection (no plaintext
//! fallback).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use lainlet_shell_common::etcd_tls::EtcdTls;
use lainlet_shell_common::rustls;
use rustls::pki_types::ServerName;
use trillium_client::{async_trait, Client, Connector, Url};
use trillium_server_common::{AsyncRead, AsyncWrite, Transport};
use trillium_smol::ClientConfig;

/// A trillium client for etcd, rebuilt when the TLS files change.
#[derive(Clone)]
pub struct EtcdHttp {
    tls: Option<Arc<EtcdTls>>,
    /// The client, and the generation of the TLS files it was built with.
    client: Arc<Mutex<(u64, Client)>>,
}

impl EtcdHttp {
    /// A client over `tls` if given (else plain `http://` only).
    pub fn new(tls: Option<Arc<EtcdTls>>) -> EtcdHttp {
        let material = tls.as_ref().map(|t| t.current());
        let generation = material.as_ref().map_or(0, |m| m.generation);
        let client = build(material.map(|m| m.rustls_config()));
        EtcdHttp {
            tls,
            client: Arc::new(Mutex::new((generation, client))),
        }
    }

    /// The client for the TLS files as they are now.
    pub fn client(&self) -> Client {
        let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tls) = &self.tls {
            let material = tls.current();
            if material.generation != client.0 {
                *client = (material.generation, build(Some(material.rustls_config())));
            }
        }
        client.1.clone()
    }
}

fn build(config: Option<Arc<rustls::ClientConfig>>) -> Client {
    Client::new(EtcdConnector {
        tcp: ClientConfig::new().with_nodelay(true),
        tls: config.map(TlsConnector::from),
    })
}

/// TCP, and TLS for `https://`.
struct EtcdConnector {
    tcp: ClientConfig,
    tls: Option<TlsConnector>,
}

#[async_trait]
impl Connector for EtcdConnector {
    type Transport = EtcdTransport<<ClientConfig as Connector>::Transport>;

    async fn connect(&self, url: &Url) -> io::Result<Self::Transport> {
        match url.scheme() {
            "http" => Ok(EtcdTransport::Plain(self.tcp.connect(url).await?)),
            "https" => {
                let Some(tls) = &self.tls else {
                    return Err(io::Error::other("https:// needs --etcd-ca"));
                };
                let host = url
                    .host_str()
                    .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                    .ok_or_else(|| io::Error::other("an https:// URL without a host"))?;
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|e| io::Error::other(format!("server name {host:?}: {e}")))?;
                let mut plain = url.clone();
                let _ = plain.set_scheme("http");
                let _ = plain.set_port(url.port_or_known_default());
                let tcp = self.tcp.connect(&plain).await?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| io::Error::other(format!("TLS handshake: {e}")))?;
                Ok(EtcdTransport::Tls(Box::new(stream)))
            }
            other => Err(io::Error::other(format!("unknown scheme {other}://"))),
        }
    }

    fn spawn<Fut: std::future::Future<Output = ()> + Send + 'static>(&self, fut: Fut) {
        self.tcp.spawn(fut)
    }
}

/// A connection to etcd: plain, or TLS.
#[derive(Debug)]
enum EtcdTransport<T> {
    Plain(T),
    Tls(Box<TlsStream<T>>),
}

impl<T: Transport> Transport for EtcdTransport<T> {
    fn peer_addr(&self) -> io::Result<Option<std::net::SocketAddr>> {
        match self {
            EtcdTransport::Plain(t) => t.peer_addr(),
            EtcdTransport::Tls(t) => t.get_ref().0.peer_addr(),
        }
    }

    fn set_nodelay(&mut self, nodelay: bool) -> io::Result<()> {
        match self {
            EtcdTransport::Plain(t) => t.set_nodelay(nodelay),
            EtcdTransport::Tls(t) => t.get_mut().0.set_nodelay(nodelay),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for EtcdTransport<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EtcdTransport::Plain(t) => Pin::new(t).poll_read(cx, buf),
            EtcdTransport::Tls(t) => Pin::new(&mut **t).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for EtcdTransport<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EtcdTransport::Plain(t) => Pin::new(t).poll_write(cx, buf),
            EtcdTransport::Tls(t) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EtcdTransport::Plain(t) => Pin::new(t).poll_flush(cx),
            EtcdTransport::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EtcdTransport::Plain(t) => Pin::new(t).poll_close(cx),
            EtcdTransport::Tls(t) => Pin::new(&mut **t).poll_close(cx),
        }
    }
}
