//! Pipes: Python's `Pipe()` and `Connection`, on the byte-record ring.
//!
//! A pipe is one segment holding one ring per direction ([`Direction`]):
//! direction `d` is written by end `d` and read by the other end. A simplex
//! pipe has only direction 1 (end 1 sends, end 0 receives, as Python's
//! `Pipe(duplex=False)` returns `(receiver, sender)`).
//!
//! # Messages of any size
//! A message that fits one record (half the ring, less its header) is one
//! `Whole` record. A larger one is streamed: a `First` record that carries
//! the total length, then `More` records, written as the reader makes room.
//! The reader collects the chunks in its own memory and returns the message
//! only once it is complete, so a reader never sees part of a message.
//!
//! # Writers and readers
//! An end may be held by several processes (a forked copy, a handle passed
//! to a child) and threads. Each direction's writers take turns through an
//! [`OwnerLock`] held for a whole message (its chunks must not interleave
//! with another's), and its readers likewise. A writer killed mid-message
//! leaves chunks that no `First` or `Whole` follows in its place: a reader
//! drops such a partial message as soon as it sees the next message begin,
//! the writers' lock free or held by a dead task, or the end gone. A reader
//! killed mid-message leaves `More` chunks without their `First`: the next
//! reader skips them. Either way one message at most is lost.
//!
//! # End of file
//! Each end knows which processes hold it, two ways:
//! - **Holder records** in the segment ([`Holders`]): a process that makes,
//!   receives or first uses an end records itself (pid and start time), and
//!   takes its record back when its last handle on the end drops. A process
//!   killed keeps its record, which then names a dead process.
//! - **A liveness token** ([`crate::os::token`]): an OS pipe whose write
//!   side every holder keeps open. The kernel closes a process's copies when
//!   it exits, and copies travel as descriptors do: inherited by `fork`,
//!   handed over for spawn.
//!
//! The peer end is gone once it was closed (`close()` marks both directions
//! closed in the segment and wakes every waiter), or once its records name
//! only dead processes, or, when it has no record at all (every holder
//! dropped its handles), once its token is closed everywhere. Records alone
//! would miss a forked child that holds an end it has not used yet (it has
//! no record until then); the token alone would be kept alive by the copies
//! a forked child inherits of every end its parent held, used or not.
//! A waiting reader looks once per probe slice (20 ms): once the peer is
//! gone it takes what was fully sent, then gets [`Error::Closed`]. A waiting
//! writer does the same with the reader and gets `Closed` instead of
//! waiting for room that will never come.

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Control, Waiters};
use crate::codec;
use crate::error::{Error, Result};
use crate::loom::{self, AtomicU64, Ordering};
use crate::os::{self, Deadline, FutexWait, TaskId};
use crate::ring::Padded;
use crate::ring::bytes::{self, Bytes, BytesHeader, FIRST_PREFIX, Frame, Glance, Peeked, Region, Write};
use crate::segment::{Kind, Layout, Shared, SharedState};
use crate::sync::owner::{Acquired, OwnerLock};
use crate::sync::wait::{self, WaitTarget};

/// One direction of a pipe.
#[repr(C)]
#[derive(Debug)]
struct Direction {
    ring: BytesHeader,
    /// `closed`: either end closed the pipe; the sides readers and writers
    /// sleep on.
    ctl: Control,
    /// Held by the writer of a message, for all its chunks.
    writers: Padded<OwnerLock>,
    /// Held by the reader of a message, for all its chunks.
    readers: Padded<OwnerLock>,
}

impl Direction {
    fn zeroed() -> Self {
        Direction {
            ring: BytesHeader::default(),
            ctl: Control::default(),
            writers: Padded(OwnerLock::zeroed()),
            readers: Padded(OwnerLock::zeroed()),
        }
    }
}

/// Records per end of the processes that hold it.
const HOLDERS: usize = 64;

/// The processes that hold an end: their process stamps (`TaskId::stamp` of
/// pid and start time), 0 in a free record. A record is taken (free, or a
/// dead process's) by a process that makes, receives or first uses the end,
/// and given back when its last handle on the end drops.
#[repr(C, align(64))]
#[derive(Debug)]
struct Holders([AtomicU64; HOLDERS]);

impl Holders {
    /// Takes a record for the process `me` (a stamp): its index.
    fn register(&self, me: u64) -> Result<usize> {
        let take = |r: &AtomicU64, dead: bool| {
            let owner = r.load(Ordering::Relaxed);
            (owner == 0 || (dead && owner != me && !loom::task_alive(TaskId::from_stamp(owner))))
                && r.compare_exchange(owner, me, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        };
        (self.0.iter().position(|r| take(r, false)))
            .or_else(|| self.0.iter().position(|r| take(r, true)))
            .ok_or(Error::Overflow { what: "processes holding one end of a pipe (its holder records)" })
    }

    /// Gives back record `i`, if `me` still holds it.
    fn release(&self, i: usize, me: u64) {
        if let Some(r) = self.0.get(i) {
            let _ = r.compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// `None` if no record is taken; else whether one names a live process
    /// (system calls: one liveness check per record).
    fn any_alive(&self) -> Option<bool> {
        let mut taken = self.0.iter().map(|r| r.load(Ordering::Acquire)).filter(|&s| s != 0).peekable();
        taken.peek()?;
        Some(taken.any(|s| loom::task_alive(TaskId::from_stamp(s))))
    }
}

/// The state before the data regions: direction `d` is written by end `d`,
/// and `holders[e]` records the processes that hold end `e`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct PipeState {
    dirs: [Direction; 2],
    holders: [Holders; 2],
}

const _: () = assert!(size_of::<PipeState>() % 64 == 0, "the data regions start on a cache line");

/// Creation parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PipeParams {
    /// Bytes of each direction's ring.
    capacity: usize,
    duplex: bool,
}

/// The type fingerprint of a pipe segment: this, with bit 0 set for duplex.
const PIPE_FP: u64 = 0x5049_5045_0000_0000;
/// The smallest ring of a direction.
const MIN_CAPACITY: usize = 64;
/// The ring of a direction when none is asked for.
pub const DEFAULT_CAPACITY: usize = 256 * 1024;

// SAFETY: repr(C), atomics only (BytesHeader, Control, OwnerLock are repr(C)
// atomics), size a multiple of 64, no pointers; the byte ring checks every
// position, tag and length it reads.
unsafe impl SharedState for PipeState {
    const KIND: Kind = Kind::Pipe;
    type Params = PipeParams;

    fn zeroed() -> Self {
        let holders = || Holders(std::array::from_fn(|_| AtomicU64::new(0)));
        PipeState { dirs: [Direction::zeroed(), Direction::zeroed()], holders: [holders(), holders()] }
    }

    fn init(&self, _: PipeParams) {}

