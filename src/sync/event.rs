//! [`Event`]: a flag that processes wait on.

use std::fmt;
use std::time::Duration;

use super::wait::{self, WaitConfig, WaitTarget, sleep_counted, wake_counted};
use crate::error::{Error, Result};
use crate::loom::{AtomicU32, Ordering};
use crate::os::{Deadline, FutexWait};
use crate::segment::{Kind, Shared, SharedState};

const CLEAR: u32 = 0;
const SET: u32 = 1;

/// Event state.
///
/// # Notes about memory ordering
/// `set` swaps `flag` to `SET` (`SeqCst`, a release) and a waiter loads it with
/// `Acquire`: what the setter did before `set` happens-before what a waiter
/// does after `wait` returns. The `sleepers` handshake is [`sleep_counted`]'s.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct EventState {
    /// [`CLEAR`] or [`SET`]; the futex word. Any other value is corrupt.
    flag: AtomicU32,
    /// Threads asleep (or about to be) on `flag`.
    sleepers: AtomicU32,
}

// SAFETY: repr(C), atomics only, no pointers; unknown flag values are errors.
unsafe impl SharedState for EventState {
    const KIND: Kind = Kind::Event;
    type Params = ();
    fn zeroed() -> Self {
        EventState { flag: AtomicU32::new(CLEAR), sleepers: AtomicU32::new(0) }
    }
    fn init(&self, (): ()) {}
}

impl EventState {
    fn read(&self) -> Result<bool> {
        match self.flag.load(Ordering::Acquire) {
            CLEAR => Ok(false),
            SET => Ok(true),
            other => Err(Error::corrupt("Event", format!("flag {other} is neither 0 (clear) nor 1 (set)"))),
        }
    }
}

/// A cross-process event flag (Python's `multiprocessing.Event`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let e = shmproc::Event::new()?;
/// assert!(!e.wait_timeout(Duration::from_millis(1))?);
/// e.set();
/// assert!(e.is_set()?);
/// e.wait()?; // returns at once
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    state: Shared<EventState>,
    wait: WaitConfig,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("segment", &self.state)
            .field("set", &self.state.read().ok())
            .finish_non_exhaustive()
    }
}

impl Event {
    fn from_state(state: Shared<EventState>) -> Self {
        Event { state, wait: WaitConfig::default() }
    }

    /// A new, clear event in an anonymous segment.
    pub fn new() -> Result<Self> {
        Shared::anonymous(()).map(Self::from_state)
    }

    /// A new, clear event in the named segment `name`.
    pub fn create(name: &str) -> Result<Self> {
        Shared::create(name, ()).map(Self::from_state)
    }

    /// Opens the event in the named segment `name`.
    pub fn open(name: &str) -> Result<Self> {
        Shared::open(name).map(Self::from_state)
    }

    super::wait_strategy_accessors!();

    /// Whether the flag is set.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the flag holds neither state.
    pub fn is_set(&self) -> Result<bool> {
        self.state.read()
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        // SeqCst RMW: see `sleep_counted`.
        self.state.flag.swap(SET, Ordering::SeqCst);
        wake_counted(&self.state.flag, &self.state.sleepers, u32::MAX);
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.state.flag.store(CLEAR, Ordering::Relaxed);
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<()> {
        self.wait_until(None).map(|_| ())
    }

    /// Waits at most `timeout` for the flag; `Ok(false)` if it stayed clear.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_until(Some(Deadline::after(timeout)))
    }

    fn wait_until(&self, deadline: Option<Deadline>) -> Result<bool> {
        struct Target<'a>(&'a EventState);
        impl WaitTarget for Target<'_> {
            type Output = Result<()>;
            fn attempt(&mut self, _probe: bool) -> Option<Result<()>> {
                match self.0.read() {
                    Ok(false) => None,
                    Ok(true) => Some(Ok(())),
                    Err(e) => Some(Err(e)),
                }
            }
            fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
                sleep_counted(&self.0.flag, &self.0.sleepers, CLEAR, until)
            }
        }
        match wait::wait(&self.wait, deadline, &mut Target(&self.state)) {
            Some(r) => r.map(|()| true),
            None => Ok(false),
        }
    }
}

super::passable!(Event);
