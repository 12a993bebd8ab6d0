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
//! `WRITING(lap(p), me)`, then store the `enqueue` hint, write the element
//! and publish `FULL`. Consumers claim `FULL(lap(q))` as `READING(lap(q), me)`,
//! store the `dequeue` hint, read, and release the slot as `EMPTY(lap(q) + 1)`.
//! The slot CAS is the only locked instruction of an operation: crossbeam's
//! `ArrayQueue` also does one per side, on its position instead.
//!
//! # Hints
//!
//! A hint is where the side's next claim probably is: every position below it
//! is claimed. Only a claimant writes it, with a plain store of its position
//! plus one, made while it holds its slot. Nobody else writes it: a thread
//! that finds the hint's position taken (claimed for its lap, or done: a slot
//! a lap ahead) reads the hint again and looks at whichever is further, the
//! hint or the next position, without writing. So
//! - a hint never skips a free position: the claimant of `p` read a hint at
//!   or below `p` and passed only taken positions;
//! - it may go back: a claimant slow to store `p + 1` overwrites the larger
//!   values of claimants that went past it meanwhile. Then `p + 1` is still
//!   valid, and less than a lap behind the furthest claim: until that claimant
//!   publishes (or releases) its slot, position `p + slots` cannot be claimed,
//!   nor (claims pass positions in order) any after it;
//! - it may lag: a claimant killed before its store leaves the hint on its
//!   position until the next claim on that side stores past it.
//!
//! The snapshots for sleepers and sizes (`looks_empty`, `looks_full`,
//! `head_in_flight`, `len`) start at the hint and go past taken positions the
//! same way.
//!
//! # Dying peers
//!
//! A claim records the claimant's tid in the state and its full stamp (tid and
//! start time) in `owner`, written right after the claim. A producer killed
//! between claim and publish leaves `WRITING` at the head of the queue; a
//! consumer that finds it there and is allowed to probe ([`Probe`]: the
//! blocking calls after a sleep slice, the `try_` calls at most once per
//! [`PROBE_GAP`] per handle) checks the claimant
//! and, if it is dead, skips the position: the slot becomes `EMPTY(l + 1)`,
//! which consumers go past. No other element is lost or duplicated. A consumer
//! killed while reading leaves `READING`, which producers of the next lap find
//! when the ring is full: a dead reader's slot is released the same way (to
//! `EMPTY` of the producer's lap), and the element it was taking is lost (at
//! most that one). Neither writes a hint: the dead claimant's position is
//! passed over as taken.
//!
//! # Notes about memory ordering
//! - Claim CAS (`Acquire`) pairs with the `Release` store that made the slot
//!   claimable (`EMPTY` by the last reader, `FULL` by the writer): the
//!   previous side's access to the element happened before ours. Claims are
//!   read-modify-writes, so a thread that reads a claim (or any later state of
//!   the slot) with `Acquire` synchronises with the release before it.
//! - Publishing `FULL` / `EMPTY(l + 1)`, and the skip and release of a dead
//!   claimant's slot, are `Release`.
//! - Hint loads are `Acquire` and the claimant's hint store `Release`: the
//!   claimant stored after reading the hint and the slots it passed, so a
//!   thread that reads hint `p` sees every position below `p` claimed (found
//!   by the loom model `mpmc_preempted_pop_is_not_corrupt`: without this, a
//!   thread saw a slot state older than the hint, two laps behind).
//! - A slot found more than a lap ahead while the hint still holds the value
//!   read before is corruption, not a stale read: the claim of the position a
//!   lap after it stored a hint past it, which happened before that slot
//!   state and so before our second read, and a set-back value comes from a
//!   claimant that held a position less than a lap before it (see "Hints")
//!   and stored before that claim. A thread preempted between its reads finds
//!   the hint moved and starts again from there.
//!
//! # Trust
//! A state whose lap is more than one lap from the position's, or one lap
//! behind in a kind no healthy ring shows there, with the hint unchanged, is
//! [`Error::Corrupt`]; indices are masked; elements are `Pod`. No loop runs
//! without bound: every retry follows a hint, a position or a state that
//! moved, and at most [`MAX_RETRIES`] of them; the snapshots look at most two
//! laps of slots.

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
/// retry follows a hint, position or state that moved (a step past a taken
/// position, or a claim that another thread's change made fail), so a healthy
/// ring never gets near this (it would take that many other operations
/// completing while one thread makes no progress), while a peer that keeps
/// scribbling cannot hold us in the loop forever.
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

