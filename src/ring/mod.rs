//! Lock-free rings: pure algorithms over a region of memory that may be a
//! segment's tail or a heap allocation (how loom checks them).
//!
//! | ring | file | producers / consumers | element |
//! |---|---|---|---|
//! | [`spsc`] | `spsc.rs` | 1 / 1 | fixed (`T: Pod`) |
//! | [`mpmc`] | `mpmc.rs` | any / any | fixed (`T: Pod`), stamped slots |
//! | [`bytes`] | `bytes.rs` | 1 / 1 (callers serialise more) | variable-length records |
//!
//! A ring is a header (positions, on cache lines of their own) plus a slice of
//! slots. It knows nothing about blocking or closing: the `channel` layer
//! builds those from [`Side`] (below) and the rings' non-blocking `try_`
//! operations. Everything a ring reads from shared memory (positions, stamps)
//! is checked: a peer's garbage gives [`Error::Corrupt`] or in-bounds wrong
//! data, never an out-of-bounds slot or an endless loop.

#[cfg_attr(not(loom), allow(unreachable_pub, reason = "pub for the loom models; the module is private outside loom"))]
pub mod bytes;
#[cfg(loom)]
pub use crate::loom::light_fence_is_free;
pub(crate) use bytes::BytesHeader;
#[cfg_attr(not(loom), allow(unreachable_pub, reason = "pub for the loom models; the module is private outside loom"))]
pub mod mpmc;
#[cfg_attr(not(loom), allow(unreachable_pub, reason = "pub for the loom models; the module is private outside loom"))]
pub mod spsc;

use crate::error::{Error, Result};
use crate::loom::{self, AtomicU32, AtomicU64, Ordering};
use crate::os::{Deadline, FutexWait};

/// A value on a cache line of its own (positions written by one side and read
/// by the other must not share a line with anything else).
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub(crate) T);

/// Why a push did not happen; the element comes back.
#[derive(Debug)]
#[cfg_attr(not(loom), allow(unreachable_pub, reason = "pub for the loom models; the module is private outside loom"))]
pub enum Push<T> {
    /// No room now.
    Full(T),
    /// The ring is corrupt, or the caller cannot use it (see the error).
    Failed(T, Error),
}

/// How many elements a ring of `capacity` holds: `capacity` rounded up to a
/// power of two (so that a position maps to a slot with a mask), at least 1.
pub(crate) fn slots_for(capacity: usize) -> Result<usize> {
    if capacity == 0 {
        return Err(Error::InvalidArgument { what: "a queue needs a capacity of at least 1" });
    }
    capacity.checked_next_power_of_two().ok_or(Error::InvalidArgument { what: "queue capacity too large" })
}

/// One side of a ring that threads wait on: consumers wait for "not empty",
/// producers for "not full".
///
/// # The wake protocol (no lost wake-up, no system call when nobody sleeps)
///
/// A waker publishes with a plain store (the ring's position or stamp), then
/// [`notify`](Side::notify)s: a [`light_fence`](loom::light_fence) and a
/// `Relaxed` load of `sleepers`; only if that is non-zero does it bump `seq`
/// and call `futex_wake`. A sleeper reads `seq`, increments `sleepers`, runs
/// the [`heavy_fence`](loom::heavy_fence) (a membarrier: a full barrier on
/// every CPU that runs a registered process's thread), re-checks its condition
/// and sleeps on `seq` if it still does not hold. The two fences make a
/// Dekker pair: either the waker's store precedes the sleeper's re-check (which
/// then sees it), or the sleeper's increment precedes the waker's load (which
/// then wakes it); a wake between the sleeper's read of `seq` and its futex
/// call changes `seq`, so the kernel's compare fails and it does not sleep.
/// loom checks this protocol with `SeqCst` fences on both sides.
///
/// If the kernel refuses membarrier, the sleeper sleeps in slices of
/// [`UNFENCED_SLICE`] and re-checks, so a missed wake costs at most a slice.
///
/// # Fenced waiters
///
/// A membarrier costs the sleeper about a microsecond (more while a thread of
/// a registered process runs on another CPU): nothing for a waiter that
/// spun and yielded first, a fifth of a same-CPU round trip for one that
/// sleeps at once (`WaitStrategy::Block`). Such a handle registers once per
/// side as a *fenced waiter*: it raises `fenced` and runs one heavy fence, so
/// that every waker that runs from then on sees the count. While `fenced` is
/// non-zero, `notify` adds a full fence (`mfence`, some 30 cycles) before its
/// load of `sleepers`, and the registered sleeper pairs with it with a full
/// fence of its own instead of a membarrier. The handle takes its count back
/// when dropped; a process killed before that leaves the count raised, which
/// only costs wakers that fence. A peer that zeroes the count could make a
/// waker skip its fence and a registered sleeper miss a wake-up, so
/// registered sleepers sleep at most [`FENCED_SLICE`] at a time.
#[repr(C)]
#[derive(Debug, Default)]
#[cfg_attr(not(loom), allow(unreachable_pub, reason = "pub for the loom models; the module is private outside loom"))]
pub struct Side {
    /// Bumped by every wake; the futex word sleepers wait on. Any value is valid.
    seq: AtomicU32,
    _pad: AtomicU32,
    /// Two counts in one word, so that a notify reads both with one load:
    /// - low 32 bits, *sleepers*: threads asleep, or about to be, on `seq`.
    ///   Only a hint for wakers: a garbage value costs a spurious wake or, if
    ///   it reads 0 while someone sleeps, a sleep until that waiter's next
    ///   probe or deadline.
    /// - high 32 bits, *fenced*: handles registered as fenced waiters (see
    ///   above); any non-zero value makes wakers fence.
    ///
    /// Each count changes only by adding or taking 1 at its own place, and a
    /// count is never taken below 0 (a peer's garbage cannot make one count
    /// borrow from the other).
    waiters: AtomicU64,
}

