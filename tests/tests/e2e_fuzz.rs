//! A randomized HTTP request fuzzer against both binaries: every route and parameter with odd
//! values, odd methods, headers and sources, watches, and byte-level mutations of all of it.
//! Bounded and reproducible: a fixed seed (`LAINLET_FUZZ_SEED`) and a short run in CI
//! (`LAINLET_FUZZ_SECS`, default 6 s per binary; longer on demand, e.g. 300).
//!
//! Asserts: every answer is a well-formed HTTP/1.x status line; no 5xx except the documented
//! ones (500 `empty key` / `over half of the containers lost their IPs` / `unkown address …`,
//! 505 for HTTP/2); the service never stops, never panics, and ends with no watch left open.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use lainlet_tests::*;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Paths besides the v2 views ([`V2_VIEWS`]).
const OTHER_PATHS: &[&str] = &[
    "/appname",
    "/debug",
    "/version",
    "/healthz",
    "/metrics",
    "/",
    "/status",
    "/v2",
    "/v2/",
    "/v2/apps",
    "//",
    "/v2/configwatcher//",
    "*",
    "/v2/%2e%2e/debug",
    "/\u{e9}",
];
const PARAMS: &[&str] = &[
    "appname",
    "target",
    "nodename",
    "name",
    "nodeip",
    "ip",
    "watch",
    "heartbeat",
    "rev",
    "diff",
    "since",
    "x",
];
const VALUES: &[&str] = &[
    "",
    "*",
    "hello",
    "hello/",
    "hello-service",
    "redis",
    "console",
    "vip",
    "vips",
    "v",
    "domain",
    "node1",
    "node1:",
    "192.168.77.21",
    "127.0.0.5",
    "1",
    "0",
    "true",
    "false",
    "yes",
    "maybe",
    "-1",
    "5",
    "99999999999999999999",
    "%zz",
    "%2F",
    "%00",
    "a+b",
    "\u{2028}",
    "é",
    "<script>",
    "a;b",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
];
const METHODS: &[&str] = &[
    "GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "get", "G",
];
const HEADERS: &[(&str, &str)] = &[
    ("Last-Event-ID", "17"),
    ("Last-Event-ID", "abc"),
    ("Last-Event-ID", "-5"),
    ("Content-Length", "0"),
    ("Content-Length", "3"),
    ("Content-Length", "99999999"),
    ("Content-Length", "-1"),
    ("Transfer-Encoding", "chunked"),
    ("Connection", "close"),
    ("Connection", "keep-alive"),
    ("Expect", "100-continue"),
    ("Accept", "text/event-stream"),
    ("X-Lainlet-Peer", "10.0.0.1"),
    ("Host", ""),
    ("\u{1}", "x"),
];

fn request(rng: &mut Rng) -> (Vec<u8>, String) {
    let method = *rng.pick(METHODS);
    let paths: Vec<&str> = V2_VIEWS.iter().chain(OTHER_PATHS).copied().collect();
    let mut target = (*rng.pick(&paths)).to_owned();
    if rng.chance(10) {
        target.push('/');
    }
    let mut params = Vec::new();
    for _ in 0..rng.below(5) {
        params.push(format!("{}={}", rng.pick(PARAMS), rng.pick(VALUES)));
    }
    if rng.chance(35) {
        params.push(format!("watch={}", rng.pick(&["1", "true", "0", "x"])));
    }
    if !params.is_empty() {
        target = format!("{target}?{}", params.join("&"));
    }
    if rng.chance(5) {
        target = format!("http://lainlet.lain:9001{target}");
    }
    let mut head = format!(
        "{method} {target} HTTP/1.{}\r\nHost: x\r\n",
        rng.pick(&[1, 1, 0])
    );
    for _ in 0..rng.below(3) {
        let (n, v) = rng.pick(HEADERS);
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if rng.chance(15) {
        // Byte-level mutations: flips, insertions, deletions, truncation.
        for _ in 0..1 + rng.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes.insert(at, rng.next() as u8),
                2 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
        }
    }
    (bytes, target)
}

/// The status of the answer to `bytes`, the body's start, and whether it was a stream.
fn exchange(svc: &Service, from: &str, bytes: &[u8]) -> Result<(u16, String, bool), String> {
    let client = HttpClient::from_ip(from).timeout(Duration::from_secs(5));
    let mut tcp = client
        .connect(svc.addr())
        .map_err(|e| format!("connect: {e}"))?;
    tcp.write_all(bytes).map_err(|e| format!("write: {e}"))?;
    // Half-close, so that a truncated head is answered instead of waited for.
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tcp.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if answer.is_empty() => return Err(format!("no answer: {e}")),
            Err(_) => break,
        }
        let text = String::from_utf8_lossy(&answer);
        if text.contains("text/event-stream") && text.contains("\n\n") || Instant::now() > deadline
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP/1.x answer: {:?}", &text[..text.len().min(200)]))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body, text.contains("text/event-stream")))
}

/// 5xx answers the API documents.
fn documented(status: u16, body: &str) -> bool {
    match status {
        500 => [
            "empty key",
            "over half of the containers lost their IPs",
            "unkown address",
        ]
        .iter()
        .any(|t| body.contains(t)),
        505 => body.contains("HTTP/1.1"),
        s => s < 500,
    }
}

conformance_test!(fn random_requests_get_well_formed_documented_answers_and_break_nothing(kind) {
    let seed: u64 = std::env::var("LAINLET_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1a1e);
    let secs: u64 = std::env::var("LAINLET_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    let etcd = etcd_with_original();
    let svc = start(kind, &etcd);
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let (mut sent, mut streams) = (0usize, 0usize);
    while Instant::now() < deadline {
        let (bytes, target) = request(&mut rng);
        if bytes.is_empty() {
            continue; // nothing sent: the connection just closes
        }
        let from = format!("127.0.0.{}", 1 + rng.below(12));
        match exchange(&svc, &from, &bytes) {
            Ok((status, body, stream)) => {
                let head = bytes.starts_with(b"HEAD ");
                // A HEAD answer has no body: the same request as a GET must be documented.
                let body = match (head, status) {
                    (true, 500..) => {
                        // (HEAD is never a watch: neither may the GET be.)
                        let rest = String::from_utf8_lossy(&bytes[4..]).replace("watch=", "xwatch=");
                        let get = [&b"GET"[..], rest.as_bytes()].concat();
                        exchange(&svc, &from, &get).map(|(_, b, _)| b).unwrap_or_default()
                    }
                    _ => body,
                };
                assert!(
                    documented(status, &body),
                    "seed {seed:#x}: {status} {body:?} for {:?} ({target}) from {from}",
                    String::from_utf8_lossy(&bytes)
                );
                *statuses.entry(status).or_default() += 1;
                streams += usize::from(stream);
            }
            Err(e) => panic!("seed {seed:#x}: {e} for {:?} from {from}", String::from_utf8_lossy(&bytes)),
        }
        sent += 1;
    }
    eprintln!("[fuzz] {} requests ({streams} streams), statuses {statuses:?}", sent);
    assert!(sent > 100, "the fuzzer ran ({sent} requests)");
    assert_eq!(svc.get("/healthz").status, 200);
    assert!(!svc.log().contains("panicked"), "a panic:\n{}", svc.log());
    let closed = wait_until(10 * SEC, || svc.get("/debug").json()["subscribers"] == 0);
    assert!(closed, "every fuzzed watch was cleaned up: {}", svc.get("/debug").text());
});
