//! Measurements, not assertions (ignored by default; run with
//! `cargo test -p lainlet-tests --test e2e_measure -- --ignored --nocapture`): the service's
//! resident memory per idle watch connection, and etcd's watcher count, with many watch
//! clients. `LAINLET_MEASURE_WATCHES` sets how many (default 1000).

mod common;

use common::*;
use lainlet_tests::*;

/// A number field of `/proc/<pid>/status` (`VmRSS` in KiB, `Threads`).
fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS")
}

conformance_test!(#[ignore] fn memory_per_idle_watch_and_etcd_watchers(kind) {
    let n: usize = std::env::var("LAINLET_MEASURE_WATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let etcd = etcd_with_original();
    let svc = start(kind, &etcd);
    let pid = svc.pid().unwrap();
    let paths = [
        "/v2/configwatcher?watch=1",
        "/v2/coreinfowatcher?appname=hello&watch=1",
        "/v2/nodes?watch=1&heartbeat=30",
        "/v2/containers?nodename=node1&watch=1",
    ];
    // Warm up: one watch of each kind, so views exist before measuring.
    let mut warm: Vec<SseStream> = paths.iter().map(|p| svc.watch(p)).collect();
    for w in &mut warm {
        w.next_frame(5 * SEC).expect("init");
    }
    let (before, threads_before) = (rss_kib(pid), status_field(pid, "Threads"));
    let mut watches: Vec<SseStream> = (0..n).map(|i| svc.watch(paths[i % paths.len()])).collect();
    for w in &mut watches {
        w.next_frame(10 * SEC).expect("init");
    }
    let (after, threads) = (rss_kib(pid), status_field(pid, "Threads"));
    println!(
        "{}: {n} idle watches: RSS {before} KiB -> {after} KiB = {:.2} KiB per watch; \
         threads {threads_before} -> {threads}; etcd watchers: {}, watch streams: {}",
        kind.bin_name(),
        (after.saturating_sub(before)) as f64 / n as f64,
        etcd.watcher_count(),
        etcd.watch_stream_count()
    );
    wait_revision(&svc, etcd.put("/lain/config/vip", "192.168.77.211"));
    for w in watches.iter_mut().step_by(paths.len()) {
        w.wait_frame(|f| f.event == "update", 10 * SEC).expect("update");
    }
    println!("after one config change to every config watcher: RSS {} KiB", rss_kib(pid));
});

/// CPU time (user + system) of a process so far, in milliseconds.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * 10 // USER_HZ is 100 on Linux
}

/// What one drift check costs etcd at 10,000 pod groups (ignored; run with `--ignored
/// --nocapture`): the answer's size, etcd's CPU time and the wall time of the listing each
/// store answers (v3: a keys-only range at a revision, through the JSON gateway as lainlet-smol
/// asks; lainlet asks the same over gRPC, in fewer bytes; v2: the recursive read, as v2 has no
/// keys-only read), next to a full read of `/lain/`.
#[test]
#[ignore]
fn cost_of_one_drift_check_at_10k_pod_groups() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let dump = lainlet_fixtures::generated(&lainlet_fixtures::ClusterShape {
        pod_groups: 10_000,
        ..lainlet_fixtures::ClusterShape::large(1_000)
    });
    let etcd = EtcdServer::new().expect("etcd");
    let items = || {
        dump.kvs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
    };
    let revision = etcd.load(items());
    etcd.with_store(Store::V2).load(items());
    let pid = etcd.pid().unwrap();
    let http = HttpClient::new().timeout(120 * SEC);
    let measure = |what: &str, method: &str, path: &str, body: String| {
        const RUNS: u64 = 20;
        let headers = [("Content-Type", "application/json")];
        let (cpu, wall) = (cpu_ms(pid), std::time::Instant::now());
        let mut bytes = 0;
        for _ in 0..RUNS {
            let r = http
                .request(method, &etcd.endpoint(), path, &headers, body.as_bytes())
                .expect(what);
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            bytes = r.body.len();
        }
        println!(
            "{what}: {:.1} MB answer, etcd CPU {} ms, wall {:.0?} (mean of {RUNS})",
            bytes as f64 / 1e6,
            (cpu_ms(pid) - cpu) / RUNS,
            wall.elapsed() / RUNS as u32
        );
    };
    println!("{} keys, {} pod groups", dump.kvs.len(), 10_000);
    let range = |extra: &str| {
        format!(
            r#"{{"key":"{}","range_end":"{}"{extra}}}"#,
            b64.encode("/lain/"),
            b64.encode("/lain0")
        )
    };
    let keys_only = range(&format!(r#","keys_only":true,"revision":"{revision}""#));
    measure(
        "v3 drift check (keys-only range at a revision)",
        "POST",
        "/v3/kv/range",
        keys_only,
    );
    measure(
        "v3 full read (the snapshot)",
        "POST",
        "/v3/kv/range",
        range(""),
    );
    let v2 = "/v2/keys/lain?recursive=true&sorted=true&quorum=true";
    measure(
        "v2 drift check (= the recursive read)",
        "GET",
        v2,
        String::new(),
    );
}
