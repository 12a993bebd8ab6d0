//! The cell through which a child hands its result (or its panic) back.
//!
//! An anonymous memfd shared by parent and child: a 64-byte header, then the
//! encoded payload. The child writes the payload, then `len`, then `state` with
//! `Release`; the parent reads `state` with `Acquire` after the child has exited.
//! A payload larger than the file grows it (`ftruncate`; growing a memfd sealed
//! against shrinking is allowed) and maps it anew, so results of any size fit
//! without names that could leak.
//!
//! The parent trusts nothing it reads here: an unknown state or a length past
//! the end of the file is [`Error::Corrupt`].

use crate::loom::{AtomicU32, AtomicU64, Ordering};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use memmap2::MmapRaw;

use crate::error::{Error, Result};
use crate::os;

const HEADER: usize = 64;
const INITIAL_LEN: usize = 4096;

/// The child has not reported (still running, or died first).
pub(crate) const RUNNING: u32 = 0;
/// The target returned; the payload is its encoded result.
pub(crate) const RETURNED: u32 = 1;
/// The target panicked; the payload is the panic message (UTF-8).
pub(crate) const PANICKED: u32 = 2;
/// The child could not run the target; the payload says why (UTF-8).
pub(crate) const FAILED: u32 = 3;

#[repr(C)]
struct Header {
    state: AtomicU32,
    /// 1 once the fork server has reaped the child and stored `exitcode`
    /// (`Release`); a futex word the requesting process sleeps on. Unused by
    /// fork and spawn, whose parent reaps the child itself.
    exited: AtomicU32,
    len: AtomicU64,
    /// Python's exitcode (an `i32`), valid once `exited` is 1.
    exitcode: AtomicU32,
}

/// For the fuzz target `peer_messages`: a result cell whose memfd holds
/// `raw` (at least a header's worth, at most 1 MiB: a child writes its own
/// cell), read as the parent reads it; what it was.
pub(crate) fn fuzz_read(raw: &[u8]) -> &'static str {
    let raw = &raw[..raw.len().min(1 << 20)];
    let len = raw.len().max(HEADER);
    let Ok(fd) = os::memfd("shmproc-fuzz-result", len as u64) else { return "result: no memfd" };
    let mut file = std::fs::File::from(fd);
    if std::io::Write::write_all(&mut file, raw).is_err() {
        return "result: no write";
    }
    let Ok(cell) = ResultCell::from_fd(file.into()) else { return "result: refused" };
    match cell.read() {
        Ok((RUNNING, _)) => "result: running",
        Ok(_) => "result: read",
        Err(Error::Corrupt { .. }) => "result: corrupt",
        Err(_) => "result: error",
    }
}

/// For the fuzz target's seeds: a cell that returned 3 bytes, and one that
/// panicked with a message.
pub(crate) fn fuzz_examples() -> Vec<Vec<u8>> {
    let cell = |state: u32, payload: &[u8]| {
        let mut raw = vec![0u8; HEADER];
        raw[0..4].copy_from_slice(&state.to_le_bytes());
        raw[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        raw.extend_from_slice(payload);
        raw
    };
    vec![cell(RETURNED, &[1, 2, 3]), cell(PANICKED, b"boom")]
}

/// One child's result cell (both sides hold one over the same memfd).
pub(crate) struct ResultCell {
    fd: OwnedFd,
    map: MmapRaw,
}

impl std::fmt::Debug for ResultCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultCell").field("state", &self.header().state.load(Ordering::Relaxed)).finish()
    }
}

impl ResultCell {
    /// A fresh cell (parent side): a recycled one if this process has one.
    pub(crate) fn new() -> Result<Self> {
        if let Some(cell) = take_recycled() {
            return Ok(cell);
        }
        let fd = os::memfd("shmproc-result", INITIAL_LEN as u64).map_err(|e| Error::io("memfd_create", e))?;
        Self::from_fd(fd)
    }

