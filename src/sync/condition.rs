//! [`Condition`]: a condition variable bound to a [`Lock`] or [`RLock`].
//!
//! # Design
//!
//! Each waiter claims a *slot* in the segment: its own futex word, a ticket
//! (arrival order) and its stamp. `notify(n)` marks the `n` oldest waiting slots
//! `NOTIFIED` and wakes each of them on its own word. So exactly the waiters
//! that were waiting when `notify` ran are woken, oldest first, with no
//! thundering herd, and a waiter that arrives later cannot steal a notification
//! (Python's semantics, which a shared sequence counter would only approximate).
//!
//! Every slot transition but one happens under the condition's lock:
//! `FREE -> WAITING` (waiter, before releasing the lock), `WAITING|ASLEEP ->
//! NOTIFIED` (notifier), `* -> FREE` (waiter, after re-acquiring). The exception
//! is `WAITING -> ASLEEP`, a CAS by the waiter right before it sleeps on the
//! slot; the notifier's swap to `NOTIFIED` returns the old state, and wakes the
//! word only if it was `ASLEEP`, so a notify either sees the sleeper or makes
//! its CAS fail (no lost wake-up, no needless system call).
//!
//! There are [`SLOTS`] slots: more simultaneous waiters than that is
//! [`Error::Overflow`] (after reclaiming slots of dead waiters). A waiter killed
//! while waiting keeps its slot until then and can absorb one `notify`.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::owner::Acquired;
use super::wait::{self, WaitConfig, WaitTarget};
use super::{Lock, LockError, LockGuard, LockResult, RLock, RLockGuard};
use crate::error::{Error, Result};
use crate::loom::{self, AtomicU32, AtomicU64, Ordering};
use crate::os::{Deadline, FutexWait, TaskId};
use crate::segment::{Kind, Shared, SharedState};

/// Simultaneous waiters per condition.
#[cfg(not(loom))]
pub(crate) const SLOTS: usize = 64;
#[cfg(loom)]
pub(crate) const SLOTS: usize = 2;

// Notified slots are remembered in a u64 bitmask until the lock is released.
const _: () = assert!(SLOTS <= 64);

const FREE: u32 = 0;
const WAITING: u32 = 1;
const ASLEEP: u32 = 2;
const NOTIFIED: u32 = 3;

/// One waiter's place; a cache line of its own, so that a notifier writing one
/// slot does not steal the line another waiter spins on.
#[repr(C, align(64))]
#[derive(Debug)]
struct Slot {
    /// `FREE`, `WAITING`, `ASLEEP` or `NOTIFIED`; the waiter's futex word.
    state: AtomicU32,
    _pad: AtomicU32,
    /// Arrival order; meaningful while not `FREE`.
    ticket: AtomicU64,
    /// The waiter's `TaskId::stamp`, to reclaim slots of dead waiters.
    waiter: AtomicU64,
}

/// Bits of `occupied` that name a slot.
const ALL_SLOTS: u64 = if SLOTS == 64 { u64::MAX } else { (1 << SLOTS) - 1 };

/// Condition state. Written under the condition's lock except `Slot::state`'s
/// `WAITING -> ASLEEP` (see the module docs). `Relaxed` accesses under the lock
/// are ordered by the lock's Acquire/Release; the `NOTIFIED` swap is `Release`
/// and pairs with the waiter's `Acquire` load of its slot.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ConditionState {
    next_ticket: AtomicU64,
    /// Bit `i` set while slot `i` is not `FREE` (so claim and notify touch only
    /// the slots in use). Bits outside [`ALL_SLOTS`] are ignored.
    occupied: AtomicU64,
    slots: [Slot; SLOTS],
}

// SAFETY: repr(C), atomics only, no pointers, align 64; unknown slot states are
// errors, tickets are only compared and `occupied` is masked.
unsafe impl SharedState for ConditionState {
    const KIND: Kind = Kind::Condition;
    type Params = ();
    fn zeroed() -> Self {
        ConditionState {
            next_ticket: AtomicU64::new(0),
            occupied: AtomicU64::new(0),
            slots: std::array::from_fn(|_| Slot {
                state: AtomicU32::new(FREE),
                _pad: AtomicU32::new(0),
                ticket: AtomicU64::new(0),
                waiter: AtomicU64::new(0),
            }),
        }
    }
    fn init(&self, (): ()) {}
}

fn bad_slot(state: u32) -> Error {
    Error::corrupt("Condition", format!("waiter slot in unknown state {state}"))
}

