//! The byte-record ring: variable-length messages, one writer and one reader
//! at a time (the `ObjectQueue` serialises writers and readers with locks; a
//! pipe has one of each per direction).
//!
//! # Records
//!
//! The data region is `capacity` bytes, a power of two and a multiple of 8.
//! `tail` (writer) and `head` (reader) are byte positions, multiples of 8,
//! with `0 <= tail − head <= capacity`. A record is an 8-byte header, `len`
//! (low 32 bits) and a tag (high 32 bits), then `len` payload bytes padded to
//! 8. A record never wraps: when it does not fit before the end of the region,
//! the writer fills the rest with a `PAD` record (its `len` covers the rest of
//! the region) and starts again at offset 0, and both are published together.
//!
//! # Notes about memory ordering
//! As in the SPSC ring: the writer copies the record in, then stores `tail`
//! with `Release`; the reader loads `tail` with `Acquire`, copies out, then
//! stores `head` with `Release`, which the writer loads with `Acquire` before
//! reusing the space.
//!
//! # Trust
//! Positions, tags and lengths read from shared memory are checked before any
//! copy: `tail − head` within the capacity, positions 8-aligned, a `PAD` that
//! ends exactly at the end of the region, a message that lies inside the
//! published bytes and the region. Anything else is [`Error::Corrupt`]; no
//! copy ever leaves the region.

use super::{Padded, distance};
use crate::error::{Error, Result};
use crate::loom::{AtomicU64, Ordering};

/// Header bytes before each record's payload.
pub(crate) const RECORD_HEADER: usize = 8;
/// Tag of a message record.
const MSG: u64 = 0x4d53_4721;
/// Tag of a record that only fills the region up to its end.
const PAD: u64 = 0x5041_4421;
/// Tag of the first chunk of a message streamed in several records (a pipe's
/// message larger than one record): its payload is the message's total
/// length (u64, little-endian), then the chunk's bytes.
const FIRST: u64 = 0x4649_5221;
/// Tag of a later chunk of a streamed message: the chunk's bytes.
const MORE: u64 = 0x4d4f_5221;

/// What a record holds, for the pipes' framing (queues write and accept only
/// whole messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole message.
    Whole,
    /// The first chunk of a message of this many bytes in all.
    First(u64),
    /// A later chunk.
    More,
}

/// Bytes of a [`Frame::First`] record's payload before the chunk's bytes.
pub(crate) const FIRST_PREFIX: usize = 8;

/// `n` rounded up to a multiple of 8.
fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

/// Bytes a record with an `len`-byte payload occupies.
pub(crate) fn record_len(len: usize) -> usize {
    RECORD_HEADER + pad8(len)
}

/// The largest payload a region of `capacity` bytes takes: a record of at
/// most half the region always fits once the region is empty, wherever the
/// positions stand (either the part before the end or the part before the
/// current offset is at least half). A bigger one could wait forever on an
/// empty ring.
pub(crate) fn max_payload(capacity: usize) -> usize {
    (capacity / 2).saturating_sub(RECORD_HEADER).min(u32::MAX as usize)
}

/// The shared positions.
#[repr(C)]
#[derive(Debug, Default)]
pub struct BytesHeader {
    /// The published writer position.
    tail: Padded<AtomicU64>,
    /// The published reader position.
    head: Padded<AtomicU64>,
    /// The writer's line: its own position and the head as it last read it.
    writer: Padded<Own>,
    /// The reader's line: its own position and the tail as it last read it.
    reader: Padded<Own>,
}

/// One side's private line: the side's own position (equal to the published
/// one between operations, or one record ahead if the side died between the
/// two stores) and the other side's position as last read (never ahead of
/// it). Only the side that holds the ring's turn touches it, so in the common
/// case a write or read touches no line the other side writes.
#[repr(C)]
#[derive(Debug, Default)]
struct Own {
    own: AtomicU64,
    seen: AtomicU64,
}

impl BytesHeader {
    /// An empty ring's positions (the loom models' heap rings).
    #[cfg(loom)]
    pub fn new() -> Self {
        let own = || Padded(Own { own: AtomicU64::new(0), seen: AtomicU64::new(0) });
        BytesHeader { tail: Padded(AtomicU64::new(0)), head: Padded(AtomicU64::new(0)), writer: own(), reader: own() }
    }
}

/// The data region, raw bytes in a segment (or, under loom, cells that loom
/// watches for races).
#[cfg(not(loom))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Region {
    ptr: *mut u8,
    len: usize,
}

