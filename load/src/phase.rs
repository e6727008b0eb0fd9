//! One measured phase: open N watchers (on lainlet, the floor, or etcd directly), settle,
//! write the series of changes, drain, close, and the report of what arrived when.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use etcd_client::WatchClient;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::cli::{watch_paths, Cli};
use crate::clients::{self, ClientLog, Clock, Progress};
use crate::floor_remote::Remote;
use crate::report::Report;
use crate::run::{sample, Ctx};
use crate::stats::{self, Sent};
use crate::table;
use crate::writer::Writer;

/// How the watchers of a phase are made.
pub(crate) enum Kind {
    /// SSE watchers on a lainlet (or lainlet-smol, or the original: `label`).
    Lainlet {
        label: &'static str,
        addr: SocketAddr,
        paths: Vec<String>,
        pid: Option<u32>,
    },
    /// The same SSE watchers on the floor.
    Floor { floor: Remote, paths: Vec<String> },
    Direct {
        clients: Vec<WatchClient>,
        key: String,
        pid: Option<u32>,
    },
}

impl Kind {
    /// The SSE server the watchers connect to and the paths they watch (`None`: direct etcd
    /// watches).
    fn sse(&self) -> Option<(SocketAddr, &[String])> {
        match self {
            Kind::Lainlet { addr, paths, .. } => Some((*addr, paths)),
            Kind::Floor { floor, paths } => Some((floor.addr(), paths)),
            Kind::Direct { .. } => None,
        }
    }
}

/// The floor's phase: a floor process (this binary, `--mode floor-server`) serving lainlet's
/// frames of the scenario's key, from its next sequence number on.
pub(crate) async fn floor_phase(cli: &Cli, ctx: &mut Ctx) -> anyhow::Result<Report> {
    ctx.seq += 1;
    let paths = watch_paths(cli);
    let exe = std::env::current_exe().context("finding this tool's binary")?;
    let mut args: Vec<String> = vec![
        "--mode".into(),
        "floor-server".into(),
        "--scenario".into(),
        cli.scenario.name().into(),
        "--value-bytes".into(),
        cli.value_bytes.to_string(),
        "--floor-threads".into(),
        cli.floor_threads.to_string(),
        "--floor-seq".into(),
        ctx.seq.to_string(),
        "--watchers".into(),
        cli.watchers.to_string(),
        "--max-secs".into(),
        cli.max_secs.to_string(),
    ];
    for p in &paths {
        args.extend(["--endpoint".into(), p.clone()]);
    }
    let floor = Remote::start(&exe, &args)?;
    println!(
        "floor: {} (pid {}, {} writer thread{}), lainlet's frames of {}",
        floor.addr(),
        floor.pid(),
        cli.floor_threads,
        if cli.floor_threads == 1 { "" } else { "s" },
        paths.join(", ")
    );
    phase(cli, ctx, Kind::Floor { floor, paths }).await
}

