//! The `open_pipe` fuzz harness: arbitrary state in a valid pipe segment.
//!
//! The first input byte is the mode ([`mode`]): which ends to open (both,
//! end 0 only, end 1 only, or both with end 1 first), whether the rest is
//! shaped, and whether the operations include a long wait. Then:
//! - raw (mode bit [`mode::SHAPED`] clear): the rest is the whole payload,
//!   whatever its length, under a header with a duplex fingerprint (a
//!   simplex one if [`mode::SIMPLEX`] is set: never opened by name);
//! - shaped: the next byte picks the capacity of each direction's ring
//!   ([`shaped_capacity`]: 64 to 2048 bytes), and the rest is scattered over
//!   the parts of the state that matter, in this order ([`shaped_regions`]):
//!   for direction 1, then direction 0, the ring's `tail`, `head`, the
//!   reader's line (own position, tail as seen), the writer's line, the
//!   control line (`closed`, the two sides), the writers' lock and the
//!   readers' lock (word and stamp); the first [`SHAPED_HOLDERS`] records of
//!   end 0's holder table, then of end 1's; the data region of direction 1,
//!   then of direction 0. Each part takes the input's next bytes (as many as
//!   it has), the rest of the payload is zero, and bytes past the last part
//!   are ignored.
//!
//! The file is a ready segment header (kind 13, the pipe fingerprint, the
//! payload's real length) and that payload. Each chosen end is opened with
//! `Connection::open_named_end`: it must open exactly when the payload's
//! length fits a duplex pipe (always when shaped), unless every record of
//! its holder table is taken (`Overflow`, then no record may be free). Each
//! open end gets only bounded operations, a few rounds of them: `poll(0)`,
//! `poll(1 ms)`, `recv_bytes_timeout` (1 ms, then 0 twice: a read that times
//! out in the middle of a streamed message keeps it for the next one),
//! `recv_timeout::<u64>(1 ms)`, `Debug` (later rounds look with a zero
//! timeout where the first waits 1 ms); in long mode the first end opened
//! also reads once with a timeout of [`LONG`], longer than the 20 ms probe
//! slice, so that the peer's holder records, a dead writer's lock and a dead
//! reader's lock are probed (only that end: the long waits cost most of a
//! run's time). Then the first end opened is closed, the rounds run again, and
//! the other end is drained. `send`/`send_bytes` are never called: they wait
//! without a deadline while the reader looks alive.
//!
//! Whatever the bytes, it must neither crash, nor panic, nor read out of
//! bounds (`AddressSanitizer` watches), nor hang: every call returns within
//! [`BOUND`]; errors are `Corrupt`, `Timeout` or `Closed` only (and `Codec`
//! from `recv_timeout::<u64>`; `BufferTooShort` needs a buffer, which these
//! reads do not have); a closed end refuses everything with `Closed`; a
//! direction marked closed polls ready, and a read of it with a free
//! readers' lock never times out. A message received must be one the ring's
//! data holds: a `MSG` record of its length and bytes, or a streamed one
//! whose `FIRST` record announces exactly its length, more than the first
//! chunk, and starts with it (the data regions never change: nothing writes).
//!
//! Shared by the cargo-fuzz target (`fuzz/fuzz_targets/open_pipe.rs`) and the
//! corpus replay test (`tests/fuzz_corpus.rs`).

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use shmproc::segment::HEADER_LEN;
use shmproc::{Connection, Error};

use crate::shm_file::ShmFile;

/// The short timed operations wait this long.
const TICK: Duration = Duration::from_millis(1);

/// The long wait: past the first probe (20 ms after a wait starts to sleep;
/// a probe that comes late still happens, before the deadline is checked),
/// with room for a loaded machine's scheduling delays (at 30 ms a seed
/// failed once under a load of 7 on 2 CPUs).
const LONG: Duration = Duration::from_millis(60);

/// Every call must return within this.
const BOUND: Duration = Duration::from_secs(2);

/// Rounds of operations before and after the close.
const ROUNDS: usize = 2;

