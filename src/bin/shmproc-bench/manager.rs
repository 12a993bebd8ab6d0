//! The `manager` group: a [`Manager`]'s `SharedDict<u64, u64>` used from a
//! child process, against `CPython`'s `Manager().dict()` used the same way
//! in `baselines/python/manager_dict.py` (run now): sets (`insert`) and gets
//! per second of N distinct keys, and, for reference, the start + shutdown
//! of a manager.
//!
//! Each row runs in a forked process that owns the manager, as the pool rows
//! own their pool: the manager's server and the client are shmproc processes
//! started from it (they may start threads; the bench itself starts none, so
//! that it may keep forking). For the dict rows the owner starts a Fork
//! manager, a dict and a Fork client process with the dict's proxy as its
//! argument; the client warms up and times the runs as `manager_dict.py`'s
//! child does, and returns its times, which the owner reports through shared
//! memory. Every get is checked, and so is the dict's length at the end.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmproc::{Manager, Process, SharedDict, StartMethod};

use crate::cpython;
use crate::kit::{self, Comparison, Figures, Kit, Placement, SharedWords, Worker};
use crate::report::{RowSpec, Unit};
use crate::{Group, Plan};

/// The group as `main` lists it.
pub(crate) const GROUP: Group = Group { name: "manager", plan, legend: LEGEND };

const LEGEND: &str = "\
manager rows (a Manager started with StartMethod::Fork, a SharedDict<u64, u64> of it, and a
  client Process (Fork) given the dict's proxy as its argument; each row forks a process that
  owns the manager (unpinned, like the server and the client: they are separate processes
  and the scheduler places them, as in CPython's script):
  SharedDict.insert      the client warms up untimed (insert(i, i) and get(&i) for i < 500, as
    from a child         manager_dict.py), then times 5 runs (3 with --quick) of N = 5,000
                         insert(i, i) over i = 0..N, each followed by N get(&i); N is
                         manager_dict.py's, times 0.2 with --quick as its ANCHORS_SCALE; ns per
                         call = run time / N, shown with the rate, median over the runs (SPEC: ≥
                         20× CPython Manager().dict() d[k] = v ops/s). Each call is a request to
                         the server and its reply.
  SharedDict.get         the gets of the same runs (every value checked; the dict's length,
    from a child         max(N, 500), too) (SPEC: ≥ 20× CPython d[k] ops/s).
  Manager start +        Manager::builder().start_method(Fork).start() then shutdown(), timed
    shutdown             together, 5 times (3 with --quick) after one untimed; median
                         (reference).
    baseline CPython     ../shared/baselines/python/manager_dict.py run now (python3 on the PATH;
                         ANCHORS_SCALE=0.2 with --quick): a fork Manager(), its dict() used by a
                         fork child the same way (median of 5 repetitions; py/manager_dict
                         set_ops_per_s and get_ops_per_s), then 5 Manager() start + shutdown
                         (py/manager_start start_shutdown_ms); run once, before the first of
                         these rows, not interleaved. Without python3: the newest stored
                         baselines-*.jsonl figures (named), or none.
";

/// Every row's placement: the manager's owner, its server and the client are
/// left to the scheduler, as `manager_dict.py` leaves `CPython`'s.
const PLACEMENT: Placement = Placement::Unpinned;
/// Keys set and got per run (`manager_dict.py`'s N, before scaling).
const KEYS: u64 = 5000;
/// Keys the client sets and gets untimed first (`manager_dict.py`'s).
const WARMUP_KEYS: u64 = 500;
/// A generous bound on one call, for the watchdog (`CPython` takes ~45 µs; a
/// call this slow has failed its purpose anyway).
const CALL_LIMIT: Duration = Duration::from_millis(1);
/// A generous bound on one manager start + shutdown (`CPython` takes 5–8 ms).
const START_LIMIT: Duration = Duration::from_secs(1);
/// A generous bound on starting the manager and the client and ending them.
const SETUP_LIMIT: Duration = Duration::from_secs(10);

/// `manager_dict.py`'s figures of the dict rows, in ops/s.
const PY_DICT: &str = "py/manager_dict";
/// `manager_dict.py`'s figure of the start row.
const PY_START: (&str, &str) = ("py/manager_start", "start_shutdown_ms");

/// What a dict row times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `insert(i, i)`, Python's `d[i] = i`.
    Set,
    /// `get(&i)`, Python's `d[i]`.
    Get,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Set => "SharedDict.insert from a child, u64 keys",
            Op::Get => "SharedDict.get from a child, u64 keys",
        }
    }

    /// Its metric of [`PY_DICT`] in `manager_dict.py`'s output.
    fn metric(self) -> &'static str {
        match self {
            Op::Set => "set_ops_per_s",
            Op::Get => "get_ops_per_s",
        }
    }

    /// The `CPython` call it is compared with, for the baseline column.
    fn what(self) -> &'static str {
        match self {
            Op::Set => "Manager().dict() d[k] = v",
            Op::Get => "Manager().dict() d[k]",
        }
    }
}

