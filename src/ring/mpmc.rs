//! The multi-producer multi-consumer ring of fixed-size elements, with stamped
//! slots that name who is writing or reading them.
//!
//! # Slot state (one `u64`)
//!
//! ```text
//!  63..24        23..22   21..0
//! [lap: 40 bits] [kind]  [tid]
//! ```
//! Position `p` lives in slot `p & (slots - 1)` and belongs to lap
//! `p / slots` (mod 2^40). A slot cycles through
//! `EMPTY(l) → WRITING(l, producer) → FULL(l) → READING(l, consumer) → EMPTY(l + 1)`.
//! A zeroed slot is `EMPTY(0)`, so a fresh segment is an empty ring.
//!
//! Producers claim position `p` by a CAS of its slot from `EMPTY(lap(p))` to
//! `WRITING(lap(p), me)`, then advance the `enqueue` hint, write the element
//! and publish `FULL`. Consumers claim `FULL(lap(q))` as `READING(lap(q), me)`,
//! advance `dequeue`, read, and release the slot as `EMPTY(lap(q) + 1)`. The
//! hints are only advanced past positions whose slot shows them claimed, by
//! anyone who sees that (helping), so they never skip a position.
//!
//! # Dying peers
//!
//! A claim records the claimant's tid in the state and its full stamp (tid and
//! start time) in `owner`, written right after the claim. A producer killed
//! between claim and publish leaves `WRITING` at the head of the queue; a
//! consumer that finds it there and is allowed to probe (`probe`: the blocking
//! calls after a sleep slice, the `try_` calls always) checks the claimant
//! and, if it is dead, skips the position: the slot becomes `EMPTY(l + 1)`.
//! No other element is lost or duplicated. A consumer killed while reading
//! leaves `READING`, which producers of the next lap find when the ring is
//! full: a dead reader's slot is released the same way, and the element it was
//! taking is lost (at most that one).
//!
//! # Notes about memory ordering
//! - Claim CAS (`Acquire`) pairs with the `Release` store that made the slot
//!   claimable (`EMPTY` by the last reader, `FULL` by the writer): the
//!   previous side's access to the element happened before ours.
//! - Publishing `FULL` / `EMPTY(l + 1)` is a `Release` store.
//! - Hint loads are `Acquire` and successful hint CASes `Release`: a thread
//!   that reads hint `p` also sees the slot states that let others advance it
//!   to `p`, so it never finds its slot a lap behind (found by the loom model
//!   `mpmc_preempted_pop_is_not_corrupt`). A slot more than a lap away from
//!   `p` is corruption only if the hint still says `p` (a thread preempted
//!   between its two reads finds the slot laps ahead, and the hint moved).
//!
//! # Trust
//! A state whose lap is more than one lap from the position's, an `EMPTY` one
//! lap behind, or hints more than a lap apart are [`Error::Corrupt`]; indices
//! are masked; elements are `Pod`. No loop runs without bound: every retry
//! follows a hint or state that moved.

use std::mem::MaybeUninit;

use bytemuck::Pod;

use super::{Padded, Push, distance};
use crate::error::{Error, Result};
use crate::loom::cell::UnsafeCell;
use crate::loom::{AtomicU64, Ordering};
use crate::os::{TID_MASK, TaskId};
use crate::sync::owner::holder_alive;

const KIND_SHIFT: u32 = 22;
const LAP_SHIFT: u32 = 24;
const LAP_MASK: u64 = (1 << 40) - 1;

const EMPTY: u64 = 0;
const WRITING: u64 = 1;
const FULL: u64 = 2;
const READING: u64 = 3;

/// Retries after which a claim attempt gives up as [`Error::Corrupt`]: each
/// retry follows a hint or state that another thread moved, so a healthy ring
/// never gets near this (it would take that many other operations completing
/// while one thread makes no progress), while a peer that keeps scribbling
/// cannot hold us in the loop forever.
const MAX_RETRIES: u32 = 1 << 20;

fn state(lap: u64, kind: u64, tid: u32) -> u64 {
    (lap & LAP_MASK) << LAP_SHIFT | kind << KIND_SHIFT | u64::from(tid & TID_MASK)
}

/// (lap, kind, tid) of a state.
fn decode(s: u64) -> (u64, u64, u32) {
    (s >> LAP_SHIFT, (s >> KIND_SHIFT) & 3, (s as u32) & TID_MASK)
}

/// `a − b` in the 40-bit lap space, as a signed number.
fn lap_diff(a: u64, b: u64) -> i64 {
    let d = a.wrapping_sub(b) & LAP_MASK;
    if d >= 1 << 39 { d as i64 - (1 << 40) } else { d as i64 }
}