/// One sleeper in [`Side::waiters`].
const SLEEPER: u64 = 1;
/// One fenced waiter in [`Side::waiters`].
const FENCED: u64 = 1 << 32;

/// A handle's registration as a fenced waiter on one [`Side`]: the fork
/// generation of the process that registered it (0: none). Process-local; a
/// clone starts unregistered, and so does a copy of the handle in a forked
/// child (its generation differs): the child neither relies on, nor takes
/// back, its parent's registration.
#[derive(Debug, Default)]
#[cfg_attr(not(loom), allow(unreachable_pub, reason = "pub for the loom models; the module is private outside loom"))]
pub struct FencedWaiter(crate::loom::local::AtomicU64);

impl Clone for FencedWaiter {
    fn clone(&self) -> Self {
        FencedWaiter::default()
    }
}

impl FencedWaiter {
    fn is_registered(&self) -> bool {
        self.0.load(crate::loom::local::Ordering::Relaxed) == crate::os::fork_generation()
    }
}

/// The longest a registered fenced waiter sleeps at a time (see [`Side`]).
pub(crate) const FENCED_SLICE: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a sleeper sleeps at a time when no heavy fence could be forced.
pub(crate) const UNFENCED_SLICE: std::time::Duration = std::time::Duration::from_millis(1);

#[cfg_attr(not(loom), allow(unreachable_pub, reason = "pub for the loom models; the module is private outside loom"))]
impl Side {
    /// An idle side, for the loom models.
    #[cfg(loom)]
    pub fn new() -> Self {
        Side { seq: AtomicU32::new(0), _pad: AtomicU32::new(0), waiters: AtomicU64::new(0) }
    }

    /// Wakes up to `n` sleepers, if any; call after publishing.
    #[inline]
    pub fn notify(&self, n: u32) {
        loom::light_fence();
        // One load for both counts; nobody fenced and nobody asleep is the
        // common case.
        let waiters = self.waiters.load(Ordering::Relaxed);
        if waiters != 0 {
            self.notify_waiters(waiters, n);
        }
    }

    #[cold]
    fn notify_waiters(&self, waiters: u64, n: u32) {
        // The fenced count was raised (and made visible everywhere by a heavy
        // fence) before any sleeper relies on it: reading it without a fence
        // first is fine. The sleepers' count is then read again after our
        // full fence, as the registered sleepers' pairing needs.
        let waiters = if waiters >= FENCED {
            loom::full_fence();
            self.waiters.load(Ordering::Relaxed)
        } else {
            waiters
        };
        if waiters % FENCED != 0 {
            self.wake(n);
        }
    }

    #[cold]
    fn wake(&self, n: u32) {
        self.seq.fetch_add(1, Ordering::Relaxed);
        loom::futex_wake(&self.seq, n);
    }

