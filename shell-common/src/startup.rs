//! What a start-up logs, the same in both shells: when the process started, and the etcd
//! snapshot read and applied with its progress (on a big cluster that read is most of the
//! start-up time).
//!
//! ```text
//! mark_start()                the process's start (service::init), the origin of "ready after"
//! read_snapshot(client, rt)   "reading /lain/ …", every 5 s "still reading", then keys, bytes, time
//! apply_snapshot(shared, s)   decode time, undecodable values, and once: "serving, ready N s after start"
//! ```

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lainlet_core::Snapshot;
use tracing::{info, warn};

use crate::etcd::{EtcdClient, PREFIX};
use crate::socket::Runtime;
use crate::sync::{first, Either};
use crate::Shared;

/// How often a slow snapshot read says it is still reading.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

static START: OnceLock<Instant> = OnceLock::new();

/// Notes the process's start (the first call wins) and returns it.
pub fn mark_start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// Reads a snapshot of [`PREFIX`] with `client`, logging that it started, every
/// [`PROGRESS_EVERY`] that it is still going, and then how many keys and bytes came in how
/// long.
pub async fn read_snapshot<C: EtcdClient, R: Runtime>(
    client: &mut C,
    rt: &R,
) -> anyhow::Result<Snapshot> {
    let start = Instant::now();
    info!("reading {PREFIX} from etcd");
    let read = client.read_snapshot();
    let mut read = std::pin::pin!(read);
    let snapshot = loop {
        match first(read.as_mut(), rt.sleep(PROGRESS_EVERY)).await {
            Either::Left(result) => break result?,
            Either::Right(()) => info!(
                "still reading {PREFIX} from etcd ({:.0?} so far)",
                start.elapsed()
            ),
        }
    };
    let bytes: usize = snapshot
        .kvs
        .iter()
        .map(|kv| kv.key.len() + kv.value.len())
        .sum();
    info!(
        "read {} keys ({}) under {PREFIX} at revision {} in {:.1?}",
        snapshot.kvs.len(),
        human_bytes(bytes),
        snapshot.revision,
        start.elapsed()
    );
    Ok(snapshot)
}

/// Applies a snapshot read by [`read_snapshot`] and logs the time it took to decode, the
/// values that do not decode, and — the first time — how long after the start lainlet serves.
pub fn apply_snapshot(shared: &Shared, snapshot: Snapshot) {
    let keys = snapshot.kvs.len();
    let start = Instant::now();
    let (first, bad, ready_after) = shared.with_engine(|e| {
        let first = !e.is_ready();
        e.handle_snapshot(Instant::now(), snapshot);
        (first, e.decode_failures().count(), e.ready_after())
    });
    let took = start.elapsed();
    match bad {
        0 => info!("decoded and applied {keys} keys in {took:.1?}"),
        n => warn!(
            "decoded and applied {keys} keys in {took:.1?}; {n} values do not decode \
             (their keys keep their last good value: see /debug or the status page)"
        ),
    }
    if first {
        match ready_after {
            Some(after) => info!("serving: ready {after:.1?} after start"),
            None => info!("serving"),
        }
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: usize) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert!(human_bytes(usize::MAX).ends_with("TiB"));
    }

    #[test]
    fn the_start_is_noted_once() {
        let first = mark_start();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(mark_start(), first);
    }
}
