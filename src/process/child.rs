//! What runs in a child: the spawned-child bootstrap, the daemon watch, and the
//! identity that `current_process()` reports.
//!
//! A spawned child is this same executable, re-exec'd with the environment
//! variable [`SPAWN_ENV`] naming an inherited descriptor that holds the
//! [`Bootstrap`]. A constructor in `.init_array` (run by the loader before
//! `main`, and before the test harness in `cargo test` binaries) notices the
//! variable, runs the target and exits; `main` never runs. So spawning needs no
//! set-up line in the user's program.

use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicPtr;

use serde::{Deserialize, Serialize};

use super::result::{FAILED, PANICKED, RETURNED, ResultCell};
use super::target::{Entry, Outcome};
use crate::codec;
use crate::loom::Ordering;
use crate::os;
use crate::segment::provide_fds;

/// Lists the inherited descriptors of a spawned child (`"boot,result,handles..."`).
pub(crate) const SPAWN_ENV: &str = "SHMPROC_SPAWN_BOOTSTRAP";

/// Largest bootstrap a child accepts (the arguments travel inside it).
const MAX_BOOTSTRAP: u64 = 1 << 32;

/// Exit status of a child whose target panicked (Python: an uncaught exception).
pub(crate) const EXIT_PANIC: i32 = 1;
/// Exit status of a child that could not run its target.
pub(crate) const EXIT_FAILED: i32 = 2;

/// Everything a spawned child needs, encoded into a memfd that it inherits
/// (spawn) or receives (fork server) together with its result cell and the
/// descriptors its arguments' anonymous handles refer to, in that order.
#[derive(Serialize, Deserialize)]
pub(crate) struct Bootstrap {
    pub(crate) entry: Entry,
    pub(crate) args: Vec<u8>,
    pub(crate) identity: Identity,
}

/// Who a shmproc child is (what `current_process()` and `parent_process()` say).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) parent_pid: u32,
}

/// Set once in a child (after fork, or by the spawn bootstrap); null in the
/// main process. An atomic pointer, not a lock: a forked child must not touch a
/// lock that another thread of its parent may have held at fork time.
static IDENTITY: AtomicPtr<Identity> = AtomicPtr::new(std::ptr::null_mut());

/// Records this process's identity (in the child, once).
pub(crate) fn set_identity(identity: Identity) {
    let p = Box::into_raw(Box::new(identity));
    // The previous identity (a parent's, copied by fork) is leaked on purpose:
    // another thread could be reading it. Release: pairs with `identity`.
    IDENTITY.store(p, Ordering::Release);
}

/// This process's identity, if it is a shmproc child.
pub(crate) fn identity() -> Option<&'static Identity> {
    let p = IDENTITY.load(Ordering::Acquire);
    // SAFETY: a non-null pointer came from Box::into_raw in `set_identity` and
    // is never freed.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// In a daemon child: a thread that kills this process as soon as its parent
/// exits, whatever the reason (a `SIGKILL` included). A pidfd is watched rather
/// than `PR_SET_PDEATHSIG`, which fires when the parent *thread* that forked us
/// exits (every test in `cargo test` runs on its own thread). If the parent is
/// already gone (we were re-parented), we exit at once.
pub(crate) fn watch_parent(parent: u32, relation: Parent) {
    let pidfd = os::pidfd(parent);
    if relation == Parent::Direct && os::parent_pid() != parent {
        die_with_parent();
    }
    let Ok(pidfd) = pidfd else { die_with_parent() };
    let spawned = std::thread::Builder::new().name("shmproc-daemon-watch".into()).spawn(move || {
        let _ = os::wait_readable(&pidfd, None);
        die_with_parent();
    });
    if spawned.is_err() {
        die_with_parent();
    }
}

fn die_with_parent() -> ! {
    let _ = os::signal(os::pid(), libc::SIGKILL);
    os::exit_now(-libc::SIGKILL & 0xff)
}

