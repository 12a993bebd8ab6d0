//! The crash matrix (SPEC §4): for each type and blocking operation, a
//! participant is killed with SIGKILL at a random point, over many runs, and
//! the survivors' invariants are checked. Every run's outcome is counted, and
//! the table of type × operation × outcomes is printed at the end (straight
//! to stderr, so that `cargo test` shows it) and, when `SHMPROC_CRASH_TABLE`
//! names a file, written there as Markdown (ARCHITECTURE.md keeps a copy).
//!
//! Every victim is a forked child (`common::fork_child`); objects are
//! anonymous, so a killed process leaves nothing in `/dev/shm`. Each row
//! runs under its own watchdog: a hang aborts the binary naming the row.
//! The dedicated crash tests of each type (in `tests/`: queue, `object_queue`,
//! pipe, pool, manager, lock, process) go deeper; this file runs one row per
//! type and operation, the same way for all.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{Child, Watchdog, XorShift, fork_child};
use shmproc::{
    Array, Barrier, BoundedSemaphore, Condition, Error, Event, GetError, JoinableQueue, Listener, Lock, LockError,
    Manager, ObjectQueue, Pool, Process, Queue, RLock, Semaphore, SharedDict, SpscQueue, StartMethod, Value, client,
    pipe, pipe_with_capacity,
};

/// How long a survivor waits for anything before the row fails.
const PATIENCE: Duration = Duration::from_secs(5);

/// The longest kill-to-recovery a lock row accepts (SPEC §4 says 100 ms;
/// probes come every 20 ms, and the margin is for a loaded debug build).
const RECOVERY_BOUND: Duration = Duration::from_secs(1);

/// One row's tally.
struct Row {
    ty: &'static str,
    op: &'static str,
    dies: &'static str,
    invariant: &'static str,
    runs: u32,
    outcomes: BTreeMap<&'static str, u32>,
    /// Kill to recovery (where the row has one).
    recovery: Vec<Duration>,
}

impl Row {
    fn new(ty: &'static str, op: &'static str, dies: &'static str, invariant: &'static str) -> Row {
        Row { ty, op, dies, invariant, runs: 0, outcomes: BTreeMap::new(), recovery: Vec::new() }
    }

    fn count(&mut self, outcome: &'static str) {
        self.runs += 1;
        *self.outcomes.entry(outcome).or_default() += 1;
    }

