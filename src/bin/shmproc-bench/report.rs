//! The row model and its two renderings: the side-by-side table and JSON.

use std::fmt::Write as _;

use crate::kit::{Comparison, Figures};

/// What a row's figures count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Nanoseconds per round trip.
    Ns,
    /// Nanoseconds per operation (batch mean).
    NsPerOp,
    /// Nanoseconds per message of a stream (run time / messages); the table
    /// also shows the rate, messages per second.
    NsPerMsg,
    /// Nanoseconds per task of a batch of pool tasks (run time / tasks); the
    /// table also shows the rate, tasks per second.
    NsPerTask,
    /// Nanoseconds per call of a run of calls to a server, each a request
    /// and its reply (run time / calls); the table also shows the rate,
    /// calls (Python's ops) per second.
    NsPerCall,
    /// Nanoseconds per MiB of a bulk transfer (transfer time / MiB moved);
    /// the table also shows the bandwidth, GB/s.
    NsPerMiB,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Ns => "ns",
            Unit::NsPerOp => "ns/op",
            Unit::NsPerMsg => "ns/msg",
            Unit::NsPerTask => "ns/task",
            Unit::NsPerCall => "ns/call",
            Unit::NsPerMiB => "ns/MiB",
        }
    }
}

/// Everything about a row that is known before measuring it.
#[derive(Clone, Debug)]
pub(crate) struct RowSpec {
    /// The group of rows (`sync`, later `queue`, `pipe`, …).
    pub(crate) group: &'static str,
    /// What is measured, e.g. `Event ping-pong (Block)`.
    pub(crate) name: String,
    /// `same_core`, `cross_core`, `unpinned`, or `one_thread`.
    pub(crate) placement: &'static str,
    /// Unit of the figures.
    pub(crate) unit: Unit,
    /// Name of the baseline it is compared with.
    pub(crate) baseline: String,
    /// SPEC §6 goal: the largest acceptable subject/baseline ratio (below 1
    /// for "N× faster than" goals: 0.01 is "≥ 100× faster"); `None` for rows
    /// shown for reference only.
    pub(crate) target: Option<f64>,
}

impl RowSpec {
    /// `group/name/placement`: what `--filter` matches.
    pub(crate) fn id(&self) -> String {
        format!("{}/{}/{}", self.group, self.name, self.placement)
    }
}

/// What became of a row.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// Measured: the figures.
    Measured(Comparison),
    /// Stopped by an error (watchdog, crash, setup): the run fails.
    Failed(String),
    /// Not measured, and why: its baseline is not in this build (`peers`
    /// rows without `--features peers`). Shown, not a failure.
    Skipped(String),
}

impl Outcome {
    /// The comparison, if measured.
    pub(crate) fn comparison(&self) -> Option<&Comparison> {
        match self {
            Outcome::Measured(c) => Some(c),
            Outcome::Failed(_) | Outcome::Skipped(_) => None,
        }
    }
}

impl From<Result<Comparison, String>> for Outcome {
    fn from(r: Result<Comparison, String>) -> Self {
        r.map_or_else(Outcome::Failed, Outcome::Measured)
    }
}

/// A row and what became of it.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    /// What was measured.
    pub(crate) spec: RowSpec,
    /// The figures, the error that stopped the row, or why it was skipped.
    pub(crate) outcome: Outcome,
}

impl Row {
    /// Whether the target was met: `None` without a target or a finite
    /// ratio. The ratio is judged as shown (see [`ratio`]): finer digits are
    /// noise.
    pub(crate) fn met(&self) -> Option<bool> {
        let c = self.outcome.comparison().filter(|c| c.ratio.is_finite())?;
        let target = self.spec.target?;
        Some(if target < SMALL && c.ratio > 0.0 {
            // A speed-up target is judged by the speed-up as shown: 0.0104
            // shows as "0.010× (96× faster)", which misses "≥ 100× faster".
            (1.0 / c.ratio).round() >= (1.0 / target).round()
        } else {
            shown(c.ratio) <= target
        })
    }
}

/// Ratios below this are shown with two significant digits and as a speed-up.
const SMALL: f64 = 0.1;

/// Decimals shown of ratio `r`: two, or two significant digits below [`SMALL`].
fn decimals(r: f64) -> usize {
    if r >= SMALL || r <= 0.0 || !r.is_finite() {
        2
    } else {
        // 0.0734 → log10 −1.13 → 3 decimals: 0.073.
        (1.0 - r.log10().floor()).clamp(2.0, 12.0) as usize
    }
}

/// `r` rounded as [`ratio`] shows it.
fn shown(r: f64) -> f64 {
    let scale = 10f64.powi(decimals(r) as i32);
    (r * scale).round() / scale
}

