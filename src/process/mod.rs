//! Processes: [`Process`], start methods, and who-am-I queries.
//!
//! A child's result (or panic message) comes back through a `ResultCell`
//! (shared memory), and `join` returns it as the target's `R`. Start methods:
//!
//! - [`StartMethod::Fork`]: `fork()`; the child runs the target on a copy of the
//!   parent's memory (arguments are not encoded; closures work). In a
//!   multi-threaded parent the child inherits only the forking thread, and any
//!   lock another thread held at that moment (stdout's, a `Mutex`'s) stays held
//!   in the child forever: keep forked targets simple there, or use Spawn.
//! - [`StartMethod::Spawn`]: re-executes this program (`/proc/self/exe`); the
//!   child runs `fn(A) -> R` named by offsets checked against the executable's
//!   build-id, with `A` decoded from shared memory and shmproc handles inside it
//!   re-opened from inherited descriptors. Safe in any parent; works in `cargo
//!   test` binaries with no set-up (see `child.rs`).
//! - [`StartMethod::ForkServer`]: as Spawn, but a single-threaded server
//!   (exec'd once) forks the children (see `forkserver.rs`), so each child costs
//!   a fork, not a program start, and no lock of the client's threads is copied.

mod child;
mod forkserver;
mod result;

pub(crate) use result::{fuzz_examples as result_cell_examples, fuzz_read as fuzz_result_cell};
pub(crate) mod target;

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use self::child::{Bootstrap, Identity};
use self::result::{FAILED, PANICKED, RETURNED, RUNNING, ResultCell};
use self::target::{Entry, Outcome};
use crate::codec;
use crate::error::{Error, Result};
use crate::os::{self, Deadline};
use crate::segment::collect_fds;

/// How a child process is started (Python's start methods).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartMethod {
    /// `fork()`: fastest; closures allowed; see the module docs on threads.
    Fork,
    /// Re-execute this program and run the named `fn(A) -> R` in it.
    Spawn,
    /// Ask a single-threaded server process (this program, exec'd once on
    /// first use) to fork the child: safe in multi-threaded programs, and
    /// cheaper than Spawn after the first child.
    ForkServer,
}

static DEFAULT_METHOD: OnceLock<StartMethod> = OnceLock::new();

/// Sets the process-wide default start method, once (Python's
/// `set_start_method`).
///
/// # Errors
/// [`Error::InvalidArgument`] if it was already set.
///
/// # Examples
///
/// ```
/// use shmproc::{StartMethod, set_start_method, get_start_method};
///
/// set_start_method(StartMethod::Spawn)?;
/// assert_eq!(get_start_method(), StartMethod::Spawn);
/// assert!(set_start_method(StartMethod::Fork).is_err());
/// # Ok::<(), shmproc::Error>(())
/// ```
pub fn set_start_method(method: StartMethod) -> Result<()> {
    DEFAULT_METHOD.set(method).map_err(|_| Error::InvalidArgument { what: "the start method has already been set" })
}

/// The process-wide default start method: [`StartMethod::Fork`] unless
/// [`set_start_method`] chose another.
pub fn get_start_method() -> StartMethod {
    DEFAULT_METHOD.get().copied().unwrap_or(StartMethod::Fork)
}

/// A start method to build processes with (Python's `get_context(method)`).
///
/// # Examples
///
/// ```
/// use shmproc::{get_context, StartMethod};
///
/// fn double(x: u32) -> u32 { x * 2 }
///
/// let ctx = get_context(StartMethod::Fork);
/// let mut p = ctx.process().target(double, 21);
/// p.start()?;
/// assert_eq!(p.join()?, 42);
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

/// A [`Context`] for `method`.
pub fn get_context(method: StartMethod) -> Context {
    Context { method }
}

impl Context {
    /// This context's start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// A process builder that uses this context's start method.
    pub fn process(&self) -> Builder {
        Builder::new().start_method(self.method)
    }
}

/// A description of a process, as `current_process()`, `parent_process()` and
/// `active_children()` return it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: u32,
    /// Its name (`"MainProcess"` for a process not started by shmproc).
    pub name: String,
    /// Whether it is a daemon child.
    pub daemon: bool,
}

