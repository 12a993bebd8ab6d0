//! The multi-producer multi-consumer ring of fixed-size elements: positions
//! claimed on the side's own index, as in crossbeam's `ArrayQueue`, and a
//! claim record per thread that says which position it holds, so that a
//! claimant killed mid-operation can be found dead and passed over.
//!
//! # Positions and slots
//!
//! Producers claim position `p` by a CAS of `enqueue` from `p` to `p + 1`,
//! consumers position `q` by a CAS of `dequeue`. Both are 64-bit and only ever
//! grow, so a claim never suffers ABA. Position `p` lives in slot
//! `p & (slots - 1)` and belongs to lap `p / slots` (kept to 63 bits; the
//! lap arithmetic is exact until a position passes 2^64, which 2^64
//! operations would take). A slot's
//! stamp (one `u64`) is `lap << 1 | full`:
//!
//! ```text
//! EMPTY(l) ──put of lap l──▶ FULL(l) ──get of lap l──▶ EMPTY(l + 1)
//! ```
//! A zeroed slot is `EMPTY(0)`, so a fresh segment is an empty ring.
//!
//! - **put**: read `enqueue` = p; if p's slot is `EMPTY(lap(p))`, record
//!   `p + 1` in our claim record, CAS `enqueue` p → p + 1, write the element
//!   with plain stores, store `FULL(lap(p))`, and clear the record.
//! - **get**: the mirror: `FULL(lap(q))`, record `q + 1`, CAS `dequeue`,
//!   read, store `EMPTY(lap(q) + 1)`, clear.
//!
//! The index CAS is the only locked instruction of an operation, on a line
//! only that side writes; the slot is written by plain stores. (The previous
//! design claimed with a CAS on the slot, whose line the other side was using:
//! 1.8× crossbeam's time in the 2→2 benchmark.)
//!
//! # Claim records
//!
//! Each side has a table of [`CLAIMS`] records, one cache line each: `owner`
//! (the `TaskId::stamp` of the thread that holds the record, 0: free) and `pos`
//! (the position it is claiming, plus one; 0: none). A thread takes a record
//! on its first operation on that side (its handle caches the index and checks
//! `owner` on every use, so copies in other threads or forked children find
//! their own). A record is given back when its thread drops the handle whose
//! cache names it (one record per side per handle: a handle shared by many
//! threads gives back only the dropping thread's), and a dead thread's record
//! is taken over when the table has no free one. So the limit is [`CLAIMS`]
//! *live* threads that have used one side of a queue; a thread that goes on
//! living keeps its record.
//!
//! Only its owner writes `pos`. It stores `p + 1` before the index CAS and 0
//! after publishing (and before returning without a claim). A record left
//! naming a position by a failed CAS only makes a prober wait until its owner
//! moves on.
//!
//! # Dying peers
//!
//! - **A producer killed between its claim and its publish** leaves `EMPTY`
//!   at a position below `enqueue`. A consumer finding that at the head, and
//!   allowed to probe ([`Probe`]), scans the producers' table: if no record
//!   with a live owner names the position, it *skips* it: CAS `EMPTY(l)` →
//!   `EMPTY(l + 1)`, then CAS `dequeue` past it. A consumer that finds a slot a
//!   lap ahead at `dequeue` helps with the second CAS. Nothing else is lost or
//!   duplicated; the skipped position holds nothing.
//! - **A consumer killed between its claim and its release** leaves
//!   `FULL(l)` with `dequeue` past it. A producer a lap later finds the ring
//!   full there; if allowed to probe and no live consumer's record names the
//!   position, it releases the slot: CAS `FULL(l)` → `EMPTY(l + 1)`. The
//!   element that consumer was taking is lost: at most that one.
//! - Two or more claimants killed in a row are passed over one at a time, each
//!   by the same check.
//!
//! ## Why a live claimant is never passed over
//!
//! Take the producer of q (the consumer's side is the mirror). Its record's
//! `pos = q + 1` store is sequenced before its `Release` index CAS; the
//! prober read `enqueue > q` with `Acquire`, so its `Acquire` scan reads
//! `q + 1` or a later value of that `pos`. A later value is 0 or a next
//! position, both stored with `Release` after the producer's `FULL` store, so
//! that store happens before the prober's skip CAS, which then fails (it
//! expects `EMPTY`). Reading `q + 1` with a live owner, the prober waits. A
//! record is read `pos` first, then `owner`: an owner of 0 read after a `pos`
//! means the record was given back, which happens after its last publish.
//!
//! # Notes about memory ordering
//! - Stamp loads are `Acquire`, and the stamp stores that end an operation
//!   `Release`: a claimant's element access happens after the previous
//!   side's (the put read `EMPTY` stored by the last reader, the get `FULL`).
//! - The index CASes are `Release` (they publish the record's `pos`, see
//!   above); the index loads before a scan are `Acquire`. The fast path's
//!   first index load is `Relaxed`: the CAS validates it.
//! - Record `pos` stores are `Release` and scans `Acquire` (see above).
//!
//! # Trust
//! Indices are masked; elements are `Pod`; a stamp whose lap does not fit the
//! position while the index still holds the value read before is
//! [`Error::Corrupt`]. No loop runs without bound: every retry follows an
//! index that moved, a skip, or a release of a dead reader's slot, at most
//! [`MAX_RETRIES`] of them, and a scan reads each record once (so a peer
//! that keeps scribbling can make one call scan many times, but not for
//! ever). Garbage in the tables can make a prober wait (a
//! record naming a live unrelated task) or pass over a position in flight
//! (in-bounds wrong data), nothing worse.

