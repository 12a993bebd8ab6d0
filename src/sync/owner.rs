//! The owner-tracking futex lock under `Lock`, `RLock` and `Barrier`.
//!
//! # The lock word
//!
//! ```text
//!  31        30..22       21..0
//! [WAITERS] [must be 0] [owner tid]
//! ```
//! - `0`: unlocked, nobody asleep.
//! - `tid`: held by thread `tid` (a Linux tid, always below 2^22), nobody asleep.
//! - `tid | WAITERS`: held, and someone may be asleep on the word; the releaser
//!   must wake one.
//! - `WAITERS` alone (tid 0) only appears if a peer scribbled; it is treated as
//!   unlocked and acquired with `WAITERS` kept.
//! - any value with bits 22..=30 set names no thread: it is treated as held by a
//!   dead owner and taken over.
//!
//! Beside the word, `stamp` holds the owner's [`TaskId::stamp`] (tid and start
//! time), written by the owner right after it acquires. A waiter that has slept
//! a [`PROBE_SLICE`](super::wait::PROBE_SLICE) checks the owner: if the stamp
//! names the word's tid it compares start times (a tid reused by a later thread
//! is not the owner), otherwise (the new owner has not written its stamp yet) it
//! only checks that the tid exists. A dead owner's lock is taken over with a CAS
//! from exactly the word that named it, so two waiters cannot both take it, and
//! the taker is told the owner died.
//!
//! # Notes about memory ordering
//!
//! - Acquiring CAS (`Acquire`) pairs with the releasing CAS/swap (`Release`):
//!   the critical section of the previous owner happens-before ours.
//! - Setting `WAITERS` and reading it back at release are RMWs on the same word
//!   the kernel compares in `FUTEX_WAIT`, so a release either sees the bit and
//!   wakes, or happens before the waiter's futex compare, which then fails and
//!   the waiter retries: no lost wake-up, whatever the orderings of the RMWs.
//! - `stamp` is advisory (`Relaxed` both ways): a stale read only delays a
//!   takeover by one slice, it never causes a wrong one (see above).

use crate::loom::{self, AtomicU32, AtomicU64, Ordering};
use crate::os::{Deadline, FutexWait, TID_MASK, TaskId};

use super::wait::{self, WaitConfig, WaitTarget};

/// Set while a waiter may sleep on the word.
const WAITERS: u32 = 1 << 31;
/// Bits no valid word has.
const JUNK: u32 = !(WAITERS | TID_MASK);

/// Whether the thread `tid` that a shared word names as its holder lives.
/// `stamp` is the holder's [`TaskId::stamp`] as written right after it took
/// hold (advisory, possibly stale or not yet written): if it names `tid`, the
/// start time must match too (a tid reused by a later thread is not the
/// holder); otherwise only the tid's existence is checked, which a stale read
/// can only make look alive for one more probe.
pub(crate) fn holder_alive(tid: u32, stamp: u64) -> bool {
    let recorded = TaskId::from_stamp(stamp);
    let task = if recorded.tid == tid { recorded } else { TaskId { tid, start: 0 } };
    loom::task_alive(task)
}

/// How an acquisition went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The lock was free (or released normally).
    Clean,
    /// The previous owner died holding it (or the word held garbage).
    OwnerDied,
}

/// A futex lock word that records its owner. Lives in shared memory.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct OwnerLock {
    /// See the module docs for the bit layout.
    word: AtomicU32,
    _pad: AtomicU32,
    /// Owner's `TaskId::stamp`; advisory, possibly stale.
    stamp: AtomicU64,
}

impl OwnerLock {
    pub(crate) fn zeroed() -> Self {
        OwnerLock { word: AtomicU32::new(0), _pad: AtomicU32::new(0), stamp: AtomicU64::new(0) }
    }

    /// The owner's tid, or 0 if unlocked.
    pub(crate) fn owner(&self) -> u32 {
        self.word.load(Ordering::Relaxed) & TID_MASK
    }

    /// Whether a live task holds the lock (a liveness check: a system call).
    pub(crate) fn held_by_live_task(&self) -> bool {
        let tid = self.owner();
        tid != 0 && self.owner_alive(tid)
    }

