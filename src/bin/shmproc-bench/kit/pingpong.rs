//! One cross-process ping-pong run: a driver and an echo process, forked and
//! pinned, the driver timing every round trip; a watchdog bounds the whole run.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::child;
use super::clock::ticks;
use super::shm::{LINE, SharedWords};

/// One end of a cross-process ping-pong. The driver calls [`Side::exchange`]
/// once per timed round trip; the echo answers each message with one.
pub(crate) trait Side {
    /// Sends one message to the peer.
    fn send(&mut self) -> shmproc::Result<()>;

    /// Waits for one message from the peer.
    fn recv(&mut self) -> shmproc::Result<()>;

    /// Sends, then waits for the answer: one round trip as seen from this side.
    /// Override when the two halves share work (one lock acquisition, say).
    fn exchange(&mut self) -> shmproc::Result<()> {
        self.send()?;
        self.recv()
    }
}

/// Where the two processes of a ping-pong run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Both pinned to the first `--pin` CPU: every hand-off needs the
    /// scheduler to switch processes.
    SameCore,
    /// Driver pinned to the first `--pin` CPU, echo to the second.
    CrossCore,
    /// Wherever the scheduler puts them.
    Unpinned,
}

impl Placement {
    /// Every placement, in table order.
    pub(crate) const ALL: [Placement; 3] = [Placement::SameCore, Placement::CrossCore, Placement::Unpinned];

    /// The name used in the table and the JSON.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Placement::SameCore => "same_core",
            Placement::CrossCore => "cross_core",
            Placement::Unpinned => "unpinned",
        }
    }
}

/// How long one run warms up and then measures.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// Untimed round trips first (caches, adaptive spin budgets, scheduler).
    pub(crate) warmup: Duration,
    /// Then round trips are timed for about this long (or until the sample
    /// buffer is full).
    pub(crate) measure: Duration,
}

/// Percentiles of one run's round trips, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    /// Median round trip.
    pub(crate) p50: f64,
    /// 99th percentile.
    pub(crate) p99: f64,
    /// 99.9th percentile.
    pub(crate) p999: f64,
    /// Round trips timed.
    pub(crate) round_trips: u64,
    /// Share of the probe round trips after the timed loop in which the echo
    /// answered from the driver's CPU (1: they share a CPU, 0: never).
    pub(crate) same_cpu: f64,
}

/// Most round trips one run times (4 MiB of samples).
const CAPACITY: usize = 1 << 20;
/// Samples per 4 KiB page, to touch each page once before timing.
const SAMPLES_PER_PAGE: usize = 4096 / size_of::<u32>();

/// Round trips after the timed loop that check where the echo runs, ...
const PROBES: u32 = 100;
/// ... or as many as fit in this time, if fewer (at least one): a
/// busy-polling peer on the driver's CPU takes a scheduler tick per hop
/// (~8 ms a round trip), where a futex one takes 5–75 µs.
const PROBE_TIME: Duration = Duration::from_millis(50);

/// Byte offsets in the control segment. `PHASE` has a line of its own: the
/// echo reads it after every message, and the driver writes it only twice.
const PHASE: usize = 0;
/// Round trips timed (written by the driver at the end).
const COUNT: usize = LINE;
/// Ticks the timed loop took.
const TICKS: usize = LINE + 8;
/// Nanoseconds the timed loop took (converts ticks to ns).
const NANOS: usize = LINE + 16;
/// Probe round trips answered from the driver's CPU.
const SAME_CPU: usize = LINE + 24;
/// Probe round trips made (`1..=PROBES`).
const PROBED: usize = LINE + 32;
/// The echo's CPU, written by the echo before each answer while probing.
const ECHO_CPU: usize = 2 * LINE;
/// `CAPACITY` round-trip times in ticks, saturated to `u32::MAX`.
const SAMPLES: usize = 3 * LINE;

/// `PHASE` values: echo normally, ...
const RUNNING: u32 = 0;
/// ... report the CPU before each answer, ...
const PROBING: u32 = 1;
/// ... leave after the message just received.
const STOPPING: u32 = 2;

/// The shared block through which the driver reports to the parent, and the
/// parent's stop flag reaches the echo. Reused by every run (one at a time).
#[derive(Debug)]
pub(crate) struct Control {
    words: SharedWords,
}

impl Control {
    /// A zeroed control block.
    pub(crate) fn new() -> shmproc::Result<Self> {
        Ok(Control { words: SharedWords::new(SAMPLES + CAPACITY * size_of::<u32>())? })
    }

    fn phase(&self) -> &AtomicU32 {
        self.words.u32_at(PHASE)
    }

    fn echo_cpu(&self) -> &AtomicU32 {
        self.words.u32_at(ECHO_CPU)
    }

    fn samples(&self) -> &[AtomicU32] {
        self.words.u32_slice(SAMPLES, CAPACITY)
    }

