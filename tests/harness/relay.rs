//! A TCP relay that makes a client's connections reach a server from a chosen source address:
//! the client connects to the relay on 127.0.0.1, and the relay connects on to the target
//! bound to e.g. 127.0.0.5, so the server sees 127.0.0.5 as its peer. For clients that cannot
//! bind their own source address (grpcio) in tests of authorisation by peer address.
//!
//! Bytes are copied both ways by two threads per connection; a half-close is passed on. On
//! drop the relay stops accepting and closes every relayed connection.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::http::HttpClient;

/// A running relay (see the module docs).
#[derive(Debug)]
pub struct Relay {
    addr: String,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    /// Relays connections made to [`Relay::addr`] to `target` (`host:port`), connecting from
    /// source address `source_ip`.
    pub fn start(target: &str, source_ip: &str) -> io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let client = HttpClient::from_ip(source_ip);
        let target = target.to_owned();
        let (stop2, open2) = (stop.clone(), open.clone());
        let accept = thread::spawn(move || {
            for downstream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(downstream) = downstream else { continue };
                let Ok(upstream) = client.connect(&target) else {
                    continue; // dropping `downstream` tells the client
                };
                relay(downstream, upstream, &open2);
            }
        });
        Ok(Relay {
            addr,
            stop,
            open,
            accept: Some(accept),
        })
    }

    /// The address clients connect to (`127.0.0.1:<port>`).
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

fn relay(downstream: TcpStream, upstream: TcpStream, open: &Mutex<Vec<TcpStream>>) {
    let streams = [&downstream, &upstream];
    for s in streams {
        let _ = s.set_read_timeout(None);
        let _ = s.set_write_timeout(None);
    }
    if let (Ok(d), Ok(u)) = (downstream.try_clone(), upstream.try_clone()) {
        let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
        open.push(d);
        open.push(u);
    }
    let (Ok(d2), Ok(u2)) = (downstream.try_clone(), upstream.try_clone()) else {
        return;
    };
    thread::spawn(move || copy(downstream, upstream));
    thread::spawn(move || copy(u2, d2));
}

/// Copies `from` to `to` until end of stream or an error, then half-closes `to`.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr); // wake the accept loop
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for s in self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
