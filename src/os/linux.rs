//! Linux implementation of the OS contract (see `os/mod.rs`).

use std::cell::Cell;
use std::fs;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, Mode, SealFlags};
use rustix::io::Errno;
use rustix::thread::futex;
use rustix::time::{ClockId, Timespec};

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/// A point on `CLOCK_MONOTONIC`, the clock `FUTEX_WAIT_BITSET` measures absolute
/// timeouts against. Deadlines are absolute so that a wait interrupted by a
/// signal or a spurious wake-up resumes with the time it has left, not anew.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Deadline(Duration);

impl Deadline {
    /// The current monotonic time.
    pub(crate) fn now() -> Self {
        let ts = rustix::time::clock_gettime(ClockId::Monotonic);
        // The monotonic clock never reads negative; clamp defensively anyway.
        Deadline(Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32))
    }

    /// `timeout` from now. A timeout too large to represent saturates.
    pub(crate) fn after(timeout: Duration) -> Self {
        Self::now().later(timeout)
    }

    /// This point in nanoseconds of the monotonic clock (saturating).
    pub(crate) fn nanos(self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }

    /// `by` after this point (saturating).
    pub(crate) fn later(self, by: Duration) -> Self {
        Deadline(self.0.checked_add(by).unwrap_or(Duration::MAX))
    }

    /// `Some(now + timeout)`, or `None` (wait forever) when `timeout` is `None`.
    pub(crate) fn from_timeout(timeout: Option<Duration>) -> Option<Self> {
        timeout.map(Self::after)
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later).
    pub(crate) fn since(self, earlier: Deadline) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// Time from now to the deadline (zero once it has passed).
    pub(crate) fn left(self) -> Duration {
        self.since(Self::now())
    }

    /// Whether the deadline has passed.
    pub(crate) fn has_passed(self) -> bool {
        Self::now() >= self
    }

    fn timespec(self) -> Timespec {
        Timespec {
            tv_sec: i64::try_from(self.0.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(self.0.subsec_nanos()),
        }
    }
}

// ---------------------------------------------------------------------------
// Futex
// ---------------------------------------------------------------------------

/// How a [`futex_wait`] ended. Either way the caller re-checks its condition:
/// futex wake-ups may be spurious.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FutexWait {
    /// Woken, interrupted, or the word no longer held `expected`.
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, until woken or `deadline` passes.
///
/// Uses `FUTEX_WAIT_BITSET` with an absolute `CLOCK_MONOTONIC` deadline and
/// **without** `FUTEX_PRIVATE_FLAG`: the word may live in a segment mapped by other
/// processes, and a private futex would key the wait on this process's address
/// space so that a waker in another process could never reach it. `EINTR` is
/// retried here with the same absolute deadline.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> FutexWait {
    let timeout = deadline.map(Deadline::timespec);
    loop {
        let r = futex::wait_bitset(
            word,
            futex::Flags::empty(), // shared, not private: see above
            expected,
            timeout.as_ref(),
            NonZeroU32::MAX, // FUTEX_BITSET_MATCH_ANY
        );
        match r {
            Err(Errno::INTR) => {}
            Err(Errno::TIMEDOUT) => return FutexWait::TimedOut,
            // Ok: woken. EAGAIN: the word had already changed. Anything else
            // (EFAULT/EINVAL cannot happen for a valid &AtomicU32) is treated as
            // a spurious wake-up; the caller re-checks its condition.
            _ => return FutexWait::Woken,
        }
    }
}

/// Wakes at most `n` threads sleeping on `word`, in any process. Returns how
/// many were woken. Shared (not private) for the reason given at [`futex_wait`].
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> usize {
    // The kernel reads the count as a signed int: u32::MAX would be -1, which
    // wakes exactly one waiter. Clamp to i32::MAX ("all").
    let n = n.min(i32::MAX as u32);
    futex::wake(word, futex::Flags::empty(), n).unwrap_or(0)
}

/// Gives the CPU to another runnable thread, if any. On a CPU shared with a
/// peer this lets the peer make the progress a spinner waits for.
pub(crate) fn yield_cpu() {
    rustix::thread::sched_yield();
}

// ---------------------------------------------------------------------------
// Shared memory
// ---------------------------------------------------------------------------

fn io_err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// An anonymous memfd of `len` bytes (zero-filled), sealed against shrinking so
/// that no peer can turn our loads into `SIGBUS`. Close-on-exec.
pub(crate) fn memfd(debug_name: &str, len: u64) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(debug_name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).map_err(io_err)?;
    rustix::fs::ftruncate(&fd, len).map_err(io_err)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::SEAL).map_err(io_err)?;
    Ok(fd)
}