/// This process (Python's `current_process()`).
///
/// # Examples
///
/// ```
/// assert_eq!(shmproc::current_process().name, "MainProcess");
/// ```
pub fn current_process() -> ProcessInfo {
    match child::identity() {
        Some(id) => ProcessInfo { pid: os::pid(), name: id.name.clone(), daemon: id.daemon },
        None => ProcessInfo { pid: os::pid(), name: "MainProcess".into(), daemon: false },
    }
}

/// The process that started this one, if shmproc started it (Python's
/// `parent_process()`).
pub fn parent_process() -> Option<ProcessInfo> {
    child::identity().map(|id| ProcessInfo { pid: id.parent_pid, name: "MainProcess".into(), daemon: false })
}

/// Children started by this process that have not been reaped, after reaping
/// those that have exited (Python's `active_children()`).
pub fn active_children() -> Vec<ProcessInfo> {
    let me = os::pid();
    let entries: Vec<Registered> =
        registry().iter().filter(|r| r.registrar == me && r.exitcode.is_none()).cloned().collect();
    entries
        .into_iter()
        .filter(|r| {
            if r.via_server {
                os::task_alive(os::TaskId { tid: r.pid, start: 0 })
            } else {
                matches!(reap(r.pid, false), Ok(None))
            }
        })
        .map(|r| ProcessInfo { pid: r.pid, name: r.name, daemon: r.daemon })
        .collect()
}

/// The number of CPUs this process may run on (Python's `cpu_count()`).
///
/// # Examples
///
/// ```
/// assert!(shmproc::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    os::cpu_count()
}

// ---------------------------------------------------------------------------
// The children registry: every child is reaped exactly once, by whoever asks
// first, and its exit code is kept for the others.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Registered {
    pid: u32,
    /// The pid of the process that started it (a forked child inherits a copy
    /// of this table and must ignore its parent's entries).
    registrar: u32,
    name: String,
    daemon: bool,
    exitcode: Option<i32>,
    /// Forked by the fork server (not our child: we cannot reap it).
    via_server: bool,
}

static CHILDREN: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

fn registry() -> std::sync::MutexGuard<'static, Vec<Registered>> {
    CHILDREN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `f` while no fork of the crate's is under way in this process:
/// `fork_child` holds the registry across its fork, so a child never sees
/// what `f` does half done. `f` must not start a process.
pub(crate) fn without_forks<R>(f: impl FnOnce() -> R) -> R {
    let _held = registry();
    f()
}

/// Reaps `pid` (blocking if asked) and returns its exit code once it has one.
/// The code is kept in the registry for later callers.
fn reap(pid: u32, block: bool) -> Result<Option<i32>> {
    if let Some(code) = registry().iter().find(|r| r.pid == pid).and_then(|r| r.exitcode) {
        return Ok(Some(code));
    }
    match os::reap(pid, block) {
        Ok(Some(code)) => {
            let mut reg = registry();
            if let Some(r) = reg.iter_mut().find(|r| r.pid == pid) {
                r.exitcode = Some(code);
            }
            Ok(Some(code))
        }
        Ok(None) => Ok(None),
        // Someone else reaped it between our look-up and the wait.
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
            Ok(registry().iter().find(|r| r.pid == pid).and_then(|r| r.exitcode))
        }
        Err(e) => Err(Error::io("waitpid", e)),
    }
}

fn forget_child(pid: u32) {
    registry().retain(|r| r.pid != pid);
}

// ---------------------------------------------------------------------------
// Jobs: what a child runs.
// ---------------------------------------------------------------------------

/// What to run in the child.
trait Job: Send {
    /// Runs it in this (forked) process.
    fn run_here(self: Box<Self>) -> Outcome;
    /// The spawn form: the entry, encoded arguments, and the descriptors the
    /// arguments' anonymous handles refer to.
    fn spawn_parts(&self) -> Result<(Entry, Vec<u8>, Vec<RawFd>)>;
}

struct TargetJob<A, R> {
    f: fn(A) -> R,
    args: A,
}

