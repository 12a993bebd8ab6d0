//! The `array` group: forked processes incrementing element 0 of a shared
//! array — `Array<i64>::fetch_add`, and load + 1 + store under the array's
//! lock on `Array<i32>` and `Value<f64>` — against `CPython`'s stored figures
//! for `with arr.get_lock(): arr[0] += 1` (`baselines/python/shared_array.py`),
//! timed the same way: increments of all processes / (last finish − first start).

use std::time::Duration;

use shmproc::{Array, Value};

use crate::kit::{self, Comparison, Figures, Kit, Placement};
use crate::report::{RowSpec, Unit};
use crate::stored::{self, Stored};
use crate::{Group, Plan};

/// The group as `main` lists it.
pub(crate) const GROUP: Group = Group { name: "array", plan, legend: LEGEND };

const LEGEND: &str = "\
array rows (element 0 of a fresh shared array incremented by forked processes, timed as
  baselines/python/shared_array.py does: 2 processes each doing N increments at once,
  released by one go flag, or 1 process doing N; figure = ns per increment = (last finish −
  first start, CLOCK_MONOTONIC in the processes) / all increments = 1e9 / (increments/s),
  the median of 5 runs (3 with --quick); N = 10,000,000 for fetch_add, 1,000,000 under the
  lock (2,000,000 / 200,000 with --quick); a run whose final count is not procs × N fails
  the row. 2 processes run cross_core, one per CPU, so that they really contend for the
  element's cache line: unpinned, runs this short often share one CPU by turns, which
  measures no contention at all; 1 process runs unpinned):
  Array<i64> fetch_add    `arr.fetch_add(0, 1)`: one atomic instruction, no lock (SPEC: ≥ 100×
                          faster than CPython's locked increment, 2 processes; 1: reference).
  Array<i32> locked       `let g = arr.lock()?; g.store(0, g.load(0) + 1);` (Python's
    load+1+store          Array('i', 1) under its RLock; reference).
  Value<f64> locked       `let g = v.lock()?; g.set(g.get() + 1.0);` (Python's Value('d');
    get+1+set             reference).
  baseline  CPython 3.11 `with arr.get_lock(): arr[0] += 1` (Array rows; it takes the RLock
            three times) or `with v.get_lock(): v.value += 1` (Value rows), fork, unpinned,
            as many processes, 100,000 increments each (~0.1-0.3 s per run, long enough for
            the scheduler to spread 2 processes over both CPUs): incr_per_s_2proc / _1proc
            of py/array_lock_increment / py/value_lock_increment from the newest
            ../shared/baselines/results/baselines-*.jsonl that has them (stamp in the
            baseline column; median of 5 repetitions). Stored, not measured in this run:
            there is nothing to interleave them with, so a ratio carries this machine's
            run-to-run noise (±30%, up to 1.7× for 2 processes) on top of the subject's.
";

/// What the processes do to element 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subject {
    /// `Array<i64>::fetch_add(0, 1)`.
    FetchAdd,
    /// `Array<i32>`: lock, load, add 1, store.
    LockedArray,
    /// `Value<f64>`: lock, get, add 1.0, set.
    LockedValue,
}

impl Subject {
    const ALL: [Subject; 3] = [Subject::FetchAdd, Subject::LockedArray, Subject::LockedValue];

    fn label(self) -> &'static str {
        match self {
            Subject::FetchAdd => "Array<i64> fetch_add",
            Subject::LockedArray => "Array<i32> locked load+1+store",
            Subject::LockedValue => "Value<f64> locked get+1+set",
        }
    }

    /// The stored `CPython` benchmark it is compared with.
    fn py_bench(self) -> &'static str {
        match self {
            Subject::LockedValue => "py/value_lock_increment",
            _ => "py/array_lock_increment",
        }
    }

    /// Increments per process and run.
    fn per_process(self, quick: bool) -> u64 {
        match (self, quick) {
            (Subject::FetchAdd, false) => 10_000_000,
            (Subject::FetchAdd, true) => 2_000_000,
            (_, false) => 1_000_000,
            (_, true) => 200_000,
        }
    }

    /// SPEC §6: `Array<i64>` cross-process increments ≥ 100× `CPython`'s.
    fn target(self, procs: usize) -> Option<f64> {
        (self == Subject::FetchAdd && procs == 2).then_some(0.01)
    }
}

fn plan() -> Vec<Plan> {
    // Both benchmarks come from the same script: one run has both.
    let cpython = stored::newest("py/array_lock_increment");
    let mut plans = Vec::new();
    for subject in Subject::ALL {
        for procs in [2, 1] {
            plans.push(increments(subject, procs, &cpython));
        }
    }
    plans
}