#[cfg(not(loom))]
impl Region {
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` bytes, aligned to 8,
    /// for as long as the region is used, and accessed by others only under
    /// this ring's protocol (or by a misbehaving peer, whose bytes are data).
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        Region { ptr, len }
    }

    #[inline]
    fn copy_in(self, at: usize, src: &[u8]) {
        assert!(at <= self.len && src.len() <= self.len - at, "a record copy outside the ring");
        // SAFETY: in bounds (checked above); the range is ours by the ring
        // protocol (between tail and head + capacity), no reference is formed.
        unsafe {
            if let [byte] = src {
                // One byte (a length prefix, a small integer): a store, not
                // a call to memcpy.
                self.ptr.add(at).write(*byte);
            } else {
                std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(at), src.len());
            }
        }
    }

    /// Asks the CPU to start loading the cache line that holds byte `at`
    /// (nothing if it lies outside the region).
    #[inline]
    fn prefetch(self, at: usize) {
        #[cfg(target_arch = "x86_64")]
        if at < self.len {
            // SAFETY: a prefetch is a hint: it never faults and changes no
            // memory; the address is inside the region anyway.
            unsafe { std::arch::x86_64::_mm_prefetch(self.ptr.add(at).cast::<i8>(), std::arch::x86_64::_MM_HINT_T0) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = at;
    }

    #[inline]
    fn copy_out(self, at: usize, dst: &mut [u8]) {
        assert!(at <= self.len && dst.len() <= self.len - at, "a record copy outside the ring");
        // SAFETY: as in `copy_in`, for a published range.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(at), dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `dst.len()` bytes from `at` into `dst`; the bytes, now
    /// initialised.
    fn copy_out_uninit(self, at: usize, dst: &mut [std::mem::MaybeUninit<u8>]) -> &[u8] {
        assert!(at <= self.len && dst.len() <= self.len - at, "a record copy outside the ring");
        // SAFETY: the source is in bounds (checked above) and published (as
        // in `copy_out`); the copy initialises every byte of `dst`, which the
        // returned slice then covers exactly.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.add(at), dst.as_mut_ptr().cast::<u8>(), dst.len());
            std::slice::from_raw_parts(dst.as_ptr().cast::<u8>(), dst.len())
        }
    }
}

#[cfg(loom)]
#[derive(Debug, Clone, Copy)]
pub struct Region<'a> {
    cells: &'a [crate::loom::cell::UnsafeCell<u8>],
}

#[cfg(loom)]
impl<'a> Region<'a> {
    /// A region over loom cells.
    pub fn new(cells: &'a [crate::loom::cell::UnsafeCell<u8>]) -> Self {
        Region { cells }
    }

    #[allow(clippy::unused_self, reason = "the same interface as the segment region's")]
    fn prefetch(self, _: usize) {}

    fn copy_in(self, at: usize, src: &[u8]) {
        for (cell, b) in self.cells[at..at + src.len()].iter().zip(src) {
            // SAFETY: loom checks that no other thread accesses the cell now.
            cell.with_mut(|p| unsafe { *p = *b });
        }
    }

    fn copy_out(self, at: usize, dst: &mut [u8]) {
        for (cell, b) in self.cells[at..at + dst.len()].iter().zip(dst) {
            // SAFETY: as in `copy_in`.
            *b = cell.with(|p| unsafe { *p });
        }
    }

    fn copy_out_uninit(self, at: usize, dst: &mut [std::mem::MaybeUninit<u8>]) -> &[u8] {
        for (cell, b) in self.cells[at..at + dst.len()].iter().zip(dst.iter_mut()) {
            // SAFETY: as in `copy_in`.
            b.write(cell.with(|p| unsafe { *p }));
        }
        // SAFETY: every byte was written just above.
        unsafe { std::slice::from_raw_parts(dst.as_ptr().cast::<u8>(), dst.len()) }
    }
}

/// A view of a ring: its header and data region.
#[derive(Debug)]
pub struct Bytes<'a, R> {
    /// The positions.
    pub header: &'a BytesHeader,
    /// The data.
    pub region: R,
    /// Region length: a power of two, at least 16.
    pub capacity: usize,
}

/// What [`Bytes::try_read_into`] found.
#[derive(Debug)]
pub enum ReadInto<'b> {
    /// The next message, taken.
    Message(&'b [u8]),
    /// Nothing to read.
    Empty,
    /// A message longer than the buffer, left in the ring.
    Longer,
}

/// A whole message in the ring, read in place ([`Bytes::take_peeked_with`]):
/// only what is asked for is copied out.
#[derive(Debug, Clone, Copy)]
pub struct InRing<R> {
    region: R,
    /// Where the payload starts in the region.
    at: usize,
    len: usize,
}

/// A record found by [`Bytes::peek_record`], not taken yet.
#[derive(Debug, Clone, Copy)]
pub struct Peeked {
    /// What the record holds.
    pub frame: Frame,
    /// Its data bytes (a [`Frame::First`]'s prefix not counted).
    pub len: usize,
    /// Where its data starts in the region.
    at: usize,
    /// The reader's position after it.
    next: u64,
}

/// What a reader's quick look at its position found
/// ([`Bytes::peek_whole`]).
#[derive(Debug)]
pub enum Glance {
    /// Nothing: the checked positions agree.
    Empty,
    /// A whole message, checked.
    Whole(Peeked),
    /// Something else (padding first, a chunk, anything that fails the
    /// checks), for [`Bytes::peek_record`] to sort out.
    Other,
}

/// Why a write did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// No room now.
    Full,
    /// The message can never fit (payload bytes, largest possible).
    TooLarge(usize, usize),
}

/// A record being written in place ([`Bytes::try_write_in_place`]): the
/// payload goes straight into the ring's free space, in order, up to the
/// room it was given.
#[derive(Debug)]
pub struct InPlace<R> {
    region: R,
    /// Where the next byte goes.
    at: usize,
    /// The end of the room (`at <= end <= region length`).
    end: usize,
}

/// Free space a writer wants to see before it writes in place: below this
/// (by the head as it last read it), it reads the real head first, so that a
/// stale copy does not send messages down the slower path.
const IN_PLACE_ROOM: usize = 4096;

macro_rules! bytes_impl {
    ($($lt:lifetime)?) => {
        impl<'a> Bytes<'a, Region$(<$lt>)?> {
            fn corrupt(&self, what: String) -> Error {
                Error::corrupt("byte ring", what)
            }

            #[inline]
            fn header_at(&self, off: usize) -> u64 {
                let mut b = [0u8; 8];
                self.region.copy_out(off, &mut b);
                u64::from_le_bytes(b)
            }

            /// Where position `pos` falls in the region (the capacity is a
            /// power of two: a mask, not a division).
            #[inline]
            fn offset(&self, pos: u64) -> usize {
                (pos & (self.capacity as u64 - 1)) as usize
            }

            /// Checks `tail − head` and alignment; returns the bytes in the ring.
            #[inline]
            fn used(&self, tail: u64, head: u64) -> Result<usize> {
                let used = distance(tail, head);
                if used > self.capacity as u64 || (tail | head) % 8 != 0 {
                    return Err(self.bad_positions(tail, head));
                }
                Ok(used as usize)
            }

            #[cold]
            #[inline(never)]
            fn bad_positions(&self, tail: u64, head: u64) -> Error {
                self.corrupt(format!("tail {tail} and head {head} are not 8-aligned within {} bytes", self.capacity))
            }

            /// Appends one record with `payload` (writer only).
            pub fn try_write(&self, payload: &[u8]) -> Result<Result<(), Write>> {
                self.try_write_frame(Frame::Whole, payload)
            }

            /// Appends one record of kind `frame` with `payload` (writer
            /// only); a [`Frame::First`] record carries the total length
            /// before the payload, which must then fit [`max_payload`] less
            /// [`FIRST_PREFIX`].
            pub fn try_write_frame(&self, frame: Frame, payload: &[u8]) -> Result<Result<(), Write>> {
                let prefix = if let Frame::First(_) = frame { FIRST_PREFIX } else { 0 };
                let max = max_payload(self.capacity) - prefix;
                if payload.len() > max {
                    return Ok(Err(Write::TooLarge(payload.len(), max)));
                }
                let (tag, total) = match frame {
                    Frame::Whole => (MSG, None),
                    Frame::First(total) => (FIRST, Some(total)),
                    Frame::More => (MORE, None),
                };
                let Some((tail, at, next)) = self.reserve(record_len(prefix + payload.len()))? else {
                    return Ok(Err(Write::Full));
                };
                if let Some(total) = total {
                    self.region.copy_in(at + RECORD_HEADER, &total.to_le_bytes());
                }
                self.region.copy_in(at + RECORD_HEADER + prefix, payload);
                self.publish(tail, at, (prefix + payload.len()) as u64 | tag << 32, next);
                Ok(Ok(()))
            }

            /// Appends one whole-message record with `payload` if it fits now
            /// before the region's end (writer only): `false` in every other
            /// case (no room, padding needed, too large, positions that fail
            /// the checks), with nothing written, for
            /// [`try_write_frame`](Self::try_write_frame) to sort out. The
            /// lean path of a pipe's send: no frame to match, no error to
            /// build.
            #[inline]
            pub fn try_write_whole_now(&self, payload: &[u8]) -> bool {
                let rec = record_len(payload.len());
                let writer = &self.header.writer.0;
                let tail = writer.own.load(Ordering::Relaxed);
                let off = self.offset(tail);
                if payload.len() > max_payload(self.capacity) || rec > self.capacity - off {
                    return false;
                }
                // As in `reserve`: the head as last read is never ahead of the
                // real one, so room by it is room.
                let fits = |head: u64| {
                    let used = distance(tail, head);
                    (tail | head) % 8 == 0 && used <= self.capacity as u64 && used as usize + rec <= self.capacity
                };
                if !fits(writer.seen.load(Ordering::Relaxed)) {
                    // Acquire: pairs with the reader's Release store of head.
                    let head = self.header.head.0.load(Ordering::Acquire);
                    writer.seen.store(head, Ordering::Relaxed);
                    if !fits(head) {
                        return false;
                    }
                }
                self.region.copy_in(off + RECORD_HEADER, payload);
                self.publish(tail, off, payload.len() as u64 | MSG << 32, tail.wrapping_add(rec as u64));
                true
            }

            /// Appends one whole-message record of `len` payload bytes that
            /// `fill` writes in place, in order (writer only), padding to the
            /// region's start when it does not fit before the end. Bytes
            /// `fill` leaves unwritten are zero.
            pub fn try_write_with(&self, len: usize, fill: impl FnOnce(&mut InPlace<Region$(<$lt>)?>)) -> Result<Result<(), Write>> {
                let max = max_payload(self.capacity);
                if len > max {
                    return Ok(Err(Write::TooLarge(len, max)));
                }
                let Some((tail, at, next)) = self.reserve(record_len(len))? else { return Ok(Err(Write::Full)) };
                let start = at + RECORD_HEADER;
                let mut record = InPlace { region: self.region, at: start, end: start + len };
                fill(&mut record);
                while record.at < record.end {
                    let n = (record.end - record.at).min(64);
                    record.push(&[0; 64][..n]);
                }
                self.publish(tail, at, len as u64 | MSG << 32, next);
                Ok(Ok(()))
            }

            /// Finds room for a record of `rec` bytes at the writer's
            /// position: `(tail, where the record goes, the tail after it)`,
            /// with the padding before it written if it goes to the region's
            /// start; `None` if there is no room now.
            fn reserve(&self, rec: usize) -> Result<Option<(u64, usize, u64)>> {
                let writer = &self.header.writer.0;
                let tail = writer.own.load(Ordering::Relaxed);
                let off = self.offset(tail);
                let to_end = self.capacity - off;
                let need = self.need(tail, rec);
                // The head as last read is never ahead of the real one: if
                // the record fits by it, it fits. Otherwise read the real one.
                if self.used(tail, writer.seen.load(Ordering::Relaxed))? + need > self.capacity {
                    // Acquire: pairs with the reader's Release store of head.
                    let head = self.header.head.0.load(Ordering::Acquire);
                    writer.seen.store(head, Ordering::Relaxed);
                    if self.used(tail, head)? + need > self.capacity {
                        return Ok(None);
                    }
                }
                let mut at = off;
                if rec > to_end {
                    let pad = (to_end - RECORD_HEADER) as u64 | PAD << 32;
                    self.region.copy_in(off, &pad.to_le_bytes());
                    at = 0;
                }
                Ok(Some((tail, at, tail.wrapping_add(need as u64))))
            }

            /// Writes the header of the record at `at` and publishes it (and
            /// any padding before it): the tail moves from `tail` to `next`.
            fn publish(&self, tail: u64, at: usize, header: u64, next: u64) {
                debug_assert_ne!(tail, next);
                self.region.copy_in(at, &header.to_le_bytes());
                // Our own copy first: a writer killed between the two stores
                // leaves a whole record that the next write publishes with its
                // own (the other order would let it overwrite a published one).
                self.header.writer.0.own.store(next, Ordering::Relaxed);
                // Release: pairs with the reader's Acquire load of tail.
                self.header.tail.0.store(next, Ordering::Release);
            }

            /// Appends one record whose payload `fill` writes in place
            /// (writer only): `fill` pushes the payload's bytes into the
            /// [`InPlace`] it is given, in order, and says whether they all
            /// fitted (its room is the free run from the writer's position to
            /// the region's end, at most [`max_payload`]). `Ok(true)`: the
            /// record is published. `Ok(false)`: there was no room in place,
            /// or `fill` needed more; nothing is published, and the caller can
            /// write the record another way ([`try_write`](Self::try_write)
            /// also pads to the region's start). An error from `fill` is
            /// returned as it is, with nothing published.
            pub fn try_write_in_place(
                &self,
                fill: impl FnOnce(&mut InPlace<Region$(<$lt>)?>) -> Result<bool>,
            ) -> Result<bool> {
                let writer = &self.header.writer.0;
                let tail = writer.own.load(Ordering::Relaxed);
                let off = self.offset(tail);
                let to_end = self.capacity - off;
                let mut free = self.capacity - self.used(tail, writer.seen.load(Ordering::Relaxed))?;
                if free < to_end.min(IN_PLACE_ROOM) {
                    // Acquire: pairs with the reader's Release store of head.
                    let head = self.header.head.0.load(Ordering::Acquire);
                    writer.seen.store(head, Ordering::Relaxed);
                    free = self.capacity - self.used(tail, head)?;
                }
                let run = free.min(to_end);
                if run < RECORD_HEADER {
                    return Ok(false);
                }
                // A multiple of 8: a payload of at most `room` bytes makes a
                // record of at most `run` bytes.
                let room = ((run - RECORD_HEADER) & !7).min(max_payload(self.capacity));
                let start = off + RECORD_HEADER;
                let mut record = InPlace { region: self.region, at: start, end: start + room };
                if !fill(&mut record)? {
                    return Ok(false);
                }
                let len = record.at - start;
                self.publish(tail, off, len as u64 | MSG << 32, tail.wrapping_add(record_len(len) as u64));
                Ok(true)
            }

            /// Finds the next whole message: `(payload length, where the
            /// payload starts, the head after it)`, or `None` if the ring is
            /// empty. A chunk of a streamed message is `Corrupt` here (queues
            /// never write one).
            fn next(&self) -> Result<Option<(usize, usize, u64)>> {
                match self.next_record()? {
                    None => Ok(None),
                    Some((MSG, len, at, next)) => Ok(Some((len, at, next))),
                    Some((tag, _, at, _)) => Err(self.corrupt(format!("record tag {tag:#x} at offset {}", at - RECORD_HEADER))),
                }
            }

            /// Finds the next record that is not padding: `(tag, payload
            /// length, where the payload starts, the head after it)`, or
            /// `None` if the ring is empty. The tag is one of MSG, FIRST,
            /// MORE, and a FIRST record is at least its prefix long.
            fn next_record(&self) -> Result<Option<(u64, usize, usize, u64)>> {
                let reader = &self.header.reader.0;
                let mut head = reader.own.load(Ordering::Relaxed);
                // The tail as last read: every byte before it is a whole,
                // published record (tails only move by whole records, a PAD
                // together with the message after it). Read the real one only
                // when those are used up.
                let mut tail = reader.seen.load(Ordering::Relaxed);
                if tail == head {
                    // Acquire: pairs with the writer's Release store of tail.
                    tail = self.header.tail.0.load(Ordering::Acquire);
                    reader.seen.store(tail, Ordering::Relaxed);
                }
                let mut used = self.used(tail, head)?;
                // At most one PAD precedes a message (two would mean a lap of padding).
                for _ in 0..2 {
                    if used == 0 {
                        return Ok(None);
                    }
                    let off = self.offset(head);
                    if used < RECORD_HEADER {
                        return Err(self.corrupt(format!("{used} bytes left at {head}: no room for a record header")));
                    }
                    let h = self.header_at(off);
                    let len = (h & 0xffff_ffff) as usize;
                    match h >> 32 {
                        PAD => {
                            if off + RECORD_HEADER + len != self.capacity || len + RECORD_HEADER > used {
                                return Err(self.corrupt(format!("padding of {len} bytes at offset {off}")));
                            }
                            // Padding is only ever published with the message
                            // after it: alone, a waiter would spin on a ring
                            // that is neither empty nor readable.
                            if len + RECORD_HEADER == used {
                                return Err(self.corrupt(format!("padding of {len} bytes at offset {off} and no message")));
                            }
                            head = head.wrapping_add((len + RECORD_HEADER) as u64);
                            used -= len + RECORD_HEADER;
                        }
                        tag @ (MSG | FIRST | MORE) => {
                            let rec = record_len(len);
                            if off + rec > self.capacity || rec > used {
                                return Err(self.corrupt(format!(
                                    "a {len}-byte record at offset {off} with {used} bytes published"
                                )));
                            }
                            if tag == FIRST && len < FIRST_PREFIX {
                                return Err(self.corrupt(format!("a {len}-byte first chunk at offset {off}")));
                            }
                            return Ok(Some((tag, len, off + RECORD_HEADER, head.wrapping_add(rec as u64))));
                        }
                        tag => return Err(self.corrupt(format!("record tag {tag:#x} at offset {off}"))),
                    }
                }
                Err(self.corrupt(format!("padding twice in a row at {head}")))
            }

            /// Takes the next message, appending its payload to `out` (reader
            /// only); `false` if the ring is empty.
            pub fn try_read(&self, out: &mut Vec<u8>) -> Result<bool> {
                let Some((len, at, next)) = self.next()? else { return Ok(false) };
                self.append(at, len, out);
                self.taken(next);
                Ok(true)
            }

            /// Appends the `len` bytes at `at` (a checked, published range)
            /// to `out`, without zeroing first: the copy initialises the
            /// spare capacity it is given.
            fn append(&self, at: usize, len: usize, out: &mut Vec<u8>) {
                out.reserve(len);
                let start = out.len();
                let copied = self.region.copy_out_uninit(at, &mut out.spare_capacity_mut()[..len]).len();
                // SAFETY: the `copied` (= `len`) bytes after `start` were just
                // initialised by the copy.
                unsafe { out.set_len(start + copied) };
            }

            /// Takes the next message into `dst` if it fits there (reader
            /// only). A message longer than `dst` stays for
            /// [`try_read`](Self::try_read). For small messages, read into a
            /// buffer on the stack.
            pub fn try_read_into<'b>(&self, dst: &'b mut [std::mem::MaybeUninit<u8>]) -> Result<ReadInto<'b>> {
                let Some((len, at, next)) = self.next()? else { return Ok(ReadInto::Empty) };
                let Some(dst) = dst.get_mut(..len) else { return Ok(ReadInto::Longer) };
                let message = self.region.copy_out_uninit(at, dst);
                self.taken(next);
                Ok(ReadInto::Message(message))
            }

            /// The next record, without taking it (reader only): its frame,
            /// its data length (a [`Frame::First`]'s prefix not counted) and
            /// where it lies, checked; `None` if the ring is empty. Take it
            /// with [`take_peeked`](Self::take_peeked) and friends.
            pub fn peek_record(&self) -> Result<Option<Peeked>> {
                match self.glance() {
                    Glance::Empty => return Ok(None),
                    Glance::Whole(p) => return Ok(Some(p)),
                    Glance::Other => {}
                }
                Ok(self.next_record()?.map(|(tag, len, at, next)| {
                    let (frame, data) = match tag {
                        FIRST => (Frame::First(self.header_at(at)), len - FIRST_PREFIX),
                        MORE => (Frame::More, len),
                        _ => (Frame::Whole, len),
                    };
                    Peeked { frame, len: data, at: at + (len - data), next }
                }))
            }

            /// The next record if it is a whole message right at the
            /// reader's position (reader only), checked as
            /// [`peek_record`](Self::peek_record) checks it; or that the
            /// ring is empty; or [`Glance::Other`] for every other case, for
            /// `peek_record` to sort out. The lean path of a pipe's read.
            #[inline]
            pub fn peek_whole(&self) -> Glance {
                self.glance()
            }

            /// What the reader finds at its position, the common cases
            /// decided with a few loads and no error built: nothing (checked
            /// positions that agree), a whole message (checked as
            /// `next_record` checks it), or something else (padding first, a
            /// chunk, anything that fails the checks) for `next_record`.
            #[inline]
            fn glance(&self) -> Glance {
                let reader = &self.header.reader.0;
                let head = reader.own.load(Ordering::Relaxed);
                // As in `next_record`: bytes before the tail as last read are
                // whole published records.
                let mut tail = reader.seen.load(Ordering::Relaxed);
                if tail == head {
                    // Acquire: pairs with the writer's Release store of tail.
                    tail = self.header.tail.0.load(Ordering::Acquire);
                    reader.seen.store(tail, Ordering::Relaxed);
                }
                let used = distance(tail, head);
                if (tail | head) % 8 != 0 || used > self.capacity as u64 {
                    return Glance::Other;
                }
                if used == 0 {
                    return Glance::Empty;
                }
                if used < RECORD_HEADER as u64 {
                    return Glance::Other;
                }
                // 8-aligned and below the capacity (a multiple of 8): the
                // header lies in the region.
                let off = self.offset(head);
                // The record's next line, fetched beside the header's rather
                // than after it (a small message spans two lines, and both
                // are usually on the writer's CPU).
                self.region.prefetch(off + 64);
                let h = self.header_at(off);
                let len = (h & 0xffff_ffff) as usize;
                let rec = record_len(len);
                if h >> 32 != MSG || rec > self.capacity - off || rec as u64 > used {
                    return Glance::Other;
                }
                Glance::Whole(Peeked { frame: Frame::Whole, len, at: off + RECORD_HEADER, next: head.wrapping_add(rec as u64) })
            }

            /// The next record's frame and data length, without taking it
            /// (reader only); `None` if the ring is empty. (For the models
            /// and tests.)
            #[cfg(any(test, loom))]
            pub fn peek_frame(&self) -> Result<Option<(Frame, usize)>> {
                Ok(self.peek_record()?.map(|p| (p.frame, p.len)))
            }

            /// Takes the record `p` (the last one peeked), appending its data
            /// to `out`.
            pub fn take_peeked(&self, p: &Peeked, out: &mut Vec<u8>) {
                self.append(p.at, p.len, out);
                self.taken(p.next);
            }

            /// Takes the record `p`, copying its data to the start of `dst`;
            /// a record with more data than `dst` holds is not taken
            /// (`Corrupt`: the caller sized `dst` from the frames).
            pub fn take_peeked_to(&self, p: &Peeked, dst: &mut [u8]) -> Result<()> {
                let room = dst.len();
                let Some(dst) = dst.get_mut(..p.len) else {
                    return Err(self.corrupt(format!("a record of {} bytes where {room} were left for it", p.len)));
                };
                self.region.copy_out(p.at, dst);
                self.taken(p.next);
                Ok(())
            }

            /// Takes the record `p` without copying it out.
            pub fn skip_peeked(&self, p: &Peeked) {
                self.taken(p.next);
            }

            /// Takes the next record, appending its data to `out` (reader
            /// only); its frame, or `None` if the ring is empty. (For the
            /// models and tests: a pipe peeks, checks, then takes.)
            #[cfg(any(test, loom))]
            pub fn try_read_frame(&self, out: &mut Vec<u8>) -> Result<Option<Frame>> {
                let Some(p) = self.peek_record()? else { return Ok(None) };
                self.take_peeked(&p, out);
                Ok(Some(p.frame))
            }

            /// Takes the next record without copying it out (reader only):
            /// `false` if the ring is empty.
            #[cfg(any(test, loom))]
            pub fn skip(&self) -> Result<bool> {
                let Some(p) = self.peek_record()? else { return Ok(false) };
                self.skip_peeked(&p);
                Ok(true)
            }

            /// Takes the record `p` (just peeked), handing `f` its data in
            /// place first.
            pub fn take_peeked_with<T>(&self, p: &Peeked, f: impl FnOnce(InRing<Region$(<$lt>)?>) -> T) -> T {
                let out = f(InRing { region: self.region, at: p.at, len: p.len });
                self.taken(p.next);
                out
            }

            /// Moves the reader's position to `next`, past the message just
            /// copied out.
            #[inline]
            fn taken(&self, next: u64) {
                // Our own copy first: a reader killed between the two stores
                // has taken the message (lost, at most that one) and the
                // writer sees less room than there is until the next read.
                self.header.reader.0.own.store(next, Ordering::Relaxed);
                // Release: pairs with the writer's Acquire load of head.
                self.header.head.0.store(next, Ordering::Release);
            }

            /// The writer's position (the writer's own copy).
            pub(crate) fn tail(&self) -> u64 {
                self.header.writer.0.own.load(Ordering::Relaxed)
            }

            /// Whether the reader, which holds the ring's read turn, has a
            /// record to take (by its own position, as its reads go; garbage
            /// counts as something, for the read to report). For its
            /// sleeps: the published head may lag its own position after a
            /// reader died between the two stores.
            pub fn reader_has_record(&self) -> bool {
                !matches!(self.next_record(), Ok(None))
            }

            /// Whether a record of `payload` bytes fits now for the writer,
            /// which holds the ring's write turn (by its own position, as its
            /// writes go; garbage counts as room, for the write to report).
            pub fn writer_has_room(&self, payload: usize) -> bool {
                let tail = self.header.writer.0.own.load(Ordering::Relaxed);
                // Acquire: pairs with the reader's Release store of head.
                let head = self.header.head.0.load(Ordering::Acquire);
                self.used(tail, head).map_or(true, |used| used + self.need(tail, record_len(payload)) <= self.capacity)
            }

            /// The reader's own position (a reader that set a partial message
            /// aside checks that nobody read on meanwhile).
            pub fn reader_position(&self) -> u64 {
                self.header.reader.0.own.load(Ordering::Relaxed)
            }

            /// Whether the reader would find nothing (a snapshot of the
            /// published positions, for pollers that hold no turn).
            pub fn looks_empty(&self) -> bool {
                self.header.tail.0.load(Ordering::Acquire) == self.header.head.0.load(Ordering::Relaxed)
            }

            /// Whether a record of `payload` bytes would not fit now (a
            /// snapshot, for sleepers).
            pub fn looks_full(&self, payload: usize) -> bool {
                let tail = self.header.tail.0.load(Ordering::Relaxed);
                let head = self.header.head.0.load(Ordering::Acquire);
                let used = distance(tail, head) as usize;
                used.saturating_add(self.need(tail, record_len(payload))) > self.capacity
            }

            /// Bytes a record of `rec` bytes takes at `tail`, padding included.
            fn need(&self, tail: u64, rec: usize) -> usize {
                let to_end = self.capacity - self.offset(tail);
                if rec <= to_end { rec } else { to_end + rec }
            }
        }

        #[allow(clippy::len_without_is_empty, reason = "a view for `Received`, which has both")]
        impl$(<$lt>)? InRing<Region$(<$lt>)?> {
            /// The message's length.
            pub fn len(&self) -> usize {
                self.len
            }

            /// Copies the message's bytes `offset..offset + dst.len()` into
            /// `dst`; `false`, and nothing copied, unless they all lie in it.
            pub fn copy_to(&self, offset: usize, dst: &mut [u8]) -> bool {
                if offset.checked_add(dst.len()).is_none_or(|end| end > self.len) {
                    return false;
                }
                self.region.copy_out(self.at + offset, dst);
                true
            }
        }

        impl$(<$lt>)? InPlace<Region$(<$lt>)?> {
            /// Bytes of room left.
            pub fn room(&self) -> usize {
                self.end - self.at
            }

            /// Appends `data` to the payload if it fits the room left
            /// (`false`, and nothing written, if not).
            #[inline]
            pub fn push(&mut self, data: &[u8]) -> bool {
                if data.len() > self.end - self.at {
                    return false;
                }
                // In bounds: `end` is within the region (`copy_in` checks too).
                self.region.copy_in(self.at, data);
                self.at += data.len();
                true
            }
        }
    };
}

