//! Helpers shared by the cross-process integration tests: forking children
//! that never return into the test harness, a watchdog that turns a hang into
//! a failure, unique segment names, and a `/dev/shm` leak check.
//!
//! A forked child of a multi-threaded test harness must stay away from locks
//! other threads may have held at `fork` time (stdout, stderr): children never
//! print. A panic in a child is caught, its message is written into a small
//! anonymous segment that the parent reads, and the child leaves with
//! `_exit(101)`.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shmproc::Segment;

/// How long a cross-process test may take before the watchdog kills it.
pub(crate) const WATCHDOG: Duration = Duration::from_secs(30);

/// Exit code of a child whose closure panicked.
pub(crate) const PANIC_EXIT: i32 = 101;

/// Bytes of the per-child report segment (a `u32` length, then the message).
const REPORT_LEN: usize = 4096;

/// True only in a forked child: its panic hook is silent.
static IN_CHILD: AtomicBool = AtomicBool::new(false);
/// In a forked child, the payload of its report segment.
static REPORT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

/// Installs (once per process) a panic hook that stays silent in forked
/// children and records the panic message in the child's report segment
/// instead; in the parent it defers to the previous hook.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_CHILD.load(Ordering::Relaxed) {
                let report = REPORT.load(Ordering::Relaxed);
                if !report.is_null() {
                    let text = info.to_string();
                    let bytes = &text.as_bytes()[..text.len().min(REPORT_LEN - 4)];
                    // The payload starts 64 bytes into a page-aligned mapping.
                    #[allow(clippy::cast_ptr_alignment)]
                    let len_word = report.cast::<u32>();
                    // SAFETY: `report` is the payload of the child's report
                    // segment, REPORT_LEN bytes long and 64-aligned, kept
                    // alive by the `Child` (copied into this process by
                    // fork); only this child writes it, the parent reads it
                    // after the child exited.
                    unsafe {
                        std::ptr::copy_nonoverlapping(bytes.as_ptr(), report.add(4), bytes.len());
                        AtomicU32::from_ptr(len_word).store(bytes.len() as u32, Ordering::Release);
                    }
                }
            } else {
                previous(info);
            }
        }));
    });
}

/// A forked child process. Dropping a child that still runs kills and reaps it.
#[derive(Debug)]
pub(crate) struct Child {
    pid: libc::pid_t,
    /// Exit code (or minus the signal) once reaped.
    status: Option<i32>,
    /// Where the child writes its panic message.
    report: Segment,
}

/// Forks a child that runs `f` and leaves with `_exit(f())`, or `_exit(101)`
/// if `f` panics (the message is kept for [`Child::report`]). The child never
/// returns into the test harness and must not print.
pub(crate) fn fork_child(f: impl FnOnce() -> i32) -> Child {
    install_panic_hook();
    let report = Segment::anonymous(REPORT_LEN).expect("report segment");
    // SAFETY: fork has no memory-safety preconditions; the child only runs `f`
    // (which uses shmproc objects and glibc's fork-safe malloc) and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        IN_CHILD.store(true, Ordering::Relaxed);
        REPORT.store(report.as_ptr(), Ordering::Relaxed);
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(code) => code,
            Err(_) => PANIC_EXIT,
        };
        // SAFETY: `_exit` ends the child at once, running no destructors or
        // atexit handlers that belong to the parent's test harness.
        unsafe { libc::_exit(code) };
    }
    Child { pid, status: None, report }
}

impl Child {
    /// The child's process id.
    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Reaps the child if it has finished; its exit code, or minus the signal
    /// that killed it.
    pub(crate) fn try_wait(&mut self) -> Option<i32> {
        if self.status.is_some() {
            return self.status;
        }
        let mut raw = 0;
        // SAFETY: waitpid on our own child, with a valid out-pointer.
        let r = unsafe { libc::waitpid(self.pid, &raw mut raw, libc::WNOHANG) };
        if r == self.pid {
            self.status = Some(if libc::WIFEXITED(raw) {
                libc::WEXITSTATUS(raw)
            } else if libc::WIFSIGNALED(raw) {
                -libc::WTERMSIG(raw)
            } else {
                i32::MIN
            });
        } else {
            assert!(r == 0, "waitpid({}) failed: {}", self.pid, std::io::Error::last_os_error());
        }
        self.status
    }