/// The mode byte (the input's first).
pub(crate) mod mode {
    /// Which ends to open (`byte & ENDS`): [`BOTH`], [`END0`], [`END1`],
    /// [`BOTH_REVERSED`]. The first one opened is the one closed.
    pub(crate) const ENDS: u8 = 3;
    /// End 0, then end 1.
    pub(crate) const BOTH: u8 = 0;
    /// End 0 only: the peer's holder records decide whether it is alive.
    pub(crate) const END0: u8 = 1;
    /// End 1 only.
    pub(crate) const END1: u8 = 2;
    /// End 1, then end 0.
    pub(crate) const BOTH_REVERSED: u8 = 3;
    /// The rest is shaped (a capacity byte, then scattered): see the module docs.
    pub(crate) const SHAPED: u8 = 4;
    /// A read of [`super::LONG`] by the first end opened, in its first round.
    pub(crate) const LONG: u8 = 8;
    /// A raw input's header has the simplex fingerprint (no duplex bit).
    pub(crate) const SIMPLEX: u8 = 16;
}

/// The segment kind of a pipe.
pub(crate) const KIND: u32 = 13;
/// The pipe type fingerprint, with bit 0 set for a duplex pipe.
pub(crate) const PIPE_FP: u64 = 0x5049_5045_0000_0000;

/// Bytes of one `Direction`: the byte ring's header (four lines), the
/// control line, the writers' lock line, the readers' lock line.
pub(crate) const DIRECTION: usize = 448;
/// Offsets inside a `Direction` (direction `d` starts at `d * DIRECTION`).
#[allow(dead_code, reason = "some are for tests/fuzz_corpus.rs, which writes the seeds")]
pub(crate) mod at {
    /// The published writer position (u64).
    pub(crate) const TAIL: usize = 0;
    /// The published reader position (u64).
    pub(crate) const HEAD: usize = 64;
    /// The writer's line: its own position, then the head as it last read it.
    pub(crate) const WRITER_OWN: usize = 128;
    /// The head as the writer last read it.
    pub(crate) const WRITER_SEEN: usize = 136;
    /// The reader's line: its own position, then the tail as it last read it.
    pub(crate) const READER_OWN: usize = 192;
    /// The tail as the reader last read it.
    pub(crate) const READER_SEEN: usize = 200;
    /// The control line: `closed` (u32, anything but 0 is closed), then the
    /// `not_empty` and `not_full` sides (`seq` u32, padding, `waiters` u64).
    pub(crate) const CLOSED: usize = 256;
    /// Bytes of the control line that hold something.
    pub(crate) const CONTROL_LEN: usize = 40;
    /// The writers' lock: its word (u32), padding, the owner's stamp (u64).
    pub(crate) const WRITERS: usize = 320;
    /// The readers' lock, as the writers'.
    pub(crate) const READERS: usize = 384;
    /// Bytes of a lock that hold something.
    pub(crate) const LOCK_LEN: usize = 16;
}
/// A lock word's owner tid.
const TID_MASK: u32 = (1 << 22) - 1;
/// Bits no valid lock word has (beside the tid and the waiters bit).
const JUNK: u32 = !(TID_MASK | 1 << 31);
/// Payload offset of end 0's holder table; end 1's follows it.
pub(crate) const HOLDERS_AT: usize = 2 * DIRECTION;
/// Records per holder table (process stamps, u64: `start << 22 | pid`, 0 free).
pub(crate) const HOLDERS: usize = 64;
/// Bytes before the data regions.
pub(crate) const STATE: usize = HOLDERS_AT + 2 * HOLDERS * 8;
/// Records of each holder table that a shaped input reaches.
pub(crate) const SHAPED_HOLDERS: usize = 4;
/// The smallest ring.
pub(crate) const MIN_CAPACITY: usize = 64;

/// Record tags (the high half of a record's 8-byte header; its low half is
/// the payload's length).
#[allow(dead_code, reason = "some are for tests/fuzz_corpus.rs, which writes the seeds")]
pub(crate) mod tag {
    /// A whole message.
    pub(crate) const MSG: u64 = 0x4d53_4721;
    /// Padding to the end of the region.
    pub(crate) const PAD: u64 = 0x5041_4421;
    /// The first chunk of a streamed message: the total (u64 LE), then bytes.
    pub(crate) const FIRST: u64 = 0x4649_5221;
    /// A later chunk.
    pub(crate) const MORE: u64 = 0x4d4f_5221;
}

/// Payload offset of direction `d`'s field at `field` (an [`at`] offset).
pub(crate) fn dir_at(d: usize, field: usize) -> usize {
    d * DIRECTION + field
}

/// Payload offset of record `i` of end `e`'s holder table.
pub(crate) fn holder_at(e: usize, i: usize) -> usize {
    HOLDERS_AT + (e * HOLDERS + i) * 8
}

/// Payload offset of direction `d`'s data region.
pub(crate) fn data_at(d: usize, capacity: usize) -> usize {
    STATE + d * capacity
}