/// Whether a stuck claim's holder may be checked for liveness now (a
/// `/proc` read of a few microseconds).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(loom), allow(unreachable_pub, reason = "pub for the loom models; the module is private outside loom"))]
pub enum Probe {
    /// Not now.
    No,
    /// Yes: a waiter after a sleep slice (already at most once a slice).
    Yes,
    /// At most once per [`PROBE_GAP`] for the handle whose [`ProbeGate`]
    /// goes with it: the non-blocking calls, which would otherwise read
    /// `/proc` every time they find a put or a get in flight (a busy queue's
    /// consumers, polling, did so about a thousand times per two million
    /// messages).
    Gated,
}

impl From<bool> for Probe {
    fn from(yes: bool) -> Self {
        if yes { Probe::Yes } else { Probe::No }
    }
}

impl Probe {
    fn allows(self, gate: &ProbeGate) -> bool {
        match self {
            Probe::No => false,
            Probe::Yes => true,
            Probe::Gated => gate.allows(),
        }
    }
}

/// The shortest time between two gated probes of one handle.
pub(crate) const PROBE_GAP: std::time::Duration = std::time::Duration::from_millis(1);

/// A handle's record of its last gated probe (process-local).
#[derive(Debug, Default)]
#[cfg_attr(not(loom), allow(unreachable_pub, reason = "pub for the loom models; the module is private outside loom"))]
pub struct ProbeGate {
    /// When the next gated probe may run, in nanoseconds of the monotonic
    /// clock (0: at once).
    next: crate::loom::local::AtomicU64,
}

impl ProbeGate {
    fn allows(&self) -> bool {
        use crate::loom::local::Ordering::Relaxed;
        let now = crate::os::Deadline::now().nanos();
        if now < self.next.load(Relaxed) {
            return false;
        }
        self.next.store(now.saturating_add(PROBE_GAP.as_nanos() as u64), Relaxed);
        true
    }
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
    ///
    /// The fast path (the slot at the hint is free for the hint's lap) is
    /// inlined into the caller; everything else is in [`push_slow`](Self::push_slow).
    #[inline]
    pub(crate) fn try_push(&self, me: TaskId, v: T, probe: Probe, gate: &ProbeGate) -> Result<(), Push<T>> {
        let hint = &self.header.enqueue.0;
        let p = hint.load(Ordering::Acquire);
        let slot = self.slot(p);
        let lap = self.lap(p);
        // The exact word a healthy ring holds there (EMPTY names nobody); any
        // other goes the slow way, which decodes and judges it. Read before
        // the CAS, so that a producer that finds the ring full does not take
        // the line from the consumer reading that slot.
        let free = state(lap, EMPTY, 0);
        let st = slot.state.load(Ordering::Relaxed);
        if st == free
            // Acquire: pairs with the last reader's Release of EMPTY.
            && slot
                .state
                .compare_exchange(free, state(lap, WRITING, me.tid), Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            Self::write_claimed(slot, hint, p, lap, me, v);
            return Ok(());
        }
        // Still holding the previous lap's element, not yet taken: full, as
        // the slow path would say (p is not claimed, so it is not stale).
        if st == state(lap.wrapping_sub(1), FULL, 0) {
            return Err(Push::Full(v));
        }
        self.push_slow(me, v, probe, gate)
    }

    /// The rest of a put once position `p`'s slot is claimed (`WRITING` by
    /// us): stamp it, advance the hint, write, publish.
    #[inline]
    fn write_claimed(slot: &Slot<T>, hint: &AtomicU64, p: u64, lap: u64, me: TaskId, v: T) {
        slot.owner.store(me.stamp(), Ordering::Relaxed);
        // A plain store, not a CAS: we hold position p, so every position
        // below p + 1 is claimed and p + 1 is a valid hint, even if others
        // have moved the hint further meanwhile (it then goes back a little:
        // see "Hints" in the module docs). Release: pairs with the Acquire
        // loads of the hint, so a thread that reads p + 1 sees our claim and
        // what we saw before it.
        hint.store(p.wrapping_add(1), Ordering::Release);
        // SAFETY: our claim excludes every other writer and reader until we
        // publish FULL below.
        slot.value.with_mut(|ptr| unsafe { ptr.write(MaybeUninit::new(v)) });
        // Release: pairs with a consumer's claim (Acquire).
        slot.state.store(state(lap, FULL, 0), Ordering::Release);
    }