/// Formats a ratio (subject / baseline, lower is faster) with two decimals,
/// or below 0.1 with two significant digits and the speed-up it means:
/// `0.0073× (137× faster)`. `met` judges the value as shown.
pub(crate) fn ratio(r: f64) -> String {
    if !r.is_finite() {
        return "—".to_owned();
    }
    let d = decimals(r);
    if r < SMALL && r > 0.0 { format!("{r:.d$}× ({:.0}× faster)", 1.0 / r) } else { format!("{r:.d$}×") }
}

/// Formats a target: `≤ 1.5×`, or for targets below 1 the speed-up it asks
/// for: `≥ 100× faster` (a ratio of at most 0.01). Throughput rows (`unit`
/// [`Unit::NsPerMsg`], [`Unit::NsPerMiB`]) also say what a bound on the time
/// per message or MiB means for the rate: `≤ 1.25× (≥ 0.8× msg/s)`,
/// `≤ 2.5× (≥ 0.4× GB/s)`.
fn target(t: Option<f64>, unit: Unit) -> String {
    match t {
        None => "ref".to_owned(),
        Some(t) if t < 1.0 && t > 0.0 => format!("≥ {:.0}× faster", 1.0 / t),
        Some(t) if unit == Unit::NsPerMsg => format!("≤ {t}× (≥ {}× msg/s)", 1.0 / t),
        Some(t) if unit == Unit::NsPerMiB => format!("≤ {t}× (≥ {}× GB/s)", 1.0 / t),
        Some(t) => format!("≤ {t}×"),
    }
}

/// Formats a time in ns with a fitting unit.
fn time(ns: f64) -> String {
    if !ns.is_finite() {
        "?".to_owned()
    } else if ns < 100.0 {
        format!("{ns:.1} ns")
    } else if ns < 1e4 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// Formats the rate of a stream whose messages (or tasks) take `ns` each:
/// `102.3 M/s`.
fn rate(ns: f64) -> String {
    let r = 1e9 / ns;
    if !r.is_finite() || r <= 0.0 {
        "?".to_owned()
    } else if r >= 1e6 {
        format!("{:.1} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.0}/s")
    }
}

/// Formats the bandwidth of a transfer that takes `ns` per MiB: `10.07 GB/s`
/// (GB = 10^9 bytes, as the baselines report it).
fn bandwidth(ns: f64) -> String {
    let gb_per_s = (1u64 << 20) as f64 / ns;
    if gb_per_s.is_finite() && gb_per_s > 0.0 { format!("{gb_per_s:.2} GB/s") } else { "?".to_owned() }
}

fn opt_time(ns: Option<f64>) -> String {
    ns.map_or_else(|| "—".to_owned(), time)
}

/// The table's cells for a row (without the group, printed as a heading).
fn cells(row: &Row) -> Vec<String> {
    let spec = &row.spec;
    let mut out = vec![spec.name.clone(), spec.placement.to_owned()];
    let p50 = |ns: f64| match spec.unit {
        Unit::NsPerMsg | Unit::NsPerTask | Unit::NsPerCall => format!("{} = {}", time(ns), rate(ns)),
        Unit::NsPerMiB => format!("{} = {}", time(ns), bandwidth(ns)),
        Unit::Ns | Unit::NsPerOp => time(ns),
    };
    let figures = |f: &Figures| vec![p50(f.p50), opt_time(f.p99), opt_time(f.p999)];
    let target = target(spec.target, spec.unit);
    match &row.outcome {
        Outcome::Measured(c) => {
            out.extend(figures(&c.subject));
            out.push(spec.baseline.clone());
            out.extend(figures(&c.baseline));
            out.push(ratio(c.ratio));
            out.push(target);
            out.push(match row.met() {
                Some(true) => "yes".to_owned(),
                Some(false) => "NO".to_owned(),
                None => "—".to_owned(),
            });
            out.push(c.same_cpu.map_or_else(|| "—".to_owned(), |s| format!("{:.2} / {:.2}", s.subject, s.baseline)));
            out.push(c.floor.map_or_else(|| "—".to_owned(), |f| format!("{} → {}", time(f.before), time(f.after))));
        }
        Outcome::Failed(why) | Outcome::Skipped(why) => {
            out.extend(["—", "—", "—"].map(str::to_owned));
            out.push(spec.baseline.clone());
            out.extend(["—", "—", "—", "—"].map(str::to_owned));
            out.push(target);
            out.push(if matches!(row.outcome, Outcome::Failed(_)) { "FAILED" } else { "skipped" }.to_owned());
            out.push("—".to_owned());
            out.push(why.clone());
        }
    }
    out
}

/// The side-by-side table, with a heading line per group and the legend.
pub(crate) fn table(rows: &[Row], preamble: &str) -> String {
    const HEAD: [&str; 14] = [
        "name",
        "placement",
        "p50",
        "p99",
        "p99.9",
        "baseline",
        "p50",
        "p99",
        "p99.9",
        "ratio",
        "target",
        "met",
        "same CPU",
        "spin floor",
    ];
    let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
    let mut widths: Vec<usize> = HEAD.iter().map(|h| h.chars().count()).collect();
    for r in &body {
        // The last cell (floor or error) is not padded.
        for (w, c) in widths.iter_mut().zip(r.iter().take(HEAD.len() - 1)) {
            *w = (*w).max(c.chars().count());
        }
    }
    let numeric = |i: usize| matches!(i, 2..=4 | 6..=9);
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths[i];
            let sep = if i == 5 || i == 9 { " │ " } else { "  " };
            if i > 0 {
                s.push_str(sep);
            }
            if i + 1 == HEAD.len() {
                s.push_str(c);
            } else if numeric(i) {
                let _ = write!(s, "{c:>w$}");
            } else {
                let _ = write!(s, "{c:<w$}");
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = String::from(preamble);
    let head = line(&HEAD);
    let rule = "─".repeat(head.chars().count());
    let mut group = "";
    for (row, cells) in rows.iter().zip(&body) {
        if row.spec.group != group {
            group = row.spec.group;
            let _ = writeln!(out, "\n[{group}]\n{head}\n{rule}");
        }
        let refs: Vec<&str> = cells.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&refs));
    }
    out
}