    fn cells(&self) -> [String; 6] {
        let outcomes = self.outcomes.iter().map(|(o, n)| format!("{o} ×{n}")).collect::<Vec<_>>().join(", ");
        let recovery = if self.recovery.is_empty() {
            "—".to_owned()
        } else {
            let mut r = self.recovery.clone();
            r.sort();
            format!("{:.1} / {:.1} ms", ms(r[r.len() / 2]), ms(r[r.len() - 1]))
        };
        [self.ty.to_owned(), self.op.to_owned(), self.dies.to_owned(), self.runs.to_string(), outcomes, recovery]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Kills `victim` with SIGKILL and reaps it; the kill must land (a victim
/// that exited on its own is a broken row).
fn kill(victim: &mut Child) {
    assert_eq!(victim.kill(), -libc::SIGKILL, "the victim was not running: {}", victim.describe());
}

/// A random pause of 0 to `max_us` microseconds: where in its loop the
/// victim is when the kill comes.
fn pause(rng: &mut XorShift, max_us: u64) {
    std::thread::sleep(Duration::from_micros(rng.next_u64() % (max_us + 1)));
}

/// A forked child that sets `started` and then runs `step` for ever: the
/// victim of a kill at a random point of its loop.
fn looping(started: &Event, mut step: impl FnMut() + 'static) -> Child {
    let started = started.clone();
    let parent = std::process::id();
    fork_child(move || {
        started.set();
        for i in 0u64.. {
            step();
            // Gone with this process (a watchdog's abort leaves no victim
            // looping for ever).
            // SAFETY: getppid has no preconditions.
            if i % 64 == 0 && unsafe { libc::getppid() } as u32 != parent {
                break;
            }
        }
        0
    })
}

/// Kills `victim` at a random point once it has `started`.
fn kill_running(victim: &mut Child, started: &Event, rng: &mut XorShift) {
    assert!(started.wait_timeout(PATIENCE).unwrap(), "the victim never started: {}", victim.describe());
    pause(rng, 2000);
    kill(victim);
}

/// Waits until `ready` is set by a child (it is about to block), then a
/// little more so that it does block.
fn when_ready(ready: &Event, what: &str) {
    assert!(ready.wait_timeout(PATIENCE).unwrap(), "{what}: the child never got ready");
    std::thread::sleep(Duration::from_millis(5));
}

/// A forked child that runs `f` and exits 0 if it returned true, 1 if false.
fn child(f: impl FnOnce() -> bool) -> Child {
    fork_child(move || i32::from(!f()))
}

/// Forks two children, one after the other, that each run `sleep`: it sets
/// the event it is given just before it blocks (in a lock, a wait, an
/// acquire), and returns whether it was served. Each is let block before the
/// next starts. The first is a row's victim, the second its survivor.
fn two_sleepers(what: &str, sleep: impl Fn(&Event) -> bool + Clone + 'static) -> (Child, Child) {
    let ready = Event::new().unwrap();
    let start = || {
        let (sleep, r) = (sleep.clone(), ready.clone());
        let c = child(move || sleep(&r));
        when_ready(&ready, what);
        ready.clear();
        c
    };
    (start(), start())
}

/// The guard of a lock taken, whether or not its previous owner died.
fn taken<G>(r: shmproc::LockResult<G>) -> G {
    match r {
        Ok(g) | Err(LockError::OwnerDied(g)) => g,
        Err(LockError::Failed(e)) => panic!("lock: {e}"),
    }
}

/// Waits for `c` to exit 0 within `PATIENCE`.
fn served(c: &mut Child, what: &str) {
    let code = c.wait_timeout(PATIENCE);
    assert_eq!(code, Some(0), "{what}: {}", c.describe());
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

fn lock_holder(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Lock",
        "lock / unlock, in a loop",
        "a user, anywhere in its loop",
        "the next lock() gets it (OwnerDied if the victim held it); clean after",
    );
    for _ in 0..12 {
        let (lock, started) = (Lock::new().unwrap(), Event::new().unwrap());
        let l = lock.clone();
        let mut victim = looping(&started, move || drop(l.lock()));
        kill_running(&mut victim, &started, rng);
        let t = Instant::now();
        let outcome = match lock.lock_timeout(PATIENCE) {
            Ok(g) => {
                drop(g);
                "free"
            }
            Err(LockError::OwnerDied(g)) => {
                drop(g);
                row.recovery.push(t.elapsed());
                "owner died"
            }
            Err(LockError::Failed(e)) => panic!("lock after the kill: {e}"),
        };
        drop(lock.try_lock().expect("clean after"));
        row.count(outcome);
    }
    row
}

fn lock_waiter(_: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Lock",
        "lock (asleep, waiting)",
        "one of two waiters",
        "the other waiter gets the lock when it is released",
    );
    for _ in 0..6 {
        let lock = Lock::new().unwrap();
        let g = lock.lock().unwrap();
        let l = lock.clone();
        let (mut victim, mut other) = two_sleepers("lock waiter", move |ready| {
            ready.set();
            l.lock_timeout(PATIENCE).is_ok()
        });
        kill(&mut victim);
        drop(g);
        served(&mut other, "the surviving waiter");
        row.count("other waiter served");
    }
    row
}

fn rlock_holder(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "RLock",
        "acquire to depth 1–3, release, in a loop",
        "the user",
        "the next acquire gets it at depth 1 (OwnerDied if it was held)",
    );
    for run in 0..10 {
        let (rlock, started) = (RLock::new().unwrap(), Event::new().unwrap());
        let r = rlock.clone();
        let depth = 1 + run % 3;
        let mut victim = looping(&started, move || {
            for _ in 0..depth {
                r.acquire(true, None).unwrap();
            }
            for _ in 0..depth {
                r.release().unwrap();
            }
        });
        kill_running(&mut victim, &started, rng);
        let t = Instant::now();
        let outcome = match rlock.lock_timeout(PATIENCE) {
            Ok(g) => {
                assert_eq!(rlock.depth(), 1);
                drop(g);
                "free"
            }
            Err(LockError::OwnerDied(g)) => {
                row.recovery.push(t.elapsed());
                assert_eq!(rlock.depth(), 1, "depth after a takeover");
                drop(g);
                "owner died"
            }
            Err(LockError::Failed(e)) => panic!("rlock after the kill: {e}"),
        };
        assert_eq!(rlock.depth(), 0);
        row.count(outcome);
    }
    row
}

fn semaphore_user(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Semaphore(1)",
        "acquire / release, in a loop",
        "the user",
        "the value never exceeds 1; a slot held at death stays taken (documented)",
    );
    for _ in 0..10 {
        let (sem, started) = (Semaphore::new(1).unwrap(), Event::new().unwrap());
        let s = sem.clone();
        let mut victim = looping(&started, move || {
            s.acquire();
            s.release().unwrap();
        });
        kill_running(&mut victim, &started, rng);
        assert!(sem.get_value() <= 1, "value {}", sem.get_value());
        let outcome = if sem.acquire_timeout(Duration::from_millis(100)) {
            sem.release().unwrap();
            "slot free"
        } else {
            "slot lost with its holder"
        };
        row.count(outcome);
    }
    row
}

fn semaphore_sleeper(_: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Semaphore(0), BoundedSemaphore(1)",
        "acquire (asleep)",
        "one of two sleepers",
        "a release wakes the other; a bounded one refuses a release past its bound",
    );
    for run in 0..8 {
        let bounded = run % 2 == 1;
        let (sem, bsem) = (Semaphore::new(0).unwrap(), BoundedSemaphore::new(1).unwrap());
        if bounded {
            bsem.acquire();
        }
        let (s, b) = (sem.clone(), bsem.clone());
        let (victim, survivor) = two_sleepers("sleeper", move |ready| {
            ready.set();
            if bounded { b.acquire_timeout(PATIENCE) } else { s.acquire_timeout(PATIENCE) }
        });
        let mut sleepers = [victim, survivor];
        kill(&mut sleepers[0]);
        if bounded {
            bsem.release().unwrap();
            served(&mut sleepers[1], "the surviving sleeper");
            bsem.release().unwrap();
            assert!(bsem.release().is_err(), "a release past the bound");
        } else {
            sem.release().unwrap();
            served(&mut sleepers[1], "the surviving sleeper");
        }
        row.count("other sleeper served");
    }
    row
}