    /// [`try_push`](Self::try_push) when the fast path's claim failed: the
    /// whole protocol, with positions claimed ahead of a lagging hint, full
    /// rings, dead readers and garbage.
    #[cold]
    #[inline(never)]
    fn push_slow(&self, me: TaskId, v: T, probe: Probe, gate: &ProbeGate) -> Result<(), Push<T>> {
        let hint = &self.header.enqueue.0;
        let mut seen = hint.load(Ordering::Acquire);
        let mut p = seen;
        for _ in 0..MAX_RETRIES {
            let slot = self.slot(p);
            let lap = self.lap(p);
            let st = slot.state.load(Ordering::Acquire);
            let (l, kind, tid) = decode(st);
            match (lap_diff(l, lap), kind) {
                (0, EMPTY) => {
                    // Acquire: pairs with the last reader's Release of EMPTY.
                    // On failure the state moved: look at p again.
                    let claim = state(lap, WRITING, me.tid);
                    if slot.state.compare_exchange(st, claim, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                        Self::write_claimed(slot, hint, p, lap, me, v);
                        return Ok(());
                    }
                }
                // Position p is taken (or done): go on past it.
                (0 | 1, _) => p = Self::past(hint, &mut seen, p),
                // The slot still holds the previous lap: full (p cannot be
                // stale: it is not claimed yet), unless the holder is a dead
                // reader.
                (-1, FULL | WRITING) => return Err(Push::Full(v)),
                (-1, READING) => {
                    if probe.allows(gate) && !holder_alive(tid, slot.owner.load(Ordering::Relaxed)) {
                        // The reader of position p − slots died: release its
                        // slot (losing what it was taking) for position p,
                        // which we then look at again. Consumers go on past
                        // its position, whose slot is now a lap ahead of it.
                        let freed = state(lap, EMPTY, 0);
                        let _ = slot.state.compare_exchange(st, freed, Ordering::Release, Ordering::Relaxed);
                        continue;
                    }
                    return Err(Push::Full(v));
                }
                // More than a lap from p, or free a lap early: stale only if
                // the hint moved since we read it (see "Trust").
                _ => match hint.load(Ordering::Acquire) {
                    now if now == seen => return Err(Push::Corrupt(v, self.corrupt("put", p, st))),
                    now => (seen, p) = (now, now),
                },
            }
        }
        Err(Push::Corrupt(v, Error::corrupt("MPMC ring", "a put made no progress (the slots keep changing under it)")))
    }

    /// Takes the oldest element, `Ok(None)` if there is none ready. `probe`:
    /// a position held by a dead writer may be checked and skipped.
    ///
    /// The fast path (the slot at the hint is full for the hint's lap) is
    /// inlined into the caller; everything else is in [`pop_slow`](Self::pop_slow).
    #[inline]
    pub(crate) fn try_pop(&self, me: TaskId, probe: Probe, gate: &ProbeGate) -> Result<Option<T>> {
        let hint = &self.header.dequeue.0;
        let q = hint.load(Ordering::Acquire);
        let slot = self.slot(q);
        let lap = self.lap(q);
        // As in try_push: only the exact healthy word, read before the CAS
        // (a consumer that finds the ring empty leaves the line to the
        // producer writing that slot).
        let full = state(lap, FULL, 0);
        let st = slot.state.load(Ordering::Relaxed);
        if st == full
            // Acquire: pairs with the writer's Release of FULL.
            && slot
                .state
                .compare_exchange(full, state(lap, READING, me.tid), Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return Ok(Some(Self::read_claimed(slot, hint, q, lap, me)));
        }
        // Free for this lap: nothing produced here yet, as the slow path
        // would say (q is not claimed, so it is not stale).
        if st == state(lap, EMPTY, 0) {
            return Ok(None);
        }
        self.pop_slow(me, probe, gate)
    }

    /// The rest of a get once position `q`'s slot is claimed (`READING` by
    /// us): stamp it, advance the hint, read, release the slot.
    #[inline]
    fn read_claimed(slot: &Slot<T>, hint: &AtomicU64, q: u64, lap: u64, me: TaskId) -> T {
        slot.owner.store(me.stamp(), Ordering::Relaxed);
        // A plain store, as in `write_claimed`: we hold position q. Release:
        // pairs with the Acquire loads of the hint.
        hint.store(q.wrapping_add(1), Ordering::Release);
        // SAFETY: our claim excludes every writer and other reader until we
        // release the slot below; T is Pod.
        let v = slot.value.with(|ptr| unsafe { ptr.read().assume_init() });
        // Release: pairs with the next lap's writer's claim.
        slot.state.store(state(lap.wrapping_add(1), EMPTY, 0), Ordering::Release);
        v
    }

