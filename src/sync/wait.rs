//! How every blocking call waits: the one wait loop of the crate.
//!
//! A blocking operation describes itself as a [`WaitTarget`]: an `attempt` that
//! tries to complete without blocking, and a `sleep` that announces the waiter
//! (a waiter count or a bit in the futex word), re-checks, and sleeps on the
//! futex. [`wait`] then runs the phases SPEC §5 asks for:
//!
//! 1. **spin** on `attempt` with a CPU pause between tries, for a budget that
//!    adapts (doubles when spinning pays, halves when it does not);
//! 2. **yield** and re-check for an adaptive time (2–200 µs): on a CPU shared
//!    with the peer this is what lets the peer run at all, so a peer on the same
//!    CPU is served in one yield; on another CPU it keeps the waiter awake. The
//!    time grows to twice a wait that a sleep ended quickly (had we stayed
//!    awake, neither side would have paid a cross-CPU wake-up, ~50 µs here) and
//!    halves after long sleeps, so two peers that both fell asleep climb back
//!    out of that state instead of sustaining it;
//! 3. **sleep** on the futex (shared, not private), until woken or the deadline.
//!
//! [`WaitStrategy::Spin`] stays in phases 1–2, [`WaitStrategy::Block`] goes
//! straight to 3. Targets that must notice a dead lock owner set
//! [`WaitTarget::PROBES`]: their sleeps are cut into [`PROBE_SLICE`]s and
//! `attempt(true)` runs after each slice, which bounds how long a waiter sleeps
//! before it looks at the owner.

use std::time::Duration;

use crate::loom::{self, local};
use crate::os::{Deadline, FutexWait};

/// How a blocking call waits. Chosen per handle (each process picks its own).
///
/// # Examples
///
/// ```
/// use shmproc::{Event, WaitStrategy};
///
/// let e = Event::new()?.with_wait_strategy(WaitStrategy::Block);
/// assert_eq!(e.wait_strategy(), WaitStrategy::Block);
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Spin and yield, never sleep in the kernel: the lowest latency when the
    /// peer runs on another CPU, at the price of a busy CPU.
    Spin,
    /// Sleep on the futex at once: no CPU burnt while waiting.
    Block,
    /// Spin for an adaptive budget, yield, then sleep. The default.
    #[default]
    Adaptive,
}

/// Longest a lock waiter sleeps before it checks whether the owner is alive.
/// Owner death is noticed within about one slice (SPEC §4 asks for 100 ms).
pub(crate) const PROBE_SLICE: Duration = Duration::from_millis(20);

/// Adaptive spin budget bounds, in pause-and-check iterations.
const MIN_SPINS: u32 = 16;
const MAX_SPINS: u32 = 1 << 13;
const START_SPINS: u32 = 256;
/// Adaptive yield phase: how long to keep yielding and re-checking before
/// sleeping, in nanoseconds. It grows to cover waits that a futex sleep ended
/// quickly (the peer answered within about a wake-up's latency, so staying
/// awake would have caught it) and shrinks after long sleeps.
const MIN_YIELD_NS: u32 = 2_000;
const MAX_YIELD_NS: u32 = 200_000;
const START_YIELD_NS: u32 = 20_000;
/// Spin iterations between yields (and, in spin-only mode, clock reads).
const CLOCK_EVERY: u32 = 64;

/// A handle's waiting configuration: its strategy and, for
/// [`WaitStrategy::Adaptive`], the current spin budget. Process-local.
#[derive(Debug)]
pub(crate) struct WaitConfig {
    strategy: local::AtomicU8,
    spins: local::AtomicU32,
    /// Length of the adaptive yield phase, `MIN_YIELD_NS..=MAX_YIELD_NS`.
    yield_ns: local::AtomicU32,
}

impl Default for WaitConfig {
    fn default() -> Self {
        Self::new(WaitStrategy::default())
    }
}

impl Clone for WaitConfig {
    fn clone(&self) -> Self {
        Self::new(self.strategy())
    }
}

impl WaitConfig {
    pub(crate) fn new(strategy: WaitStrategy) -> Self {
        WaitConfig {
            strategy: local::AtomicU8::new(strategy as u8),
            spins: local::AtomicU32::new(START_SPINS),
            yield_ns: local::AtomicU32::new(START_YIELD_NS),
        }
    }

