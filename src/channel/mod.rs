//! Queues between processes: Python's `Queue`, `SimpleQueue` and
//! `JoinableQueue`, on the rings of `ring/`.
//!
//! | Python | here | ring | elements |
//! |---|---|---|---|
//! | `SimpleQueue` (one producer, one consumer) | [`SpscQueue<T>`] | SPSC | `T: Pod`, fixed size |
//! | `Queue` | [`Queue<T>`] | MPMC, stamped slots | `T: Pod`, fixed size |
//! | `Queue` | [`ObjectQueue<T>`] | byte records, a producer lock and a consumer lock | any serde type, any size up to the ring |
//! | `JoinableQueue` | [`JoinableQueue<T>`] | as `ObjectQueue`, plus a task count | any serde type |
//!
//! Every queue has `new(capacity)`, `create(name, capacity)` and `open(name)`;
//! blocking, timed and non-blocking `put`/`get`; `len`, `is_empty`, `is_full`,
//! `capacity`; and `close`, which wakes every waiter: later puts fail with
//! [`PutError::Closed`] (handing the value back), gets drain what is left and
//! then fail with [`GetError::Closed`]. Order is FIFO per producer.
//!
//! Blocking follows SPEC §5 through the crate's one wait loop; the hand-off
//! between a publisher and a sleeper is `ring::Side`'s protocol: no
//! lost wake-up, and no system call on the fast path when nobody sleeps.

mod fixed;
pub(crate) mod listener;
pub(crate) mod object;
mod pipe;

use std::fmt;

pub use fixed::{Queue, SpscQueue};
pub use listener::{Listener, client, client_timeout};
pub use object::{JoinableQueue, ObjectQueue};
pub use pipe::{
    Connection, DEFAULT_CAPACITY as PIPE_CAPACITY, MessageWriter, Received, pipe, pipe_simplex, pipe_with_capacity,
};

use crate::error::Error;
use crate::loom::{AtomicU32, Ordering};
use crate::os::{Deadline, FutexWait};
use crate::ring::{FencedWaiter, Side};
use crate::sync::WaitStrategy;
use crate::sync::wait::WaitConfig;

/// Why a put did not happen. Every variant hands the value back.
pub enum PutError<T> {
    /// The queue is full (non-blocking put).
    Full(T),
    /// The queue stayed full until the deadline (timed put).
    Timeout(T),
    /// The queue is closed.
    Closed(T),
    /// The queue's shared state is corrupt, or the value could not be encoded.
    Failed(T, Box<Error>),
}

impl<T> PutError<T> {
    /// The value that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(v) | PutError::Timeout(v) | PutError::Closed(v) | PutError::Failed(v, _) => v,
        }
    }

    /// The same error, carrying `v` instead.
    pub(crate) fn carrying<U>(self, v: U) -> PutError<U> {
        match self {
            PutError::Full(_) => PutError::Full(v),
            PutError::Timeout(_) => PutError::Timeout(v),
            PutError::Closed(_) => PutError::Closed(v),
            PutError::Failed(_, e) => PutError::Failed(v, e),
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Timeout(_) => f.write_str("Timeout(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Failed(_, e) => f.debug_tuple("Failed").field(&"..").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("the queue is full"),
            PutError::Timeout(_) => f.write_str("timed out waiting for room in the queue"),
            PutError::Closed(_) => f.write_str("the queue is closed"),
            PutError::Failed(_, e) => e.fmt(f),
        }
    }
}

impl<T> std::error::Error for PutError<T> {}

impl<T> From<PutError<T>> for Error {
    fn from(e: PutError<T>) -> Error {
        match e {
            PutError::Full(_) => Error::WouldBlock,
            PutError::Timeout(_) => Error::Timeout,
            PutError::Closed(_) => Error::Closed,
            PutError::Failed(_, e) => *e,
        }
    }
}