/// The shared hints.
#[repr(C)]
#[derive(Debug, Default)]
pub struct MpmcHeader {
    /// The next position producers try (a hint, never past an unclaimed one).
    enqueue: Padded<AtomicU64>,
    /// The next position consumers try.
    dequeue: Padded<AtomicU64>,
}

impl MpmcHeader {
    #[cfg(loom)]
    pub fn new() -> Self {
        MpmcHeader { enqueue: Padded(AtomicU64::new(0)), dequeue: Padded(AtomicU64::new(0)) }
    }
}

/// One slot: see the module docs.
#[repr(C)]
#[derive(Debug)]
pub struct Slot<T> {
    state: AtomicU64,
    /// The claimant's `TaskId::stamp`, written right after its claim.
    owner: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

impl<T> Slot<T> {
    #[cfg(any(loom, test))]
    #[allow(clippy::new_without_default, reason = "for the loom models; real slots are segment memory")]
    pub fn new() -> Self {
        Slot { state: AtomicU64::new(0), owner: AtomicU64::new(0), value: UnsafeCell::new(MaybeUninit::uninit()) }
    }
}

/// A view of a ring: its header and slots (a power-of-two count).
#[derive(Debug)]
pub struct Mpmc<'a, T> {
    pub header: &'a MpmcHeader,
    pub slots: &'a [Slot<T>],
}

