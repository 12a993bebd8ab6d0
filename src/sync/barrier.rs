//! [`Barrier`]: `parties` processes (or threads) meet before going on.
//!
//! The algorithm is Python's `threading.Barrier` (which `multiprocessing`
//! reuses): a phase (`FILLING`, `DRAINING`, `RESETTING`, `BROKEN`) and an
//! arrival count, both changed under an internal [`OwnerLock`] that lives in the
//! same segment, and a sequence word bumped on every phase change that waiters
//! sleep on. New arrivals wait while the previous round drains, so a fast party
//! cannot lap a slow one. If the internal lock's owner dies, the state may be
//! half-updated: the next party to take the lock breaks the barrier.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::owner::{Acquired, OwnerLock};
use super::wait::{self, WaitConfig, WaitTarget, sleep_counted, wake_counted};
use crate::error::{Error, Result};
use crate::loom::{self, AtomicU32, Ordering};
use crate::os::{Deadline, FutexWait, TaskId};
use crate::segment::{Kind, Shared, SharedState};

const FILLING: u32 = 0;
const DRAINING: u32 = 1;
const RESETTING: u32 = 2;
const BROKEN: u32 = 3;

/// Barrier state. `phase` and `count` are read and written under `lock`
/// (`Relaxed`, ordered by the lock). `seq` is bumped (`SeqCst`) after every
/// phase change; a sleeper compares it in the kernel (see `sleep_counted`).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct BarrierState {
    lock: OwnerLock,
    /// `FILLING`, `DRAINING`, `RESETTING` or `BROKEN`; anything else is corrupt.
    phase: AtomicU32,
    /// Parties inside `wait`, `0..=parties`.
    count: AtomicU32,
    /// Parties needed, `>= 1`, fixed at creation.
    parties: AtomicU32,
    /// Bumped on every phase change; the futex word waiters sleep on.
    seq: AtomicU32,
    sleepers: AtomicU32,
    _pad: AtomicU32,
}

// SAFETY: repr(C), atomics only, no pointers; phase, count and parties are
// range-checked on every read.
unsafe impl SharedState for BarrierState {
    const KIND: Kind = Kind::Barrier;
    type Params = u32;
    fn zeroed() -> Self {
        BarrierState {
            lock: OwnerLock::zeroed(),
            phase: AtomicU32::new(FILLING),
            count: AtomicU32::new(0),
            parties: AtomicU32::new(0),
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            _pad: AtomicU32::new(0),
        }
    }
    fn init(&self, parties: u32) {
        self.parties.store(parties, Ordering::Relaxed);
    }
}

/// How long past its deadline a timed party still tries to take the internal
/// lock (held legitimately for microseconds, or while an action runs): a lock
/// word that names a live task, garbage or a stopped peer, cannot hold a timed
/// wait for longer.
const LOCK_GRACE: Duration = Duration::from_millis(100);

fn with_grace(deadline: Option<Deadline>) -> Option<Deadline> {
    deadline.map(|d| d.max(Deadline::after(LOCK_GRACE)))
}

/// The action run by the party that completes a round.
type Action = Arc<dyn Fn() + Send + Sync>;

/// A cross-process barrier (Python's `multiprocessing.Barrier`).
///
/// `wait` returns each party's arrival index, `0..parties`, distinct within a
/// round. A party that times out, an [`abort`](Barrier::abort), or a panicking
/// action breaks the barrier: every waiter, and every later caller until
/// [`reset`](Barrier::reset), gets [`Error::BrokenBarrier`]. The action (if
/// any) belongs to the handle: it runs in the process whose party completes the
/// round, once per round, before anyone is released.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// let runs = Arc::new(AtomicUsize::new(0));
/// let r = runs.clone();
/// let b = shmproc::Barrier::new(2)?.with_action(move || { r.fetch_add(1, Ordering::SeqCst); });
/// let b2 = b.clone();
/// let t = std::thread::spawn(move || b2.wait());
/// let mine = b.wait()?;
/// let theirs = t.join().unwrap()?;
/// assert_eq!(mine + theirs, 1); // indices 0 and 1
/// assert_eq!(runs.load(Ordering::SeqCst), 1);
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    state: Shared<BarrierState>,
    action: Option<Action>,
    timeout: Option<Duration>,
    wait: WaitConfig,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("segment", &self.state)
            .field("parties", &self.state.parties.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The internal lock, held; released on drop.
struct Inner<'a> {
    st: &'a BarrierState,
    me: TaskId,
}

impl Drop for Inner<'_> {
    fn drop(&mut self) {
        self.st.lock.unlock(self.me);
    }
}