    /// The cell behind an inherited descriptor (spawned child side).
    pub(crate) fn from_fd(fd: OwnedFd) -> Result<Self> {
        let len = os::file_len(&fd).map_err(|e| Error::io("fstat", e))?;
        if len < HEADER as u64 {
            return Err(Error::corrupt("result cell", format!("{len} bytes, less than its header")));
        }
        let len = usize::try_from(len).map_err(|_| Error::corrupt("result cell", "too large"))?;
        let map = os::map_shared(&fd, len).map_err(|e| Error::io("mmap", e))?;
        Ok(ResultCell { fd, map })
    }

    /// Parent side, once the child has exited and been reaped and nothing
    /// else can write the cell: clears it and keeps it for the next child
    /// (saves `memfd_create`, `ftruncate`, `fcntl`, `fstat`, `mmap`, `munmap`, `close`).
    pub(crate) fn recycle(self) {
        let h = self.header();
        h.state.store(RUNNING, Ordering::Relaxed);
        h.exited.store(0, Ordering::Relaxed);
        h.len.store(0, Ordering::Relaxed);
        h.exitcode.store(0, Ordering::Relaxed);
        // try_lock: a forked child of a multi-threaded parent may have
        // inherited the lock held; then the cell is simply dropped.
        if let Ok(mut pool) = RECYCLED.try_lock() {
            let me = os::pid();
            if pool.0 != me {
                *pool = (me, Vec::new()); // inherited through fork: another process's cells
            }
            if pool.1.len() < RECYCLED_MAX {
                pool.1.push(self);
            }
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn header(&self) -> &Header {
        #[allow(clippy::cast_ptr_alignment)] // mmap returns page-aligned memory
        let h = self.map.as_ptr().cast::<Header>();
        // SAFETY: the mapping is page-aligned and at least HEADER bytes (checked
        // at creation); Header is repr(C) atomics, valid for any bytes.
        unsafe { &*h }
    }

    /// The state word (`Acquire`: pairs with the `Release` in `publish`).
    pub(crate) fn state(&self) -> u32 {
        self.header().state.load(Ordering::Acquire)
    }

    /// Fork-server side: records the reaped child's exit code and wakes the
    /// requesting process.
    pub(crate) fn set_exit(&self, code: i32) {
        let h = self.header();
        h.exitcode.store(code as u32, Ordering::Relaxed);
        // Release: publishes `exitcode` to the Acquire load in `exit`.
        h.exited.store(1, Ordering::Release);
        os::futex_wake(&h.exited, i32::MAX as u32);
    }

    /// The exit code the fork server recorded, if it has.
    pub(crate) fn exit(&self) -> Option<i32> {
        let h = self.header();
        (h.exited.load(Ordering::Acquire) == 1).then(|| h.exitcode.load(Ordering::Relaxed) as i32)
    }

    /// Sleeps until the fork server records the exit, or `until`.
    pub(crate) fn wait_exit(&self, until: Option<os::Deadline>) -> Option<i32> {
        let h = self.header();
        if self.exit().is_none() {
            os::futex_wait(&h.exited, 0, until);
        }
        self.exit()
    }

    /// Child side: stores `payload` and then `state`. Called once.
    pub(crate) fn publish(&mut self, state: u32, payload: &[u8]) -> Result<()> {
        let needed = HEADER.checked_add(payload.len()).ok_or(Error::Overflow { what: "result size" })?;
        if needed > self.map.len() {
            // A recycled cell may be longer than our mapping already (an
            // earlier child grew it): grow only; the memfd is sealed
            // against shrinking.
            let file_len = os::file_len(&self.fd).map_err(|e| Error::io("fstat", e))?;
            if needed as u64 > file_len {
                os::set_len(&self.fd, needed as u64).map_err(|e| Error::io("ftruncate", e))?;
            }
            self.map = os::map_shared(&self.fd, needed).map_err(|e| Error::io("mmap", e))?;
        }
        // SAFETY: the mapping holds HEADER + payload.len() bytes (grown above);
        // the parent reads the payload only after the Release store below.
        unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), self.map.as_mut_ptr().add(HEADER), payload.len()) };
        let h = self.header();
        h.len.store(payload.len() as u64, Ordering::Relaxed);
        // Release: publishes the payload and length to the parent's Acquire load.
        h.state.store(state, Ordering::Release);
        Ok(())
    }

    /// Parent side, after the child exited: the state and a copy of the
    /// payload, checked against the file's real size.
    pub(crate) fn read(&self) -> Result<(u32, Vec<u8>)> {
        let state = self.state();
        if state == RUNNING {
            return Ok((RUNNING, Vec::new()));
        }
        if !matches!(state, RETURNED | PANICKED | FAILED) {
            return Err(Error::corrupt("result cell", format!("unknown state {state}")));
        }
        let len = self.header().len.load(Ordering::Relaxed);
        let end = len.checked_add(HEADER as u64).and_then(|e| usize::try_from(e).ok());
        // The common case: the payload lies within our own mapping (the file
        // never shrinks, so the mapping stays valid): no system call.
        if let Some(end) = end.filter(|end| *end <= self.map.len()) {
            let mut out = vec![0u8; end - HEADER];
            // SAFETY: our mapping holds `end` bytes; copying out forms no
            // reference to shared memory.
            unsafe { std::ptr::copy_nonoverlapping(self.map.as_ptr().add(HEADER), out.as_mut_ptr(), out.len()) };
            return Ok((state, out));
        }
        let file_len = os::file_len(&self.fd).map_err(|e| Error::io("fstat", e))?;
        let end = len.checked_add(HEADER as u64).filter(|end| *end <= file_len);
        let Some(end) = end.and_then(|e| usize::try_from(e).ok()) else {
            return Err(Error::corrupt("result cell", format!("payload of {len} bytes in a {file_len}-byte file")));
        };
        let map = os::map_shared(&self.fd, end).map_err(|e| Error::io("mmap", e))?;
        let mut out = vec![0u8; end - HEADER];
        // SAFETY: the new mapping holds `end` bytes; copying out forms no
        // reference to shared memory.
        unsafe { std::ptr::copy_nonoverlapping(map.as_ptr().add(HEADER), out.as_mut_ptr(), out.len()) };
        Ok((state, out))
    }
}

