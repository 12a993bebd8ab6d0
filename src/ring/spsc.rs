//! The single-producer single-consumer ring of fixed-size elements.
//!
//! `tail` (the producer's position) and `head` (the consumer's) are 64-bit
//! counters on cache lines of their own; element `p` lives in slot
//! `p & (slots - 1)`. Each side also keeps, in its own process, a cached copy
//! of the other side's position, refreshed only when the cached one says the
//! ring is full (producer) or empty (consumer): in the common case a push or
//! pop touches no cache line the other side writes.
//!
//! Each side reads its own position from a private copy (`own_tail`,
//! `own_head`) on a line the other side never touches, and publishes by
//! storing both. The published line is read by the peer all the time, so it
//! is usually in the peer's cache: reading our own position from it would
//! miss on every operation across CPUs. The copy is in the segment, not in
//! the process, because the single producer (or consumer) may be a different
//! handle, in a different process, from one operation to the next.
//!
//! # Notes about memory ordering
//! - The producer writes the slot, then stores `tail` with `Release`; the
//!   consumer loads `tail` with `Acquire` (pairs with it) before reading the
//!   slot: it sees the element whole.
//! - The consumer reads the slot, then stores `head` with `Release`; the
//!   producer loads `head` with `Acquire` (pairs with it) before overwriting
//!   the slot: the consumer's read happened first.
//! - Each side reads its own position `Relaxed` from its private copy: only
//!   it writes it. Between operations the copy equals the published position
//!   (a side killed between the two stores leaves the copy one ahead, which
//!   the next handle on that side reads: the element was written, the peer
//!   simply never sees it published).
//!
//! # Trust
//! `tail − head` read from shared memory must lie in `0..=slots`; anything else
//! is [`Error::Corrupt`]. Slot indices are masked, so never out of bounds, and
//! elements are `Pod` (any bytes are some value). A second producer or consumer
//! (a contract violation) can lose or repeat elements, nothing worse.

use std::mem::MaybeUninit;

use bytemuck::Pod;

use super::{Padded, Push, distance};
use crate::error::{Error, Result};
use crate::loom::cell::UnsafeCell;
use crate::loom::{AtomicU64, Ordering, local};

/// The shared positions.
#[repr(C)]
#[derive(Debug, Default)]
pub struct SpscHeader {
    /// Producer position: elements `head..tail` are in the ring.
    tail: Padded<AtomicU64>,
    /// Consumer position.
    head: Padded<AtomicU64>,
    /// The producer's own copy of `tail`, on a line the consumer never reads.
    own_tail: Padded<AtomicU64>,
    /// The consumer's own copy of `head`.
    own_head: Padded<AtomicU64>,
}

impl SpscHeader {
    #[cfg(loom)]
    pub fn new() -> Self {
        let zero = || Padded(AtomicU64::new(0));
        SpscHeader { tail: zero(), head: zero(), own_tail: zero(), own_head: zero() }
    }
}

/// One slot: an element, written by the producer and read by the consumer at
/// times the positions keep apart.
#[repr(transparent)]
#[derive(Debug)]
pub struct Slot<T>(UnsafeCell<MaybeUninit<T>>);

impl<T> Slot<T> {
    #[cfg(loom)]
    #[allow(clippy::new_without_default, reason = "for the loom models; real slots are segment memory")]
    pub fn new() -> Self {
        Slot(UnsafeCell::new(MaybeUninit::uninit()))
    }
}

/// What each handle keeps to itself: the other side's position as last seen.
#[derive(Debug, Default)]
pub struct Cache {
    /// The consumer position as the producer last read it (never ahead of the
    /// real one, which only grows).
    head: local::AtomicU64,
    /// The producer position as the consumer last read it.
    tail: local::AtomicU64,
}

impl Clone for Cache {
    fn clone(&self) -> Self {
        Cache::default()
    }
}

/// A view of a ring: its header and slots (a power-of-two count).
#[derive(Debug)]
pub struct Spsc<'a, T> {
    pub header: &'a SpscHeader,
    pub slots: &'a [Slot<T>],
}

