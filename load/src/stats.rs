//! From sent changes and client logs to latency percentiles, completion times and the
//! lost/stale counts.

use std::fmt;

use crate::clients::ClientLog;

/// One change written to etcd.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    /// Its sequence number.
    pub seq: u32,
    /// Just before the put was sent ([`crate::clients::Clock`] ns).
    pub sent: i64,
    /// When the put returned.
    pub acked: i64,
}

/// p50 / p99 / max of a set of durations (ns).
#[derive(Clone, Copy, Debug, Default)]
pub struct Spread {
    /// How many values.
    pub count: usize,
    /// Median.
    pub p50: i64,
    /// 99th percentile (nearest rank).
    pub p99: i64,
    /// Largest.
    pub max: i64,
}

impl Spread {
    /// The spread of `values`, or `None` when empty.
    pub fn of(mut values: Vec<i64>) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let rank =
            |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        Some(Spread {
            count: values.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: values[values.len() - 1],
        })
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} / {} / {} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// Milliseconds with two decimals.
pub fn ms(ns: i64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

/// `Some(spread)` shown as its Display, `None` as `n/a`.
pub fn show(s: &Option<Spread>) -> String {
    s.map_or_else(|| "n/a".into(), |s| s.to_string())
}

/// What the clients saw of a series of changes.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Per delivered frame: client receipt − send time.
    pub receipt: Option<Spread>,
    /// Per delivered frame: socket arrival (kernel timestamp) − send time (SSE only).
    pub arrival: Option<Spread>,
    /// Per change: until every client had it (or a newer one), by receipt.
    pub complete_receipt: Option<Spread>,
    /// Per change: until every client had it (or a newer one), by socket arrival.
    pub complete_arrival: Option<Spread>,
    /// Changes that some live client never received (neither it nor a newer one).
    pub incomplete: usize,
    /// The put itself: return − send.
    pub put: Option<Spread>,
    /// Frames of the series received.
    pub delivered: usize,
    /// (client, change) pairs never received (conflated into a newer frame).
    pub skipped: usize,
    /// Clients that failed (connect error, stream ended, bad answer).
    pub failed: usize,
    /// Clients alive at the end whose last frame is not the last change.
    pub stale: usize,
    /// Frames whose sequence number went backwards.
    pub out_of_order: usize,
    /// `event: error` frames or cancelled watches.
    pub error_frames: usize,
    /// Frames without a sequence marker (heartbeats, …).
    pub other_frames: usize,
    /// The first failure message, for the report.
    pub first_error: Option<String>,
}

/// Analyses the clients' logs against the changes `sent` (sorted by sequence number).
pub fn analyse(sent: &[Sent], logs: &[ClientLog]) -> Delivery {
    let mut d = Delivery::default();
    let (Some(first), Some(last)) = (sent.first(), sent.last()) else {
        return d;
    };
    let (first, last) = (first.seq, last.seq);
    let at = |seq: u32| &sent[(seq - first) as usize];
    let mut receipt = Vec::new();
    let mut arrival = Vec::new();
    let mut done_receipt = vec![Some(i64::MIN); sent.len()];
    let mut done_arrival = vec![Some(i64::MIN); sent.len()];
    let mut has_arrival = false;
    d.put = Spread::of(sent.iter().map(|s| s.acked - s.sent).collect());
    for log in logs {
        d.error_frames += log.error_frames as usize;
        d.other_frames += log.other_frames as usize;
        if let Some(e) = &log.error {
            d.failed += 1;
            d.first_error.get_or_insert_with(|| e.clone());
            continue;
        }
        let mut prev = 0;
        let mut seen = 0;
        for r in &log.receipts {
            if r.seq < prev {
                d.out_of_order += 1;
            }
            prev = prev.max(r.seq);
            if r.seq < first || r.seq > last {
                continue;
            }
            seen += 1;
            let s = at(r.seq);
            receipt.push(r.received - s.sent);
            if let Some(a) = r.arrived {
                has_arrival = true;
                arrival.push(a - s.sent);
            }
        }
        d.delivered += seen;
        d.skipped += sent.len().saturating_sub(seen);
        if log.receipts.last().map(|r| r.seq) != Some(last) {
            d.stale += 1;
        }
        // Completion: for every change, the first frame carrying it or a newer one.
        let mut i = 0;
        for (k, s) in sent.iter().enumerate() {
            while i < log.receipts.len() && log.receipts[i].seq < s.seq {
                i += 1;
            }
            match log.receipts.get(i) {
                Some(r) => {
                    if let Some(t) = &mut done_receipt[k] {
                        *t = (*t).max(r.received - s.sent);
                    }
                    match (r.arrived, &mut done_arrival[k]) {
                        (Some(a), Some(t)) => *t = (*t).max(a - s.sent),
                        (None, t) => *t = None,
                        _ => {}
                    }
                }
                None => {
                    done_receipt[k] = None;
                    done_arrival[k] = None;
                }
            }
        }
    }
    d.receipt = Spread::of(receipt);
    d.arrival = Spread::of(arrival).filter(|_| has_arrival);
    d.incomplete = done_receipt.iter().filter(|t| t.is_none()).count();
    let complete = |v: Vec<Option<i64>>| {
        Spread::of(v.into_iter().flatten().filter(|&t| t != i64::MIN).collect())
    };
    d.complete_receipt = complete(done_receipt);
    d.complete_arrival = complete(done_arrival).filter(|_| has_arrival);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::Receipt;

    fn log(frames: &[(u32, i64)]) -> ClientLog {
        ClientLog {
            receipts: frames
                .iter()
                .map(|&(seq, t)| Receipt {
                    seq,
                    received: t,
                    arrived: Some(t - 1),
                })
                .collect(),
            ..ClientLog::default()
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let s = Spread::of((1..=100).collect()).unwrap();
        assert_eq!((s.count, s.p50, s.p99, s.max), (100, 50, 99, 100));
        let s = Spread::of(vec![7]).unwrap();
        assert_eq!((s.p50, s.p99, s.max), (7, 7, 7));
        assert!(Spread::of(Vec::new()).is_none());
    }

    #[test]
    fn conflated_frames_count_as_skipped_and_complete_with_the_newer_frame() {
        let sent: Vec<Sent> = (1..=3)
            .map(|seq| Sent {
                seq,
                sent: seq as i64 * 100,
                acked: seq as i64 * 100 + 5,
            })
            .collect();
        let logs = [
            log(&[(0, 10), (1, 110), (2, 210), (3, 310)]),
            log(&[(0, 10), (1, 120), (3, 330)]), // 2 conflated into 3
            log(&[(0, 10), (1, 105), (2, 250)]), // stale: never got 3
        ];
        let d = analyse(&sent, &logs);
        assert_eq!((d.delivered, d.skipped, d.stale, d.failed), (7, 2, 1, 0));
        assert_eq!(d.incomplete, 1);
        assert_eq!(d.receipt.unwrap().max, 50);
        // Change 2 reached client 2 with frame 3 at 330: 130 after change 2 was sent.
        // Change 3 never reached client 3: incomplete, left out.
        let c = d.complete_receipt.unwrap();
        assert_eq!((c.count, c.max), (2, 130));
        assert_eq!(d.put.unwrap().p50, 5);
    }
}
