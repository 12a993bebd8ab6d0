//! [`Semaphore`] and [`BoundedSemaphore`].

use std::fmt;
use std::time::Duration;

use super::wait::{self, WaitConfig, WaitTarget, sleep_counted, wake_counted};
use crate::error::{Error, Result};
use crate::loom::{AtomicU32, Ordering};
use crate::os::{Deadline, FutexWait};
use crate::segment::{Kind, Shared, SharedState};

/// Semaphore state.
///
/// # Notes about memory ordering
/// - `value` is the futex word. An acquire is a CAS `v -> v - 1` (`Acquire`,
///   pairs with the `SeqCst` increment of a release, so what the releaser did
///   before releasing happens-before what the acquirer does after).
/// - `sleepers` counts threads inside [`sleep_counted`]; a release increments
///   `value` and then checks it (see that function for the pairing).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SemaphoreState {
    /// Free slots. Any `u32` is a value (garbage reads as in-bounds wrong data).
    value: AtomicU32,
    /// Threads asleep (or about to be) on `value`.
    sleepers: AtomicU32,
    /// Upper bound for a bounded semaphore; `u32::MAX` for an unbounded one.
    bound: AtomicU32,
    _pad: AtomicU32,
}

impl SemaphoreState {
    fn zeroed() -> Self {
        SemaphoreState {
            value: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            bound: AtomicU32::new(0),
            _pad: AtomicU32::new(0),
        }
    }

    fn init(&self, (value, bound): (u32, u32)) {
        self.value.store(value, Ordering::Relaxed);
        self.bound.store(bound, Ordering::Relaxed);
    }

    fn try_acquire(&self) -> bool {
        let mut v = self.value.load(Ordering::Relaxed);
        while v > 0 {
            match self.value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    fn acquire(&self, cfg: &WaitConfig, deadline: Option<Deadline>) -> bool {
        struct Target<'a>(&'a SemaphoreState);
        impl WaitTarget for Target<'_> {
            type Output = ();
            fn attempt(&mut self, _probe: bool) -> Option<()> {
                self.0.try_acquire().then_some(())
            }
            fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
                sleep_counted(&self.0.value, &self.0.sleepers, 0, until)
            }
        }
        wait::wait(cfg, deadline, &mut Target(self)).is_some()
    }

    fn release(&self, n: u32, bounded: bool) -> Result<()> {
        let bound = self.bound.load(Ordering::Relaxed);
        let mut v = self.value.load(Ordering::Relaxed);
        loop {
            let next = match v.checked_add(n) {
                Some(next) if !bounded || next <= bound => next,
                Some(_) => return Err(Error::OverRelease { bound }),
                None => return Err(Error::Overflow { what: "semaphore value" }),
            };
            // SeqCst: see `sleep_counted`.
            match self.value.compare_exchange_weak(v, next, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        wake_counted(&self.value, &self.sleepers, n);
        Ok(())
    }
}

macro_rules! semaphore_type {
    ($name:ident, $state:ident, $kind:expr, $doc:literal) => {
        #[repr(C)]
        #[derive(Debug)]
        pub(crate) struct $state(SemaphoreState);

        // SAFETY: repr(C) wrapper of SemaphoreState: atomics only, no pointers,
        // every value interpreted.
        unsafe impl SharedState for $state {
            const KIND: Kind = $kind;
            type Params = (u32, u32);
            fn zeroed() -> Self {
                $state(SemaphoreState::zeroed())
            }
            fn init(&self, params: (u32, u32)) {
                self.0.init(params);
            }
        }

        #[doc = $doc]
        #[derive(Clone)]
        pub struct $name {
            state: Shared<$state>,
            wait: WaitConfig,
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("segment", &self.state)
                    .field("value", &self.get_value())
                    .finish()
            }
        }

        $crate::sync::passable!($name);

        impl $name {
            fn from_state(state: Shared<$state>) -> Self {
                $name { state, wait: WaitConfig::default() }
            }

            /// Opens the semaphore in the named segment `name`.
            pub fn open(name: &str) -> Result<Self> {
                Shared::open(name).map(Self::from_state)
            }

            $crate::sync::wait_strategy_accessors!();

            /// Takes a slot, waiting as long as it takes.
            pub fn acquire(&self) {
                self.state.0.acquire(&self.wait, None);
            }

            /// Takes a slot if one is free now; `false` otherwise.
            pub fn try_acquire(&self) -> bool {
                self.state.0.try_acquire()
            }

            /// Takes a slot, waiting at most `timeout`; `false` if none came free.
            pub fn acquire_timeout(&self, timeout: Duration) -> bool {
                self.state.0.acquire(&self.wait, Some(Deadline::after(timeout)))
            }

            /// The number of free slots now (Python's `get_value()`).
            pub fn get_value(&self) -> u32 {
                self.state.0.value.load(Ordering::Relaxed)
            }
        }
    };
}

semaphore_type!(
    Semaphore,
    UnboundedState,
    Kind::Semaphore,
    "A cross-process counting semaphore (Python's `multiprocessing.Semaphore`).\n\n\
     A process killed while it holds a slot never gives it back: as with \
     Python's POSIX semaphores, the count stays one lower. Use timed acquires \
     where a dead holder must not stall the others.\n\n\
     # Examples\n\n```\nlet sem = shmproc::Semaphore::new(2)?;\nsem.acquire();\n\
     assert!(sem.try_acquire());\nassert!(!sem.try_acquire());\nsem.release()?;\n\
     assert_eq!(sem.get_value(), 1);\n# Ok::<(), shmproc::Error>(())\n```"
);

semaphore_type!(
    BoundedSemaphore,
    BoundedState,
    Kind::BoundedSemaphore,
    "A semaphore that refuses to be released above its initial value (Python's \
     `multiprocessing.BoundedSemaphore`).\n\n\
     # Examples\n\n```\nuse shmproc::{BoundedSemaphore, Error};\n\n\
     let sem = BoundedSemaphore::new(1)?;\nsem.acquire();\nsem.release()?;\n\
     assert!(matches!(sem.release(), Err(Error::OverRelease { bound: 1 })));\n\
     # Ok::<(), shmproc::Error>(())\n```"
);

impl Semaphore {
    /// A semaphore with `value` free slots, in an anonymous segment.
    pub fn new(value: u32) -> Result<Self> {
        Shared::anonymous((value, u32::MAX)).map(Self::from_state)
    }

    /// A semaphore with `value` free slots, in the named segment `name`.
    pub fn create(name: &str, value: u32) -> Result<Self> {
        Shared::create(name, (value, u32::MAX)).map(Self::from_state)
    }

    /// Gives a slot back, waking one waiter.
    ///
    /// # Errors
    /// [`Error::Overflow`] if the value would pass `u32::MAX`.
    pub fn release(&self) -> Result<()> {
        self.state.0.release(1, false)
    }
}

impl BoundedSemaphore {
    /// A bounded semaphore with `value` free slots (also its bound).
    pub fn new(value: u32) -> Result<Self> {
        Shared::anonymous((value, value)).map(Self::from_state)
    }

    /// A bounded semaphore with `value` free slots, in the named segment `name`.
    pub fn create(name: &str, value: u32) -> Result<Self> {
        Shared::create(name, (value, value)).map(Self::from_state)
    }

    /// Gives a slot back, waking one waiter.
    ///
    /// # Errors
    /// [`Error::OverRelease`] if that would exceed the bound.
    pub fn release(&self) -> Result<()> {
        self.state.0.release(1, true)
    }

    /// The bound (the initial value).
    pub fn bound(&self) -> u32 {
        self.state.0.bound.load(Ordering::Relaxed)
    }
}
