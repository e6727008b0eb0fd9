//! The deploy storm (`--mode storm`): W writers put pod groups into one etcd store as fast as
//! etcd accepts them (each writer its own app, the next put when the last one is acknowledged)
//! for S seconds, while lainlet follows and N SSE watchers watch the apps
//! (`/v2/coreinfowatcher?appname=stormW`). It reports the writes etcd accepted per second, the
//! lag from etcd's acknowledgement to the first and to every watcher of the app, how many
//! revisions lainlet was behind etcd (sampled every 100 ms: the v2 store keeps 1000 events,
//! so this must stay well below that), and whether lainlet lost its place in etcd's history
//! (v2 error 401 / v3 compaction), re-read a snapshot or lost its watch.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use crate::clients::{self, ClientLog, Clock, Progress};
use crate::procs::{http_get, metric};
use crate::stats::{ms, show, Spread};
use crate::writer::{on_own_thread, Store, Writer};

/// What to run.
pub struct Params {
    /// How long the writers write.
    pub secs: f64,
    /// Concurrent writers (= apps).
    pub writers: usize,
    /// SSE watchers on lainlet, spread over the apps.
    pub watchers: usize,
    /// Watchers being opened at the same time.
    pub connect_concurrency: usize,
}

/// The key of app `app`'s pod group.
pub fn key(app: usize) -> String {
    format!("/lain/deployd/pod_groups/storm{app}/storm{app}.web.web")
}

fn view(app: usize) -> String {
    format!("/v2/coreinfowatcher?appname=storm{app}")
}

/// One write.
#[derive(Clone, Copy, Debug)]
struct Write {
    app: usize,
    seq: u32,
    sent: i64,
    acked: i64,
}

/// What a storm measured.
pub struct Report {
    store: Store,
    p: (usize, usize),
    secs: f64,
    writes: usize,
    failed_writes: u64,
    put: Option<Spread>,
    lag_first: Option<Spread>,
    lag_all: Option<Spread>,
    incomplete: usize,
    revision_lag: Option<Spread>,
    history_lost: Option<f64>,
    snapshots: Option<f64>,
    disconnects: Option<f64>,
    failed: usize,
    stale: usize,
    first_error: Option<String>,
}

/// Runs one storm against the lainlet at `lainlet` (following `store` of the etcd at `etcd`);
/// `seq` is the last sequence number used so far.
pub async fn run(
    p: &Params,
    store: Store,
    etcd: SocketAddr,
    lainlet: SocketAddr,
    clock: Clock,
    seq: &mut u32,
) -> anyhow::Result<Report> {
    println!(
        "\n== storm on {}: {} writers for {} s, {} watchers",
        store.name(),
        p.writers,
        p.secs,
        p.watchers
    );
    let mut writer = Writer::connect(store, etcd).await?; // initial puts and sampling
    for app in 0..p.writers {
        *seq += 1;
        writer.put(&key(app), pod_group(app, *seq)).await?;
    }
    for app in 0..p.writers {
        crate::run::wait_applied(lainlet, &view(app), *seq - (p.writers - 1 - app) as u32).await?;
    }

    // The watchers.
    let progress = Arc::new(Progress::default());
    progress.target.store(u32::MAX, Ordering::Relaxed);
    let (stop_tx, stop_rx) = watch::channel(false);
    let sem = Arc::new(Semaphore::new(p.connect_concurrency));
    let mut handles = Vec::with_capacity(p.watchers);
    for i in 0..p.watchers {
        let permit = sem.clone().acquire_owned().await?;
        let path = format!("{}&watch=1", view(i % p.writers));
        handles.push(tokio::spawn(clients::sse_client(
            lainlet,
            path,
            clock,
            progress.clone(),
            permit,
            1024,
            stop_rx.clone(),
        )));
    }
    let n = p.watchers;
    crate::phase::wait_until("storm watchers to open", Duration::from_secs(60), || {
        progress.opened.load(Ordering::Relaxed) + progress.failed.load(Ordering::Relaxed) >= n
    })
    .await?;

    // How far behind etcd lainlet is, every 100 ms.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, mut reader) = (sampling.clone(), writer.clone());
        tokio::spawn(async move {
            let mut lags = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                let served = served_revision(lainlet).await;
                if let (Some(served), Ok(now)) = (served, reader.current_revision().await) {
                    lags.push((now - served).max(0));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            lags
        })
    };

    // The storm, from a thread and runtime of its own.
    let first = *seq + 1;
    let next = Arc::new(AtomicU32::new(first));
    let failed_writes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(p.secs);
    let (next_seq, failed, writers) = (next.clone(), failed_writes.clone(), p.writers);
    let mut writes = on_own_thread("storm", store, etcd, move |writer| {
        write_storm(writer, writers, deadline, clock, next_seq, failed)
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    writes.sort_by_key(|w| w.seq);
    *seq = next.load(Ordering::Relaxed);

    // Drain: every app's last value served, and every watcher given a chance to read it.
    let mut last = vec![0u32; p.writers];
    for w in &writes {
        last[w.app] = last[w.app].max(w.seq);
    }
    for (app, &s) in last.iter().enumerate().filter(|(_, s)| **s > 0) {
        crate::run::wait_applied(lainlet, &view(app), s).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampling.store(false, Ordering::Relaxed);
    let lags = sampler.await?;
    stop_tx.send_replace(true);
    let mut logs = Vec::with_capacity(n);
    for h in handles {
        logs.push(h.await.unwrap_or_else(|e| ClientLog {
            error: Some(format!("client task: {e}")),
            ..ClientLog::default()
        }));
    }
    let page = match http_get(lainlet, "/metrics", Duration::from_secs(5)).await {
        Ok((200, body)) => String::from_utf8_lossy(&body).into_owned(),
        _ => String::new(),
    };
    let mut report = analyse(&writes, &logs, &last, p.writers);
    report.store = store;
    report.p = (p.writers, p.watchers);
    report.secs = secs;
    report.failed_writes = failed_writes.load(Ordering::Relaxed);
    report.revision_lag = Spread::of(lags);
    report.history_lost = metric(&page, "lainlet_etcd_history_lost_total");
    report.snapshots = metric(&page, "lainlet_snapshots_total");
    report.disconnects = metric(&page, "lainlet_etcd_disconnects_total");
    report.print();
    Ok(report)
}

/// The revision lainlet's `/healthz` says it serves.
async fn served_revision(lainlet: SocketAddr) -> Option<i64> {
    let (status, body) = http_get(lainlet, "/healthz", Duration::from_secs(2))
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&body);
    let at = text.find("\"revision\":")? + 11;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (status == 200).then(|| digits.parse().ok())?
}

async fn write_storm(
    writer: Writer,
    writers: usize,
    deadline: Instant,
    clock: Clock,
    next: Arc<AtomicU32>,
    failed: Arc<AtomicU64>,
) -> anyhow::Result<Vec<Write>> {
    let mut tasks = tokio::task::JoinSet::new();
    for app in 0..writers {
        let (mut writer, next, failed) = (writer.clone(), next.clone(), failed.clone());
        tasks.spawn(async move {
            let mut done = Vec::new();
            while Instant::now() < deadline {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                let value = pod_group(app, seq);
                let sent = clock.now();
                match writer.put(&key(app), value).await {
                    Ok(()) => done.push(Write {
                        app,
                        seq,
                        sent,
                        acked: clock.now(),
                    }),
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("storm: the first refused write: {e:#}");
                        }
                    }
                }
            }
            done
        });
    }
    let mut writes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        writes.extend(done?);
    }
    Ok(writes)
}

