//! The `process` group: start+join latency of a [`Process`] per start method,
//! against a raw `fork`+`_exit`+`waitpid` (Fork, `ForkServer`) or a raw exec of
//! this same binary (Spawn), and against `CPython`'s figures from the newest
//! baselines run.
//!
//! Each row runs in a forked measuring process (pinned for `same_core`), so
//! that every row starts its own fork server with the row's CPU affinity, and
//! the server goes away with the row. The measuring process alternates
//! baseline and subject one start+join at a time (B A B A …) after a few
//! untimed ones, and reports every time through shared memory.

use std::cell::Cell;
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmproc::{Process, StartMethod};

use crate::kit::{self, Comparison, Figures, Kit, LINE, Placement, SharedWords};
use crate::report::{RowSpec, Unit};
use crate::stored::{self, Stored};
use crate::{Group, Plan};

/// The group as `main` lists it.
pub(crate) const GROUP: Group = Group { name: "process", plan, legend: LEGEND };

/// The first argument that makes `main` return at once: the raw exec baseline
/// runs this binary with it.
pub(crate) const RETURN_AT_ONCE: &str = "--return-at-once";

/// Timed start+joins per side and row (and with `--quick`).
const STARTS: usize = 1000;
const QUICK_STARTS: usize = 200;
/// Untimed start+joins per side first (the first `ForkServer` start execs the server).
const WARMUP: usize = 10;

const LEGEND: &str = "\
process rows (start+join: one process started and joined, timed one at a time with the
  monotonic clock; 1000 per side and row, 200 with --quick, after 10 untimed; baseline
  and subject alternate B A B A; the figures are percentiles over all of them, p99.9 of
  200 is the slowest; ratio = subject p50 / baseline p50 over the same row):
  Fork/Spawn/ForkServer   `Process::builder().start_method(M).target(f, i)`, `start()`,
    start+join            `join()` == f(i), with f a trivial `fn(u32) -> u32`; drop.
  baselines   raw fork    `fork()`, the child `_exit(0)`s, the parent `waitpid`s (SPEC: Fork
                          ≤ 1.5×; ForkServer: for reference, its child is forked by the server).
              raw exec    `Command::new(\"/proc/self/exe\").arg(\"--return-at-once\").status()`:
                          this binary, whose `main` returns at once (SPEC: Spawn ≤ 1.2×).
  same_core   the measuring process pinned to the same_core CPU (children and the fork
              server inherit it); unpinned: the scheduler's choice.
  vs CPython  the unpinned subject against CPython 3.11 `multiprocessing` start()+join() of
              a no-op target with the same start method, from the newest
              ../shared/baselines/results/baselines-*.jsonl that has py/process_start
              (named in the row; its figure is the mean of K sequential start+joins, median
              of 5 repetitions; baseline \"CPython figures not found\" when no file has it).
";

/// The child's work: trivial, so that only the start and the join are timed.
fn trivial(x: u32) -> u32 {
    x.wrapping_mul(2).wrapping_add(1)
}

fn plan() -> Vec<Plan> {
    let cpython = Rc::new(cpython_figures());
    let methods = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];
    let mut plans = Vec::new();
    let mut unpinned = Vec::new();
    for method in methods {
        let seen: Seen = Rc::new(Cell::new(None));
        for placement in [Placement::SameCore, Placement::Unpinned] {
            let keep = (placement == Placement::Unpinned).then(|| Rc::clone(&seen));
            plans.push(start_join(method, placement, keep));
        }
        unpinned.push((method, seen));
    }
    for (method, seen) in unpinned {
        plans.push(vs_cpython(method, seen, Rc::clone(&cpython)));
    }
    plans
}

/// The unpinned subject's figures and sample count, kept for the `CPython` row.
type Seen = Rc<Cell<Option<(Figures, u64)>>>;

