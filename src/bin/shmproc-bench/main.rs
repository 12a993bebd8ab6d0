//! `shmproc-bench`: shmproc side by side with its baselines, as one table.
//!
//! ```text
//! cargo run --release --bin shmproc-bench                    # the whole table, a few minutes
//! cargo run --release --bin shmproc-bench -- --quick         # under a minute
//! cargo run --release --bin shmproc-bench -- --filter event --json
//! ```
//!
//! Every row compares a subject with a baseline measured in the same run and
//! the same placement, interleaved with it, and checks the ratio against the
//! target of SPEC §6 (absolute times on shared VMs move by 30% between runs;
//! ratios of interleaved runs do not).
//!
//! Layout: [`kit`] measures (forked ping-pong pairs with pinning and a
//! watchdog, interleaving, spin-floor probes, in-process batches); each group
//! of rows is a module ([`sync`], [`process`], [`array`](mod@array), [`queue`],
//! [`pipe`], [`pool`], [`manager`], [`peers`]) that lists its [`Plan`]s;
//! [`report`] renders the rows as a table or JSON; [`stored`] reads
//! `CPython`'s figures from the baselines runs, [`cpython`] runs a baselines
//! script now; [`args`] parses the command line.
//!
//! The `peers` rows compare with other IPC libraries (iceoryx2, ipc-channel),
//! optional dependencies: `--features peers` builds them in, and without it
//! the rows are listed as skipped (a skipped row is no failure).
//!
//! ```text
//! cargo run --release --features peers --bin shmproc-bench -- --filter peers
//! ```
// Under loom (which builds every bin for the loom tests) the process rows are left out.
#![cfg_attr(loom, allow(dead_code, unused_imports))]
// Figures are statistics: a 52-bit mantissa holds any count or duration here
// exactly enough.
#![allow(clippy::cast_precision_loss)]

mod args;
mod chart;
// Arrays and processes do not build under loom (which builds every bin for the loom tests).
#[cfg(not(loom))]
mod array;
// The live CPython runs serve the queue, pipe, pool and manager rows, which do not build under loom.
#[cfg(not(loom))]
mod cpython;
mod kit;
mod load;
// Managers do not build under loom (which builds every bin for the loom tests).
#[cfg(not(loom))]
mod manager;
// Peers and pipes do not build under loom (which builds every bin for the loom tests).
#[cfg(not(loom))]
mod peers;
#[cfg(not(loom))]
mod pipe;
// Pools do not build under loom (which builds every bin for the loom tests).
#[cfg(not(loom))]
mod pool;
// Processes do not build under loom (which builds every bin for the loom tests).
#[cfg(not(loom))]
mod process;
// Queues do not build under loom (which builds every bin for the loom tests).
#[cfg(not(loom))]
mod queue;
mod report;
#[cfg(not(loom))]
mod stored;
mod sync;

use std::process::ExitCode;
use std::time::Instant;

use args::{Command, Options};
use kit::{Comparison, Kit, Settings};
use report::{Outcome, Row, RowSpec};

/// A group of rows: its name, its rows, and a legend explaining them.
#[derive(Debug)]
pub(crate) struct Group {
    /// Printed as the group's heading, and the first part of row ids.
    pub(crate) name: &'static str,
    /// Every row of the group, in table order (filtering happens later).
    pub(crate) plan: fn() -> Vec<Plan>,
    /// What each row measures, printed under the table.
    pub(crate) legend: &'static str,
}

/// Every group, in table order.
#[cfg(not(loom))]
const GROUPS: [Group; 8] =
    [sync::GROUP, process::GROUP, array::GROUP, queue::GROUP, pipe::GROUP, pool::GROUP, manager::GROUP, peers::GROUP];
#[cfg(loom)]
const GROUPS: [Group; 1] = [sync::GROUP];

