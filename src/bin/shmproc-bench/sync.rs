//! The `sync` group: `Lock` uncontended, and cross-process ping-pongs of
//! `Event`, `Semaphore` and a `Condition`+`Lock` turn hand-off under each wait
//! strategy, against the raw baselines, in every placement.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};

use shmproc::{Condition, Event, Lock, Semaphore, WaitStrategy};

use crate::kit::{Contender, LINE, Placement, SharedWords, Side};
use crate::report::{RowSpec, Unit};
use crate::{Group, Plan};

/// The group as `main` lists it.
pub(crate) const GROUP: Group = Group { name: "sync", plan, legend: LEGEND };

const LEGEND: &str = "\
sync rows:
  Lock lock+unlock        one thread: `lock()` then drop the guard, in a loop; baseline
                          `std::sync::Mutex` lock+unlock, batches interleaved (SPEC: ≤ 1.5×).
  Event ping-pong         two Events; each side waits for its own, clears it, sets the other's.
  Semaphore ping-pong     two Semaphore(0); each side releases the other's, acquires its own.
  Condition+Lock turn     a turn word guarded by a Condition bound to a Lock; each side: lock,
    hand-off              pass the turn, notify(1), wait_for(the turn is mine), unlock.
  (Block)    every handle sleeps at once: vs raw futex, SPEC ≤ 1.2× in every placement.
  (Adaptive) the default: vs raw futex same_core (≤ 1.2×: the spin must not hurt), vs raw
             spin cross_core (≤ 2×), vs raw spin unpinned for reference.
  (Spin)     for reference: vs raw futex same_core, raw spin elsewhere.
";

fn plan() -> Vec<Plan> {
    let mut plans = vec![lock_uncontended()];
    for primitive in Primitive::ALL {
        for strategy in [WaitStrategy::Block, WaitStrategy::Adaptive, WaitStrategy::Spin] {
            for placement in Placement::ALL {
                plans.push(ping_pong(primitive, strategy, placement));
            }
        }
    }
    plans
}

/// `Lock` lock+unlock against `std::sync::Mutex`, one thread.
fn lock_uncontended() -> Plan {
    let spec = RowSpec {
        group: GROUP.name,
        name: "Lock lock+unlock, uncontended".to_owned(),
        placement: "one_thread",
        unit: Unit::NsPerOp,
        baseline: "std Mutex".to_owned(),
        target: Some(1.5),
    };
    Plan::new(spec, |kit| {
        let lock = Lock::new().map_err(|e| format!("Lock::new: {e}"))?;
        let mutex = std::sync::Mutex::new(());
        // The guards are dropped at once: only the reference goes through
        // `black_box` (copying a whole `Result` through it would time the copy).
        let mut subject = |n| {
            for _ in 0..n {
                drop(black_box(&lock).lock());
            }
        };
        let mut baseline = |n| {
            for _ in 0..n {
                drop(black_box(&mutex).lock());
            }
        };
        Ok(kit.ns_per_op(&mut subject, &mut baseline))
    })
}

/// The primitives measured by ping-pong.
#[derive(Clone, Copy, Debug)]
enum Primitive {
    Event,
    Semaphore,
    Turn,
}

impl Primitive {
    const ALL: [Primitive; 3] = [Primitive::Event, Primitive::Semaphore, Primitive::Turn];

    fn label(self) -> &'static str {
        match self {
            Primitive::Event => "Event ping-pong",
            Primitive::Semaphore => "Semaphore ping-pong",
            Primitive::Turn => "Condition+Lock turn hand-off",
        }
    }

    /// The ping-pong with every handle waiting by `strategy`.
    fn contender(self, strategy: WaitStrategy) -> Contender {
        match self {
            Primitive::Event => Contender::new(self.label(), move || EventSide::pair(strategy)),
            Primitive::Semaphore => Contender::new(self.label(), move || SemaphoreSide::pair(strategy)),
            Primitive::Turn => Contender::new(self.label(), move || TurnSide::pair(strategy)),
        }
    }
}

