//! The one place that imports atomics, `UnsafeCell` and the futex: the seam that
//! lets the same algorithms run for real and under the loom model checker.
//!
//! Built normally, everything here is `std` plus the `os` futex. Built with
//! `RUSTFLAGS="--cfg loom"`, atomics come from loom, and the futex, thread
//! identity and owner liveness are modelled:
//!
//! - **futex**: one model-wide loom `Mutex` + `Condvar` guarding a queue of
//!   sleepers (word address, sleeper). `wait` compares the word under the mutex,
//!   queues itself and sleeps until a wake dequeues it; `wake(word, n)` dequeues
//!   the `n` oldest sleepers on that word. Comparing and sleeping under one lock
//!   is exactly the atomicity the kernel gives `FUTEX_WAIT`, so a lost wake-up
//!   shows up as a loom deadlock, and so does a wake of the wrong word or of too
//!   few sleepers. A wait with a deadline never sleeps in the model: it reports
//!   a timeout at once, which is one of the outcomes a real timed wait can have,
//!   and loom explores it.
//! - **identity**: loom threads run as coroutines on one OS thread, so `gettid`
//!   cannot tell them apart; a loom thread-local counter does.
//! - **liveness**: every model thread is alive until it "dies"
//!   (`kill_current`, which the MPMC ring's dying-claimant models call right
//!   after a claim); then `task_alive` says so at once.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Atomics for process-local tuning state that no algorithm's correctness
/// depends on (adaptive spin budgets): always `std`, never modelled, so loom
/// does not explore their interleavings.
pub(crate) mod local {
    pub(crate) use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
}

/// Atomics made over raw shared memory with `from_ptr` (array elements of 1
/// to 8 bytes): always `std`. Loom cannot model memory it did not allocate, so
/// the array module that uses them is left out of the loom build.
#[cfg(not(loom))]
pub(crate) mod raw {
    pub(crate) use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};
}

use crate::os::{Deadline, FutexWait, TaskId};