    /// Runs one ping-pong: `make` builds the two sides, the echo is forked
    /// onto `cpus.1` and the driver onto `cpus.0`. Everything must be over by
    /// `timing` plus `grace`, or both are killed.
    ///
    /// # Errors
    /// Setup failures, a child that failed, or one that hung.
    pub(crate) fn run<S: Side>(
        &self,
        make: &dyn Fn() -> shmproc::Result<(S, S)>,
        cpus: (Option<usize>, Option<usize>),
        timing: Timing,
        grace: Duration,
    ) -> Result<Run, String> {
        let (mut driver, mut echo) = make().map_err(|e| format!("setup failed: {e}"))?;
        self.phase().store(RUNNING, Ordering::SeqCst);
        self.words.u64_at(COUNT).store(0, Ordering::Relaxed);
        let deadline = Instant::now() + timing.warmup + timing.measure + grace;
        let echo = child::fork("echo", cpus.1, || {
            echo.recv()?;
            loop {
                // SeqCst pairs with the driver's stores in `drive`, each made
                // before a `send` that precedes the `recv` that returned.
                match self.phase().load(Ordering::SeqCst) {
                    STOPPING => return Ok(()),
                    PROBING => self.echo_cpu().store(current_cpu(), Ordering::SeqCst),
                    _ => {}
                }
                echo.exchange()?;
            }
        })
        .map_err(|e| e.to_string())?;
        let driver = child::fork("driver", cpus.0, || self.drive(&mut driver, timing)).map_err(|e| e.to_string())?;
        child::wait_all(vec![echo, driver], deadline).map_err(|e| e.to_string())?;
        self.collect()
    }

    /// The driver's part: warm up, time each round trip, probe where the echo
    /// runs, publish, stop the echo.
    fn drive<S: Side>(&self, side: &mut S, timing: Timing) -> shmproc::Result<()> {
        let samples = self.samples();
        for page in samples.iter().step_by(SAMPLES_PER_PAGE) {
            page.store(0, Ordering::Relaxed); // fault the page in now, not while timing
        }
        let (warm_start, warm_ticks) = (Instant::now(), ticks());
        while warm_start.elapsed() < timing.warmup {
            side.exchange()?;
        }
        let per_ns = ticks().saturating_sub(warm_ticks) as f64 / (warm_start.elapsed().as_nanos().max(1) as f64);
        let budget = (timing.measure.as_nanos() as f64 * per_ns) as u64;

        let (start, start_ticks) = (Instant::now(), ticks());
        let mut count = 0u64;
        for slot in samples {
            let a = ticks();
            side.exchange()?;
            let b = ticks();
            slot.store(u32::try_from(b.saturating_sub(a)).unwrap_or(u32::MAX), Ordering::Relaxed);
            count += 1;
            if b.saturating_sub(start_ticks) >= budget {
                break;
            }
        }
        let elapsed_ticks = ticks().saturating_sub(start_ticks);
        let elapsed = start.elapsed();

        self.phase().store(PROBING, Ordering::SeqCst);
        let (mut same, mut probed) = (0u64, 0u64);
        let probe_start = Instant::now();
        while probed < u64::from(PROBES) && (probed == 0 || probe_start.elapsed() < PROBE_TIME) {
            self.echo_cpu().store(u32::MAX, Ordering::SeqCst);
            side.exchange()?;
            same += u64::from(self.echo_cpu().load(Ordering::SeqCst) == current_cpu());
            probed += 1;
        }
        // The parent reads these after reaping us (exit and wait order them).
        self.words.u64_at(COUNT).store(count, Ordering::Relaxed);
        self.words.u64_at(TICKS).store(elapsed_ticks, Ordering::Relaxed);
        self.words.u64_at(NANOS).store(elapsed.as_nanos() as u64, Ordering::Relaxed);
        self.words.u64_at(SAME_CPU).store(same, Ordering::Relaxed);
        self.words.u64_at(PROBED).store(probed, Ordering::Relaxed);
        self.phase().store(STOPPING, Ordering::SeqCst);
        side.send()
    }

    /// Reads what the (reaped) driver published into a histogram.
    fn collect(&self) -> Result<Run, String> {
        let count = self.words.u64_at(COUNT).load(Ordering::Relaxed) as usize;
        let elapsed_ticks = self.words.u64_at(TICKS).load(Ordering::Relaxed);
        let nanos = self.words.u64_at(NANOS).load(Ordering::Relaxed);
        let probed = self.words.u64_at(PROBED).load(Ordering::Relaxed);
        if count == 0 || count > CAPACITY || elapsed_ticks == 0 || probed == 0 {
            return Err(format!("the driver timed no round trip (count {count})"));
        }
        let ns_per_tick = nanos as f64 / elapsed_ticks as f64;
        let mut hist = Histogram::<u64>::new_with_bounds(1, 1 << 40, 3).expect("valid histogram bounds");
        for s in &self.samples()[..count] {
            let ns = (f64::from(s.load(Ordering::Relaxed)) * ns_per_tick).round() as u64;
            hist.saturating_record(ns.max(1));
        }
        Ok(Run {
            p50: hist.value_at_quantile(0.5) as f64,
            p99: hist.value_at_quantile(0.99) as f64,
            p999: hist.value_at_quantile(0.999) as f64,
            round_trips: count as u64,
            same_cpu: self.words.u64_at(SAME_CPU).load(Ordering::Relaxed) as f64 / probed as f64,
        })
    }
}

/// The CPU the caller runs on now (`u32::MAX` if unknown).
fn current_cpu() -> u32 {
    // SAFETY: no arguments, no memory touched; a vDSO call on Linux.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).unwrap_or(u32::MAX)
}