/// One ping-pong row: the baseline and target follow from the strategy and
/// placement (SPEC §6, see [`LEGEND`]).
fn ping_pong(primitive: Primitive, strategy: WaitStrategy, placement: Placement) -> Plan {
    let adaptive = strategy == WaitStrategy::Adaptive;
    let (baseline, target) = if strategy == WaitStrategy::Block {
        (Contender::raw_futex(), Some(1.2))
    } else if placement == Placement::SameCore {
        (Contender::raw_futex(), adaptive.then_some(1.2))
    } else {
        (Contender::raw_spin(), (adaptive && placement == Placement::CrossCore).then_some(2.0))
    };
    let spec = RowSpec {
        group: GROUP.name,
        name: format!("{} ({strategy:?})", primitive.label()),
        placement: placement.name(),
        unit: Unit::Ns,
        baseline: baseline.name().to_owned(),
        target,
    };
    // Spinning subjects get a spin-floor probe, where two CPUs are involved.
    let floor = strategy != WaitStrategy::Block && placement != Placement::SameCore;
    Plan::new(spec, move |kit| kit.ping_pong(&primitive.contender(strategy), &baseline, placement, floor))
}

/// One side of the Event ping-pong: wait for my event, clear it; set theirs.
#[derive(Debug)]
struct EventSide {
    mine: Event,
    theirs: Event,
}

impl EventSide {
    fn pair(strategy: WaitStrategy) -> shmproc::Result<(Self, Self)> {
        let to_echo = Event::new()?.with_wait_strategy(strategy);
        let to_driver = Event::new()?.with_wait_strategy(strategy);
        let driver = EventSide { mine: to_driver.clone(), theirs: to_echo.clone() };
        Ok((driver, EventSide { mine: to_echo, theirs: to_driver }))
    }
}

impl Side for EventSide {
    fn send(&mut self) -> shmproc::Result<()> {
        self.theirs.set();
        Ok(())
    }

    fn recv(&mut self) -> shmproc::Result<()> {
        self.mine.wait()?;
        // The peer sets it again only after our next `send`: no set is lost.
        self.mine.clear();
        Ok(())
    }
}

/// One side of the Semaphore ping-pong: release theirs, acquire mine.
#[derive(Debug)]
struct SemaphoreSide {
    mine: Semaphore,
    theirs: Semaphore,
}

impl SemaphoreSide {
    fn pair(strategy: WaitStrategy) -> shmproc::Result<(Self, Self)> {
        let to_echo = Semaphore::new(0)?.with_wait_strategy(strategy);
        let to_driver = Semaphore::new(0)?.with_wait_strategy(strategy);
        let driver = SemaphoreSide { mine: to_driver.clone(), theirs: to_echo.clone() };
        Ok((driver, SemaphoreSide { mine: to_echo, theirs: to_driver }))
    }
}

impl Side for SemaphoreSide {
    fn send(&mut self) -> shmproc::Result<()> {
        self.theirs.release()
    }

    fn recv(&mut self) -> shmproc::Result<()> {
        self.mine.acquire();
        Ok(())
    }
}

/// One side of the Condition+Lock hand-off: a turn word (0 = nobody yet, then
/// the id of the side whose turn it is), read and written only under the
/// Condition's Lock, so `Relaxed` suffices (the lock orders it).
#[derive(Debug)]
struct TurnSide {
    cond: Condition,
    turn: SharedWords,
    me: u32,
    peer: u32,
}

impl TurnSide {
    fn pair(strategy: WaitStrategy) -> shmproc::Result<(Self, Self)> {
        let lock = Lock::new()?.with_wait_strategy(strategy);
        let cond = Condition::with_lock(lock)?.with_wait_strategy(strategy);
        let turn = SharedWords::new(LINE)?;
        let side = |me, peer, cond, turn| TurnSide { cond, turn, me, peer };
        Ok((side(1, 2, cond.clone(), turn.clone()), side(2, 1, cond, turn)))
    }

    fn word(&self) -> &AtomicU32 {
        self.turn.u32_at(0)
    }
}

impl Side for TurnSide {
    fn send(&mut self) -> shmproc::Result<()> {
        let guard = self.cond.lock()?;
        self.word().store(self.peer, Ordering::Relaxed);
        guard.notify(1)?;
        Ok(())
    }

    fn recv(&mut self) -> shmproc::Result<()> {
        let mut guard = self.cond.lock()?;
        let (turn, me) = (self.word(), self.me);
        guard.wait_for(|| turn.load(Ordering::Relaxed) == me, None)?;
        Ok(())
    }

    /// Both halves under one acquisition of the lock, as a real user would.
    fn exchange(&mut self) -> shmproc::Result<()> {
        let mut guard = self.cond.lock()?;
        let (turn, me) = (self.word(), self.me);
        turn.store(self.peer, Ordering::Relaxed);
        guard.notify(1)?;
        guard.wait_for(|| turn.load(Ordering::Relaxed) == me, None)?;
        Ok(())
    }
}
