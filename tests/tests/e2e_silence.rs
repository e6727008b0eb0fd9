//! End to end, what a quiet cluster costs etcd: while the watch is silent, the service checks
//! the quorum once every `--quorum-check-after` seconds (issue #11): not never, not in a loop.

mod common;

use std::time::Duration;

use common::*;
use lainlet_tests::*;

store_conformance_test!(fn a_silent_watch_checks_the_quorum_once_a_period_not_in_a_loop(kind, store) {
    let etcd = etcd_with_original_in(store);
    let svc = command_in(kind, &etcd, store)
        .args(["--quorum-check-after", "1", "--drift-check-every", "0"])
        .start()
        .expect("start the service");
    wait_revision(&svc, etcd.with_store(store).current_revision());
    // Nothing is written from here on: the watch is silent. With one check a second, eight
    // reads of etcd take several seconds; 2 s at least leaves room for one reconnect's burst
    // (a check that timed out on a loaded machine, then the connect's check and proof). A
    // service that never checks fails the wait; one that checks back to back makes them in
    // milliseconds.
    let (before, started) = (etcd_reads(&etcd, store), std::time::Instant::now());
    assert!(
        wait_until(30 * SEC, || etcd_reads(&etcd, store) - before >= 8.0),
        "no quorum checks in 30 s of silence ({} reads)",
        etcd_reads(&etcd, store) - before
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "8 reads of etcd in {took:?} of silence: checks in a loop, not once a period"
    );
    assert_eq!(svc.get("/healthz").json()["status"], "ok");
});
