//! Forked measuring processes: CPU pinning, exit codes, and the watchdog.
//!
//! The bench binary is single-threaded, so a forked child may run ordinary
//! Rust (allocate, read `/proc`); it never prints, never returns into the
//! parent's code (a panic is caught and turned into an exit code) and leaves
//! with `_exit`, so that no destructor or buffered output of the parent runs
//! twice.

use std::fmt;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

/// Exit code: the child could not pin itself.
const EXIT_PIN: i32 = 3;
/// Exit code: the measured operation returned an error.
const EXIT_ERROR: i32 = 4;
/// Exit code: the child panicked.
const EXIT_PANIC: i32 = 5;

/// The CPUs this process may run on (its affinity mask), ascending.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain bits; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) } != 0 {
        return Vec::new();
    }
    // SAFETY: every index is below CPU_SETSIZE, the bit count of `set`.
    (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
}

/// Restricts the calling thread (of a single-threaded process: the process)
/// to `cpu`; `false` if the kernel refused.
pub(crate) fn pin_self(cpu: usize) -> bool {
    if cpu >= libc::CPU_SETSIZE as usize {
        return false;
    }
    // SAFETY: `cpu_set_t` is plain bits; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) == 0 }
}

/// A forked child, with a pidfd to wait for it with a timeout.
#[derive(Debug)]
pub(crate) struct Child {
    /// What it does, for error messages ("driver", "echo").
    role: &'static str,
    pid: libc::pid_t,
    /// Readable once the child has exited.
    pidfd: OwnedFd,
    /// Set once reaped; a reaped pid may belong to someone else: never signal it.
    reaped: bool,
}

/// Why a child did not finish cleanly.
#[derive(Debug)]
pub(crate) enum ChildError {
    /// `fork` or `pidfd_open` failed.
    Spawn(std::io::Error),
    /// Still running at the deadline (these roles): killed.
    Hung(String),
    /// Exited other than with status 0.
    Failed { role: &'static str, how: String },
}

impl fmt::Display for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildError::Spawn(e) => write!(f, "could not start a child: {e}"),
            ChildError::Hung(roles) => write!(f, "watchdog: killed the hung {roles}"),
            ChildError::Failed { role, how } => write!(f, "the {role} process {how}"),
        }
    }
}

/// Forks a child that pins itself to `cpu` (if any), runs `body` and exits:
/// status 0 if `body` returned `Ok`.
pub(crate) fn fork<F>(role: &'static str, cpu: Option<usize>, body: F) -> Result<Child, ChildError>
where
    F: FnOnce() -> shmproc::Result<()>,
{
    // Whatever the parent buffered must not be written twice (the child never
    // flushes: it leaves with `_exit`, but be tidy about what it inherits).
    let _ = std::io::stdout().flush();
    // SAFETY: this process is single-threaded (the bench starts no threads), so
    // the child may run any code; it leaves only through `_exit` below.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(ChildError::Spawn(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // Child: nothing may print or unwind into the parent's code.
        panic::set_hook(Box::new(|_| {}));
        let code = match cpu {
            Some(cpu) if !pin_self(cpu) => EXIT_PIN,
            _ => match panic::catch_unwind(AssertUnwindSafe(body)) {
                Ok(Ok(())) => 0,
                Ok(Err(_)) => EXIT_ERROR,
                Err(_) => EXIT_PANIC,
            },
        };
        // SAFETY: `_exit` ends the process at once, without running the
        // parent's atexit handlers or flushing inherited buffers.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: plain system call on a pid we just created; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        // SAFETY: signals and reaps our own child, not reaped before.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(ChildError::Spawn(err));
    }
    // SAFETY: `pidfd_open` returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    Ok(Child { role, pid, pidfd, reaped: false })
}

impl Child {
    /// Waits for the exit (it has happened or is imminent) and decodes it.
    fn reap(&mut self) -> Result<(), ChildError> {
        let mut status = 0;
        // SAFETY: our own child's pid, not yet reaped; `status` is writable.
        let r = unsafe { libc::waitpid(self.pid, &raw mut status, 0) };
        self.reaped = true;
        if r != self.pid {
            let how = format!("could not be waited for: {}", std::io::Error::last_os_error());
            return Err(ChildError::Failed { role: self.role, how });
        }
        let how = if libc::WIFEXITED(status) {
            match libc::WEXITSTATUS(status) {
                0 => return Ok(()),
                EXIT_PIN => "could not pin itself to its CPU (see --pin)".to_owned(),
                EXIT_ERROR => "got an error from the measured operation".to_owned(),
                EXIT_PANIC => "panicked".to_owned(),
                code => format!("exited with status {code}"),
            }
        } else {
            format!("was killed by signal {}", libc::WTERMSIG(status))
        };
        Err(ChildError::Failed { role: self.role, how })
    }

    /// SIGKILLs the child (if not reaped yet) and reaps it.
    fn kill_and_reap(&mut self) {
        if !self.reaped {
            // SAFETY: signals our own unreaped child, whose pid cannot be reused.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.reap();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Waits until every child has exited cleanly, or kills them all: at the
/// deadline (a hang), or as soon as one fails (its peer would wait forever).
///
/// # Errors
/// The first failure: which child hung, or how one exited.
pub(crate) fn wait_all(mut children: Vec<Child>, deadline: Instant) -> Result<(), ChildError> {
    loop {
        let mut fds: Vec<libc::pollfd> = children
            .iter()
            .filter(|c| !c.reaped)
            .map(|c| libc::pollfd { fd: c.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        if fds.is_empty() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let hung: Vec<&str> = children.iter().filter(|c| !c.reaped).map(|c| c.role).collect();
            let roles = format!("{} process{}", hung.join(" and "), if hung.len() > 1 { "es" } else { "" });
            return Err(ChildError::Hung(roles)); // dropping `children` kills them
        }
        let timeout = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n <= 0 {
            continue; // timeout (re-checked above) or EINTR
        }
        for fd in fds.iter().filter(|p| p.revents != 0) {
            let child = children.iter_mut().find(|c| c.pidfd.as_raw_fd() == fd.fd).expect("polled fds are ours");
            child.reap()?; // on error, dropping `children` kills the rest
        }
    }
}