/// Stores `outcome` in the cell; returns the exit status the child should end with.
///
/// `child` is the pid the cell was made for: a process that a target forked
/// itself and that returned through the same code path must not write into the
/// cell (its parent may already have recycled it for another child).
pub(crate) fn report(cell: &mut ResultCell, outcome: Outcome, child: u32) -> i32 {
    let (state, payload, code) = match outcome {
        Outcome::Returned(bytes) => (RETURNED, bytes, 0),
        Outcome::Panicked(msg) => (PANICKED, msg.into_bytes(), EXIT_PANIC),
        Outcome::Failed(msg) => (FAILED, msg.into_bytes(), EXIT_FAILED),
    };
    if os::pid() != child {
        return code;
    }
    match cell.publish(state, &payload) {
        Ok(()) => code,
        Err(_) => EXIT_FAILED,
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static STARTUP_HOOK: extern "C" fn() = startup_hook;

/// Runs before `main`: a spawned child runs its target here and exits; a fork
/// server serves here until its client goes away. Any other process returns at
/// once (one environment look-up).
extern "C" fn startup_hook() {
    // Before anything here can fork (see `os::register_fork_handlers`).
    os::register_fork_handlers();
    if let Some(value) = take_env(SPAWN_ENV) {
        let code = match parse_fds(&value).and_then(|fds| run_child(fds, Parent::Direct)) {
            Ok(code) => code,
            Err(msg) => {
                eprintln!("shmproc: spawned child could not start: {msg}");
                EXIT_FAILED
            }
        };
        os::exit_now(code);
    }
    if let Some(value) = take_env(super::forkserver::SERVER_ENV) {
        let code = match parse_fds(&value) {
            Ok(fds) if fds.len() == 1 => super::forkserver::serve(&fds[0]),
            Ok(_) => Err("expected one descriptor".to_owned()),
            Err(e) => Err(e),
        };
        if let Err(msg) = &code {
            eprintln!("shmproc: fork server failed: {msg}");
        }
        os::exit_now(i32::from(code.is_err()));
    }
}

/// Reads and removes the environment variable `name`.
fn take_env(name: &str) -> Option<String> {
    let value = std::env::var_os(name)?;
    // SAFETY: constructors run before `main`, while the process has one
    // thread, so nothing can read the environment concurrently. Removing the
    // variable keeps this process's own children from seeing it.
    unsafe { std::env::remove_var(name) };
    Some(value.to_string_lossy().into_owned())
}

/// Takes ownership of the inherited descriptors listed as `"3,4,7"`.
fn parse_fds(value: &str) -> Result<Vec<OwnedFd>, String> {
    value
        .split(',')
        .map(|n| {
            let fd: RawFd = n.parse().map_err(|_| format!("{n:?} is not a descriptor number"))?;
            os::adopt_fd(fd).map_err(|e| format!("descriptor {fd} was not inherited: {e}"))
        })
        .collect()
}

/// How a child relates to the process that asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Parent {
    /// Its OS parent (fork, spawn).
    Direct,
    /// Another process; the fork server is its OS parent.
    ViaServer,
}

/// Runs a child from its descriptors: `[bootstrap, result cell, handles...]`.
/// Returns the exit status; `Err` only when not even the result cell works.
pub(crate) fn run_child(mut fds: Vec<OwnedFd>, parent: Parent) -> Result<i32, String> {
    let me = os::pid();
    if fds.len() < 2 {
        return Err(format!("{} descriptors handed over, at least 2 expected", fds.len()));
    }
    let handles = fds.split_off(2);
    let result = fds.pop().ok_or("no result descriptor")?;
    let boot = fds.pop().ok_or("no bootstrap descriptor")?;
    let mut cell = ResultCell::from_fd(result).map_err(|e| e.to_string())?;
    let boot = match read_bootstrap(boot) {
        Ok(b) => b,
        Err(msg) => return Ok(report(&mut cell, Outcome::Failed(msg), me)),
    };
    let daemon = boot.identity.daemon;
    let parent_pid = boot.identity.parent_pid;
    set_identity(boot.identity);
    if daemon {
        watch_parent(parent_pid, parent);
    }
    let outcome =
        provide_fds(handles, || boot.entry.call(&boot.args)).unwrap_or_else(|e| Outcome::Failed(e.to_string()));
    Ok(report(&mut cell, outcome, me))
}

fn read_bootstrap(fd: OwnedFd) -> Result<Bootstrap, String> {
    let file = std::fs::File::from(fd);
    let len = os::file_len(&file).map_err(|e| format!("bootstrap size: {e}"))?;
    if len > MAX_BOOTSTRAP {
        return Err(format!("bootstrap of {len} bytes is larger than {MAX_BOOTSTRAP}"));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0).map_err(|e| format!("reading the bootstrap: {e}"))?;
    codec::decode(&bytes).map_err(|e| e.to_string())
}