    fn layout(p: &PipeParams) -> Result<Layout> {
        let rings = if p.duplex { 2 } else { 1 };
        Ok(Layout { type_fp: PIPE_FP | u64::from(p.duplex), tail_len: p.capacity * rings })
    }

    fn check_layout(found: Layout) -> Result<()> {
        match params_of(found) {
            Some(_) => Ok(()),
            None => Err(Error::mismatch(
                "pipe layout",
                format!("one or two power-of-two rings of at least {MIN_CAPACITY} bytes"),
                format!("fingerprint {:#x}, {} bytes", found.type_fp, found.tail_len),
            )),
        }
    }
}

/// The parameters a checked layout stands for.
fn params_of(found: Layout) -> Option<PipeParams> {
    if found.type_fp & !1 != PIPE_FP {
        return None;
    }
    let duplex = found.type_fp & 1 == 1;
    let rings = if duplex { 2 } else { 1 };
    let capacity = found.tail_len / rings;
    (capacity >= MIN_CAPACITY && capacity.is_power_of_two() && capacity * rings == found.tail_len)
        .then_some(PipeParams { capacity, duplex })
}

/// One end of a pipe: Python's `multiprocessing.connection.Connection`.
///
/// `send`/`recv` move any serde value (postcard-encoded, as Python pickles);
/// `send_bytes`/`recv_bytes`/`recv_bytes_into` move raw bytes. Messages have
/// any size: one larger than the ring is streamed through it in chunks, and
/// a reader only ever gets whole messages. Handles are `Clone` (copies share
/// the end) and can be passed to processes started by this crate.
///
/// When the other end is closed, or every process that held it has exited
/// or been killed, `recv` returns what was fully sent and then
/// [`Error::Closed`] (within about 20 ms of the death), and `send` fails with
/// `Closed` instead of waiting for room. As with OS pipes, a process that
/// keeps a copy of an end it does not use (a forked child, say) keeps that
/// end alive: drop the copies you do not need.
///
/// # Examples
///
/// ```
/// let (a, b) = shmproc::pipe()?;
/// a.send(&("ping", 1u32))?;
/// let (word, n): (String, u32) = b.recv()?;
/// b.send(&format!("{word}{n} back"))?;
/// assert_eq!(a.recv::<String>()?, "ping1 back");
/// # Ok::<(), shmproc::Error>(())
/// ```
pub struct Connection {
    state: Shared<PipeState>,
    params: PipeParams,
    /// Our end: 0 or 1.
    end: usize,
    readable: bool,
    writable: bool,
    shared: Arc<EndLocal>,
    wait: Waiters,
}

/// What the copies of one end in this process share.
#[derive(Debug)]
struct EndLocal {
    state: Shared<PipeState>,
    end: usize,
    /// The write side of our end's liveness token: held, never written.
    /// (`None`, like `watch`, for a connection made by name: unrelated
    /// processes cannot share descriptors, and the records suffice.)
    keep: Option<OwnedFd>,
    /// The read side of the peer end's token.
    watch: Option<OwnedFd>,
    /// Our holder record: (fork generation, record index, process stamp),
    /// for the process that took it. A forked child has a copy that names
    /// its parent's record, which it must neither use nor give back.
    record: Mutex<Option<(u64, usize, u64)>>,
    /// The fork generation `record` was taken in (0: none), read without the
    /// lock on every operation.
    held_in: std::sync::atomic::AtomicU64,
    /// Closed by `close` in this process.
    closed: std::sync::atomic::AtomicBool,
    /// A message whose first chunks a timed-out read took: the next read in
    /// this process goes on with it.
    partial: Mutex<Option<Partial>>,
    /// Whether `partial` holds one (read without the lock; written under it
    /// by a reader holding the readers' lock).
    has_partial: std::sync::atomic::AtomicBool,
    /// When a timed-out call last looked at the peer (monotonic ns): a wait
    /// too short to reach the probe slice looks on its way out, at most
    /// once per slice.
    last_probe: std::sync::atomic::AtomicU64,
}

impl EndLocal {
    fn new(state: Shared<PipeState>, end: usize, keep: Option<OwnedFd>, watch: Option<OwnedFd>) -> EndLocal {
        EndLocal {
            state,
            end,
            keep,
            watch,
            record: Mutex::new(None),
            held_in: std::sync::atomic::AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            partial: Mutex::new(None),
            has_partial: std::sync::atomic::AtomicBool::new(false),
            last_probe: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether a timed-out call should look at the peer now (at most once
    /// per probe slice per end and process).
    fn probe_due(&self) -> bool {
        let now = Deadline::now().nanos();
        let last = self.last_probe.load(std::sync::atomic::Ordering::Relaxed);
        let slice = u64::try_from(wait::PROBE_SLICE.as_nanos()).unwrap_or(u64::MAX);
        now.saturating_sub(last) >= slice
            && self
                .last_probe
                .compare_exchange(last, now, std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed)
                .is_ok()
    }

    /// Makes sure this process has a holder record for the end (once per
    /// process: a forked child registers on its first use).
    #[inline]
    fn hold(&self) -> Result<()> {
        let generation = os::fork_generation();
        if self.held_in.load(std::sync::atomic::Ordering::Relaxed) == generation {
            return Ok(());
        }
        self.hold_slow(generation)
    }

    #[cold]
    fn hold_slow(&self, generation: u64) -> Result<()> {
        self.hold_as(generation, None)
    }

    /// Takes a holder record for this process: with `adopt`, the record
    /// that names that process stamp (taken for us by the peer), made ours,
    /// if there is one.
    fn hold_as(&self, generation: u64, adopt: Option<u64>) -> Result<()> {
        let mut record = self.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if record.is_some_and(|(g, _, _)| g == generation) {
            return Ok(());
        }
        let me = os::current_process().stamp();
        let holders = &self.state.holders[self.end];
        let adopted = adopt.and_then(|from| {
            holders.0.iter().position(|r| {
                r.load(Ordering::Acquire) == from
                    && r.compare_exchange(from, me, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            })
        });
        let i = match adopted {
            Some(i) => i,
            None => holders.register(me)?,
        };
        *record = Some((generation, i, me));
        self.held_in.store(generation, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for EndLocal {
    fn drop(&mut self) {
        let record = self.record.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((generation, i, me)) = *record
            && generation == os::fork_generation()
        {
            self.state.holders[self.end].release(i, me);
        }
    }
}

/// A streamed message being collected.
#[derive(Debug, Default)]
struct Partial {
    bytes: Vec<u8>,
    total: u64,
    /// The reader's position after the last chunk taken, and the fork
    /// generation: the partial message goes on only if nobody read on
    /// meanwhile (another process's reader skips its later chunks as
    /// orphans) and only in the process that took it.
    at: u64,
    generation: u64,
}

impl Partial {
    /// Whether the message can go on from where it was set aside.
    fn resumes(&self, conn: &Connection) -> bool {
        self.generation == os::fork_generation() && self.at == conn.ring(1 - conn.end).reader_position()
    }
}

/// Makes a pipe with rings of `capacity` bytes per direction (rounded up to
/// a power of two, at least 64): `duplex` gives two connections that both
/// send and receive; otherwise the first only receives and the second only
/// sends (Python's `Pipe(duplex=False)`).
pub fn pipe_with_capacity(capacity: usize, duplex: bool) -> Result<(Connection, Connection)> {
    let capacity = capacity
        .max(MIN_CAPACITY)
        .checked_next_power_of_two()
        .filter(|c| c.checked_mul(2).is_some_and(|t| isize::try_from(t).is_ok()))
        .ok_or(Error::InvalidArgument { what: "pipe capacity too large" })?;
    let params = PipeParams { capacity, duplex };
    let state = Shared::<PipeState>::anonymous(params)?;
    let (r0, w0) = os::token().map_err(|e| Error::io("creating a pipe's liveness token", e))?;
    let (r1, w1) = os::token().map_err(|e| Error::io("creating a pipe's liveness token", e))?;
    let end = |end: usize, keep, watch| Connection {
        state: state.clone(),
        params,
        end,
        readable: duplex || end == 0,
        writable: duplex || end == 1,
        shared: Arc::new(EndLocal::new(state.clone(), end, keep, watch)),
        wait: Waiters::default(),
    };
    let (a, b) = (end(0, Some(w0), Some(r1)), end(1, Some(w1), Some(r0)));
    a.shared.hold()?;
    b.shared.hold()?;
    Ok((a, b))
}

/// A duplex pipe with the default rings (256 KiB each way): Python's `Pipe()`.
pub fn pipe() -> Result<(Connection, Connection)> {
    pipe_with_capacity(DEFAULT_CAPACITY, true)
}

/// A one-way pipe: `(receiver, sender)`, as Python's `Pipe(duplex=False)`.
pub fn pipe_simplex() -> Result<(Connection, Connection)> {
    pipe_with_capacity(DEFAULT_CAPACITY, false)
}

impl Connection {
    /// A handle on end `end` of the pipe in `state`, with no tokens: a
    /// connection made by name.
    fn named_end(state: Shared<PipeState>, end: usize) -> Result<Connection> {
        let params = params_of(state.layout())
            .filter(|p| p.duplex)
            .ok_or_else(|| Error::mismatch("pipe", "a duplex pipe".to_owned(), format!("{:?}", state.layout())))?;
        Ok(Connection {
            state: state.clone(),
            params,
            end,
            readable: true,
            writable: true,
            shared: Arc::new(EndLocal::new(state, end, None, None)),
            wait: Waiters::default(),
        })
    }

    /// Makes a duplex pipe in the named segment `name` and returns its end 1,
    /// held by this process; end 0 is recorded as held by `peer` (a process
    /// that will open it by name, and adopt that record) until then.
    pub(crate) fn create_named(name: &str, capacity: usize, peer: TaskId) -> Result<Connection> {
        let capacity = capacity
            .max(MIN_CAPACITY)
            .checked_next_power_of_two()
            .ok_or(Error::InvalidArgument { what: "pipe capacity too large" })?;
        let state = Shared::<PipeState>::create(name, PipeParams { capacity, duplex: true })?;
        state.holders[0].register(peer.stamp())?;
        let conn = Connection::named_end(state, 1)?;
        conn.shared.hold()?;
        Ok(conn)
    }

    /// Opens end `end` of the duplex pipe in the named segment `name`,
    /// adopting the holder record made for this process if there is one.
    ///
    /// For the accepting side of a [`Listener`](crate::Listener), and for
    /// tests and fuzzing, which forge pipe segments.
    #[doc(hidden)]
    pub fn open_named_end(name: &str, end: usize) -> Result<Connection> {
        Connection::open_named_end_adopting(name, end, os::current_process())
    }

    /// [`open_named_end`](Self::open_named_end), adopting the holder record
    /// made for the process `named` (the listener's creator, which may
    /// be this process's parent).
    pub(crate) fn open_named_end_adopting(name: &str, end: usize, named: TaskId) -> Result<Connection> {
        if end > 1 {
            return Err(Error::InvalidArgument { what: "a pipe has ends 0 and 1" });
        }
        let conn = Connection::named_end(Shared::open(name)?, end)?;
        conn.shared.hold_as(os::fork_generation(), Some(named.stamp()))?;
        Ok(conn)
    }

    /// The processes recorded as holding the other end (every end that a
    /// process took has its record, until it lets the end go).
    pub(crate) fn peer_holders(&self) -> Vec<TaskId> {
        let records = &self.state.holders[1 - self.end].0;
        records.iter().map(|r| r.load(Ordering::Acquire)).filter(|&s| s != 0).map(TaskId::from_stamp).collect()
    }

    /// Removes the pipe segment's name (a connection made by name, once
    /// both sides have it mapped); it then passes by descriptor.
    pub(crate) fn unlink_name(&self) {
        if let Some(seg) = self.state.segment() {
            let _ = seg.unlink();
        }
    }
}

impl Clone for Connection {
    fn clone(&self) -> Self {
        Connection {
            state: self.state.clone(),
            params: self.params,
            end: self.end,
            readable: self.readable,
            writable: self.writable,
            shared: self.shared.clone(),
            wait: self.wait.clone(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let (incoming, outgoing) = (self.dir(1 - self.end), self.dir(self.end));
        incoming.ctl.not_empty.unregister(&self.wait.not_empty);
        outgoing.ctl.not_full.unregister(&self.wait.not_full);
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("segment", &self.state)
            .field("end", &self.end)
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .field("capacity", &self.params.capacity)
            .finish_non_exhaustive()
    }
}

impl Connection {
    crate::sync::wait_strategy_accessors!();

    fn dir(&self, d: usize) -> &Direction {
        &self.state.dirs[d]
    }

    fn ring(&self, d: usize) -> Bytes<'_, Region> {
        let cap = self.params.capacity;
        let at = if self.params.duplex { d * cap } else { 0 };
        // SAFETY: the tail holds one ring of `capacity` bytes per direction
        // (checked at open), each 64-aligned (the state's size and the
        // capacity are multiples of 64); mapped while `state` lives, and
        // accessed only through the byte ring's protocol.
        let region = unsafe { Region::new(self.state.tail().add(at), cap) };
        Bytes { header: &self.dir(d).ring, region, capacity: cap }
    }

    /// Bytes of each direction's ring.
    pub fn capacity(&self) -> usize {
        self.params.capacity
    }

    /// Whether this end can receive.
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end can send.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Whether `close` was called on this end (in this process).
    pub fn closed(&self) -> bool {
        self.shared.closed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes the pipe: this end's sends and receives fail with
    /// [`Error::Closed`] from now on, the peer's receives drain what was
    /// sent and then fail with `Closed`, its sends fail with `Closed`, and
    /// every waiter wakes. (Dropping every copy of an end closes it too, as
    /// the death of every process holding it does.)
    pub fn close(&self) {
        self.shared.closed.store(true, std::sync::atomic::Ordering::Relaxed);
        for d in &self.state.dirs {
            d.ctl.close();
        }
    }

    /// Whether the peer end is gone: closed, or dropped by every process
    /// that held it (`probe`: look at its token, a system call).
    fn peer_gone(&self, d: usize, probe: bool) -> bool {
        if self.dir(d).ctl.is_closed() {
            return true;
        }
        if !probe {
            return false;
        }
        match self.state.holders[1 - self.end].any_alive() {
            Some(alive) => !alive,
            None => self.shared.watch.as_ref().is_none_or(os::token_dropped),
        }
    }

    fn check_open(&self, want: bool, what: &'static str) -> Result<()> {
        if self.closed() {
            return Err(Error::Closed);
        }
        if !want {
            return Err(Error::InvalidArgument { what });
        }
        Ok(())
    }

    /// Sends `value`, encoded (postcard); waits for room as long as the
    /// reader lives.
    ///
    /// # Errors
    /// [`Error::Closed`] if the pipe was closed or the receiving end is gone;
    /// [`Error::Codec`] if the value cannot be encoded.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        codec::with_scratch(|buf| {
            codec::encode_into(value, buf)?;
            self.send_bytes(buf)
        })
    }

    /// Sends `buf` as one message (any size: one larger than the ring is
    /// streamed); waits for room as long as the reader lives.
    ///
    /// # Errors
    /// [`Error::Closed`] if the pipe was closed or the receiving end is gone
    /// (part of a streamed message may then have gone, never to be read);
    /// [`Error::InvalidArgument`] on a receive-only end; [`Error::Corrupt`]
    /// if the ring's shared state is.
    pub fn send_bytes(&self, buf: &[u8]) -> Result<()> {
        if self.send_now(buf) {
            return Ok(());
        }
        self.send_bytes_until(buf, None)
    }

    /// Whether this process may take the lean paths on this end, for a
    /// side it can use (`can`): not closed here, and its holder record
    /// taken. (Anything else, and the full path checks and reports.)
    #[inline]
    fn lean(&self, can: bool) -> bool {
        can && !self.closed() && self.shared.held_in.load(std::sync::atomic::Ordering::Relaxed) == os::fork_generation()
    }

    /// The lean send: `buf` as one record, if the writers' lock is free and
    /// the record fits now without padding; `false`, with nothing sent,
    /// otherwise. No wait machinery, no frames, no errors built: this is
    /// most sends, and the whole of a round trip's critical path.
    #[inline]
    fn send_now(&self, buf: &[u8]) -> bool {
        if !self.lean(self.writable) {
            return false;
        }
        let dir = self.dir(self.end);
        let me = loom::current_task();
        if dir.ctl.is_closed() || !dir.writers.0.lock_fast(me) {
            return false;
        }
        let sent = self.ring(self.end).try_write_whole_now(buf);
        dir.writers.0.unlock(me);
        if sent {
            dir.ctl.not_empty.notify(1);
        }
        sent
    }

    /// The lean read: a whole message there now, of at most `limit` bytes,
    /// into `out`, if the readers' lock is free and no partial message is
    /// set aside. When the ring is empty, the turn it took is kept for the
    /// wait ([`LeanRead::Empty`]): a round trip's receiver is there before
    /// the message, and taking the lock again would cost it two locked
    /// operations and one more look.
    #[inline]
    fn recv_now(&self, out: &mut impl Sink, limit: Option<usize>) -> LeanRead<'_> {
        if !self.lean(self.readable) {
            return LeanRead::Other;
        }
        let d = 1 - self.end;
        let dir = self.dir(d);
        let me = loom::current_task();
        if !dir.readers.0.lock_fast(me) {
            return LeanRead::Other;
        }
        let turn = Turn { lock: &dir.readers.0, me };
        // Under the lock: a timed-out reader sets a partial message aside
        // holding it.
        if self.shared.has_partial.load(std::sync::atomic::Ordering::Relaxed) {
            return LeanRead::Other;
        }
        let ring = self.ring(d);
        match ring.peek_whole() {
            Glance::Empty => LeanRead::Empty(turn),
            Glance::Whole(p) if limit.is_none_or(|limit| p.len <= limit) && out.take_record(&ring, &p).is_ok() => {
                drop(turn);
                dir.ctl.not_full.notify(1);
                LeanRead::Took
            }
            Glance::Whole(_) | Glance::Other => LeanRead::Other,
        }
    }

    /// [`send_bytes`](Self::send_bytes), giving up at `deadline`
    /// ([`Error::Timeout`]; part of a streamed message may then have gone,
    /// which the reader drops).
    pub(crate) fn send_bytes_until(&self, buf: &[u8], deadline: Option<Deadline>) -> Result<()> {
        let _turn = self.writer_turn(deadline)?;
        self.stream(self.end, buf, deadline)
    }

    /// Checks that this end may send, then takes the writers' lock of its
    /// direction until `deadline` (held until the turn drops, also if a
    /// caller's closure panics).
    fn writer_turn(&self, deadline: Option<Deadline>) -> Result<Turn<'_>> {
        self.check_open(self.writable, "send on a receive-only connection")?;
        self.shared.hold()?;
        let dir = self.dir(self.end);
        if dir.ctl.is_closed() {
            return Err(Error::Closed);
        }
        // A writer that died holding the lock may have left part of a
        // streamed message: readers drop it when ours begins.
        Turn::take(&dir.writers.0, &self.wait.cfg, deadline).ok_or(Error::Timeout)
    }

    /// Checks that this end may receive, then takes the readers' lock of
    /// the incoming direction until `deadline` ([`Error::Timeout`]).
    fn reader_turn(&self, deadline: Option<Deadline>) -> Result<Turn<'_>> {
        self.check_open(self.readable, "receive on a send-only connection")?;
        self.shared.hold()?;
        Turn::take(&self.dir(1 - self.end).readers.0, &self.wait.cfg, deadline).ok_or(Error::Timeout)
    }

    /// `send_bytes(&buf[offset..offset + size])`, with Python's checks: the
    /// range must lie in `buf` (`size` `None`: to its end).
    pub fn send_bytes_part(&self, buf: &[u8], offset: usize, size: Option<usize>) -> Result<()> {
        let part = offset
            .checked_add(size.unwrap_or(buf.len().saturating_sub(offset)))
            .and_then(|end| buf.get(offset..end))
            .ok_or(Error::InvalidArgument { what: "offset and size must lie within the buffer" })?;
        self.send_bytes(part)
    }

    /// Writes `buf` into direction `d` as records (the caller holds the
    /// writers' lock), waking the reader after each.
    fn stream(&self, d: usize, buf: &[u8], deadline: Option<Deadline>) -> Result<()> {
        let max = bytes::max_payload(self.params.capacity);
        if buf.len() <= max {
            // The common case, room now: no wait machinery.
            if let Ok(()) = self.ring(d).try_write_frame(Frame::Whole, buf)? {
                self.dir(d).ctl.not_empty.notify(1);
                return Ok(());
            }
            return self.write_record(d, Frame::Whole, buf, deadline);
        }
        // Chunks of about half a record, so that the reader can take one
        // while the next is written.
        let chunk = (max / 2).max(1);
        let total = buf.len() as u64;
        let (first, mut rest) = buf.split_at(chunk.min(max - FIRST_PREFIX));
        self.write_record(d, Frame::First(total), first, deadline)?;
        while !rest.is_empty() {
            let (part, after) = rest.split_at(chunk.min(rest.len()));
            self.write_record(d, Frame::More, part, deadline)?;
            rest = after;
        }
        Ok(())
    }

    fn write_record(&self, d: usize, frame: Frame, part: &[u8], deadline: Option<Deadline>) -> Result<()> {
        let len = part.len() + if let Frame::First(_) = frame { FIRST_PREFIX } else { 0 };
        self.write_waiting(d, len, &mut |ring| ring.try_write_frame(frame, part), deadline)
    }

    /// Runs `write` (a record of `len` payload bytes into direction `d`)
    /// until there is room, then wakes the reader.
    fn write_waiting(
        &self,
        d: usize,
        len: usize,
        write: &mut RecordWrite<'_>,
        deadline: Option<Deadline>,
    ) -> Result<()> {
        let mut target = WriteTarget { conn: self, d, len, write };
        wait::wait(&self.wait.cfg, deadline, &mut target).unwrap_or(Err(Error::Timeout))?;
        self.dir(d).ctl.not_empty.notify(1);
        Ok(())
    }

    /// The largest message [`send_in_place`](Self::send_in_place) takes:
    /// one record, half the ring less its header.
    pub fn max_in_place(&self) -> usize {
        bytes::max_payload(self.params.capacity)
    }

    /// Sends a message of `len` bytes that `fill` writes straight into the
    /// ring, with no buffer in between (zero-copy): `fill` gets a
    /// [`MessageWriter`] once there is room, and writes the bytes in order;
    /// bytes it leaves unwritten are zero. Waits for room as long as the
    /// reader lives.
    ///
    /// `fill` runs while this end holds its direction's writers' lock: it
    /// must not send on this end (that would wait for itself).
    ///
    /// # Errors
    /// [`Error::TooLarge`] if `len` is over [`max_in_place`](Self::max_in_place)
    /// (send it with [`send_bytes`](Self::send_bytes), which streams);
    /// otherwise as `send_bytes`.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = shmproc::pipe()?;
    /// a.send_in_place(12, |w| {
    ///     w.write(&7u64.to_le_bytes());
    ///     w.write(b"abcd");
    /// })?;
    /// let (n, tail) = b.recv_in_place(|m| {
    ///     let (mut n, mut tail) = ([0; 8], [0; 4]);
    ///     assert!(m.copy_to(0, &mut n) && m.copy_to(8, &mut tail));
    ///     (u64::from_le_bytes(n), tail)
    /// })?;
    /// assert_eq!((n, &tail), (7, b"abcd"));
    /// # Ok::<(), shmproc::Error>(())
    /// ```
    pub fn send_in_place(&self, len: usize, fill: impl FnOnce(&mut MessageWriter<'_>)) -> Result<()> {
        let limit = self.max_in_place();
        if len > limit {
            return Err(Error::TooLarge { size: len, limit });
        }
        let _turn = self.writer_turn(None)?;
        let mut fill = Some(fill);
        self.write_waiting(
            self.end,
            len,
            &mut |ring| {
                ring.try_write_with(len, |record| {
                    if let Some(fill) = fill.take() {
                        fill(&mut MessageWriter(record));
                    }
                })
            },
            None,
        )
    }

    /// Receives a message and hands it to `f` where it lies in the ring
    /// (zero-copy: `f` copies out only what it needs through [`Received`]),
    /// then frees its room; returns what `f` returned. A streamed message
    /// (larger than [`max_in_place`](Self::max_in_place)) is assembled first
    /// and handed over from there. Waits as long as the sender lives. `f`
    /// runs while this end holds its direction's readers' lock: it must not
    /// receive on this end.
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes).
    pub fn recv_in_place<T>(&self, f: impl FnOnce(&Received<'_>) -> T) -> Result<T> {
        let _turn = self.reader_turn(None)?;
        let d = 1 - self.end;
        let stashed = self.shared.has_partial.load(std::sync::atomic::Ordering::Relaxed);
        let mut target = InPlaceTarget { conn: self, d, f: Some(f) };
        let outcome = if stashed {
            Ok(None)
        } else {
            wait::wait(&self.wait.cfg, None, &mut target).expect("an untimed wait returns only when done")
        };
        match outcome {
            Ok(Some(out)) => Ok(out),
            Err(e) => Err(e),
            // A streamed message (or one a timed-out read began): assembled
            // as `recv_bytes` does, under the lock we hold.
            Ok(None) => {
                let f = target.f.take().expect("not called yet");
                codec::with_scratch(|buf| {
                    self.read_locked(buf, None, None)?;
                    Ok(f(&Received(Place::Heap(buf))))
                })
            }
        }
    }

    /// Receives a message and decodes it as a `T`; waits as long as the
    /// sender lives.
    ///
    /// # Errors
    /// [`Error::Closed`] once the pipe is closed or the sending end gone and
    /// every whole message taken; [`Error::Codec`] if the message is not a
    /// `T`.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        codec::with_scratch(|buf| {
            self.read(buf, None, None)?;
            codec::decode(buf)
        })
    }

    /// [`recv`](Self::recv), waiting at most `timeout` ([`Error::Timeout`]).
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        codec::with_scratch(|buf| {
            self.read(buf, Some(Deadline::after(timeout)), None)?;
            codec::decode(buf)
        })
    }

