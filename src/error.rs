//! The crate's error type.

use std::fmt;
use std::io;
use std::time::Duration;

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in shmproc.
///
/// Open errors name what was expected and what was found; only [`Error::Io`]
/// carries a raw OS error. Operations that hand a value back on failure (a
/// guard whose previous owner died, a value that did not fit) use their own
/// error types that carry the value, such as [`LockError::OwnerDied`](crate::LockError::OwnerDied).
///
/// # Examples
///
/// ```
/// use shmproc::{Error, Lock};
///
/// let err = Lock::open("shmproc-doc-no-such-lock").unwrap_err();
/// assert!(matches!(err, Error::NotFound { .. }));
/// assert!(err.to_string().contains("shmproc-doc-no-such-lock"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    Io {
        /// What we were doing.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// No segment of that name exists.
    NotFound {
        /// The name looked up.
        name: String,
    },
    /// A segment of that name already exists (`create` never reuses one).
    AlreadyExists {
        /// The name asked for.
        name: String,
    },
    /// A segment name was rejected before any system call.
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A segment's header, or its size, is not what the opener expected.
    Mismatch {
        /// Which field differs (`"magic"`, `"kind"`, `"segment length"`, ...).
        field: &'static str,
        /// What the opener expected.
        expected: String,
        /// What the segment holds.
        found: String,
    },
    /// A segment's creator had not finished initialising it within the bound.
    NotReady {
        /// How long the opener waited.
        waited: Duration,
        /// The creator's pid as the header records it (0 if not yet written).
        creator_pid: u32,
    },
    /// State read from shared memory is impossible: a peer wrote garbage, or
    /// died in the middle of a write that cannot be recovered.
    Corrupt {
        /// Which structure.
        what: &'static str,
        /// What was found.
        detail: String,
    },
    /// A timed operation ran out of time.
    Timeout,
    /// A non-blocking operation could not complete at once.
    WouldBlock,
    /// A lock's previous owner died holding it (see [`LockError::OwnerDied`](crate::LockError::OwnerDied)).
    OwnerDied,
    /// The barrier is broken (a party timed out, aborted, or reset it).
    BrokenBarrier,
    /// A lock was released, or a condition used, by a thread that does not own
    /// the lock.
    NotOwner,
    /// A bounded semaphore was released more times than it was acquired.
    OverRelease {
        /// The semaphore's bound.
        bound: u32,
    },
    /// A count would leave its range (a recursion depth, a semaphore value).
    Overflow {
        /// Which count.
        what: &'static str,
    },
    /// A value could not be encoded, or bytes could not be decoded, as the
    /// expected type (process arguments and results, messages).
    Codec {
        /// What failed, and why.
        detail: String,
    },
    /// A child process failed: it panicked, was killed by a signal, or exited
    /// without reporting a result.
    ChildFailed {
        /// What happened, e.g. `"panicked: boom"` or `"killed by signal 9 (SIGKILL)"`.
        reason: String,
        /// Python's `exitcode`: the exit status, or minus the signal number.
        exitcode: Option<i32>,
    },
    /// A pool task has no result: it panicked (with its message), its
    /// worker process died while running it (naming how), or the pool was
    /// terminated or broken before it finished.
    TaskFailed {
        /// What happened, e.g. `"the task panicked: boom"`.
        reason: String,
    },
    /// A manager's server refused a request: a malformed one, an unknown
    /// object, an index out of range (its reason).
    Manager {
        /// What the server said.
        reason: String,
    },
    /// The queue (or connection) is closed.
    Closed,
    /// A message can never fit: its encoded size, and the most the queue takes.
    TooLarge {
        /// Encoded bytes of the message.
        size: usize,
        /// The largest message the queue can hold, in bytes.
        limit: usize,
    },
    /// A buffer too short for the message that was to be read into it
    /// (`Connection::recv_bytes_into`; Python's `BufferTooShort`). The message
    /// stays for the next read.
    BufferTooShort {
        /// Bytes the message needs.
        needed: usize,
        /// Bytes the buffer had.
        got: usize,
    },
    /// A named connection's authentication failed (Python's
    /// `AuthenticationError`): a wrong or missing authkey on either side.
    Authentication {
        /// What went wrong.
        detail: &'static str,
    },
    /// A typecode that is none of Python's (`c b B h H i I l L q Q f d u`).
    UnknownTypecode {
        /// What was given.
        found: String,
    },
    /// An argument is out of its range.
    InvalidArgument {
        /// What is wrong.
        what: &'static str,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        Error::Io { op, source }
    }

    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Corrupt { what, detail: detail.into() }
    }

    pub(crate) fn mismatch(field: &'static str, expected: impl fmt::Display, found: impl fmt::Display) -> Self {
        Error::Mismatch { field, expected: expected.to_string(), found: found.to_string() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, source } => write!(f, "{op} failed: {source}"),
            Error::NotFound { name } => write!(f, "no shared segment named {name:?}"),
            Error::AlreadyExists { name } => write!(f, "a shared segment named {name:?} already exists"),
            Error::InvalidName { name, reason } => write!(f, "invalid segment name {name:?}: {reason}"),
            Error::Mismatch { field, expected, found } => {
                write!(f, "segment {field} mismatch: expected {expected}, found {found}")
            }
            Error::NotReady { waited, creator_pid } => {
                write!(f, "segment still initialising after {waited:?} (creator pid {creator_pid})")
            }
            Error::Corrupt { what, detail } => write!(f, "corrupt shared state in {what}: {detail}"),
            Error::Timeout => f.write_str("timed out"),
            Error::WouldBlock => f.write_str("the operation would block"),
            Error::OwnerDied => f.write_str("the lock's previous owner died holding it"),
            Error::BrokenBarrier => f.write_str("the barrier is broken"),
            Error::NotOwner => f.write_str("the calling thread does not own the lock"),
            Error::OverRelease { bound } => {
                write!(f, "bounded semaphore released above its bound of {bound}")
            }
            Error::Overflow { what } => write!(f, "{what} overflowed"),
            Error::InvalidArgument { what } => write!(f, "invalid argument: {what}"),
            Error::Closed => f.write_str("closed"),
            Error::TooLarge { size, limit } => {
                write!(f, "a message of {size} bytes does not fit: the queue holds messages of at most {limit} bytes")
            }
            Error::Authentication { detail } => write!(f, "authentication failed: {detail}"),
            Error::BufferTooShort { needed, got } => {
                write!(f, "the message needs a buffer of {needed} bytes, got {got}: it was left to the next read")
            }
            Error::UnknownTypecode { found } => {
                write!(f, "unknown typecode {found:?}: expected one of c b B h H i I l L q Q f d u")
            }
            Error::Codec { detail } => write!(f, "codec error: {detail}"),
            Error::ChildFailed { reason, .. } => write!(f, "child process failed: {reason}"),
            Error::TaskFailed { reason } => write!(f, "pool task failed: {reason}"),
            Error::Manager { reason } => write!(f, "the manager refused the request: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
