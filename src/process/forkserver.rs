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

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::Mutex;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

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
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !anc.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("too many descriptors for one request"));
    }
    rustix::net::sendmsg(sock, &[std::io::IoSlice::new(b"R")], &mut anc, SendFlags::NOSIGNAL)
        .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))?;
    let mut reply = [0u8; 4];
    let got = rustix::io::read(sock, &mut reply).map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))?;
    if got != 4 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the fork server closed the socket"));
    }
    Ok(u32::from_le_bytes(reply))
}

/// Starts a server: this executable again, with [`SERVER_ENV`] naming its end
/// of a fresh socket pair.
fn start() -> Result<Server> {
    let (ours, theirs) =
        rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
            .map_err(|e| Error::io("socketpair", std::io::Error::from_raw_os_error(e.raw_os_error())))?;
    let fd = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.args(["--exact", "__shmproc_fork_server__", "--quiet"]);
    cmd.env(SERVER_ENV, fd.to_string());
    // SAFETY: runs between fork and exec; only an fcntl on a descriptor number.
    unsafe {
        cmd.pre_exec(move || os::inherit_on_exec(fd));
    }
    let child = cmd.spawn().map_err(|e| Error::io("spawn fork server", e))?;
    drop(theirs);
    Ok(Server { sock: ours, pid: child.id(), owner: os::pid() })
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
    use rustix::event::{PollFd, PollFlags};
    let client = os::parent_pid();
    let client_fd = os::pidfd(client).map_err(|e| format!("pidfd of the client {client}: {e}"))?;
    let mut children: Vec<Forked> = Vec::new();
    loop {
        let mut polls = Vec::with_capacity(children.len() + 2);
        polls.push(PollFd::new(sock, PollFlags::IN));
        polls.push(PollFd::new(&client_fd, PollFlags::IN));
        polls.extend(children.iter().map(|c| PollFd::new(&c.pidfd, PollFlags::IN)));
        match rustix::event::poll(&mut polls, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let ready: Vec<bool> = polls.iter().map(|p| !p.revents().is_empty()).collect();
        drop(polls);
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
            match receive(sock)? {
                None => return Ok(()), // the client closed its end
                Some(fds) => {
                    let (pid, forked) = fork_one(sock, fds);
                    if let Some(f) = forked {
                        children.push(f);
                    }
                    let _ = rustix::io::write(sock, &pid.to_le_bytes());
                }
            }
        }
    }
}

/// Receives one request's descriptors; `None` at end of stream.
fn receive(sock: &OwnedFd) -> std::result::Result<Option<Vec<OwnedFd>>, String> {
    let mut byte = [0u8; 1];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match rustix::net::recvmsg(sock, &mut [IoSliceMut::new(&mut byte)], &mut anc, RecvFlags::CMSG_CLOEXEC) {
            Ok(m) => break m,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("recvmsg: {e}")),
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
        return Ok(Some(Vec::new())); // too many descriptors: refuse (fork_one fails it)
    }
    Ok(Some(fds))
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
            // SAFETY: closing our copy of the descriptor in the new process;
            // the OwnedFd that owns the number is never used again here.
            unsafe { libc::close(sock.as_fd().as_raw_fd()) };
            let code = child::run_child(fds, Parent::ViaServer).unwrap_or(child::EXIT_FAILED);
            os::exit_now(code)
        }
        Ok(os::Forked::Parent(pid)) => match os::pidfd(pid) {
            Ok(pidfd) => (pid, Some(Forked { pid, pidfd, cell })),
            Err(_) => (pid, None),
        },
    }
}