    /// Receives a message's bytes; waits as long as the sender lives.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read(&mut out, None, None)?;
        Ok(out)
    }

    /// [`recv_bytes`](Self::recv_bytes), waiting at most `timeout`
    /// ([`Error::Timeout`]).
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read(&mut out, Some(Deadline::after(timeout)), None)?;
        Ok(out)
    }

    /// Receives a message into `buf`; returns its length.
    ///
    /// # Errors
    /// [`Error::BufferTooShort`] (naming the size needed) if the message is
    /// longer than `buf`: it stays in the pipe for the next read.
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        let limit = buf.len();
        let mut sink = SliceSink { buf, len: 0 };
        self.read(&mut sink, None, Some(limit))?;
        Ok(sink.len)
    }

    /// Receives a message into `buf`, growing it to the message's size (at
    /// most `limit`: beyond, [`Error::TooLarge`] and the message stays),
    /// waiting at most `timeout` (`None`: as long as it takes): its length.
    /// For readers that reuse one buffer for messages of any size.
    pub(crate) fn recv_bytes_growing(
        &self,
        buf: &mut Vec<u8>,
        timeout: Option<Duration>,
        limit: usize,
    ) -> Result<usize> {
        loop {
            let got = match timeout {
                None => self.recv_bytes_into(buf),
                Some(t) => self.recv_bytes_into_within(buf, t),
            };
            match got {
                Err(Error::BufferTooShort { needed, .. }) if needed > limit => {
                    return Err(Error::TooLarge { size: needed, limit });
                }
                Err(Error::BufferTooShort { needed, .. }) => buf.resize(needed, 0),
                other => return other,
            }
        }
    }

    /// [`recv_bytes_into`](Self::recv_bytes_into), waiting at most
    /// `timeout` ([`Error::Timeout`]).
    pub(crate) fn recv_bytes_into_within(&self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        let limit = buf.len();
        let mut sink = SliceSink { buf, len: 0 };
        self.read(&mut sink, Some(Deadline::after(timeout)), Some(limit))?;
        Ok(sink.len)
    }

    /// Whether a message (or the end of the stream) is there to be received,
    /// waiting up to `timeout` for one (`None`: as long as it takes;
    /// `Some(Duration::ZERO)`: a look).
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        self.check_open(self.readable, "poll on a send-only connection")?;
        self.shared.hold()?;
        let mut target = PollTarget { conn: self, d: 1 - self.end };
        let deadline = timeout.map(Deadline::after);
        let ready = wait::wait(&self.wait.cfg, deadline, &mut target)
            // A wait too short to probe: one look at the peer on the way out.
            .or_else(|| if self.shared.probe_due() { target.attempt(true) } else { None });
        Ok(ready.is_some())
    }

    /// Reads one whole message into `out` (cleared first), refusing one
    /// longer than `limit` (left in the pipe), until `deadline`.
    fn read(&self, out: &mut impl Sink, deadline: Option<Deadline>, limit: Option<usize>) -> Result<()> {
        out.clear();
        match self.recv_now(out, limit) {
            LeanRead::Took => Ok(()),
            LeanRead::Empty(_turn) => {
                // Nothing set aside, nothing there: straight to the wait
                // (whose first attempt also sees a close).
                let mut target = ReadTarget { conn: self, d: 1 - self.end, out, limit, collecting: None };
                self.finish_wait(wait::wait(&self.wait.cfg, deadline, &mut target), &mut target)
            }
            LeanRead::Other => {
                let _turn = self.reader_turn(deadline)?;
                self.read_locked(out, deadline, limit)
            }
        }
    }

    /// [`read`](Self::read) for a caller that holds the readers' lock.
    fn read_locked(&self, out: &mut impl Sink, deadline: Option<Deadline>, limit: Option<usize>) -> Result<()> {
        out.clear();
        let d = 1 - self.end;
        if !self.shared.has_partial.load(std::sync::atomic::Ordering::Relaxed) {
            // The common case, a whole message there now: no wait machinery.
            let ring = self.ring(d);
            if let Some(p) = ring.peek_record()?
                && p.frame == Frame::Whole
                && limit.is_none_or(|limit| p.len <= limit)
            {
                out.take_record(&ring, &p)?;
                self.dir(d).ctl.not_full.notify(1);
                return Ok(());
            }
        }
        let mut target = ReadTarget { conn: self, d, out, limit, collecting: None };
        // Rare: a message begun by a timed-out read here goes on.
        if self.shared.has_partial.load(std::sync::atomic::Ordering::Relaxed) {
            let mut partial = self.shared.partial.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Someone read on since (or this is a forked copy): the rest of
            // that message went to them as orphans; it is lost.
            if partial.as_ref().is_some_and(|p| !p.resumes(self)) {
                *partial = None;
            }
            if let (Some(p), Some(limit)) = (&*partial, limit)
                && p.total > limit as u64
            {
                // Too large for the caller's buffer: it stays stashed, to
                // be read whole by another call.
                let needed = usize::try_from(p.total).unwrap_or(usize::MAX);
                return Err(Error::BufferTooShort { needed, got: limit });
            }
            if let Some(p) = partial.take() {
                target.out.extend(&p.bytes);
                target.collecting = Some(p.total);
            }
            self.shared.has_partial.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        let done = wait::wait(&self.wait.cfg, deadline, &mut target);
        self.finish_wait(done, &mut target)
    }

    /// The end of a read's wait: its outcome, or after a timeout, one look
    /// at the peer if a probe is due (a wait too short to probe) and the
    /// partial message set aside.
    fn finish_wait(&self, done: Option<Result<()>>, target: &mut ReadTarget<'_, impl Sink>) -> Result<()> {
        let done = done.or_else(|| if self.shared.probe_due() { target.attempt(true) } else { None });
        let Some(done) = done else {
            self.stash(target);
            return Err(Error::Timeout);
        };
        done
    }

    /// After a read timed out: if it was in the middle of a streamed
    /// message, keeps what it took for the next read here.
    fn stash(&self, target: &mut ReadTarget<'_, impl Sink>) {
        if let Some(total) = target.collecting {
            let mut partial = self.shared.partial.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let at = self.ring(target.d).reader_position();
            *partial = Some(Partial { bytes: target.out.take_bytes(), total, at, generation: os::fork_generation() });
            self.shared.has_partial.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Connection {
    /// Sleeps on direction `d`'s `not_empty` side until a record or the
    /// close (or `until`). A reader holding the readers' turn (`own`) judges
    /// by its own position; a poller, which holds none, by the published
    /// ones.
    fn sleep_for_message(&self, d: usize, until: Option<Deadline>, own: bool) -> FutexWait {
        let ctl = &self.dir(d).ctl;
        let ready = || {
            let ring = self.ring(d);
            ctl.is_closed() || if own { ring.reader_has_record() } else { !ring.looks_empty() }
        };
        ctl.not_empty.sleep_as(self.wait.fenced(&self.wait.not_empty), until, ready)
    }
}

/// What [`Connection::recv_now`] did.
enum LeanRead<'a> {
    /// Took a whole message.
    Took,
    /// Found the ring empty, holding the readers' turn (kept for the wait).
    Empty(Turn<'a>),
    /// Nothing: the full path sorts it out.
    Other,
}

/// A turn at one direction's writers' or readers' lock, given back on drop.
struct Turn<'a> {
    lock: &'a OwnerLock,
    me: TaskId,
}

impl<'a> Turn<'a> {
    /// Takes `lock` (from a dead owner too: a writer's partial message is
    /// dropped by readers when the next one begins, a reader's orphan chunks
    /// are skipped), waiting per `cfg` until `deadline`.
    fn take(lock: &'a OwnerLock, cfg: &crate::sync::wait::WaitConfig, deadline: Option<Deadline>) -> Option<Self> {
        let me = loom::current_task();
        lock.lock(me, cfg, deadline).map(|_: Acquired| Turn { lock, me })
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.lock.unlock(self.me);
    }
}

/// Where [`Connection::send_in_place`]'s `fill` writes its message: straight
/// into the ring.
#[derive(Debug)]
pub struct MessageWriter<'a>(&'a mut bytes::InPlace<Region>);

impl MessageWriter<'_> {
    /// Appends `bytes` to the message; `false`, and nothing written, if they
    /// would go past its length.
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        self.0.push(bytes)
    }

    /// Bytes of the message not written yet.
    pub fn remaining(&self) -> usize {
        self.0.room()
    }
}