/// Creates the POSIX shared-memory object `/name` with `O_CREAT|O_EXCL`, mode
/// 0600, and sizes it to `len` zero bytes. `name` has been validated.
pub(crate) fn shm_create(name: &str, len: u64) -> io::Result<OwnedFd> {
    let fd = rustix::shm::open(
        format!("/{name}").as_str(),
        rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR,
        Mode::RUSR | Mode::WUSR,
    )
    .map_err(io_err)?;
    // A shared flock marks the segment as in use for `shm_in_use` while this
    // open file description lives (in this process and its forked children).
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockShared).map_err(io_err)?;
    if let Err(e) = rustix::fs::ftruncate(&fd, len) {
        let _ = shm_unlink(name);
        return Err(io_err(e));
    }
    Ok(fd)
}

/// Creates a shared-memory file of `len` zero bytes in `/dev/shm` without a
/// name (`O_TMPFILE`, mode 0600), flocked as [`shm_create`] does: its creator
/// writes the header, then gives it its name with [`shm_link`], so that a
/// creator killed before its header is written leaves no name behind that
/// no one could tell as shmproc's. `None` if the file system cannot.
pub(crate) fn shm_create_unnamed(len: u64) -> Option<OwnedFd> {
    use rustix::fs::OFlags;
    let fd =
        rustix::fs::open("/dev/shm", OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC, Mode::RUSR | Mode::WUSR).ok()?;
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockShared).ok()?;
    rustix::fs::ftruncate(&fd, len).ok()?;
    Some(fd)
}

/// Names the file made by [`shm_create_unnamed`] `/name` (`name` has been
/// validated), failing with `AlreadyExists` if the name is taken: the
/// `O_EXCL` of a named create. `linkat` with `AT_EMPTY_PATH` (which needs
/// `CAP_DAC_READ_SEARCH` on some kernels), else through `/proc/self/fd`
/// (which fails across mounts when `/dev/shm` is mounted twice).
pub(crate) fn shm_link(fd: impl AsFd, name: &str) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD};
    use std::os::fd::AsRawFd;
    let path = format!("/dev/shm/{name}");
    let first = rustix::fs::linkat(&fd, "", CWD, path.as_str(), AtFlags::EMPTY_PATH);
    match first {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => Err(io_err(rustix::io::Errno::EXIST)),
        Err(_) => {
            let proc_path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
            rustix::fs::linkat(CWD, proc_path.as_str(), CWD, path.as_str(), AtFlags::SYMLINK_FOLLOW).map_err(io_err)
        }
    }
}

/// How long opening a named segment waits for a process that holds an
/// exclusive `flock` on it ([`shm_in_use`] does, for a moment).
const OPEN_LOCK_WAIT: Duration = if cfg!(fuzzing) { Duration::from_millis(2) } else { Duration::from_secs(2) };

/// Opens `/dev/shm/name` with `flags` as a segment file: never through a
/// symbolic link (`O_NOFOLLOW`: a link planted under the name is refused,
/// as glibc's `shm_open` refuses it), close-on-exec, and only a regular file
/// owned by this process's effective user (a file another user made under
/// the name, in the world-writable `/dev/shm`, is outside the trust
/// boundary: its bytes would be a stranger's). `name` has been validated.
fn open_segment_file(name: &str, flags: rustix::fs::OFlags) -> io::Result<OwnedFd> {
    use rustix::fs::OFlags;
    let path = format!("/dev/shm/{name}");
    // O_NONBLOCK: a FIFO planted under the name would block the open until
    // a writer came (on a regular file it changes nothing).
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = rustix::fs::open(path.as_str(), flags, Mode::empty()).map_err(io_err)?;
    let st = rustix::fs::fstat(&fd).map_err(io_err)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{path} is not a regular file")));
    }
    if st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{path} belongs to user {}, not to this process's user", st.st_uid),
        ));
    }
    Ok(fd)
}

/// Opens `/dev/shm/name` read-only to look at it, taking no lock (for
/// `cleanup`, which must not wait on a file a peer keeps locked).
pub(crate) fn shm_open_to_look(name: &str) -> io::Result<OwnedFd> {
    open_segment_file(name, rustix::fs::OFlags::RDONLY)
}

/// Opens the existing POSIX shared-memory object `/name` read-write (see
/// [`open_segment_file`]) and takes the shared `flock` that marks it in use
/// (see [`shm_create`]), waiting at most [`OPEN_LOCK_WAIT`] for a process
/// holding an exclusive one: a peer that holds it for ever makes the open
/// fail, not hang.
pub(crate) fn shm_open(name: &str) -> io::Result<OwnedFd> {
    let fd = open_segment_file(name, rustix::fs::OFlags::RDWR)?;
    let deadline = Deadline::after(OPEN_LOCK_WAIT);
    loop {
        match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockShared) {
            Ok(()) => return Ok(fd),
            Err(Errno::INTR) => {}
            Err(Errno::WOULDBLOCK) if !deadline.has_passed() => std::thread::sleep(Duration::from_millis(1)),
            Err(Errno::WOULDBLOCK) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("another process has held an exclusive lock on /dev/shm/{name} for {OPEN_LOCK_WAIT:?}"),
                ));
            }
            Err(e) => return Err(io_err(e)),
        }
    }
}