fn event_waiter(_: &mut XorShift) -> Row {
    let mut row = Row::new("Event", "wait (asleep)", "one of two waiters", "set() wakes the other");
    for _ in 0..6 {
        let event = Event::new().unwrap();
        let e = event.clone();
        let (victim, survivor) = two_sleepers("event waiter", move |ready| {
            ready.set();
            e.wait_timeout(PATIENCE).unwrap()
        });
        let mut waiters = [victim, survivor];
        kill(&mut waiters[0]);
        event.set();
        served(&mut waiters[1], "the surviving waiter");
        row.count("other waiter woken");
    }
    row
}

fn event_setter(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Event",
        "set, after a random delay",
        "the setter",
        "a timed wait returns true (set before death) or false, never hangs",
    );
    for _ in 0..10 {
        let (event, started) = (Event::new().unwrap(), Event::new().unwrap());
        let e = event.clone();
        let delay = rng.next_u64() % 2000;
        let mut victim = looping(&started, move || {
            std::thread::sleep(Duration::from_micros(delay));
            e.set();
            std::thread::sleep(Duration::from_secs(3600));
        });
        kill_running(&mut victim, &started, rng);
        let outcome = if event.wait_timeout(Duration::from_millis(20)).unwrap() { "set" } else { "never set" };
        row.count(outcome);
    }
    row
}

fn condition_waiter(_: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Condition",
        "wait (asleep)",
        "one of two waiters",
        "the other is woken after at most two notify(1) (a dead waiter's slot absorbs at most one)",
    );
    for _ in 0..6 {
        let cond = Condition::new().unwrap();
        let c = cond.clone();
        let (victim, survivor) = two_sleepers("condition waiter", move |ready| {
            let mut g = c.lock().unwrap();
            ready.set();
            g.wait_timeout(PATIENCE).unwrap()
        });
        let mut waiters = [victim, survivor];
        kill(&mut waiters[0]);
        let notify = || taken(cond.lock()).notify(1).unwrap();
        notify();
        // The dead waiter's slot may have taken that one: a second notify
        // must wake the survivor.
        let first = waiters[1].wait_timeout(Duration::from_millis(300)).is_some();
        if !first {
            notify();
        }
        assert_eq!(waiters[1].wait_timeout(PATIENCE), Some(0), "{}", waiters[1].describe());
        let notifies = if first { 1 } else { 2 };
        row.count(if notifies == 1 { "woken by the first notify" } else { "woken by the second notify" });
    }
    row
}

fn condition_notifier(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Condition",
        "lock, notify_all, unlock, in a loop",
        "the notifier",
        "the next lock() gets the condition's lock (OwnerDied if it was held)",
    );
    for _ in 0..10 {
        let (cond, started) = (Condition::new().unwrap(), Event::new().unwrap());
        let c = cond.clone();
        let mut victim = looping(&started, move || {
            let g = taken(c.lock());
            g.notify_all().unwrap();
        });
        kill_running(&mut victim, &started, rng);
        let t = Instant::now();
        let outcome = match cond.lock_timeout(PATIENCE) {
            Ok(_) => "free",
            Err(LockError::OwnerDied(_)) => {
                row.recovery.push(t.elapsed());
                "owner died"
            }
            Err(LockError::Failed(e)) => panic!("condition lock after the kill: {e}"),
        };
        row.count(outcome);
    }
    row
}

fn condition_all_slots(_: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Condition",
        "wait, with all 64 slots taken",
        "all 64 waiters, asleep",
        "a 65th waiter gets a slot (the dead waiters' are reclaimed, no Overflow), and one notify(1) wakes it",
    );
    for _ in 0..2 {
        let (cond, asleep) = (Condition::new().unwrap(), Semaphore::new(0).unwrap());
        let mut waiters: Vec<Child> = (0..64)
            .map(|_| {
                let (c, a) = (cond.clone(), asleep.clone());
                child(move || {
                    let mut g = c.lock().unwrap();
                    a.release().unwrap();
                    g.wait_timeout(Duration::from_secs(60)).unwrap()
                })
            })
            .collect();
        for _ in 0..64 {
            assert!(asleep.acquire_timeout(PATIENCE), "a waiter never got to its wait");
        }
        // Each said so holding the lock, which it lets go only in its wait,
        // once it has its slot: when we hold the lock, all 64 wait.
        drop(taken(cond.lock()));
        for w in &mut waiters {
            kill(w);
        }
        let ready = Event::new().unwrap();
        let (c, r) = (cond.clone(), ready.clone());
        let mut survivor = child(move || {
            let mut g = c.lock().unwrap();
            r.set();
            g.wait_timeout(PATIENCE).unwrap()
        });
        when_ready(&ready, "the 65th waiter");
        assert_eq!(taken(cond.lock()).notify(1).unwrap(), 1, "one waiter (the dead ones' slots are free)");
        served(&mut survivor, "the 65th waiter");
        row.count("its slot reclaimed, woken by one notify(1)");
    }
    row
}