/// A message handed over by [`Connection::recv_in_place`]: it stays where it
/// lies (in the ring, or assembled if it was streamed), and only what is
/// asked for is copied out. (It is never a `&[u8]` into shared memory: the
/// peer could write there.)
#[derive(Debug)]
pub struct Received<'a>(Place<'a>);

#[derive(Debug)]
enum Place<'a> {
    Ring(bytes::InRing<Region>),
    Heap(&'a [u8]),
}

impl Received<'_> {
    /// The message's length.
    pub fn len(&self) -> usize {
        match &self.0 {
            Place::Ring(m) => m.len(),
            Place::Heap(b) => b.len(),
        }
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the message's bytes `offset..offset + dst.len()` into `dst`;
    /// `false`, and nothing copied, unless they all lie in the message.
    pub fn copy_to(&self, offset: usize, dst: &mut [u8]) -> bool {
        match &self.0 {
            Place::Ring(m) => m.copy_to(offset, dst),
            Place::Heap(b) => match offset.checked_add(dst.len()).and_then(|end| b.get(offset..end)) {
                Some(src) => {
                    dst.copy_from_slice(src);
                    true
                }
                None => false,
            },
        }
    }

    /// The whole message, copied.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len()];
        self.copy_to(0, &mut v);
        v
    }
}