impl<A, R> Job for TargetJob<A, R>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    fn run_here(self: Box<Self>) -> Outcome {
        let TargetJob { f, args } = *self;
        target::run_caught(move || f(args))
    }

    fn spawn_parts(&self) -> Result<(Entry, Vec<u8>, Vec<RawFd>)> {
        let (bytes, fds) = collect_fds(|| codec::encode(&self.args));
        Ok((Entry::new(self.f), bytes?, fds))
    }
}

struct ClosureJob<F>(F);

impl<F, R> Job for ClosureJob<F>
where
    F: FnOnce() -> R + Send + 'static,
    R: Serialize,
{
    fn run_here(self: Box<Self>) -> Outcome {
        target::run_caught(self.0)
    }

    fn spawn_parts(&self) -> Result<(Entry, Vec<u8>, Vec<RawFd>)> {
        Err(Error::InvalidArgument { what: "a closure target needs the Fork start method; use a fn(A) -> R target" })
    }
}

// ---------------------------------------------------------------------------
// Builder and Process.
// ---------------------------------------------------------------------------

/// Configures a [`Process`] (Python's `Process(name=, daemon=)` and the start
/// method), then takes its target.
///
/// # Examples
///
/// ```
/// use shmproc::{Process, StartMethod};
///
/// fn greet(who: String) -> String { format!("hello, {who}") }
///
/// let mut p = Process::builder().name("greeter").start_method(StartMethod::Fork).target(greet, "world".into());
/// p.start()?;
/// assert_eq!(p.join()?, "hello, world");
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
}

impl Builder {
    /// Defaults: a generated name, not a daemon, the default start method.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A daemon child is killed as soon as its parent process exits, even if the
    /// parent dies by `SIGKILL`.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// The start method (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// A process that will run `f(args)`; works with every start method.
    pub fn target<A, R>(self, f: fn(A) -> R, args: A) -> Process<R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.build(Box::new(TargetJob { f, args }))
    }

    /// A process that will run the closure `f`; [`StartMethod::Fork`] only
    /// (`start` fails with another method).
    pub fn closure<R, F>(self, f: F) -> Process<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.build(Box::new(ClosureJob(f)))
    }

    fn build<R>(self, job: Box<dyn Job>) -> Process<R> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let name = self
            .name
            .unwrap_or_else(|| format!("Process-{}", COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        Process {
            name,
            daemon: self.daemon,
            method: self.method.unwrap_or_else(get_start_method),
            job: Some(job),
            child: None,
            taken: false,
            _result: PhantomData,
        }
    }
}

/// A started child.
struct Running {
    pid: u32,
    cell: ResultCell,
    /// Readable once the child exits (for timed joins).
    pidfd: Option<OwnedFd>,
    exitcode: Option<i32>,
    /// Forked by the fork server: it reaps the child and writes the exit code
    /// into `cell`.
    via_server: bool,
    /// The arguments of a spawned child, kept until it has exited: a named
    /// handle among them must keep its name until the child has opened it.
    args: Option<Box<dyn Job>>,
}

impl Running {
    /// The exit code if the child has exited, without waiting.
    fn poll(&mut self) -> Result<Option<i32>> {
        if self.exitcode.is_none() {
            self.exitcode = if self.via_server { self.cell.exit() } else { reap(self.pid, false)? };
        }
        Ok(self.exitcode)
    }