/// Per write, when the first and the last watcher of its app had it (or a newer value).
fn analyse(writes: &[Write], logs: &[ClientLog], last: &[u32], apps: usize) -> Report {
    let mut first_at: Vec<Option<i64>> = vec![None; writes.len()];
    let mut all_at: Vec<Option<i64>> = vec![Some(i64::MIN); writes.len()];
    let (mut failed, mut stale, mut first_error) = (0, 0, None);
    for (i, log) in logs.iter().enumerate() {
        let app = i % apps;
        if let Some(e) = &log.error {
            failed += 1;
            first_error.get_or_insert_with(|| e.clone());
            continue;
        }
        if log.receipts.last().map_or(0, |r| r.seq) < last[app] {
            stale += 1;
        }
        // Receipts come in increasing sequence order; for each write of this app, the first
        // receipt at or past it.
        let mut r = log.receipts.iter().peekable();
        for (w, write) in writes.iter().enumerate().filter(|(_, w)| w.app == app) {
            while r.peek().is_some_and(|x| x.seq < write.seq) {
                r.next();
            }
            let got = r.peek().map(|x| x.received);
            first_at[w] = match (first_at[w], got) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            all_at[w] = match (all_at[w], got) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
    }
    let lag = |at: &[Option<i64>]| {
        Spread::of(
            writes
                .iter()
                .zip(at)
                .filter_map(|(w, a)| a.filter(|a| *a > i64::MIN).map(|a| (a - w.acked).max(0)))
                .collect(),
        )
    };
    Report {
        store: Store::V3,
        p: (0, 0),
        secs: 0.0,
        writes: writes.len(),
        failed_writes: 0,
        put: Spread::of(writes.iter().map(|w| w.acked - w.sent).collect()),
        lag_first: lag(&first_at),
        lag_all: lag(&all_at),
        incomplete: all_at.iter().filter(|a| a.is_none()).count(),
        revision_lag: None,
        history_lost: None,
        snapshots: None,
        disconnects: None,
        failed,
        stale,
        first_error,
    }
}

impl Report {
    fn per_sec(&self) -> f64 {
        self.writes as f64 / self.secs.max(1e-9)
    }

    fn revisions(&self) -> String {
        self.revision_lag.map_or_else(
            || "n/a".into(),
            |s| format!("{} / {} / {}", s.p50, s.p99, s.max),
        )
    }

    fn print(&self) {
        let opt = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| v.to_string());
        println!(
            "{} writes accepted in {:.1} s: {:.0}/s ({} failed)",
            self.writes,
            self.secs,
            self.per_sec(),
            self.failed_writes
        );
        println!(
            "put (send → etcd ack):                 p50/p99/max {}",
            show(&self.put)
        );
        println!(
            "etcd ack → first watcher of the app:   p50/p99/max {}",
            show(&self.lag_first)
        );
        println!(
            "etcd ack → every watcher of the app:   p50/p99/max {}",
            show(&self.lag_all)
        );
        println!(
            "revisions lainlet was behind etcd:      p50/p99/max {}",
            self.revisions()
        );
        println!(
            "lainlet: history lost (v2 401 / v3 compaction) {}, snapshots {}, etcd disconnects {}",
            opt(self.history_lost),
            opt(self.snapshots),
            opt(self.disconnects)
        );
        println!(
            "watchers failed: {}, stale at the end: {}, writes not reaching every watcher: {}",
            self.failed, self.stale, self.incomplete
        );
        if let Some(e) = &self.first_error {
            println!("first failure: {e}");
        }
    }

    /// Whether lainlet followed every write: no watcher failed or ended stale, every write
    /// reached every watcher, and lainlet never lost its place in etcd's history.
    pub fn ok(&self) -> bool {
        self.failed == 0
            && self.stale == 0
            && self.incomplete == 0
            && self.history_lost == Some(0.0)
            && self.snapshots == Some(1.0)
    }

    /// The Markdown header of [`Report::row`].
    pub fn header() -> String {
        "| store | writers / watchers | writes accepted | put p50 / p99 | ack → first watcher p50 / p99 / max | ack → every watcher p99 | revisions behind p50 / p99 / max | history lost (401) / snapshots / disconnects | failed / stale |\n\
         | --- | --- | ---: | --- | --- | ---: | --- | --- | --- |"
            .into()
    }

    /// One Markdown row.
    pub fn row(&self) -> String {
        let opt = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| v.to_string());
        let p50_p99 = |s: &Option<Spread>| {
            s.map_or_else(
                || "n/a".into(),
                |s| format!("{} / {} ms", ms(s.p50), ms(s.p99)),
            )
        };
        format!(
            "| {} | {} / {} | {} in {:.0} s ({:.0}/s) | {} | {} | {} ms | {} | {} / {} / {} | {} / {} |",
            self.store.name(),
            self.p.0,
            self.p.1,
            self.writes,
            self.secs,
            self.per_sec(),
            p50_p99(&self.put),
            show(&self.lag_first),
            self.lag_all.map_or_else(|| "n/a".into(), |s| ms(s.p99)),
            self.revisions(),
            opt(self.history_lost),
            opt(self.snapshots),
            opt(self.disconnects),
            self.failed,
            self.stale,
        )
    }
}