    /// [`try_pop`](Self::try_pop) when the fast path's claim failed: the
    /// whole protocol, with positions claimed ahead of a lagging hint, empty
    /// rings, dead writers and garbage.
    #[cold]
    #[inline(never)]
    fn pop_slow(&self, me: TaskId, probe: Probe, gate: &ProbeGate) -> Result<Option<T>> {
        let hint = &self.header.dequeue.0;
        let mut seen = hint.load(Ordering::Acquire);
        let mut q = seen;
        for _ in 0..MAX_RETRIES {
            let slot = self.slot(q);
            let lap = self.lap(q);
            let st = slot.state.load(Ordering::Acquire);
            let (l, kind, tid) = decode(st);
            match (lap_diff(l, lap), kind) {
                (0, FULL) => {
                    // Acquire: pairs with the writer's Release of FULL. On
                    // failure the state moved: look at q again.
                    let claim = state(lap, READING, me.tid);
                    if slot.state.compare_exchange(st, claim, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                        return Ok(Some(Self::read_claimed(slot, hint, q, lap, me)));
                    }
                }
                (0, WRITING) => {
                    if probe.allows(gate) && !holder_alive(tid, slot.owner.load(Ordering::Relaxed)) {
                        // Its writer died mid-put: skip the position (its slot
                        // goes to the next lap), then go on past it.
                        let skipped = state(lap.wrapping_add(1), EMPTY, 0);
                        let _ = slot.state.compare_exchange(st, skipped, Ordering::Release, Ordering::Relaxed);
                        continue;
                    }
                    return Ok(None); // being written: not ready yet
                }
                // Not produced yet (the slot is free for this lap, or still
                // being read from the previous one; q cannot be stale).
                (0, EMPTY) | (-1, READING) => return Ok(None),
                // Position q is taken (or done): go on past it.
                (0, READING) | (1, _) => q = Self::past(hint, &mut seen, q),
                _ => match hint.load(Ordering::Acquire) {
                    now if now == seen => return Err(self.corrupt("get", q, st)),
                    now => (seen, q) = (now, now),
                },
            }
        }
        Err(Error::corrupt("MPMC ring", "a get made no progress (the slots keep changing under it)"))
    }

    /// The position to look at after finding `pos` taken: the hint if it has
    /// moved past `pos` (a thread that was preempted catches up at once),
    /// else `pos + 1`. `seen` is the hint last read.
    #[inline]
    fn past(hint: &AtomicU64, seen: &mut u64, pos: u64) -> u64 {
        *seen = hint.load(Ordering::Acquire);
        if (distance(*seen, pos) as i64) > 0 { *seen } else { pos.wrapping_add(1) }
    }

    /// The oldest position from `hint` on that `taken` (given the slot's lap
    /// difference from the position's and its kind) does not pass over, with
    /// that lap difference and kind: where the next claim of that side would
    /// be. `None` if it is not found within two laps (garbage, or a ring
    /// moving fast under us). A snapshot, for sleepers and sizes.
    fn head(&self, hint: &AtomicU64, taken: impl Fn(i64, u64) -> bool) -> Option<(u64, i64, u64)> {
        let mut pos = hint.load(Ordering::Acquire);
        for _ in 0..=2 * self.slots.len() {
            let (l, kind, _) = decode(self.slot(pos).state.load(Ordering::Acquire));
            let diff = lap_diff(l, self.lap(pos));
            if !taken(diff, kind) {
                return Some((pos, diff, kind));
            }
            pos = pos.wrapping_add(1);
        }
        None
    }

    /// [`head`](Self::head) of the consumers' side.
    fn dequeue_head(&self) -> Option<(u64, i64, u64)> {
        self.head(&self.header.dequeue.0, |diff, kind| matches!((diff, kind), (0, READING) | (1, _)))
    }

    /// [`head`](Self::head) of the producers' side.
    fn enqueue_head(&self) -> Option<(u64, i64, u64)> {
        self.head(&self.header.enqueue.0, |diff, kind| matches!((diff, kind), (0, WRITING | FULL | READING) | (1, _)))
    }

    /// Whether a consumer would find nothing ready (a snapshot, for sleepers:
    /// anything unexpected counts as "look again").
    pub fn looks_empty(&self) -> bool {
        matches!(self.dequeue_head(), Some((_, 0, EMPTY | WRITING) | (_, -1, READING)))
    }

    /// Whether the oldest position is claimed by a producer that has not
    /// published yet (a snapshot): a closed queue is not drained until that
    /// put finishes or its producer is found dead.
    pub(crate) fn head_in_flight(&self) -> bool {
        matches!(self.dequeue_head(), Some((_, 0, WRITING)))
    }

    /// Whether a producer would find no room (a snapshot, for sleepers).
    pub fn looks_full(&self) -> bool {
        matches!(self.enqueue_head(), Some((_, -1, _)))
    }