/// Removes the name `/name`; mappings that exist stay valid.
pub(crate) fn shm_unlink(name: &str) -> io::Result<()> {
    rustix::shm::unlink(format!("/{name}").as_str()).map_err(io_err)
}

/// The current size of the file behind `fd`.
pub(crate) fn file_len(fd: impl AsFd) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd).map_err(io_err)?.st_size.max(0) as u64)
}

/// Maps `len` bytes of `fd` `MAP_SHARED` read-write, pre-faulted
/// (`MAP_POPULATE`): a fresh shared page costs microseconds to fault in on first
/// touch here, so segments pay that once at creation instead of on a hot path.
pub(crate) fn map_shared(fd: impl AsFd, len: usize) -> io::Result<MmapRaw> {
    use std::os::fd::AsRawFd;
    MmapOptions::new().len(len).populate().map_raw(fd.as_fd().as_raw_fd())
}

/// Maps `len` bytes of `fd` `MAP_SHARED` read-only (for a look at a header).
pub(crate) fn map_read_only(fd: impl AsFd, len: usize) -> io::Result<MmapRaw> {
    use std::os::fd::AsRawFd;
    MmapOptions::new().len(len).map_raw_read_only(fd.as_fd().as_raw_fd())
}

/// Maps `len` bytes of `fd` `MAP_SHARED` read-write, without pre-faulting:
/// pages come in as they are touched.
pub(crate) fn map_shared_lazily(fd: impl AsFd, len: usize) -> io::Result<MmapRaw> {
    use std::os::fd::AsRawFd;
    MmapOptions::new().len(len).map_raw(fd.as_fd().as_raw_fd())
}

/// The names under `/dev/shm` (the POSIX shared-memory namespace).
pub(crate) fn shm_names() -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/dev/shm")? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// Whether any process still uses `/dev/shm/name`.
///
/// Two signs count: (1) every shmproc handle holds a shared `flock` on its open
/// file description (taken in [`shm_create`] and [`shm_open`], inherited by
/// forked children), so an exclusive non-blocking `flock` fails while any
/// shmproc user lives; (2) for users that are not shmproc (Python's
/// `SharedMemory`, say), any `/proc/<pid>/maps` we can read that maps the file.
/// Processes whose maps we cannot read (even root cannot read some here) are
/// judged by the lock alone.
pub(crate) fn shm_in_use(name: &str) -> bool {
    // Every shmproc handle holds a shared flock on its open file description
    // (see `shm_create`); an exclusive non-blocking one succeeds only when no
    // process holds the segment open. Our own probe fd is a new description.
    let Ok(fd) = open_segment_file(name, rustix::fs::OFlags::RDONLY) else {
        return true;
    };
    if rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return true;
    }
    // Let go at once: held through the scan below, it would make opens
    // that come meanwhile wait (and, past their 2 s, fail).
    drop(fd);
    let path = format!("/dev/shm/{name}");
    let Ok(procs) = fs::read_dir("/proc") else { return true };
    procs.flatten().any(|p| {
        let pid = p.file_name();
        pid.to_str().is_some_and(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
            && fs::read_to_string(p.path().join("maps"))
                .is_ok_and(|maps| maps.lines().any(|l| l.split_whitespace().nth(5) == Some(path.as_str())))
    })
}

// ---------------------------------------------------------------------------
// Identity and liveness
// ---------------------------------------------------------------------------

/// Bits of a thread id in a [`TaskId::stamp`]. Linux caps pids and tids at
/// `PID_MAX_LIMIT` = 2^22.
pub(crate) const TID_BITS: u32 = 22;
/// Mask of the thread-id bits of a stamp or a lock word.
pub(crate) const TID_MASK: u32 = (1 << TID_BITS) - 1;

/// A thread (or process) as the kernel knows it: its id, and its start time in
/// clock ticks since boot, which tells a live task from a later one that reused
/// the id (this machine's `pid_max` is 32768, so ids come round quickly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskId {
    /// Thread id (`gettid`), or process id. Always `< 2^22`.
    pub(crate) tid: u32,
    /// Start time in clock ticks since boot (field 22 of `/proc/<id>/stat`).
    pub(crate) start: u64,
}

impl TaskId {
    /// Packs id and start time into one word: `start << 22 | tid`. Start times
    /// below 2^42 ticks (over a thousand years at 100 Hz) round-trip exactly.
    pub(crate) fn stamp(self) -> u64 {
        (self.start << TID_BITS) | u64::from(self.tid)
    }

    /// Inverse of [`TaskId::stamp`]; any `u64` decodes to some task.
    pub(crate) fn from_stamp(stamp: u64) -> Self {
        TaskId { tid: (stamp as u32) & TID_MASK, start: stamp >> TID_BITS }
    }
}