    /// Waits for the exit until `deadline`; `None` if it is still running then.
    fn wait(&mut self, deadline: Option<Deadline>) -> Result<Option<i32>> {
        loop {
            if let Some(code) = self.poll()? {
                return Ok(Some(code));
            }
            if deadline.is_some_and(Deadline::has_passed) {
                return Ok(None);
            }
            if self.via_server {
                // Sleep on the cell in slices: if the server itself died, no
                // one will ever write the code; the child's pidfd says whether
                // the child is gone too.
                let slice = Deadline::after(Duration::from_millis(100));
                if self.cell.wait_exit(Some(deadline.map_or(slice, |d| d.min(slice)))).is_none()
                    && self
                        .pidfd
                        .as_ref()
                        .is_some_and(|fd| os::wait_readable(fd, Some(Deadline::now())).unwrap_or(false))
                    && self.cell.wait_exit(Some(Deadline::after(Duration::from_secs(1)))).is_none()
                {
                    self.exitcode = Some(UNKNOWN_EXIT);
                }
                continue;
            }
            if deadline.is_none() {
                // An untimed wait needs no pidfd: a blocking waitpid.
                self.exitcode = reap(self.pid, true)?;
                continue;
            }
            if self.pidfd.is_none() {
                // Our unreaped child: its pid cannot have been reused.
                self.pidfd = os::pidfd(self.pid).ok();
            }
            match &self.pidfd {
                Some(fd) => {
                    if !os::wait_readable(fd, deadline).map_err(|e| Error::io("poll(pidfd)", e))? {
                        return Ok(None);
                    }
                }
                None if deadline.is_none() => self.exitcode = reap(self.pid, true)?,
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
}

/// The exit code reported when a fork server died before recording a child's.
const UNKNOWN_EXIT: i32 = i32::MIN;

/// A child process running a target and returning its `R` (Python's
/// `multiprocessing.Process`).
///
/// Dropping a started `Process` that was not joined leaves the child running;
/// a background thread reaps it when it exits, so no zombie remains.
///
/// # Examples
///
/// ```
/// use shmproc::Process;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let mut p = Process::new(square, 12);
/// p.start()?;
/// assert_eq!(p.join()?, 144);
/// # Ok::<(), shmproc::Error>(())
/// ```
pub struct Process<R> {
    name: String,
    daemon: bool,
    method: StartMethod,
    job: Option<Box<dyn Job>>,
    child: Option<Running>,
    /// The result has been handed out by a join.
    taken: bool,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("method", &self.method)
            .field("pid", &self.child.as_ref().map(|c| c.pid))
            .finish_non_exhaustive()
    }
}

impl Process<()> {
    /// A [`Builder`], to set a name, daemon flag or start method.
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl<R: Serialize + DeserializeOwned + 'static> Process<R> {
    /// A process that will run `f(args)` with the defaults (Python's
    /// `Process(target=f, args=args)`).
    pub fn new<A>(f: fn(A) -> R, args: A) -> Self
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        Builder::new().target(f, args)
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is a daemon.
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// Its start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// Its pid, once started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid)
    }

    /// Starts the child.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if already started, or for a closure with a
    /// start method other than Fork; [`Error::Codec`] if the arguments do not
    /// encode (an anonymous handle inside them, outside a spawn, say);
    /// [`Error::Io`] if the system refuses a process.
    pub fn start(&mut self) -> Result<()> {
        let Some(job) = self.job.take() else {
            return Err(Error::InvalidArgument { what: "the process was already started" });
        };
        let identity = Identity { name: self.name.clone(), daemon: self.daemon, parent_pid: os::pid() };
        let cell = ResultCell::new()?;
        let (launched, args) = match self.method {
            StartMethod::Fork => (fork_child(job, cell, identity), None),
            StartMethod::Spawn | StartMethod::ForkServer => {
                let launched = exec_child(job.as_ref(), cell, identity, self.method == StartMethod::ForkServer);
                (launched, Some(job))
            }
        };
        let (pid, cell) = match launched {
            Ok(x) => x,
            Err((e, job)) => {
                self.job = job.or(args);
                return Err(e);
            }
        };
        registry().push(Registered {
            pid,
            registrar: os::pid(),
            name: self.name.clone(),
            daemon: self.daemon,
            exitcode: None,
            via_server: self.method == StartMethod::ForkServer,
        });
        let via_server = self.method == StartMethod::ForkServer;
        // A direct child's pidfd is opened on the first timed wait; the fork
        // server's children need one now (not ours: their pid may be reused).
        let pidfd = if via_server { os::pidfd(pid).ok() } else { None };
        self.child = Some(Running { pid, cell, pidfd, exitcode: None, via_server, args });
        Ok(())
    }

    /// Drops the copy of a spawned child's arguments kept until it exits,
    /// for a caller that knows the child has opened every handle in them (a
    /// pool's worker that said it is ready): a pipe end among them would
    /// otherwise keep the child's end alive here.
    pub(crate) fn release_args(&mut self) {
        if let Some(child) = self.child.as_mut() {
            child.args = None;
        }
    }

    /// Whether the child has started and not yet exited.
    pub fn is_alive(&mut self) -> bool {
        self.child.is_some() && matches!(self.poll_exit(), Ok(None))
    }

    /// Python's `exitcode`: `None` while running (or not started), else the exit
    /// status, or minus the number of the signal that killed it.
    pub fn exitcode(&mut self) -> Option<i32> {
        self.poll_exit().ok().flatten()
    }

    /// Sends `SIGTERM` (Python's `terminate()`).
    pub fn terminate(&mut self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Sends `SIGKILL` (Python's `kill()`).
    pub fn kill(&mut self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    fn signal(&mut self, sig: i32) -> Result<()> {
        if self.poll_exit()?.is_some() {
            return Ok(()); // already exited: nothing to signal (as in Python)
        }
        let pid = self.running()?.pid;
        os::signal(pid, sig).map_err(|e| Error::io("kill", e))
    }

    fn running(&mut self) -> Result<&mut Running> {
        self.child.as_mut().ok_or(Error::InvalidArgument { what: "the process has not been started" })
    }

    /// The exit code if the child has exited (reaping it), without waiting.
    fn poll_exit(&mut self) -> Result<Option<i32>> {
        self.running()?.poll()
    }

    /// Waits until the child exits and returns what its target returned.
    ///
    /// # Errors
    /// [`Error::ChildFailed`] if the target panicked (with its message), the
    /// child was killed by a signal (naming it), or it exited without
    /// reporting; [`Error::InvalidArgument`] if not started or already joined;
    /// [`Error::Codec`] if the result does not decode as `R`.
    pub fn join(&mut self) -> Result<R> {
        match self.join_until(None)? {
            Some(r) => Ok(r),
            None => Err(Error::Timeout),
        }
    }

    /// As [`Process::join`], waiting at most `timeout`: `Ok(None)` if the child
    /// is still running then.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<R>> {
        self.join_until(Some(Deadline::after(timeout)))
    }

    fn join_until(&mut self, deadline: Option<Deadline>) -> Result<Option<R>> {
        if self.taken {
            return Err(Error::InvalidArgument { what: "the result was already taken by an earlier join" });
        }
        let child = self.running()?;
        let Some(code) = child.wait(deadline)? else { return Ok(None) };
        child.args = None; // the child has exited: its arguments may go
        let pid = child.pid;
        let outcome = child.cell.read();
        forget_child(pid);
        self.taken = true;
        let (state, payload) = outcome?;
        match state {
            RETURNED => codec::decode(&payload).map(Some),
            PANICKED => Err(Error::ChildFailed {
                reason: format!("panicked: {}", String::from_utf8_lossy(&payload)),
                exitcode: Some(code),
            }),
            FAILED => {
                Err(Error::ChildFailed { reason: String::from_utf8_lossy(&payload).into_owned(), exitcode: Some(code) })
            }
            RUNNING => Err(Error::ChildFailed { reason: describe_exit(code), exitcode: Some(code) }),
            other => Err(Error::corrupt("result cell", format!("unknown state {other}"))),
        }
    }
}

/// Why a child that reported nothing ended.
pub(crate) fn describe_exit(code: i32) -> String {
    if code == UNKNOWN_EXIT {
        "exited, but the fork server died before reporting its exit status".to_owned()
    } else if code < 0 {
        let sig = -code;
        let name = match sig {
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGINT => " (SIGINT)",
            _ => "",
        };
        format!("killed by signal {sig}{name}")
    } else {
        format!("exited with status {code} without reporting a result")
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let args = child.args.take();
        if child.exitcode.is_some_and(|code| code != UNKNOWN_EXIT) {
            // Reaped (by us or the fork server): nothing writes the cell any more.
            forget_child(child.pid);
            child.cell.recycle();
            return;
        }
        if child.exitcode.is_some() || self.taken {
            forget_child(child.pid);
            return;
        }
        if child.via_server {
            forget_child(child.pid); // the fork server reaps its own children
            // Keep the arguments until the child has exited (its pidfd says so).
            if let (Some(args), Some(pidfd)) = (args, child.pidfd) {
                let _ = std::thread::Builder::new().name("shmproc-args".into()).spawn(move || {
                    let _ = os::wait_readable(&pidfd, None);
                    drop(args);
                });
            }
            return;
        }
        let pid = child.pid;
        // Reap it when it exits, so that no zombie remains; its arguments stay
        // alive until then.
        let reaper = std::thread::Builder::new().name("shmproc-reaper".into()).spawn(move || {
            let _ = reap(pid, true);
            forget_child(pid);
            drop(args);
        });
        if reaper.is_err() {
            // No thread to be had: reap now if it has already exited.
            let _ = reap(pid, false);
        }
    }
}

/// A started child's pid and result cell, or why it could not start (with the
/// job handed back when it was not consumed).
type Launch = std::result::Result<(u32, ResultCell), (Error, Option<Box<dyn Job>>)>;

/// Forks a child that runs `job` and reports into `cell`.
fn fork_child(job: Box<dyn Job>, mut cell: ResultCell, identity: Identity) -> Launch {
    // Fork with the registry's and the fork server's locks held by this thread,
    // so that the child does not inherit them held by a thread it lacks.
    let (forked, inherited) = crate::manager::around_fork(
        || {
            let held = (registry(), forkserver::hold());
            let forked = os::fork();
            drop(held);
            forked
        },
        |forked| matches!(forked, Ok(os::Forked::Child)),
    );
    match forked {
        Err(e) => Err((Error::io("fork", e), Some(job))),
        Ok(os::Forked::Child) => {
            let daemon = identity.daemon;
            let parent = identity.parent_pid;
            child::set_identity(identity);
            if daemon {
                child::watch_parent(parent, child::Parent::Direct);
            }
            // The manager objects it has proxies of, copied from the parent.
            inherited.attach();
            let me = os::pid();
            let outcome = job.run_here();
            let code = child::report(&mut cell, outcome, me);
            os::exit_now(code)
        }
        Ok(os::Forked::Parent(pid)) => Ok((pid, cell)),
    }
}

/// Starts a child that runs `job`'s entry in a fresh copy of this program:
/// exec'd directly (spawn) or forked by the fork server.
fn exec_child(job: &dyn Job, cell: ResultCell, identity: Identity, via_server: bool) -> Launch {
    let fail = |e| (e, None);
    let (entry, args, handle_fds) = job.spawn_parts().map_err(fail)?;
    let bytes = codec::encode(&Bootstrap { entry, args, identity }).map_err(fail)?;
    let boot = std::fs::File::from(os::memfd("shmproc-bootstrap", 0).map_err(|e| fail(Error::io("memfd_create", e)))?);
    boot.write_all_at(&bytes, 0).map_err(|e| fail(Error::io("write bootstrap", e)))?;
    // The child gets [bootstrap, result cell, handles...], in this order.
    let mut fds: Vec<RawFd> = vec![boot.as_fd().as_raw_fd(), cell.fd().as_raw_fd()];
    fds.extend(handle_fds);
    let pid = if via_server {
        // SAFETY: every number in `fds` is an open descriptor owned by `boot`,
        // `cell`, or a handle inside `job`'s arguments, all alive until the
        // server has received its copies (the reply comes after that).
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|fd| unsafe { BorrowedFd::borrow_raw(*fd) }).collect();
        forkserver::launch(&borrowed).map_err(fail)?
    } else {
        spawn_exec(&fds).map_err(fail)?
    };
    drop(boot);
    Ok((pid, cell))
}

/// Re-executes this program with `fds` inherited and listed in the environment.
fn spawn_exec(fds: &[RawFd]) -> Result<u32> {
    let list = fds.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    // If the startup hook did not run (it always does in a program linking
    // shmproc), these arguments make a test harness run no test.
    os::spawn_self(&["--exact", "__shmproc_spawned_child__", "--quiet"], (child::SPAWN_ENV, &list), fds)
        .map_err(|e| Error::io("posix_spawn", e))
}