/// Keys per run: `manager_dict.py`'s N, scaled as its `ANCHORS_SCALE` with
/// `--quick`.
fn keys(quick: bool) -> u64 {
    cpython::scaled(KEYS, quick)
}

/// `CPython`'s manager figures: `manager_dict.py` run once (by the first row
/// that needs them), or stored (every run of the script stores all three).
fn py_manager() -> cpython::Baseline {
    let mut wanted: Vec<_> = [Op::Set, Op::Get].map(|op| (PY_DICT, op.metric().to_owned(), "ops/s")).into();
    wanted.push((PY_START.0, PY_START.1.to_owned(), "ms"));
    cpython::Baseline::in_units("manager_dict.py", wanted)
}

/// The dict rows' measurement, kept for the other one: ns per call of the
/// sets and of the gets (medians over the runs), and the calls of each.
#[derive(Clone, Copy, Debug)]
struct DictFigures {
    set: f64,
    get: f64,
    calls: u64,
}

impl DictFigures {
    fn of(&self, op: Op) -> f64 {
        match op {
            Op::Set => self.set,
            Op::Get => self.get,
        }
    }
}

/// The dict rows' measurement, once one of them has taken it.
type Seen = Rc<Cell<Option<DictFigures>>>;

fn plan() -> Vec<Plan> {
    let py = Rc::new(py_manager());
    let seen: Seen = Rc::new(Cell::new(None));
    vec![
        // SPEC §6: Manager SharedDict get/set from a child ≥ 20× CPython Manager().dict().
        throughput(Op::Set, Rc::clone(&seen), Rc::clone(&py)),
        throughput(Op::Get, seen, Rc::clone(&py)),
        start_shutdown(py),
    ]
}

/// `op`'s calls per second from a child against `CPython`'s; the runs are
/// kept in `seen`, and taken from it if the other dict row measured them.
fn throughput(op: Op, seen: Seen, cpython: Rc<cpython::Baseline>) -> Plan {
    let spec = RowSpec {
        group: GROUP.name,
        name: op.name().to_owned(),
        placement: PLACEMENT.name(),
        unit: Unit::NsPerCall,
        baseline: cpython.label(op.what()),
        target: Some(0.05),
    };
    Plan::new(spec, move |kit| {
        // ns per call (NaN: no figure, shown without a ratio).
        let py = 1e9 / cpython.value(kit.settings().quick, PY_DICT, op.metric())?;
        let measured = if let Some(seen) = seen.get() {
            seen
        } else {
            let measured = measure_dict(kit)?;
            seen.set(Some(measured));
            measured
        };
        let subject = Figures { p50: measured.of(op), p99: None, p999: None };
        Ok(Comparison {
            subject,
            baseline: Figures { p50: py, p99: None, p999: None },
            ratio: subject.p50 / py,
            floor: None,
            samples: measured.calls,
            same_cpu: None,
        })
    })
}