impl<T: Pod> Mpmc<'_, T> {
    #[inline]
    fn slot(&self, pos: u64) -> &Slot<T> {
        &self.slots[(pos & (self.slots.len() as u64 - 1)) as usize]
    }

    #[inline]
    fn lap(&self, pos: u64) -> u64 {
        (pos >> self.slots.len().trailing_zeros()) & LAP_MASK
    }

    fn corrupt(&self, what: &str, pos: u64, st: u64) -> Error {
        let (lap, kind, tid) = decode(st);
        Error::corrupt(
            "MPMC ring",
            format!(
                "{what}: position {pos} (lap {}) finds slot state lap {lap}, kind {kind}, tid {tid}",
                self.lap(pos)
            ),
        )
    }

    /// Appends `v` if there is room. `probe`: a slot held by a dead reader may
    /// be checked and released (a `/proc` read, only when the ring is full).
    pub(crate) fn try_push(&self, me: TaskId, v: T, probe: bool) -> Result<(), Push<T>> {
        let hint = &self.header.enqueue.0;
        for _ in 0..MAX_RETRIES {
            let p = hint.load(Ordering::Acquire);
            let slot = self.slot(p);
            let lap = self.lap(p);
            let st = slot.state.load(Ordering::Acquire);
            let (l, kind, tid) = decode(st);
            match (lap_diff(l, lap), kind) {
                (0, EMPTY) => {
                    // Acquire: pairs with the last reader's Release of EMPTY.
                    let claim = state(lap, WRITING, me.tid);
                    if slot.state.compare_exchange(st, claim, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                        slot.owner.store(me.stamp(), Ordering::Relaxed);
                        let _ = hint.compare_exchange(p, p.wrapping_add(1), Ordering::Release, Ordering::Relaxed);
                        // SAFETY: our claim excludes every other writer and
                        // reader until we publish FULL below.
                        slot.value.with_mut(|ptr| unsafe { ptr.write(MaybeUninit::new(v)) });
                        // Release: pairs with a consumer's claim (Acquire).
                        slot.state.store(state(lap, FULL, 0), Ordering::Release);
                        return Ok(());
                    }
                }
                // Position p is taken (or done): help the hint past it.
                (0 | 1, _) => {
                    let _ = hint.compare_exchange(p, p.wrapping_add(1), Ordering::Release, Ordering::Relaxed);
                }
                // The slot still holds the previous lap: full, unless the hint
                // moved meanwhile, or the holder is a dead reader.
                (-1, FULL | WRITING) => {
                    if hint.load(Ordering::Acquire) == p {
                        return Err(Push::Full(v));
                    }
                }
                (-1, READING) => {
                    if hint.load(Ordering::Acquire) != p {
                        continue;
                    }
                    if probe && !holder_alive(tid, slot.owner.load(Ordering::Relaxed)) {
                        // The reader of position p − slots died: release its
                        // slot (losing what it was taking) and move the
                        // consumers' hint past it if it still points there.
                        let freed = state(lap, EMPTY, 0);
                        if slot.state.compare_exchange(st, freed, Ordering::Release, Ordering::Relaxed).is_ok() {
                            let q = p.wrapping_sub(self.slots.len() as u64);
                            let _ = self.header.dequeue.0.compare_exchange(
                                q,
                                q.wrapping_add(1),
                                Ordering::Release,
                                Ordering::Relaxed,
                            );
                        }
                        continue;
                    }
                    return Err(Push::Full(v));
                }
                // More than a lap from p: stale unless the hint still says p.
                _ if hint.load(Ordering::Acquire) != p => {}
                _ => return Err(Push::Corrupt(v, self.corrupt("put", p, st))),
            }
        }
        Err(Push::Corrupt(v, Error::corrupt("MPMC ring", "a put made no progress (the slots keep changing under it)")))
    }

    /// Takes the oldest element, `Ok(None)` if there is none ready. `probe`:
    /// a position held by a dead writer may be checked and skipped.
    pub(crate) fn try_pop(&self, me: TaskId, probe: bool) -> Result<Option<T>> {
        let hint = &self.header.dequeue.0;
        for _ in 0..MAX_RETRIES {
            let q = hint.load(Ordering::Acquire);
            let slot = self.slot(q);
            let lap = self.lap(q);
            let st = slot.state.load(Ordering::Acquire);
            let (l, kind, tid) = decode(st);
            match (lap_diff(l, lap), kind) {
                (0, FULL) => {
                    // Acquire: pairs with the writer's Release of FULL.
                    let claim = state(lap, READING, me.tid);
                    if slot.state.compare_exchange(st, claim, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                        slot.owner.store(me.stamp(), Ordering::Relaxed);
                        let _ = hint.compare_exchange(q, q.wrapping_add(1), Ordering::Release, Ordering::Relaxed);
                        // SAFETY: our claim excludes every writer and other
                        // reader until we release the slot below; T is Pod.
                        let v = slot.value.with(|ptr| unsafe { ptr.read().assume_init() });
                        // Release: pairs with the next lap's writer's claim.
                        slot.state.store(state(lap.wrapping_add(1), EMPTY, 0), Ordering::Release);
                        return Ok(Some(v));
                    }
                }
                (0, WRITING) => {
                    if probe && !holder_alive(tid, slot.owner.load(Ordering::Relaxed)) {
                        // Its writer died mid-put: skip the position.
                        let skipped = state(lap.wrapping_add(1), EMPTY, 0);
                        if slot.state.compare_exchange(st, skipped, Ordering::Release, Ordering::Relaxed).is_ok() {
                            let _ = hint.compare_exchange(q, q.wrapping_add(1), Ordering::Release, Ordering::Relaxed);
                        }
                        continue;
                    }
                    if hint.load(Ordering::Acquire) == q {
                        return Ok(None); // being written: not ready yet
                    }
                }
                // Not produced yet (the slot is free for this lap, or still
                // being read from the previous one): empty if the hint agrees.
                (0, EMPTY) | (-1, READING) => {
                    if hint.load(Ordering::Acquire) == q {
                        return Ok(None);
                    }
                }
                // Position q is taken (or done): help the hint past it.
                (0, READING) | (1, _) => {
                    let _ = hint.compare_exchange(q, q.wrapping_add(1), Ordering::Release, Ordering::Relaxed);
                }
                _ if hint.load(Ordering::Acquire) != q => {}
                _ => return Err(self.corrupt("get", q, st)),
            }
        }
        Err(Error::corrupt("MPMC ring", "a get made no progress (the slots keep changing under it)"))
    }

    /// Whether a consumer would find nothing ready (a snapshot, for sleepers:
    /// anything unexpected counts as "look again").
    pub fn looks_empty(&self) -> bool {
        let q = self.header.dequeue.0.load(Ordering::Acquire);
        let (l, kind, _) = decode(self.slot(q).state.load(Ordering::Acquire));
        matches!((lap_diff(l, self.lap(q)), kind), (0, EMPTY | WRITING) | (-1, READING))
    }

    /// Whether the oldest position is claimed by a producer that has not
    /// published yet (a snapshot): a closed queue is not drained until that
    /// put finishes or its producer is found dead.
    pub(crate) fn head_in_flight(&self) -> bool {
        let q = self.header.dequeue.0.load(Ordering::Acquire);
        let (l, kind, _) = decode(self.slot(q).state.load(Ordering::Acquire));
        lap_diff(l, self.lap(q)) == 0 && kind == WRITING
    }

    /// Whether a producer would find no room (a snapshot, for sleepers).
    pub fn looks_full(&self) -> bool {
        let p = self.header.enqueue.0.load(Ordering::Acquire);
        let (l, _, _) = decode(self.slot(p).state.load(Ordering::Acquire));
        lap_diff(l, self.lap(p)) == -1
    }

    /// Elements in the ring, approximately (the hints may lag claims by a
    /// few); clamped to `0..=slots`.
    pub(crate) fn len(&self) -> usize {
        let dequeue = self.header.dequeue.0.load(Ordering::Relaxed);
        let enqueue = self.header.enqueue.0.load(Ordering::Relaxed);
        match distance(enqueue, dequeue) {
            d if d <= self.slots.len() as u64 => d as usize,
            d if d > u64::MAX / 2 => 0, // dequeue a little ahead of a lagging enqueue hint
            _ => self.slots.len(),
        }
    }
}

