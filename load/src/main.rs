//! `lainlet-load`: how fast a change in etcd reaches N watchers through lainlet, and what it
//! costs — next to the same N watchers watching etcd directly. See BENCHMARKS.md.
//!
//! One run: start (or attach to) etcd and lainlet on loopback, write a key whose value carries
//! a sequence number, open N watchers, measure the server's memory before and after, write a
//! series of changes at a fixed rate, and for every change and watcher record when the frame
//! arrived. Then report delivery latency (p50/p99/max), how long until all N had each change,
//! watchers that failed or ended stale, server RSS per idle watcher, server CPU time, and
//! etcd's own watcher count and memory (from its `/metrics`).
//!
//! Times: a change is "sent" just before its put is handed to etcd-client (so latencies
//! include etcd's commit); "receipt" is when the client task had the frame; "arrival" (SSE
//! only) is the kernel's receive timestamp of the bytes (`SO_TIMESTAMPNS`), which leaves out
//! this tool's own scheduling. Every loop is bounded by a count and a time limit.
//!
//! `--etcd-api v2|v3|both` chooses the etcd store written to and read by lainlet (v2: the keys
//! API, the way deployd writes; `both`: one lainlet phase per store, side by side); `--mode
//! storm` runs the deploy storm ([`storm`]) instead of the paced series.
//!
//! Floors: `--mode floor` measures the same N watchers on a minimal writer inside the tool
//! ([`floor`]); `--mode all` runs the floor, lainlet, lainlet-smol and (with `--orig-bin`) the
//! original one after another and prints one table of ratios to the floor ([`table`]);
//! `--mode get-floor` serves lainlet's GET answers from a bare hyper server ([`get_floor`]).

mod clients;
mod floor;
mod floor_remote;
mod get_floor;
mod procs;
mod render;
mod stats;
mod storm;
mod table;
mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::{Parser, ValueEnum};
use etcd_client::{Client, WatchClient};
use lainlet_fixtures::{
    generated, pod_group_value, web_annotation, ClusterShape, ContainerParams, ContainerSpecParams,
    PodGroupParams, PodParams,
};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::clients::{ClientLog, Clock, Progress, MARKER};
use crate::floor_remote::Remote;
use crate::procs::{http_get, loopback, metric, Server, TempDir};
use crate::stats::{ms, show, Delivery, Sent};
use crate::writer::{Store, Writer};

/// Open files needed besides the watchers (etcd and lainlet connections, logs, slack).
const FD_SLACK: u64 = 512;

/// Opens N watch connections on lainlet (SSE) and/or N watches directly on etcd, applies a
/// series of changes to etcd, and reports delivery latency, lost/stale frames, server memory
/// per watcher and CPU time, and etcd's watcher count and memory. Only loopback addresses.
#[derive(Parser, Debug)]
#[command(name = "lainlet-load")]
struct Cli {
    /// What to measure: `lainlet` (N SSE watchers on lainlet), `etcd` (N direct etcd
    /// watches, v3), or `both`, one after the other against the same etcd; `storm`: the deploy
    /// storm (--storm-secs, --storm-writers) on lainlet. `floor`: the same N watchers on a
    /// minimal writer inside this tool (no lainlet, no etcd) that writes lainlet's pre-rendered
    /// frame of each change to all N as fast as the kernel takes it; `all`: floor, lainlet,
    /// lainlet-smol (--smol-bin) and, with --orig-bin, the original lainlet (written through
    /// etcd's v2 store), one after another, then one table of ratios to the floor.
    /// `get-floor`: serve lainlet's answers of the --get-path views (its demo data) from a bare
    /// hyper server on --listen until killed (or --max-secs), for `wrk`. `load-demo`: write
    /// lainlet's built-in demo data into the etcd at --etcd through --etcd-api (v2 or v3) and
    /// exit, so a lainlet without `--demo` (the original) serves the same data to `wrk`.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,

    /// The etcd store written to and read by lainlet (`--etcd-api` of lainlet): `v3`, `v2`
    /// (the keys API, one PUT per write), or `both`: every lainlet phase once per store.
    #[arg(long, value_enum, default_value_t = Api::V3)]
    etcd_api: Api,

    /// Storm: how long the writers write.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    storm_secs: f64,