fn array_holder(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Array<i64>(16), Value<i64>",
        "lock, write every element, unlock, in a loop",
        "the writer",
        "the next lock() gets it (OwnerDied if it was held); a whole write is seen whole, and a write cut by the death leaves only its old and new values",
    );
    for run in 0..10 {
        let started = Event::new().unwrap();
        let t = Instant::now();
        let outcome = if run % 2 == 0 {
            let array = Array::<i64>::new(16).unwrap();
            let a = array.clone();
            let mut k = 0;
            let mut victim = looping(&started, move || {
                let g = taken(a.lock());
                k += 1;
                for i in 0..16 {
                    g.store(i, k);
                }
            });
            kill_running(&mut victim, &started, rng);
            let (g, died) = match array.lock_timeout(PATIENCE) {
                Ok(g) => (g, false),
                Err(LockError::OwnerDied(g)) => (g, true),
                Err(LockError::Failed(e)) => panic!("array lock after the kill: {e}"),
            };
            let values = g.to_vec();
            let (lo, hi) = (values.iter().min().copied().unwrap(), values.iter().max().copied().unwrap());
            if died {
                assert!(hi - lo <= 1 && values.windows(2).all(|w| w[0] >= w[1]), "a cut write: {values:?}");
                row.recovery.push(t.elapsed());
                "Array: owner died"
            } else {
                assert_eq!(lo, hi, "a whole write seen cut: {values:?}");
                "Array: free, whole"
            }
        } else {
            let value = Value::<i64>::new(0).unwrap();
            let v = value.clone();
            let mut victim = looping(&started, move || {
                let g = taken(v.lock());
                g.set(g.get() + 1);
            });
            kill_running(&mut victim, &started, rng);
            match value.lock_timeout(PATIENCE) {
                Ok(g) => {
                    assert!(g.get() >= 0);
                    "Value: free"
                }
                Err(LockError::OwnerDied(g)) => {
                    assert!(g.get() >= 0);
                    row.recovery.push(t.elapsed());
                    "Value: owner died"
                }
                Err(LockError::Failed(e)) => panic!("value lock after the kill: {e}"),
            }
        };
        row.count(outcome);
    }
    row
}

fn barrier_party(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Barrier(3)",
        "wait",
        "one party, before or after it arrives",
        "the two others agree: the barrier trips (the dead party had arrived) or their timed waits break it",
    );
    for _ in 0..10 {
        let barrier = Barrier::new(3).unwrap();
        let b = barrier.clone();
        let mut victim = child(move || {
            let _ = b.wait();
            std::thread::sleep(Duration::from_secs(3600));
            true
        });
        pause(rng, 2000);
        kill(&mut victim);
        let b = barrier.clone();
        let mut other = fork_child(move || match b.wait_timeout(Duration::from_millis(300)) {
            Ok(_) => 0,
            Err(Error::BrokenBarrier) => 2,
            Err(_) => 3,
        });
        let mine = barrier.wait_timeout(Duration::from_millis(300));
        let theirs = other.wait_timeout(PATIENCE);
        let outcome = match (&mine, theirs) {
            (Ok(_), Some(0)) => "tripped",
            (Err(Error::BrokenBarrier), Some(2)) => "broken for both (timed out)",
            _ => panic!("the survivors disagree: {mine:?} here, {}", other.describe()),
        };
        if barrier.broken() {
            barrier.reset().unwrap();
            assert!(!barrier.broken());
        }
        row.count(outcome);
    }
    row
}

fn joinable_consumer(_: &mut XorShift) -> Row {
    let mut row = Row::new(
        "JoinableQueue",
        "get, then task_done",
        "the consumer, before task_done",
        "join_timeout gives up (the task stays unfinished); the queue works on",
    );
    for _ in 0..5 {
        let q = JoinableQueue::<u64>::new(4096).unwrap();
        q.put(7).unwrap();
        let (c, taken) = (q.clone(), Event::new().unwrap());
        let t = taken.clone();
        let mut victim = child(move || {
            let v = c.get().unwrap();
            t.set();
            std::thread::sleep(Duration::from_secs(3600));
            v == 7
        });
        assert!(taken.wait_timeout(PATIENCE).unwrap(), "the consumer never took the task");
        kill(&mut victim);
        assert!(!q.join_timeout(Duration::from_millis(20)), "join returned with a task undone");
        assert_eq!(q.unfinished(), 1);
        q.put(8).unwrap();
        assert_eq!(q.get_timeout(PATIENCE).unwrap(), 8);
        q.task_done().unwrap();
        q.task_done().unwrap();
        assert!(q.join_timeout(PATIENCE));
        row.count("join waits for the dead consumer's task");
    }
    row
}