/// A deployd pod group of app `storm<app>` (one instance, ~5 KB) carrying `seq`.
pub fn pod_group(app: usize, seq: u32) -> Vec<u8> {
    crate::cli::pod_group_value_for(&format!("storm{app}"), seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::Receipt;

    fn receipt(seq: u32, received: i64) -> Receipt {
        Receipt {
            seq,
            received,
            arrived: None,
        }
    }

    #[test]
    fn a_write_reaches_a_watcher_with_its_value_or_a_newer_one() {
        let w = |app, seq, acked| Write {
            app,
            seq,
            sent: acked - 1,
            acked,
        };
        let writes = [w(0, 10, 100), w(1, 11, 100), w(0, 12, 200), w(0, 13, 300)];
        // Watchers 0 and 2 watch app 0, watcher 1 app 1; watcher 2 skipped 12 (conflated).
        let logs = [
            ClientLog {
                receipts: vec![receipt(10, 150), receipt(12, 210), receipt(13, 330)],
                ..ClientLog::default()
            },
            ClientLog {
                receipts: vec![receipt(11, 120)],
                ..ClientLog::default()
            },
            ClientLog {
                receipts: vec![receipt(10, 160), receipt(13, 400)],
                ..ClientLog::default()
            },
        ];
        let r = analyse(&writes, &logs, &[13, 11], 2);
        assert_eq!((r.failed, r.stale, r.incomplete), (0, 0, 0));
        // first: 50, 20, 10, 30; every: 60, 20, 200 (13 at 400 covers 12), 100.
        assert_eq!(r.lag_first.unwrap().max, 50);
        assert_eq!(r.lag_all.unwrap().max, 200);
        let stale = [ClientLog {
            receipts: vec![receipt(10, 150)],
            ..ClientLog::default()
        }];
        let r = analyse(&writes[..1], &stale, &[12, 0], 2);
        assert_eq!(r.stale, 1);
    }
}