    pub(crate) fn strategy(&self) -> WaitStrategy {
        match self.strategy.load(local::Ordering::Relaxed) {
            0 => WaitStrategy::Spin,
            1 => WaitStrategy::Block,
            _ => WaitStrategy::Adaptive,
        }
    }

    pub(crate) fn set_strategy(&self, s: WaitStrategy) {
        self.strategy.store(s as u8, local::Ordering::Relaxed);
    }

    fn adapt(&self, f: impl Fn(u32) -> u32) {
        let s = self.spins.load(local::Ordering::Relaxed);
        self.spins.store(f(s).clamp(MIN_SPINS, MAX_SPINS), local::Ordering::Relaxed);
    }

    /// After a wait that had to sleep and took `waited` in all: a short one
    /// means the peer answered within about a futex wake-up, so a yield phase
    /// that long would have caught it (and kept both sides out of the
    /// kernel); a long one means the peer was busy, and staying awake only
    /// burns the CPU.
    fn adapt_yield(&self, waited: Duration) {
        let y = self.yield_ns.load(local::Ordering::Relaxed);
        let waited = u32::try_from(waited.as_nanos()).unwrap_or(u32::MAX);
        let next = if waited < MAX_YIELD_NS { y.max(waited.saturating_mul(2)) } else { y / 2 };
        self.yield_ns.store(next.clamp(MIN_YIELD_NS, MAX_YIELD_NS), local::Ordering::Relaxed);
    }
}

/// A blocking operation, as [`wait`] drives it.
pub(crate) trait WaitTarget {
    /// What a successful wait yields.
    type Output;
    /// Whether sleeps are sliced so that `attempt(true)` can probe an owner.
    const PROBES: bool = false;
    /// Tries to complete without blocking. `probe` is true at most once per
    /// [`PROBE_SLICE`]: the moment for expensive checks (owner liveness).
    fn attempt(&mut self, probe: bool) -> Option<Self::Output>;
    /// Announces the waiter, re-checks, and sleeps on the futex until woken or
    /// `until`. Returns at once if the state changed meanwhile.
    fn sleep(&mut self, until: Option<Deadline>) -> FutexWait;
}

/// Runs `target` to completion or until `deadline`; `None` means timed out.
pub(crate) fn wait<W: WaitTarget>(cfg: &WaitConfig, deadline: Option<Deadline>, target: &mut W) -> Option<W::Output> {
    if let Some(v) = target.attempt(false) {
        return Some(v);
    }
    // A look (a deadline already passed, a zero timeout) ends here: the
    // spin phase reads no clock, and would spin its whole budget first.
    if deadline.is_some_and(Deadline::has_passed) {
        return None;
    }
    wait_after_attempt(cfg, deadline, target)
}