use std::mem::MaybeUninit;

use bytemuck::Pod;

use super::{Padded, Push, distance};
use crate::error::{Error, Result};
use crate::loom::cell::UnsafeCell;
use crate::loom::local;
use crate::loom::{AtomicU64, Ordering};
use crate::os::TaskId;
use crate::sync::owner::holder_alive;

/// Laps are 63 bits (the stamp's low bit says full).
const LAP_MASK: u64 = u64::MAX >> 1;

/// Claim records per side of a ring in a segment: the most threads that may
/// use one side at once.
pub const CLAIMS: usize = 256;

/// Retries after which an operation gives up as [`Error::Corrupt`]: each
/// retry follows an index that moved (another thread's claim) or a skip, so
/// a healthy ring never gets near this (that many other operations would
/// have to complete while one thread makes no progress), while a peer that
/// keeps scribbling cannot hold us in the loop forever.
const MAX_RETRIES: u32 = 1 << 20;

fn empty(lap: u64) -> u64 {
    (lap & LAP_MASK) << 1
}

fn full(lap: u64) -> u64 {
    empty(lap) | 1
}

/// (lap, full) of a stamp.
fn decode(stamp: u64) -> (u64, bool) {
    (stamp >> 1, stamp & 1 == 1)
}

/// `a − b` in the 63-bit lap space, as a signed number.
fn lap_diff(a: u64, b: u64) -> i64 {
    let d = a.wrapping_sub(b) & LAP_MASK;
    if d > LAP_MASK / 2 { d as i64 + i64::MIN } else { d as i64 }
}

/// Whether a stuck claim's holder may be checked for liveness now (a scan of
/// the claim records and a `/proc` read of a few microseconds).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(loom), allow(unreachable_pub, reason = "pub for the loom models; the module is private outside loom"))]
pub enum Probe {
    /// Not now.
    No,
    /// Yes: a waiter after a sleep slice (already at most once a slice).
    Yes,
    /// At most once per [`PROBE_GAP`] for the handle whose [`Cache`] goes
    /// with it: the non-blocking calls, which would otherwise probe every time
    /// they find a put or a get in flight (a busy queue's consumers, polling,
    /// did so about a thousand times per two million messages).
    Gated,
}

impl From<bool> for Probe {
    fn from(yes: bool) -> Self {
        if yes { Probe::Yes } else { Probe::No }
    }
}

impl Probe {
    fn allows(self, cache: &Cache) -> bool {
        match self {
            Probe::No => false,
            Probe::Yes => true,
            Probe::Gated => {
                use local::Ordering::Relaxed;
                let now = crate::os::Deadline::now().nanos();
                if now < cache.next_probe.load(Relaxed) {
                    return false;
                }
                cache.next_probe.store(now.saturating_add(PROBE_GAP.as_nanos() as u64), Relaxed);
                true
            }
        }
    }
}

/// The shortest time between two gated probes of one handle.
pub(crate) const PROBE_GAP: std::time::Duration = std::time::Duration::from_millis(1);

/// What a handle keeps to itself (process-local; a clone starts afresh).
#[derive(Debug, Default)]
#[cfg_attr(not(loom), allow(unreachable_pub, reason = "pub for the loom models; the module is private outside loom"))]
pub struct Cache {
    /// When the next gated probe may run, in nanoseconds of the monotonic
    /// clock (0: at once).
    next_probe: local::AtomicU64,
    /// The index of the claim record last used on each side (producers,
    /// consumers): a guess, checked against the record's owner on every use.
    record: [local::AtomicU32; 2],
}

/// One thread's claim record (see the module docs), on a line of its own.
#[repr(C, align(64))]
#[derive(Debug, Default)]
#[cfg_attr(not(loom), allow(unreachable_pub, reason = "pub for the loom models; the module is private outside loom"))]
pub struct Claim {
    /// The holder's `TaskId::stamp`; 0: free.
    owner: AtomicU64,
    /// The position the holder is claiming, plus one; 0: none.
    pos: AtomicU64,
}

/// The two positions, on lines of their own.
#[repr(C)]
#[derive(Debug, Default)]
#[cfg_attr(not(loom), allow(unreachable_pub, reason = "pub for the loom models; the module is private outside loom"))]
pub struct MpmcIndex {
    /// The next position producers claim.
    enqueue: Padded<AtomicU64>,
    /// The next position consumers claim.
    dequeue: Padded<AtomicU64>,
}

/// A ring's shared state before its slots, as a segment holds it: the
/// positions and the two tables of claim records.
#[cfg(not(loom))]
#[repr(C)]
#[derive(Debug)]
pub(crate) struct MpmcHeader {
    index: MpmcIndex,
    producers: [Claim; CLAIMS],
    consumers: [Claim; CLAIMS],
}