/// Bumped in every child right after `fork` (a `pthread_atfork` handler), so that
/// per-thread caches of the thread id notice they were copied into a new process.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(1);

/// This process image's fork generation (never 0): it differs between a
/// process and every forked copy of it, so process-local state copied by
/// `fork` can tell that it was made by another process.
pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Registers the fork handlers ([`before_fork`], [`after_fork_in_child`])
/// when the program is loaded, before any thread exists. (Registering lazily
/// under a `Once` is not fork-safe: a fork while another thread is inside
/// the `Once` leaves it "running" forever in the child, whose first
/// `current_task` then hangs.) The order of `.init_array` entries follows
/// the link, so the crate's other constructor (a spawned child's or a fork
/// server's startup, which runs for the process's whole life and forks)
/// calls [`register_fork_handlers`] first too.
#[used]
#[unsafe(link_section = ".init_array")]
static REGISTER_AT_FORK: extern "C" fn() = register_at_fork;

extern "C" fn register_at_fork() {
    register_fork_handlers();
}

/// Whether the fork handlers are registered (both callers run before
/// `main`, on the one thread there is).
static FORK_HANDLERS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Registers the fork handlers, once.
pub(crate) fn register_fork_handlers() {
    if FORK_HANDLERS.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: registers a prepare handler (run in the forking thread before
    // the fork; see `before_fork` for what it may do) and a child handler
    // that only performs atomic stores, which are async-signal-safe as a
    // fork child handler must be.
    unsafe {
        libc::pthread_atfork(Some(before_fork), None, Some(after_fork_in_child));
    }
}

/// Settles the process's lazily computed values before any fork, by the
/// crate or not: a value another thread is computing at the fork would stay
/// "being computed" for ever in the child, and the child's first use of it
/// would hang (a pool worker forked while another thread computed the
/// executable's identity did, once in about a hundred test runs). Here the
/// forking thread waits for that computation to end, or makes it itself.
///
/// What it may do is narrow: the computation must never fork, and must take
/// no lock that a thread may hold across a fork (the crate's forks hold the
/// process registry, the fork server's lock and the manager clients' locks);
/// on the process's first fork it allocates, so a fork from a signal handler
/// that interrupted that same computation would deadlock. After the first
/// fork it is one atomic load.
extern "C" fn before_fork() {
    let _ = exe_identity();
    #[cfg(test)]
    BEFORE_FORK_RUNS.fetch_add(1, Ordering::Relaxed);
}

/// How many times [`before_fork`] ran (unit tests check it runs on every
/// fork).
#[cfg(test)]
static BEFORE_FORK_RUNS: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    // Async-signal-safe: one atomic increment and one store.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    // A membarrier registration does not survive fork.
    FENCE_IS_CHEAP.store(false, Ordering::Relaxed);
}

/// Whether the kernel refused to register us for
/// `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (then [`light_fence`] stays a real
/// fence and stops asking).
static MEMBARRIER_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process image is registered, so that [`light_fence`] is a
/// compiler fence. Registration is per process and does not survive `fork`:
/// cleared in every forked child.
static FENCE_IS_CHEAP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The cheap side of an asymmetric fence, for a waker that publishes with a
/// plain store and then reads a sleeper count: once this process is
/// registered for global expedited membarriers, a compiler fence, because a
/// sleeper's [`heavy_fence`] then forces a full barrier on every CPU running
/// one of our threads; before that (or if the kernel refuses), a `SeqCst`
/// fence. The pairing is the one userspace RCU uses (`sys_membarrier`).
#[inline]
pub(crate) fn light_fence() {
    if FENCE_IS_CHEAP.load(Ordering::Relaxed) {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        light_fence_slow();
    }
}

#[cold]
fn light_fence_slow() {
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    if !MEMBARRIER_REFUSED.load(Ordering::Relaxed) {
        use rustix::thread::{MembarrierCommand, membarrier};
        match membarrier(MembarrierCommand::RegisterGlobalExpedited) {
            // Only if no fork happened meanwhile (the registration would then
            // be the parent's): a fork clears the flag after bumping the
            // generation.
            Ok(()) if FORK_GENERATION.load(Ordering::Relaxed) == generation => {
                FENCE_IS_CHEAP.store(true, Ordering::Relaxed);
            }
            Ok(()) => {}
            Err(_) => MEMBARRIER_REFUSED.store(true, Ordering::Relaxed),
        }
    }
    // This call is not covered by the registration yet (another thread may
    // still be registering): a real fence.
    std::sync::atomic::fence(Ordering::SeqCst);
}

