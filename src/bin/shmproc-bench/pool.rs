//! The `pool` group: a [`Pool`] of 2 Fork workers running a trivial task,
//! `square(x) = x * x`, against `CPython`'s `Pool` and `ProcessPoolExecutor`
//! running the same task in `baselines/python/pool.py` (run now): throughput
//! of `apply_async` and `submit` (each task's result taken), of `map` with
//! chunksize 1 and with the default chunksize, and the round trip of one
//! `apply`.
//!
//! Each row runs in a forked process that owns the pool: the pool starts a
//! thread per worker, and the bench itself starts none, so that it may keep
//! forking. That process builds the pool and warms it up (untimed, as
//! `pool.py` does), times the row's runs on that pool, and reports the
//! times through shared memory. Every result is checked, so a lost or wrong
//! result fails the row.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmproc::{Pool, StartMethod};

use crate::cpython;
use crate::kit::{self, Comparison, Figures, Kit, Placement, SharedWords, Worker};
use crate::report::{RowSpec, Unit};
use crate::{Group, Plan};

/// The group as `main` lists it.
pub(crate) const GROUP: Group = Group { name: "pool", plan, legend: LEGEND };

const LEGEND: &str = "\
pool rows (a Pool of 2 workers, StartMethod::Fork, running square(x) = x * x on u64s;
  each row forks a process that owns the pool (unpinned, like its workers: they are
  separate processes and the scheduler places them, as in CPython's script), builds it
  and warms it up untimed (map of 2,000 items, default chunksize then chunksize 1, as
  pool.py), then times 5 runs on that pool (3 with --quick); figures are medians over the
  runs. Task counts are pool.py's, times 0.2 with --quick as its ANCHORS_SCALE; every
  result is checked):
  Pool.apply_async + get  N = 10,000 apply_async(square, i), then get() of each in order;
                          ns per task = run time / N, shown with the rate (SPEC: ≥ 50× CPython
                          Pool.apply_async's tasks/s).
  Pool.submit + result    the same with submit(square, i) and result() (SPEC: the same ≥ 50×
                          CPython Pool.apply_async); vs ProcessPoolExecutor: the same runs
                          against CPython's ProcessPoolExecutor(2).submit + result (reference).
  Pool.map chunksize 1    map(square, 0..N, Some(1)), N = 20,000 (pool.py's default for this
                          figure) (SPEC: ≥ 30× CPython Pool.map(chunksize=1)).
  Pool.map default        map(square, 0..N, None), N = 100,000: ceil(N / (2 × 4)) items per
    chunksize             chunk, as CPython's default (SPEC: ≥ 5× CPython Pool.map).
  Pool.apply round trip   one apply(square, i) at a time, each timed (monotonic clock), 10,000
                          per run (2,000 with --quick); p50/p99/p99.9 of each run (hdrhistogram),
                          medians over the runs. Reference: pool.py times no single apply, so
                          there is no baseline.
    baseline CPython      ../shared/baselines/python/pool.py run now (python3 on the PATH;
                          ANCHORS_SCALE=0.2 with --quick; stopped once it has printed the four
                          figures): Pool(2) / ProcessPoolExecutor(2) of fork workers created once,
                          median of 5 repetitions, tasks/s of py/pool_apply_async tasks_per_s,
                          py/ppe_submit tasks_per_s, py/pool_map tasks_per_s_chunksize1 and
                          tasks_per_s_default_chunksize; run once, before the first of these
                          rows, not interleaved. Without python3: the newest stored
                          baselines-*.jsonl figures (named), or none.
";

/// Worker processes of every pool (`pool.py`'s too).
const WORKERS: usize = 2;
/// Every row's placement: the pool's owner and its workers are left to the
/// scheduler, as `pool.py` leaves `CPython`'s.
const PLACEMENT: Placement = Placement::Unpinned;
/// A generous bound on one task, for the watchdog (`CPython` takes 30–140 µs;
/// a task this slow has failed its purpose anyway).
const TASK_LIMIT: Duration = Duration::from_micros(100);
/// A generous bound on building the pool, warming it up and joining it.
const SETUP_LIMIT: Duration = Duration::from_secs(10);
/// Items of each warm-up map (`pool.py`'s).
const WARMUP_ITEMS: u64 = 2000;

/// The task, `pool.py`'s `square`.
fn square(x: u64) -> u64 {
    x * x
}

/// What a row times on the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// `apply_async` N tasks, then `get` each.
    ApplyAsync,
    /// `submit` N tasks, then `result` each.
    Submit,
    /// `map` of N items with this chunksize: `Some(1)`, or `None` (the default).
    Map(Option<usize>),
    /// `apply` one task at a time, each timed.
    Apply,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::ApplyAsync => "Pool.apply_async + get, square",
            Workload::Submit => "Pool.submit + result, square",
            Workload::Map(Some(_)) => "Pool.map chunksize 1, square",
            Workload::Map(None) => "Pool.map default chunksize, square",
            Workload::Apply => "Pool.apply round trip, square",
        }
    }

    /// Tasks (or items) of one run: `pool.py`'s counts, scaled as its
    /// `ANCHORS_SCALE` with `--quick`.
    fn tasks(self, quick: bool) -> u64 {
        let n: u64 = match self {
            Workload::ApplyAsync | Workload::Submit | Workload::Apply => 10_000,
            Workload::Map(Some(_)) => 20_000,
            Workload::Map(None) => 100_000,
        };
        cpython::scaled(n, quick)
    }

    /// Runs the workload once on `pool` with `n` tasks, timing it (or, for
    /// [`Workload::Apply`], each task) into `record`, and checks the results.
    fn run(self, pool: &Pool, n: u64, record: &mut dyn FnMut(u64)) -> Result<(), String> {
        let ns = |start: Instant| start.elapsed().as_nanos() as u64;
        match self {
            Workload::ApplyAsync => {
                let start = Instant::now();
                let mut results = Vec::with_capacity(n as usize);
                for i in 0..n {
                    results.push(pool.apply_async(square, i).map_err(|e| format!("apply_async {i}: {e}"))?);
                }
                for (i, r) in (0..n).zip(&results) {
                    check(i, r.get().map_err(|e| format!("get {i}: {e}"))?)?;
                }
                record(ns(start));
            }
            Workload::Submit => {
                let start = Instant::now();
                let mut futures = Vec::with_capacity(n as usize);
                for i in 0..n {
                    futures.push(pool.submit(square, i).map_err(|e| format!("submit {i}: {e}"))?);
                }
                for (i, f) in (0..n).zip(&futures) {
                    check(i, f.result().map_err(|e| format!("result {i}: {e}"))?)?;
                }
                record(ns(start));
            }
            Workload::Map(chunksize) => {
                let start = Instant::now();
                let got = pool.map(square, 0..n, chunksize).map_err(|e| format!("map: {e}"))?;
                record(ns(start));
                if got.len() as u64 != n {
                    return Err(format!("map gave {} results for {n} items", got.len()));
                }
                for (i, &r) in (0..n).zip(&got) {
                    check(i, r)?;
                }
            }
            Workload::Apply => {
                for i in 0..n {
                    let start = Instant::now();
                    let got = pool.apply(square, i).map_err(|e| format!("apply {i}: {e}"))?;
                    record(ns(start));
                    check(i, got)?;
                }
            }
        }
        Ok(())
    }

    /// Times recorded per run.
    fn times_per_run(self, n: u64) -> usize {
        if self == Workload::Apply { n as usize } else { 1 }
    }
}