    /// Waits at most `timeout` for the child to finish (polling `waitpid` with
    /// `WNOHANG`); its exit code or minus the signal, `None` if it still runs.
    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(100);
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Whether the child is still running (it is reaped if it is not).
    pub(crate) fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Sends `SIGKILL` (if still running) and reaps the child.
    pub(crate) fn kill(&mut self) -> i32 {
        if self.try_wait().is_none() {
            // SAFETY: signalling our own child, which has not been reaped yet
            // (so its pid cannot have been reused).
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let mut raw = 0;
            // SAFETY: blocking waitpid on our own child.
            let r = unsafe { libc::waitpid(self.pid, &raw mut raw, 0) };
            assert_eq!(r, self.pid, "waitpid after SIGKILL: {}", std::io::Error::last_os_error());
            self.status = Some(if libc::WIFSIGNALED(raw) { -libc::WTERMSIG(raw) } else { libc::WEXITSTATUS(raw) });
        }
        self.status.unwrap_or(i32::MIN)
    }

    /// The panic message the child recorded, if it panicked.
    pub(crate) fn report(&self) -> Option<String> {
        let mut len = [0u8; 4];
        self.report.read_at(0, &mut len).ok()?;
        let len = (u32::from_le_bytes(len) as usize).min(REPORT_LEN - 4);
        if len == 0 {
            return None;
        }
        let mut buf = vec![0u8; len];
        self.report.read_at(4, &mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// A description for failure messages: pid, status and panic message.
    pub(crate) fn describe(&self) -> String {
        let status = match self.status {
            None => "still running".to_owned(),
            Some(s) if s < 0 => format!("killed by signal {}", -s),
            Some(s) => format!("exit code {s}"),
        };
        match self.report() {
            Some(msg) => format!("child {} ({status}) panicked: {msg}", self.pid),
            None => format!("child {} ({status})", self.pid),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
        }
    }
}

/// Waits for every child, at most `timeout` in all; returns their exit codes
/// (minus the signal for killed ones), in order. If any child is still running
/// when time runs out, kills them all and panics naming the ones that hung.
pub(crate) fn join_all(children: &mut [Child], timeout: Duration) -> Vec<i32> {
    let start = Instant::now();
    for c in children.iter_mut() {
        let left = timeout.saturating_sub(start.elapsed());
        if c.wait_timeout(left).is_none() {
            break;
        }
    }
    let mut hung = Vec::new();
    for c in children.iter_mut() {
        if c.is_running() {
            hung.push(c.pid().to_string());
        }
    }
    if !hung.is_empty() {
        for c in children.iter_mut() {
            c.kill();
        }
        let all: Vec<String> = children.iter().map(Child::describe).collect();
        panic!("watchdog: child(ren) {} still running after {timeout:?}; all: {all:#?}", hung.join(", "));
    }
    children.iter().map(|c| c.status.unwrap_or(i32::MIN)).collect()
}

/// [`join_all`] with [`WATCHDOG`], then asserts that every child exited 0,
/// printing each failing child's status and panic message.
pub(crate) fn expect_success(children: &mut [Child]) {
    let codes = join_all(children, WATCHDOG);
    let failed: Vec<String> =
        children.iter().zip(&codes).filter(|(_, code)| **code != 0).map(|(c, _)| c.describe()).collect();
    assert!(failed.is_empty(), "children failed: {failed:#?}");
}

/// Waits for one child with [`WATCHDOG`] and asserts that it exited 0.
pub(crate) fn expect_child_ok(child: Child) {
    expect_success(&mut [child]);
}

/// Runs `f` in a forked child under the watchdog and asserts it exited 0: a
/// hang or a panic in `f` fails the test without taking the harness down.
pub(crate) fn in_child(f: impl FnOnce()) {
    expect_child_ok(fork_child(|| {
        f();
        0
    }));
}

/// A segment name unique to this process and call:
/// `shmproc-test-<tag>-<pid>-<counter>`.
pub(crate) fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("shmproc-test-{tag}-{}-{n}", std::process::id())
}

/// Entries of `/dev/shm` whose names start with `shmproc-test-`.
pub(crate) fn shm_test_entries() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else { return Vec::new() };
    let mut names: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("shmproc-test-"))
        .collect();
    names.sort();
    names
}