fn queue_producer(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Queue<u64>, ObjectQueue<u64>",
        "put, in a loop",
        "the producer, anywhere in a put",
        "the consumer gets 0, 1, 2, … in order, none twice, and then nothing: never a hang",
    );
    for run in 0..12 {
        let object = run % 2 == 1;
        let (q, oq) = (Queue::<u64>::new(64).unwrap(), ObjectQueue::<u64>::new(4096).unwrap());
        let (p, op, started) = (q.clone(), oq.clone(), Event::new().unwrap());
        let mut i = 0;
        let mut victim = looping(&started, move || {
            if object {
                op.put(i).unwrap();
            } else {
                p.put(i).unwrap();
            }
            i += 1;
        });
        let take = |next: &mut u64, got: Result<u64, GetError>| match got {
            Ok(v) => {
                assert_eq!(v, *next, "out of order or twice");
                *next += 1;
                true
            }
            Err(GetError::Empty | GetError::Timeout) => false,
            Err(e) => panic!("get: {e:?}"),
        };
        let get = |t: Duration| if object { oq.get_timeout(t) } else { q.get_timeout(t) };
        // Drained while the producer runs, so that the kill finds it
        // anywhere in a put (not always blocked on a full queue).
        let killed = std::sync::atomic::AtomicBool::new(false);
        let mut next = std::thread::scope(|scope| {
            let consumer = scope.spawn(|| {
                let mut next = 0u64;
                loop {
                    // Stop at the first empty look after the kill.
                    if !take(&mut next, get(Duration::from_millis(20)))
                        && killed.load(std::sync::atomic::Ordering::Relaxed)
                    {
                        break next;
                    }
                }
            });
            kill_running(&mut victim, &started, rng);
            killed.store(true, std::sync::atomic::Ordering::Relaxed);
            consumer.join().expect("the consumer")
        });
        let drained = next;
        // A slot the producer died in never blocks the queue.
        if object {
            oq.put(next).unwrap();
        } else {
            q.put(next).unwrap();
        }
        assert!(take(&mut next, get(PATIENCE)), "the queue works on");
        row.count(if drained == 0 { "killed before its first put" } else { "every message up to the kill" });
    }
    row
}

fn queue_consumer(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Queue<u64>, ObjectQueue<u64>",
        "get, in a loop",
        "the consumer, anywhere in a get",
        "the next consumer resumes where the dead one stopped, at most the one message it was taking lost, none twice, in order",
    );
    for run in 0..10 {
        let object = run % 2 == 1;
        let (q, oq) = (Queue::<u64>::new(1024).unwrap(), ObjectQueue::<u64>::new(16384).unwrap());
        for i in 0..1000 {
            if object {
                oq.put(i).unwrap();
            } else {
                q.put(i).unwrap();
            }
        }
        // What the consumer took, as it recorded it: one past the last.
        let progress = Array::<u64>::new(1).unwrap();
        let (c, oc, p, started) = (q.clone(), oq.clone(), progress.clone(), Event::new().unwrap());
        let mut victim = looping(&started, move || {
            let v = if object { oc.get().unwrap() } else { c.get().unwrap() };
            p.store(0, v + 1);
        });
        kill_running(&mut victim, &started, rng);
        let got = progress.load(0);
        let get = || if object { oq.try_get() } else { q.try_get() };
        let mut next = match get() {
            Ok(v) => {
                assert!(v == got || v == got + 1, "resumed at {v}, the consumer had taken up to {got}");
                v + 1
            }
            Err(GetError::Empty) => {
                assert!(got >= 999, "empty after only {got} taken");
                1000
            }
            Err(e) => panic!("get after the kill: {e:?}"),
        };
        let lost = next > got + 1;
        while let Ok(v) = get() {
            assert_eq!(v, next, "out of order or twice");
            next += 1;
        }
        assert_eq!(next, 1000, "messages missing at the end");
        row.count(if lost { "the message being taken lost" } else { "resumed with nothing lost" });
    }
    row
}

fn spsc_peer(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "SpscQueue<u64>",
        "put or get, in a loop",
        "the producer, or the consumer",
        "the survivor (or the one who takes the dead consumer's role) sees the stream in order, at most the message a dead consumer was taking lost",
    );
    for run in 0..10 {
        let q = SpscQueue::<u64>::new(1024).unwrap();
        let started = Event::new().unwrap();
        let progress = Array::<u64>::new(1).unwrap();
        let (theirs, record) = (q.clone(), progress.clone());
        if run % 2 == 0 {
            // The producer dies; this process consumes.
            let mut sent = 0;
            let mut victim = looping(&started, move || {
                if theirs.put_timeout(sent, Duration::from_millis(20)).is_ok() {
                    sent += 1;
                    record.store(0, sent);
                }
            });
            let mut next = 0;
            let killed = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    kill_running(&mut victim, &started, rng);
                    killed.store(true, std::sync::atomic::Ordering::Relaxed);
                });
                loop {
                    match q.get_timeout(Duration::from_millis(20)) {
                        Ok(v) => {
                            assert_eq!(v, next, "out of order or twice");
                            next += 1;
                        }
                        Err(GetError::Timeout) if killed.load(std::sync::atomic::Ordering::Relaxed) => break,
                        Err(GetError::Timeout) => {}
                        Err(e) => panic!("get: {e:?}"),
                    }
                }
            });
            let done = progress.load(0);
            assert!(next == done || next == done + 1, "got {next}, the producer recorded {done} puts");
            row.count("producer killed: every message it put, in order");
        } else {
            // The consumer dies; this process takes its role.
            for i in 0..1000 {
                q.put(i).unwrap();
            }
            let mut victim = looping(&started, move || {
                if let Ok(v) = theirs.get_timeout(Duration::from_millis(20)) {
                    record.store(0, v + 1);
                }
            });
            kill_running(&mut victim, &started, rng);
            let got = progress.load(0);
            let mut next = got;
            let mut first = true;
            while let Ok(v) = q.try_get() {
                if first {
                    assert!(v == got || v == got + 1, "resumed at {v}, the consumer had taken up to {got}");
                    next = v;
                    first = false;
                }
                assert_eq!(v, next, "out of order or twice");
                next += 1;
            }
            assert!(next >= 999, "the stream stopped at {next}");
            row.count("consumer killed: the stream resumed");
        }
    }
    row
}