/// The indices of the set bits of `bits`, lowest first.
fn bits(mut bits: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (bits != 0).then(|| {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            i
        })
    })
}

impl ConditionState {
    fn occupied(&self) -> u64 {
        self.occupied.load(Ordering::Relaxed) & ALL_SLOTS
    }

    /// Claims a free slot for `me` (under the lock); returns its index.
    fn claim(&self, me: TaskId) -> Result<usize> {
        let mut occupied = self.occupied();
        if occupied == ALL_SLOTS {
            self.reclaim_dead()?;
            occupied = self.occupied();
        }
        let i = (!occupied & ALL_SLOTS).trailing_zeros() as usize;
        let Some(free) = self.slots.get(i) else {
            return Err(Error::Overflow { what: "Condition waiters (64 slots)" });
        };
        self.occupied.store(occupied | (1 << i), Ordering::Relaxed);
        let ticket = self.next_ticket.load(Ordering::Relaxed);
        self.next_ticket.store(ticket.wrapping_add(1), Ordering::Relaxed);
        free.ticket.store(ticket, Ordering::Relaxed);
        free.waiter.store(me.stamp(), Ordering::Relaxed);
        free.state.store(WAITING, Ordering::Relaxed);
        Ok(i)
    }

    /// Frees slot `i` (under the lock) and returns the state it was in.
    fn release(&self, i: usize) -> u32 {
        self.occupied.fetch_and(!(1 << i), Ordering::Relaxed);
        self.slots[i].state.swap(FREE, Ordering::Relaxed)
    }

    /// Frees the slots of waiters that died while waiting (under the lock).
    fn reclaim_dead(&self) -> Result<()> {
        for i in bits(self.occupied()) {
            let s = &self.slots[i];
            match s.state.load(Ordering::Relaxed) {
                WAITING | ASLEEP | NOTIFIED => {
                    if !loom::task_alive(TaskId::from_stamp(s.waiter.load(Ordering::Relaxed))) {
                        self.release(i);
                    }
                }
                FREE => {
                    self.release(i);
                }
                other => return Err(bad_slot(other)),
            }
        }
        Ok(())
    }

    /// Marks the `n` oldest waiters `NOTIFIED` (under the lock) and returns how
    /// many. Slots whose waiter sleeps are added to `wake` (a bit per slot) and
    /// woken by the caller once it has released the lock: a waiter woken while
    /// the notifier still holds the lock would only block again on the lock.
    fn notify(&self, n: usize, wake: &mut u64) -> Result<usize> {
        let occupied = self.occupied();
        let mut waiting = 0usize;
        for i in bits(occupied) {
            match self.slots[i].state.load(Ordering::Relaxed) {
                WAITING | ASLEEP => waiting += 1,
                FREE | NOTIFIED => {}
                other => return Err(bad_slot(other)),
            }
        }
        let count = waiting.min(n);
        for _ in 0..count {
            // The oldest slot still waiting (no allocation, no sort: n is
            // usually 1, and there are at most 64 slots).
            let Some((i, s)) = bits(occupied)
                .map(|i| (i, &self.slots[i]))
                .filter(|(_, s)| matches!(s.state.load(Ordering::Relaxed), WAITING | ASLEEP))
                .min_by_key(|(_, s)| s.ticket.load(Ordering::Relaxed))
            else {
                break;
            };
            // Release: pairs with the waiter's Acquire load in `attempt`.
            if s.state.swap(NOTIFIED, Ordering::Release) == ASLEEP {
                *wake |= 1 << i;
            }
        }
        Ok(count)
    }

    /// Wakes the slots marked in `wake` (see [`ConditionState::notify`]). A slot
    /// that meanwhile went to another waiter gets a spurious wake-up, which its
    /// wait loop absorbs.
    fn wake(&self, wake: u64) {
        for i in bits(wake & ALL_SLOTS) {
            loom::futex_wake(&self.slots[i].state, 1);
        }
    }
}

/// The lock a [`Condition`] is bound to.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum CondLock {
    /// A non-recursive lock.
    Lock(Lock),
    /// A recursive lock (Python's default for `Condition`).
    RLock(RLock),
}

impl From<Lock> for CondLock {
    fn from(l: Lock) -> Self {
        CondLock::Lock(l)
    }
}

impl From<RLock> for CondLock {
    fn from(l: RLock) -> Self {
        CondLock::RLock(l)
    }
}

