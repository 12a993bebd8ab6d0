//! The measurement kit every group of rows uses.
//!
//! - [`Kit::ping_pong`]: a subject against a baseline, both cross-process
//!   ping-pongs ([`Side`]), in one [`Placement`], interleaved B A B A … so that
//!   both see the same host regime (on these VMs the cost of a cross-CPU
//!   hand-off flips between two levels within seconds), bracketed by spin-floor
//!   probes when the subject spins.
//! - [`Kit::ns_per_op`]: the same interleaving for an in-process operation
//!   timed in batches.
//! - [`processes`] and [`threads`]: workers (forked processes, or threads of
//!   one forked process for in-process baselines) released together by one go
//!   flag and timed from the first start to the last finish: streams.
//!
//! Figures are medians over the alternations; the ratio is the median of the
//! per-alternation ratios (each from two adjacent runs).

mod child;
mod clock;
mod pingpong;
mod race;
mod raw;
mod shm;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub(crate) use child::{allowed_cpus, fork, wait_all};
pub(crate) use pingpong::{Placement, Side};
pub(crate) use race::{Worker, processes, threads};
pub(crate) use shm::{LINE, SharedWords};

use pingpong::{Control, Run, Timing};

/// How much to measure, and where.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// `--quick`: groups with their own run lengths pick the short ones.
    pub(crate) quick: bool,
    /// Baseline/subject pairs per comparison.
    pub(crate) alternations: usize,
    /// One ping-pong run.
    pub(crate) run: Timing,
    /// One spin-floor probe.
    pub(crate) floor: Timing,
    /// Operations per timed batch of an in-process comparison.
    pub(crate) batch_ops: u64,
    /// Baseline/subject batch pairs of an in-process comparison.
    pub(crate) batch_pairs: usize,
    /// How long past its planned end a run may take before the watchdog kills it.
    pub(crate) grace: Duration,
    /// The CPU of `same_core`, and the first of `cross_core`.
    pub(crate) first_cpu: usize,
    /// The second CPU of `cross_core`; `None` when only one CPU is usable.
    pub(crate) second_cpu: Option<usize>,
}

impl Settings {
    /// The default run (a couple of minutes for the sync group), or `--quick`.
    pub(crate) fn new(quick: bool, first_cpu: usize, second_cpu: Option<usize>) -> Self {
        let ms = Duration::from_millis;
        if quick {
            Settings {
                quick,
                alternations: 3,
                run: Timing { warmup: ms(10), measure: ms(60) },
                floor: Timing { warmup: ms(5), measure: ms(20) },
                batch_ops: 100_000,
                batch_pairs: 11,
                grace: Duration::from_secs(3),
                first_cpu,
                second_cpu,
            }
        } else {
            Settings {
                quick,
                alternations: 5,
                run: Timing { warmup: ms(30), measure: ms(300) },
                floor: Timing { warmup: ms(10), measure: ms(50) },
                batch_ops: 200_000,
                batch_pairs: 21,
                grace: Duration::from_secs(5),
                first_cpu,
                second_cpu,
            }
        }
    }

    /// The (driver, echo) CPUs of `placement`.
    pub(crate) fn cpus(&self, placement: Placement) -> Result<(Option<usize>, Option<usize>), String> {
        match placement {
            Placement::SameCore => Ok((Some(self.first_cpu), Some(self.first_cpu))),
            Placement::CrossCore => match self.second_cpu {
                Some(second) => Ok((Some(self.first_cpu), Some(second))),
                None => Err(format!("cross_core needs two CPUs; this process may only use CPU {}", self.first_cpu)),
            },
            Placement::Unpinned => Ok((None, None)),
        }
    }
}

/// Runs a contender once in a placement with a timing.
type RunOnce = Box<dyn Fn(&Kit, Placement, Timing) -> Result<Run, String>>;

/// A ping-pong implementation under a name: a subject or a baseline.
pub(crate) struct Contender {
    name: &'static str,
    run: RunOnce,
}

impl std::fmt::Debug for Contender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contender").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Contender {
    /// `make` builds a fresh (driver, echo) pair for every run.
    pub(crate) fn new<S: Side + 'static>(
        name: &'static str,
        make: impl Fn() -> shmproc::Result<(S, S)> + 'static,
    ) -> Self {
        let run = move |kit: &Kit, placement: Placement, timing: Timing| {
            let cpus = kit.settings.cpus(placement)?;
            kit.control.run(&make, cpus, timing, kit.settings.grace)
        };
        Contender { name, run: Box::new(run) }
    }

    /// The raw shared-cache-line spin ping-pong.
    pub(crate) fn raw_spin() -> Self {
        Contender::new("raw spin", raw::spin)
    }

    /// The raw shared-futex ping-pong.
    pub(crate) fn raw_futex() -> Self {
        Contender::new("raw futex", raw::futex)
    }

    /// The name shown in the table.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }
}

/// p50 / p99 / p99.9 of one side of a comparison, in the row's unit. Batch
/// timings (ns/op) have only a median.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Figures {
    /// Median.
    pub(crate) p50: f64,
    /// 99th percentile, if measured.
    pub(crate) p99: Option<f64>,
    /// 99.9th percentile, if measured.
    pub(crate) p999: Option<f64>,
}

/// The spin floor (raw spin ping-pong p50 on the two `cross_core` CPUs, ns),
/// just before and just after a comparison.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Floor {
    /// Probed before the first run.
    pub(crate) before: f64,
    /// Probed after the last run.
    pub(crate) after: f64,
}