impl Inner<'_> {
    fn phase(&self) -> Result<u32> {
        match self.st.phase.load(Ordering::Relaxed) {
            p @ (FILLING | DRAINING | RESETTING | BROKEN) => Ok(p),
            other => Err(Error::corrupt("Barrier", format!("unknown phase {other}"))),
        }
    }

    fn set_phase(&self, phase: u32) {
        self.st.phase.store(phase, Ordering::Relaxed);
        self.notify_all();
    }

    fn notify_all(&self) {
        // SeqCst RMW: see `sleep_counted`.
        self.st.seq.fetch_add(1, Ordering::SeqCst);
        wake_counted(&self.st.seq, &self.st.sleepers, u32::MAX);
    }

    fn count(&self) -> Result<u32> {
        let (c, p) = (self.st.count.load(Ordering::Relaxed), self.st.parties.load(Ordering::Relaxed));
        if c > p {
            return Err(Error::corrupt("Barrier", format!("{c} parties inside a barrier of {p}")));
        }
        Ok(c)
    }
}

impl Barrier {
    fn from_state(state: Shared<BarrierState>) -> Result<Self> {
        if state.parties.load(Ordering::Relaxed) == 0 {
            return Err(Error::corrupt("Barrier", "0 parties"));
        }
        Ok(Barrier { state, action: None, timeout: None, wait: WaitConfig::default() })
    }

    fn check_parties(parties: u32) -> Result<u32> {
        if parties == 0 {
            return Err(Error::InvalidArgument { what: "a barrier needs at least one party" });
        }
        Ok(parties)
    }

    /// A barrier for `parties` parties, in an anonymous segment.
    pub fn new(parties: u32) -> Result<Self> {
        Self::from_state(Shared::anonymous(Self::check_parties(parties)?)?)
    }

    /// A barrier for `parties` parties, in the named segment `name`.
    pub fn create(name: &str, parties: u32) -> Result<Self> {
        Self::from_state(Shared::create(name, Self::check_parties(parties)?)?)
    }

    /// Opens the barrier in the named segment `name`.
    pub fn open(name: &str) -> Result<Self> {
        Self::from_state(Shared::open(name)?)
    }

    super::wait_strategy_accessors!();

    /// Sets the action run when this handle's party completes a round.
    #[must_use]
    pub fn with_action(mut self, action: impl Fn() + Send + Sync + 'static) -> Self {
        self.action = Some(Arc::new(action));
        self
    }

