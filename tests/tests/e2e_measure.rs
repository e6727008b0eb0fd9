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
