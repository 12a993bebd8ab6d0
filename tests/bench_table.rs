//! The main job, `shmproc-bench`, as a newcomer runs it: `--quick --json`
//! gives every row (the ids `--list` names, in order), each well-formed, and
//! the latency chart beside it. No timing is asserted: figures are the
//! benchmark's business, only their shape is checked here. `--no-python`:
//! the `CPython` rows use the stored figures (a live script, slow under
//! load, would make the test flaky).

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_shmproc-bench");

/// Longer than `--quick` ever takes (under a minute quiet; a loaded 2-CPU
/// machine, a debug build), short of hanging CI.
const WATCHDOG: Duration = Duration::from_secs(900);

/// Runs the bench with `args` in a process group of its own: its stdout,
/// after checking it succeeded. On a hang the whole group (the bench and
/// the processes it forked) is killed.
fn bench(args: &[&str]) -> String {
    let mut child = Command::new(BENCH)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("running {BENCH}: {e}"));
    let group = child.id() as i32;
    let kill_group = || {
        // SAFETY: kill(2) of the process group we made for the bench.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    };
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = tx.send(stdout.read_to_string(&mut out).map(|_| out));
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WATCHDOG {
            kill_group();
            let _ = child.wait();
            panic!("shmproc-bench {args:?} still running after {WATCHDOG:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // A process of its group still holding stdout keeps the read open.
    let Ok(out) = rx.recv_timeout(Duration::from_secs(60)) else {
        kill_group();
        panic!("shmproc-bench {args:?} exited, but something it started still holds its output: killed");
    };
    let out = out.unwrap();
    assert!(status.success(), "shmproc-bench {args:?} failed ({status}); stdout:\n{out}");
    out
}

/// Removes a file however the test ends.
struct Removed(std::path::PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The stable field names of a row (see `report::json`).
const FIELDS: [&str; 21] = [
    "group",
    "name",
    "placement",
    "unit",
    "p50",
    "p99",
    "p999",
    "baseline",
    "baseline_p50",
    "baseline_p99",
    "baseline_p999",
    "ratio",
    "target",
    "met",
    "same_cpu",
    "baseline_same_cpu",
    "spin_floor_before",
    "spin_floor_after",
    "samples",
    "error",
    "skipped",
];

fn string<'a>(row: &'a Value, field: &str) -> &'a str {
    row[field].as_str().unwrap_or_else(|| panic!("{field} is not a string in {row}"))
}

/// A figure: a positive finite number.
fn figure(row: &Value, field: &str) -> f64 {
    let v = row[field].as_f64().unwrap_or_else(|| panic!("{field} is not a number in {row}"));
    assert!(v.is_finite() && v > 0.0, "{field} = {v} in {row}");
    v
}

#[test]
fn quick_json_has_every_row_well_formed_and_a_chart() {
    let listed: Vec<String> = bench(&["--list"]).lines().map(str::to_owned).collect();
    assert!(listed.len() > 50, "too few rows listed: {listed:?}");
    for group in ["sync/", "process/", "array/", "queue/", "pipe/", "pool/", "manager/", "peers/"] {
        assert!(listed.iter().any(|id| id.starts_with(group)), "no {group} row listed");
    }

    let chart = Removed(std::env::temp_dir().join(format!("shmproc-bench-test-{}.svg", std::process::id())));
    let out = bench(&["--quick", "--json", "--no-python", "--chart", chart.0.to_str().unwrap()]);
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));

    let ids: Vec<String> = rows
        .iter()
        .map(|r| format!("{}/{}/{}", string(r, "group"), string(r, "name"), string(r, "placement")))
        .collect();
    assert_eq!(ids, listed, "the rows measured are the rows listed, in order");

    let mut measured = 0;
    for row in &rows {
        let fields: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields.len(), FIELDS.len(), "{row}");
        for field in FIELDS {
            assert!(row.get(field).is_some(), "{field} missing in {row}");
        }
        assert!(
            ["ns", "ns/op", "ns/msg", "ns/task", "ns/call", "ns/MiB"].contains(&string(row, "unit")),
            "unknown unit in {row}"
        );
        assert!(!string(row, "baseline").is_empty(), "{row}");
        assert!(row["target"].is_null() || figure(row, "target") > 0.0);
        // Skipped: the peers rows without their libraries, and cross_core
        // rows on one CPU, nothing else.
        if !row["skipped"].is_null() {
            let peers = string(row, "group") == "peers" && !cfg!(feature = "peers");
            let one_cpu = string(row, "placement") == "cross_core" && string(row, "skipped").contains("two CPUs");
            assert!(peers || one_cpu, "a row skipped for no reason: {row}");
        }
        if !row["error"].is_null() || !row["skipped"].is_null() {
            // A row that failed or was skipped says why, and has no figures.
            let why = if row["error"].is_null() { "skipped" } else { "error" };
            assert!(!string(row, why).is_empty(), "{row}");
            assert!(row["error"].is_null() || row["skipped"].is_null(), "failed and skipped: {row}");
            assert!(row["p50"].is_null() && row["ratio"].is_null() && row["met"].is_null(), "{row}");
            continue;
        }
        measured += 1;
        let p50 = figure(row, "p50");
        assert!(row["samples"].as_u64().is_some_and(|n| n > 0), "{row}");
        let mut medians = vec![("p99", p50), ("p999", p50)];
        // A row with no baseline figure (a reference row whose baseline
        // measures nothing comparable) has no ratio either.
        let ratio = if row["baseline_p50"].is_null() {
            assert!(row["ratio"].is_null() && row["met"].is_null(), "{row}");
            continue;
        } else {
            let base = figure(row, "baseline_p50");
            medians.extend([("baseline_p99", base), ("baseline_p999", base)]);
            figure(row, "ratio")
        };
        // Percentiles, where given, do not fall below the median (to the
        // JSON's 0.01 rounding).
        for (p, median) in medians {
            if !row[p].is_null() {
                assert!(figure(row, p) >= median - 0.01, "{p} below p50 in {row}");
            }
        }
        // `met` is the ratio against the target, when there is one, as the
        // table shows it: rounded, and a speed-up target (below 0.1) judged
        // by the whole speed-up shown (96× misses 100×, 99.6× shows as 100×).
        match (row["target"].as_f64(), row["met"].as_bool()) {
            (Some(target), Some(met)) if target < 0.1 => {
                assert_eq!(met, (1.0 / ratio).round() >= (1.0 / target).round(), "met disagrees in {row}");
            }
            (Some(target), Some(met)) => {
                let near = (ratio - target).abs() <= 0.01 * target.max(ratio);
                assert!(near || met == (ratio <= target), "met disagrees in {row}");
            }
            (None, None) => {}
            (target, met) => panic!("target {target:?} with met {met:?} in {row}"),
        }
        for share in ["same_cpu", "baseline_same_cpu"] {
            if let Some(s) = row[share].as_f64() {
                assert!((0.0..=1.0).contains(&s), "{share} = {s} in {row}");
            }
        }
    }
    // (A failed row makes the bench exit non-zero: `bench` checked.)
    assert!(measured * 2 > rows.len(), "most rows were not measured: {out}");

    let svg = std::fs::read_to_string(&chart.0).unwrap_or_else(|e| panic!("no chart at {}: {e}", chart.0.display()));
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "not an SVG: {svg:.300}");
    // Rows timed per round trip with all three percentiles on both sides.
    let percentiles = ["p50", "p99", "p999", "baseline_p50", "baseline_p99", "baseline_p999"];
    let charted =
        rows.iter().filter(|r| r["unit"] == "ns" && percentiles.iter().all(|p| !r[*p].is_null())).collect::<Vec<_>>();
    assert!(!charted.is_empty());
    for row in charted {
        assert!(svg.contains(&xml_text(string(row, "name"))), "{} is not in the chart", string(row, "name"));
    }
}

/// `s` as it appears in SVG text.
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