    /// Storm: concurrent writers, each putting the pod group of its own app as fast as etcd
    /// acknowledges.
    #[arg(long, default_value_t = 16, value_name = "W")]
    storm_writers: usize,

    /// Number of watchers (N).
    #[arg(short = 'n', long, default_value_t = 1000, value_name = "N")]
    watchers: usize,

    /// Number of changes written in the series.
    #[arg(long, default_value_t = 100, value_name = "C")]
    changes: u32,

    /// Changes per second.
    #[arg(long, default_value_t = 10.0, value_name = "PER_SEC")]
    rate: f64,

    /// What changes: `config` (the key /lain/config/load/stamp, watched through
    /// /v2/configwatcher?target=load/stamp) or `podgroup` (a deployd pod group of the app
    /// `loadapp`, one instance, ~5 KB, watched through /v2/coreinfowatcher?appname=loadapp).
    #[arg(long, value_enum, default_value_t = Scenario::Config)]
    scenario: Scenario,

    /// lainlet watch endpoint(s), repeatable; watchers are spread over them round-robin.
    /// Each must show the changed key. Default: the scenario's endpoint.
    #[arg(long = "endpoint", value_name = "PATH")]
    endpoints: Vec<String>,

    /// Size of the config scenario's value in bytes.
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    value_bytes: usize,

    /// Before starting, load a generated cluster of this many apps (3 pod groups each,
    /// deployd-size values) into etcd, so lainlet holds a realistic state. Only with the
    /// etcd this tool starts, or with --mode load-demo (then instead of the demo data).
    #[arg(long, default_value_t = 0, value_name = "APPS")]
    preload_apps: usize,

    /// Worker threads of this tool's runtime (the clients).
    #[arg(long, default_value_t = 1, value_name = "T")]
    threads: usize,

    /// Watchers being opened at the same time.
    #[arg(long, default_value_t = 64, value_name = "K")]
    connect_concurrency: usize,

    /// gRPC connections the direct etcd watchers are spread over (one watch stream each).
    #[arg(long, default_value_t = 8, value_name = "G")]
    etcd_connections: usize,

    /// Pause after opening the watchers, before reading memory and starting the series.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    settle_secs: f64,

    /// After the last change, how long to wait for every watcher to have it.
    #[arg(long, default_value_t = 20.0, value_name = "SECS")]
    drain_secs: f64,

    /// Hard limit on the whole run.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    max_secs: u64,

    /// Use this running etcd (127.0.0.1:PORT) instead of starting one.
    #[arg(long, value_name = "ADDR")]
    etcd: Option<String>,

    /// The etcd binary to start.
    #[arg(long, default_value = "etcd", value_name = "PATH")]
    etcd_bin: PathBuf,

    /// Use this running lainlet (127.0.0.1:PORT) instead of starting one; it must follow the
    /// same etcd.
    #[arg(long, value_name = "ADDR", requires = "etcd")]
    lainlet: Option<String>,

    /// The pid of the running lainlet given with --lainlet (for its RSS and CPU time).
    #[arg(long, value_name = "PID", requires = "lainlet")]
    server_pid: Option<u32>,

    /// The lainlet binary to start.
    #[arg(long, default_value = "target/release/lainlet", value_name = "PATH")]
    lainlet_bin: PathBuf,

    /// --mode all: the lainlet-smol binary to start.
    #[arg(
        long,
        default_value = "target/release/lainlet-smol",
        value_name = "PATH"
    )]
    smol_bin: PathBuf,

    /// --mode all: also measure the original (Go) lainlet, started from this binary with its
    /// own flags (-web, -etcd) on the etcd v2 store, which this tool then writes.
    #[arg(long, value_name = "PATH")]
    orig_bin: Option<PathBuf>,

    /// Floor: writer threads, each owning a slice of the connections [default: one per core;
    /// on 2 cores, 2 beat 1 by a quarter at 10,000 watchers].
    #[arg(long, default_value_t = cores(), hide_default_value = true, value_name = "T")]
    floor_threads: usize,

    /// (--mode floor-server, started by this tool: the sequence number of the init frames.)
    #[arg(long, hide = true, value_name = "SEQ")]
    floor_seq: Option<u32>,

    /// get-floor: where to listen (127.x.x.x:PORT).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,

    /// get-floor: the views served (repeatable; path and query as lainlet gets them)
    /// [default: /v2/configwatcher?target=vip and /v2/coreinfowatcher].
    #[arg(long = "get-path", value_name = "PATH")]
    get_paths: Vec<String>,

    /// Where the scratch directory (etcd data, logs) is made [default: the system's temp dir].
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,

    /// Keep the scratch directory (logs) at the end.
    #[arg(long)]
    keep: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Lainlet,
    Etcd,
    Both,
    Storm,
    Floor,
    All,
    GetFloor,
    LoadDemo,
    /// The floor's server process (started by `floor` and `all`).
    #[value(hide = true)]
    FloorServer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Api {
    V2,
    V3,
    Both,
}