fn pipe_writer(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Connection",
        "send (whole and streamed messages)",
        "the writer, anywhere in a send",
        "recv gets every whole message intact, in order, then Closed",
    );
    for _ in 0..10 {
        let (a, b) = pipe_with_capacity(4096, true).unwrap();
        let started = Event::new().unwrap();
        let mut i = 0u32;
        let mut victim = looping(&started, move || {
            // Half of them longer than half the ring: streamed in chunks.
            let len = if i % 2 == 0 { 100 } else { 5000 };
            b.send_bytes(&vec![(i % 251) as u8; len]).unwrap();
            i += 1;
        });
        // Read while the writer runs, so that the kill finds it anywhere
        // in a send (not always blocked on a full ring).
        let outcome = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut got = 0u32;
                loop {
                    match a.recv_bytes_timeout(PATIENCE) {
                        Ok(m) => {
                            let len = if got % 2 == 0 { 100 } else { 5000 };
                            let intact = m.len() == len && m.iter().all(|&x| x == (got % 251) as u8);
                            assert!(intact, "message {got} changed");
                            got += 1;
                        }
                        Err(Error::Closed) => {
                            break if got == 0 { "Closed before a message" } else { "read, then Closed" };
                        }
                        Err(e) => panic!("recv after the writer died: {e}"),
                    }
                }
            });
            kill_running(&mut victim, &started, rng);
            reader.join().expect("the reader")
        });
        row.count(outcome);
    }
    row
}

fn pipe_reader(_: &mut XorShift) -> Row {
    let mut row =
        Row::new("Connection", "send blocked on a full ring", "the reader", "the blocked send returns Closed");
    for _ in 0..5 {
        let (a, b) = pipe().unwrap();
        let ready = Event::new().unwrap();
        let r = ready.clone();
        let mut victim = child(move || {
            r.set();
            std::thread::sleep(Duration::from_secs(3600));
            b.recv_bytes().is_ok()
        });
        when_ready(&ready, "reader");
        let sender = std::thread::spawn(move || {
            let big = vec![1u8; 1 << 20];
            loop {
                if let Err(e) = a.send_bytes(&big) {
                    return e;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        kill(&mut victim);
        let e = common::join_thread(sender);
        assert!(matches!(e, Error::Closed), "the blocked send gave {e}");
        row.count("send returns Closed");
    }
    row
}

/// A task: 99 kills its worker (SIGKILL, mid-task), any other is itself.
fn die_at(x: u32) -> u32 {
    if x == 99 {
        // SAFETY: raise with a valid signal: the worker dies mid-task.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    x
}

fn square(x: u32) -> u32 {
    x * x
}

fn pool_worker(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Pool (fork, 2 workers)",
        "map",
        "a worker, mid-task",
        "the map fails naming SIGKILL; the pool replaces the worker and runs the next tasks",
    );
    for _ in 0..3 {
        let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build().unwrap();
        // One task in the map kills its worker; where it sits is random.
        let at = rng.next_u64() % 60;
        let items: Vec<u32> = (0..60).map(|i| if u64::from(i) == at { 99 } else { i }).collect();
        let e = pool.map(die_at, items, Some(1)).unwrap_err();
        assert!(e.to_string().contains("SIGKILL"), "{e}");
        assert_eq!(pool.map(square, 0..20, None).unwrap(), (0..20).map(|x| x * x).collect::<Vec<_>>());
        pool.close();
        pool.join().unwrap();
        row.count("map failed with SIGKILL, pool went on");
    }
    row
}

fn pool_worker_async(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Pool (fork, 2 workers)",
        "apply_async and imap",
        "a worker, mid-task",
        "that task's result is an error naming SIGKILL, every other result is exact, and the pool goes on",
    );
    for run in 0..4 {
        let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build().unwrap();
        let at = (rng.next_u64() % 40) as u32;
        let items: Vec<u32> = (0..40).map(|i| if i == at { 99 } else { i }).collect();
        let results: Vec<shmproc::Result<u32>> = if run % 2 == 0 {
            let pending: Vec<_> = items.iter().map(|&x| pool.apply_async(die_at, x).unwrap()).collect();
            pending.iter().map(shmproc::AsyncResult::get).collect()
        } else {
            pool.imap(die_at, items, 1).collect()
        };
        assert_eq!(results.len(), 40);
        for (i, r) in (0..).zip(&results) {
            match r {
                Ok(x) => assert_eq!(*x, i, "item {i}"),
                Err(e) => assert!(i == at && e.to_string().contains("SIGKILL"), "item {i} (killed: {at}): {e}"),
            }
        }
        assert!(results[at as usize].is_err(), "the killed task's result");
        assert_eq!(pool.map(square, 0..20, None).unwrap(), (0..20).map(|x| x * x).collect::<Vec<_>>());
        pool.close();
        pool.join().unwrap();
        row.count(if run % 2 == 0 {
            "apply_async: that task failed, the rest exact"
        } else {
            "imap: that item failed, the rest exact"
        });
    }
    row
}

fn listener_client(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Listener",
        "accept (with the authkey handshake)",
        "a client, anywhere in connecting again and again",
        "accept never hangs; the next client is accepted; the killed client's pipe names are swept",
    );
    for _ in 0..5 {
        let address = common::unique_name("crash-listener");
        let key = b"crash".to_vec();
        let listener = Listener::bind(&address, Some(&key)).unwrap();
        let started = Event::new().unwrap();
        let (a, k) = (address.clone(), key.clone());
        let mut victim = looping(&started, move || drop(client(&a, Some(&k))));
        let victim_pid = victim.pid();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let failed = std::thread::scope(|scope| {
            let acceptor = scope.spawn(|| {
                let mut failed = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match listener.accept_timeout(Duration::from_millis(20)) {
                        Ok(conn) => drop(conn),
                        Err(Error::Timeout) => {}
                        Err(_) => failed += 1,
                    }
                }
                failed
            });
            kill_running(&mut victim, &started, rng);
            std::thread::sleep(Duration::from_millis(50));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            acceptor.join().expect("the acceptor")
        });
        // The listener goes on: a new client is accepted.
        let (a, k) = (address.clone(), key.clone());
        let mut next = child(move || client(&a, Some(&k)).is_ok());
        drop(listener.accept_timeout(PATIENCE).expect("the next client"));
        served(&mut next, "the next client");
        drop(listener);
        // What the killed client had made and nobody took is swept.
        let prefix = format!("shmproc-conn-{victim_pid}-");
        let swept = common::swept_within_20_s(|name| name.starts_with(&prefix));
        assert!(swept, "the killed client's pipe names are still there");
        common::assert_no_leftovers("crash-listener");
        row.count(if failed == 0 {
            "every accept went on"
        } else {
            "an accept failed for the killed client, the next went on"
        });
    }
    row
}

fn linger(_: ()) {
    std::thread::sleep(Duration::from_secs(60));
}

fn process_child(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Process (fork, spawn)",
        "join",
        "the child, anywhere in its run",
        "join returns ChildFailed with exitcode −9 (SIGKILL), and the child is reaped",
    );
    for run in 0..6 {
        let method = if run % 2 == 0 { StartMethod::Fork } else { StartMethod::Spawn };
        let mut p = Process::builder().start_method(method).target(linger, ());
        p.start().unwrap();
        pause(rng, 3000);
        p.kill().unwrap();
        match p.join() {
            Err(Error::ChildFailed { exitcode: Some(-9), .. }) => {}
            other => panic!("{method:?}: join after SIGKILL gave {other:?}"),
        }
        assert!(!p.is_alive());
        row.count("ChildFailed, exitcode −9");
    }
    row
}