/// The largest payload a writer puts in one record.
pub(crate) fn max_payload(capacity: usize) -> usize {
    capacity / 2 - 8
}

/// The ring capacity of a shaped input whose size byte is `size`.
pub(crate) fn shaped_capacity(size: u8) -> usize {
    MIN_CAPACITY << (size % 6)
}

/// Where a shaped input puts its bytes, in input order: (payload offset,
/// length) (see the module docs).
pub(crate) fn shaped_regions(capacity: usize) -> Vec<(usize, usize)> {
    let mut r = Vec::new();
    for d in [1, 0] {
        r.extend([
            (dir_at(d, at::TAIL), 8),
            (dir_at(d, at::HEAD), 8),
            (dir_at(d, at::READER_OWN), 16),
            (dir_at(d, at::WRITER_OWN), 16),
            (dir_at(d, at::CLOSED), at::CONTROL_LEN),
            (dir_at(d, at::WRITERS), at::LOCK_LEN),
            (dir_at(d, at::READERS), at::LOCK_LEN),
        ]);
    }
    for e in [0, 1] {
        r.push((holder_at(e, 0), SHAPED_HOLDERS * 8));
    }
    for d in [1, 0] {
        r.push((data_at(d, capacity), capacity));
    }
    r
}

/// The payload of a shaped input whose size byte is `size` and whose
/// remaining bytes are `rest`.
pub(crate) fn shaped_payload(size: u8, rest: &[u8]) -> Vec<u8> {
    let capacity = shaped_capacity(size);
    let mut p = vec![0; STATE + 2 * capacity];
    let mut rest = rest;
    for (at, n) in shaped_regions(capacity) {
        let (part, after) = rest.split_at(n.min(rest.len()));
        p[at..at + part.len()].copy_from_slice(part);
        rest = after;
    }
    p
}

/// The ring capacity a duplex pipe with a `len`-byte payload has, if it is
/// one (as the crate judges it: the bytes after the state are exactly two
/// rings of a power of two of at least 64 bytes).
pub(crate) fn capacity_of(len: usize) -> Option<usize> {
    let rings = len.checked_sub(STATE)?;
    let capacity = rings / 2;
    (capacity >= MIN_CAPACITY && capacity.is_power_of_two() && capacity * 2 == rings).then_some(capacity)
}

/// A ready segment header for a pipe with a `payload_len`-byte payload.
pub(crate) fn header(payload_len: usize, duplex: bool) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(b"SHMPROC\0");
    h.extend_from_slice(&2u32.to_le_bytes()); // layout version
    h.extend_from_slice(&KIND.to_le_bytes());
    h.extend_from_slice(&(PIPE_FP | u64::from(duplex)).to_le_bytes());
    h.extend_from_slice(&(payload_len as u64).to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // creator pid: none
    h.extend_from_slice(&1u32.to_le_bytes()); // init state: ready
    h.resize(HEADER_LEN, 0); // creator start time, reserved
    h
}

/// What a run saw; reported in this order, by [`Saw::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Saw {
    End0,
    End1,
    /// An end's holder table was full of live processes' records.
    Overflow,
    /// A whole message came out.
    Message,
    /// A whole message longer than a writer ever makes one (the largest
    /// record payload, half the ring less 8): the reader takes any record
    /// that lies inside the region and the published bytes.
    Oversized,
    /// A streamed message came out.
    Streamed,
    Corrupt,
    /// `Closed` before our close, with the direction not marked closed: the
    /// peer end is gone (its holder records all name dead processes, or it
    /// has none).
    Gone,
}

impl Saw {
    fn name(self) -> &'static str {
        match self {
            Saw::End0 => "end0",
            Saw::End1 => "end1",
            Saw::Overflow => "overflow",
            Saw::Message => "message",
            Saw::Oversized => "oversized",
            Saw::Streamed => "streamed",
            Saw::Corrupt => "corrupt",
            Saw::Gone => "gone",
        }
    }
}

/// Runs one input (the fuzz target's entry point).
#[allow(dead_code, reason = "the replay test calls `exercise` to see what happened")]
pub(crate) fn run(data: &[u8]) {
    exercise(data);
}