/// Entries of `/dev/shm` made by [`unique_name`] with `tag` in this process.
/// Tests run in parallel threads, so each test checks only its own tags.
pub(crate) fn shm_leftovers(tag: &str) -> Vec<String> {
    let prefix = format!("shmproc-test-{tag}-{}-", std::process::id());
    shm_test_entries().into_iter().filter(|n| n.starts_with(&prefix)).collect()
}

/// Asserts that no `/dev/shm` entry made with `tag` in this process remains.
pub(crate) fn assert_no_leftovers(tag: &str) {
    let left = shm_leftovers(tag);
    assert!(left.is_empty(), "leaked /dev/shm entries: {left:?}");
}

/// Removes the named segments' files when dropped, also when a test fails
/// half-way (for names that a child or a test creates with `keep_name`).
#[derive(Debug)]
pub(crate) struct RemoveOnDrop(pub(crate) Vec<String>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::fs::remove_file(shm_path(name));
        }
    }
}

/// Path of a named segment's file.
pub(crate) fn shm_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/dev/shm").join(name)
}

/// Writes `bytes` into the file of the named segment `name` at byte `offset`
/// (offset 64 is the first payload byte): how tests play a peer that writes
/// garbage.
pub(crate) fn scribble(name: &str, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(shm_path(name)).expect("open segment file");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(bytes).expect("write");
}

/// Reads the whole file of the named segment `name`.
pub(crate) fn read_shm(name: &str) -> Vec<u8> {
    std::fs::read(shm_path(name)).expect("read segment file")
}

/// A view of the `u32` at byte `offset` of a segment's payload as an atomic.
// The payload is 64-aligned (64 bytes into a page-aligned mapping) and the
// offset is checked, so the cast pointer is aligned.
#[allow(clippy::cast_ptr_alignment)]
pub(crate) fn atomic_u32(seg: &Segment, offset: usize) -> &AtomicU32 {
    assert!(offset % 4 == 0 && offset + 4 <= seg.len(), "u32 at {offset} outside the payload");
    // SAFETY: in bounds (checked), 4-aligned (the payload is 64-aligned in a
    // page-aligned mapping), the mapping lives as long as `seg`, and every
    // process accesses this word only atomically.
    unsafe { AtomicU32::from_ptr(seg.as_ptr().add(offset).cast::<u32>()) }
}

/// A view of the `u64` at byte `offset` of a segment's payload as an atomic.
// Aligned as in `atomic_u32`.
#[allow(clippy::cast_ptr_alignment)]
pub(crate) fn atomic_u64(seg: &Segment, offset: usize) -> &AtomicU64 {
    assert!(offset % 8 == 0 && offset + 8 <= seg.len(), "u64 at {offset} outside the payload");
    // SAFETY: as in `atomic_u32`, with 8-alignment.
    unsafe { AtomicU64::from_ptr(seg.as_ptr().add(offset).cast::<u64>()) }
}

/// Reads the plain (non-atomic) `u64` at byte `offset` of a segment's payload.
pub(crate) fn read_u64(seg: &Segment, offset: usize) -> u64 {
    let mut b = [0u8; 8];
    seg.read_at(offset, &mut b).expect("read_at");
    u64::from_le_bytes(b)
}