/// Checks that task `i` gave `square(i)`.
fn check(i: u64, got: u64) -> Result<(), String> {
    if got == square(i) { Ok(()) } else { Err(format!("task {i}: got {got}, expected {}", square(i))) }
}

/// A `CPython` figure of `pool.py`, in tasks/s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PyFigure {
    ApplyAsync,
    PpeSubmit,
    MapChunksize1,
    MapDefault,
}

impl PyFigure {
    const ALL: [PyFigure; 4] =
        [PyFigure::ApplyAsync, PyFigure::PpeSubmit, PyFigure::MapChunksize1, PyFigure::MapDefault];

    /// Its (benchmark, metric) in `pool.py`'s output.
    fn key(self) -> (&'static str, &'static str) {
        match self {
            PyFigure::ApplyAsync => ("py/pool_apply_async", "tasks_per_s"),
            PyFigure::PpeSubmit => ("py/ppe_submit", "tasks_per_s"),
            PyFigure::MapChunksize1 => ("py/pool_map", "tasks_per_s_chunksize1"),
            PyFigure::MapDefault => ("py/pool_map", "tasks_per_s_default_chunksize"),
        }
    }

    /// The `CPython` call it times, for the baseline column.
    fn what(self) -> &'static str {
        match self {
            PyFigure::ApplyAsync => "Pool.apply_async",
            PyFigure::PpeSubmit => "ProcessPoolExecutor.submit",
            PyFigure::MapChunksize1 => "Pool.map(chunksize=1)",
            PyFigure::MapDefault => "Pool.map",
        }
    }
}

