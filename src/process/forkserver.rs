//! The fork server: a clean, single-threaded copy of this program that forks
//! children on request ([`StartMethod::ForkServer`](super::StartMethod)).
//!
//! # Why it exists
//!
//! `fork()` in a multi-threaded program copies only the calling thread; every
//! lock another thread held at that instant (stdout's, the allocator's in some
//! libcs, any `Mutex`) stays locked forever in the child. Spawn avoids that by
//! exec'ing afresh, but pays for a whole program start per child. The fork
//! server is exec'd once, on first use, and never starts a thread, so forking
//! *it* is always safe and costs only a fork.
//!
//! # Protocol
//!
//! The client (the process that wants a child) and the server share a
//! `SOCK_SEQPACKET` Unix socket pair; it carries only control messages and
//! descriptors, never payload. A request is the byte `b'R'` with descriptors
//! `[bootstrap memfd, result cell, handles...]` attached (`SCM_RIGHTS`); the
//! server forks, the child runs [`run_child`] on those descriptors, and the
//! server replies with the child's pid (4 bytes, little-endian) or 0 if the
//! fork failed. The server reaps its children through pidfds and writes each
//! one's exit code into its result cell, where the client waits for it. The
//! server exits when its client exits (a pidfd on it) or closes the socket.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use super::child::{self, Parent};
use super::result::ResultCell;
use crate::error::{Error, Result};
use crate::os;

/// Names the server's end of the socket (an inherited descriptor).
pub(crate) const SERVER_ENV: &str = "SHMPROC_FORKSERVER_SOCKET";

/// Most descriptors one request may carry (bootstrap, result, handles).
const MAX_FDS: usize = 250;

struct Server {
    sock: OwnedFd,
    pid: u32,
    /// The process that started it. A forked child inherits this state but
    /// must not share the socket: replies would go to whichever process reads
    /// first.
    owner: u32,
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

/// Holds the server state's lock (across a `fork`, so that the child does not
/// inherit it locked by a thread it does not have).
pub(crate) fn hold() -> std::sync::MutexGuard<'static, Option<impl Sized>> {
    SERVER.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Asks the fork server (started on first use, restarted if it died) to fork a
/// child from `fds` = `[bootstrap, result cell, handles...]`; returns its pid.
pub(crate) fn launch(fds: &[BorrowedFd<'_>]) -> Result<u32> {
    let mut server = SERVER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if server.as_ref().is_some_and(|s| s.owner != os::pid()) {
        // Inherited through fork: our parent's server. Close our copy of its
        // socket (the parent keeps its own) and start one of our own.
        *server = None;
    }
    for attempt in 0..2 {
        if server.is_none() {
            *server = Some(start()?);
        }
        let Some(s) = server.as_ref() else { continue };
        match request(&s.sock, fds) {
            Ok(0) => return Err(Error::io("fork (in the fork server)", std::io::Error::other("fork failed"))),
            Ok(pid) => return Ok(pid),
            Err(e) if attempt == 0 => {
                // The server died (or was killed): reap it and start another.
                if let Some(dead) = server.take() {
                    let _ = os::signal(dead.pid, libc::SIGKILL);
                    let _ = os::reap(dead.pid, true);
                }
                let _ = e;
            }
            Err(e) => return Err(Error::io("fork server request", e)),
        }
    }
    Err(Error::io("fork server request", std::io::Error::other("no fork server")))
}

fn request(sock: &OwnedFd, fds: &[BorrowedFd<'_>]) -> std::io::Result<u32> {
    os::send_fds(sock, b'R', fds)?;
    let mut reply = [0u8; 4];
    if !os::read_message(sock, &mut reply)? {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the fork server closed the socket"));
    }
    Ok(u32::from_le_bytes(reply))
}

/// Starts a server: this executable again, with [`SERVER_ENV`] naming its end
/// of a fresh socket pair.
fn start() -> Result<Server> {
    let (ours, theirs) = os::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
    let fd = theirs.as_raw_fd();
    let pid = os::spawn_self(&["--exact", "__shmproc_fork_server__", "--quiet"], (SERVER_ENV, &fd.to_string()), &[fd])
        .map_err(|e| Error::io("spawn fork server", e))?;
    drop(theirs);
    Ok(Server { sock: ours, pid, owner: os::pid() })
}

/// A child the server forked and has not reaped yet.
struct Forked {
    pid: u32,
    pidfd: OwnedFd,
    cell: Option<ResultCell>,
}

/// The server's loop (in the server process, from the startup hook). Returns
/// when the client is gone.
pub(crate) fn serve(sock: &OwnedFd) -> std::result::Result<(), String> {
    let client = os::parent_pid();
    let client_fd = os::pidfd(client).map_err(|e| format!("pidfd of the client {client}: {e}"))?;
    let mut children: Vec<Forked> = Vec::new();
    loop {
        let mut watched = vec![sock.as_fd(), client_fd.as_fd()];
        watched.extend(children.iter().map(|c| c.pidfd.as_fd()));
        let ready = os::poll_readable(&watched).map_err(|e| format!("poll: {e}"))?;
        drop(watched);
        if ready[1] {
            return Ok(()); // the client exited
        }
        // Reap exited children and hand their exit codes to the client.
        let mut i = 0;
        while i < children.len() {
            if ready.get(i + 2) == Some(&true)
                && let Ok(Some(code)) = os::reap(children[i].pid, false)
            {
                let done = children.swap_remove(i);
                if let Some(cell) = &done.cell {
                    cell.set_exit(code);
                }
                continue;
            }
            i += 1;
        }
        if ready[0] {
            match os::recv_fds(sock, MAX_FDS).map_err(|e| format!("recvmsg: {e}"))? {
                None => return Ok(()), // the client closed its end
                Some(fds) => {
                    let (pid, forked) = fork_one(sock, fds);
                    if let Some(f) = forked {
                        children.push(f);
                    }
                    let _ = os::write_all(sock, &pid.to_le_bytes());
                }
            }
        }
    }
}

/// Forks a child for one request. Returns the reply (pid, 0 on failure).
fn fork_one(sock: &OwnedFd, fds: Vec<OwnedFd>) -> (u32, Option<Forked>) {
    if fds.len() < 2 {
        return (0, None);
    }
    let cell = ResultCell::from_fd(match os::dup(&fds[1]) {
        Ok(fd) => fd,
        Err(_) => return (0, None),
    })
    .ok();
    match os::fork() {
        Err(_) => (0, None),
        Ok(os::Forked::Child) => {
            // The child must not keep the server's socket: the client would
            // never see end-of-stream if the server died.
            // (The OwnedFd that owns it is never used again in this process.)
            os::close_inherited_copy(sock);
            let code = child::run_child(fds, Parent::ViaServer).unwrap_or(child::EXIT_FAILED);
            os::exit_now(code)
        }
        Ok(os::Forked::Parent(pid)) => match os::pidfd(pid) {
            Ok(pidfd) => (pid, Some(Forked { pid, pidfd, cell })),
            Err(_) => (pid, None),
        },
    }
}