fn echo(x: u32) -> u32 {
    x
}

/// `echo`, alive long enough for its parent to be looked at.
fn slow_echo(x: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(200));
    x
}

fn fork_server(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Process (fork server)",
        "start and join, in a loop",
        "the fork server",
        "every start gives a child or an error, every join returns (its result, or ChildFailed), and the next start comes from a new server",
    );
    for _ in 0..4 {
        // A child of this server that outlives it.
        let mut orphan = Process::builder().start_method(StartMethod::ForkServer).target(linger, ());
        orphan.start().unwrap();
        let server = common::parent_of(orphan.pid().unwrap());
        let stop = std::sync::atomic::AtomicBool::new(false);
        let returned = std::sync::atomic::AtomicU32::new(0);
        let (started, failed) = std::thread::scope(|scope| {
            let starter = scope.spawn(|| {
                let (mut started, mut failed) = (0u32, 0u32);
                for i in 0u32.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let mut p = Process::builder().start_method(StartMethod::ForkServer).target(echo, i);
                    if p.start().is_err() {
                        failed += 1;
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    started += 1;
                    match p.join() {
                        Ok(x) => {
                            assert_eq!(x, i);
                            returned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(Error::ChildFailed { .. }) => {}
                        Err(e) => panic!("join of a fork server's child: {e}"),
                    }
                }
                (started, failed)
            });
            pause(rng, 30_000);
            let before = returned.load(std::sync::atomic::Ordering::Relaxed);
            // SAFETY: kill(2) on the fork server, a child of this process.
            assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
            // Until a child started after the kill has come back (from a
            // new server), at most PATIENCE.
            let t = Instant::now();
            while returned.load(std::sync::atomic::Ordering::Relaxed) < before + 2 && t.elapsed() < PATIENCE {
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            starter.join().expect("the starter")
        });
        assert!(started > 0, "no start succeeded ({failed} failed)");
        orphan.kill().unwrap();
        match orphan.join() {
            Err(Error::ChildFailed { .. }) => {}
            other => panic!("the orphan's join gave {other:?}"),
        }
        let mut next = Process::builder().start_method(StartMethod::ForkServer).target(slow_echo, 7);
        next.start().unwrap();
        assert_ne!(common::parent_of(next.pid().unwrap()), server, "the next child came from the dead server");
        assert_eq!(next.join().unwrap(), 7);
        row.count(if failed == 0 { "every start succeeded" } else { "a start failed at the kill, the next went on" });
    }
    row
}

fn update_until_killed((d, holding): (SharedDict<u8, u64>, Event)) {
    let _ = d.update(0, |n| {
        holding.set();
        std::thread::sleep(Duration::from_secs(3600));
        n.unwrap_or(0)
    });
}

fn manager_key_holder(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Manager",
        "dict update (holding its key)",
        "the client holding the key",
        "the key is let go: a waiting update by another process goes through, exactly once",
    );
    let m = Manager::start().unwrap();
    for run in 0..3 {
        let d = m.dict::<u8, u64>().unwrap();
        d.insert(0, 41).unwrap();
        let holding = Event::new().unwrap();
        let mut holder = Process::builder()
            .start_method(StartMethod::Fork)
            .target(update_until_killed, (d.clone(), holding.clone()));
        holder.start().unwrap();
        assert!(holding.wait_timeout(PATIENCE).unwrap(), "the child never held the key");
        let waiting = {
            let d = d.clone();
            std::thread::spawn(move || d.update(0, |n| n.unwrap() + 100))
        };
        pause(rng, 20_000);
        holder.kill().unwrap();
        assert!(holder.join().is_err());
        assert_eq!(waiting.join().unwrap().unwrap(), 141, "run {run}: the waiting update");
        assert_eq!(d.get(&0).unwrap(), Some(141));
        row.count("the key let go, the waiting update done once");
    }
    m.shutdown().unwrap();
    row
}