/// Runs one input; returns what it saw: the ends opened ("end0", "end1"),
/// then "overflow", "message", "oversized", "streamed", "corrupt", "gone"
/// when they happened (see [`Saw`]).
pub(crate) fn exercise(data: &[u8]) -> Vec<&'static str> {
    let Some((&first, rest)) = data.split_first() else { return Vec::new() };
    let (payload, duplex) = if first & mode::SHAPED != 0 {
        let (size, rest) = rest.split_first().map_or((0, &[][..]), |(s, r)| (*s, r));
        (shaped_payload(size, rest), true)
    } else {
        (rest.to_vec(), first & mode::SIMPLEX == 0)
    };
    let mut bytes = header(payload.len(), duplex);
    bytes.extend_from_slice(&payload);
    let shm = ShmFile::write(&bytes);
    let file = File::open(format!("/dev/shm/{}", shm.name)).expect("opening the file just written");
    let capacity = capacity_of(payload.len()).filter(|_| duplex);
    let mut pipe = Pipe { file, payload, capacity, long: first & mode::LONG != 0, seen: BTreeSet::new() };
    let ends: &[usize] = match first & mode::ENDS {
        mode::BOTH => &[0, 1],
        mode::END0 => &[0],
        mode::END1 => &[1],
        mode::BOTH_REVERSED => &[1, 0],
        _ => unreachable!("two bits"),
    };
    pipe.run(&shm.name, ends);
    drop(shm);
    pipe.seen.iter().map(|s| s.name()).collect()
}

/// One input's pipe, and what was seen of it.
struct Pipe {
    /// The segment file, to read the state as it is now.
    file: File,
    /// The payload as written (its data regions never change: nothing sends).
    payload: Vec<u8>,
    /// The ring capacity, if the payload is a duplex pipe's.
    capacity: Option<usize>,
    long: bool,
    seen: BTreeSet<Saw>,
}

/// How a message read came out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    Bytes,
    /// `recv_timeout::<u64>`: a message that is not a `u64` is a `Codec` error.
    U64,
}

impl Pipe {
    fn run(&mut self, name: &str, ends: &[usize]) {
        let mut conns = Vec::new();
        for &end in ends {
            let free = (0..HOLDERS).any(|i| self.u64_now(holder_at(end, i)) == 0);
            match Connection::open_named_end(name, end) {
                Ok(c) => {
                    let capacity = self.capacity.unwrap_or_else(|| {
                        panic!("a {}-byte payload that is no duplex pipe opened: {c:?}", self.payload.len())
                    });
                    assert_eq!(c.capacity(), capacity, "capacity");
                    assert!(c.readable() && c.writable() && !c.closed(), "a fresh named end: {c:?}");
                    self.seen.insert(if end == 0 { Saw::End0 } else { Saw::End1 });
                    conns.push((end, c));
                }
                Err(Error::Overflow { .. }) if self.capacity.is_some() => {
                    assert!(!free, "end {end}'s holder table has a free record, yet its open overflowed");
                    self.seen.insert(Saw::Overflow);
                }
                Err(e) => {
                    assert!(self.capacity.is_none(), "a valid pipe did not open as end {end}: {e:?}");
                    assert!(matches!(e, Error::Mismatch { .. }), "an invalid pipe refused with {e:?}");
                }
            }
        }
        for round in 0..ROUNDS {
            for (i, (end, c)) in conns.iter().enumerate() {
                self.round(*end, c, round == 0, round == 0 && i == 0 && self.long);
            }
        }
        let Some((_, closing)) = conns.first() else { return };
        closing.close();
        assert!(closing.closed(), "closed, yet closed() is false");
        for round in 0..ROUNDS {
            for (end, c) in &conns {
                self.round(*end, c, round == 0, false);
            }
        }
        let capacity = self.capacity.unwrap_or(0);
        for (end, c) in &conns {
            // At most one message per 8 bytes, one by one until an error.
            for _ in 0..capacity / 8 + 2 {
                if self.recv(1 - end, c, TICK, Read::Bytes).is_err() {
                    break;
                }
            }
            let _ = format!("{c:?}");
        }
    }

    /// One round of operations on end `end`: the first of each phase
    /// (`first`) waits [`TICK`] where the others only look (a zero timeout
    /// never reaches the futex sleep, a tick does; looks keep the runs fast).
    fn round(&mut self, end: usize, c: &Connection, first: bool, long: bool) {
        let d = 1 - end;
        let tick = if first { TICK } else { Duration::ZERO };
        let _ = format!("{c:?}");
        self.poll(d, c, Duration::ZERO);
        self.poll(d, c, tick);
        if long {
            let _ = self.recv(d, c, LONG, Read::Bytes);
        }
        for timeout in [tick, Duration::ZERO, Duration::ZERO] {
            let _ = self.recv(d, c, timeout, Read::Bytes);
        }
        let _ = self.recv(d, c, tick, Read::U64);
    }