/// The name of a start method in the table.
fn method_name(method: StartMethod) -> &'static str {
    match method {
        StartMethod::Spawn => "Spawn",
        StartMethod::ForkServer => "ForkServer",
        _ => "Fork",
    }
}

/// A baseline of the process rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Baseline {
    /// `fork`, `_exit(0)`, `waitpid`.
    RawFork,
    /// Run this binary with [`RETURN_AT_ONCE`] and wait.
    RawExec,
}

impl Baseline {
    fn of(method: StartMethod) -> Self {
        if method == StartMethod::Spawn { Baseline::RawExec } else { Baseline::RawFork }
    }

    fn name(self) -> &'static str {
        match self {
            Baseline::RawFork => "raw fork",
            Baseline::RawExec => "raw exec",
        }
    }

    /// One start+join of the baseline.
    fn run(self) -> Result<(), String> {
        match self {
            Baseline::RawFork => raw_fork(),
            Baseline::RawExec => raw_exec(),
        }
    }
}

/// SPEC §6: Fork ≤ 1.5× raw fork, Spawn ≤ 1.2× raw exec; `ForkServer` for reference.
fn target(method: StartMethod) -> Option<f64> {
    match method {
        StartMethod::Fork => Some(1.5),
        StartMethod::Spawn => Some(1.2),
        _ => None,
    }
}

/// One row: `method` against its baseline in `placement`; the subject's
/// figures are kept in `keep` for the `CPython` row.
fn start_join(method: StartMethod, placement: Placement, keep: Option<Seen>) -> Plan {
    let baseline = Baseline::of(method);
    let spec = RowSpec {
        group: GROUP.name,
        name: format!("{} start+join", method_name(method)),
        placement: placement.name(),
        unit: Unit::Ns,
        baseline: baseline.name().to_owned(),
        target: target(method),
    };
    Plan::new(spec, move |kit| {
        let samples = measure(kit, method, Some(baseline), placement)?;
        let subject = figures(&samples.subject)?;
        let base = figures(&samples.baseline)?;
        if let Some(keep) = keep {
            keep.set(Some((subject, samples.subject.len() as u64)));
        }
        Ok(Comparison {
            subject,
            baseline: base,
            ratio: subject.p50 / base.p50,
            floor: None,
            samples: samples.subject.len() as u64,
            same_cpu: None,
        })
    })
}

/// The unpinned subject of `method` against `CPython`'s figure for the same
/// start method (measured anew only if its own row was filtered out).
fn vs_cpython(method: StartMethod, seen: Seen, cpython: Rc<Result<CPython, String>>) -> Plan {
    let name = method_name(method);
    let (baseline, stamp) = match cpython.as_ref() {
        Ok(py) => (
            match method {
                StartMethod::Spawn => "CPython spawn",
                StartMethod::ForkServer => "CPython forkserver",
                _ => "CPython fork",
            },
            format!(" ({})", py.stamp),
        ),
        Err(_) => ("CPython figures not found", String::new()),
    };
    let spec = RowSpec {
        group: GROUP.name,
        name: format!("{name} start+join vs CPython{stamp}"),
        placement: Placement::Unpinned.name(),
        unit: Unit::Ns,
        baseline: baseline.to_owned(),
        target: None,
    };
    Plan::new(spec, move |kit| {
        let (subject, samples) = if let Some(seen) = seen.get() {
            seen
        } else {
            let s = measure(kit, method, None, Placement::Unpinned)?;
            (figures(&s.subject)?, s.subject.len() as u64)
        };
        let py = cpython.as_ref().as_ref().ok().and_then(|py| py.ns(method));
        let baseline = Figures { p50: py.unwrap_or(f64::NAN), p99: None, p999: None };
        Ok(Comparison { subject, baseline, ratio: subject.p50 / baseline.p50, floor: None, samples, same_cpu: None })
    })
}

/// Percentiles of start+join times in ns.
fn figures(ns: &[u64]) -> Result<Figures, String> {
    if ns.is_empty() {
        return Err("no start+join was timed".to_owned());
    }
    Ok(kit::percentiles(ns))
}

