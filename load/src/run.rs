//! One run: the servers it starts or attaches to, one after another, the store each phase
//! writes to, the final tables; and `--mode load-demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use etcd_client::Client;
use lainlet_fixtures::{generated, ClusterShape};

use crate::cli::{watch_paths, without_watch, Cli, Mode};
use crate::clients::{self, Clock, MARKER};
use crate::phase::{floor_phase, phase, Kind};
use crate::procs::{self, http_get, loopback, metric, Server, TempDir};
use crate::report::Report;
use crate::writer::{Store, Writer};
use crate::{storm, table};

/// What every phase shares.
pub(crate) struct Ctx {
    pub(crate) clock: Clock,
    /// The etcd (none for the floor alone).
    pub(crate) etcd: Option<SocketAddr>,
    /// The store the phase writes to, and a writer to it (from the first [`use_store`]).
    pub(crate) store: Store,
    pub(crate) writer: Option<Writer>,
    /// The last sequence number written.
    pub(crate) seq: u32,
}

/// One reading of the servers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sample {
    /// RSS (KiB) and CPU seconds of the server under test (lainlet, or etcd in direct mode).
    pub(crate) rss_kib: Option<u64>,
    pub(crate) cpu: Option<f64>,
    /// From etcd's /metrics (watchers: of the store the sample is about, see [`sample`]).
    pub(crate) etcd_watchers: Option<f64>,
    pub(crate) etcd_streams: Option<f64>,
    pub(crate) etcd_rss: Option<f64>,
    pub(crate) etcd_cpu: Option<f64>,
    /// From lainlet's /metrics.
    pub(crate) conflated: Option<f64>,
    pub(crate) frames_out: Option<f64>,
    /// This tool's CPU seconds.
    pub(crate) tool_cpu: f64,
}

pub(crate) async fn sample(
    ctx: &Ctx,
    server_pid: Option<u32>,
    lainlet: Option<SocketAddr>,
) -> Sample {
    let mut s = Sample {
        rss_kib: server_pid.and_then(procs::rss_kib),
        cpu: server_pid.and_then(procs::cpu_secs),
        tool_cpu: procs::own_cpu_secs(),
        ..Sample::default()
    };
    let etcd_metrics = match ctx.etcd {
        Some(etcd) => http_get(etcd, "/metrics", Duration::from_secs(5)).await,
        None => Err(anyhow!("no etcd")),
    };
    if let Ok((200, body)) = etcd_metrics {
        let page = String::from_utf8_lossy(&body);
        s.etcd_watchers = match ctx.store {
            Store::V3 => metric(&page, "etcd_debugging_mvcc_watcher_total"),
            Store::V2 => metric(&page, "etcd_debugging_store_watchers"),
        };
        s.etcd_streams = metric(&page, "etcd_debugging_mvcc_watch_stream_total");
        s.etcd_rss = metric(&page, "process_resident_memory_bytes");
        s.etcd_cpu = metric(&page, "process_cpu_seconds_total");
    }
    if let Some(addr) = lainlet {
        if let Ok((200, body)) = http_get(addr, "/metrics", Duration::from_secs(5)).await {
            let page = String::from_utf8_lossy(&body);
            s.conflated = metric(&page, "lainlet_conflated_frames_total");
            s.frames_out = metric(&page, "lainlet_frames_out_total");
        }
    }
    s
}