/// Writes the plain (non-atomic) `u64` at byte `offset` of a segment's payload.
pub(crate) fn write_u64(seg: &Segment, offset: usize, v: u64) {
    seg.write_at(offset, &v.to_le_bytes()).expect("write_at");
}

/// Polls `cond` every millisecond until it holds; panics after [`WATCHDOG`].
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WATCHDOG, "watchdog: {what} did not happen within {WATCHDOG:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A second mapping of a named segment's whole file (header included), for
/// tests that play a peer writing the shared state with atomics while the
/// library operates on it (`scribble` writes through the file instead, which
/// is not atomic with respect to the library's loads). Offsets are file
/// offsets: the payload starts at 64.
#[derive(Debug)]
pub(crate) struct ShmMap {
    map: memmap2::MmapRaw,
}

impl ShmMap {
    /// Maps the file of the named segment `name`, read-write and shared.
    pub(crate) fn open(name: &str) -> ShmMap {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(shm_path(name)).expect("open segment file");
        ShmMap { map: memmap2::MmapOptions::new().map_raw(&file).expect("map segment file") }
    }

    /// Bytes mapped (the file's length).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The `u64` at file offset `offset`, as an atomic.
    // The mapping is page-aligned and the offset is checked to be 8-aligned.
    #[allow(clippy::cast_ptr_alignment)]
    pub(crate) fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.len(), "u64 at {offset} outside the file");
        // SAFETY: in bounds and 8-aligned (checked; the mapping is
        // page-aligned), alive as long as `self`; every process accesses the
        // shared state only atomically.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(offset).cast::<u64>()) }
    }

    /// The `u32` at file offset `offset`, as an atomic.
    // Aligned as in `u64_at`, with 4-alignment.
    #[allow(clippy::cast_ptr_alignment)]
    pub(crate) fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= self.len(), "u32 at {offset} outside the file");
        // SAFETY: as in `u64_at`, with 4-alignment.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(offset).cast::<u32>()) }
    }
}

/// A small deterministic generator (xorshift64*) for garbage bytes.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

// ---------------------------------------------------------------------------
// Children through the public `Process` API (the helpers above use raw fork).
// ---------------------------------------------------------------------------

#[allow(unused_imports)] // each test binary uses a different subset
pub(crate) use process_helpers::*;

mod process_helpers {
    use std::time::{Duration, Instant};

    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use shmproc::{Error, Process, StartMethod};

    use super::WATCHDOG;