/// What the columns mean (each group adds what its rows measure).
const LEGEND: &str = "\
Columns: p50/p99/p99.9 of single round trips (TSC-timed, hdrhistogram), each the median
over the runs; the baseline's figures come from runs in the same placement interleaved
with the subject's (B A B A …). ratio = median over those pairs of subject p50 / baseline
p50, lower is faster (below 0.1 shown with two significant digits and as a speed-up:
0.0073× (137× faster)); target = SPEC §6 (ref: none; ≥ 100× faster = ratio ≤ 0.01);
met = ratio ≤ target; same CPU (unpinned rows) = share of probe round trips answered from
the driver's CPU, subject / baseline (1: the scheduler packed the pair on one CPU, 0:
spread); spin floor = raw spin p50 on the cross_core CPUs just before → just after a
spinning row (the host moves it between ~60–100 ns and ~400–450 ns).
Baselines: raw spin = two processes spinning on one shared cache line (no system call);
raw futex = FUTEX_WAIT/FUTEX_WAKE on shared words, always waking, never spinning.
";

/// Measures one row.
type Measure = Box<dyn FnOnce(&Kit) -> Outcome>;

/// A row to measure: its description and the measurement (or why there is
/// none).
pub(crate) struct Plan {
    spec: RowSpec,
    measure: Measure,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl Plan {
    /// A row described by `spec`, measured by `measure`.
    pub(crate) fn new(spec: RowSpec, measure: impl FnOnce(&Kit) -> Result<Comparison, String> + 'static) -> Self {
        Plan { spec, measure: Box::new(|kit| measure(kit).into()) }
    }

    /// A row described by `spec` that this build cannot measure, and why:
    /// shown as skipped, not failed.
    // Only the peers rows skip, and only without their feature.
    #[cfg_attr(feature = "peers", allow(dead_code))]
    pub(crate) fn skipped(spec: RowSpec, why: &'static str) -> Self {
        Plan { spec, measure: Box::new(move |_| Outcome::Skipped(why.to_owned())) }
    }
}

fn main() -> ExitCode {
    // The raw exec baseline of the process rows runs this binary to do nothing.
    #[cfg(not(loom))]
    if std::env::args_os().nth(1).is_some_and(|a| a == process::RETURN_AT_ONCE) {
        return ExitCode::SUCCESS;
    }
    let opts = match args::parse(std::env::args().skip(1)) {
        Ok(Command::Run(opts)) => opts,
        Ok(Command::Help) => {
            print!("{}", args::usage());
            return ExitCode::SUCCESS;
        }
        Ok(Command::List(opts)) => {
            use std::io::Write as _;
            let ids = selected(&opts).into_iter().flat_map(|(_, plans)| plans).map(|p| p.spec.id());
            let mut out = std::io::stdout().lock();
            // A reader that stops early (`| head`) is no error.
            for id in ids {
                if writeln!(out, "{id}").is_err() {
                    break;
                }
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("shmproc-bench: {e}\n\n{}", args::usage());
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("shmproc-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Measures the selected rows and prints them; `Ok(false)` if a row failed
/// (a skipped row is no failure).
fn run(opts: &Options) -> Result<bool, String> {
    let settings = settings(opts)?;
    #[cfg(not(loom))]
    cpython::NO_PYTHON.store(opts.no_python, std::sync::atomic::Ordering::Relaxed);
    let groups = selected(opts);
    let total: usize = groups.iter().map(|(_, p)| p.len()).sum();
    if total == 0 {
        return Err(format!("no row matches --filter {:?}", opts.filter.as_deref().unwrap_or("")));
    }
    let cpu_use = load::CpuUse::now();
    let preamble = preamble(opts, &settings);
    let settings_second_cpu = settings.second_cpu;
    let kit = Kit::new(settings)?;
    let started = Instant::now();
    let mut rows = Vec::with_capacity(total);
    let mut legends = String::new();
    for (group, plans) in groups {
        legends.push_str(group.legend);
        for plan in plans {
            eprint!("[{}/{total}] {} … ", rows.len() + 1, plan.spec.id());
            // Two CPUs are a placement this machine does not have: not a
            // failure of the row.
            let outcome = if plan.spec.placement == kit::Placement::CrossCore.name() && settings_second_cpu.is_none() {
                Outcome::Skipped("cross_core needs two CPUs; this process may use one".to_owned())
            } else {
                (plan.measure)(&kit)
            };
            match &outcome {
                Outcome::Measured(c) => eprintln!("{}", report::ratio(c.ratio)),
                Outcome::Failed(e) => eprintln!("FAILED: {e}"),
                Outcome::Skipped(why) => eprintln!("skipped: {why}"),
            }
            rows.push(Row { spec: plan.spec, outcome });
        }
    }
    let chart = if opts.no_chart {
        None
    } else {
        let path = opts.chart.as_deref().map_or_else(chart::default_path, std::path::PathBuf::from);
        match chart::write(&rows, &path) {
            Ok(0) => None,
            Ok(n) => Some(format!("Latency chart ({n} rows, p50/p99/p99.9, SVG): {}", path.display())),
            Err(e) => Some(format!("No latency chart: {e}")),
        }
    };
    if opts.json {
        println!("{}", report::json(&rows));
        if let Some(line) = &chart {
            eprintln!("{line}");
        }
    } else {
        print!("{}", report::table(&rows, &preamble));
        println!("\n{LEGEND}\n{legends}");
        println!("{} rows in {:.0} s.", rows.len(), started.elapsed().as_secs_f64());
        if let Some(line) = &chart {
            println!("{line}");
        }
    }
    if let Some(share) = cpu_use.and_then(|u| u.foreign_share()) {
        let note =
            if share > BUSY { " (noisy: a spinner that shares its CPU with them waits for time slices)" } else { "" };
        let line =
            format!("Other processes used {:.0}% of the machine's CPU time during the run{note}.", share * 100.0);
        if opts.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    Ok(rows.iter().all(|r| !matches!(r.outcome, Outcome::Failed(_))))
}

/// The groups and their rows that `--filter` selects (groups left empty
/// dropped).
fn selected(opts: &Options) -> Vec<(&'static Group, Vec<Plan>)> {
    let filter = opts.filter.as_deref().map(str::to_ascii_lowercase);
    GROUPS
        .iter()
        .map(|g| {
            let plans = (g.plan)();
            let wanted = |p: &Plan| filter.as_ref().is_none_or(|f| p.spec.id().to_ascii_lowercase().contains(f));
            (g, plans.into_iter().filter(wanted).collect::<Vec<_>>())
        })
        .filter(|(_, plans)| !plans.is_empty())
        .collect()
}

/// A share of foreign CPU use above this makes figures noisy (the baselines
/// runner retries above 10%).
const BUSY: f64 = 0.1;

/// Settings from the options: run lengths, and the CPUs of the placements.
fn settings(opts: &Options) -> Result<Settings, String> {
    let allowed = kit::allowed_cpus();
    let (first, second) = match opts.pin {
        Some((a, b)) => {
            if let Some(bad) = [a, b].into_iter().find(|c| !allowed.contains(c)) {
                return Err(format!("--pin: CPU {bad} is not available to this process (allowed: {allowed:?})"));
            }
            (a, Some(b))
        }
        None => (allowed.first().copied().unwrap_or(0), allowed.get(1).copied()),
    };
    Ok(Settings::new(opts.quick, first, second))
}

/// The lines above the table: mode, placements, method.
fn preamble(opts: &Options, s: &Settings) -> String {
    let cross =
        s.second_cpu.map_or_else(|| "unavailable (one CPU)".to_owned(), |b| format!("CPUs {},{b}", s.first_cpu));
    format!(
        "shmproc-bench{}: same_core = CPU {}, cross_core = {cross}, unpinned = scheduler's choice.\n\
         Each ping-pong row: {} baseline/subject pairs of runs ({} ms warm-up + {} ms timed), interleaved.\n",
        if opts.quick { " --quick" } else { "" },
        s.first_cpu,
        s.alternations,
        s.run.warmup.as_millis(),
        s.run.measure.as_millis(),
    )
}