/// The expensive side of the asymmetric fence, for a waiter that announced
/// itself and is about to re-check and sleep: a `SeqCst` fence here and a full
/// barrier on every CPU that runs a thread of a registered process (an IPI,
/// about a microsecond). `false` if the kernel refused: then a waker that
/// relies on [`light_fence`] may not be ordered with us, and the caller must
/// sleep in short slices instead of indefinitely.
pub(crate) fn heavy_fence() -> bool {
    std::sync::atomic::fence(Ordering::SeqCst);
    rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited).is_ok()
}

thread_local! {
    /// (fork generation it was read in, tid, start time); generation 0 = unset.
    static CURRENT: Cell<(u64, u32, u64)> = const { Cell::new((0, 0, 0)) };
}

/// The calling thread's id and start time. Cached per thread: the fast path is a
/// thread-local read and one relaxed load, no system call. The cache is renewed
/// after `fork` (the child's thread has a new id).
#[inline]
pub(crate) fn current_task() -> TaskId {
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    let (g, tid, start) = CURRENT.with(Cell::get);
    if g == generation {
        return TaskId { tid, start };
    }
    current_task_slow(generation)
}

#[cold]
fn current_task_slow(generation: u64) -> TaskId {
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    let start = task_stat("thread-self").map_or(0, |s| s.start);
    CURRENT.with(|c| c.set((generation, tid, start)));
    TaskId { tid, start }
}

/// This process's id and start time.
pub(crate) fn current_process() -> TaskId {
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    let start = task_stat("self").map_or(0, |s| s.start);
    TaskId { tid: pid, start }
}

/// The process id of the caller (a system call: not for hot paths).
pub(crate) fn pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

struct TaskStat {
    state: u8,
    start: u64,
}

/// Parses `/proc/<which>/stat`: the state (field 3) and start time (field 22).
/// The command name (field 2) may contain spaces and parentheses, so fields are
/// counted from the last `)`.
fn task_stat(which: &str) -> io::Result<TaskStat> {
    let text = fs::read_to_string(format!("/proc/{which}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc stat line"))
}

fn parse_stat(text: &str) -> Option<TaskStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    // After the state (field 3), field 22 is 19 fields further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some(TaskStat { state, start })
}

/// Whether `task` is still alive: its id exists, is not a zombie, and (when
/// `start` is known, i.e. non-zero) started at the recorded time. A task we
/// cannot inspect for a reason other than "no such task" counts as alive.
/// The stamp of a thread that has exited: a task no liveness check finds
/// alive (for unit tests of takeovers).
#[cfg(test)]
pub(crate) fn exited_thread_stamp() -> u64 {
    std::thread::spawn(|| current_task().stamp()).join().expect("the thread")
}

pub(crate) fn task_alive(task: TaskId) -> bool {
    if task.tid == 0 {
        return false;
    }
    match task_stat(&task.tid.to_string()) {
        Ok(s) => !matches!(s.state, b'Z' | b'X' | b'x') && (task.start == 0 || s.start == task.start),
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

/// The number of CPUs this process may run on.
pub(crate) fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line = "42 (a) b (c)) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19 20\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, b'R');
        assert_eq!(s.start, 777);
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1 2").is_none());
    }

    #[test]
    fn stamps_round_trip() {
        let t = TaskId { tid: TID_MASK, start: (1 << 41) + 5 };
        assert_eq!(TaskId::from_stamp(t.stamp()), t);
    }

    #[test]
    fn current_task_is_alive_and_a_dead_one_is_not() {
        let me = current_task();
        assert!(task_alive(me));
        assert!(!task_alive(TaskId { tid: me.tid, start: me.start + 1 }));
        let t = std::thread::spawn(current_task).join().unwrap();
        assert_ne!(t.tid, me.tid);
        // The thread has exited: its tid is gone or reused by a later task.
        // `join` returns when the kernel clears the thread's tid word, which
        // happens a little before the task itself is gone: allow it a moment.
        let deadline = Deadline::after(Duration::from_secs(5));
        while task_alive(t) {
            assert!(!deadline.has_passed(), "thread {t:?} still alive 5 s after join");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_forked_child_finds_the_executables_identity_computed() {
        // Whether or not this process computed it before, any fork settles
        // it first (a child must never find it half computed): the prepare
        // handler is registered and runs on every fork. (That the child
        // finds the identity computed is meaningful when this test runs
        // first in its process; the count is meaningful in any order.)
        assert!(FORK_HANDLERS.load(Ordering::Relaxed), "the fork handlers were never registered");
        let runs = BEFORE_FORK_RUNS.load(Ordering::Relaxed);
        // SAFETY: fork has no memory-safety preconditions; the child only
        // looks at the cell and leaves with _exit.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", io::Error::last_os_error()),
            0 => {
                let missing = EXE_IDENTITY.get().is_none();
                // SAFETY: _exit ends the forked child at once, running no
                // destructors or handlers of the copied test harness.
                unsafe { libc::_exit(i32::from(missing)) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: waits for our own child; `status` is a valid out pointer.
                assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "the child found the identity not yet computed ({status:#x})"
                );
                // Other tests may fork meanwhile: at least ours counted.
                assert!(BEFORE_FORK_RUNS.load(Ordering::Relaxed) > runs, "the prepare handler did not run");
            }
        }
    }

    #[test]
    fn futex_wait_times_out_and_sees_changed_values() {
        let w = AtomicU32::new(7);
        assert_eq!(futex_wait(&w, 8, None), FutexWait::Woken);
        let d = Deadline::after(Duration::from_millis(20));
        assert_eq!(futex_wait(&w, 7, Some(d)), FutexWait::TimedOut);
        assert!(d.has_passed());
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// What [`fork`] returned in this process.
#[derive(Debug)]
pub(crate) enum Forked {
    /// We are the new child.
    Child,
    /// We are the parent of `pid`.
    Parent(u32),
}

/// `fork()`. In a multi-threaded parent only async-signal-safe work is
/// guaranteed in the child until it execs; glibc's malloc survives fork, other
/// locks held by other threads (stdout's, say) may not.
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions; the caller owns what the
    // child does afterwards (see above).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as u32)),
    }
}

/// Ends this process at once with `code`, running no destructors, `atexit`
/// handlers or stdio flushes that a forked copy must not run.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and always sound to call.
    unsafe { libc::_exit(code) }
}

