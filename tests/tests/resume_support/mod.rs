//! Helpers shared by the resume tests (`e2e_resume.rs`, `e2e_resume_clients.rs`): diff
//! patches as the contract of issue #12 defines them, deployd values to change, and [`Gate`],
//! a proxy in front of lainlet that cuts and holds client connections and records them.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use lainlet_fixtures::{keys, original_pod_groups, pod_group_value};
use lainlet_tests::{Frame, SseParser};
use serde_json::Value;

/// The members of a patch as the contract defines them: `put` (absent = none) and `delete`
/// (absent = none). Panics on anything else in it.
pub fn patch_parts(patch: &Value) -> (BTreeMap<String, Value>, BTreeSet<String>) {
    let obj = patch
        .as_object()
        .unwrap_or_else(|| panic!("a patch is an object: {patch}"));
    for k in obj.keys() {
        assert!(
            k == "put" || k == "delete",
            "unknown patch member {k:?} in {patch}"
        );
    }
    let put = match obj.get("put") {
        None => BTreeMap::new(),
        Some(p) => p
            .as_object()
            .unwrap_or_else(|| panic!("put is an object: {patch}"))
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let delete: Vec<String> = match obj.get("delete") {
        None => Vec::new(),
        Some(d) => d
            .as_array()
            .unwrap_or_else(|| panic!("delete is an array: {patch}"))
            .iter()
            .map(|k| {
                k.as_str()
                    .unwrap_or_else(|| panic!("delete holds keys: {patch}"))
                    .to_owned()
            })
            .collect(),
    };
    let set: BTreeSet<String> = delete.iter().cloned().collect();
    assert_eq!(set.len(), delete.len(), "a key deleted twice: {patch}");
    assert!(
        put.keys().all(|k| !set.contains(k)),
        "a key both put and deleted: {patch}"
    );
    (put, set)
}

/// What a patch from `old` to `new` must hold: every top-level member that is new or has
/// another value, and every member that is gone.
pub fn expected_patch(old: &Value, new: &Value) -> (BTreeMap<String, Value>, BTreeSet<String>) {
    let (old, new) = (old.as_object().unwrap(), new.as_object().unwrap());
    let put = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let delete = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    (put, delete)
}

/// A client applying a patch to what it holds.
pub fn apply_patch(state: &Value, patch: &Value) -> Value {
    let (put, delete) = patch_parts(patch);
    let mut out = state.as_object().expect("a diff view is an object").clone();
    for (k, v) in put {
        out.insert(k, v);
    }
    for k in delete {
        out.remove(&k);
    }
    Value::Object(out)
}

/// `hello.web.web` with its second container's IP set to `ip` (a deployd value).
pub fn hello_web_with_ip(ip: &str) -> (String, Vec<u8>) {
    let mut p = original_pod_groups()[0].clone();
    assert_eq!(p.name, "hello.web.web");
    p.pods[1].containers[0].container_ip = ip.to_owned();
    (p.key(), pod_group_value(&p))
}

/// A new pod group `hello.worker.extra` (a copy of `hello.worker.cron` on node 1).
pub fn extra_pod_group() -> (String, Vec<u8>) {
    let mut p = original_pod_groups()[1].clone();
    assert_eq!(p.name, "hello.worker.cron");
    p.name = "hello.worker.extra".to_owned();
    p.pods[0].containers[0].container_ip = "172.20.0.44".to_owned();
    p.pods[0].containers[0].id = "7".repeat(64);
    (p.key(), pod_group_value(&p))
}

/// `/lain/deployd/pod_groups/hello/hello.worker.cron`.
pub fn cron_key() -> String {
    keys::pod_group("hello", "hello.worker.cron")
}

/// `/lain/deployd/pod_groups/redis/redis.worker.redis`.
pub fn redis_key() -> String {
    keys::pod_group("redis", "redis.worker.redis")
}

/// One connection through a [`Gate`]: what the client sent (its first 16 KiB) and what came
/// back (its first 4 MiB).
#[derive(Clone, Debug, Default)]
pub struct GateConn {
    /// The client's bytes.
    pub request: Vec<u8>,
    /// The server's bytes.
    pub response: Vec<u8>,
}

impl GateConn {
    /// The head of the connection's last request (a browser may send its watch on a kept-alive
    /// connection after another request; a watch is always the last one).
    fn last_request(&self) -> String {
        let text = String::from_utf8_lossy(&self.request);
        let heads: Vec<&str> = text.split("\r\n\r\n").filter(|h| !h.is_empty()).collect();
        heads.last().copied().unwrap_or_default().to_owned()
    }

    /// The last request's target (`/v2/…?…`), from its request line.
    pub fn path(&self) -> String {
        let head = self.last_request();
        head.split(' ').nth(1).unwrap_or_default().to_owned()
    }

    /// A header of the last request (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.last_request().lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// The SSE frames of the last response (the body after its head).
    pub fn frames(&self) -> Vec<Frame> {
        let text = &self.response;
        let Some(start) = find_last(text, b"HTTP/1.1 ") else {
            return Vec::new();
        };
        let Some(end) = text[start..].windows(4).position(|w| w == b"\r\n\r\n") else {
            return Vec::new();
        };
        let mut parser = SseParser::new();
        parser.push(&text[start + end + 4..]);
        std::iter::from_fn(|| parser.next_frame()).collect()
    }
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

#[derive(Default)]
struct GateState {
    holding: bool,
    held: Vec<(TcpStream, Arc<Mutex<GateConn>>)>,
    open: Vec<TcpStream>,
    conns: Vec<Arc<Mutex<GateConn>>>,
}

struct GateShared {
    target: String,
    state: Mutex<GateState>,
    stop: AtomicBool,
}

/// A TCP proxy on loopback in front of lainlet, for clients that must lose their connection
/// without lainlet going away (or before it comes back): [`Gate::cut`] closes every relayed
/// connection and holds new ones (accepted, not yet relayed: the client waits for its answer)
/// until [`Gate::release`]. Every connection's bytes are recorded ([`Gate::conns`]), so a test
/// sees the `Last-Event-ID` a client sent and the exact frames it was sent.
pub struct Gate {
    addr: String,
    shared: Arc<GateShared>,
}

impl Gate {
    /// A gate on a free loopback port relaying to `target` (`127.0.0.1:port`).
    pub fn start(target: &str) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the gate");
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(GateShared {
            target: target.to_owned(),
            state: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let record = Arc::new(Mutex::new(GateConn::default()));
                let mut state = lock(&s.state);
                state.conns.push(record.clone());
                if state.holding {
                    state.held.push((conn, record));
                } else {
                    drop(state);
                    relay(&s, conn, record);
                }
            }
        });
        Gate { addr, shared }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// From now on, new connections wait (until [`Gate::release`]).
    pub fn hold(&self) {
        lock(&self.shared.state).holding = true;
    }

    /// Closes every relayed connection (both ways) and holds new ones.
    pub fn cut(&self) {
        let mut state = lock(&self.shared.state);
        state.holding = true;
        for s in state.open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Relays the held connections, and new ones again.
    pub fn release(&self) {
        let held = {
            let mut state = lock(&self.shared.state);
            state.holding = false;
            std::mem::take(&mut state.held)
        };
        for (conn, record) in held {
            relay(&self.shared, conn, record);
        }
    }

    /// Every connection so far, in the order they were accepted.
    pub fn conns(&self) -> Vec<GateConn> {
        let state = lock(&self.shared.state);
        state.conns.iter().map(|c| lock(c).clone()).collect()
    }

    /// The connections whose request target contains `needle`.
    pub fn conns_to(&self, needle: &str) -> Vec<GateConn> {
        self.conns()
            .into_iter()
            .filter(|c| c.path().contains(needle))
            .collect()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        let mut state = lock(&self.shared.state);
        for s in state.open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        state.held.clear();
    }
}

fn relay(shared: &GateShared, down: TcpStream, record: Arc<Mutex<GateConn>>) {
    let Ok(up) = TcpStream::connect(&shared.target) else {
        return; // dropping `down` tells the client
    };
    let _ = up.set_nodelay(true);
    let (Ok(down2), Ok(up2), Ok(down3), Ok(up3)) = (
        down.try_clone(),
        up.try_clone(),
        down.try_clone(),
        up.try_clone(),
    ) else {
        return;
    };
    {
        let mut state = lock(&shared.state);
        state.open.push(down3);
        state.open.push(up3);
    }
    let r2 = record.clone();
    thread::spawn(move || copy(down, up, &record, true));
    thread::spawn(move || copy(up2, down2, &r2, false));
}

/// Copies `from` to `to` until the end or an error, recording the bytes, then closes `to`'s
/// writing side.
fn copy(mut from: TcpStream, mut to: TcpStream, record: &Mutex<GateConn>, request: bool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut r = lock(record);
            let (log, cap) = match request {
                true => (&mut r.request, 16 << 10),
                false => (&mut r.response, 4 << 20),
            };
            let room = cap - log.len().min(cap);
            log.extend_from_slice(&buf[..n.min(room)]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