/// Every timed start+join of a row, in ns.
#[derive(Debug)]
struct Samples {
    subject: Vec<u64>,
    baseline: Vec<u64>,
}

/// Byte offsets in the shared block the measuring process reports through.
/// `STATUS`: 0 while running, `DONE` or `FAILED` at the end.
const STATUS: usize = 0;
const DONE: u32 = 1;
const FAILED: u32 = 2;
/// Why it failed: a length word, then UTF-8 bytes packed into words.
const MESSAGE: usize = LINE;
const MESSAGE_CAP: usize = 1020;
/// The times: `n` subject ones, then `n` baseline ones (u64 ns).
const TIMES: usize = MESSAGE + 4 + MESSAGE_CAP;

/// Forks a measuring process (pinned to the `same_core` CPU for that
/// placement) that times `n` start+joins of `method` alternating with
/// `baseline` (if any), and collects the times.
fn measure(
    kit: &Kit,
    method: StartMethod,
    baseline: Option<Baseline>,
    placement: Placement,
) -> Result<Samples, String> {
    let settings = kit.settings();
    let n = if settings.quick { QUICK_STARTS } else { STARTS };
    let cpu = match placement {
        Placement::SameCore => Some(settings.first_cpu),
        Placement::Unpinned => None,
        Placement::CrossCore => return Err("process rows have no cross_core placement".to_owned()),
    };
    let words = SharedWords::new(TIMES + 2 * n * size_of::<u64>()).map_err(|e| format!("shared block: {e}"))?;
    let time_at = |side: usize, i: usize| words.u64_at(TIMES + (side * n + i) * size_of::<u64>());
    let status = words.u32_at(STATUS);
    let child = kit::fork("measuring", cpu, || {
        let timed = |side: usize, i: usize, f: &mut dyn FnMut() -> Result<(), String>| {
            let start = Instant::now();
            f()?;
            let ns = start.elapsed().as_nanos() as u64;
            if let Some(i) = i.checked_sub(WARMUP) {
                time_at(side, i).store(ns, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        };
        let mut result = Ok(());
        for i in 0..WARMUP + n {
            let arg = i as u32;
            if let Some(b) = baseline {
                result = timed(1, i, &mut || b.run()).map_err(|e| format!("{}: {e}", b.name()));
                if result.is_err() {
                    break;
                }
            }
            result = timed(0, i, &mut || start_and_join(method, arg));
            if result.is_err() {
                break;
            }
        }
        match result {
            Ok(()) => status.store(DONE, Ordering::Release),
            Err(msg) => {
                put_message(&words, &msg);
                status.store(FAILED, Ordering::Release);
            }
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    // Generous: a start+join that takes 100 ms is a hang on these machines.
    let deadline = Instant::now() + settings.grace + Duration::from_millis(100) * (WARMUP + n) as u32;
    let waited = kit::wait_all(vec![child], deadline);
    // Acquire: pairs with the Release above (the exit and wait order it too).
    match (status.load(Ordering::Acquire), waited) {
        (DONE, Ok(())) => {}
        (FAILED, _) => return Err(get_message(&words)),
        (_, Err(e)) => return Err(e.to_string()),
        (_, Ok(())) => return Err("the measuring process reported nothing".to_owned()),
    }
    let read = |side| (0..n).map(|i| time_at(side, i).load(Ordering::Relaxed)).collect();
    Ok(Samples { subject: read(0), baseline: if baseline.is_some() { read(1) } else { Vec::new() } })
}

/// Stores `msg` (cut to [`MESSAGE_CAP`] bytes) in the shared block.
fn put_message(words: &SharedWords, msg: &str) {
    words.put_str(MESSAGE, MESSAGE_CAP, msg);
}

/// The message [`put_message`] stored.
fn get_message(words: &SharedWords) -> String {
    words.get_str(MESSAGE, MESSAGE_CAP)
}

/// The subject: one process of `method` running [`trivial`], started and joined.
fn start_and_join(method: StartMethod, arg: u32) -> Result<(), String> {
    let mut p = Process::builder().start_method(method).target(trivial, arg);
    p.start().map_err(|e| format!("start: {e}"))?;
    let got = p.join().map_err(|e| format!("join: {e}"))?;
    if got == trivial(arg) { Ok(()) } else { Err(format!("join returned {got}, not {}", trivial(arg))) }
}

/// The raw fork baseline: `fork`, `_exit(0)` in the child, `waitpid`.
fn raw_fork() -> Result<(), String> {
    // SAFETY: the measuring process is single-threaded; the child calls only
    // `_exit`, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: ends the child at once, running nothing of the parent's.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: our own child, not reaped yet; `status` is writable.
    let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    if r != pid {
        return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!("the raw child ended with wait status {status:#x}"))
    }
}

/// The raw exec baseline: this binary, whose `main` returns at once, waited for.
fn raw_exec() -> Result<(), String> {
    let status = Command::new("/proc/self/exe").arg(RETURN_AT_ONCE).status().map_err(|e| format!("spawn: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("the exec'd binary ended with {status}")) }
}

/// `CPython`'s start+join figures of one baselines run.
#[derive(Debug)]
struct CPython {
    /// The run's UTC stamp (from the file name).
    stamp: String,
    fork_ms: Option<f64>,
    spawn_ms: Option<f64>,
    forkserver_ms: Option<f64>,
}

impl CPython {
    /// The figure of `method`, in ns.
    fn ns(&self, method: StartMethod) -> Option<f64> {
        let ms = match method {
            StartMethod::Spawn => self.spawn_ms,
            StartMethod::ForkServer => self.forkserver_ms,
            _ => self.fork_ms,
        };
        ms.map(|ms| ms * 1e6)
    }
}

/// `CPython`'s figures from the newest stored baselines run that has
/// `py/process_start`; `Err` says where it looked.
fn cpython_figures() -> Result<CPython, String> {
    stored::newest(PY_BENCH).map(CPython::from)
}

/// The stored benchmark of `CPython`'s start+join figures.
const PY_BENCH: &str = "py/process_start";

impl From<Stored> for CPython {
    fn from(run: Stored) -> Self {
        let ms = |metric| run.value(PY_BENCH, metric, "ms");
        CPython {
            fork_ms: ms("fork_ms"),
            spawn_ms: ms("spawn_ms"),
            forkserver_ms: ms("forkserver_ms"),
            stamp: run.stamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::float_cmp)] // parsed from the same decimal text
    fn reads_the_process_start_figures() {
        let text = "{\"bench\": \"py/process_start\", \"metric\": \"fork_ms\", \"value\": 1.77938, \"unit\": \"ms\"}\n\
                    {\"bench\": \"py/process_start\", \"metric\": \"spawn_ms\", \"value\": 63.659, \"unit\": \"ms\"}\n\
                    {\"bench\": \"py/pool\", \"metric\": \"fork_ms\", \"value\": 9, \"unit\": \"ms\"}\n";
        let py = CPython::from(stored::parse(text, "T".into()));
        assert_eq!(py.fork_ms, Some(1.779_38));
        assert_eq!(py.spawn_ms, Some(63.659));
        assert_eq!(py.forkserver_ms, None);
        assert_eq!(py.ns(StartMethod::Spawn), Some(63.659e6));
    }

    #[test]
    fn messages_survive_the_shared_block() {
        let words = SharedWords::new(TIMES).unwrap();
        put_message(&words, "join: héllo");
        assert_eq!(get_message(&words), "join: héllo");
        put_message(&words, &"é".repeat(MESSAGE_CAP));
        assert!(get_message(&words).len() <= MESSAGE_CAP);
    }
}