#[cfg(not(loom))]
impl Default for MpmcHeader {
    fn default() -> Self {
        MpmcHeader {
            index: MpmcIndex::default(),
            producers: std::array::from_fn(|_| Claim::default()),
            consumers: std::array::from_fn(|_| Claim::default()),
        }
    }
}

#[cfg(not(loom))]
impl MpmcHeader {
    /// The ring over `slots`.
    pub(crate) fn ring<'a, T>(&'a self, slots: &'a [Slot<T>]) -> Mpmc<'a, T> {
        Mpmc { index: &self.index, producers: &self.producers, consumers: &self.consumers, slots }
    }
}

/// One slot: see the module docs.
#[repr(C)]
#[derive(Debug)]
pub struct Slot<T> {
    stamp: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

impl<T> Slot<T> {
    #[cfg(any(loom, test))]
    #[allow(clippy::new_without_default, reason = "for the loom models; real slots are segment memory")]
    pub fn new() -> Self {
        Slot { stamp: AtomicU64::new(0), value: UnsafeCell::new(MaybeUninit::uninit()) }
    }
}

/// Which side a claim record table serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Producer = 0,
    Consumer = 1,
}

/// A view of a ring: its positions, claim tables and slots (a power-of-two
/// count).
#[derive(Debug)]
pub struct Mpmc<'a, T> {
    pub index: &'a MpmcIndex,
    pub producers: &'a [Claim],
    pub consumers: &'a [Claim],
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

    fn corrupt(&self, what: &str, pos: u64, stamp: u64) -> Error {
        let (lap, is_full) = decode(stamp);
        Error::corrupt(
            "MPMC ring",
            format!(
                "{what}: position {pos} (lap {}) finds a slot stamped {} of lap {lap}",
                self.lap(pos),
                if is_full { "full" } else { "empty" }
            ),
        )
    }

    fn table(&self, role: Role) -> &[Claim] {
        match role {
            Role::Producer => self.producers,
            Role::Consumer => self.consumers,
        }
    }

    /// The calling thread's claim record on `role`'s side: the cached one if
    /// it is still ours, else found or taken by [`register`](Self::register).
    #[inline]
    fn record(&self, role: Role, cache: &Cache, me: TaskId) -> Result<&Claim> {
        let table = self.table(role);
        let cached = cache.record[role as usize].load(local::Ordering::Relaxed) as usize;
        match table.get(cached) {
            // Relaxed: only we write our own owner word (or a peer's garbage,
            // which the trust model allows to mislead).
            Some(c) if c.owner.load(Ordering::Relaxed) == me.stamp() => Ok(c),
            _ => self.register(role, cache, me),
        }
    }

    /// Finds the caller's record on `role`'s side (from an earlier handle),
    /// or takes a free one, or one whose owner is dead.
    ///
    /// # Errors
    /// [`Error::Overflow`] if all [`CLAIMS`] records belong to live threads.
    #[cold]
    #[inline(never)]
    fn register(&self, role: Role, cache: &Cache, me: TaskId) -> Result<&Claim> {
        let table = self.table(role);
        let stamp = me.stamp();
        // A free record, or (`dead`) one whose owner is dead: take it.
        let take = |c: &Claim, dead: bool| {
            let owner = c.owner.load(Ordering::Relaxed);
            (owner == 0 || (dead && !Self::alive(owner)))
                // Acquire: pairs with the Release of a handle giving it back.
                && c.owner.compare_exchange(owner, stamp, Ordering::Acquire, Ordering::Relaxed).is_ok()
        };
        let found = table
            .iter()
            .position(|c| c.owner.load(Ordering::Acquire) == stamp)
            .or_else(|| table.iter().position(|c| take(c, false)))
            .or_else(|| table.iter().position(|c| take(c, true)));
        if let Some(i) = found {
            // A dead owner may have left a position: ours names none yet.
            table[i].pos.store(0, Ordering::Release);
            cache.record[role as usize].store(i as u32, local::Ordering::Relaxed);
            return Ok(&table[i]);
        }
        Err(Error::Overflow {
            what: match role {
                Role::Producer => "threads putting to one queue at once (its claim records)",
                Role::Consumer => "threads getting from one queue at once (its claim records)",
            },
        })
    }

    /// Gives back the calling thread's records, if `cache` names them (a
    /// handle's drop). A record a thread keeps through another handle is
    /// found again by [`register`](Self::register), so giving it back early
    /// costs only a new registration.
    pub(crate) fn release(&self, cache: &Cache, me: TaskId) {
        for role in [Role::Producer, Role::Consumer] {
            let cached = cache.record[role as usize].load(local::Ordering::Relaxed) as usize;
            if let Some(c) = self.table(role).get(cached)
                && c.owner.load(Ordering::Relaxed) == me.stamp()
            {
                c.pos.store(0, Ordering::Release);
                // Release: everything we published happened before, for the
                // prober that reads the record free (see the module docs).
                let _ = c.owner.compare_exchange(me.stamp(), 0, Ordering::Release, Ordering::Relaxed);
            }
        }
    }

    /// Whether a record's owner word names a live thread (0: nobody).
    fn alive(owner: u64) -> bool {
        owner != 0 && holder_alive(TaskId::from_stamp(owner).tid, owner)
    }

    /// Whether a record on `role`'s side with a live owner names `pos` (its
    /// claimant may still finish). Reads `pos` before `owner`: see the module
    /// docs.
    fn claimed_by_live(&self, role: Role, pos: u64) -> bool {
        let want = pos.wrapping_add(1);
        self.table(role)
            .iter()
            .any(|c| c.pos.load(Ordering::Acquire) == want && Self::alive(c.owner.load(Ordering::Acquire)))
    }

    /// Claims position `pos` on the side whose index is `index`, as the holder
    /// of `rec`: names it in the record, then moves the index past it. `Err`:
    /// the index had moved on (to the value given); the record is left naming
    /// `pos` until the caller's next claim or its clearing of the record.
    #[inline]
    fn claim(index: &AtomicU64, rec: &Claim, pos: u64) -> std::result::Result<(), u64> {
        // Release, both (the record, then the CAS that publishes it): see
        // "Why a live claimant is never passed over" in the module docs.
        rec.pos.store(pos.wrapping_add(1), Ordering::Release);
        index.compare_exchange(pos, pos.wrapping_add(1), Ordering::Release, Ordering::Acquire).map(drop)
    }

    /// Appends `v` if there is room. `probe`: a slot held by a dead reader may
    /// be checked and released (only when the ring is full there).
    ///
    /// The fast path (the slot at `enqueue` is free for its lap and the claim
    /// succeeds) is inlined into the caller; everything else is in
    /// [`push_slow`](Self::push_slow).
    #[inline]
    pub(crate) fn try_push(&self, me: TaskId, cache: &Cache, v: T, probe: Probe) -> Result<(), Push<T>> {
        let rec = match self.record(Role::Producer, cache, me) {
            Ok(rec) => rec,
            Err(e) => return Err(Push::Failed(v, e)),
        };
        let enqueue = &self.index.enqueue.0;
        let p = enqueue.load(Ordering::Relaxed);
        let slot = self.slot(p);
        let lap = self.lap(p);
        // Acquire: pairs with the last reader's Release of EMPTY.
        if slot.stamp.load(Ordering::Acquire) == empty(lap) && Self::claim(enqueue, rec, p).is_ok() {
            Self::write_claimed(slot, rec, lap, v);
            return Ok(());
        }
        self.push_slow(rec, cache, v, probe)
    }

    /// The rest of a put once position `p` of lap `lap` is ours: write,
    /// publish, clear the record.
    #[inline]
    fn write_claimed(slot: &Slot<T>, rec: &Claim, lap: u64, v: T) {
        // SAFETY: our index CAS made the position ours alone, and its slot is
        // EMPTY for its lap (read with Acquire before the CAS): no reader
        // touches the element until we publish FULL below, and no other
        // writer can claim the slot before a reader has emptied it again.
        slot.value.with_mut(|ptr| unsafe { ptr.write(MaybeUninit::new(v)) });
        // Release: pairs with a consumer's Acquire load of the stamp.
        slot.stamp.store(full(lap), Ordering::Release);
        rec.pos.store(0, Ordering::Release);
    }

    /// [`try_push`](Self::try_push) when the fast path did not claim: a lost
    /// CAS, a full ring, dead readers and garbage.
    #[cold]
    #[inline(never)]
    fn push_slow(&self, rec: &Claim, cache: &Cache, v: T, probe: Probe) -> Result<(), Push<T>> {
        let enqueue = &self.index.enqueue.0;
        let mut p = enqueue.load(Ordering::Acquire);
        let outcome = 'attempts: {
            for _ in 0..MAX_RETRIES {
                let slot = self.slot(p);
                let lap = self.lap(p);
                let stamp = slot.stamp.load(Ordering::Acquire);
                let (l, is_full) = decode(stamp);
                match (lap_diff(l, lap), is_full) {
                    (0, false) => match Self::claim(enqueue, rec, p) {
                        Ok(()) => {
                            Self::write_claimed(slot, rec, lap, v);
                            return Ok(());
                        }
                        Err(now) => p = now,
                    },
                    // The slot still holds the previous lap: its element not
                    // yet taken (or being taken), or its put still in flight.
                    // Full, unless the reader holding it is dead.
                    (-1, true) if probe.allows(cache) && self.release_dead_reader(p, stamp) => {}
                    (-1, _) => break 'attempts Err(Push::Full(v)),
                    // Position p is done, or a lap ahead: p is stale, or the
                    // segment is garbage.
                    _ => match enqueue.load(Ordering::Acquire) {
                        now if now == p => break 'attempts Err(Push::Failed(v, self.corrupt("put", p, stamp))),
                        now => p = now,
                    },
                }
            }
            Err(Push::Failed(v, Error::corrupt("MPMC ring", "a put made no progress (the index keeps moving)")))
        };
        rec.pos.store(0, Ordering::Release);
        outcome
    }

    /// Position `p`'s slot holds `stamp`, `FULL` of the lap before: if a
    /// consumer claimed position `p − slots` and no live consumer's record
    /// names it, that consumer died while taking it; release the slot for
    /// lap(p) (losing its element). Whether the slot was released (by us or
    /// meanwhile): the caller then looks at `p` again.
    fn release_dead_reader(&self, p: u64, stamp: u64) -> bool {
        let q = p.wrapping_sub(self.slots.len() as u64);
        let dequeue = self.index.dequeue.0.load(Ordering::Acquire);
        // Not claimed yet: simply full.
        if (distance(dequeue, q) as i64) <= 0 || self.claimed_by_live(Role::Consumer, q) {
            return false;
        }
        let slot = self.slot(p);
        // Release: a producer that then claims p reads our EMPTY with Acquire.
        // Failure: the slot moved (its reader finished after all): look again.
        let _ = slot.stamp.compare_exchange(stamp, empty(self.lap(p)), Ordering::Release, Ordering::Relaxed);
        true
    }

    /// Takes the oldest element, `Ok(None)` if there is none ready. `probe`:
    /// a position held by a dead writer may be checked and skipped.
    ///
    /// The fast path (the slot at `dequeue` is full for its lap and the claim
    /// succeeds, or it is empty with nothing claimed) is inlined into the
    /// caller; everything else is in [`pop_slow`](Self::pop_slow).
    #[inline]
    pub(crate) fn try_pop(&self, me: TaskId, cache: &Cache, probe: Probe) -> Result<Option<T>> {
        let rec = self.record(Role::Consumer, cache, me)?;
        let dequeue = &self.index.dequeue.0;
        let q = dequeue.load(Ordering::Relaxed);
        let slot = self.slot(q);
        let lap = self.lap(q);
        // Acquire: pairs with the writer's Release of FULL.
        let stamp = slot.stamp.load(Ordering::Acquire);
        if stamp == full(lap) {
            if Self::claim(dequeue, rec, q).is_ok() {
                return Ok(Some(Self::read_claimed(slot, rec, lap)));
            }
        } else if stamp == empty(lap)
            && (matches!(probe, Probe::No) || self.index.enqueue.0.load(Ordering::Relaxed) == q)
        {
            // Nothing put there yet (or, not probing, maybe a put in flight,
            // which is not ready either).
            return Ok(None);
        }
        self.pop_slow(rec, cache, probe)
    }

    /// The rest of a get once position `q` of lap `lap` is ours: read,
    /// release the slot, clear the record.
    #[inline]
    fn read_claimed(slot: &Slot<T>, rec: &Claim, lap: u64) -> T {
        // SAFETY: our index CAS made the position ours alone, and its slot is
        // FULL for its lap (read with Acquire before the CAS): the writer is
        // done and no writer of the next lap claims the slot until we release
        // it below; T is Pod.
        let v = slot.value.with(|ptr| unsafe { ptr.read().assume_init() });
        // Release: pairs with the next lap's writer's Acquire load.
        slot.stamp.store(empty(lap.wrapping_add(1)), Ordering::Release);
        rec.pos.store(0, Ordering::Release);
        v
    }

    /// [`try_pop`](Self::try_pop) when the fast path did not claim: a lost
    /// CAS, a put in flight at the head, dead writers, skipped positions and
    /// garbage.
    #[cold]
    #[inline(never)]
    fn pop_slow(&self, rec: &Claim, cache: &Cache, probe: Probe) -> Result<Option<T>> {
        let dequeue = &self.index.dequeue.0;
        let mut q = dequeue.load(Ordering::Acquire);
        let outcome = 'attempts: {
            for _ in 0..MAX_RETRIES {
                let slot = self.slot(q);
                let lap = self.lap(q);
                let stamp = slot.stamp.load(Ordering::Acquire);
                let (l, is_full) = decode(stamp);
                match (lap_diff(l, lap), is_full) {
                    (0, true) => match Self::claim(dequeue, rec, q) {
                        Ok(()) => return Ok(Some(Self::read_claimed(slot, rec, lap))),
                        Err(now) => q = now,
                    },
                    (0, false) => {
                        let enqueue = self.index.enqueue.0.load(Ordering::Acquire);
                        // Nothing put there yet; or claimed by a producer that
                        // may still publish.
                        if (distance(enqueue, q) as i64) <= 0
                            || !probe.allows(cache)
                            || self.claimed_by_live(Role::Producer, q)
                        {
                            break 'attempts Ok(None);
                        }
                        // Its producer died mid-put: skip the position (the
                        // slot goes to the next lap; the next pass moves
                        // dequeue past it). Release: pairs with the next
                        // lap's writer's Acquire load. Failure: it was
                        // published after all: look again.
                        let _ = slot.stamp.compare_exchange(
                            stamp,
                            empty(lap.wrapping_add(1)),
                            Ordering::Release,
                            Ordering::Relaxed,
                        );
                    }
                    // A lap ahead with dequeue at q: q was skipped (a get
                    // moves dequeue before it empties the slot), or q is
                    // stale. Help dequeue past it either way.
                    (1, _) => {
                        match dequeue.compare_exchange(q, q.wrapping_add(1), Ordering::Release, Ordering::Acquire) {
                            Ok(_) => q = q.wrapping_add(1),
                            Err(now) => q = now,
                        }
                    }
                    // The previous lap's element is still being taken, so
                    // nothing is put at q yet.
                    (-1, true) => break 'attempts Ok(None),
                    _ => match dequeue.load(Ordering::Acquire) {
                        now if now == q => break 'attempts Err(self.corrupt("get", q, stamp)),
                        now => q = now,
                    },
                }
            }
            Err(Error::corrupt("MPMC ring", "a get made no progress (the index keeps moving)"))
        };
        rec.pos.store(0, Ordering::Release);
        outcome
    }

    /// The consumers' head: `dequeue` and the lap difference and fullness of
    /// its slot (a snapshot).
    fn dequeue_head(&self) -> (u64, i64, bool) {
        let q = self.index.dequeue.0.load(Ordering::Acquire);
        let (l, is_full) = decode(self.slot(q).stamp.load(Ordering::Acquire));
        (q, lap_diff(l, self.lap(q)), is_full)
    }

    /// Whether a consumer would find nothing ready (a snapshot, for sleepers:
    /// anything unexpected counts as "look again").
    pub fn looks_empty(&self) -> bool {
        matches!(self.dequeue_head(), (_, 0, false) | (_, -1, true))
    }

    /// Whether the oldest position is claimed by a producer that has not
    /// published yet (a snapshot): a closed queue is not drained until that
    /// put finishes or its producer is found dead.
    pub fn head_in_flight(&self) -> bool {
        let (q, diff, is_full) = self.dequeue_head();
        diff == 0 && !is_full && (distance(self.index.enqueue.0.load(Ordering::Acquire), q) as i64) > 0
    }

    /// Whether a producer would find no room (a snapshot, for sleepers).
    pub fn looks_full(&self) -> bool {
        let p = self.index.enqueue.0.load(Ordering::Acquire);
        let (l, _) = decode(self.slot(p).stamp.load(Ordering::Acquire));
        lap_diff(l, self.lap(p)) == -1
    }

    /// Elements in the ring, counting puts in flight and gets not yet
    /// claimed (a snapshot of the two indices), clamped to `0..=slots`.
    #[allow(clippy::len_without_is_empty, reason = "`looks_empty` is the snapshot sleepers need")]
    pub fn len(&self) -> usize {
        let dequeue = self.index.dequeue.0.load(Ordering::Acquire);
        let enqueue = self.index.enqueue.0.load(Ordering::Acquire);
        match distance(enqueue, dequeue) {
            d if d <= self.slots.len() as u64 => d as usize,
            d if d > u64::MAX / 2 => 0, // dequeue read after it moved past the enqueue we read
            _ => self.slots.len(),
        }
    }
}