/// Cleared cells of exited children, with the pid of the process they belong
/// to (a forked child inherits the list and must not use its parent's cells).
static RECYCLED: std::sync::Mutex<(u32, Vec<ResultCell>)> = std::sync::Mutex::new((0, Vec::new()));
const RECYCLED_MAX: usize = 8;

fn take_recycled() -> Option<ResultCell> {
    let mut pool = RECYCLED.try_lock().ok()?;
    if pool.0 != os::pid() {
        return None;
    }
    pool.1.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_grown_payloads_round_trip() {
        for size in [0usize, 10, INITIAL_LEN * 3 + 7] {
            let parent = ResultCell::new().unwrap();
            let mut child = ResultCell::from_fd(os::dup(parent.fd()).unwrap()).unwrap();
            assert_eq!(parent.read().unwrap().0, RUNNING);
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            child.publish(RETURNED, &payload).unwrap();
            assert_eq!(parent.read().unwrap(), (RETURNED, payload));
        }
    }

    #[test]
    fn a_lying_length_is_corrupt() {
        let cell = ResultCell::new().unwrap();
        cell.header().len.store(u64::MAX - 3, Ordering::Relaxed);
        cell.header().state.store(RETURNED, Ordering::Release);
        assert!(matches!(cell.read(), Err(Error::Corrupt { .. })));
        cell.header().state.store(99, Ordering::Release);
        assert!(matches!(cell.read(), Err(Error::Corrupt { .. })));
    }
}