    /// Whether `me` holds the lock.
    #[inline]
    pub(crate) fn is_owned_by(&self, me: TaskId) -> bool {
        let w = self.word.load(Ordering::Relaxed);
        w & JUNK == 0 && w & TID_MASK == me.tid
    }

    /// Tries once: takes a free lock, or one whose owner is known dead when
    /// `probe` allows the (slow) liveness check.
    fn try_once(&self, me: TaskId, slept: bool, probe: bool) -> Option<Acquired> {
        let w = self.word.load(Ordering::Relaxed);
        let owner = w & TID_MASK;
        let garbage = w & JUNK != 0;
        let outcome = if owner == 0 && !garbage {
            Acquired::Clean
        } else if garbage || (probe && owner != me.tid && !self.owner_alive(owner)) {
            Acquired::OwnerDied
        } else {
            return None;
        };
        // After sleeping we cannot know whether others still sleep: keep
        // WAITERS so that our release wakes them. A takeover keeps it too.
        let keep = if slept || outcome == Acquired::OwnerDied { WAITERS } else { w & WAITERS };
        // Acquire: pairs with the Release of the previous owner's unlock.
        self.word.compare_exchange(w, me.tid | keep, Ordering::Acquire, Ordering::Relaxed).ok()?;
        self.stamp.store(me.stamp(), Ordering::Relaxed);
        Some(outcome)
    }

    fn owner_alive(&self, owner: u32) -> bool {
        holder_alive(owner, self.stamp.load(Ordering::Relaxed))
    }

    /// Acquires, waiting per `cfg` until `deadline`. `None`: timed out.
    #[inline]
    pub(crate) fn lock(&self, me: TaskId, cfg: &WaitConfig, deadline: Option<Deadline>) -> Option<Acquired> {
        if self.lock_fast(me) {
            return Some(Acquired::Clean);
        }
        self.lock_slow(me, cfg, deadline)
    }

    /// The fast path alone: takes the lock if it is free and uncontended.
    #[inline]
    pub(crate) fn lock_fast(&self, me: TaskId) -> bool {
        // Acquire: pairs with the Release of the previous owner's unlock.
        if self.word.compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            self.stamp.store(me.stamp(), Ordering::Relaxed);
            return true;
        }
        false
    }

    #[cold]
    fn lock_slow(&self, me: TaskId, cfg: &WaitConfig, deadline: Option<Deadline>) -> Option<Acquired> {
        struct Target<'a> {
            lock: &'a OwnerLock,
            me: TaskId,
            slept: bool,
        }
        impl WaitTarget for Target<'_> {
            type Output = Acquired;
            const PROBES: bool = true;
            fn attempt(&mut self, probe: bool) -> Option<Acquired> {
                self.lock.try_once(self.me, self.slept, probe)
            }
            fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
                let word = &self.lock.word;
                let w = word.load(Ordering::Relaxed);
                if w & TID_MASK == 0 || w & JUNK != 0 {
                    return FutexWait::Woken; // free (or garbage): attempt again
                }
                if w & WAITERS == 0
                    && word.compare_exchange(w, w | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
                {
                    return FutexWait::Woken;
                }
                self.slept = true;
                loom::futex_wait(word, w | WAITERS, until)
            }
        }
        wait::wait(cfg, deadline, &mut Target { lock: self, me, slept: false })
    }

    /// Tries once without waiting (probing the owner's liveness as well).
    pub(crate) fn try_lock(&self, me: TaskId) -> Option<Acquired> {
        self.try_once(me, false, true)
    }

    /// Releases a lock held by `me`; `false` (and no change) if `me` does not
    /// hold it.
    #[inline]
    pub(crate) fn unlock(&self, me: TaskId) -> bool {
        // Release: pairs with the Acquire of the next owner's CAS.
        match self.word.compare_exchange(me.tid, 0, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => true,
            Err(w) if w == me.tid | WAITERS => {
                // Only we clear the word while we hold it; CAS anyway so that a
                // scribbled word is never overwritten.
                if self.word.compare_exchange(w, 0, Ordering::Release, Ordering::Relaxed).is_err() {
                    return false;
                }
                loom::futex_wake(&self.word, 1);
                true
            }
            Err(_) => false,
        }
    }
}
