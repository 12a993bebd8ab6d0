//! Python's `multiprocessing`, rebuilt for Rust on shared memory.
//!
//! Every shmproc object lives in an mmap'd [`Segment`] and is guarded by futex
//! words, so that processes coordinate without sockets, pipes or pickles. An
//! object made with `new()` lives in an anonymous memfd that forked children
//! share; one made with `create(name)` can be opened by name from any process of
//! the same user with `open(name)`.
//!
//! ```
//! use shmproc::{Event, Lock};
//!
//! let lock = Lock::new()?;
//! let ready = Event::new()?;
//! {
//!     let _guard = lock.lock()?;
//!     ready.set();
//! }
//! assert!(ready.is_set()?);
//! # Ok::<(), shmproc::Error>(())
//! ```
//!
//! # A tour of the layers
//!
//! Dependencies point down only:
//!
//! | layer | what it holds |
//! |---|---|
//! | `channel` | [`Queue`], [`SpscQueue`], [`ObjectQueue`], [`JoinableQueue`]: bounded queues between processes, blocking, timed and non-blocking, with `close` |
//! | `ring` | the lock-free rings under the queues (SPSC; MPMC with stamped slots that survive a dying peer) |
//! | `array` | [`Array`], [`Value`], [`DynArray`]: ctypes-typecoded shared arrays with atomic elements and a lock in the same segment (layout readable from Python) |
//! | `sync` | [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`], [`Event`], [`Condition`], [`Barrier`], and the one wait loop ([`WaitStrategy`]) |
//! | `segment` | [`Segment`]: mapped shared memory with a validated header; [`cleanup`] of dead creators' segments |
//! | `os` | the only code that calls the kernel: futex, memfd, `shm_open`, `mmap`, thread identity and liveness |
//!
//! `crate::loom` is the one place that imports atomics, so the same algorithms
//! also build against the loom model checker (`RUSTFLAGS="--cfg loom"`).
//!
//! # Trust
//!
//! Shared memory is a trust boundary: any process that maps a segment can write
//! anything into it. Nothing read from a segment is trusted: a peer's garbage
//! gives [`Error::Corrupt`] or in-bounds wrong data, never out-of-bounds access, a
//! panic, or a wait past its timeout. A lock whose owner dies is taken over by
//! the next acquirer, who is told so ([`LockError::OwnerDied`]).

#![deny(unsafe_op_in_unsafe_fn)]
// The loom build compiles only the algorithms loom checks; the process layer
// and the helpers only it uses are left out there.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

#[cfg(not(loom))]
pub mod array;
#[cfg(not(loom))]
pub mod channel;
mod codec;
mod error;
#[cfg(not(loom))]
#[doc(hidden)]
pub mod fuzzing;
mod loom;
#[cfg(not(loom))]
pub mod manager;
mod os;
#[cfg(not(loom))]
pub mod pool;
#[cfg(not(loom))]
pub mod process;
// Public under loom only, for the models in tests/loom_ring.rs.
#[cfg(loom)]
#[doc(hidden)]
pub mod ring;
#[cfg(not(loom))]
mod ring;
pub mod segment;
pub mod sync;

#[cfg(not(loom))]
pub use array::{
    Array, ArrayBuilder, ArrayGuard, DATA_OFFSET, DynArray, Element, Integer, Scalar, Typecode, Value, ValueGuard,
};
#[cfg(not(loom))]
pub use channel::{
    Connection, GetError, JoinableQueue, Listener, MessageWriter, ObjectQueue, PutError, Queue, Received, SpscQueue,
    client, client_timeout, pipe, pipe_simplex, pipe_with_capacity,
};
pub use codec::Bytes;
pub use error::{Error, Result};
#[cfg(not(loom))]
pub use manager::{Manager, ManagerBuilder, Namespace, SharedDict, SharedList};
#[cfg(not(loom))]
pub use pool::{AsCompleted, AsyncResult, Future, IMap, IMapUnordered, Pool, PoolBuilder, as_completed};
#[cfg(not(loom))]
pub use process::{
    Builder, Context, Process, ProcessInfo, StartMethod, active_children, cpu_count, current_process, get_context,
    get_start_method, parent_process, set_start_method,
};
pub use segment::{CleanupReport, Segment, cleanup};
pub use sync::{
    Barrier, BoundedSemaphore, CondLock, Condition, ConditionGuard, Event, Lock, LockError, LockGuard, LockResult,
    RLock, RLockGuard, Semaphore, WaitStrategy,
};
