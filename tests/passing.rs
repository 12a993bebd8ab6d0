//! Every sync handle passed as an argument to a child, under every start
//! method, anonymous (`new`) and named (`create`): the child's handle is the
//! same shared object as the parent's. Also several handles at once, the same
//! handle twice, a handle passed on to a grandchild, and what happens outside a
//! process start.
//!
//! Parent-side waits are all timed and joins are bounded (`join_ok`), so a
//! handle that is not shared fails the test instead of hanging it.

// Process targets are `fn(A) -> R`: they take their arguments by value.
#![allow(clippy::needless_pass_by_value)]

mod common;

use std::time::Duration;

use common::{METHODS, WATCHDOG, join_ok, start_fn, unique_name};
use serde::{Deserialize, Serialize};
use shmproc::{
    Barrier, BoundedSemaphore, Condition, Error, Event, Lock, LockError, Process, RLock, Semaphore, StartMethod,
};

/// How the object under test is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    /// `new()`: travels as a descriptor.
    Anonymous,
    /// `create(name)`: travels as its name.
    Named,
}

const HOWS: [How; 2] = [How::Anonymous, How::Named];

fn make<T>(
    how: How,
    tag: &str,
    anonymous: impl FnOnce() -> shmproc::Result<T>,
    named: impl FnOnce(&str) -> shmproc::Result<T>,
) -> T {
    match how {
        How::Anonymous => anonymous().unwrap(),
        How::Named => named(&unique_name(tag)).unwrap(),
    }
}

fn new_event(how: How) -> Event {
    make(how, "pass-event", Event::new, Event::create)
}

/// A short pause, so that the other side really is waiting when we act.
fn pause() {
    std::thread::sleep(Duration::from_millis(20));
}

// ---------------------------------------------------------------------------
// Event
// ---------------------------------------------------------------------------

/// Waits for the parent's `go`, then sets `done`.
fn event_child((go, done): (Event, Event)) -> bool {
    let went = go.wait_timeout(WATCHDOG).unwrap();
    done.set();
    went
}

#[test]
fn event() {
    for m in METHODS {
        for how in HOWS {
            let (go, done) = (new_event(how), new_event(how));
            let mut p = start_fn(m, event_child, (go.clone(), done.clone()));
            assert!(!done.wait_timeout(Duration::from_millis(30)).unwrap(), "{m:?} {how:?}: done set before go");
            go.set();
            assert!(done.wait_timeout(WATCHDOG).unwrap(), "{m:?} {how:?}: the child's set never arrived");
            assert!(join_ok(&mut p), "{m:?} {how:?}: the parent's set never arrived");
        }
    }
}

// ---------------------------------------------------------------------------
// Lock and RLock
// ---------------------------------------------------------------------------

/// Takes the lock, says so, and holds it until released.
fn lock_child((lock, held, release): (Lock, Event, Event)) -> bool {
    let guard = lock.lock().unwrap();
    held.set();
    let released = release.wait_timeout(WATCHDOG).unwrap();
    drop(guard);
    released
}

#[test]
fn lock() {
    for m in METHODS {
        for how in HOWS {
            let lock = make(how, "pass-lock", Lock::new, Lock::create);
            let (held, release) = (Event::new().unwrap(), Event::new().unwrap());
            let mut p = start_fn(m, lock_child, (lock.clone(), held.clone(), release.clone()));
            assert!(held.wait_timeout(WATCHDOG).unwrap(), "{m:?} {how:?}: the child never took the lock");
            assert!(lock.is_locked(), "{m:?} {how:?}");
            assert!(!lock.is_owned_by_current_thread());
            assert!(matches!(lock.try_lock(), Err(LockError::Failed(Error::WouldBlock))), "{m:?} {how:?}");
            release.set();
            assert!(join_ok(&mut p));
            assert!(!lock.is_locked(), "{m:?} {how:?}");
            drop(lock.try_lock().unwrap());
        }
    }
}

/// Takes the lock twice (recursively), says so, holds it until released.
fn rlock_child((lock, held, release): (RLock, Event, Event)) -> u32 {
    let outer = lock.lock().unwrap();
    let inner = lock.lock().unwrap();
    let depth = lock.depth();
    held.set();
    release.wait_timeout(WATCHDOG).unwrap();
    drop(inner);
    drop(outer);
    depth
}