/// Python's `exitcode` of a wait status: the exit status, or minus the signal.
fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) { -libc::WTERMSIG(status) } else { libc::WEXITSTATUS(status) }
}

/// Reaps child `pid` if it has exited (`block`: waits until it does). Returns
/// its exit code as Python reports it, or `None` if it still runs.
pub(crate) fn reap(pid: u32, block: bool) -> io::Result<Option<i32>> {
    let mut status = 0;
    loop {
        let flags = if block { 0 } else { libc::WNOHANG };
        // SAFETY: `status` is a valid out-pointer for the call's duration.
        match unsafe { libc::waitpid(pid as libc::pid_t, &raw mut status, flags) } {
            0 => return Ok(None),
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            _ => return Ok(Some(exit_code(status))),
        }
    }
}

/// A descriptor that becomes readable when process `pid` exits (`pidfd_open`).
pub(crate) fn pidfd(pid: u32) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid 0"))?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).map_err(io_err)
}

/// Waits until `fd` is readable or `deadline` passes; `true` if readable.
pub(crate) fn wait_readable(fd: impl AsFd, deadline: Option<Deadline>) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags};
    loop {
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let timeout = deadline.map(|d| {
            let left = d.0.saturating_sub(Deadline::now().0);
            Timespec { tv_sec: left.as_secs() as i64, tv_nsec: i64::from(left.subsec_nanos()) }
        });
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => {}
            Err(e) => return Err(io_err(e)),
        }
    }
}

/// Sends signal `sig` to process `pid`.
pub(crate) fn signal(pid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The parent's pid.
pub(crate) fn parent_pid() -> u32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
}

/// A new descriptor for the same open file.
pub(crate) fn dup(fd: impl AsFd) -> io::Result<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(io_err)
}

/// A liveness token: an OS pipe on which nothing is ever written. Every
/// holder of something (a pipe end) keeps a copy of the write side; the
/// kernel closes a process's copies when it exits or is killed, and copies
/// travel to children as descriptors do (inherited by `fork`, handed over
/// for spawn). The read side reports a hang-up once every copy of the write
/// side is closed ([`token_dropped`]). Both close on exec.
pub(crate) fn token() -> io::Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io_err)
}

/// Whether every copy of the write side of the token whose read side is
/// `read` is closed (one `poll` system call, which does not block).
pub(crate) fn token_dropped(read: impl AsFd) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(&read, PollFlags::IN)];
    let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
    loop {
        match poll(&mut fds, Some(&zero)) {
            Ok(_) => {
                return fds[0].revents().intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL);
            }
            Err(Errno::INTR) => {}
            // Not expected for a valid descriptor: alive, as waiting on is
            // the safe answer while the caller's slices bound the wait.
            Err(_) => return false,
        }
    }
}

/// Fills `buf` with random bytes from the kernel (`getrandom`).
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(())
}

/// Resizes the file behind `fd` (growing a sealed memfd is allowed).
pub(crate) fn set_len(fd: impl AsFd, len: u64) -> io::Result<()> {
    rustix::fs::ftruncate(fd, len).map_err(io_err)
}

/// Takes ownership of an inherited descriptor number after checking it is open.
pub(crate) fn adopt_fd(fd: std::os::fd::RawFd) -> io::Result<OwnedFd> {
    use std::os::fd::{BorrowedFd, FromRawFd};
    if fd < 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "negative descriptor"));
    }
    // SAFETY: the descriptor number is only borrowed for one fcntl call, which
    // fails with EBADF (and no other effect) if it is not open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(borrowed).map_err(io_err)?;
    // SAFETY: the descriptor is open (checked above) and was handed to this
    // process to own (inherited across exec for exactly this purpose).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC).map_err(io_err)?;
    Ok(owned)
}

