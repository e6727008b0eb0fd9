//! The one table of `--mode all`: every server's figures next to the floor's, each with its
//! ratio to the floor (`1.52×`: 1.52 times the floor's value; lower is better everywhere).

use std::fmt::Write as _;

/// The label of the floor's row (the reference of the ratios).
pub const FLOOR: &str = "floor";

/// One server's figures from one phase (milliseconds, KiB).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// `floor`, `lainlet`, `lainlet-smol`, `original`, with the store it read (`v3`, `v2`).
    pub label: String,
    pub store: String,
    pub n: usize,
    /// Per delivered frame, by receipt: p50, p99, max.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    /// Per delivered frame, p99 by socket arrival (the kernel's timestamp).
    pub p99_arrival: Option<f64>,
    /// Per change, until all N had it (receipt): p99 over the changes.
    pub all_p99: Option<f64>,
    /// Server CPU time per change during the series.
    pub cpu_per_change: Option<f64>,
    /// Server memory growth per idle watcher.
    pub kib_per_watcher: Option<f64>,
    pub failed: usize,
    pub stale: usize,
}

/// The Markdown table of `rows`, ratios against the first row labelled [`FLOOR`] (no ratios
/// without one).
pub fn markdown(rows: &[Row]) -> String {
    let floor = rows.iter().find(|r| r.label == FLOOR);
    let mut out = String::from(
        "| server | N | delivery p50 | p99 | max | p99 arrival | all N reached p99 | server CPU per change | RSS per idle watcher | failed / stale |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in rows {
        let cell = |value: fn(&Row) -> Option<f64>, unit: &str| {
            cell(value(r), floor.and_then(value), unit)
        };
        let _ = writeln!(
            out,
            "| {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            r.label,
            r.store,
            thousands(r.n),
            cell(|r| r.p50, "ms"),
            cell(|r| r.p99, "ms"),
            cell(|r| r.max, "ms"),
            cell(|r| r.p99_arrival, "ms"),
            cell(|r| r.all_p99, "ms"),
            cell(|r| r.cpu_per_change, "ms"),
            cell(|r| r.kib_per_watcher, "KiB"),
            r.failed,
            r.stale,
        );
    }
    out
}

/// `12.34 ms (1.52×)`; the ratio is left out without a positive floor value, the cell is `n/a`
/// without a value.
fn cell(value: Option<f64>, floor: Option<f64>, unit: &str) -> String {
    let Some(v) = value else {
        return "n/a".into();
    };
    let shown = format!("{} {unit}", two_digits(v));
    match floor {
        Some(f) if f > 0.0 && v.is_finite() => format!("{shown} ({})", ratio(v / f)),
        _ => shown,
    }
}

/// Two decimals below 100, one below 1,000, none above (but never fewer than 3 significant
/// digits for small values).
fn two_digits(v: f64) -> String {
    match v.abs() {
        a if a >= 1000.0 => format!("{v:.0}"),
        a if a >= 100.0 => format!("{v:.1}"),
        a if a > 0.0 && a < 0.1 => format!("{v:.3}"),
        _ => format!("{v:.2}"),
    }
}

/// `1.52×`, `12.3×`, `153×`.
fn ratio(r: f64) -> String {
    match r {
        r if r >= 100.0 => format!("{r:.0}×"),
        r if r >= 10.0 => format!("{r:.1}×"),
        r => format!("{r:.2}×"),
    }
}

/// `10,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, p99: f64) -> Row {
        Row {
            label: label.into(),
            store: "v3".into(),
            n: 10_000,
            p50: Some(p99 / 2.0),
            p99: Some(p99),
            max: Some(p99 * 1.25),
            p99_arrival: None,
            all_p99: Some(p99),
            cpu_per_change: Some(40.0),
            kib_per_watcher: Some(0.05),
            failed: 0,
            stale: 0,
        }
    }

    #[test]
    fn ratios_are_against_the_floor() {
        let table = markdown(&[row(FLOOR, 40.0), row("lainlet", 60.0)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[2].starts_with("| floor (v3) | 10,000 | 20.00 ms (1.00×) | 40.00 ms (1.00×) | 50.00 ms (1.00×) | n/a |"), "{}", lines[2]);
        assert!(
            lines[3].contains("| 30.00 ms (1.50×) | 60.00 ms (1.50×) | 75.00 ms (1.50×) |"),
            "{}",
            lines[3]
        );
        assert!(
            lines[3].ends_with("| 0.050 KiB (1.00×) | 0 / 0 |"),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn without_a_floor_there_are_no_ratios() {
        let table = markdown(&[row("lainlet", 60.0)]);
        assert!(table.contains("| 60.00 ms |"), "{table}");
        assert!(!table.contains('×'), "{table}");
        let zero = Row {
            cpu_per_change: Some(0.0),
            ..row(FLOOR, 40.0)
        };
        let table = markdown(&[zero, row("lainlet", 60.0)]);
        let last = table.lines().last().unwrap();
        assert!(last.contains("| 40.00 ms | 0.050 KiB (1.00×) |"), "{last}");
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(thousands(1), "1");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(ratio(1.234), "1.23×");
        assert_eq!(ratio(12.34), "12.3×");
        assert_eq!(ratio(153.4), "153×");
        assert_eq!(two_digits(1234.4), "1234");
        assert_eq!(two_digits(123.45), "123.5");
        assert_eq!(two_digits(0.05), "0.050");
        assert_eq!(cell(None, Some(1.0), "ms"), "n/a");
    }
}
