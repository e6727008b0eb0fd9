//! What a phase reports: its lines after the phase, its row of the results table and of the
//! ratios to the floor.

use crate::run::Sample;
use crate::stats::{self, ms, show, Delivery};
use crate::table;
use crate::writer::Store;

/// The outcome of one phase.
pub(crate) struct Report {
    pub(crate) mode: &'static str,
    /// The store written and read.
    pub(crate) store: Store,
    pub(crate) n: usize,
    pub(crate) changes: u32,
    pub(crate) rate: f64,
    pub(crate) open_secs: f64,
    pub(crate) series_secs: f64,
    pub(crate) delivery: Delivery,
    pub(crate) before: Sample,
    pub(crate) idle: Sample,
    pub(crate) after: Sample,
}

pub(crate) fn diff(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

pub(crate) fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "n/a".into(), |v| v.to_string())
}

impl Report {
    /// The server's RSS growth per idle watcher, in KiB (lainlet: /proc; etcd: /proc or
    /// its /metrics).
    pub(crate) fn rss_per_watcher_kib(&self) -> Option<f64> {
        let kib = match (self.before.rss_kib, self.idle.rss_kib) {
            (Some(a), Some(b)) => Some(b as f64 - a as f64),
            _ if self.mode == "etcd" => {
                diff(self.before.etcd_rss, self.idle.etcd_rss).map(|b| b / 1024.0)
            }
            _ => None,
        };
        kib.map(|k| k / self.n as f64)
    }

    pub(crate) fn server_cpu_series(&self) -> Option<f64> {
        match self.mode {
            "etcd" => diff(self.idle.cpu, self.after.cpu)
                .or_else(|| diff(self.idle.etcd_cpu, self.after.etcd_cpu)),
            _ => diff(self.idle.cpu, self.after.cpu),
        }
    }

    pub(crate) fn print(&self) {
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
    pub(crate) fn store_name(&self) -> &'static str {
        match self.mode {
            table::FLOOR => "–",
            _ => self.store.name(),
        }
    }

    /// Its row of the ratio table.
    pub(crate) fn table_row(&self) -> table::Row {
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

    pub(crate) fn header() -> String {
        "| mode | N | changes | delivery p50 / p99 / max (receipt) | p99 arrival | all N reached p50 / p99 / max | failed / stale | server RSS idle, per watcher | server CPU, per change | etcd watchers | etcd RSS idle |\n\
         | --- | ---: | --- | --- | ---: | --- | --- | --- | --- | ---: | ---: |"
            .into()
    }

    pub(crate) fn row(&self) -> String {
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