/// Why a get returned nothing.
#[derive(Debug)]
pub enum GetError {
    /// The queue is empty (non-blocking get).
    Empty,
    /// The queue stayed empty until the deadline (timed get).
    Timeout,
    /// The queue is closed and drained.
    Closed,
    /// The queue's shared state is corrupt, or a message could not be decoded.
    Failed(Box<Error>),
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Empty => f.write_str("the queue is empty"),
            GetError::Timeout => f.write_str("timed out waiting for an item"),
            GetError::Closed => f.write_str("the queue is closed and empty"),
            GetError::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for GetError {}

impl From<GetError> for Error {
    fn from(e: GetError) -> Error {
        match e {
            GetError::Empty => Error::WouldBlock,
            GetError::Timeout => Error::Timeout,
            GetError::Closed => Error::Closed,
            GetError::Failed(e) => *e,
        }
    }
}

/// What every queue shares beside its ring: the closed flag and the two sides
/// that waiters sleep on. One cache line.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// 0 open; anything else closed (a peer's garbage closes the queue, which
    /// every operation survives).
    closed: AtomicU32,
    /// Consumers wait here for an element.
    not_empty: Side,
    /// Producers wait here for room.
    not_full: Side,
}

impl Control {
    /// Whether the queue is closed. `Acquire`: pairs with `close`, so a get
    /// that sees it also sees every put that finished before the close.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) != 0
    }

    /// Closes the queue and wakes every waiter on both sides.
    pub(crate) fn close(&self) {
        self.closed.store(1, Ordering::Release);
        self.not_empty.notify(u32::MAX);
        self.not_full.notify(u32::MAX);
    }

    /// Sleeps on `not_empty` (a consumer), as a fenced waiter if the handle
    /// waits by [`WaitStrategy::Block`] (see `ring::Side`).
    pub(crate) fn sleep_not_empty(
        &self,
        handle: &Waiters,
        until: Option<Deadline>,
        ready: impl FnOnce() -> bool,
    ) -> FutexWait {
        self.not_empty.sleep_as(handle.fenced(&handle.not_empty), until, ready)
    }

    /// Sleeps on `not_full` (a producer), as [`Control::sleep_not_empty`].
    pub(crate) fn sleep_not_full(
        &self,
        handle: &Waiters,
        until: Option<Deadline>,
        ready: impl FnOnce() -> bool,
    ) -> FutexWait {
        self.not_full.sleep_as(handle.fenced(&handle.not_full), until, ready)
    }

    /// Takes back `handle`'s fenced-waiter registrations (when it drops).
    pub(crate) fn unregister(&self, handle: &Waiters) {
        self.not_empty.unregister(&handle.not_empty);
        self.not_full.unregister(&handle.not_full);
    }
}

/// How a queue handle waits: its [`WaitConfig`], and its registrations as a
/// fenced waiter on the queue's two sides (`ring::Side`: a handle that
/// sleeps at once, by [`WaitStrategy::Block`], asks wakers to fence instead
/// of paying a membarrier per sleep). Process-local; a clone starts with
/// the same strategy and no registrations.
#[derive(Debug, Default, Clone)]
pub(crate) struct Waiters {
    pub(crate) cfg: WaitConfig,
    not_empty: FencedWaiter,
    not_full: FencedWaiter,
}

impl Waiters {
    pub(crate) fn strategy(&self) -> WaitStrategy {
        self.cfg.strategy()
    }

    pub(crate) fn set_strategy(&self, s: WaitStrategy) {
        self.cfg.set_strategy(s);
    }

    fn fenced<'a>(&self, side: &'a FencedWaiter) -> Option<&'a FencedWaiter> {
        (self.cfg.strategy() == WaitStrategy::Block).then_some(side)
    }
}

/// A fingerprint of the element type `T`, written in the header by the creator
/// and checked by every opener: FNV-1a of the type's name, size and alignment.
/// (The name is what `std::any::type_name` gives; programs built from the same
/// source agree on it.)
pub(crate) fn type_fingerprint<T>() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let name = std::any::type_name::<T>().as_bytes();
    let sizes = [size_of::<T>() as u64, align_of::<T>() as u64];
    for b in name.iter().copied().chain(sizes.iter().flat_map(|s| s.to_le_bytes())) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Never 0: fingerprint 0 means "untyped" in the header.
    h | 1
}

/// Checks a queue segment's element-type fingerprint `found` against `T`'s.
pub(crate) fn check_type<T>(found: u64) -> crate::error::Result<()> {
    if found == type_fingerprint::<T>() {
        return Ok(());
    }
    Err(Error::mismatch(
        "element type",
        format!("{} (fingerprint {:#x})", std::any::type_name::<T>(), type_fingerprint::<T>()),
        format!("fingerprint {found:#x}"),
    ))
}