/// `CPython`'s pool figures: `pool.py` run once (by the first row that needs
/// them), or stored (every run of the script stores all four).
fn py_pool() -> cpython::Baseline {
    let wanted = PyFigure::ALL
        .map(|f| {
            let (bench, metric) = f.key();
            (bench, metric.to_owned())
        })
        .to_vec();
    cpython::Baseline::new("pool.py", "tasks/s", wanted)
}

/// The subject's runs of a workload (ns per task each) and the tasks they
/// timed, kept for another row against another baseline.
type Seen = Rc<Cell<Option<(Figures, u64)>>>;

fn plan() -> Vec<Plan> {
    let py = Rc::new(py_pool());
    let submit: Seen = Rc::new(Cell::new(None));
    let fresh = || Rc::new(Cell::new(None));
    vec![
        // SPEC §6: Pool apply_async/submit of trivial tasks ≥ 50× CPython Pool.apply_async.
        throughput(Workload::ApplyAsync, PyFigure::ApplyAsync, Some(0.02), fresh(), Rc::clone(&py)),
        throughput(Workload::Submit, PyFigure::ApplyAsync, Some(0.02), Rc::clone(&submit), Rc::clone(&py)),
        throughput(Workload::Submit, PyFigure::PpeSubmit, None, submit, Rc::clone(&py)),
        // SPEC §6: Pool map, chunksize 1 / default ≥ 30× / ≥ 5× CPython Pool.map.
        throughput(Workload::Map(Some(1)), PyFigure::MapChunksize1, Some(1.0 / 30.0), fresh(), Rc::clone(&py)),
        throughput(Workload::Map(None), PyFigure::MapDefault, Some(0.2), fresh(), py),
        round_trip(),
    ]
}

/// `workload`'s throughput against `CPython`'s `figure`; the runs are kept in
/// `seen`, and taken from it if another row measured them already.
fn throughput(
    workload: Workload,
    figure: PyFigure,
    target: Option<f64>,
    seen: Seen,
    cpython: Rc<cpython::Baseline>,
) -> Plan {
    let name = if figure == PyFigure::PpeSubmit {
        format!("{} vs ProcessPoolExecutor", workload.name())
    } else {
        workload.name().to_owned()
    };
    let spec = RowSpec {
        group: GROUP.name,
        name,
        placement: PLACEMENT.name(),
        unit: Unit::NsPerTask,
        baseline: cpython.label(figure.what()),
        target,
    };
    Plan::new(spec, move |kit| {
        let (bench, metric) = figure.key();
        // ns per task (NaN: no figure, shown without a ratio).
        let py = 1e9 / cpython.value(kit.settings().quick, bench, metric)?;
        let (subject, samples) = if let Some(seen) = seen.get() {
            seen
        } else {
            let n = workload.tasks(kit.settings().quick);
            let runs = measure(kit, workload)?;
            let p50 = kit::median(runs.iter().map(|&ns| ns as f64 / n as f64));
            let measured = (Figures { p50, p99: None, p999: None }, n * runs.len() as u64);
            seen.set(Some(measured));
            measured
        };
        Ok(Comparison {
            subject,
            baseline: Figures { p50: py, p99: None, p999: None },
            ratio: subject.p50 / py,
            floor: None,
            samples,
            same_cpu: None,
        })
    })
}

/// The round trip of one `apply`, for reference (no baseline).
fn round_trip() -> Plan {
    let spec = RowSpec {
        group: GROUP.name,
        name: Workload::Apply.name().to_owned(),
        placement: PLACEMENT.name(),
        unit: Unit::Ns,
        baseline: "none (pool.py times no apply)".to_owned(),
        target: None,
    };
    Plan::new(spec, move |kit| {
        let n = Workload::Apply.tasks(kit.settings().quick) as usize;
        let times = measure(kit, Workload::Apply)?;
        let runs: Vec<Figures> = times.chunks(n).map(kit::percentiles).collect();
        let med = |pick: fn(&Figures) -> Option<f64>| Some(kit::median(runs.iter().filter_map(pick)));
        let subject =
            Figures { p50: kit::median(runs.iter().map(|f| f.p50)), p99: med(|f| f.p99), p999: med(|f| f.p999) };
        let none = Figures { p50: f64::NAN, p99: None, p999: None };
        Ok(Comparison {
            subject,
            baseline: none,
            ratio: f64::NAN,
            floor: None,
            samples: times.len() as u64,
            same_cpu: None,
        })
    })
}