/// A reader waiting for a whole record to hand over in place; done with
/// `Ok(None)` when the next message is streamed (for the caller to
/// assemble).
struct InPlaceTarget<'a, F> {
    conn: &'a Connection,
    d: usize,
    f: Option<F>,
}

impl<T, F: FnOnce(&Received<'_>) -> T> WaitTarget for InPlaceTarget<'_, F> {
    type Output = Result<Option<T>>;
    const PROBES: bool = true;

    fn attempt(&mut self, probe: bool) -> Option<Result<Option<T>>> {
        let ring = self.conn.ring(self.d);
        loop {
            match ring.peek_record() {
                Err(e) => return Some(Err(e)),
                Ok(Some(p)) if p.frame == Frame::Whole => {
                    let f = self.f.take().expect("called once");
                    let out = ring.take_peeked_with(&p, |m| f(&Received(Place::Ring(m))));
                    self.conn.dir(self.d).ctl.not_full.notify(1);
                    return Some(Ok(Some(out)));
                }
                // A streamed message (or a dead reader's chunks): for the
                // assembling read.
                Ok(Some(_)) => return Some(Ok(None)),
                Ok(None) if self.conn.closed() || self.conn.peer_gone(self.d, probe) => {
                    // What the peer published before it closed or died, then
                    // end of file: one more look, not a loop.
                    std::sync::atomic::fence(Ordering::SeqCst);
                    if !ring.reader_has_record() {
                        return Some(Err(Error::Closed));
                    }
                }
                Ok(None) => return None,
            }
        }
    }

    fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
        self.conn.sleep_for_message(self.d, until, true)
    }
}