    /// Elements in the ring, approximately (a snapshot of two moving heads);
    /// clamped to `0..=slots`.
    pub fn len(&self) -> usize {
        let (Some((dequeue, ..)), Some((enqueue, ..))) = (self.dequeue_head(), self.enqueue_head()) else {
            return self.slots.len(); // garbage, or moving too fast to tell
        };
        match distance(enqueue, dequeue) {
            d if d <= self.slots.len() as u64 => d as usize,
            d if d > u64::MAX / 2 => 0, // the consumers' head read after it moved past the producers'
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
        self.try_push(crate::loom::current_task(), v, probe.into(), &ProbeGate::default())
    }

    /// [`try_pop`](Self::try_pop) by the calling thread.
    pub fn try_pop_here(&self, probe: bool) -> Result<Option<T>> {
        self.try_pop(crate::loom::current_task(), probe.into(), &ProbeGate::default())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn gated_probes_run_at_most_once_per_gap() {
        let gate = ProbeGate::default();
        let start = std::time::Instant::now();
        assert!(Probe::Gated.allows(&gate), "the first probe runs at once");
        let again = Probe::Gated.allows(&gate);
        assert!(!again || start.elapsed() >= PROBE_GAP, "a second probe within the gap");
        std::thread::sleep(PROBE_GAP * 2);
        assert!(Probe::Gated.allows(&gate), "after the gap it runs again");
        assert!(Probe::Yes.allows(&gate) && !Probe::No.allows(&gate));
    }

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
                r.try_push(me(), round * 10 + i, Probe::No, &ProbeGate::default()).unwrap();
            }
            assert!(matches!(r.try_push(me(), 99, Probe::Yes, &ProbeGate::default()), Err(Push::Full(99))));
            assert_eq!(r.len(), 4);
            for i in 0..4 {
                assert_eq!(r.try_pop(me(), Probe::No, &ProbeGate::default()).unwrap(), Some(round * 10 + i));
            }
            assert_eq!(r.try_pop(me(), Probe::Yes, &ProbeGate::default()).unwrap(), None);
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
        r.try_push(me(), 7, Probe::No, &ProbeGate::default()).unwrap(); // position 1
        assert_eq!(
            r.try_pop(me(), Probe::No, &ProbeGate::default()).unwrap(),
            None,
            "without probing, a claimed slot just waits"
        );
        assert_eq!(r.try_pop(me(), Probe::Yes, &ProbeGate::default()).unwrap(), Some(7), "position 0 skipped");
        // A ghost reader holding position 2's slot (lap 1, slot 0) while full.
        r.try_push(me(), 8, Probe::No, &ProbeGate::default()).unwrap(); // position 2 → slot 0, lap 1
        r.try_push(me(), 9, Probe::No, &ProbeGate::default()).unwrap(); // position 3 → slot 1, lap 1
        slots[0].state.store(state(1, READING, ghost.tid), Ordering::Relaxed);
        h.dequeue.0.store(3, Ordering::Relaxed);
        assert!(matches!(r.try_push(me(), 10, Probe::No, &ProbeGate::default()), Err(Push::Full(10))));
        r.try_push(me(), 10, Probe::Yes, &ProbeGate::default()).unwrap(); // released, position 4
        assert_eq!(r.try_pop(me(), Probe::Yes, &ProbeGate::default()).unwrap(), Some(9));
        assert_eq!(r.try_pop(me(), Probe::Yes, &ProbeGate::default()).unwrap(), Some(10));
        assert_eq!(r.try_pop(me(), Probe::Yes, &ProbeGate::default()).unwrap(), None);
    }

    #[test]
    fn garbage_states_are_corrupt() {
        let (h, slots) = ring::<u32>(4);
        let r = Mpmc { header: &h, slots: &slots };
        slots[0].state.store(state(9, FULL, 0), Ordering::Relaxed);
        assert!(r.try_pop(me(), Probe::Yes, &ProbeGate::default()).is_err());
        assert!(matches!(r.try_push(me(), 1, Probe::Yes, &ProbeGate::default()), Err(Push::Corrupt(1, _))));
        let (h, slots) = ring::<u32>(4);
        let r = Mpmc { header: &h, slots: &slots };
        h.enqueue.0.store(1000, Ordering::Relaxed); // 250 laps ahead of every slot
        assert!(r.try_push(me(), 1, Probe::Yes, &ProbeGate::default()).is_err());
        h.dequeue.0.store(1000, Ordering::Relaxed);
        assert!(r.try_pop(me(), Probe::Yes, &ProbeGate::default()).is_err());
    }
}