/// A manager's start + shutdown against `CPython`'s, for reference.
fn start_shutdown(cpython: Rc<cpython::Baseline>) -> Plan {
    let spec = RowSpec {
        group: GROUP.name,
        name: "Manager start + shutdown".to_owned(),
        placement: PLACEMENT.name(),
        unit: Unit::Ns,
        baseline: cpython.label("Manager() start + shutdown"),
        target: None,
    };
    Plan::new(spec, move |kit| {
        let py = cpython.value(kit.settings().quick, PY_START.0, PY_START.1)? * 1e6;
        let times = measure_start(kit)?;
        let subject = Figures { p50: kit::median(times.iter().map(|&ns| ns as f64)), p99: None, p999: None };
        Ok(Comparison {
            subject,
            baseline: Figures { p50: py, p99: None, p999: None },
            ratio: subject.p50 / py,
            floor: None,
            samples: times.len() as u64,
            same_cpu: None,
        })
    })
}

/// A manager with the Fork start method, as `manager_dict.py`'s.
fn start_manager() -> Result<Manager, String> {
    Manager::builder().start_method(StartMethod::Fork).start().map_err(|e| format!("Manager::start: {e}"))
}

/// What the client process is started with: the dict's proxy, the keys per
/// run, the runs.
type ClientArgs = (SharedDict<u64, u64>, u64, usize);

/// The client process, `manager_dict.py`'s `client`: a warm-up, then runs of
/// N sets and N gets of the keys 0..N (each key's value is itself). The ns of
/// each run's sets, then of each run's gets.
fn client((dict, n, runs): ClientArgs) -> Result<Vec<u64>, String> {
    for i in 0..WARMUP_KEYS {
        dict.insert(i, i).map_err(|e| format!("warm-up insert {i}: {e}"))?;
        check_get(&dict, i)?;
    }
    let (mut sets, mut gets) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let ns = |from: Instant, to: Instant| to.duration_since(from).as_nanos() as u64;
    for _ in 0..runs {
        let start = Instant::now();
        for i in 0..n {
            dict.insert(i, i).map_err(|e| format!("insert {i}: {e}"))?;
        }
        let sets_done = Instant::now();
        for i in 0..n {
            check_get(&dict, i)?;
        }
        let gets_done = Instant::now();
        sets.push(ns(start, sets_done));
        gets.push(ns(sets_done, gets_done));
    }
    sets.extend(gets);
    Ok(sets)
}

/// Gets key `i` and checks that its value is `i`.
fn check_get(dict: &SharedDict<u64, u64>, i: u64) -> Result<(), String> {
    match dict.get(&i) {
        Ok(Some(v)) if v == i => Ok(()),
        Ok(other) => Err(format!("get {i}: got {other:?}, expected Some({i})")),
        Err(e) => Err(format!("get {i}: {e}")),
    }
}