pub(crate) async fn run(cli: &Cli) -> anyhow::Result<bool> {
    if cli.mode == Mode::LoadDemo {
        return load_demo(cli).await.map(|()| true);
    }
    let parent = cli.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = TempDir::new(&parent, cli.keep)?;
    let mut etcd = match (&cli.etcd, cli.mode) {
        (_, Mode::Floor) => None,
        (Some(a), _) => Some(Server::attached(loopback(a)?, None)),
        (None, _) => Some(procs::start_etcd(&cli.etcd_bin, tmp.path()).await?),
    };
    if let Some(etcd) = &etcd {
        println!(
            "etcd: {}{}",
            etcd.addr,
            if etcd.is_own() { " (started here)" } else { "" }
        );
    }
    let mut ctx = Ctx {
        clock: Clock::new(),
        etcd: etcd.as_ref().map(|e| e.addr),
        store: cli.etcd_api.stores()[0],
        writer: None,
        seq: 0,
    };
    let mut reports = Vec::new();
    let mut storms = Vec::new();
    if matches!(cli.mode, Mode::Floor | Mode::All) {
        reports.push(floor_phase(cli, &mut ctx).await?);
    }
    for target in servers(cli) {
        let store = target.store;
        let etcd_addr = ctx.etcd.context("no etcd")?;
        use_store(cli, &mut ctx, store).await?;
        let mut lainlet = match &cli.lainlet {
            Some(a) => Server::attached(loopback(a)?, cli.server_pid),
            None => {
                let (bin, dir) = (&target.bin, tmp.path());
                match target.label {
                    ORIGINAL => procs::start_original(bin, etcd_addr, dir).await?,
                    _ => procs::start_lainlet(bin, etcd_addr, store.name(), dir).await?,
                }
            }
        };
        println!(
            "{}: {} reading the etcd {} store{}",
            target.label,
            lainlet.addr,
            store.name(),
            if lainlet.is_own() {
                " (started here)"
            } else {
                ""
            }
        );
        if cli.mode == Mode::Storm {
            let params = storm::Params {
                secs: cli.storm_secs,
                writers: cli.storm_writers,
                watchers: cli.watchers,
                connect_concurrency: cli.connect_concurrency,
            };
            let clock = ctx.clock;
            let report =
                storm::run(&params, store, etcd_addr, lainlet.addr, clock, &mut ctx.seq).await;
            if report.is_err() {
                eprintln!("lainlet log tail:\n{}", lainlet.log_tail(4096));
            }
            storms.push(report?);
        } else {
            let paths = watch_paths(cli);
            for p in &paths {
                wait_applied(lainlet.addr, &without_watch(p), ctx.seq).await?;
            }
            let kind = Kind::Lainlet {
                label: target.label,
                addr: lainlet.addr,
                paths,
                pid: lainlet.pid,
            };
            let report = phase(cli, &mut ctx, kind).await;
            if report.is_err() {
                eprintln!("{} log tail:\n{}", target.label, lainlet.log_tail(4096));
            }
            reports.push(report?);
        }
        if lainlet.is_own() {
            lainlet.stop();
            wait_etcd_watchers(&ctx, 0).await;
        }
    }
    if matches!(cli.mode, Mode::Etcd | Mode::Both) {
        use_store(cli, &mut ctx, Store::V3).await?;
        let etcd_addr = ctx.etcd.context("no etcd")?;
        let url = format!("http://{etcd_addr}");
        let mut clients = Vec::with_capacity(cli.etcd_connections);
        for _ in 0..cli.etcd_connections {
            let c = Client::connect([url.as_str()], None)
                .await
                .context("connecting to etcd")?;
            clients.push(c.watch_client());
        }
        let kind = Kind::Direct {
            clients,
            key: cli.scenario.key().to_owned(),
            pid: etcd.as_ref().and_then(|e| e.pid),
        };
        reports.push(phase(cli, &mut ctx, kind).await?);
    }
    println!("\n## Results\n");
    let mut ok = true;
    if !reports.is_empty() {
        println!("{}", Report::header());
    }
    for r in &reports {
        println!("{}", r.row());
        ok &= r.delivery.failed == 0 && r.delivery.stale == 0 && r.delivery.incomplete == 0;
    }
    if reports.iter().any(|r| r.mode == table::FLOOR) {
        println!(
            "\n### Ratios to the floor ({} scenario, {} changes at {}/s)\n",
            cli.scenario.name(),
            cli.changes,
            cli.rate
        );
        let rows: Vec<table::Row> = reports.iter().map(Report::table_row).collect();
        print!("{}", table::markdown(&rows));
    }
    if !storms.is_empty() {
        println!("{}", storm::Report::header());
    }
    for r in &storms {
        println!("{}", r.row());
        ok &= r.ok();
    }
    if let Some(etcd) = &mut etcd {
        etcd.stop();
    }
    Ok(ok)
}

/// The label of the original lainlet's phase.
pub(crate) const ORIGINAL: &str = "original";

/// A server a phase starts.
pub(crate) struct Target {
    pub(crate) label: &'static str,
    pub(crate) bin: PathBuf,
    pub(crate) store: Store,
}