/// The claiming operations as the calling thread, for the loom models (which
/// cannot name `TaskId`).
#[cfg(loom)]
impl<T: Pod> Mpmc<'_, T> {
    /// [`try_push`](Self::try_push) by the calling thread.
    pub fn try_push_here(&self, v: T, probe: bool) -> Result<(), Push<T>> {
        self.try_push(crate::loom::current_task(), v, probe)
    }

    /// [`try_pop`](Self::try_pop) by the calling thread.
    pub fn try_pop_here(&self, probe: bool) -> Result<Option<T>> {
        self.try_pop(crate::loom::current_task(), probe)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn ring<T>(n: usize) -> (MpmcHeader, Vec<Slot<T>>) {
        (MpmcHeader::default(), (0..n).map(|_| Slot::new()).collect())
    }

    fn me() -> TaskId {
        crate::os::current_task()
    }

    #[test]
    fn fifo_full_empty_and_wrap() {
        let (h, slots) = ring::<u64>(4);
        let r = Mpmc { header: &h, slots: &slots };
        for round in 0..5u64 {
            for i in 0..4 {
                r.try_push(me(), round * 10 + i, false).unwrap();
            }
            assert!(matches!(r.try_push(me(), 99, true), Err(Push::Full(99))));
            assert_eq!(r.len(), 4);
            for i in 0..4 {
                assert_eq!(r.try_pop(me(), false).unwrap(), Some(round * 10 + i));
            }
            assert_eq!(r.try_pop(me(), true).unwrap(), None);
        }
    }

    #[test]
    fn lap_arithmetic_wraps() {
        assert_eq!(lap_diff(0, LAP_MASK), 1);
        assert_eq!(lap_diff(LAP_MASK, 0), -1);
        assert_eq!(decode(state(LAP_MASK + 3, FULL, 77)), (2, FULL, 77));
    }

    #[test]
    fn a_dead_writers_slot_is_skipped_and_a_dead_readers_released() {
        let (h, slots) = ring::<u32>(2);
        let r = Mpmc { header: &h, slots: &slots };
        // A writer that can never be alive (tid above pid_max) claimed position 0.
        let ghost = TaskId { tid: TID_MASK, start: 1 };
        slots[0].state.store(state(0, WRITING, ghost.tid), Ordering::Relaxed);
        h.enqueue.0.store(1, Ordering::Relaxed);
        r.try_push(me(), 7, false).unwrap(); // position 1
        assert_eq!(r.try_pop(me(), false).unwrap(), None, "without probing, a claimed slot just waits");
        assert_eq!(r.try_pop(me(), true).unwrap(), Some(7), "position 0 skipped");
        // A ghost reader holding position 2's slot (lap 1, slot 0) while full.
        r.try_push(me(), 8, false).unwrap(); // position 2 → slot 0, lap 1
        r.try_push(me(), 9, false).unwrap(); // position 3 → slot 1, lap 1
        slots[0].state.store(state(1, READING, ghost.tid), Ordering::Relaxed);
        h.dequeue.0.store(3, Ordering::Relaxed);
        assert!(matches!(r.try_push(me(), 10, false), Err(Push::Full(10))));
        r.try_push(me(), 10, true).unwrap(); // released, position 4
        assert_eq!(r.try_pop(me(), true).unwrap(), Some(9));
        assert_eq!(r.try_pop(me(), true).unwrap(), Some(10));
        assert_eq!(r.try_pop(me(), true).unwrap(), None);
    }

    #[test]
    fn garbage_states_are_corrupt() {
        let (h, slots) = ring::<u32>(4);
        let r = Mpmc { header: &h, slots: &slots };
        slots[0].state.store(state(9, FULL, 0), Ordering::Relaxed);
        assert!(r.try_pop(me(), true).is_err());
        assert!(matches!(r.try_push(me(), 1, true), Err(Push::Corrupt(1, _))));
        let (h, slots) = ring::<u32>(4);
        let r = Mpmc { header: &h, slots: &slots };
        h.enqueue.0.store(1000, Ordering::Relaxed); // 250 laps ahead of every slot
        assert!(r.try_push(me(), 1, true).is_err());
        h.dequeue.0.store(1000, Ordering::Relaxed);
        assert!(r.try_pop(me(), true).is_err());
    }
}