/// Forks the manager's owner: it starts a Fork manager and a dict, runs
/// [`client`] in a Fork process for one run per alternation of the settings,
/// checks the dict's length and shuts the manager down. The figures of the
/// client's runs.
fn measure_dict(kit: &Kit) -> Result<DictFigures, String> {
    let settings = kit.settings();
    let (runs, n) = (settings.alternations, keys(settings.quick));
    // The sets' times of each run, then the gets'.
    let times = SharedWords::new(2 * runs * size_of::<u64>()).map_err(|e| format!("times: {e}"))?;
    let times_in = &times;
    let owner = move || {
        let manager = start_manager()?;
        let dict = manager.dict::<u64, u64>().map_err(|e| format!("Manager::dict: {e}"))?;
        let mut child = Process::builder()
            .name("manager client")
            // Dies with the owner if the watchdog kills it.
            .daemon(true)
            .start_method(StartMethod::Fork)
            .target(client, (dict.clone(), n, runs));
        child.start().map_err(|e| format!("starting the client: {e}"))?;
        let got = child.join().map_err(|e| format!("client: {e}"))?.map_err(|e| format!("client: {e}"))?;
        if got.len() != 2 * runs {
            return Err(format!("the client gave {} times for {runs} runs", got.len()));
        }
        // `manager_dict.py`'s check: every key is there, once.
        let len = dict.len().map_err(|e| format!("len: {e}"))?;
        if len as u64 != n.max(WARMUP_KEYS) {
            return Err(format!("the dict has {len} keys, not {}", n.max(WARMUP_KEYS)));
        }
        for (i, ns) in got.into_iter().enumerate() {
            times_in.u64_at(i * size_of::<u64>()).store(ns, Ordering::Relaxed);
        }
        manager.shutdown().map_err(|e| format!("shutdown: {e}"))
    };
    let calls = 2 * (WARMUP_KEYS + runs as u64 * n);
    let limit = SETUP_LIMIT + CALL_LIMIT * calls as u32;
    // The owner's CPU: none, unpinned (the kit's choice for the placement).
    let (cpu, _) = settings.cpus(PLACEMENT)?;
    kit::processes(kit, vec![Worker::process("manager owner", cpu, owner)], limit)?;
    let ns_per_call = |first: usize| {
        kit::median((first..first + runs).map(|i| {
            let ns = times.u64_at(i * size_of::<u64>()).load(Ordering::Relaxed);
            ns as f64 / n as f64
        }))
    };
    Ok(DictFigures { set: ns_per_call(0), get: ns_per_call(runs), calls: n * runs as u64 })
}

/// Forks a process that starts a Fork manager and shuts it down, once
/// untimed and then once per alternation of the settings, timing each. The
/// times, in ns.
fn measure_start(kit: &Kit) -> Result<Vec<u64>, String> {
    let settings = kit.settings();
    let runs = settings.alternations;
    let times = SharedWords::new(runs * size_of::<u64>()).map_err(|e| format!("times: {e}"))?;
    let times_in = &times;
    let owner = move || {
        // Run 0 is untimed, as `manager_dict.py` has started a manager before
        // it times these.
        for run in 0..=runs {
            let start = Instant::now();
            let manager = start_manager()?;
            manager.shutdown().map_err(|e| format!("shutdown: {e}"))?;
            let ns = start.elapsed().as_nanos() as u64;
            if let Some(i) = run.checked_sub(1) {
                times_in.u64_at(i * size_of::<u64>()).store(ns, Ordering::Relaxed);
            }
        }
        Ok(())
    };
    let limit = SETUP_LIMIT + START_LIMIT * (runs as u32 + 1);
    let (cpu, _) = settings.cpus(PLACEMENT)?;
    kit::processes(kit, vec![Worker::process("manager owner", cpu, owner)], limit)?;
    Ok((0..runs).map(|i| times.u64_at(i * size_of::<u64>()).load(Ordering::Relaxed)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_targets_and_units() {
        let plans = plan();
        let rows: Vec<(String, Option<f64>, Unit)> =
            plans.iter().map(|p| (p.spec.id(), p.spec.target, p.spec.unit)).collect();
        assert_eq!(
            rows,
            [
                ("manager/SharedDict.insert from a child, u64 keys/unpinned".to_owned(), Some(0.05), Unit::NsPerCall),
                ("manager/SharedDict.get from a child, u64 keys/unpinned".to_owned(), Some(0.05), Unit::NsPerCall),
                ("manager/Manager start + shutdown/unpinned".to_owned(), None, Unit::Ns),
            ]
        );
    }

    #[test]
    fn key_counts_and_figures_are_manager_dict_py_s() {
        assert_eq!([keys(false), keys(true)], [5000, 1000]);
        assert_eq!([Op::Set, Op::Get].map(Op::metric), ["set_ops_per_s", "get_ops_per_s"]);
    }
}