/// One row: `procs` processes incrementing by `subject`, against `CPython`.
fn increments(subject: Subject, procs: usize, cpython: &Result<Stored, String>) -> Plan {
    // Two processes on two CPUs, so that they contend for the element's cache
    // line (unpinned, short runs often share one CPU by turns: no contention).
    let placement = if procs == 1 { Placement::Unpinned } else { Placement::CrossCore };
    let metric = format!("incr_per_s_{procs}proc");
    let run = cpython.as_ref().ok();
    // ns per increment, from increments per second.
    let py_ns = run.and_then(|run| run.value(subject.py_bench(), &metric, "incr/s")).map(|per_s| 1e9 / per_s);
    let baseline = match (run, py_ns) {
        (Some(run), Some(_)) => {
            let kind = if subject == Subject::LockedValue { "Value" } else { "Array" };
            format!("CPython {kind} {}", run.stamp)
        }
        _ => "CPython figures not found".to_owned(),
    };
    let spec = RowSpec {
        group: GROUP.name,
        name: format!("{}, {procs} process{}", subject.label(), if procs == 1 { "" } else { "es" }),
        placement: placement.name(),
        unit: Unit::NsPerOp,
        baseline,
        target: subject.target(procs),
    };
    Plan::new(spec, move |kit| {
        let settings = kit.settings();
        let n = subject.per_process(settings.quick);
        let (first, second) = settings.cpus(placement)?;
        let cpus = if procs == 1 { vec![first] } else { vec![first, second] };
        let mut ns = Vec::with_capacity(settings.alternations);
        for i in 0..settings.alternations {
            ns.push(run_once(kit, subject, &cpus, n).map_err(|e| format!("run {}: {e}", i + 1))?);
        }
        let p50 = kit::median(ns.into_iter());
        let py = py_ns.unwrap_or(f64::NAN);
        Ok(Comparison {
            subject: Figures { p50, p99: None, p999: None },
            baseline: Figures { p50: py, p99: None, p999: None },
            ratio: p50 / py,
            floor: None,
            samples: settings.alternations as u64 * procs as u64 * n,
            same_cpu: None,
        })
    })
}

/// One run: a fresh array, `procs` processes doing `n` increments each; ns
/// per increment, or why the run failed (a wrong final count among them).
fn run_once(kit: &Kit, subject: Subject, cpus: &[Option<usize>], n: u64) -> Result<f64, String> {
    let setup = |e: shmproc::Error| format!("setup: {e}");
    let (elapsed, count) = match subject {
        Subject::FetchAdd => {
            let arr = Array::<i64>::new(1).map_err(setup)?;
            let elapsed = race(kit, cpus, n, || {
                for _ in 0..n {
                    arr.fetch_add(0, 1);
                }
                Ok(())
            })?;
            (elapsed, arr.load(0) as f64)
        }
        Subject::LockedArray => {
            let arr = Array::<i32>::new(1).map_err(setup)?;
            let elapsed = race(kit, cpus, n, || {
                for _ in 0..n {
                    let g = arr.lock()?;
                    g.store(0, g.load(0) + 1);
                }
                Ok(())
            })?;
            (elapsed, f64::from(arr.load(0)))
        }
        Subject::LockedValue => {
            let v = Value::<f64>::new(0.0).map_err(setup)?;
            let elapsed = race(kit, cpus, n, || {
                for _ in 0..n {
                    let g = v.lock()?;
                    g.set(g.get() + 1.0);
                }
                Ok(())
            })?;
            (elapsed, v.get())
        }
    };
    let procs = cpus.len();
    let total = procs as u64 * n;
    // Counts below 2^53 are exact in an f64.
    #[allow(clippy::float_cmp)]
    if count != total as f64 {
        return Err(format!("final count {count}, expected {total} ({procs} × {n}): increments were lost"));
    }
    Ok(elapsed / total as f64)
}

/// A generous bound on one increment, for the watchdog: `CPython` takes 1–3 µs
/// (an increment this slow has failed its purpose anyway), shmproc 3–60 ns.
const INCREMENT_LIMIT_NS: u64 = 5_000;

/// Forks a process per entry of `cpus` (pinned to it, if any) that waits for
/// the go flag and runs `work` (`n` increments); ns from the first start to the
/// last finish.
fn race(kit: &Kit, cpus: &[Option<usize>], n: u64, work: impl Fn() -> shmproc::Result<()>) -> Result<f64, String> {
    let work = &work;
    let workers = cpus
        .iter()
        .map(|&cpu| kit::Worker::process("incrementing", cpu, move || work().map_err(|e| e.to_string())))
        .collect();
    kit::processes(kit, workers, Duration::from_nanos(cpus.len() as u64 * n * INCREMENT_LIMIT_NS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_process_fetch_add_row_has_the_spec_target() {
        let plans = plan();
        assert_eq!(plans.len(), 6);
        let targeted: Vec<String> = plans.iter().filter(|p| p.spec.target.is_some()).map(|p| p.spec.id()).collect();
        assert_eq!(targeted, ["array/Array<i64> fetch_add, 2 processes/cross_core"]);
        assert!(plans.iter().all(|p| p.spec.id().starts_with("array/") && p.spec.unit == Unit::NsPerOp));
    }
}