    fn poll(&mut self, d: usize, c: &Connection, timeout: Duration) {
        let marked = self.closed_now(d);
        let start = Instant::now();
        let r = c.poll(Some(timeout));
        bounded(start, "poll", timeout);
        match r {
            Ok(ready) => {
                assert!(!c.closed(), "poll on a closed end gave Ok({ready})");
                assert!(ready || !marked, "poll({timeout:?}) on a direction marked closed gave false");
            }
            Err(Error::Closed) => assert!(c.closed(), "poll gave Closed on an end not closed"),
            Err(e) => panic!("poll({timeout:?}) gave {e:?}"),
        }
    }

    /// One read of direction `d` through `c`: its outcome, checked.
    fn recv(&mut self, d: usize, c: &Connection, timeout: Duration, how: Read) -> Result<(), ()> {
        let marked = self.closed_now(d);
        let word = self.u64_now(dir_at(d, at::READERS)) as u32;
        // A free word, or one with junk bits (taken over at once).
        let lock_free = word & TID_MASK == 0 || word & JUNK != 0;
        let start = Instant::now();
        let r = match how {
            Read::Bytes => c.recv_bytes_timeout(timeout).map(Some),
            Read::U64 => c.recv_timeout::<u64>(timeout).map(|_| None),
        };
        bounded(start, "recv", timeout);
        let ours = c.closed();
        match r {
            Ok(m) => {
                assert!(!ours, "a read on a closed end succeeded");
                if let Some(m) = m {
                    self.message(d, &m);
                }
                return Ok(());
            }
            Err(Error::Closed) => {
                if !ours && !marked {
                    self.seen.insert(Saw::Gone);
                }
            }
            Err(e) if ours => panic!("a read on a closed end gave {e:?}"),
            Err(Error::Timeout) => {
                assert!(!(marked && lock_free), "a read of a closed direction, its readers' lock free, timed out");
            }
            Err(Error::Corrupt { .. }) => {
                self.seen.insert(Saw::Corrupt);
            }
            Err(Error::Codec { .. }) if how == Read::U64 => {}
            Err(e) => panic!("a read ({timeout:?}) gave {e:?}"),
        }
        Err(())
    }

    /// Checks a message read from direction `d` against the records its data
    /// region holds (see the module docs).
    fn message(&mut self, d: usize, m: &[u8]) {
        let capacity = self.capacity.expect("a message from an open pipe");
        let data = &self.payload[data_at(d, capacity)..][..capacity];
        let word = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().expect("8 bytes"));
        let (mut whole, mut streamed) = (false, false);
        for o in (0..capacity).step_by(8) {
            let h = word(o);
            let len = (h & 0xffff_ffff) as usize;
            let Some(chunk) = data.get(o + 8..o + 8 + len) else { continue };
            match h >> 32 {
                tag::MSG => whole |= chunk == m,
                tag::FIRST if len >= 8 => {
                    let (total, first) = (word(o + 8), &chunk[8..]);
                    streamed |= total == m.len() as u64 && total > first.len() as u64 && m.starts_with(first);
                }
                _ => {}
            }
        }
        assert!(
            whole || streamed,
            "a {}-byte message that no MSG record holds and no FIRST record starts (capacity {capacity})",
            m.len()
        );
        if !whole {
            self.seen.insert(Saw::Streamed);
            return;
        }
        self.seen.insert(Saw::Message);
        if m.len() > max_payload(capacity) {
            self.seen.insert(Saw::Oversized);
        }
    }

    /// Whether direction `d` is marked closed in the segment now.
    fn closed_now(&self, d: usize) -> bool {
        self.capacity.is_some() && self.u64_now(dir_at(d, at::CLOSED)) as u32 != 0
    }

    /// The u64 at payload offset `at` as the segment holds it now (0 past
    /// its end).
    fn u64_now(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        match self.file.read_exact_at(&mut b, (HEADER_LEN + at) as u64) {
            Ok(()) => u64::from_le_bytes(b),
            Err(_) => 0,
        }
    }
}

/// Asserts that a call that began at `start` with `timeout` returned in time.
fn bounded(start: Instant, what: &str, timeout: Duration) {
    let took = start.elapsed();
    assert!(took <= BOUND, "{what} with a {timeout:?} timeout took {took:?}");
}
