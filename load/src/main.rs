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
//!
//! Layout: [`cli`] (options and their checks), [`run`] (a run's servers and stores, one after
//! another), [`phase`] (one measured phase), [`report`] (what a phase prints); this file starts
//! the mode asked for.

mod cli;
mod clients;
mod floor;
mod floor_remote;
mod get_floor;
mod phase;
mod procs;
mod render;
mod report;
mod run;
mod stats;
mod storm;
mod table;
mod writer;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use clap::Parser;

use crate::cli::{validate, watch_paths, Cli, Mode};
use crate::procs::loopback;
use crate::run::run;

/// Open files needed besides the watchers (etcd and lainlet connections, logs, slack).
const FD_SLACK: u64 = 512;

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