/// Quotes `s` as a JSON string.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number (rounded to 0.01), or `null`.
fn json_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{}", (v * 100.0).round() / 100.0),
        _ => "null".to_owned(),
    }
}

/// The rows as a JSON array of objects, one per line. Field names are stable:
/// `group, name, placement, unit, p50, p99, p999, baseline, baseline_p50,
/// baseline_p99, baseline_p999, ratio, target, met, same_cpu,
/// baseline_same_cpu, spin_floor_before, spin_floor_after, samples, error,
/// skipped` (`error`: why a failed row failed; `skipped`: why a row was not
/// measured). Times are in `unit`; absent figures are `null`.
pub(crate) fn json(rows: &[Row]) -> String {
    let mut out = String::from("[\n");
    for (i, row) in rows.iter().enumerate() {
        let spec = &row.spec;
        let ok = row.outcome.comparison();
        let (error, skipped) = match &row.outcome {
            Outcome::Measured(_) => (None, None),
            Outcome::Failed(why) => (Some(why), None),
            Outcome::Skipped(why) => (None, Some(why)),
        };
        let text = |s: Option<&String>| s.map_or_else(|| "null".to_owned(), |s| json_str(s));
        let fig = |f: fn(&Comparison) -> Option<f64>| json_num(ok.and_then(f));
        let _ = write!(
            out,
            "  {{\"group\": {}, \"name\": {}, \"placement\": {}, \"unit\": {}, \
             \"p50\": {}, \"p99\": {}, \"p999\": {}, \
             \"baseline\": {}, \"baseline_p50\": {}, \"baseline_p99\": {}, \"baseline_p999\": {}, \
             \"ratio\": {}, \"target\": {}, \"met\": {}, \"same_cpu\": {}, \"baseline_same_cpu\": {}, \
             \"spin_floor_before\": {}, \"spin_floor_after\": {}, \"samples\": {}, \"error\": {}, \
             \"skipped\": {}}}",
            json_str(spec.group),
            json_str(&spec.name),
            json_str(spec.placement),
            json_str(spec.unit.name()),
            fig(|c| Some(c.subject.p50)),
            fig(|c| c.subject.p99),
            fig(|c| c.subject.p999),
            json_str(&spec.baseline),
            fig(|c| Some(c.baseline.p50)),
            fig(|c| c.baseline.p99),
            fig(|c| c.baseline.p999),
            ok.filter(|c| c.ratio.is_finite()).map_or_else(|| "null".to_owned(), |c| c.ratio.to_string()),
            spec.target.map_or_else(|| "null".to_owned(), |t| t.to_string()),
            row.met().map_or_else(|| "null".to_owned(), |m| m.to_string()),
            fig(|c| c.same_cpu.map(|s| s.subject)),
            fig(|c| c.same_cpu.map(|s| s.baseline)),
            fig(|c| c.floor.map(|f| f.before)),
            fig(|c| c.floor.map(|f| f.after)),
            ok.map_or_else(|| "null".to_owned(), |c| c.samples.to_string()),
            text(error),
            text(skipped),
        );
        out.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::Floor;

    fn row(outcome: Result<Comparison, String>) -> Row {
        let outcome = outcome.into();
        let spec = RowSpec {
            group: "sync",
            name: "Event \"ping\"".to_owned(),
            placement: "cross_core",
            unit: Unit::Ns,
            baseline: "raw spin".to_owned(),
            target: Some(2.0),
        };
        Row { spec, outcome }
    }

    fn comparison(ratio: f64) -> Comparison {
        let f = Figures { p50: 100.0, p99: Some(250.0), p999: None };
        let floor = Some(Floor { before: 66.0, after: 70.0 });
        Comparison { subject: f, baseline: f, ratio, floor, samples: 9, same_cpu: None }
    }

    #[test]
    fn met_compares_the_ratio_with_the_target() {
        assert_eq!(row(Ok(comparison(1.5))).met(), Some(true));
        assert_eq!(row(Ok(comparison(2.5))).met(), Some(false));
        assert_eq!(row(Ok(comparison(2.004))).met(), Some(true));
        assert_eq!(row(Err("hung".into())).met(), None);
        assert_eq!(row(Ok(comparison(f64::NAN))).met(), None);
    }

    #[test]
    fn speed_up_targets_are_judged_by_the_speed_up_shown() {
        let against = |ratio: f64| {
            let mut r = row(Ok(comparison(ratio)));
            r.spec.target = Some(0.01);
            r
        };
        assert_eq!(against(0.0104).met(), Some(false), "96× faster misses ≥ 100×");
        assert_eq!(against(0.01004).met(), Some(true), "shown as 100× faster");
        assert_eq!(against(0.0073).met(), Some(true));
    }

    #[test]
    fn small_ratios_show_two_significant_digits_and_the_speed_up() {
        assert_eq!(ratio(1.234), "1.23×");
        assert_eq!(ratio(0.1), "0.10×");
        assert_eq!(ratio(0.0734), "0.073× (14× faster)");
        assert_eq!(ratio(0.00731), "0.0073× (137× faster)");
        assert_eq!(ratio(f64::INFINITY), "—");
        assert_eq!(target(Some(0.01), Unit::Ns), "≥ 100× faster");
        assert_eq!(target(Some(0.02), Unit::NsPerMsg), "≥ 50× faster");
        assert_eq!(target(Some(1.5), Unit::Ns), "≤ 1.5×");
        assert_eq!(target(Some(1.25), Unit::NsPerMsg), "≤ 1.25× (≥ 0.8× msg/s)");
        assert_eq!(target(Some(2.5), Unit::NsPerMiB), "≤ 2.5× (≥ 0.4× GB/s)");
        assert_eq!(target(None, Unit::Ns), "ref");
    }

    #[test]
    fn json_has_the_stable_fields_and_escapes() {
        let mut skipped = row(Ok(comparison(1.5)));
        skipped.outcome = Outcome::Skipped("not built".into());
        let j = json(&[row(Ok(comparison(1.5))), row(Err("watchdog".into())), skipped]);
        for field in [
            "\"group\": \"sync\"",
            "\"p999\": null",
            "\"ratio\": 1.5",
            "\"met\": true",
            "\"error\": \"watchdog\", \"skipped\": null",
            "\"error\": null, \"skipped\": \"not built\"",
        ] {
            assert!(j.contains(field), "{field} missing in {j}");
        }
        assert!(j.contains("Event \\\"ping\\\""));
        assert!(j.starts_with('[') && j.ends_with(']'));
    }

    #[test]
    fn skipped_rows_say_why_and_are_no_failure() {
        let mut r = row(Ok(comparison(0.5)));
        r.outcome = Outcome::Skipped("build with --features peers".into());
        let c = cells(&r);
        assert_eq!((c[9].as_str(), c[11].as_str()), ("—", "skipped"));
        assert_eq!(c.last().map(String::as_str), Some("build with --features peers"));
        assert_eq!(r.met(), None);
        r.outcome = Err("watchdog".to_owned()).into();
        assert_eq!(cells(&r)[11], "FAILED");
    }

    #[test]
    fn calls_show_their_rate() {
        let mut r = row(Ok(comparison(0.05)));
        r.spec.unit = Unit::NsPerCall;
        r.spec.target = Some(0.05);
        let cells = cells(&r);
        assert_eq!((cells[2].as_str(), cells[11].as_str()), ("100 ns = 10.0 M/s", "yes"));
        assert_eq!(target(r.spec.target, r.spec.unit), "≥ 20× faster");
    }

    #[test]
    fn times_pick_a_unit() {
        assert_eq!(time(66.04), "66.0 ns");
        assert_eq!(time(4870.0), "4870 ns");
        assert_eq!(time(52_345.0), "52.3 µs");
        assert_eq!(time(4_000_000.0), "4.00 ms");
        assert_eq!(rate(9.81), "101.9 M/s");
        assert_eq!(rate(6900.0), "144.9 k/s");
        assert_eq!(rate(f64::NAN), "?");
        assert_eq!(bandwidth(104_857.6), "10.00 GB/s");
        assert_eq!(bandwidth(f64::NAN), "?");
    }
}