/// [`wait`] for a caller whose own attempt just failed: the first retry comes
/// after a pause. (Retrying at once only pulls the line the peer is about to
/// write away from it again.)
#[inline(never)]
pub(crate) fn wait_after_attempt<W: WaitTarget>(
    cfg: &WaitConfig,
    deadline: Option<Deadline>,
    target: &mut W,
) -> Option<W::Output> {
    // Loom explores interleavings, not time: spinning only multiplies its states.
    let strategy = if cfg!(loom) { WaitStrategy::Block } else { cfg.strategy() };
    // When the next probing attempt is due. Read the clock only once it
    // matters (a probing target about to yield or sleep): most waits end in
    // the spin phase, and a clock read is a good part of a short wait's cost.
    let mut next_probe = None;
    let probe_due = |next_probe: &mut Option<Deadline>, now: Deadline| {
        let due = *next_probe.get_or_insert_with(|| now.later(PROBE_SLICE));
        if W::PROBES && now >= due {
            *next_probe = Some(now.later(PROBE_SLICE));
            true
        } else {
            false
        }
    };
    // When an adaptive wait goes to sleep: when its yield phase began.
    let mut slept_from = None;
    match strategy {
        WaitStrategy::Block => {}
        WaitStrategy::Adaptive => {
            let spins = cfg.spins.load(local::Ordering::Relaxed);
            for i in 1..=spins {
                let yielded = i % CLOCK_EVERY == 0;
                if yielded {
                    loom::yield_now();
                } else {
                    loom::spin_loop();
                }
                if let Some(v) = target.attempt(false) {
                    // Served right after a yield: the peer most likely shares
                    // our CPU and ran in it, as after the yield phase's first
                    // yield below; spinning only delayed it. Otherwise a
                    // longer spin may catch the next wait too.
                    cfg.adapt(|s| if yielded { s / 2 } else { s.saturating_mul(2) });
                    return Some(v);
                }
            }
            // Yield and re-check: on a CPU shared with the peer this is what
            // lets the peer run at all; on another CPU it keeps us awake (and
            // the peer out of a futex wake) for `yield_ns`.
            let started = Deadline::now();
            let budget = Duration::from_nanos(u64::from(cfg.yield_ns.load(local::Ordering::Relaxed)));
            let mut first = true;
            loop {
                loom::yield_now();
                if let Some(v) = target.attempt(false) {
                    // Served after the first yield: the peer shares our CPU and
                    // spinning only delayed it. Later: it runs elsewhere, and a
                    // longer spin would have caught it.
                    cfg.adapt(|s| if first { s / 2 } else { s.saturating_mul(2) });
                    return Some(v);
                }
                first = false;
                let now = Deadline::now();
                if deadline.is_some_and(|d| now >= d) {
                    return None;
                }
                if now.since(started) >= budget {
                    break;
                }
            }
            cfg.adapt(|s| s / 2);
            slept_from = Some(started);
        }
        WaitStrategy::Spin => {
            let mut i = 0u32;
            loop {
                i = i.wrapping_add(1);
                if i % CLOCK_EVERY == 0 {
                    // Never monopolise a CPU that a peer may need.
                    loom::yield_now();
                    let now = Deadline::now();
                    let probe = probe_due(&mut next_probe, now);
                    if let Some(v) = target.attempt(probe) {
                        return Some(v);
                    }
                    if deadline.is_some_and(|d| now >= d) {
                        return None;
                    }
                } else {
                    loom::spin_loop();
                    if let Some(v) = target.attempt(false) {
                        return Some(v);
                    }
                }
            }
        }
    }
    loop {
        let until = if W::PROBES && !cfg!(loom) {
            let next = *next_probe.get_or_insert_with(|| Deadline::after(PROBE_SLICE));
            Some(deadline.map_or(next, |d| d.min(next)))
        } else {
            deadline
        };
        let slept = target.sleep(until);
        // Under loom, probe after every sleep: a wall-clock test would make the
        // model non-deterministic (loom replays schedules and must see the same
        // operations each time), and probing every time explores the probe too.
        let probe = W::PROBES && (cfg!(loom) || probe_due(&mut next_probe, Deadline::now()));
        if let Some(v) = target.attempt(probe) {
            if let Some(started) = slept_from {
                cfg.adapt_yield(Deadline::now().since(started));
            }
            return Some(v);
        }
        let out_of_time = match deadline {
            // The sleep's bound was the caller's deadline and it expired (under
            // loom a timed sleep always reports a timeout: see crate::loom).
            Some(d) => (slept == FutexWait::TimedOut && until == Some(d)) || d.has_passed(),
            None => false,
        };
        if out_of_time {
            return None;
        }
    }
}

/// Sleeps on `word` while it holds `expected`, counted in `sleepers` so that
/// wakers can skip the wake-up system call when nobody sleeps.
///
/// Ordering: the increment of `sleepers` (`SeqCst`) comes before the kernel's
/// compare of `word`; a waker changes `word` (`SeqCst` RMW) before it loads
/// `sleepers` (`SeqCst`, in [`wake_counted`]). In the single total order either
/// the waker sees our increment and wakes us, or our compare sees its change and
/// we do not sleep. loom checks this in `tests/loom_sync.rs`.
pub(crate) fn sleep_counted(
    word: &crate::loom::AtomicU32,
    sleepers: &crate::loom::AtomicU32,
    expected: u32,
    until: Option<Deadline>,
) -> FutexWait {
    use crate::loom::Ordering::SeqCst;
    sleepers.fetch_add(1, SeqCst);
    loom::seqcst_fence();
    let r = loom::futex_wait(word, expected, until);
    sleepers.fetch_sub(1, SeqCst);
    r
}

/// Wakes up to `n` sleepers of [`sleep_counted`] on `word`, if any is counted.
/// Call after changing `word` with a `SeqCst` RMW.
pub(crate) fn wake_counted(word: &crate::loom::AtomicU32, sleepers: &crate::loom::AtomicU32, n: u32) {
    loom::seqcst_fence();
    if sleepers.load(crate::loom::Ordering::SeqCst) != 0 {
        loom::futex_wake(word, n);
    }
}