impl<T: Pod> Spsc<'_, T> {
    #[inline]
    fn mask(&self) -> u64 {
        self.slots.len() as u64 - 1
    }

    #[inline]
    fn slot(&self, pos: u64) -> &Slot<T> {
        // Masked: always in bounds (slots.len() is a power of two).
        &self.slots[(pos & self.mask()) as usize]
    }

    fn corrupt(tail: u64, head: u64, slots: usize) -> Error {
        Error::corrupt("SPSC ring", format!("tail {tail} − head {head} is not within 0..={slots}"))
    }

    /// Appends `v` if there is room (producer only).
    #[inline]
    pub fn try_push(&self, cache: &Cache, v: T) -> Result<(), Push<T>> {
        let tail = self.header.own_tail.0.load(Ordering::Relaxed);
        let cap = self.slots.len() as u64;
        let mut head = cache.head.load(local::Ordering::Relaxed);
        if distance(tail, head) >= cap {
            // Acquire: pairs with the consumer's Release store of head.
            head = self.header.head.0.load(Ordering::Acquire);
            cache.head.store(head, local::Ordering::Relaxed);
            match distance(tail, head) {
                d if d == cap => return Err(Push::Full(v)),
                d if d > cap => return Err(Push::Failed(v, Self::corrupt(tail, head, self.slots.len()))),
                _ => {}
            }
        }
        // SAFETY: the slot at `tail` is outside head..tail, so the consumer is
        // done with it (head's Acquire above, or an earlier one, ordered its
        // read before us) and will not read it before our Release below.
        self.slot(tail).0.with_mut(|p| unsafe { p.write(MaybeUninit::new(v)) });
        self.header.own_tail.0.store(tail.wrapping_add(1), Ordering::Relaxed);
        // Release: pairs with the consumer's Acquire load of tail.
        self.header.tail.0.store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Takes the oldest element, `Ok(None)` if empty (consumer only).
    #[inline]
    pub fn try_pop(&self, cache: &Cache) -> Result<Option<T>> {
        let head = self.header.own_head.0.load(Ordering::Relaxed);
        let mut tail = cache.tail.load(local::Ordering::Relaxed);
        if tail == head || distance(tail, head) > self.slots.len() as u64 {
            // Acquire: pairs with the producer's Release store of tail.
            tail = self.header.tail.0.load(Ordering::Acquire);
            cache.tail.store(tail, local::Ordering::Relaxed);
            if tail == head {
                return Ok(None);
            }
            if distance(tail, head) > self.slots.len() as u64 {
                return Err(Self::corrupt(tail, head, self.slots.len()));
            }
        }
        // SAFETY: head..tail holds published elements (tail's Acquire ordered
        // the producer's write before us) and the producer will not overwrite
        // this slot before our Release of head below; T is Pod, so whatever
        // bytes a misbehaving peer left are some T.
        let v = self.slot(head).0.with(|p| unsafe { p.read().assume_init() });
        self.header.own_head.0.store(head.wrapping_add(1), Ordering::Relaxed);
        // Release: pairs with the producer's Acquire load of head.
        self.header.head.0.store(head.wrapping_add(1), Ordering::Release);
        Ok(Some(v))
    }

    /// Whether the consumer would find nothing (a snapshot, for sleepers).
    pub fn looks_empty(&self) -> bool {
        self.header.tail.0.load(Ordering::Acquire) == self.header.head.0.load(Ordering::Relaxed)
    }

    /// Whether the producer would find no room (a snapshot, for sleepers).
    pub fn looks_full(&self) -> bool {
        let head = self.header.head.0.load(Ordering::Acquire);
        distance(self.header.tail.0.load(Ordering::Relaxed), head) == self.slots.len() as u64
    }

    /// Elements in the ring (a snapshot).
    pub(crate) fn len(&self) -> Result<usize> {
        let head = self.header.head.0.load(Ordering::Acquire);
        let tail = self.header.tail.0.load(Ordering::Acquire);
        match distance(tail, head) {
            d if d <= self.slots.len() as u64 => Ok(d as usize),
            _ => Err(Self::corrupt(tail, head, self.slots.len())),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn ring<T>(n: usize) -> (SpscHeader, Vec<Slot<T>>) {
        (SpscHeader::default(), (0..n).map(|_| Slot(UnsafeCell::new(MaybeUninit::uninit()))).collect())
    }

    #[test]
    fn fifo_full_empty_and_wrap() {
        let (h, slots) = ring::<u64>(4);
        let r = Spsc { header: &h, slots: &slots };
        let (pc, cc) = (Cache::default(), Cache::default());
        for round in 0..5u64 {
            for i in 0..4 {
                r.try_push(&pc, round * 10 + i).unwrap();
            }
            assert!(matches!(r.try_push(&pc, 99), Err(Push::Full(99))));
            assert_eq!(r.len().unwrap(), 4);
            for i in 0..4 {
                assert_eq!(r.try_pop(&cc).unwrap(), Some(round * 10 + i));
            }
            assert_eq!(r.try_pop(&cc).unwrap(), None);
        }
    }

    #[test]
    fn garbage_positions_are_corrupt_not_out_of_bounds() {
        let (h, slots) = ring::<u32>(4);
        let r = Spsc { header: &h, slots: &slots };
        h.tail.0.store(1000, Ordering::Relaxed);
        assert!(r.try_pop(&Cache::default()).is_err());
        assert!(r.len().is_err());
        // The producer reads its own copy: garbage there is caught too.
        h.own_tail.0.store(1000, Ordering::Relaxed);
        assert!(matches!(r.try_push(&Cache::default(), 1), Err(Push::Failed(1, _))));
        // tail behind head: also impossible.
        h.tail.0.store(5, Ordering::Relaxed);
        h.head.0.store(7, Ordering::Relaxed);
        assert!(r.try_pop(&Cache::default()).is_err());
    }
}
