//! The command line: the options, the modes, stores and scenarios they name, their checks, and
//! the watch paths they give.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, ValueEnum};
use lainlet_fixtures::{
    pod_group_value, web_annotation, ContainerParams, ContainerSpecParams, PodGroupParams,
    PodParams,
};

use crate::clients::MARKER;
use crate::procs::loopback;
use crate::writer::Store;

/// Opens N watch connections on lainlet (SSE) and/or N watches directly on etcd, applies a
/// series of changes to etcd, and reports delivery latency, lost/stale frames, server memory
/// per watcher and CPU time, and etcd's watcher count and memory. Only loopback addresses.
#[derive(Parser, Debug)]
#[command(name = "lainlet-load")]
pub(crate) struct Cli {
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
    pub(crate) mode: Mode,

    /// The etcd store written to and read by lainlet (`--etcd-api` of lainlet): `v3`, `v2`
    /// (the keys API, one PUT per write), or `both`: every lainlet phase once per store.
    #[arg(long, value_enum, default_value_t = Api::V3)]
    pub(crate) etcd_api: Api,

    /// Storm: how long the writers write.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub(crate) storm_secs: f64,

    /// Storm: concurrent writers, each putting the pod group of its own app as fast as etcd
    /// acknowledges.
    #[arg(long, default_value_t = 16, value_name = "W")]
    pub(crate) storm_writers: usize,

    /// Number of watchers (N).
    #[arg(short = 'n', long, default_value_t = 1000, value_name = "N")]
    pub(crate) watchers: usize,

    /// Number of changes written in the series.
    #[arg(long, default_value_t = 100, value_name = "C")]
    pub(crate) changes: u32,

    /// Changes per second.
    #[arg(long, default_value_t = 10.0, value_name = "PER_SEC")]
    pub(crate) rate: f64,

    /// What changes: `config` (the key /lain/config/load/stamp, watched through
    /// /v2/configwatcher?target=load/stamp) or `podgroup` (a deployd pod group of the app
    /// `loadapp`, one instance, ~5 KB, watched through /v2/coreinfowatcher?appname=loadapp).
    #[arg(long, value_enum, default_value_t = Scenario::Config)]
    pub(crate) scenario: Scenario,

    /// lainlet watch endpoint(s), repeatable; watchers are spread over them round-robin.
    /// Each must show the changed key. Default: the scenario's endpoint.
    #[arg(long = "endpoint", value_name = "PATH")]
    pub(crate) endpoints: Vec<String>,

    /// Size of the config scenario's value in bytes.
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub(crate) value_bytes: usize,

    /// Before starting, load a generated cluster of this many apps (3 pod groups each,
    /// deployd-size values) into etcd, so lainlet holds a realistic state. Only with the
    /// etcd this tool starts, or with --mode load-demo (then instead of the demo data).
    #[arg(long, default_value_t = 0, value_name = "APPS")]
    pub(crate) preload_apps: usize,

    /// Worker threads of this tool's runtime (the clients).
    #[arg(long, default_value_t = 1, value_name = "T")]
    pub(crate) threads: usize,

    /// Watchers being opened at the same time.
    #[arg(long, default_value_t = 64, value_name = "K")]
    pub(crate) connect_concurrency: usize,

    /// gRPC connections the direct etcd watchers are spread over (one watch stream each).
    #[arg(long, default_value_t = 8, value_name = "G")]
    pub(crate) etcd_connections: usize,

    /// Pause after opening the watchers, before reading memory and starting the series.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub(crate) settle_secs: f64,

    /// After the last change, how long to wait for every watcher to have it.
    #[arg(long, default_value_t = 20.0, value_name = "SECS")]
    pub(crate) drain_secs: f64,

    /// Hard limit on the whole run.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub(crate) max_secs: u64,

    /// Use this running etcd (127.0.0.1:PORT) instead of starting one.
    #[arg(long, value_name = "ADDR")]
    pub(crate) etcd: Option<String>,

    /// The etcd binary to start.
    #[arg(long, default_value = "etcd", value_name = "PATH")]
    pub(crate) etcd_bin: PathBuf,

    /// Use this running lainlet (127.0.0.1:PORT) instead of starting one; it must follow the
    /// same etcd.
    #[arg(long, value_name = "ADDR", requires = "etcd")]
    pub(crate) lainlet: Option<String>,

