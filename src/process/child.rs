//! What runs in a child: the spawned-child bootstrap, the daemon watch, and the
//! identity that `current_process()` reports.
//!
//! A spawned child is this same executable, re-exec'd with the environment
//! variable [`SPAWN_ENV`] naming an inherited descriptor that holds the
//! [`Bootstrap`]. A constructor in `.init_array` (run by the loader before
//! `main`, and before the test harness in `cargo test` binaries) notices the
//! variable, runs the target and exits; `main` never runs. So spawning needs no
//! set-up line in the user's program.

use std::os::fd::RawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicPtr;

use serde::{Deserialize, Serialize};

use super::result::{FAILED, PANICKED, RETURNED, ResultCell};
use super::target::{Entry, Outcome};
use crate::codec;
use crate::loom::Ordering;
use crate::os;
use crate::segment::provide_fds;

/// Names the inherited descriptor of a spawned child's [`Bootstrap`].
pub(crate) const SPAWN_ENV: &str = "SHMPROC_SPAWN_BOOTSTRAP";

/// Largest bootstrap a child accepts (the arguments travel inside it).
const MAX_BOOTSTRAP: u64 = 1 << 32;

/// Exit status of a child whose target panicked (Python: an uncaught exception).
pub(crate) const EXIT_PANIC: i32 = 1;
/// Exit status of a child that could not run its target.
pub(crate) const EXIT_FAILED: i32 = 2;

/// Everything a spawned child needs, encoded into an inherited memfd.
#[derive(Serialize, Deserialize)]
pub(crate) struct Bootstrap {
    pub(crate) entry: Entry,
    pub(crate) args: Vec<u8>,
    /// Inherited descriptors that the arguments' anonymous handles refer to.
    pub(crate) fds: Vec<RawFd>,
    pub(crate) result_fd: RawFd,
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
pub(crate) fn watch_parent(parent: u32) {
    let pidfd = os::pidfd(parent);
    if os::parent_pid() != parent {
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
pub(crate) fn report(cell: &mut ResultCell, outcome: Outcome) -> i32 {
    let (state, payload, code) = match outcome {
        Outcome::Returned(bytes) => (RETURNED, bytes, 0),
        Outcome::Panicked(msg) => (PANICKED, msg.into_bytes(), EXIT_PANIC),
        Outcome::Failed(msg) => (FAILED, msg.into_bytes(), EXIT_FAILED),
    };
    match cell.publish(state, &payload) {
        Ok(()) => code,
        Err(_) => EXIT_FAILED,
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static SPAWN_HOOK: extern "C" fn() = spawn_hook;

/// Runs before `main`: a spawned child runs its target here and exits.
extern "C" fn spawn_hook() {
    let Some(value) = std::env::var_os(SPAWN_ENV) else { return };
    // SAFETY: constructors run before `main`, while the process has one
    // thread, so nothing can read the environment concurrently. Removing the
    // variable keeps this child's own children from seeing it.
    unsafe { std::env::remove_var(SPAWN_ENV) };
    let code = match run_spawned(&value.to_string_lossy()) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("shmproc: spawned child could not start: {msg}");
            EXIT_FAILED
        }
    };
    os::exit_now(code);
}

fn run_spawned(value: &str) -> Result<i32, String> {
    let fd: RawFd = value.parse().map_err(|_| format!("{SPAWN_ENV}={value:?} is not a descriptor number"))?;
    let file = std::fs::File::from(os::adopt_fd(fd).map_err(|e| format!("bootstrap descriptor {fd}: {e}"))?);
    let len = os::file_len(&file).map_err(|e| format!("bootstrap size: {e}"))?;
    if len > MAX_BOOTSTRAP {
        return Err(format!("bootstrap of {len} bytes is larger than {MAX_BOOTSTRAP}"));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0).map_err(|e| format!("reading the bootstrap: {e}"))?;
    let boot: Bootstrap = codec::decode(&bytes).map_err(|e| e.to_string())?;
    let mut cell = ResultCell::from_fd(os::adopt_fd(boot.result_fd).map_err(|e| format!("result descriptor: {e}"))?)
        .map_err(|e| e.to_string())?;
    let mut fds = Vec::with_capacity(boot.fds.len());
    for fd in &boot.fds {
        match os::adopt_fd(*fd) {
            Ok(owned) => fds.push(owned),
            Err(e) => {
                return Ok(report(
                    &mut cell,
                    Outcome::Failed(format!("handle descriptor {fd} was not inherited: {e}")),
                ));
            }
        }
    }
    let daemon = boot.identity.daemon;
    let parent = boot.identity.parent_pid;
    set_identity(boot.identity);
    if daemon {
        watch_parent(parent);
    }
    let outcome = provide_fds(fds, || boot.entry.call(&boot.args)).unwrap_or_else(|e| Outcome::Failed(e.to_string()));
    Ok(report(&mut cell, outcome))
}