#[test]
fn rlock() {
    for m in METHODS {
        for how in HOWS {
            let lock = make(how, "pass-rlock", RLock::new, RLock::create);
            let (held, release) = (Event::new().unwrap(), Event::new().unwrap());
            let mut p = start_fn(m, rlock_child, (lock.clone(), held.clone(), release.clone()));
            assert!(held.wait_timeout(WATCHDOG).unwrap(), "{m:?} {how:?}: the child never took the lock");
            assert!(lock.is_locked(), "{m:?} {how:?}");
            assert!(matches!(lock.try_lock(), Err(LockError::Failed(Error::WouldBlock))), "{m:?} {how:?}");
            release.set();
            assert_eq!(join_ok(&mut p), 2, "{m:?} {how:?}: depth in the child");
            assert!(!lock.is_locked(), "{m:?} {how:?}");
            let g = lock.try_lock().unwrap();
            assert_eq!(lock.depth(), 1);
            drop(g);
        }
    }
}

// ---------------------------------------------------------------------------
// Semaphore and BoundedSemaphore
// ---------------------------------------------------------------------------

/// Waits for the parent's release, then releases three times.
fn semaphore_child(sem: Semaphore) -> bool {
    let got = sem.acquire_timeout(WATCHDOG);
    for _ in 0..3 {
        sem.release().unwrap();
    }
    got
}

#[test]
fn semaphore() {
    for m in METHODS {
        for how in HOWS {
            let sem = make(how, "pass-sem", || Semaphore::new(0), |n| Semaphore::create(n, 0));
            let mut p = start_fn(m, semaphore_child, sem.clone());
            pause();
            assert_eq!(sem.get_value(), 0, "{m:?} {how:?}");
            sem.release().unwrap();
            assert!(join_ok(&mut p), "{m:?} {how:?}: the child never saw the parent's release");
            assert_eq!(sem.get_value(), 3, "{m:?} {how:?}: the child's releases are not visible");
        }
    }
}

/// With the semaphore drained by the parent: cannot acquire, may release up to
/// the bound, and not once more.
fn bounded_child(sem: BoundedSemaphore) -> (bool, u32, bool) {
    let acquired = sem.try_acquire();
    sem.release().unwrap();
    sem.release().unwrap();
    let over = matches!(sem.release(), Err(Error::OverRelease { bound: 2 }));
    (acquired, sem.bound(), over)
}

#[test]
fn bounded_semaphore() {
    for m in METHODS {
        for how in HOWS {
            let sem = make(how, "pass-bsem", || BoundedSemaphore::new(2), |n| BoundedSemaphore::create(n, 2));
            assert!(sem.try_acquire() && sem.try_acquire());
            let mut p = start_fn(m, bounded_child, sem.clone());
            assert_eq!(join_ok(&mut p), (false, 2, true), "{m:?} {how:?}");
            assert_eq!(sem.get_value(), 2, "{m:?} {how:?}");
            assert!(matches!(sem.release(), Err(Error::OverRelease { bound: 2 })));
        }
    }
}

// ---------------------------------------------------------------------------
// Condition
// ---------------------------------------------------------------------------

/// Waits (under the condition) for the parent's notify, then notifies back.
fn condition_child((cond, started, there, back): (Condition, Event, Event, Event)) -> bool {
    let mut g = cond.lock().unwrap();
    // Set while holding the lock: once the parent has the lock, we wait.
    started.set();
    let woke = g.wait_for(|| there.is_set().unwrap(), Some(WATCHDOG)).unwrap();
    drop(g);
    pause(); // let the parent reach its own wait
    let g = cond.lock().unwrap();
    back.set();
    g.notify_all().unwrap();
    drop(g);
    woke
}