#[cfg(loom)]
loom::thread_local! {
    /// The model thread's handle cache (one for every ring: a record index
    /// that names another ring's record is only a guess that fails the owner
    /// check).
    static LOOM_CACHE: Cache = Cache::default();
}

/// The operations as the calling model thread, for the loom models (which
/// cannot name `TaskId`).
#[cfg(loom)]
impl<T: Pod> Mpmc<'_, T> {
    /// [`try_push`](Self::try_push) by the calling thread.
    pub fn try_push_here(&self, v: T, probe: bool) -> Result<(), Push<T>> {
        LOOM_CACHE.with(|c| self.try_push(crate::loom::current_task(), c, v, probe.into()))
    }

    /// [`try_pop`](Self::try_pop) by the calling thread.
    pub fn try_pop_here(&self, probe: bool) -> Result<Option<T>> {
        LOOM_CACHE.with(|c| self.try_pop(crate::loom::current_task(), c, probe.into()))
    }

    /// [`release`](Self::release) by the calling thread (a handle's drop).
    pub fn release_here(&self) {
        LOOM_CACHE.with(|c| self.release(c, crate::loom::current_task()));
    }

    /// Claims the next position as a put does, then dies there (the model
    /// thread must do nothing more): the claimed position, or `None` (and no
    /// death) if the slot there was not free.
    pub fn claim_push_and_die(&self) -> Option<u64> {
        self.claim_and_die(Role::Producer)
    }

    /// Claims the oldest element as a get does, then dies there: the claimed
    /// position, or `None` (and no death) if nothing was ready.
    pub fn claim_pop_and_die(&self) -> Option<u64> {
        self.claim_and_die(Role::Consumer)
    }

    fn claim_and_die(&self, role: Role) -> Option<u64> {
        let me = crate::loom::current_task();
        let rec = LOOM_CACHE.with(|c| self.record(role, c, me)).expect("a claim record");
        let (index, ready) = match role {
            Role::Producer => (&self.index.enqueue.0, false),
            Role::Consumer => (&self.index.dequeue.0, true),
        };
        loop {
            let pos = index.load(Ordering::Acquire);
            let lap = self.lap(pos);
            if self.slot(pos).stamp.load(Ordering::Acquire) != if ready { full(lap) } else { empty(lap) } {
                if index.load(Ordering::Acquire) != pos {
                    continue; // stale: others claimed meanwhile
                }
                rec.pos.store(0, Ordering::Release);
                return None;
            }
            if Self::claim(index, rec, pos).is_ok() {
                crate::loom::kill_current();
                return Some(pos);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::os::TID_MASK;

    #[test]
    fn gated_probes_run_at_most_once_per_gap() {
        let cache = Cache::default();
        let start = std::time::Instant::now();
        assert!(Probe::Gated.allows(&cache), "the first probe runs at once");
        let again = Probe::Gated.allows(&cache);
        assert!(!again || start.elapsed() >= PROBE_GAP, "a second probe within the gap");
        std::thread::sleep(PROBE_GAP * 2);
        assert!(Probe::Gated.allows(&cache), "after the gap it runs again");
        assert!(Probe::Yes.allows(&cache) && !Probe::No.allows(&cache));
    }

    struct Ring<T> {
        index: MpmcIndex,
        producers: Vec<Claim>,
        consumers: Vec<Claim>,
        slots: Vec<Slot<T>>,
    }

    // SAFETY: an element is accessed only by the thread whose claim holds its
    // position (what the ring's protocol is for); the tests share rings across
    // threads as segments do across processes.
    unsafe impl<T: Send> Sync for Ring<T> {}

    impl<T: Pod> Ring<T> {
        fn new(n: usize, claims: usize) -> Self {
            Ring {
                index: MpmcIndex::default(),
                producers: (0..claims).map(|_| Claim::default()).collect(),
                consumers: (0..claims).map(|_| Claim::default()).collect(),
                slots: (0..n).map(|_| Slot::new()).collect(),
            }
        }

        fn view(&self) -> Mpmc<'_, T> {
            Mpmc { index: &self.index, producers: &self.producers, consumers: &self.consumers, slots: &self.slots }
        }
    }

    fn me() -> TaskId {
        crate::os::current_task()
    }

    /// A task that can never be alive (tid above `pid_max`).
    const GHOST: TaskId = TaskId { tid: TID_MASK, start: 1 };

    #[test]
    fn fifo_full_empty_and_wrap() {
        let ring = Ring::<u64>::new(4, 2);
        let (r, c) = (ring.view(), Cache::default());
        for round in 0..5u64 {
            for i in 0..4 {
                r.try_push(me(), &c, round * 10 + i, Probe::No).unwrap();
            }
            assert!(matches!(r.try_push(me(), &c, 99, Probe::Yes), Err(Push::Full(99))));
            assert_eq!(r.len(), 4);
            assert!(r.looks_full() && !r.looks_empty());
            for i in 0..4 {
                assert_eq!(r.try_pop(me(), &c, Probe::No).unwrap(), Some(round * 10 + i));
            }
            assert_eq!(r.try_pop(me(), &c, Probe::Yes).unwrap(), None);
            assert!(r.looks_empty() && !r.looks_full() && !r.head_in_flight());
        }
        // One record per side, ours, naming nothing.
        for table in [&ring.producers, &ring.consumers] {
            assert_eq!(table[0].owner.load(Ordering::Relaxed), me().stamp());
            assert_eq!(table[0].pos.load(Ordering::Relaxed), 0);
            assert_eq!(table[1].owner.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn lap_arithmetic_wraps() {
        assert_eq!(lap_diff(0, LAP_MASK), 1);
        assert_eq!(lap_diff(LAP_MASK, 0), -1);
        assert_eq!(decode(full(LAP_MASK + 3)), (2, true));
        assert_eq!(decode(empty(7)), (7, false));
    }

    #[test]
    fn records_are_found_again_taken_from_the_dead_and_given_back() {
        let ring = Ring::<u32>::new(2, 2);
        let r = ring.view();
        ring.producers[0].owner.store(GHOST.stamp(), Ordering::Relaxed);
        ring.producers[0].pos.store(77, Ordering::Relaxed);
        let (a, b) = (Cache::default(), Cache::default());
        r.try_push(me(), &a, 1, Probe::No).unwrap();
        assert_eq!(ring.producers[1].owner.load(Ordering::Relaxed), me().stamp(), "the free record first");
        r.try_push(me(), &b, 2, Probe::No).unwrap();
        assert_eq!(b.record[0].load(local::Ordering::Relaxed), 1, "another handle of this thread finds it");
        // A second live thread: the table is full but for the ghost's record.
        let ring = &ring;
        std::thread::scope(|s| {
            s.spawn(move || {
                let (r, c) = (ring.view(), Cache::default());
                assert_eq!(r.try_pop(me(), &c, Probe::No).unwrap(), Some(1));
                r.try_push(me(), &c, 3, Probe::No).unwrap();
                assert_eq!(ring.producers[0].owner.load(Ordering::Relaxed), me().stamp(), "the dead one's");
                assert_eq!(ring.producers[0].pos.load(Ordering::Relaxed), 0);
                // A third thread finds every record live.
                let third = std::thread::scope(|s| {
                    s.spawn(move || ring.view().try_push(me(), &Cache::default(), 4, Probe::No)).join()
                });
                assert!(matches!(third.unwrap(), Err(Push::Failed(4, Error::Overflow { .. }))));
                r.release(&c, me());
            });
        });
        assert_eq!(ring.producers[0].owner.load(Ordering::Relaxed), 0, "given back on release");
        r.release(&a, me());
        assert_eq!(ring.producers[1].owner.load(Ordering::Relaxed), 0);
        assert_eq!(r.try_pop(me(), &a, Probe::No).unwrap(), Some(2));
        assert_eq!(r.try_pop(me(), &a, Probe::No).unwrap(), Some(3));
    }

    /// Position 0 claimed by `claimant` (its record names it), unpublished.
    fn forge_writer(ring: &Ring<u32>, claimant: TaskId) {
        ring.producers[1].owner.store(claimant.stamp(), Ordering::Relaxed);
        ring.producers[1].pos.store(1, Ordering::Relaxed);
        ring.index.enqueue.0.store(1, Ordering::Relaxed);
    }

    #[test]
    fn a_dead_writers_position_is_skipped() {
        let ring = Ring::<u32>::new(2, 2);
        let r = ring.view();
        let c = Cache::default();
        forge_writer(&ring, GHOST);
        r.try_push(me(), &c, 7, Probe::No).unwrap(); // position 1
        assert!(r.head_in_flight() && r.looks_empty() && r.len() == 2);
        assert_eq!(r.try_pop(me(), &c, Probe::No).unwrap(), None, "without probing, a claim just waits");
        assert_eq!(r.try_pop(me(), &c, Probe::Yes).unwrap(), Some(7), "position 0 skipped");
        assert_eq!(ring.index.dequeue.0.load(Ordering::Relaxed), 2);
        // The skipped slot serves the next lap.
        r.try_push(me(), &c, 8, Probe::No).unwrap(); // position 2, slot 0
        r.try_push(me(), &c, 9, Probe::No).unwrap();
        assert_eq!(r.try_pop(me(), &c, Probe::No).unwrap(), Some(8));
        assert_eq!(r.try_pop(me(), &c, Probe::No).unwrap(), Some(9));
        assert_eq!(r.try_pop(me(), &c, Probe::Yes).unwrap(), None);
    }

    #[test]
    fn a_live_writer_is_waited_for_and_a_stale_record_is_not_a_claim() {
        let ring = Ring::<u32>::new(2, 2);
        let r = ring.view();
        let c = Cache::default();
        forge_writer(&ring, me());
        assert_eq!(r.try_pop(me(), &c, Probe::Yes).unwrap(), None, "a live claimant is waited for");
        assert!(r.head_in_flight());
        // The claimant publishes (as write_claimed would).
        // SAFETY: the forged claim is ours to publish; nobody else touches slot 0.
        ring.slots[0].value.with_mut(|p| unsafe { p.write(MaybeUninit::new(5)) });
        ring.slots[0].stamp.store(full(0), Ordering::Release);
        assert_eq!(r.try_pop(me(), &c, Probe::Yes).unwrap(), Some(5));
        // A record naming position 2 while nothing claimed it: empty, not in flight.
        ring.producers[1].pos.store(3, Ordering::Relaxed);
        assert!(!r.head_in_flight());
        assert_eq!(r.try_pop(me(), &c, Probe::Yes).unwrap(), None);
    }

    #[test]
    fn a_dead_readers_slot_is_released() {
        let ring = Ring::<u32>::new(2, 2);
        let r = ring.view();
        let c = Cache::default();
        r.try_push(me(), &c, 1, Probe::No).unwrap();
        r.try_push(me(), &c, 2, Probe::No).unwrap();
        // A ghost consumer claimed position 0 and died holding it.
        ring.consumers[1].owner.store(GHOST.stamp(), Ordering::Relaxed);
        ring.consumers[1].pos.store(1, Ordering::Relaxed);
        ring.index.dequeue.0.store(1, Ordering::Relaxed);
        assert!(matches!(r.try_push(me(), &c, 3, Probe::No), Err(Push::Full(3))));
        assert!(r.looks_full());
        r.try_push(me(), &c, 3, Probe::Yes).unwrap(); // released, position 2
        assert_eq!(r.try_pop(me(), &c, Probe::No).unwrap(), Some(2));
        assert_eq!(r.try_pop(me(), &c, Probe::No).unwrap(), Some(3));
        assert_eq!(r.try_pop(me(), &c, Probe::Yes).unwrap(), None);
        // A live reader's slot is not released.
        r.try_push(me(), &c, 4, Probe::No).unwrap();
        r.try_push(me(), &c, 5, Probe::No).unwrap();
        ring.consumers[1].owner.store(me().stamp(), Ordering::Relaxed);
        ring.consumers[1].pos.store(4, Ordering::Relaxed); // position 3
        ring.index.dequeue.0.store(4, Ordering::Relaxed);
        assert!(matches!(r.try_push(me(), &c, 6, Probe::Yes), Err(Push::Full(6))));
    }

    #[test]
    fn garbage_states_are_corrupt() {
        let ring = Ring::<u32>::new(4, 1);
        let r = ring.view();
        let c = Cache::default();
        ring.slots[0].stamp.store(full(9), Ordering::Relaxed);
        assert!(r.try_pop(me(), &c, Probe::Yes).is_err());
        assert!(matches!(r.try_push(me(), &c, 1, Probe::Yes), Err(Push::Failed(1, _))));
        assert_eq!(ring.producers[0].pos.load(Ordering::Relaxed), 0, "a failed put names no position");
        let ring = Ring::<u32>::new(4, 1);
        let r = ring.view();
        ring.index.enqueue.0.store(1000, Ordering::Relaxed); // 250 laps ahead of every slot
        assert!(r.try_push(me(), &c, 1, Probe::Yes).is_err());
        ring.index.dequeue.0.store(1000, Ordering::Relaxed);
        assert!(r.try_pop(me(), &c, Probe::Yes).is_err());
        // A cached record index out of the table is a guess, not an access.
        c.record[0].store(u32::MAX, local::Ordering::Relaxed);
        assert!(r.try_push(me(), &c, 1, Probe::Yes).is_err());
    }
}