/// A cross-process condition variable (Python's `multiprocessing.Condition`).
///
/// Waiting and notifying happen through the [`ConditionGuard`] that
/// [`Condition::lock`] returns, so the lock is always held, as Python requires.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let cond = shmproc::Condition::new()?; // bound to a new RLock
/// let mut g = cond.lock()?;
/// assert_eq!(g.notify_all()?, 0); // nobody waits
/// assert!(!g.wait_timeout(Duration::from_millis(1))?); // times out, lock held again
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    state: Shared<ConditionState>,
    lock: CondLock,
    wait: WaitConfig,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition").field("segment", &self.state).field("lock", &self.lock).finish_non_exhaustive()
    }
}

/// Name of the lock segment that [`Condition::create`] makes beside `name`.
fn lock_name(name: &str) -> String {
    format!("{name}.lock")
}

impl Condition {
    fn from_parts(state: Shared<ConditionState>, lock: CondLock) -> Self {
        Condition { state, lock, wait: WaitConfig::default() }
    }

    /// A condition bound to a new [`RLock`], both in anonymous segments.
    pub fn new() -> Result<Self> {
        Self::with_lock(RLock::new()?)
    }

    /// A condition bound to `lock`, in an anonymous segment.
    pub fn with_lock(lock: impl Into<CondLock>) -> Result<Self> {
        Ok(Self::from_parts(Shared::anonymous(())?, lock.into()))
    }

    /// A condition in the named segment `name`, bound to a new [`RLock`] named
    /// `"{name}.lock"`.
    pub fn create(name: &str) -> Result<Self> {
        let lock = RLock::create(&lock_name(name))?;
        Self::create_with_lock(name, lock)
    }

    /// Opens the condition `name` and its lock `"{name}.lock"` (as made by
    /// [`Condition::create`]).
    pub fn open(name: &str) -> Result<Self> {
        let lock = RLock::open(&lock_name(name))?;
        Self::open_with_lock(name, lock)
    }

    /// A condition in the named segment `name`, bound to `lock`.
    pub fn create_with_lock(name: &str, lock: impl Into<CondLock>) -> Result<Self> {
        Ok(Self::from_parts(Shared::create(name, ())?, lock.into()))
    }

    /// Opens the condition `name`, binding it to `lock` (which every process
    /// using the condition must also use).
    pub fn open_with_lock(name: &str, lock: impl Into<CondLock>) -> Result<Self> {
        Ok(Self::from_parts(Shared::open(name)?, lock.into()))
    }

    super::wait_strategy_accessors!();

    /// The lock this condition is bound to.
    pub fn bound_lock(&self) -> &CondLock {
        &self.lock
    }

    /// Acquires the bound lock.
    ///
    /// # Errors
    /// As [`Lock::lock`] / [`RLock::lock`].
    pub fn lock(&self) -> LockResult<ConditionGuard<'_>> {
        self.lock_until(None)
    }

    /// Acquires the bound lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<ConditionGuard<'_>> {
        self.lock_until(Some(Deadline::after(timeout)))
    }

    fn lock_until(&self, deadline: Option<Deadline>) -> LockResult<ConditionGuard<'_>> {
        fn wrap<'a, G>(cond: &'a Condition, r: LockResult<G>, f: fn(G) -> Held<'a>) -> LockResult<ConditionGuard<'a>> {
            let me = loom::current_task();
            let mk = |g| ConditionGuard { cond, held: Some(f(g)), me, wake: Cell::new(0), _not_send: PhantomData };
            match r {
                Ok(g) => Ok(mk(g)),
                Err(LockError::OwnerDied(g)) => Err(LockError::OwnerDied(mk(g))),
                Err(LockError::Failed(e)) => Err(LockError::Failed(e)),
            }
        }
        match &self.lock {
            CondLock::Lock(l) => wrap(self, l.lock_until(deadline), Held::Lock),
            CondLock::RLock(l) => wrap(self, l.lock_until(deadline), Held::RLock),
        }
    }
}

enum Held<'a> {
    Lock(LockGuard<'a>),
    RLock(RLockGuard<'a>),
}

/// The bound lock of a [`Condition`], held; waits and notifies go through it.
/// Not `Send`. Dropping it releases (one level of) the lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    /// Keeps the lock held; `None` only inside `drop`.
    held: Option<Held<'a>>,
    me: TaskId,
    /// Slots notified while we hold the lock, to wake once it is released.
    wake: Cell<u64>,
    _not_send: PhantomData<*const ()>,
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        drop(self.held.take()); // releases (one level of) the lock
        self.cond.state.wake(self.wake.take());
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard").field("owner", &self.me.tid).finish()
    }
}