    /// Every start method, for tests that run once per method.
    pub(crate) const METHODS: [StartMethod; 3] = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];

    /// A started [`Process`] that is killed and reaped when dropped while still
    /// running, so that a failing test leaves no child behind. Derefs to the
    /// `Process`.
    #[derive(Debug)]
    pub(crate) struct Proc<R: DeserializeOwned>(pub(crate) Process<R>);

    impl<R: DeserializeOwned> std::ops::Deref for Proc<R> {
        type Target = Process<R>;
        fn deref(&self) -> &Process<R> {
            &self.0
        }
    }

    impl<R: DeserializeOwned> std::ops::DerefMut for Proc<R> {
        fn deref_mut(&mut self) -> &mut Process<R> {
            &mut self.0
        }
    }

    impl<R: DeserializeOwned> Drop for Proc<R> {
        fn drop(&mut self) {
            if self.0.pid().is_some() && self.0.is_alive() {
                let _ = self.0.kill();
                let _ = self.0.join_timeout(Duration::from_secs(5));
            }
        }
    }

    /// Starts the closure `f` in a child with `method` (closures need
    /// [`StartMethod::Fork`]; use [`start_fn`] for the others). Panics if the
    /// child cannot start.
    pub(crate) fn start<R, F>(method: StartMethod, f: F) -> Proc<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        assert_eq!(method, StartMethod::Fork, "a closure child needs the Fork start method; use start_fn");
        let mut p = Process::builder().start_method(method).closure(f);
        p.start().unwrap_or_else(|e| panic!("starting a {method:?} child: {e}"));
        Proc(p)
    }

    /// Starts `f(args)` in a child with `method` (any method). Panics if the
    /// child cannot start.
    pub(crate) fn start_fn<A, R>(method: StartMethod, f: fn(A) -> R, args: A) -> Proc<R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let mut p = Process::builder().start_method(method).target(f, args);
        p.start().unwrap_or_else(|e| panic!("starting a {method:?} child: {e}"));
        Proc(p)
    }

    /// Joins `p` under the watchdog: its result, or `Err` as `join` gave it. A
    /// child still running after `timeout` is killed and the test fails.
    pub(crate) fn join_within<R: DeserializeOwned>(p: &mut Process<R>, timeout: Duration) -> Result<R, Error> {
        match p.join_timeout(timeout) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => {
                let _ = p.kill();
                let _ = p.join_timeout(Duration::from_secs(5));
                panic!("watchdog: {} (pid {:?}) still running after {timeout:?}; killed", p.name(), p.pid());
            }
            Err(e) => Err(e),
        }
    }

    /// Joins `p` under [`WATCHDOG`] and returns its result; panics (naming the
    /// child's failure) if it failed or hung.
    pub(crate) fn join_ok<R: DeserializeOwned>(p: &mut Process<R>) -> R {
        join_within(p, WATCHDOG).unwrap_or_else(|e| panic!("child {} (pid {:?}) failed: {e}", p.name(), p.pid()))
    }

    /// Joins `p` under [`WATCHDOG`] and returns the error it must end with.
    pub(crate) fn join_err<R: DeserializeOwned + std::fmt::Debug>(p: &mut Process<R>) -> Error {
        match join_within(p, WATCHDOG) {
            Ok(r) => panic!("child {} was expected to fail but returned {r:?}", p.name()),
            Err(e) => e,
        }
    }

    /// Joins every child, at most [`WATCHDOG`] in all; returns their results in
    /// order. Children still running then are killed, and the test fails naming
    /// every child that failed or hung.
    pub(crate) fn join_all_ok<R: DeserializeOwned>(procs: &mut [Proc<R>]) -> Vec<R> {
        let start = Instant::now();
        let mut results = Vec::new();
        let mut failures = Vec::new();
        for p in procs.iter_mut() {
            let left = WATCHDOG.saturating_sub(start.elapsed());
            match p.join_timeout(left) {
                Ok(Some(r)) => results.push(r),
                Ok(None) => failures.push(format!("{} (pid {:?}) still running after {WATCHDOG:?}", p.name(), p.pid())),
                Err(e) => failures.push(format!("{} (pid {:?}): {e}", p.name(), p.pid())),
            }
        }
        // `Proc`'s drop kills the ones that hung.
        assert!(failures.is_empty(), "children failed: {failures:#?}");
        results
    }

    /// Kills `p` and reaps it under the watchdog; returns its exit code.
    pub(crate) fn kill_and_reap<R: DeserializeOwned>(p: &mut Process<R>) -> Option<i32> {
        p.kill().expect("kill");
        let _ = join_within(p, WATCHDOG);
        p.exitcode()
    }

    /// The state letter of `/proc/<pid>/stat` (`'R'`, `'S'`, `'Z'`, ...), or
    /// `None` if no such process exists.
    pub(crate) fn proc_state(pid: u32) -> Option<char> {
        stat_fields(&format!("/proc/{pid}/stat"))?.first()?.chars().next()
    }

    /// The fields of a `/proc/.../stat` file after the command name (state,
    /// parent, …); `None` if it cannot be read.
    pub(crate) fn stat_fields(path: &str) -> Option<Vec<String>> {
        let stat = std::fs::read_to_string(path).ok()?;
        // "pid (comm) S ...": the comm may contain spaces and parentheses.
        let after = &stat[stat.rfind(')')? + 1..];
        Some(after.split_whitespace().map(str::to_owned).collect())
    }

    /// The parent of the running process `pid`.
    pub(crate) fn parent_of(pid: u32) -> u32 {
        let fields = stat_fields(&format!("/proc/{pid}/stat")).expect("a running process's stat");
        fields[1].parse().expect("a parent pid")
    }

    /// Whether every thread of process `pid` is stopped (state `T`).
    pub(crate) fn all_threads_stopped(pid: u32) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
        tasks.filter_map(Result::ok).all(|t| {
            stat_fields(&t.path().join("stat").to_string_lossy())
                .is_some_and(|f| f.first().is_some_and(|s| s.starts_with('T')))
        })
    }

    /// Whether `pid` is gone or a zombie (it no longer runs).
    pub(crate) fn is_dead(pid: u32) -> bool {
        matches!(proc_state(pid), None | Some('Z' | 'X'))
    }

    /// Polls until `cond` holds, at most `timeout`; whether it did.
    pub(crate) fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        loop {
            if cond() {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Runs `on_expiry` (e.g. closing the queue a test blocks on) if the test is
/// still going after [`WATCHDOG`], so that a hang fails with a message
/// instead of stalling; stopped on drop.
pub(crate) struct Watchdog {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    fired: std::sync::Arc<AtomicBool>,
}

impl Watchdog {
    pub(crate) fn new(on_expiry: impl FnOnce() + Send + 'static) -> Watchdog {
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let fired = std::sync::Arc::new(AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&fired);
        let thread = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(WATCHDOG) {
                flag.store(true, Ordering::SeqCst);
                on_expiry();
            }
        });
        Watchdog { stop: Some(stop), thread: Some(thread), fired }
    }

    /// Whether the watchdog ran its `on_expiry`.
    pub(crate) fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// A note for assertion messages: empty, or why the operation failed.
    pub(crate) fn hung_note(&self) -> &'static str {
        if self.fired() { " (the watchdog fired: the queue hung)" } else { "" }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// This process's mappings (start address, length) of the files whose path,
/// as `/proc/self/maps` shows it (`/dev/shm/x`, `/memfd:shmproc (deleted)`),
/// `of` accepts.
pub(crate) fn mappings(of: impl Fn(&str) -> bool) -> Vec<(usize, usize)> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let path = fields.get(5..).map(|p| p.join(" "))?;
            let (from, to) = fields[0].split_once('-')?;
            let from = usize::from_str_radix(from, 16).ok()?;
            of(&path).then(|| (from, usize::from_str_radix(to, 16).unwrap() - from))
        })
        .collect()
}