    /// Sleeps until notified or `until`, unless `ready()` holds after the
    /// announcement (checked between the announcement and the sleep).
    pub(crate) fn sleep(&self, until: Option<Deadline>, ready: impl FnOnce() -> bool) -> FutexWait {
        self.sleep_as(None, until, ready)
    }

    /// [`sleep`](Self::sleep) as the fenced waiter `waiter` (registering it
    /// on first use), or as an ordinary one (`None`).
    pub(crate) fn sleep_as(
        &self,
        waiter: Option<&FencedWaiter>,
        until: Option<Deadline>,
        ready: impl FnOnce() -> bool,
    ) -> FutexWait {
        let fenced_waiter = waiter.is_some_and(|w| self.register(w));
        let seen = self.seq.load(Ordering::Relaxed);
        self.add(SLEEPER);
        let slice = if fenced_waiter {
            // Pairs with the full fence of every waker that sees `fenced`.
            loom::full_fence();
            // The slices only survive a peer's zeroing of the count; the loom
            // models sleep until woken, so that a lost wake-up deadlocks.
            if cfg!(loom) { None } else { Some(FENCED_SLICE) }
        } else if loom::heavy_fence() {
            None
        } else {
            Some(UNFENCED_SLICE)
        };
        let outcome = if ready() {
            FutexWait::Woken
        } else {
            match slice.map(Deadline::after) {
                // A slice that ends before the caller's deadline: its end is
                // a wake-up to re-check, not the caller's timeout.
                Some(end) if until.is_none_or(|d| end < d) => {
                    let _ = loom::futex_wait(&self.seq, seen, Some(end));
                    FutexWait::Woken
                }
                _ => loom::futex_wait(&self.seq, seen, until),
            }
        };
        self.take(SLEEPER);
        outcome
    }

    /// Adds one to the count at `unit` ([`SLEEPER`] or [`FENCED`]), unless it
    /// is full (garbage): it never carries into the other.
    fn add(&self, unit: u64) {
        let _ = self.waiters.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            ((w / unit) % FENCED != u64::from(u32::MAX)).then(|| w.wrapping_add(unit))
        });
    }

    /// Takes one from the count at `unit`, unless it is 0 (a peer's garbage
    /// may have lowered it already): it never borrows from the other.
    fn take(&self, unit: u64) {
        let _ = self
            .waiters
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| ((w / unit) % FENCED != 0).then(|| w - unit));
    }

    /// Registers `waiter` as a fenced waiter here unless it is already;
    /// `false` if it could not be (no heavy fence to publish the count).
    fn register(&self, waiter: &FencedWaiter) -> bool {
        if waiter.is_registered() {
            return true;
        }
        self.add(FENCED);
        // Every thread of every registered process passes a full barrier
        // after our increment: every notify from now on sees it.
        if loom::heavy_fence() {
            waiter.0.store(crate::os::fork_generation(), crate::loom::local::Ordering::Relaxed);
            true
        } else {
            self.take(FENCED);
            false
        }
    }

    /// Takes back `waiter`'s registration, if any (when its handle drops).
    /// Never below 0: a peer's garbage may have lowered the count already.
    pub(crate) fn unregister(&self, waiter: &FencedWaiter) {
        if waiter.is_registered() {
            waiter.0.store(0, crate::loom::local::Ordering::Relaxed);
            self.take(FENCED);
        }
    }

    /// [`sleep`](Self::sleep) without a deadline, for the loom models (which
    /// cannot name `Deadline` or `FutexWait`).
    #[cfg(loom)]
    pub fn sleep_untimed(&self, ready: impl FnOnce() -> bool) {
        let _ = self.sleep(None, ready);
    }

    /// [`sleep_untimed`](Self::sleep_untimed) as the fenced waiter `waiter`.
    #[cfg(loom)]
    pub fn sleep_fenced_untimed(&self, waiter: &FencedWaiter, ready: impl FnOnce() -> bool) {
        let _ = self.sleep_as(Some(waiter), None, ready);
    }

    /// Takes back `waiter`'s registration, for the loom models.
    #[cfg(loom)]
    pub fn unregister_fenced(&self, waiter: &FencedWaiter) {
        self.unregister(waiter);
    }
}

/// The rings' positions are 64-bit counters that never wrap in practice (2^64
/// messages); a peer can still write any value, so differences are computed
/// wrapping and checked against the capacity.
#[inline]
pub(crate) fn distance(ahead: u64, behind: u64) -> u64 {
    ahead.wrapping_sub(behind)
}