#[test]
fn condition() {
    for m in METHODS {
        for how in HOWS {
            let cond = make(how, "pass-cond", Condition::new, Condition::create);
            // And one bound to a plain Lock, which travels with it.
            let with_lock = Condition::with_lock(Lock::new().unwrap()).unwrap();
            for cond in [cond, with_lock] {
                let (started, there, back) = (Event::new().unwrap(), Event::new().unwrap(), Event::new().unwrap());
                let mut p = start_fn(m, condition_child, (cond.clone(), started.clone(), there.clone(), back.clone()));
                assert!(started.wait_timeout(WATCHDOG).unwrap(), "{m:?} {how:?}: child never started");
                {
                    // The child released the lock only by waiting on the condition.
                    let g = cond.lock_timeout(WATCHDOG).unwrap();
                    there.set();
                    assert_eq!(g.notify_all().unwrap(), 1, "{m:?} {how:?}: the child's wait is not on this condition");
                }
                let mut g = cond.lock_timeout(WATCHDOG).unwrap();
                let woke = g.wait_for(|| back.is_set().unwrap(), Some(WATCHDOG)).unwrap();
                drop(g);
                assert!(woke, "{m:?} {how:?}: the child's notify never came");
                assert!(join_ok(&mut p), "{m:?} {how:?}: the parent's notify never came");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Barrier
// ---------------------------------------------------------------------------

fn barrier_child(b: Barrier) -> Vec<u32> {
    (0..3).map(|_| b.wait_timeout(WATCHDOG).unwrap()).collect()
}

#[test]
fn barrier() {
    for m in METHODS {
        for how in HOWS {
            let b = make(how, "pass-barrier", || Barrier::new(2), |n| Barrier::create(n, 2));
            let mut p = start_fn(m, barrier_child, b.clone());
            let mine: Vec<u32> = (0..3).map(|_| b.wait_timeout(WATCHDOG).unwrap()).collect();
            let theirs = join_ok(&mut p);
            for (round, (a, c)) in mine.iter().zip(&theirs).enumerate() {
                let mut both = [*a, *c];
                both.sort_unstable();
                assert_eq!(both, [0, 1], "{m:?} {how:?}: round {round} arrival indices {a} and {c}");
            }
            assert!(!b.broken());
        }
    }
}

/// Waits alone on a barrier for three: its default timeout (which travels
/// with the handle) must break it.
fn lonely_barrier_child(b: Barrier) -> bool {
    matches!(b.wait(), Err(Error::BrokenBarrier))
}

#[test]
fn barrier_default_timeout_travels_and_breaking_is_shared() {
    for m in METHODS {
        let b = Barrier::new(3).unwrap().with_timeout(Duration::from_millis(50));
        let mut p = start_fn(m, lonely_barrier_child, b.clone());
        assert!(join_ok(&mut p), "{m:?}: the child's wait did not time out and break the barrier");
        assert!(b.broken(), "{m:?}: the break is not visible to the parent");
        b.reset().unwrap();
        assert!(!b.broken());
    }
}

// ---------------------------------------------------------------------------
// Several handles at once; the same handle twice.
// ---------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Kit {
    lock: Lock,
    rlock: RLock,
    sem: Semaphore,
    event: Event,
    same_event: Event,
    named_event: Event,
    barrier: Barrier,
    label: String,
}

fn kit_child(kit: Kit) -> (bool, String) {
    // The same object twice: set through one handle, seen through the other.
    kit.same_event.set();
    let same = kit.event.is_set().unwrap();
    kit.named_event.set();
    kit.sem.release().unwrap();
    let lock = kit.lock.try_lock().is_ok();
    let rlock = kit.rlock.try_lock().is_ok();
    // A rendezvous with the parent proves the barrier is shared too.
    let barrier = kit.barrier.wait_timeout(WATCHDOG).is_ok();
    (same && lock && rlock && barrier, kit.label)
}

#[test]
fn several_handles_in_one_argument() {
    for m in METHODS {
        let event = Event::new().unwrap();
        let named_event = Event::create(&unique_name("pass-kit")).unwrap();
        let kit = Kit {
            lock: Lock::new().unwrap(),
            rlock: RLock::new().unwrap(),
            sem: Semaphore::new(0).unwrap(),
            event: event.clone(),
            same_event: event.clone(),
            named_event: named_event.clone(),
            barrier: Barrier::new(2).unwrap(),
            label: format!("kit for {m:?}"),
        };
        let (sem, barrier) = (kit.sem.clone(), kit.barrier.clone());
        let mut p = start_fn(m, kit_child, kit);
        barrier.wait_timeout(WATCHDOG).unwrap();
        assert_eq!(join_ok(&mut p), (true, format!("kit for {m:?}")), "{m:?}");
        assert!(event.is_set().unwrap(), "{m:?}");
        assert!(named_event.is_set().unwrap(), "{m:?}");
        assert_eq!(sem.get_value(), 1, "{m:?}");
    }
}

/// The same handle three times, and a clone with another wait strategy.
fn twice_child((a, b, c): (Semaphore, Semaphore, Semaphore)) -> u32 {
    a.release().unwrap();
    b.release().unwrap();
    c.release().unwrap();
    a.get_value()
}

#[test]
fn the_same_handle_several_times() {
    for m in METHODS {
        for how in HOWS {
            let sem = make(how, "pass-twice", || Semaphore::new(0), |n| Semaphore::create(n, 0));
            let other = sem.clone().with_wait_strategy(shmproc::WaitStrategy::Spin);
            let mut p = start_fn(m, twice_child, (sem.clone(), sem.clone(), other));
            assert_eq!(join_ok(&mut p), 3, "{m:?} {how:?}");
            assert_eq!(sem.get_value(), 3, "{m:?} {how:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Passed on: parent → child → grandchild.
// ---------------------------------------------------------------------------

fn set_event(e: Event) -> bool {
    e.set();
    true
}

/// Passes `e` on to a grandchild started with `METHODS[method]`.
fn relay((method, e): (u8, Event)) -> bool {
    let mut p = Process::builder().start_method(METHODS[usize::from(method)]).target(set_event, e);
    p.start().unwrap();
    p.join_timeout(WATCHDOG).ok().flatten().unwrap_or(false)
}

#[test]
fn a_handle_passed_on_to_a_grandchild() {
    // The relay is a fresh process (Spawn, or forked by the single-threaded
    // fork server): a forked copy of this multi-threaded harness should not
    // start processes itself.
    for relay_method in [StartMethod::Spawn, StartMethod::ForkServer] {
        for (i, m) in METHODS.iter().enumerate() {
            let e = Event::new().unwrap();
            let mut p = start_fn(relay_method, relay, (i as u8, e.clone()));
            assert!(join_ok(&mut p), "{relay_method:?} → {m:?}: the grandchild failed");
            assert!(e.is_set().unwrap(), "{relay_method:?} → {m:?}: the grandchild's set is not visible");
        }
    }
}

// ---------------------------------------------------------------------------
// Lifetimes and the edges.
// ---------------------------------------------------------------------------

fn try_lock_in_child(lock: Lock) -> bool {
    lock.try_lock().is_ok()
}

/// A named handle moved into the arguments (the parent keeps no handle) must
/// still reach the child. `Process::start` drops the arguments as soon as the
/// child is launched, and dropping the creating handle unlinks the name, so a
/// spawned child that has not decoded its arguments yet finds no segment.
#[test]
fn a_named_handle_moved_into_the_arguments_reaches_the_child() {
    for m in METHODS {
        let lock = Lock::create(&unique_name("pass-moved")).unwrap();
        let mut p = start_fn(m, try_lock_in_child, lock);
        match common::join_within(&mut p, WATCHDOG) {
            Ok(took) => assert!(took, "{m:?}"),
            Err(e) => panic!("{m:?}: a named Lock moved into a child's arguments did not reach it: {e}"),
        }
    }
}

#[test]
fn anonymous_handles_stay_valid_in_the_child_after_the_parent_drops_its_own() {
    for m in METHODS {
        let lock = Lock::new().unwrap();
        let mut p = start_fn(m, try_lock_in_child, lock);
        assert!(join_ok(&mut p), "{m:?}");
    }
}

#[test]
fn anonymous_handles_cannot_leave_outside_a_process_start() {
    // Any serde serializer will do; postcard is what shmproc itself uses.
    let e = postcard::to_stdvec(&Event::new().unwrap());
    assert!(e.is_err(), "an anonymous handle serialised with no process to carry its descriptor");
    // A named one travels as its name, and decodes into the same object.
    let named = Event::create(&unique_name("pass-outside")).unwrap();
    let bytes = postcard::to_stdvec(&named).unwrap();
    let opened: Event = postcard::from_bytes(&bytes).unwrap();
    opened.set();
    assert!(named.is_set().unwrap());
    // A handle decoded as another type is refused by the segment's header check.
    let lock = Lock::create(&unique_name("pass-outside")).unwrap();
    let bytes = postcard::to_stdvec(&lock).unwrap();
    assert!(postcard::from_bytes::<Event>(&bytes).is_err(), "a Lock's segment opened as an Event");
    assert!(postcard::from_bytes::<Lock>(&bytes).is_ok());
}