impl ConditionGuard<'_> {
    /// Releases the lock, waits to be notified, re-acquires the lock.
    ///
    /// # Errors
    /// [`Error::OwnerDied`] if, while re-acquiring, the lock's previous owner
    /// turned out dead: the lock is held again (this guard stays valid), but
    /// the data it guards may be inconsistent. [`Error::Overflow`] with more
    /// than 64 simultaneous waiters; [`Error::Corrupt`] on garbage state.
    pub fn wait(&mut self) -> Result<()> {
        self.wait_until(None).map(|_| ())
    }

    /// As [`ConditionGuard::wait`], for at most `timeout`: `Ok(false)` if it was
    /// not notified in time (the lock is held again either way).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<bool> {
        self.wait_until(Some(Deadline::after(timeout)))
    }

    /// Waits until `predicate` holds, re-checking after every wake-up; with a
    /// timeout, gives up when it runs out. Returns the predicate's last value
    /// (Python's `wait_for`).
    pub fn wait_for(&mut self, mut predicate: impl FnMut() -> bool, timeout: Option<Duration>) -> Result<bool> {
        let deadline = Deadline::from_timeout(timeout);
        loop {
            if predicate() {
                return Ok(true);
            }
            if deadline.is_some_and(Deadline::has_passed) {
                return Ok(false);
            }
            self.wait_until(deadline)?;
        }
    }

    /// Wakes up to `n` waiters (the longest-waiting first); returns how many.
    ///
    /// The woken waiters run once this guard releases the lock (when it drops,
    /// or when it waits).
    pub fn notify(&self, n: usize) -> Result<usize> {
        let mut wake = self.wake.get();
        let r = self.cond.state.notify(n, &mut wake);
        self.wake.set(wake);
        r
    }

    /// Wakes every waiter; returns how many.
    pub fn notify_all(&self) -> Result<usize> {
        self.notify(usize::MAX)
    }

    fn held(&self) -> &Held<'_> {
        self.held.as_ref().expect("a live guard holds its lock")
    }

    fn wait_until(&mut self, deadline: Option<Deadline>) -> Result<bool> {
        struct Target<'a>(&'a Slot);
        impl WaitTarget for Target<'_> {
            type Output = ();
            fn attempt(&mut self, _probe: bool) -> Option<()> {
                // Acquire: pairs with the notifier's Release swap.
                (self.0.state.load(Ordering::Acquire) == NOTIFIED).then_some(())
            }
            fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
                let st = &self.0.state;
                match st.compare_exchange(WAITING, ASLEEP, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) | Err(ASLEEP) => loom::futex_wait(st, ASLEEP, until),
                    Err(_) => FutexWait::Woken, // notified (or scribbled): re-check
                }
            }
        }
        let state = &self.cond.state;
        let index = state.claim(self.me)?;
        let slot = &state.slots[index];
        let me = self.me;
        let depth = match self.held() {
            Held::Lock(g) => {
                g.lock().state.lock.unlock(me);
                1
            }
            Held::RLock(g) => match g.rlock().release_all(me) {
                Ok(depth) => depth,
                Err(e) => {
                    state.release(index);
                    return Err(e);
                }
            },
        };
        state.wake(self.wake.take());
        wait::wait(&self.cond.wait, deadline, &mut Target(slot));
        let outcome = match self.held() {
            Held::Lock(g) => {
                let l = g.lock();
                l.state.lock.lock(me, &self.cond.wait, None)
            }
            Held::RLock(g) => g.rlock().restore(me, depth, None),
        };
        let notified = match state.release(index) {
            NOTIFIED => true,
            WAITING | ASLEEP => false,
            other => return Err(bad_slot(other)),
        };
        match outcome {
            Some(Acquired::Clean) => Ok(notified),
            Some(Acquired::OwnerDied) => Err(Error::OwnerDied),
            None => unreachable!("an untimed re-acquire cannot time out"),
        }
    }
}

impl serde::Serialize for Condition {
    fn serialize<Z: serde::Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        (&self.state, &self.lock).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (state, lock) = serde::Deserialize::deserialize(d)?;
        Ok(Condition::from_parts(state, lock))
    }
}
