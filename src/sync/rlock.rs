//! [`RLock`]: a recursive cross-process lock owned by (process, thread).

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::owner::{Acquired, OwnerLock};
use super::wait::WaitConfig;
use super::{LockError, LockResult, acquired, wait_strategy_accessors};
use crate::error::{Error, Result};
use crate::loom::{self, AtomicU32, Ordering};
use crate::os::{Deadline, TaskId};
use crate::segment::{Kind, Shared, SharedState};

#[repr(C)]
#[derive(Debug)]
pub(crate) struct RLockState {
    lock: OwnerLock,
    /// Recursion depth, `1..=u32::MAX` while held. Only the owner reads or
    /// writes it (`Relaxed`: the lock word's Acquire/Release orders it), so
    /// a peer's garbage is the only way to find it out of range while we own
    /// the lock; that is reported as [`Error::Corrupt`].
    depth: AtomicU32,
}

// SAFETY: repr(C), atomics only, no pointers; every value is checked (above).
unsafe impl SharedState for RLockState {
    const KIND: Kind = Kind::RLock;
    type Params = ();
    fn zeroed() -> Self {
        RLockState { lock: OwnerLock::zeroed(), depth: AtomicU32::new(0) }
    }
    fn init(&self, (): ()) {}
}

/// A recursive cross-process lock (Python's `multiprocessing.RLock`).
///
/// Owned by the (process, thread) that acquired it; that thread may acquire it
/// again and must release it as many times. Released by dropping guards, or
/// Python-style with [`RLock::acquire`] / [`RLock::release`]; a release by a
/// thread that does not own it is [`Error::NotOwner`]. Owner death is handled
/// as for [`Lock`](crate::Lock).
///
/// # Examples
///
/// ```
/// use shmproc::RLock;
///
/// let r = RLock::new()?;
/// let a = r.lock()?;
/// let b = r.lock()?; // the same thread: no deadlock
/// assert_eq!(r.depth(), 2);
/// drop((b, a));
/// assert!(r.release().is_err()); // not held any more
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    pub(crate) state: Shared<RLockState>,
    wait: WaitConfig,
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("segment", &self.state)
            .field("owner", &self.state.lock.owner())
            .finish_non_exhaustive()
    }
}

impl RLock {
    pub(crate) fn from_state(state: Shared<RLockState>) -> Self {
        RLock { state, wait: WaitConfig::default() }
    }

    /// A new unlocked recursive lock in an anonymous segment.
    pub fn new() -> Result<Self> {
        Shared::anonymous(()).map(Self::from_state)
    }

    /// A new unlocked recursive lock in the named segment `name`.
    pub fn create(name: &str) -> Result<Self> {
        Shared::create(name, ()).map(Self::from_state)
    }

    /// Opens the recursive lock in the named segment `name`.
    pub fn open(name: &str) -> Result<Self> {
        Shared::open(name).map(Self::from_state)
    }

    wait_strategy_accessors!();