    /// Sets the default timeout of [`Barrier::wait`] (Python's `timeout=`).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        self.state.parties.load(Ordering::Relaxed)
    }

    /// The number of parties waiting now.
    pub fn n_waiting(&self) -> u32 {
        let st = &*self.state;
        match st.phase.load(Ordering::Relaxed) {
            FILLING => st.count.load(Ordering::Relaxed).min(self.parties()),
            _ => 0,
        }
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> bool {
        self.state.phase.load(Ordering::Relaxed) == BROKEN
    }

    /// Waits for the round to fill, with the handle's default timeout; returns
    /// this party's arrival index.
    ///
    /// # Errors
    /// [`Error::BrokenBarrier`] if the barrier is or becomes broken, including
    /// because this wait timed out (which breaks it for everyone).
    pub fn wait(&self) -> Result<u32> {
        self.wait_until(Deadline::from_timeout(self.timeout))
    }

    /// As [`Barrier::wait`] with an explicit timeout.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32> {
        self.wait_until(Some(Deadline::after(timeout)))
    }

    /// Breaks the barrier: current and future waiters get
    /// [`Error::BrokenBarrier`] until [`Barrier::reset`].
    pub fn abort(&self) -> Result<()> {
        let inner = self.enter(None)?;
        inner.set_phase(BROKEN);
        Ok(())
    }

    /// Returns the barrier to its empty state; parties waiting now get
    /// [`Error::BrokenBarrier`].
    pub fn reset(&self) -> Result<()> {
        let inner = self.enter(None)?;
        if inner.count()? > 0 {
            if matches!(inner.phase()?, FILLING | BROKEN) {
                inner.set_phase(RESETTING);
            } else {
                inner.notify_all();
            }
        } else {
            inner.set_phase(FILLING);
        }
        Ok(())
    }

    /// Takes the internal lock. An owner that died inside leaves state we cannot
    /// trust: break the barrier then.
    fn enter(&self, deadline: Option<Deadline>) -> Result<Inner<'_>> {
        let me = loom::current_task();
        let outcome = self.state.lock.lock(me, &self.wait, deadline).ok_or(Error::BrokenBarrier)?;
        let inner = Inner { st: &self.state, me };
        if outcome == Acquired::OwnerDied {
            inner.st.count.store(0, Ordering::Relaxed);
            inner.set_phase(BROKEN);
        }
        Ok(inner)
    }

    /// Releases the internal lock, sleeps until `seq` moves past `seen` or the
    /// deadline, and re-takes the lock. `false` on timeout.
    fn sleep<'a>(&'a self, inner: Inner<'a>, deadline: Option<Deadline>) -> Result<(Inner<'a>, bool)> {
        struct Target<'a>(&'a BarrierState, u32);
        impl WaitTarget for Target<'_> {
            type Output = ();
            fn attempt(&mut self, _probe: bool) -> Option<()> {
                (self.0.seq.load(Ordering::Acquire) != self.1).then_some(())
            }
            fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
                sleep_counted(&self.0.seq, &self.0.sleepers, self.1, until)
            }
        }
        let seen = self.state.seq.load(Ordering::Relaxed);
        drop(inner);
        let woke = wait::wait(&self.wait, deadline, &mut Target(&self.state, seen)).is_some();
        Ok((self.enter(with_grace(deadline))?, woke))
    }

    fn wait_until(&self, deadline: Option<Deadline>) -> Result<u32> {
        let mut inner = self.enter(with_grace(deadline))?;
        // Wait while the previous round drains or a reset completes.
        loop {
            match inner.phase()? {
                FILLING => break,
                BROKEN => return Err(Error::BrokenBarrier),
                _ => {
                    let (again, woke) = self.sleep(inner, deadline)?;
                    inner = again;
                    if !woke && matches!(inner.phase()?, DRAINING | RESETTING) {
                        inner.set_phase(BROKEN);
                        return Err(Error::BrokenBarrier);
                    }
                }
            }
        }
        let parties = self.parties();
        let index = inner.count()?;
        if index >= parties {
            return Err(Error::corrupt("Barrier", format!("{index} parties filling a barrier of {parties}")));
        }
        inner.st.count.store(index + 1, Ordering::Relaxed);
        let (inner, result, panic) = if index + 1 == parties {
            let panic = self.release_round(&inner);
            let result = if panic.is_some() { Err(Error::BrokenBarrier) } else { Ok(()) };
            (inner, result, panic)
        } else {
            let (inner, result) = self.await_round(inner, deadline)?;
            (inner, result, None)
        };
        // Leave (Python's `finally: count -= 1; _exit()`), whatever happened.
        let left = inner.st.count.load(Ordering::Relaxed).saturating_sub(1);
        inner.st.count.store(left, Ordering::Relaxed);
        if left == 0 && matches!(inner.phase(), Ok(DRAINING | RESETTING)) {
            inner.set_phase(FILLING);
        }
        drop(inner);
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
        result.map(|()| index)
    }

    /// The last party: runs the action, then lets the round drain. Returns the
    /// action's panic, having broken the barrier, if it panicked.
    fn release_round(&self, inner: &Inner<'_>) -> Option<Box<dyn std::any::Any + Send>> {
        if let Some(action) = &self.action
            && let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| action()))
        {
            inner.set_phase(BROKEN);
            return Some(payload);
        }
        inner.set_phase(DRAINING);
        None
    }

    /// A party that is not the last: sleeps until the round drains (`Ok`), or
    /// breaks (`Err`); a timeout breaks it for everyone.
    fn await_round<'a>(&'a self, mut inner: Inner<'a>, deadline: Option<Deadline>) -> Result<(Inner<'a>, Result<()>)> {
        loop {
            match inner.phase() {
                Ok(FILLING) => {}
                Ok(DRAINING) => return Ok((inner, Ok(()))),
                Ok(_) => return Ok((inner, Err(Error::BrokenBarrier))),
                Err(e) => return Ok((inner, Err(e))),
            }
            let (again, woke) = self.sleep(inner, deadline)?;
            inner = again;
            if !woke && inner.phase().is_ok_and(|p| p == FILLING) {
                inner.set_phase(BROKEN);
                return Ok((inner, Err(Error::BrokenBarrier)));
            }
        }
    }
}

/// A barrier travels with its default timeout; its action stays behind (a
/// closure cannot cross processes), so a child's handle has none.
impl serde::Serialize for Barrier {
    fn serialize<Z: serde::Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
        (&self.state, self.timeout).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Barrier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let (state, timeout): (Shared<BarrierState>, Option<Duration>) = serde::Deserialize::deserialize(d)?;
        let mut b = Barrier::from_state(state).map_err(D::Error::custom)?;
        b.timeout = timeout;
        Ok(b)
    }
}