/// Forks the pool's owner: it builds a pool of [`WORKERS`] Fork workers and
/// warms it up (untimed), runs `workload` once per alternation of the
/// settings, closes and joins the pool. The times it recorded, in ns: one per
/// run, or one per task for [`Workload::Apply`].
fn measure(kit: &Kit, workload: Workload) -> Result<Vec<u64>, String> {
    let settings = kit.settings();
    let (runs, n) = (settings.alternations, workload.tasks(settings.quick));
    let slots = runs * workload.times_per_run(n);
    let times = SharedWords::new(slots * size_of::<u64>()).map_err(|e| format!("times: {e}"))?;
    let times_in = &times;
    let owner = move || {
        let pool = Pool::builder()
            .processes(WORKERS)
            .start_method(StartMethod::Fork)
            .build()
            .map_err(|e| format!("Pool::build: {e}"))?;
        for chunksize in [None, Some(1)] {
            let got = pool.map(square, 0..WARMUP_ITEMS, chunksize).map_err(|e| format!("warm-up map: {e}"))?;
            if got.len() as u64 != WARMUP_ITEMS {
                return Err(format!("warm-up map gave {} results for {WARMUP_ITEMS} items", got.len()));
            }
        }
        let mut at = 0;
        let mut record = |ns: u64| {
            times_in.u64_at(at * size_of::<u64>()).store(ns, Ordering::Relaxed);
            at += 1;
        };
        for run in 0..runs {
            workload.run(&pool, n, &mut record).map_err(|e| format!("run {}: {e}", run + 1))?;
        }
        pool.close();
        pool.join().map_err(|e| format!("join: {e}"))
    };
    let limit = SETUP_LIMIT + TASK_LIMIT * (runs as u64 * n) as u32;
    // The owner's CPU: none, unpinned (the kit's choice for the placement).
    let (cpu, _) = settings.cpus(PLACEMENT)?;
    kit::processes(kit, vec![Worker::process("pool owner", cpu, owner)], limit)?;
    Ok((0..slots).map(|i| times.u64_at(i * size_of::<u64>()).load(Ordering::Relaxed)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_targets_and_units() {
        let plans = plan();
        let rows: Vec<(String, Option<f64>, Unit)> =
            plans.iter().map(|p| (p.spec.id(), p.spec.target, p.spec.unit)).collect();
        let ns_per_task = Unit::NsPerTask;
        assert_eq!(
            rows,
            [
                ("pool/Pool.apply_async + get, square/unpinned".to_owned(), Some(0.02), ns_per_task),
                ("pool/Pool.submit + result, square/unpinned".to_owned(), Some(0.02), ns_per_task),
                ("pool/Pool.submit + result, square vs ProcessPoolExecutor/unpinned".to_owned(), None, ns_per_task),
                ("pool/Pool.map chunksize 1, square/unpinned".to_owned(), Some(1.0 / 30.0), ns_per_task),
                ("pool/Pool.map default chunksize, square/unpinned".to_owned(), Some(0.2), ns_per_task),
                ("pool/Pool.apply round trip, square/unpinned".to_owned(), None, Unit::Ns),
            ]
        );
    }

    #[test]
    fn task_counts_are_pool_py_s() {
        let counts =
            |quick| [Workload::ApplyAsync, Workload::Map(Some(1)), Workload::Map(None)].map(|w| w.tasks(quick));
        assert_eq!(counts(false), [10_000, 20_000, 100_000]);
        assert_eq!(counts(true), [2_000, 4_000, 20_000]);
        assert_eq!(PyFigure::ALL.map(|f| f.key().0)[..2], ["py/pool_apply_async", "py/ppe_submit"]);
    }

    #[test]
    fn results_are_checked() {
        check(7, 49).unwrap();
        assert!(check(7, 48).unwrap_err().contains("task 7"));
    }
}