/// Writes one record if the ring has room (`Write::Full` if not).
type RecordWrite<'a> = dyn FnMut(&Bytes<'_, Region>) -> Result<std::result::Result<(), Write>> + 'a;

/// A writer waiting for room for one record.
struct WriteTarget<'a> {
    conn: &'a Connection,
    d: usize,
    /// Record payload bytes (for the sleeper's look at the room).
    len: usize,
    /// Writes the record if there is room (`Write::Full` if not).
    write: &'a mut RecordWrite<'a>,
}

impl WaitTarget for WriteTarget<'_> {
    type Output = Result<()>;
    const PROBES: bool = true;

    fn attempt(&mut self, probe: bool) -> Option<Result<()>> {
        if self.conn.closed() || self.conn.dir(self.d).ctl.is_closed() {
            return Some(Err(Error::Closed));
        }
        match (self.write)(&self.conn.ring(self.d)) {
            Ok(Ok(())) => Some(Ok(())),
            Ok(Err(Write::Full)) if self.conn.peer_gone(self.d, probe) => Some(Err(Error::Closed)),
            Ok(Err(Write::Full)) => None,
            Ok(Err(Write::TooLarge(..))) => unreachable!("records are cut to fit"),
            Err(e) => Some(Err(e)),
        }
    }

    fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
        let (conn, d, len) = (self.conn, self.d, self.len);
        let ctl = &conn.dir(d).ctl;
        ctl.not_full.sleep_as(conn.wait.fenced(&conn.wait.not_full), until, || {
            ctl.is_closed() || conn.ring(d).writer_has_room(len)
        })
    }
}