/// A subject measured against a baseline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Comparison {
    /// The subject's figures (medians over the alternations).
    pub(crate) subject: Figures,
    /// The baseline's figures (medians over the alternations).
    pub(crate) baseline: Figures,
    /// Median over the alternations of subject p50 / baseline p50.
    pub(crate) ratio: f64,
    /// Spin floor around the comparison, when the subject spins.
    pub(crate) floor: Option<Floor>,
    /// Round trips (or operations) timed for the subject, over all runs.
    pub(crate) samples: u64,
    /// Unpinned ping-pongs only: the median share of round trips in which
    /// the echo answered from the driver's CPU, subject's and baseline's.
    pub(crate) same_cpu: Option<SameCpu>,
}

/// Where unpinned pairs ran (the scheduler packs them on one CPU or spreads
/// them, and the cost of a wake-up differs tenfold).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SameCpu {
    /// The subject's pairs, 0 to 1.
    pub(crate) subject: f64,
    /// The baseline's pairs, 0 to 1.
    pub(crate) baseline: f64,
}

/// The kit: settings plus the reusable control block of ping-pong runs.
#[derive(Debug)]
pub(crate) struct Kit {
    settings: Settings,
    control: Control,
}

impl Kit {
    /// A kit measuring with `settings`.
    ///
    /// # Errors
    /// If the control segment cannot be created.
    pub(crate) fn new(settings: Settings) -> Result<Self, String> {
        let control = Control::new().map_err(|e| format!("cannot create the control segment: {e}"))?;
        Ok(Kit { settings, control })
    }

    /// The settings it measures with.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The spin floor now: the raw spin ping-pong's p50 on the two
    /// `cross_core` CPUs (`None` with one CPU).
    ///
    /// # Errors
    /// If the probe run failed.
    pub(crate) fn spin_floor(&self) -> Result<Option<f64>, String> {
        if self.settings.second_cpu.is_none() {
            return Ok(None);
        }
        let run = (Contender::raw_spin().run)(self, Placement::CrossCore, self.settings.floor)
            .map_err(|e| format!("spin-floor probe: {e}"))?;
        Ok(Some(run.p50))
    }

    /// `subject` against `baseline` in `placement`, interleaved; with
    /// `floor`, a spin-floor probe before and after.
    ///
    /// # Errors
    /// The first failed run (a hang, a crash, a setup error).
    pub(crate) fn ping_pong(
        &self,
        subject: &Contender,
        baseline: &Contender,
        placement: Placement,
        floor: bool,
    ) -> Result<Comparison, String> {
        let probe = || if floor { self.spin_floor() } else { Ok(None) };
        let before = probe()?;
        let mut pairs = Vec::with_capacity(self.settings.alternations);
        for _ in 0..self.settings.alternations {
            let b =
                (baseline.run)(self, placement, self.settings.run).map_err(|e| format!("{}: {e}", baseline.name))?;
            let s = (subject.run)(self, placement, self.settings.run)?;
            pairs.push((s, b));
        }
        let after = probe()?;
        let figures = |pick: fn(&(Run, Run)) -> Run| {
            let runs: Vec<Run> = pairs.iter().map(pick).collect();
            Figures {
                p50: median(runs.iter().map(|r| r.p50)),
                p99: Some(median(runs.iter().map(|r| r.p99))),
                p999: Some(median(runs.iter().map(|r| r.p999))),
            }
        };
        Ok(Comparison {
            subject: figures(|p| p.0),
            baseline: figures(|p| p.1),
            ratio: median(pairs.iter().map(|(s, b)| s.p50 / b.p50)),
            floor: before.zip(after).map(|(before, after)| Floor { before, after }),
            samples: pairs.iter().map(|(s, _)| s.round_trips).sum(),
            same_cpu: (placement == Placement::Unpinned).then(|| SameCpu {
                subject: median(pairs.iter().map(|(s, _)| s.same_cpu)),
                baseline: median(pairs.iter().map(|(_, b)| b.same_cpu)),
            }),
        })
    }

    /// An in-process operation against a baseline, in nanoseconds per
    /// operation: each closure runs its operation `n` times when called with
    /// `n`; batches alternate B A B A …, after one untimed batch each. Many
    /// short batches, so that the median shrugs off a preempted one.
    pub(crate) fn ns_per_op(&self, subject: &mut dyn FnMut(u64), baseline: &mut dyn FnMut(u64)) -> Comparison {
        let n = self.settings.batch_ops;
        let time = |f: &mut dyn FnMut(u64)| {
            let start = Instant::now();
            f(n);
            start.elapsed().as_nanos() as f64 / n as f64
        };
        subject(n / 4);
        baseline(n / 4);
        let pairs: Vec<(f64, f64)> = (0..self.settings.batch_pairs)
            .map(|_| {
                let b = time(baseline);
                (time(subject), b)
            })
            .collect();
        let only_median = |v: f64| Figures { p50: v, p99: None, p999: None };
        Comparison {
            subject: only_median(median(pairs.iter().map(|p| p.0))),
            baseline: only_median(median(pairs.iter().map(|p| p.1))),
            ratio: median(pairs.iter().map(|(s, b)| s / b)),
            floor: None,
            samples: n * self.settings.batch_pairs as u64,
            same_cpu: None,
        }
    }
}

/// p50 / p99 / p99.9 of times in ns, each timed on its own (an hdrhistogram
/// with 3 significant digits; meaningless for an empty `ns`).
pub(crate) fn percentiles(ns: &[u64]) -> Figures {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 1 << 40, 3).expect("valid histogram bounds");
    for &t in ns {
        hist.saturating_record(t.max(1));
    }
    let at = |q| hist.value_at_quantile(q) as f64;
    Figures { p50: at(0.5), p99: Some(at(0.99)), p999: Some(at(0.999)) }
}

/// The median (mean of the middle two for an even count); NaN if empty.
pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    #[allow(clippy::float_cmp)] // medians of small integers are exact
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert!(median(std::iter::empty()).is_nan());
    }
}