impl Api {
    /// The stores of the lainlet phases, in order.
    fn stores(self) -> Vec<Store> {
        match self {
            Api::V2 => vec![Store::V2],
            Api::V3 => vec![Store::V3],
            Api::Both => vec![Store::V3, Store::V2],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Config,
    Podgroup,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Config => "config",
            Scenario::Podgroup => "podgroup",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Scenario::Config => "/lain/config/load/stamp",
            Scenario::Podgroup => "/lain/deployd/pod_groups/loadapp/loadapp.web.web",
        }
    }

    fn endpoint(self) -> &'static str {
        match self {
            Scenario::Config => "/v2/configwatcher?target=load/stamp&watch=1",
            Scenario::Podgroup => "/v2/coreinfowatcher?appname=loadapp&watch=1",
        }
    }

    /// The value carrying sequence number `seq`.
    fn value(self, seq: u32, bytes: usize) -> Vec<u8> {
        let stamp = format!("{MARKER}{seq:010}");
        match self {
            Scenario::Config => {
                let mut v = stamp.into_bytes();
                v.resize(bytes.max(v.len()), b'.');
                v
            }
            Scenario::Podgroup => pod_group_value_for("loadapp", seq),
        }
    }
}

/// A deployd pod group `<app>.web.web` of app `app` (one instance, ~5 KB) carrying `seq` (in
/// its health-check path, and in the container IP so every value is really different).
fn pod_group_value_for(app: &str, seq: u32) -> Vec<u8> {
    let stamp = format!("{MARKER}{seq:010}");
    let health = format!("/healthz?{stamp}");
    let spec = ContainerSpecParams::lain(
        app,
        "release-1700000000-0123456789abcdef0123456789abcdef01234567",
        "web",
        &["/lain/app/run.sh"],
        8080,
    );
    let pods = (1..=1)
        .map(|i| PodParams {
            instance_no: i,
            containers: vec![ContainerParams {
                id: format!("{:064x}", 0x10ad_0000 + i),
                node_name: format!("node{i}"),
                node_ip: format!("192.168.77.{}", 20 + i),
                container_ip: format!("172.20.{}.{}", 100 + i, seq % 250 + 2),
            }],
        })
        .collect();
    pod_group_value(&PodGroupParams {
        name: format!("{app}.web.web"),
        namespace: app.into(),
        version: 1,
        annotation: web_annotation(&[&format!("{app}.lain.local")], None, Some(&health)),
        dependencies: Vec::new(),
        containers: vec![spec],
        pods,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = validate(&cli) {
        eprintln!("lainlet-load: {e:#}");
        return ExitCode::from(2);
    }
    if cli.mode == Mode::GetFloor {
        return get_floor_main(&cli);
    }
    let needed = cli.watchers as u64 + FD_SLACK;
    match procs::raise_nofile(needed) {
        Ok(limit) => eprintln!("open-files limit: {limit}"),
        Err(e) => {
            eprintln!("lainlet-load: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    if cli.mode == Mode::FloorServer {
        return floor_server_main(&cli);
    }
    let runtime = match cli.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        t => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(t)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lainlet-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(cli.max_secs);
    let outcome = runtime.block_on(async {
        tokio::time::timeout(limit, run(&cli))
            .await
            .unwrap_or_else(|_| Err(anyhow!("the run exceeded --max-secs {}", cli.max_secs)))
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("lainlet-load: some watchers failed or ended stale (see above)");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("lainlet-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(cli: &Cli) -> anyhow::Result<()> {
    if !(1..=20_000).contains(&cli.watchers) {
        bail!("--watchers must be 1..=20000");
    }
    if !(1..=100_000).contains(&cli.changes) {
        bail!("--changes must be 1..=100000");
    }
    if !(cli.rate > 0.0 && cli.rate <= 10_000.0) {
        bail!("--rate must be in (0, 10000]");
    }
    if cli.threads == 0 || cli.connect_concurrency == 0 || cli.etcd_connections == 0 {
        bail!("--threads, --connect-concurrency and --etcd-connections must be at least 1");
    }
    if cli.value_bytes > 1 << 20 {
        bail!("--value-bytes must be at most 1 MiB");
    }
    if cli.preload_apps > 0 && cli.etcd.is_some() && cli.mode != Mode::LoadDemo {
        bail!("--preload-apps only loads into the etcd this tool starts (not --etcd), or with --mode load-demo");
    }
    if cli.mode == Mode::Etcd && cli.etcd_api == Api::V2 {
        bail!("--mode etcd measures direct v3 watches; with --etcd-api v2 use --mode lainlet");
    }
    if cli.mode == Mode::Storm && !(cli.storm_secs > 0.0 && (1..=256).contains(&cli.storm_writers))
    {
        bail!("--storm-secs must be positive and --storm-writers 1..=256");
    }
    for addr in cli.etcd.iter().chain(&cli.lainlet) {
        loopback(addr)?;
    }
    for e in cli.endpoints.iter().chain(&cli.get_paths) {
        if !e.starts_with('/') {
            bail!("--endpoint or --get-path {e:?} must be a path starting with /");
        }
    }
    match (cli.mode, &cli.listen) {
        (Mode::GetFloor, Some(addr)) => drop(loopback(addr)?),
        (Mode::GetFloor, None) => bail!("--mode get-floor needs --listen 127.0.0.1:PORT"),
        (_, Some(_)) => bail!("--listen is for --mode get-floor"),
        _ => {}
    }
    if !cli.get_paths.is_empty() && cli.mode != Mode::GetFloor {
        bail!("--get-path is for --mode get-floor");
    }
    if !(1..=64).contains(&cli.floor_threads) {
        bail!("--floor-threads must be 1..=64");
    }
    if cli.mode == Mode::LoadDemo && (cli.etcd.is_none() || cli.etcd_api == Api::Both) {
        bail!("--mode load-demo needs --etcd 127.0.0.1:PORT and --etcd-api v2 or v3");
    }
    if cli.orig_bin.is_some() && cli.mode != Mode::All {
        bail!("--orig-bin is for --mode all");
    }
    if cli.mode == Mode::All {
        if cli.lainlet.is_some() {
            bail!("--mode all starts its own servers (no --lainlet)");
        }
        let bins = [&cli.lainlet_bin, &cli.smol_bin].into_iter();
        for bin in bins.chain(&cli.orig_bin) {
            if !bin.is_file() {
                bail!(
                    "{} does not exist (build it: cargo build --release --bin lainlet --bin lainlet-smol)",
                    bin.display()
                );
            }
        }
    }
    Ok(())
}

/// `--mode floor-server`: the floor's process (see [`floor::serve`]).
fn floor_server_main(cli: &Cli) -> ExitCode {
    let Some(first) = cli.floor_seq else {
        eprintln!("lainlet-load: --mode floor-server is started by --mode floor and all");
        return ExitCode::from(2);
    };
    let (scenario, bytes) = (cli.scenario, cli.value_bytes);
    let params = floor::Params {
        threads: cli.floor_threads,
        paths: watch_paths(cli),
        key: scenario.key().to_owned(),
        first: scenario.value(first, bytes),
    };
    let values = Box::new(move |seq| scenario.value(seq, bytes));
    match floor::serve(params, first, values, Duration::from_secs(cli.max_secs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lainlet-load floor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--mode get-floor`: serves until killed, or --max-secs.
fn get_floor_main(cli: &Cli) -> ExitCode {
    let paths: Vec<String> = match cli.get_paths.is_empty() {
        true => get_floor::DEFAULT_PATHS.map(String::from).to_vec(),
        false => cli.get_paths.clone(),
    };
    let served = cli
        .listen
        .as_deref()
        .ok_or_else(|| anyhow!("--listen is needed"))
        .and_then(loopback)
        .and_then(|addr| get_floor::run(addr, &paths, Duration::from_secs(cli.max_secs)));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lainlet-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// This machine's cores (1 if unknown).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What every phase shares.
struct Ctx {
    clock: Clock,
    /// The etcd (none for the floor alone).
    etcd: Option<SocketAddr>,
    /// The store the phase writes to, and a writer to it (from the first [`use_store`]).
    store: Store,
    writer: Option<Writer>,
    /// The last sequence number written.
    seq: u32,
}

/// One reading of the servers.
#[derive(Clone, Debug, Default)]
struct Sample {
    /// RSS (KiB) and CPU seconds of the server under test (lainlet, or etcd in direct mode).
    rss_kib: Option<u64>,
    cpu: Option<f64>,
    /// From etcd's /metrics (watchers: of the store the sample is about, see [`sample`]).
    etcd_watchers: Option<f64>,
    etcd_streams: Option<f64>,
    etcd_rss: Option<f64>,
    etcd_cpu: Option<f64>,
    /// From lainlet's /metrics.
    conflated: Option<f64>,
    frames_out: Option<f64>,
    /// This tool's CPU seconds.
    tool_cpu: f64,
}

async fn sample(ctx: &Ctx, server_pid: Option<u32>, lainlet: Option<SocketAddr>) -> Sample {
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

/// How the watchers of a phase are made.
enum Kind {
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

/// The outcome of one phase.
struct Report {
    mode: &'static str,
    /// The store written and read.
    store: Store,
    n: usize,
    changes: u32,
    rate: f64,
    open_secs: f64,
    series_secs: f64,
    delivery: Delivery,
    before: Sample,
    idle: Sample,
    after: Sample,
}

async fn run(cli: &Cli) -> anyhow::Result<bool> {
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
const ORIGINAL: &str = "original";

/// A server a phase starts.
struct Target {
    label: &'static str,
    bin: PathBuf,
    store: Store,
}

/// The servers measured one after another, in order.
fn servers(cli: &Cli) -> Vec<Target> {
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

/// The watch paths of the scenario (or --endpoint).
fn watch_paths(cli: &Cli) -> Vec<String> {
    match cli.endpoints.is_empty() {
        true => vec![cli.scenario.endpoint().to_owned()],
        false => cli.endpoints.iter().map(|p| with_watch(p)).collect(),
    }
}

/// The floor's phase: a floor process (this binary, `--mode floor-server`) serving lainlet's
/// frames of the scenario's key, from its next sequence number on.
async fn floor_phase(cli: &Cli, ctx: &mut Ctx) -> anyhow::Result<Report> {
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

/// Makes `store` the one the next phase writes to: a writer, the preload (once per store), and
/// the changing key's first value (a new sequence number).
async fn use_store(cli: &Cli, ctx: &mut Ctx, store: Store) -> anyhow::Result<()> {
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

/// One measured phase: open N watchers, settle, series of changes, drain, close.
async fn phase(cli: &Cli, ctx: &mut Ctx, mut kind: Kind) -> anyhow::Result<Report> {
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
        let task = match &kind {
            Kind::Lainlet { addr, paths, .. } => tokio::spawn(clients::sse_client(
                *addr,
                paths[i % paths.len()].clone(),
                ctx.clock,
                progress.clone(),
                permit,
                expected,
                stop_rx.clone(),
            )),
            Kind::Floor { floor, paths } => tokio::spawn(clients::sse_client(
                floor.addr(),
                paths[i % paths.len()].clone(),
                ctx.clock,
                progress.clone(),
                permit,
                expected,
                stop_rx.clone(),
            )),
            Kind::Direct { clients, key, .. } => tokio::spawn(clients::etcd_client(
                clients[i % clients.len()].clone(),
                key.clone(),
                ctx.clock,
                progress.clone(),
                permit,
                expected,
                stop_rx.clone(),
            )),
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
async fn series(
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

async fn write_series(
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

/// `--mode load-demo`: writes the demo data (`lainlet --demo`'s) into the etcd at --etcd.
async fn load_demo(cli: &Cli) -> anyhow::Result<()> {
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
async fn preload(writer: &mut Writer, apps: usize) -> anyhow::Result<(usize, usize)> {
    let dump = generated(&ClusterShape::large(apps));
    let (keys, bytes) = (dump.kvs.len(), dump.value_bytes());
    writer
        .load(dump.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect())
        .await?;
    Ok((keys, bytes))
}

/// Polls `done` every 5 ms until it holds, or fails after `limit`.
async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Waits (≤ 10 s) until a GET of `path` on lainlet shows sequence number ≥ `seq`.
async fn wait_applied(addr: SocketAddr, path: &str, seq: u32) -> anyhow::Result<()> {
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
async fn wait_etcd_watchers(ctx: &Ctx, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if sample(ctx, None, None).await.etcd_watchers == Some(n as f64) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `path` with `watch=1` (added if it has no `watch` parameter).
fn with_watch(path: &str) -> String {
    if path.split(['?', '&']).any(|p| p.starts_with("watch=")) {
        path.to_owned()
    } else if path.contains('?') {
        format!("{path}&watch=1")
    } else {
        format!("{path}?watch=1")
    }
}

/// `path` without its `watch` parameter (the plain GET of the same view).
fn without_watch(path: &str) -> String {
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("watch="))
        .collect();
    match rest.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{}", rest.join("&")),
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn diff(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "n/a".into(), |v| v.to_string())
}

impl Report {
    /// The server's RSS growth per idle watcher, in KiB (lainlet: /proc; etcd: /proc or
    /// its /metrics).
    fn rss_per_watcher_kib(&self) -> Option<f64> {
        let kib = match (self.before.rss_kib, self.idle.rss_kib) {
            (Some(a), Some(b)) => Some(b as f64 - a as f64),
            _ if self.mode == "etcd" => {
                diff(self.before.etcd_rss, self.idle.etcd_rss).map(|b| b / 1024.0)
            }
            _ => None,
        };
        kib.map(|k| k / self.n as f64)
    }

    fn server_cpu_series(&self) -> Option<f64> {
        match self.mode {
            "etcd" => diff(self.idle.cpu, self.after.cpu)
                .or_else(|| diff(self.idle.etcd_cpu, self.after.etcd_cpu)),
            _ => diff(self.idle.cpu, self.after.cpu),
        }
    }

    fn print(&self) {
        let d = &self.delivery;
        let mib = |b: Option<f64>| opt(b.map(|b| format!("{:.1}", b / (1 << 20) as f64)));
        let server = self.mode;
        println!(
            "opened {} watchers in {:.2} s; series: {} changes in {:.2} s (incl. drain)",
            self.n, self.open_secs, self.changes, self.series_secs
        );
        println!(
            "put (send → etcd ack):            p50/p99/max {}",
            show(&d.put)
        );
        println!(
            "delivery, receipt by client task: p50/p99/max {}  ({} frames)",
            show(&d.receipt),
            d.delivered
        );
        println!(
            "delivery, arrival in socket:      p50/p99/max {}",
            show(&d.arrival)
        );
        println!(
            "change reached all N, receipt:    p50/p99/max {}  ({} changes)",
            show(&d.complete_receipt),
            d.complete_receipt.map_or(0, |s| s.count)
        );
        println!(
            "change reached all N, arrival:    p50/p99/max {}",
            show(&d.complete_arrival)
        );
        println!(
            "watchers failed: {}, stale at the end: {}, changes not reaching everyone: {}, conflated (skipped) frames: {}, out of order: {}, error frames: {}, frames without marker: {}",
            d.failed, d.stale, d.incomplete, d.skipped, d.out_of_order, d.error_frames, d.other_frames
        );
        if let Some(e) = &d.first_error {
            println!("first failure: {e}");
        }
        println!(
            "{server} RSS: {} KiB before, {} KiB with {} idle watchers ({} KiB per watcher), {} KiB after the series",
            opt(self.before.rss_kib),
            opt(self.idle.rss_kib),
            self.n,
            opt(self.rss_per_watcher_kib().map(|k| format!("{k:.2}"))),
            opt(self.after.rss_kib)
        );
        println!(
            "{server} CPU: {} s opening the watchers, {} s during the series ({} ms per change)",
            opt(diff(self.before.cpu, self.idle.cpu).map(|c| format!("{c:.2}"))),
            opt(self.server_cpu_series().map(|c| format!("{c:.2}"))),
            opt(self
                .server_cpu_series()
                .map(|c| format!("{:.2}", c * 1000.0 / self.changes as f64)))
        );
        println!(
            "etcd /metrics: watchers {} → {} (idle) → {}, watch streams {} (idle), RSS {} → {} MiB (idle), CPU during the series {} s",
            opt(self.before.etcd_watchers),
            opt(self.idle.etcd_watchers),
            opt(self.after.etcd_watchers),
            opt(self.idle.etcd_streams),
            mib(self.before.etcd_rss),
            mib(self.idle.etcd_rss),
            opt(diff(self.idle.etcd_cpu, self.after.etcd_cpu).map(|c| format!("{c:.2}")))
        );
        if self.idle.frames_out.is_some() {
            println!(
                "lainlet /metrics during the series: frames out {}, conflated {}",
                opt(diff(self.idle.frames_out, self.after.frames_out)),
                opt(diff(self.idle.conflated, self.after.conflated))
            );
        }
        println!(
            "this tool's CPU: {:.2} s during the series",
            self.after.tool_cpu - self.idle.tool_cpu
        );
    }

    /// The store read (`–` for the floor).
    fn store_name(&self) -> &'static str {
        match self.mode {
            table::FLOOR => "–",
            _ => self.store.name(),
        }
    }

    /// Its row of the ratio table.
    fn table_row(&self) -> table::Row {
        let d = &self.delivery;
        let ms = |ns: i64| ns as f64 / 1e6;
        table::Row {
            label: self.mode.to_owned(),
            store: self.store_name().to_owned(),
            n: self.n,
            p50: d.receipt.map(|s| ms(s.p50)),
            p99: d.receipt.map(|s| ms(s.p99)),
            max: d.receipt.map(|s| ms(s.max)),
            p99_arrival: d.arrival.map(|s| ms(s.p99)),
            all_p99: d.complete_receipt.map(|s| ms(s.p99)),
            cpu_per_change: self
                .server_cpu_series()
                .map(|c| c * 1000.0 / self.changes as f64),
            kib_per_watcher: self.rss_per_watcher_kib(),
            failed: d.failed,
            stale: d.stale,
        }
    }

    fn header() -> String {
        "| mode | N | changes | delivery p50 / p99 / max (receipt) | p99 arrival | all N reached p50 / p99 / max | failed / stale | server RSS idle, per watcher | server CPU, per change | etcd watchers | etcd RSS idle |\n\
         | --- | ---: | --- | --- | ---: | --- | --- | --- | --- | ---: | ---: |"
            .into()
    }

    fn row(&self) -> String {
        let d = &self.delivery;
        let p99 = |s: &Option<stats::Spread>| s.map_or_else(|| "n/a".into(), |s| ms(s.p99));
        let rss = match self.mode {
            "etcd" => self.idle.etcd_rss.map(|b| b / (1 << 20) as f64),
            _ => self.idle.rss_kib.map(|k| k as f64 / 1024.0),
        };
        format!(
            "| {} ({}) | {} | {} @ {}/s | {} | {} | {} | {} / {} | {} MiB, {} KiB | {} ms | {} | {} MiB |",
            self.mode,
            self.store_name(),
            self.n,
            self.changes,
            self.rate,
            show(&d.receipt),
            p99(&d.arrival).replace("n/a", "–"),
            show(&d.complete_receipt),
            d.failed,
            d.stale,
            opt(rss.map(|m| format!("{m:.1}"))),
            opt(self.rss_per_watcher_kib().map(|k| format!("{k:.2}"))),
            opt(self.server_cpu_series().map(|c| format!("{:.2}", c * 1000.0 / self.changes as f64))),
            opt(self.idle.etcd_watchers),
            opt(self.idle.etcd_rss.map(|b| format!("{:.1}", b / (1 << 20) as f64))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_parameters_are_added_and_removed() {
        assert_eq!(with_watch("/v2/nodes"), "/v2/nodes?watch=1");
        assert_eq!(with_watch("/v2/x?a=1"), "/v2/x?a=1&watch=1");
        assert_eq!(with_watch("/v2/x?watch=true"), "/v2/x?watch=true");
        assert_eq!(without_watch("/v2/x?a=1&watch=1"), "/v2/x?a=1");
        assert_eq!(without_watch("/v2/x?watch=1"), "/v2/x");
    }

    #[test]
    fn scenario_values_carry_the_sequence_number() {
        for scenario in [Scenario::Config, Scenario::Podgroup] {
            let v = scenario.value(42, 64);
            assert_eq!(clients::find_seq(&v), Some(42));
        }
        assert_eq!(Scenario::Config.value(1, 64).len(), 64);
        let pg = Scenario::Podgroup.value(1, 0).len();
        assert!((2_000..12_000).contains(&pg), "{pg}");
    }
}