fn manager_server(rng: &mut XorShift) -> Row {
    let mut row = Row::new(
        "Manager",
        "proxy calls (dict insert and get)",
        "the server, at a random point",
        "every later call gives Closed; its names are swept by cleanup()",
    );
    for _ in 0..3 {
        let m = Manager::start().unwrap();
        let d = m.dict::<u32, u32>().unwrap();
        let pid = m.pid().unwrap();
        let caller = std::thread::spawn(move || {
            for i in 0.. {
                if let Err(e) = d.insert(i, i).and_then(|_| d.get(&i)) {
                    return e;
                }
            }
            unreachable!()
        });
        pause(rng, 3000);
        // SAFETY: kill(2) on our own child, the server.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        let e = common::join_thread(caller);
        assert!(matches!(e, Error::Closed), "a call after the kill gave {e}");
        let swept = common::swept_within_20_s(|name| name.contains(m.address()));
        assert!(swept, "the dead server's names are still there");
        drop(m);
        row.count("calls Closed, names swept");
    }
    row
}

// ---------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------

type RowFn = fn(&mut XorShift) -> Row;

const ROWS: [(&str, RowFn); 25] = [
    ("lock_holder", lock_holder),
    ("lock_waiter", lock_waiter),
    ("rlock_holder", rlock_holder),
    ("semaphore_user", semaphore_user),
    ("semaphore_sleeper", semaphore_sleeper),
    ("event_waiter", event_waiter),
    ("event_setter", event_setter),
    ("condition_waiter", condition_waiter),
    ("condition_notifier", condition_notifier),
    ("condition_all_slots", condition_all_slots),
    ("array_holder", array_holder),
    ("barrier_party", barrier_party),
    ("joinable_consumer", joinable_consumer),
    ("queue_producer", queue_producer),
    ("queue_consumer", queue_consumer),
    ("spsc_peer", spsc_peer),
    ("pipe_writer", pipe_writer),
    ("pipe_reader", pipe_reader),
    ("listener_client", listener_client),
    ("pool_worker", pool_worker),
    ("pool_worker_async", pool_worker_async),
    ("process_child", process_child),
    ("fork_server", fork_server),
    ("manager_key_holder", manager_key_holder),
    ("manager_server", manager_server),
];

fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| type | operation | who is killed | runs | outcomes | recovery p50 / max | invariant (held in every run) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let c = r.cells();
        let _ = writeln!(out, "| {} | {} | {} | {} | {} | {} | {} |", c[0], c[1], c[2], c[3], c[4], c[5], r.invariant);
    }
    out
}

#[test]
fn every_type_survives_a_participant_killed_at_random_points() {
    let seed = std::env::var("SHMPROC_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    let started = Instant::now();
    let mut rows = Vec::new();
    for (name, row) in ROWS {
        let _w = Watchdog::new(move || common::abort_hung("crash_matrix", name));
        let mut rng = XorShift::new(seed ^ name.len() as u64);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| row(&mut rng))).unwrap_or_else(|e| {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()));
            panic!("row {name} (SHMPROC_CRASH_SEED={seed}): {}", msg.unwrap_or_default())
        });
        assert!(r.runs > 0, "{name} ran nothing");
        assert!(
            r.recovery.iter().all(|&t| t < RECOVERY_BOUND),
            "{name}: a takeover took {:?} (bound {RECOVERY_BOUND:?})",
            r.recovery.iter().max()
        );
        rows.push(r);
    }
    let table = markdown(&rows);
    let _ = writeln!(
        std::io::stderr(),
        "crash matrix ({} rows, seed {seed}, {:.1} s):\n{table}",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = std::env::var_os("SHMPROC_CRASH_TABLE") {
        std::fs::write(path, &table).expect("write the crash table");
    }
    // ARCHITECTURE.md keeps a run's table: it must name every row (counts
    // differ from run to run; refresh it with SHMPROC_CRASH_TABLE=file).
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ARCHITECTURE.md")).unwrap();
    for r in &rows {
        let id = format!("| {} | {} | {} |", r.ty, r.op, r.dies);
        assert!(docs.contains(&id), "ARCHITECTURE.md's crash matrix lacks the row {id}");
    }
}