    /// The pid of the running lainlet given with --lainlet (for its RSS and CPU time).
    #[arg(long, value_name = "PID", requires = "lainlet")]
    pub(crate) server_pid: Option<u32>,

    /// The lainlet binary to start.
    #[arg(long, default_value = "target/release/lainlet", value_name = "PATH")]
    pub(crate) lainlet_bin: PathBuf,

    /// --mode all: the lainlet-smol binary to start.
    #[arg(
        long,
        default_value = "target/release/lainlet-smol",
        value_name = "PATH"
    )]
    pub(crate) smol_bin: PathBuf,

    /// --mode all: also measure the original (Go) lainlet, started from this binary with its
    /// own flags (-web, -etcd) on the etcd v2 store, which this tool then writes.
    #[arg(long, value_name = "PATH")]
    pub(crate) orig_bin: Option<PathBuf>,

    /// Floor: writer threads, each owning a slice of the connections [default: one per core;
    /// on 2 cores, 2 beat 1 by a quarter at 10,000 watchers].
    #[arg(long, default_value_t = cores(), hide_default_value = true, value_name = "T")]
    pub(crate) floor_threads: usize,

    /// (--mode floor-server, started by this tool: the sequence number of the init frames.)
    #[arg(long, hide = true, value_name = "SEQ")]
    pub(crate) floor_seq: Option<u32>,

    /// get-floor: where to listen (127.x.x.x:PORT).
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,

    /// get-floor: the views served (repeatable; path and query as lainlet gets them)
    /// [default: /v2/configwatcher?target=vip and /v2/coreinfowatcher].
    #[arg(long = "get-path", value_name = "PATH")]
    pub(crate) get_paths: Vec<String>,

    /// Where the scratch directory (etcd data, logs) is made [default: the system's temp dir].
    #[arg(long, value_name = "DIR")]
    pub(crate) tmp_dir: Option<PathBuf>,

    /// Keep the scratch directory (logs) at the end.
    #[arg(long)]
    pub(crate) keep: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
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
pub(crate) enum Api {
    V2,
    V3,
    Both,
}

impl Api {
    /// The stores of the lainlet phases, in order.
    pub(crate) fn stores(self) -> Vec<Store> {
        match self {
            Api::V2 => vec![Store::V2],
            Api::V3 => vec![Store::V3],
            Api::Both => vec![Store::V3, Store::V2],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    Config,
    Podgroup,
}

impl Scenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Config => "config",
            Scenario::Podgroup => "podgroup",
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            Scenario::Config => "/lain/config/load/stamp",
            Scenario::Podgroup => "/lain/deployd/pod_groups/loadapp/loadapp.web.web",
        }
    }

    pub(crate) fn endpoint(self) -> &'static str {
        match self {
            Scenario::Config => "/v2/configwatcher?target=load/stamp&watch=1",
            Scenario::Podgroup => "/v2/coreinfowatcher?appname=loadapp&watch=1",
        }
    }

    /// The value carrying sequence number `seq`.
    pub(crate) fn value(self, seq: u32, bytes: usize) -> Vec<u8> {
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
pub(crate) fn pod_group_value_for(app: &str, seq: u32) -> Vec<u8> {
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

pub(crate) fn validate(cli: &Cli) -> anyhow::Result<()> {
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

/// This machine's cores (1 if unknown).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The watch paths of the scenario (or --endpoint).
pub(crate) fn watch_paths(cli: &Cli) -> Vec<String> {
    match cli.endpoints.is_empty() {
        true => vec![cli.scenario.endpoint().to_owned()],
        false => cli.endpoints.iter().map(|p| with_watch(p)).collect(),
    }
}

/// `path` with `watch=1` (added if it has no `watch` parameter).
pub(crate) fn with_watch(path: &str) -> String {
    if path.split(['?', '&']).any(|p| p.starts_with("watch=")) {
        path.to_owned()
    } else if path.contains('?') {
        format!("{path}&watch=1")
    } else {
        format!("{path}?watch=1")
    }
}

/// `path` without its `watch` parameter (the plain GET of the same view).
pub(crate) fn without_watch(path: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients;

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