/// One measured phase: open N watchers, settle, series of changes, drain, close.
pub(crate) async fn phase(cli: &Cli, ctx: &mut Ctx, mut kind: Kind) -> anyhow::Result<Report> {
    let n = cli.watchers;
    let (mode, lainlet, server_pid) = match &kind {
        Kind::Lainlet {
            label, addr, pid, ..
        } => (*label, Some(*addr), *pid),
        Kind::Direct { pid, .. } => ("etcd", None, *pid),
        Kind::Floor { floor, .. } => (table::FLOOR, None, Some(floor.pid())),
    };
    println!(
        "\n== {mode} ({}): {n} watchers, {} changes at {}/s",
        if mode == table::FLOOR {
            "no etcd"
        } else {
            ctx.store.name()
        },
        cli.changes,
        cli.rate
    );
    let expected = cli.changes as usize + 2;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Warm-up (lainlet): one watcher per endpoint, so the views exist before measuring.
    let warm_progress = Arc::new(Progress::default());
    let mut warm = Vec::new();
    if let Kind::Lainlet { addr, paths, .. } = &kind {
        let sem = Arc::new(Semaphore::new(paths.len()));
        for p in paths {
            let permit = sem.clone().acquire_owned().await?;
            warm.push(tokio::spawn(clients::sse_client(
                *addr,
                p.clone(),
                ctx.clock,
                warm_progress.clone(),
                permit,
                expected,
                stop_rx.clone(),
            )));
        }
        wait_until("warm-up watchers", Duration::from_secs(30), || {
            let p = &warm_progress;
            p.opened.load(Ordering::Relaxed) + p.failed.load(Ordering::Relaxed) >= warm.len()
        })
        .await?;
        if warm_progress.failed.load(Ordering::Relaxed) > 0 {
            stop_tx.send_replace(true);
            let log = warm.pop().expect("one warm-up watcher").await?;
            bail!("the warm-up watch failed: {:?}", log.error);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sample(ctx, server_pid, lainlet).await;

    // Open N watchers, at most K at a time.
    let progress = Arc::new(Progress::default());
    let first = ctx.seq + 1;
    let last = ctx.seq + cli.changes;
    progress.target.store(last, Ordering::Relaxed);
    let sem = Arc::new(Semaphore::new(cli.connect_concurrency));
    let opening = Instant::now();
    let mut handles: Vec<JoinHandle<ClientLog>> = Vec::with_capacity(n);
    for i in 0..n {
        let permit = tokio::time::timeout(Duration::from_secs(120), sem.clone().acquire_owned())
            .await
            .map_err(|_| anyhow!("opening watchers stalled at {i} of {n}"))??;
        let task = match (kind.sse(), &kind) {
            (Some((addr, paths)), _) => tokio::spawn(clients::sse_client(
                addr,
                paths[i % paths.len()].clone(),
                ctx.clock,
                progress.clone(),
                permit,
                expected,
                stop_rx.clone(),
            )),
            (None, Kind::Direct { clients, key, .. }) => tokio::spawn(clients::etcd_client(
                clients[i % clients.len()].clone(),
                key.clone(),
                ctx.clock,
                progress.clone(),
                permit,
                expected,
                stop_rx.clone(),
            )),
            (None, _) => unreachable!("every kind but Direct has an SSE server"),
        };
        handles.push(task);
    }
    let all_opened =
        || progress.opened.load(Ordering::Relaxed) + progress.failed.load(Ordering::Relaxed) >= n;
    wait_until("watchers to open", Duration::from_secs(120), all_opened).await?;
    let open_secs = opening.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(cli.settle_secs)).await;
    let idle = sample(ctx, server_pid, lainlet).await;

    // The series.
    let values: Vec<(u32, Vec<u8>)> = (first..=last)
        .map(|s| (s, cli.scenario.value(s, cli.value_bytes)))
        .collect();
    let series_start = Instant::now();
    let sent = match &mut kind {
        Kind::Floor { floor, .. } => {
            let seqs = values.iter().map(|(seq, _)| *seq).collect();
            let answer = floor.start_series(ctx.clock, seqs, cli.rate)?;
            let sent = answer
                .await
                .map_err(|_| anyhow!("the floor's series stopped"))??;
            ctx.seq = sent.last().map_or(ctx.seq, |s| s.seq);
            sent
        }
        _ => series(ctx, cli.scenario.key(), values, cli.rate).await?,
    };
    let all_done =
        || progress.done.load(Ordering::Relaxed) + progress.failed.load(Ordering::Relaxed) >= n;
    let drained = wait_until(
        "watchers to get the last change",
        secs(cli.drain_secs),
        all_done,
    )
    .await
    .is_ok();
    let series_secs = series_start.elapsed().as_secs_f64();
    if !drained {
        println!(
            "drain timed out: {} of {n} watchers have the last change",
            progress.done.load(Ordering::Relaxed)
        );
    }
    let after = sample(ctx, server_pid, lainlet).await;
    if let Kind::Floor { floor, .. } = &mut kind {
        let [accepted, refused, dead, conflated] = floor.stats()?;
        println!(
            "floor: {accepted} watchers answered, {refused} refused, {dead} given up (write errors), {conflated} frames conflated"
        );
    }

    // Close and collect.
    stop_tx.send_replace(true);
    let mut logs = Vec::with_capacity(n);
    let collecting = async {
        for h in handles {
            logs.push(h.await.unwrap_or_else(|e| ClientLog {
                error: Some(format!("client task: {e}")),
                ..ClientLog::default()
            }));
        }
        for h in warm {
            let _ = h.await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), collecting)
        .await
        .map_err(|_| anyhow!("watchers did not stop within 60 s"))?;
    let delivery = stats::analyse(&sent, &logs);
    let report = Report {
        mode,
        store: ctx.store,
        n,
        changes: cli.changes,
        rate: cli.rate,
        open_secs,
        series_secs,
        delivery,
        before,
        idle,
        after,
    };
    report.print();
    // Let the server release the closed connections before the next phase.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(report)
}

/// Writes the values at `rate` per second from a thread and runtime of its own (with a writer
/// of its own to the phase's store), so that the clients' work never delays a put or its
/// timing; each put is timed.
pub(crate) async fn series(
    ctx: &mut Ctx,
    key: &str,
    values: Vec<(u32, Vec<u8>)>,
    rate: f64,
) -> anyhow::Result<Vec<Sent>> {
    let etcd = ctx.etcd.context("no etcd")?;
    let (clock, store, key) = (ctx.clock, ctx.store, key.to_owned());
    let sent = crate::writer::on_own_thread("writer", store, etcd, move |writer| async move {
        write_series(clock, writer, &key, values, rate).await
    })
    .await?;
    if let Some(last) = sent.last() {
        ctx.seq = last.seq;
    }
    Ok(sent)
}

pub(crate) async fn write_series(
    clock: Clock,
    mut writer: Writer,
    key: &str,
    values: Vec<(u32, Vec<u8>)>,
    rate: f64,
) -> anyhow::Result<Vec<Sent>> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = Vec::with_capacity(values.len());
    for (seq, value) in values {
        ticker.tick().await;
        let t0 = clock.now();
        writer.put(key, value).await?;
        let t1 = clock.now();
        sent.push(Sent {
            seq,
            sent: t0,
            acked: t1,
        });
    }
    Ok(sent)
}

/// Polls `done` every 5 ms until it holds, or fails after `limit`.
pub(crate) async fn wait_until(
    what: &str,
    limit: Duration,
    done: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

pub(crate) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}