/// Runs `cleanup` until no name under `/dev/shm` is one `left` matches, at
/// most 20 s (a segment stays while a child another test forked still maps
/// it); whether they are all gone.
pub(crate) fn swept_within_20_s(left: impl Fn(&str) -> bool) -> bool {
    let any_left = || std::fs::read_dir("/dev/shm").unwrap().any(|e| left(&e.unwrap().file_name().to_string_lossy()));
    let started = Instant::now();
    while {
        shmproc::cleanup().unwrap();
        any_left()
    } {
        if started.elapsed() > Duration::from_secs(20) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// A watchdog's `on_expiry` for tests whose hang cannot be undone: says which
/// test hung, then aborts the test binary (children are daemons or watch their
/// parent, so they go with it). The message is written to the process's
/// stderr directly: `eprintln!` in a thread spawned by a test is captured by
/// the harness, and an abort would lose it.
pub(crate) fn abort_hung(file: &str, what: &str) -> ! {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "watchdog: the {file} test `{what}` hung for {WATCHDOG:?}; aborting");
    std::process::abort();
}

/// Joins a thread, failing the test if it runs longer than [`WATCHDOG`] (the
/// thread is then left behind, blocked).
pub(crate) fn join_thread<R>(h: std::thread::JoinHandle<R>) -> R {
    let start = Instant::now();
    while !h.is_finished() {
        assert!(start.elapsed() < WATCHDOG, "watchdog: a thread still runs after {WATCHDOG:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    h.join().expect("thread panicked")
}