/// Where a read puts a message's bytes: a `Vec` it grows, or the caller's
/// buffer (`recv_bytes_into`, sized by the frames before any copy).
trait Sink {
    fn len(&self) -> usize;
    fn clear(&mut self);
    fn extend(&mut self, bytes: &[u8]);
    /// Makes room for a message of `total` bytes in all.
    fn expect(&mut self, total: u64);
    /// Takes the record `p` (just peeked) into the sink.
    fn take_record(&mut self, ring: &Bytes<'_, Region>, p: &Peeked) -> Result<()>;
    /// The bytes so far, moved out.
    fn take_bytes(&mut self) -> Vec<u8>;
}

/// Room reserved up front for a streamed message at most (its announced
/// total is the peer's word: more grows as the chunks come).
const RESERVE_AT_MOST: u64 = 256 << 20;

impl Sink for Vec<u8> {
    fn len(&self) -> usize {
        self.len()
    }

    fn clear(&mut self) {
        self.clear();
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn expect(&mut self, total: u64) {
        let more = total.min(RESERVE_AT_MOST).saturating_sub(self.len() as u64);
        self.reserve(usize::try_from(more).unwrap_or(0));
    }

    fn take_record(&mut self, ring: &Bytes<'_, Region>, p: &Peeked) -> Result<()> {
        ring.take_peeked(p, self);
        Ok(())
    }

    fn take_bytes(&mut self) -> Vec<u8> {
        std::mem::take(self)
    }
}

/// The caller's buffer and how much of it holds the message so far.
struct SliceSink<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Sink for SliceSink<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn expect(&mut self, _: u64) {}

    fn take_record(&mut self, ring: &Bytes<'_, Region>, p: &Peeked) -> Result<()> {
        ring.take_peeked_to(p, &mut self.buf[self.len..])?;
        self.len += p.len;
        Ok(())
    }