/// A hint to the CPU that we are in a spin loop (a plain yield under loom, so the
/// model checker sees the spin).
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// A `SeqCst` fence in the loom model only. loom treats `SeqCst` accesses as
/// `AcqRel` (its README, "Unsupported features"), so without this it reports
/// the store-buffering outcome of the `sleep_counted` / `wake_counted`
/// handshake, which the single total order of `SeqCst` operations rules out.
/// Real builds need no fence: the handshake's `SeqCst` read-modify-writes
/// already order it (a `lock`-prefixed instruction on x86), and the kernel puts
/// a full barrier before its futex compare.
#[inline]
pub(crate) fn seqcst_fence() {
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// The cheap side of the asymmetric fence (see [`crate::os::light_fence`]);
/// a `SeqCst` fence in the loom model, which checks the protocol with the
/// symmetric pairing that membarrier stands in for, unless the model said
/// [`model::light_fence_is_free`]: then nothing, as in a registered process,
/// for models whose sleepers pair with wakers' full fences instead (fenced
/// waiters).
#[inline]
pub(crate) fn light_fence() {
    #[cfg(not(loom))]
    crate::os::light_fence();
    #[cfg(loom)]
    if !model::LIGHT_FENCE_FREE.with(std::cell::Cell::get) {
        loom::sync::atomic::fence(Ordering::SeqCst);
    }
}

/// A full `SeqCst` fence in every build (`mfence` on x86): the fence of both
/// sides of the rings' wake protocol when wakers were asked to fence (see
/// `ring::Side`).
#[inline]
pub(crate) fn full_fence() {
    #[cfg(not(loom))]
    std::sync::atomic::fence(Ordering::SeqCst);
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// The expensive side (see [`crate::os::heavy_fence`]); a `SeqCst` fence
/// under loom. `false`: no barrier could be forced on other processes.
#[inline]
pub(crate) fn heavy_fence() -> bool {
    #[cfg(not(loom))]
    return crate::os::heavy_fence();
    #[cfg(loom)]
    {
        loom::sync::atomic::fence(Ordering::SeqCst);
        true
    }
}

/// `UnsafeCell` with loom's closure API (`with`, `with_mut`), so that loom can
/// check the data hand-offs of the rings. Lives in shared memory: the std
/// version is `repr(transparent)`, any bits of `T` valid if `T` allows it.
#[cfg(not(loom))]
pub(crate) mod cell {
    /// See the module docs.
    #[derive(Debug, Default)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        #[allow(dead_code, reason = "the rings build slots from zeroed memory; tests and loom use it")]
        pub(crate) const fn new(v: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(v))
        }
        /// Runs `f` with a pointer for reading.
        #[inline]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        /// Runs `f` with a pointer for writing.
        #[inline]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}
#[cfg(loom)]
pub(crate) use loom::cell;

/// Gives the CPU away (`sched_yield`; a loom yield in the model).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    crate::os::yield_cpu();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Sleeps while `*word == expected` (see [`crate::os::futex_wait`]).
#[cfg(not(loom))]
#[inline]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> FutexWait {
    crate::os::futex_wait(word, expected, deadline)
}

/// Wakes up to `n` sleepers on `word` (see [`crate::os::futex_wake`]).
#[cfg(not(loom))]
#[inline]
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> usize {
    crate::os::futex_wake(word, n)
}

/// The calling thread's identity (see [`crate::os::current_task`]).
#[cfg(not(loom))]
#[inline]
pub(crate) fn current_task() -> TaskId {
    crate::os::current_task()
}

/// Whether `task` is alive (see [`crate::os::task_alive`]).
#[cfg(not(loom))]
pub(crate) fn task_alive(task: TaskId) -> bool {
    crate::os::task_alive(task)
}

#[cfg(loom)]
mod model {
    use super::{AtomicU32, Deadline, FutexWait, Ordering, TaskId};
    use loom::sync::{Condvar, Mutex};

    /// Sleepers: (address of the futex word, sleeper's id), oldest first.
    type Queue = Vec<(usize, u32)>;

    loom::lazy_static! {
        static ref FUTEX: (Mutex<Queue>, Condvar) = (Mutex::new(Vec::new()), Condvar::new());
        static ref NEXT_ID: AtomicU32 = AtomicU32::new(1);
        static ref NEXT_SLEEP: AtomicU32 = AtomicU32::new(1);
    }
    loom::thread_local! {
        static ID: u32 = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    }

    fn addr(word: &AtomicU32) -> usize {
        std::ptr::from_ref(word) as usize
    }

    pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> FutexWait {
        let mut queue = FUTEX.0.lock().unwrap();
        if word.load(Ordering::SeqCst) != expected {
            return FutexWait::Woken;
        }
        if deadline.is_some() {
            return FutexWait::TimedOut;
        }
        let me = NEXT_SLEEP.fetch_add(1, Ordering::Relaxed);
        queue.push((addr(word), me));
        // Sleep until a wake on this word dequeues us (the kernel's FUTEX_WAIT:
        // a wake on another word, or of other sleepers, leaves us asleep).
        while queue.iter().any(|&(_, id)| id == me) {
            queue = FUTEX.1.wait(queue).unwrap();
        }
        FutexWait::Woken
    }

    pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> usize {
        let mut queue = FUTEX.0.lock().unwrap();
        let a = addr(word);
        let mut woken = 0;
        queue.retain(|&(w, _)| {
            if w == a && woken < n as usize {
                woken += 1;
                false
            } else {
                true
            }
        });
        if woken > 0 {
            FUTEX.1.notify_all();
        }
        woken
    }

    pub(crate) fn current_task() -> TaskId {
        TaskId { tid: ID.with(|id| *id), start: 1 }
    }

    std::thread_local! {
        /// Whether `light_fence` is a no-op in this model (loom runs every
        /// model thread on the test's OS thread, so this is per model).
        pub(crate) static LIGHT_FENCE_FREE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Makes `light_fence` a no-op (or a fence again) for the models run on
    /// this test thread from now on: wakers then fence only when a fenced
    /// waiter is registered, as in a process registered for membarrier.
    pub fn light_fence_is_free(free: bool) {
        LIGHT_FENCE_FREE.with(|f| f.set(free));
    }

    loom::lazy_static! {
        /// The model threads that died ([`kill_current`]), for this execution.
        static ref DEAD: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
    }

    /// Whether `task` is alive: every model thread is, until it calls
    /// [`kill_current`]. (A plain mutex, not loom's: a death is seen by
    /// everyone at once, as the kernel's `/proc` shows it.)
    pub(crate) fn task_alive(task: TaskId) -> bool {
        !DEAD.lock().unwrap().contains(&task.tid)
    }

    /// Marks the calling model thread dead, as if `SIGKILL`ed here: it must do
    /// nothing more (the model's thread body returns right after).
    pub(crate) fn kill_current() {
        DEAD.lock().unwrap().push(current_task().tid);
    }
}

#[cfg(loom)]
pub use model::light_fence_is_free;
#[cfg(loom)]
pub(crate) use model::{current_task, futex_wait, futex_wake, kill_current, task_alive};
