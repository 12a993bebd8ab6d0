//! Cross-process synchronisation primitives on futex words.
//!
//! Each primitive's state lives in the payload of its own [`Segment`](crate::Segment)
//! (or on the heap, for loom), is made only of atomics, and is reached through a
//! cheap `Clone + Send + Sync` handle. Every blocking call goes through the one
//! wait loop in `wait.rs` (spin, yield, futex; see [`WaitStrategy`]).
//!
//! | Python | here | owner death |
//! |---|---|---|
//! | `Lock` | [`Lock`] | next acquirer takes it within ~20–40 ms, told [`LockError::OwnerDied`] |
//! | `RLock` | [`RLock`] | same |
//! | `Semaphore`, `BoundedSemaphore` | [`Semaphore`], [`BoundedSemaphore`] | a dead holder's slot stays taken (as in Python) |
//! | `Event` | [`Event`] | nothing held |
//! | `Condition` | [`Condition`] | as its lock; a waiter killed while waiting may absorb one `notify` |
//! | `Barrier` | [`Barrier`] | a party that never arrives breaks the barrier for timed waiters |

mod barrier;
mod condition;
mod event;
mod lock;
pub(crate) mod owner;
mod rlock;
mod semaphore;
pub(crate) mod wait;

use std::fmt;

pub use barrier::Barrier;
pub use condition::{CondLock, Condition, ConditionGuard};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub(crate) use rlock::RLockState;
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore};
pub use wait::WaitStrategy;

use crate::error::Error;

/// Why a lock acquisition did not simply succeed.
///
/// [`OwnerDied`](LockError::OwnerDied) carries the guard: the caller holds the
/// lock, but the previous owner died inside its critical section, so the data it
/// guards may be half-updated. Converting into [`Error`] (for `?`) drops the
/// guard and so releases the lock.
///
/// # Examples
///
/// ```
/// use shmproc::{Lock, LockError};
///
/// let lock = Lock::new()?;
/// let guard = match lock.lock() {
///     Ok(g) => g,
///     Err(LockError::OwnerDied(g)) => g, // repair the guarded data here
///     Err(LockError::Failed(e)) => return Err(e),
/// };
/// drop(guard);
/// # Ok::<(), shmproc::Error>(())
/// ```
pub enum LockError<G> {
    /// Acquired, but the previous owner died holding the lock.
    OwnerDied(G),
    /// Not acquired: [`Error::WouldBlock`], [`Error::Timeout`],
    /// [`Error::Corrupt`] or [`Error::Overflow`].
    Failed(Error),
}

/// The result of acquiring a lock.
pub type LockResult<G> = Result<G, LockError<G>>;

impl<G> LockError<G> {
    /// Converts the guard an [`OwnerDied`](LockError::OwnerDied) carries.
    pub fn map<H>(self, f: impl FnOnce(G) -> H) -> LockError<H> {
        match self {
            LockError::OwnerDied(g) => LockError::OwnerDied(f(g)),
            LockError::Failed(e) => LockError::Failed(e),
        }
    }

    /// The guard, when the lock was acquired (owner died).
    pub fn into_guard(self) -> Option<G> {
        match self {
            LockError::OwnerDied(g) => Some(g),
            LockError::Failed(_) => None,
        }
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => Error::OwnerDied.fmt(f),
            LockError::Failed(e) => e.fmt(f),
        }
    }
}

impl<G> std::error::Error for LockError<G> {}

impl<G> From<LockError<G>> for Error {
    fn from(e: LockError<G>) -> Error {
        match e {
            LockError::OwnerDied(_) => Error::OwnerDied,
            LockError::Failed(e) => e,
        }
    }
}

/// Maps an [`owner::Acquired`] outcome to a [`LockResult`].
#[inline]
fn acquired<G>(outcome: owner::Acquired, guard: G) -> LockResult<G> {
    match outcome {
        owner::Acquired::Clean => Ok(guard),
        owner::Acquired::OwnerDied => Err(LockError::OwnerDied(guard)),
    }
}

/// Adds the wait-strategy accessors shared by every primitive's handle.
macro_rules! wait_strategy_accessors {
    () => {
        /// Sets how this handle's blocking calls wait (other handles, and other
        /// processes, keep their own), builder-style.
        #[must_use]
        pub fn with_wait_strategy(self, strategy: $crate::WaitStrategy) -> Self {
            self.wait.set_strategy(strategy);
            self
        }

        /// Sets how this handle's blocking calls wait.
        pub fn set_wait_strategy(&self, strategy: $crate::WaitStrategy) {
            self.wait.set_strategy(strategy);
        }

        /// How this handle's blocking calls wait.
        pub fn wait_strategy(&self) -> $crate::WaitStrategy {
            self.wait.strategy()
        }

        /// The name of the segment holding this object (`None` if anonymous).
        pub fn name(&self) -> Option<&str> {
            self.state.segment().and_then($crate::Segment::name)
        }
    };
}
pub(crate) use wait_strategy_accessors;

/// Makes a handle passable to other processes: it serialises as a reference to
/// its segment (see `segment/passing.rs`) and deserialises into a handle on the
/// same object, with the default wait strategy.
macro_rules! passable {
    ($ty:ident) => {
        impl serde::Serialize for $ty {
            fn serialize<Z: serde::Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
                self.state.serialize(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::segment::Shared::deserialize(d).map($ty::from_state)
            }
        }
    };
}
pub(crate) use passable;

#[cfg(test)]
mod tests {
    use super::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};

    fn shareable<T: Clone + Send + Sync + 'static>() {}

    #[test]
    fn every_handle_is_clone_send_sync() {
        shareable::<Lock>();
        shareable::<RLock>();
        shareable::<Semaphore>();
        shareable::<BoundedSemaphore>();
        shareable::<Event>();
        shareable::<Condition>();
        shareable::<Barrier>();
    }
}