/// [`exe_identity`], computed once (and before any fork: [`before_fork`]).
static EXE_IDENTITY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// An identity of the running executable that changes whenever its code does:
/// the GNU build-id note if the linker wrote one (found in memory, no file
/// read), else the device, inode, size and modification time of
/// `/proc/self/exe`.
pub(crate) fn exe_identity() -> &'static [u8] {
    EXE_IDENTITY.get_or_init(|| {
        build_id().unwrap_or_else(|| {
            let mut id = b"stat:".to_vec();
            if let Ok(st) = rustix::fs::stat("/proc/self/exe") {
                // The stat fields' integer types differ between targets.
                #[allow(clippy::unnecessary_cast)]
                for v in [st.st_dev, st.st_ino, st.st_size as u64, st.st_mtime as u64, st.st_mtime_nsec as u64] {
                    id.extend_from_slice(&v.to_le_bytes());
                }
            }
            id
        })
    })
}

/// The main executable's GNU build-id, read from its `PT_NOTE` segments.
fn build_id() -> Option<Vec<u8>> {
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: libc::size_t, out: *mut libc::c_void) -> i32 {
        // SAFETY: the loader passes a valid `info` for the duration of the call;
        // `out` is the `Option<Vec<u8>>` we passed to dl_iterate_phdr. The first
        // object visited is the main program; its PT_NOTE segments are mapped
        // (notes are in a loadable segment) at `dlpi_addr + p_vaddr`.
        unsafe {
            let info = &*info;
            let out = &mut *out.cast::<Option<Vec<u8>>>();
            let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            for ph in phdrs.iter().filter(|p| p.p_type == libc::PT_NOTE) {
                let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize) as *const u8;
                let notes = std::slice::from_raw_parts(start, ph.p_memsz as usize);
                if let Some(id) = find_build_id(notes) {
                    *out = Some(id.to_vec());
                    return 1;
                }
            }
        }
        1 // only the main program
    }
    let mut out: Option<Vec<u8>> = None;
    // SAFETY: `visit` only reads the headers the loader hands it and writes to
    // `out`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut out).cast()) };
    out
}

/// Finds the `NT_GNU_BUILD_ID` descriptor in a run of ELF notes.
fn find_build_id(mut notes: &[u8]) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    while notes.len() >= 12 {
        let word = |i: usize| u32::from_ne_bytes(notes[i..i + 4].try_into().unwrap_or_default());
        let (namesz, descsz, kind) = (word(0) as usize, word(4) as usize, word(8));
        let name_end = align4(namesz)?.checked_add(12)?;
        let desc_end = name_end.checked_add(align4(descsz)?)?;
        if desc_end > notes.len() {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && notes.get(12..12 + namesz)? == b"GNU\0" {
            return notes.get(name_end..name_end + descsz);
        }
        notes = &notes[desc_end..];
    }
    None
}

/// Starts this executable again (`/proc/self/exe`) with `args`, the current
/// environment plus `env` (replacing any variable of that name), and the
/// descriptors `inherit` kept open at the same numbers. Uses `posix_spawn`
/// (a vfork, no copy of our page tables); `adddup2(fd, fd)` clears
/// close-on-exec in the child only. As std's `Command` does, the child starts
/// with an empty signal mask and `SIGPIPE` at its default. Returns the pid.
pub(crate) fn spawn_self(args: &[&str], env: (&str, &str), inherit: &[std::os::fd::RawFd]) -> io::Result<u32> {
    use std::ffi::{CString, OsStr};
    use std::os::unix::ffi::OsStrExt;
    let cstr = |s: &[u8]| CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"));
    let path = cstr(b"/proc/self/exe")?;
    let arg_strings: Vec<CString> = std::iter::once("/proc/self/exe")
        .chain(args.iter().copied())
        .map(|a| cstr(a.as_bytes()))
        .collect::<io::Result<_>>()?;
    let mut env_strings: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k != OsStr::new(env.0) {
            env_strings.push(cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
        }
    }
    env_strings.push(cstr(format!("{}={}", env.0, env.1).as_bytes())?);
    let arg_ptrs: Vec<*mut libc::c_char> =
        arg_strings.iter().map(|a| a.as_ptr().cast_mut()).chain(std::iter::once(std::ptr::null_mut())).collect();
    let envp: Vec<*mut libc::c_char> =
        env_strings.iter().map(|e| e.as_ptr().cast_mut()).chain(std::iter::once(std::ptr::null_mut())).collect();
    let check = |r: libc::c_int| if r == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(r)) };
    // SAFETY: the file actions and attributes are initialised before use and
    // destroyed after; every pointer passed (path, argv, envp: NUL-terminated
    // strings in null-terminated arrays) outlives the call.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&raw mut actions))?;
        if let Err(e) = check(libc::posix_spawnattr_init(&raw mut attr)) {
            libc::posix_spawn_file_actions_destroy(&raw mut actions);
            return Err(e);
        }
        let mut result = Ok(());
        for &fd in inherit {
            if result.is_ok() {
                result = check(libc::posix_spawn_file_actions_adddup2(&raw mut actions, fd, fd));
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        let mut pipe: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut empty);
        libc::sigemptyset(&raw mut pipe);
        libc::sigaddset(&raw mut pipe, libc::SIGPIPE);
        if result.is_ok() {
            result = check(libc::posix_spawnattr_setsigmask(&raw mut attr, &raw const empty))
                .and_then(|()| check(libc::posix_spawnattr_setsigdefault(&raw mut attr, &raw const pipe)))
                .and_then(|()| {
                    let flags = (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
                    check(libc::posix_spawnattr_setflags(&raw mut attr, flags))
                });
        }
        let mut pid: libc::pid_t = 0;
        if result.is_ok() {
            // Returns once the child has exec'd (or failed to, reported here):
            // by then it holds its own copies of every descriptor.
            result = check(libc::posix_spawn(
                &raw mut pid,
                path.as_ptr(),
                &raw const actions,
                &raw const attr,
                arg_ptrs.as_ptr(),
                envp.as_ptr(),
            ));
        }
        libc::posix_spawnattr_destroy(&raw mut attr);
        libc::posix_spawn_file_actions_destroy(&raw mut actions);
        result.map(|()| pid as u32)
    }
}

