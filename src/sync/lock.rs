//! [`Lock`]: a non-recursive cross-process mutex that survives its owner's death.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::owner::OwnerLock;
use super::wait::WaitConfig;
use super::{LockError, LockResult, acquired, wait_strategy_accessors};
use crate::error::{Error, Result};
use crate::loom;
use crate::os::{Deadline, TaskId};
use crate::segment::{Kind, Shared, SharedState};

#[repr(C)]
#[derive(Debug)]
pub(crate) struct LockState {
    pub(crate) lock: OwnerLock,
}

// SAFETY: repr(C), atomics only (OwnerLock is repr(C) atomics), align 8, no
// pointers; every word value is interpreted (see owner.rs).
unsafe impl SharedState for LockState {
    const KIND: Kind = Kind::Lock;
    type Params = ();
    fn zeroed() -> Self {
        LockState { lock: OwnerLock::zeroed() }
    }
    fn init(&self, (): ()) {}
}

/// A cross-process mutual-exclusion lock (Python's `multiprocessing.Lock`).
///
/// Owned by the thread that acquired it; released when its [`LockGuard`] drops.
/// Not recursive: a thread that locks it twice waits for itself, as in Python
/// (use [`RLock`](crate::RLock)). If the owner dies holding it (even by
/// `SIGKILL`), the next acquirer gets the lock within about 20–40 ms, told so by
/// [`LockError::OwnerDied`].
///
/// # Examples
///
/// ```
/// use shmproc::Lock;
///
/// let lock = Lock::new()?;
/// {
///     let _guard = lock.lock()?;
///     assert!(lock.is_locked());
///     assert!(lock.try_lock().is_err());
/// }
/// assert!(!lock.is_locked());
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    pub(crate) state: Shared<LockState>,
    wait: WaitConfig,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("segment", &self.state)
            .field("owner", &self.state.lock.owner())
            .finish_non_exhaustive()
    }
}

impl Lock {
    fn from_state(state: Shared<LockState>) -> Self {
        Lock { state, wait: WaitConfig::default() }
    }

    /// A new unlocked lock in an anonymous segment (shared with forked children).
    pub fn new() -> Result<Self> {
        Shared::anonymous(()).map(Self::from_state)
    }

    /// A new unlocked lock in the named segment `name`, which must not exist.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = shmproc::Lock::create("shmproc-doc-lock")?;
    /// let b = shmproc::Lock::open("shmproc-doc-lock")?; // e.g. in an unrelated process
    /// let _g = b.lock()?;
    /// assert!(a.is_locked());
    /// # Ok::<(), shmproc::Error>(())
    /// ```
    pub fn create(name: &str) -> Result<Self> {
        Shared::create(name, ()).map(Self::from_state)
    }

    /// Opens the lock in the named segment `name`.
    pub fn open(name: &str) -> Result<Self> {
        Shared::open(name).map(Self::from_state)
    }

    wait_strategy_accessors!();

    /// Acquires the lock, waiting as long as it takes.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] (with the guard) if the previous owner died
    /// holding the lock.
    #[inline]
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        self.lock_until(None).map_err(|e| match e {
            LockError::Failed(_) => unreachable!("an untimed lock cannot time out"),
            died @ LockError::OwnerDied(_) => died,
        })
    }

    /// Acquires the lock if it is free now.
    ///
    /// # Errors
    /// `Failed(Error::WouldBlock)` if another thread holds it;
    /// [`LockError::OwnerDied`] as for [`Lock::lock`].
    pub fn try_lock(&self) -> LockResult<LockGuard<'_>> {
        let me = loom::current_task();
        match self.state.lock.try_lock(me) {
            Some(outcome) => acquired(outcome, LockGuard::new(self, me)),
            None => Err(LockError::Failed(Error::WouldBlock)),
        }
    }

    /// Acquires the lock, waiting at most `timeout`.
    ///
    /// # Errors
    /// `Failed(Error::Timeout)` if the time ran out; [`LockError::OwnerDied`] as
    /// for [`Lock::lock`].
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<LockGuard<'_>> {
        self.lock_until(Some(Deadline::after(timeout)))
    }

    #[inline]
    pub(crate) fn lock_until(&self, deadline: Option<Deadline>) -> LockResult<LockGuard<'_>> {
        let me = loom::current_task();
        match self.state.lock.lock(me, &self.wait, deadline) {
            Some(outcome) => acquired(outcome, LockGuard::new(self, me)),
            None => Err(LockError::Failed(Error::Timeout)),
        }
    }

    /// Whether some thread holds the lock (a snapshot: it may change at once).
    pub fn is_locked(&self) -> bool {
        self.state.lock.owner() != 0
    }

    /// Whether the calling thread holds the lock.
    pub fn is_owned_by_current_thread(&self) -> bool {
        self.state.lock.is_owned_by(loom::current_task())
    }
}

/// Holds a [`Lock`]; releases it on drop. Not `Send`: the lock belongs to the
/// thread that took it.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    me: TaskId,
    _not_send: PhantomData<*const ()>,
}

impl<'a> LockGuard<'a> {
    #[inline]
    fn new(lock: &'a Lock, me: TaskId) -> Self {
        LockGuard { lock, me, _not_send: PhantomData }
    }

    /// The lock this guard holds.
    pub fn lock(&self) -> &'a Lock {
        self.lock
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").field("owner", &self.me.tid).finish()
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // `false` only if a peer scribbled over the word: nothing to release.
        let _ = self.lock.state.lock.unlock(self.me);
    }
}

super::passable!(Lock);
