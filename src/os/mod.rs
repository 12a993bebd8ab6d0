//! The operating-system contract: the only module that calls the kernel.
//!
//! Everything above this layer (segments, sync primitives, rings) calls the
//! functions re-exported here and never `libc` or `rustix` directly. One file per
//! platform sits behind `#[cfg]`; today that is Linux only (`linux.rs`), because
//! the crate is built on Linux futexes, memfds and `/proc`.
//!
//! The contract, in short:
//! - **futex**: [`futex_wait`] / [`futex_wake`] on an `AtomicU32` that may live in
//!   memory shared between processes (never `FUTEX_PRIVATE_FLAG`), with absolute
//!   monotonic [`Deadline`]s and `EINTR` retried inside;
//! - **memory**: anonymous memfds sealed against shrinking, named POSIX shared
//!   memory (`O_CREAT|O_EXCL`, mode 0600), `MAP_SHARED` mappings pre-faulted;
//! - **identity and liveness**: the calling thread's id and start time (cached
//!   per thread and renewed after `fork`), and whether a thread or process that
//!   once had an id is still the same live task.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("shmproc needs Linux: futexes, memfd and /proc are its foundation");