// ---------------------------------------------------------------------------
// Control sockets (the fork server's requests: descriptors and a pid, never
// payload)
// ---------------------------------------------------------------------------

/// A connected pair of `SOCK_SEQPACKET` Unix sockets (close-on-exec).
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).map_err(io_err)
}

/// Sends the one-byte message `byte` with `fds` attached (`SCM_RIGHTS`).
pub(crate) fn send_fds(sock: impl AsFd, byte: u8, fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !anc.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors for one message"));
    }
    rustix::net::sendmsg(sock, &[io::IoSlice::new(&[byte])], &mut anc, SendFlags::NOSIGNAL).map_err(io_err)?;
    Ok(())
}

/// Receives one message of at most one byte and up to `max_fds` descriptors.
/// `None` at end of stream; an empty list if more descriptors were sent than
/// fit (they are closed by the kernel's truncation).
pub(crate) fn recv_fds(sock: impl AsFd, max_fds: usize) -> io::Result<Option<Vec<OwnedFd>>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
    let mut byte = [0u8; 1];
    let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(max_fds))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match rustix::net::recvmsg(&sock, &mut [io::IoSliceMut::new(&mut byte)], &mut anc, RecvFlags::CMSG_CLOEXEC) {
            Ok(m) => break m,
            Err(Errno::INTR) => {}
            Err(e) => return Err(io_err(e)),
        }
    };
    if msg.bytes == 0 {
        return Ok(None);
    }
    let mut fds = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Ok(Some(Vec::new()));
    }
    Ok(Some(fds))
}

/// Writes all of `data` to `fd` (a short control message).
pub(crate) fn write_all(fd: impl AsFd, data: &[u8]) -> io::Result<()> {
    let n = rustix::io::write(fd, data).map_err(io_err)?;
    if n == data.len() { Ok(()) } else { Err(io::Error::new(io::ErrorKind::WriteZero, "short write")) }
}

/// Reads exactly `buf.len()` bytes from a message socket; `false` at end of stream.
pub(crate) fn read_message(fd: impl AsFd, buf: &mut [u8]) -> io::Result<bool> {
    loop {
        match rustix::io::read(&fd, &mut *buf) {
            Ok(n) if n == buf.len() => return Ok(true),
            Ok(_) => return Ok(false),
            Err(Errno::INTR) => {}
            Err(e) => return Err(io_err(e)),
        }
    }
}

/// Waits until one of `fds` is readable; returns which are.
pub(crate) fn poll_readable(fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<Vec<bool>> {
    use rustix::event::{PollFd, PollFlags};
    let mut polls: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, PollFlags::IN)).collect();
    loop {
        match rustix::event::poll(&mut polls, None) {
            Ok(_) => return Ok(polls.iter().map(|p| !p.revents().is_empty()).collect()),
            Err(Errno::INTR) => {}
            Err(e) => return Err(io_err(e)),
        }
    }
}

/// Closes descriptor number `fd` in this process without an owner (a forked
/// child dropping its copy of a descriptor that an object it will never use
/// again owns).
pub(crate) fn close_inherited_copy(fd: impl AsFd) {
    use std::os::fd::AsRawFd;
    // SAFETY: closing a descriptor number has no memory-safety preconditions;
    // the caller guarantees the owning object is never used afterwards.
    unsafe { libc::close(fd.as_fd().as_raw_fd()) };
}