    /// Acquires (or re-enters) the lock, waiting as long as it takes.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] with the guard if the previous owner died
    /// holding it; `Failed(Corrupt)` if the depth read from the segment is
    /// impossible; `Failed(Overflow)` past `u32::MAX` levels.
    #[inline]
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        self.lock_until(None)
    }

    /// Acquires (or re-enters) the lock only if that needs no waiting.
    pub fn try_lock(&self) -> LockResult<RLockGuard<'_>> {
        self.enter(|me| self.state.lock.try_lock(me).ok_or(Error::WouldBlock))
    }

    /// Acquires (or re-enters) the lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<RLockGuard<'_>> {
        self.lock_until(Some(Deadline::after(timeout)))
    }

    #[inline]
    pub(crate) fn lock_until(&self, deadline: Option<Deadline>) -> LockResult<RLockGuard<'_>> {
        // Fast path: free and uncontended (so not ours either: no recursion).
        let me = loom::current_task();
        if self.state.lock.lock_fast(me) {
            self.state.depth.store(1, Ordering::Relaxed);
            return Ok(RLockGuard { rlock: self, me, _not_send: PhantomData });
        }
        self.lock_until_slow(deadline)
    }

    #[cold]
    fn lock_until_slow(&self, deadline: Option<Deadline>) -> LockResult<RLockGuard<'_>> {
        self.enter(|me| self.state.lock.lock(me, &self.wait, deadline).ok_or(Error::Timeout))
    }

    fn enter(&self, acquire: impl FnOnce(TaskId) -> Result<Acquired>) -> LockResult<RLockGuard<'_>> {
        let me = loom::current_task();
        let guard = RLockGuard { rlock: self, me, _not_send: PhantomData };
        if self.state.lock.is_owned_by(me) {
            let depth = self.state.depth.load(Ordering::Relaxed);
            if depth == 0 {
                std::mem::forget(guard);
                return Err(LockError::Failed(Error::corrupt("RLock", "held by this thread at depth 0")));
            }
            let Some(next) = depth.checked_add(1) else {
                std::mem::forget(guard);
                return Err(LockError::Failed(Error::Overflow { what: "RLock recursion depth" }));
            };
            self.state.depth.store(next, Ordering::Relaxed);
            return Ok(guard);
        }
        match acquire(me) {
            Ok(outcome) => {
                self.state.depth.store(1, Ordering::Relaxed);
                acquired(outcome, guard)
            }
            Err(e) => {
                std::mem::forget(guard);
                Err(LockError::Failed(e))
            }
        }
    }

    /// Python's `acquire(block=True, timeout=None)`: `Ok(true)` once acquired
    /// (also when the previous owner died: check with a guard-based call if
    /// that matters), `Ok(false)` if `block` is false and it is taken, or the
    /// timeout ran out. Pair each success with a [`RLock::release`].
    pub fn acquire(&self, block: bool, timeout: Option<Duration>) -> Result<bool> {
        let r = if block { self.lock_until(Deadline::from_timeout(timeout)) } else { self.try_lock() };
        match r {
            Ok(g) | Err(LockError::OwnerDied(g)) => {
                std::mem::forget(g);
                Ok(true)
            }
            Err(LockError::Failed(Error::Timeout | Error::WouldBlock)) => Ok(false),
            Err(LockError::Failed(e)) => Err(e),
        }
    }

    /// Python's `release()`: leaves one level.
    ///
    /// # Errors
    /// [`Error::NotOwner`] if the calling thread does not hold the lock.
    pub fn release(&self) -> Result<()> {
        if self.leave(loom::current_task()) { Ok(()) } else { Err(Error::NotOwner) }
    }

    /// Leaves one level; `false` if `me` does not hold the lock.
    #[inline]
    fn leave(&self, me: TaskId) -> bool {
        if !self.state.lock.is_owned_by(me) {
            return false;
        }
        match self.state.depth.load(Ordering::Relaxed) {
            0 | 1 => {
                self.state.depth.store(0, Ordering::Relaxed);
                self.state.lock.unlock(me)
            }
            d => {
                self.state.depth.store(d - 1, Ordering::Relaxed);
                true
            }
        }
    }

    /// How many times the calling thread holds the lock (0 if it does not).
    pub fn depth(&self) -> u32 {
        if self.state.lock.is_owned_by(loom::current_task()) { self.state.depth.load(Ordering::Relaxed) } else { 0 }
    }

    /// Whether some thread holds the lock.
    pub fn is_locked(&self) -> bool {
        self.state.lock.owner() != 0
    }

    /// Releases every level held by the calling thread and returns how many;
    /// [`RLock::restore`] takes them back (how a `Condition` waits).
    pub(crate) fn release_all(&self, me: TaskId) -> Result<u32> {
        if !self.state.lock.is_owned_by(me) {
            return Err(Error::NotOwner);
        }
        let depth = self.state.depth.load(Ordering::Relaxed).max(1);
        self.state.depth.store(0, Ordering::Relaxed);
        self.state.lock.unlock(me);
        Ok(depth)
    }

    /// Re-acquires the lock at `depth` levels after [`RLock::release_all`].
    pub(crate) fn restore(&self, me: TaskId, depth: u32, deadline: Option<Deadline>) -> Option<Acquired> {
        let outcome = self.state.lock.lock(me, &self.wait, deadline)?;
        self.state.depth.store(depth, Ordering::Relaxed);
        Some(outcome)
    }
}

/// One level of an [`RLock`]; leaving it on drop. Not `Send`.
#[must_use = "the level is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    rlock: &'a RLock,
    me: TaskId,
    _not_send: PhantomData<*const ()>,
}

impl RLockGuard<'_> {
    /// The lock this guard holds a level of.
    pub fn rlock(&self) -> &RLock {
        self.rlock
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard").field("owner", &self.me.tid).finish()
    }
}

impl Drop for RLockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // `false` only if a peer scribbled over the word: nothing to release.
        let _ = self.rlock.leave(self.me);
    }
}

super::passable!(RLock);