#[cfg(not(loom))]
bytes_impl!();
#[cfg(loom)]
bytes_impl!('a);

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Ring {
        header: BytesHeader,
        data: Vec<u64>,
    }

    impl Ring {
        fn new(capacity: usize) -> Self {
            Ring { header: BytesHeader::default(), data: vec![0; capacity / 8] }
        }
        fn view(&mut self) -> Bytes<'_, Region> {
            let capacity = self.data.len() * 8;
            // SAFETY: the Vec outlives the view and is 8-aligned.
            let region = unsafe { Region::new(self.data.as_mut_ptr().cast(), capacity) };
            Bytes { header: &self.header, region, capacity }
        }
    }

    #[test]
    fn frames_round_trip_and_queues_refuse_chunks() {
        let mut ring = Ring::new(128);
        let r = ring.view();
        // The largest chunk of a first record leaves room for the total.
        let max = max_payload(128);
        assert_eq!(
            r.try_write_frame(Frame::First(500), &[1; 57]).unwrap(),
            Err(Write::TooLarge(57, max - FIRST_PREFIX))
        );
        r.try_write_frame(Frame::First(500), &[1; 13]).unwrap().unwrap();
        r.try_write_frame(Frame::More, &[2; 3]).unwrap().unwrap();
        r.try_write_frame(Frame::Whole, &[3; 5]).unwrap().unwrap();
        assert_eq!(r.peek_frame().unwrap(), Some((Frame::First(500), 13)));
        // A queue's read finds a chunk where a message should be: corrupt.
        assert!(matches!(r.try_read(&mut Vec::new()), Err(Error::Corrupt { .. })));
        let mut out = vec![9];
        assert_eq!(r.try_read_frame(&mut out).unwrap(), Some(Frame::First(500)));
        assert_eq!(out, [&[9][..], &[1; 13]].concat(), "appended: the total is not data");
        assert_eq!(r.peek_frame().unwrap(), Some((Frame::More, 3)));
        assert!(r.skip().unwrap(), "skipped, not read");
        assert_eq!(r.peek_frame().unwrap(), Some((Frame::Whole, 5)));
        out.clear();
        assert_eq!(r.try_read_frame(&mut out).unwrap(), Some(Frame::Whole));
        assert_eq!(out, [3; 5]);
        assert_eq!(
            (r.peek_frame().unwrap(), r.try_read_frame(&mut out).unwrap(), r.skip().unwrap()),
            (None, None, false)
        );
    }

    #[test]
    fn a_first_record_shorter_than_its_total_is_corrupt() {
        let mut ring = Ring::new(64);
        // A FIRST header with a 4-byte payload: no room for the total.
        ring.data[0] = 4 | FIRST << 32;
        ring.header.tail.0.store(16, Ordering::Relaxed);
        let r = ring.view();
        assert!(matches!(r.peek_frame(), Err(Error::Corrupt { .. })));
        assert!(matches!(r.try_read_frame(&mut Vec::new()), Err(Error::Corrupt { .. })));
        assert!(matches!(r.skip(), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn records_wrap_with_padding_and_come_back_whole() {
        let mut ring = Ring::new(128);
        let r = ring.view();
        let mut out = Vec::new();
        for round in 0..50u8 {
            let msg: Vec<u8> = (0..(round as usize % 29)).map(|i| round.wrapping_add(i as u8)).collect();
            r.try_write(&msg).unwrap().unwrap();
            if round % 3 == 0 {
                let again = vec![round; 5];
                if r.try_write(&again).unwrap().is_ok() {
                    out.clear();
                    assert!(r.try_read(&mut out).unwrap());
                    assert_eq!(out, msg);
                    out.clear();
                    assert!(r.try_read(&mut out).unwrap());
                    assert_eq!(out, again);
                    continue;
                }
            }
            out.clear();
            assert!(r.try_read(&mut out).unwrap());
            assert_eq!(out, msg, "round {round}");
            assert!(!r.try_read(&mut out).unwrap());
        }
    }

    #[test]
    fn full_too_large_and_empty_messages() {
        let mut ring = Ring::new(32);
        let r = ring.view();
        assert_eq!(r.try_write(&[0; 9]).unwrap(), Err(Write::TooLarge(9, 8)));
        r.try_write(&[1; 8]).unwrap().unwrap();
        r.try_write(&[2; 8]).unwrap().unwrap();
        assert_eq!(r.try_write(&[]).unwrap(), Err(Write::Full));
        let mut out = Vec::new();
        assert!(r.try_read(&mut out).unwrap());
        r.try_write(&[]).unwrap().unwrap();
        out.clear();
        assert!(r.try_read(&mut out).unwrap());
        assert_eq!(out, [2; 8]);
        out.clear();
        assert!(r.try_read(&mut out).unwrap());
        assert!(out.is_empty());
        // The largest record fits an empty ring at every offset.
        for shift in 0..4 {
            for _ in 0..shift {
                r.try_write(&[]).unwrap().unwrap();
                assert!(r.try_read(&mut out).unwrap());
            }
            r.try_write(&[3; 8]).unwrap().unwrap();
            out.clear();
            assert!(r.try_read(&mut out).unwrap());
            assert_eq!(out, [3; 8]);
        }
    }

    #[test]
    fn the_lean_paths_take_only_the_plain_cases() {
        let mut ring = Ring::new(64);
        let r = ring.view();
        let mut out = Vec::new();
        let mut read_whole = |r: &Bytes<'_, Region>| {
            let Glance::Whole(p) = r.peek_whole() else { panic!("a whole message first") };
            out.clear();
            r.take_peeked(&p, &mut out);
            out.clone()
        };
        // Too large, or no room now: refused with nothing written.
        assert!(!r.try_write_whole_now(&[0; 25]));
        assert!(r.try_write_whole_now(&[1; 24]));
        assert!(r.try_write_whole_now(&[2; 16]));
        assert!(r.try_write_whole_now(&[]));
        assert!(!r.try_write_whole_now(&[]), "full");
        assert_eq!(r.tail(), 64);
        assert_eq!((read_whole(&r), read_whole(&r), read_whole(&r)), (vec![1; 24], vec![2; 16], vec![]));
        assert!(r.try_write_whole_now(&[3; 8]));
        assert!(r.try_write_whole_now(&[4; 24]));
        assert_eq!((read_whole(&r), read_whole(&r)), (vec![3; 8], vec![4; 24]));
        // 16 bytes before the end: a 24-byte record needs padding, which is
        // the full path's work (and the lean read leaves the padding to it).
        assert!(!r.try_write_whole_now(&[5; 16]));
        r.try_write(&[5; 16]).unwrap().unwrap();
        assert!(matches!(r.peek_whole(), Glance::Other), "padding first");
        out.clear();
        assert!(r.try_read(&mut out).unwrap());
        assert_eq!(out, [5; 16]);
        assert!(matches!(r.peek_whole(), Glance::Empty) && matches!(r.peek_record(), Ok(None)), "empty");
        // A chunk, and garbage: none for the lean read; the full one sorts
        // them out.
        r.try_write_frame(Frame::First(100), &[4; 8]).unwrap().unwrap();
        assert!(matches!(r.peek_whole(), Glance::Other));
        assert_eq!(r.peek_frame().unwrap(), Some((Frame::First(100), 8)));
        r.skip().unwrap();
        assert!(r.try_write_whole_now(b"ok"));
        set_positions(r.header, r.header.head.0.load(Ordering::Relaxed), 1000);
        r.header.reader.0.seen.store(1000, Ordering::Relaxed);
        assert!(matches!(r.peek_whole(), Glance::Other));
        assert!(matches!(r.peek_record(), Err(Error::Corrupt { .. })));
        assert!(!r.try_write_whole_now(b"x"), "the positions fail the checks");
    }

    #[test]
    fn garbage_is_corrupt_and_never_copies_outside() {
        let mut ring = Ring::new(32);
        {
            let r = ring.view();
            r.try_write(b"hello").unwrap().unwrap();
        }
        for (word, value) in
            [(0, u64::from(u32::MAX) | MSG << 32), (0, 7 | 0xdead << 32), (0, 3 | PAD << 32), (0, 8 | PAD << 32)]
        {
            let mut ring2 = Ring::new(32);
            ring2.view().try_write(b"hello").unwrap().unwrap();
            ring2.data[word] = value;
            let r = ring2.view();
            assert!(r.try_read(&mut Vec::new()).is_err(), "{value:#x}");
        }
        // Padding to the end with nothing after it: corrupt, not "not empty
        // yet nothing to read" (a sleeper would spin on that).
        let mut alone = Ring::new(32);
        alone.data[2] = 8 | PAD << 32;
        set_positions(&alone.header, 16, 32);
        let err = alone.view().try_read(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("no message"), "{err}");
        let r = ring.view();
        set_positions(r.header, 0, 1000);
        assert!(r.try_read(&mut Vec::new()).is_err());
        assert!(r.try_write(b"x").is_err());
        set_positions(r.header, 0, 12);
        assert!(r.try_read(&mut Vec::new()).is_err(), "unaligned");
        // Garbage in a side's own copies alone is caught the same way.
        set_positions(r.header, 0, 16);
        r.header.writer.0.seen.store(24, Ordering::Relaxed);
        assert!(r.try_write(b"x").is_err(), "the writer's copy of head past its tail");
        r.header.reader.0.seen.store(4, Ordering::Relaxed);
        assert!(r.try_read(&mut Vec::new()).is_err(), "the reader's copy of tail unaligned");
    }

    #[test]
    fn records_written_in_place_up_to_the_run_before_the_end() {
        let mut ring = Ring::new(128);
        let r = ring.view();
        let mut out = Vec::new();
        let write = |payload: &[u8]| r.try_write_in_place(|rec| Ok(rec.push(&payload[..3]) && rec.push(&payload[3..])));
        // 40 bytes at 0, then 48 at 48: both fit the run to the end.
        assert!(write(&[1; 40]).unwrap());
        assert!(write(&[2; 48]).unwrap());
        assert_eq!(r.header.tail.0.load(Ordering::Relaxed), 104);
        // 24 bytes left to the end: room for 16, so a 17-byte payload does
        // not go in place (nothing published), a 16-byte one does.
        assert!(!write(&[3; 17]).unwrap());
        assert_eq!(r.header.tail.0.load(Ordering::Relaxed), 104, "nothing published");
        assert!(r.try_read(&mut out).unwrap() && out == [1; 40]);
        assert!(write(&[4; 16]).unwrap()); // ends at the region's end
        assert!(write(&[5; 8]).unwrap()); // from its start
        // A fill that fails publishes nothing; its error comes back.
        let e = r.try_write_in_place(|rec| {
            rec.push(&[9; 8]);
            Err(Error::Closed)
        });
        assert!(matches!(e, Err(Error::Closed)));
        for want in [vec![2; 48], vec![4; 16], vec![5; 8]] {
            out.clear();
            assert!(r.try_read(&mut out).unwrap());
            assert_eq!(out, want);
        }
        assert!(!r.try_read(&mut out).unwrap());
        // Tail at 16, run to the end 112: a 57-byte payload is over the
        // largest message (56), never in place; then at 104 (24 to the end),
        // a 20-byte one needs 32: not in place, though try_write pads.
        assert!(!write(&[6; 57]).unwrap());
        assert!(write(&[6; 56]).unwrap() && write(&[6; 16]).unwrap());
        assert!(!write(&[7; 20]).unwrap());
        out.clear();
        assert!(r.try_read(&mut out).unwrap() && out == [6; 56]);
        assert!(!write(&[7; 20]).unwrap(), "room now, but not before the end");
        r.try_write(&[7; 20]).unwrap().unwrap();
        for want in [vec![6; 16], vec![7; 20]] {
            out.clear();
            assert!(r.try_read(&mut out).unwrap());
            assert_eq!(out, want);
        }
        // Larger than the largest message: never in place.
        assert!(!write(&[6; 57]).unwrap());
    }

    #[test]
    fn each_side_reads_the_other_position_only_when_its_copy_runs_out() {
        let mut ring = Ring::new(64);
        let r = ring.view();
        for i in 0..3u8 {
            r.try_write(&[i; 8]).unwrap().unwrap();
        }
        let mut out = Vec::new();
        assert!(r.try_read(&mut out).unwrap());
        // The reader saw the tail once: all three records.
        assert_eq!(r.header.reader.0.seen.load(Ordering::Relaxed), 48);
        // A tail moved behind its back is not looked at until those are read.
        r.header.tail.0.store(1 << 40, Ordering::Relaxed);
        assert!(r.try_read(&mut out).unwrap() && r.try_read(&mut out).unwrap());
        assert_eq!(out, [[0u8; 8], [1; 8], [2; 8]].concat());
        assert!(r.try_read(&mut out).is_err(), "then it is, and it is garbage");
        // The writer's copy of head trails the real one until it needs room.
        set_positions(r.header, 48, 48);
        r.header.writer.0.seen.store(0, Ordering::Relaxed);
        r.try_write(&[3; 8]).unwrap().unwrap();
        assert_eq!(r.header.writer.0.seen.load(Ordering::Relaxed), 0, "16 more bytes fit by the old copy");
        // 16 payload bytes at offset 0 need 24; by the old copy 64 are used.
        r.try_write(&[4; 16]).unwrap().unwrap();
        assert_eq!(r.header.writer.0.seen.load(Ordering::Relaxed), 48, "refreshed");
    }

    /// Sets both published positions and each side's copies, as a ring at
    /// rest with those positions would have them.
    fn set_positions(h: &BytesHeader, head: u64, tail: u64) {
        for (at, v) in [(&h.head.0, head), (&h.reader.0.own, head), (&h.writer.0.seen, head)] {
            at.store(v, Ordering::Relaxed);
        }
        for (at, v) in [(&h.tail.0, tail), (&h.writer.0.own, tail), (&h.reader.0.seen, tail)] {
            at.store(v, Ordering::Relaxed);
        }
    }
}