/// The servers measured one after another, in order.
pub(crate) fn servers(cli: &Cli) -> Vec<Target> {
    let of = |label, bin: &PathBuf| {
        let bin = bin.clone();
        move |store| Target {
            label,
            bin: bin.clone(),
            store,
        }
    };
    let stores = cli.etcd_api.stores();
    let lainlet = stores.iter().copied().map(of("lainlet", &cli.lainlet_bin));
    match cli.mode {
        Mode::Lainlet | Mode::Both | Mode::Storm => lainlet.collect(),
        Mode::All => {
            let smol = stores
                .iter()
                .copied()
                .map(of("lainlet-smol", &cli.smol_bin));
            let original = cli.orig_bin.iter().map(|b| of(ORIGINAL, b)(Store::V2));
            lainlet.chain(smol).chain(original).collect()
        }
        Mode::Etcd | Mode::Floor | Mode::GetFloor | Mode::LoadDemo | Mode::FloorServer => {
            Vec::new()
        }
    }
}

/// Makes `store` the one the next phase writes to: a writer, the preload (once per store), and
/// the changing key's first value (a new sequence number).
pub(crate) async fn use_store(cli: &Cli, ctx: &mut Ctx, store: Store) -> anyhow::Result<()> {
    let etcd = ctx.etcd.context("no etcd")?;
    if ctx.store != store || ctx.writer.is_none() {
        ctx.store = store;
        let writer = ctx.writer.insert(Writer::connect(store, etcd).await?);
        if cli.preload_apps > 0 {
            let started = Instant::now();
            let (keys, bytes) = preload(writer, cli.preload_apps).await?;
            println!(
                "preloaded {} apps into the {} store: {keys} keys, {:.1} MB in {:.1?}",
                cli.preload_apps,
                store.name(),
                bytes as f64 / 1e6,
                started.elapsed()
            );
        }
    }
    ctx.seq += 1;
    let value = cli.scenario.value(ctx.seq, cli.value_bytes);
    let bytes = value.len();
    let writer = ctx.writer.as_mut().context("no etcd writer")?;
    writer.put(cli.scenario.key(), value).await?;
    println!(
        "key {} in the {} store ({bytes} bytes per value)",
        cli.scenario.key(),
        store.name()
    );
    Ok(())
}

/// `--mode load-demo`: writes the demo data (`lainlet --demo`'s) into the etcd at --etcd.
pub(crate) async fn load_demo(cli: &Cli) -> anyhow::Result<()> {
    let etcd = loopback(cli.etcd.as_deref().unwrap_or_default())?;
    let store = cli.etcd_api.stores()[0];
    // The demo data set, or with --preload-apps a generated cluster of that many apps.
    let dump = match cli.preload_apps {
        0 => lainlet_fixtures::demo(),
        apps => generated(&ClusterShape::large(apps)),
    };
    let (keys, bytes) = (dump.kvs.len(), dump.value_bytes());
    let started = Instant::now();
    let mut writer = Writer::connect(store, etcd).await?;
    writer
        .load(dump.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect())
        .await?;
    println!(
        "loaded {} into the {} store of {etcd}: {keys} keys, {:.1} MB in {:.1?}",
        match cli.preload_apps {
            0 => "the demo data".to_owned(),
            apps => format!("a generated cluster of {apps} apps"),
        },
        store.name(),
        bytes as f64 / 1e6,
        started.elapsed()
    );
    Ok(())
}

/// Loads a generated cluster of `apps` apps; returns (keys, value bytes).
pub(crate) async fn preload(writer: &mut Writer, apps: usize) -> anyhow::Result<(usize, usize)> {
    let dump = generated(&ClusterShape::large(apps));
    let (keys, bytes) = (dump.kvs.len(), dump.value_bytes());
    writer
        .load(dump.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect())
        .await?;
    Ok((keys, bytes))
}

/// Waits (≤ 10 s) until a GET of `path` on lainlet shows sequence number ≥ `seq`.
pub(crate) async fn wait_applied(addr: SocketAddr, path: &str, seq: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = match http_get(addr, path, Duration::from_secs(5)).await {
            Ok((200, body)) => clients::find_seq(&body),
            _ => None,
        };
        if got.is_some_and(|s| s >= seq) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("GET {path} on lainlet does not show {MARKER}{seq} (got {got:?}); does the endpoint show the key?");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (≤ 10 s) until etcd reports `n` watchers.
pub(crate) async fn wait_etcd_watchers(ctx: &Ctx, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if sample(ctx, None, None).await.etcd_watchers == Some(n as f64) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