    fn take_bytes(&mut self) -> Vec<u8> {
        let bytes = self.buf[..self.len].to_vec();
        self.len = 0;
        bytes
    }
}

/// A reader collecting one message.
struct ReadTarget<'a, S> {
    conn: &'a Connection,
    d: usize,
    out: &'a mut S,
    limit: Option<usize>,
    /// The total length of the streamed message being collected.
    collecting: Option<u64>,
}

impl<S: Sink> ReadTarget<'_, S> {
    /// Drops a partial message that will never be completed.
    fn drop_partial(&mut self) {
        self.collecting = None;
        self.out.clear();
    }

    /// Whether the message is too long for the caller's buffer.
    fn too_long(&self, len: u64) -> Option<Error> {
        let limit = self.limit?;
        (len > limit as u64)
            .then(|| Error::BufferTooShort { needed: usize::try_from(len).unwrap_or(usize::MAX), got: limit })
    }

    /// Takes records until a message is complete (`Some(Ok)`), the ring is
    /// empty (`None`), or an error.
    fn take(&mut self) -> Option<Result<()>> {
        let ring = self.conn.ring(self.d);
        loop {
            let p = match ring.peek_record() {
                Ok(Some(p)) => p,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            let (frame, len) = (p.frame, p.len);
            match frame {
                Frame::Whole | Frame::First(_) if self.collecting.is_some() => {
                    // The writer of the message we were collecting died, and
                    // another one began: that message is lost.
                    self.drop_partial();
                    continue;
                }
                Frame::Whole => {
                    if let Some(e) = self.too_long(len as u64) {
                        return Some(Err(e));
                    }
                }
                Frame::First(total) => {
                    if total <= len as u64 || total > isize::MAX as u64 {
                        return Some(Err(Error::corrupt(
                            "pipe",
                            format!("a streamed message of {total} bytes in all starting with {len}"),
                        )));
                    }
                    if let Some(e) = self.too_long(total) {
                        return Some(Err(e));
                    }
                }
                Frame::More => match self.collecting {
                    // A chunk whose reader died after taking the first ones:
                    // that message is lost.
                    None => {
                        ring.skip_peeked(&p);
                        continue;
                    }
                    Some(total) if self.out.len() as u64 + len as u64 > total => {
                        return Some(Err(Error::corrupt(
                            "pipe",
                            format!("chunks of more than the {total} bytes announced"),
                        )));
                    }
                    Some(_) => {}
                },
            }
            if let Err(e) = self.out.take_record(&ring, &p) {
                return Some(Err(e));
            }
            self.conn.dir(self.d).ctl.not_full.notify(1);
            match frame {
                Frame::Whole => return Some(Ok(())),
                Frame::First(total) => {
                    self.collecting = Some(total);
                    self.out.expect(total);
                }
                Frame::More => {}
            }
            if self.collecting.is_some_and(|total| self.out.len() as u64 == total) {
                self.collecting = None;
                return Some(Ok(()));
            }
        }
    }
}

impl<S: Sink> WaitTarget for ReadTarget<'_, S> {
    type Output = Result<()>;
    const PROBES: bool = true;

    fn attempt(&mut self, probe: bool) -> Option<Result<()>> {
        if let Some(done) = self.take() {
            return Some(done);
        }
        let writers = &self.conn.dir(self.d).writers.0;
        // Collecting, and no writer is at work: whatever chunks there were
        // are taken (the writer publishes its last chunk before it unlocks),
        // so the message will never be complete.
        let orphaned = self.collecting.is_some() && (writers.owner() == 0 || (probe && !writers.held_by_live_task()));
        let gone = self.conn.closed() || self.conn.peer_gone(self.d, probe);
        if !orphaned && !gone {
            return None;
        }
        // What the writer published before it unlocked, closed or died.
        std::sync::atomic::fence(Ordering::SeqCst);
        if let Some(done) = self.take() {
            return Some(done);
        }
        if self.collecting.is_some() {
            self.drop_partial();
        }
        if gone { Some(Err(Error::Closed)) } else { None }
    }

    fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
        self.conn.sleep_for_message(self.d, until, true)
    }
}

/// A `poll`: waits for a record, or the end of the stream.
struct PollTarget<'a> {
    conn: &'a Connection,
    d: usize,
}

impl WaitTarget for PollTarget<'_> {
    type Output = ();
    const PROBES: bool = true;

    fn attempt(&mut self, probe: bool) -> Option<()> {
        let ready = !self.conn.ring(self.d).looks_empty() || self.conn.closed() || self.conn.peer_gone(self.d, probe);
        ready.then_some(())
    }

    fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
        self.conn.sleep_for_message(self.d, until, false)
    }
}

/// How a connection travels to a child: its segment, which end, and the
/// indices of its two token descriptors among those handed over.
#[derive(Serialize, Deserialize)]
struct Wire {
    state: Shared<PipeState>,
    end: u8,
    readable: bool,
    writable: bool,
    keep: Option<u32>,
    watch: Option<u32>,
}

impl Serialize for Connection {
    fn serialize<Z: serde::Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        use serde::ser::Error as _;
        // Each token travels as a descriptor: only to a process started by
        // this crate.
        let pass = |fd: &Option<OwnedFd>| match fd {
            None => Ok(None),
            Some(fd) => crate::segment::pass_fd(fd.as_raw_fd()).map(Some).ok_or_else(|| {
                let msg = "a connection made by pipe() can only be passed to a process started by shmproc";
                codec::note_custom(&msg);
                Z::Error::custom(msg)
            }),
        };
        let (keep, watch) = (pass(&self.shared.keep)?, pass(&self.shared.watch)?);
        Wire {
            state: self.state.clone(),
            end: self.end as u8,
            readable: self.readable,
            writable: self.writable,
            keep,
            watch,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let custom = |msg: String| {
            codec::note_custom(&msg);
            D::Error::custom(msg)
        };
        let w = Wire::deserialize(d)?;
        let params = params_of(w.state.layout()).ok_or_else(|| custom("not a pipe layout".to_owned()))?;
        let end = usize::from(w.end);
        if end > 1 || (!params.duplex && (w.readable != (end == 0) || w.writable != (end == 1))) {
            return Err(custom(format!(
                "end {} of a {} pipe",
                w.end,
                if params.duplex { "duplex" } else { "simplex" }
            )));
        }
        let received =
            |i: Option<u32>| i.map(crate::segment::received_fd).transpose().map_err(|e| custom(e.to_string()));
        let (keep, watch) = (received(w.keep)?, received(w.watch)?);
        let conn = Connection {
            state: w.state.clone(),
            params,
            end,
            readable: w.readable,
            writable: w.writable,
            shared: Arc::new(EndLocal::new(w.state.clone(), end, keep, watch)),
            wait: Waiters::default(),
        };
        conn.shared.hold().map_err(|e| custom(e.to_string()))?;
        Ok(conn)
    }
}
