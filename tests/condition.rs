//! `Condition` across processes: `notify(1)` wakes exactly one waiter, `notify_all`
//! wakes all, `wait_for`, timeouts, binding to a `Lock` or an `RLock` held at
//! depth 2, names, and the bound lock's owner dying.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Proc, assert_no_leftovers, join_all_ok, join_ok, read_u64, start, unique_name, wait_until, write_u64};
use shmproc::{CondLock, Condition, Error, Event, Lock, LockError, RLock, Segment, StartMethod::Fork};

/// Offsets in the shared counters segment.
const WAITING: usize = 0;
const WOKEN: usize = 8;

/// Forks `n` children that each, under the condition's lock, count themselves
/// in `WAITING`, wait once (untimed), then count themselves in `WOKEN`.
fn spawn_waiters(cond: &Condition, seg: &Arc<Segment>, n: usize) -> Vec<Proc<()>> {
    (0..n)
        .map(|_| {
            let (cond, seg) = (cond.clone(), Arc::clone(seg));
            start(Fork, move || {
                let mut g = cond.lock().unwrap();
                write_u64(&seg, WAITING, read_u64(&seg, WAITING) + 1);
                g.wait().unwrap();
                write_u64(&seg, WOKEN, read_u64(&seg, WOKEN) + 1);
                drop(g);
            })
        })
        .collect()
}

/// Waits until `n` waiters have counted themselves under the lock: as each
/// counts and starts waiting in one critical section, all `n` are then inside
/// `wait` (their slots claimed) whenever we hold the lock.
fn wait_for_waiters(cond: &Condition, seg: &Segment, n: u64) {
    wait_until("all waiters waiting", || {
        let _g = cond.lock().unwrap();
        read_u64(seg, WAITING) == n
    });
}

fn locked_read(cond: &Condition, seg: &Segment, offset: usize) -> u64 {
    let _g = cond.lock().unwrap();
    read_u64(seg, offset)
}

#[test]
fn notify_one_wakes_exactly_one_process() {
    const N: usize = 3;
    let cond = Condition::new().unwrap();
    let seg = Arc::new(Segment::anonymous(16).unwrap());
    let mut children = spawn_waiters(&cond, &seg, N);
    wait_for_waiters(&cond, &seg, N as u64);

    {
        let g = cond.lock().unwrap();
        assert_eq!(g.notify(1).unwrap(), 1);
    }
    // Exactly one child comes back ...
    wait_until("one waiter to return", || children.iter_mut().any(|c| !c.is_alive()));
    std::thread::sleep(Duration::from_millis(200));
    let finished: Vec<String> = children
        .iter_mut()
        .filter_map(|c| (!c.is_alive()).then(|| format!("{} (pid {:?})", c.name(), c.pid())))
        .collect();
    assert_eq!(finished.len(), 1, "notify(1) let {finished:?} return");
    assert_eq!(locked_read(&cond, &seg, WOKEN), 1);

    // ... and the others still wait until notify_all.
    {
        let g = cond.lock().unwrap();
        assert_eq!(g.notify_all().unwrap(), N - 1);
    }
    join_all_ok(&mut children);
    assert_eq!(read_u64(&seg, WOKEN), N as u64);
    // Nobody waits any more.
    assert_eq!(cond.lock().unwrap().notify_all().unwrap(), 0);
}

#[test]
fn notify_all_wakes_every_process() {
    const N: usize = 4;
    let cond = Condition::new().unwrap();
    let seg = Arc::new(Segment::anonymous(16).unwrap());
    let mut children = spawn_waiters(&cond, &seg, N);
    wait_for_waiters(&cond, &seg, N as u64);
    {
        let g = cond.lock().unwrap();
        assert_eq!(g.notify_all().unwrap(), N);
        assert_eq!(g.notify(5).unwrap(), 0, "already notified waiters are not counted again");
    }
    join_all_ok(&mut children);
    assert_eq!(read_u64(&seg, WOKEN), N as u64);
}

#[test]
fn notify_two_of_four_then_the_rest() {
    const N: usize = 4;
    let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
    let seg = Arc::new(Segment::anonymous(16).unwrap());
    let mut children = spawn_waiters(&cond, &seg, N);
    wait_for_waiters(&cond, &seg, N as u64);
    assert_eq!(cond.lock().unwrap().notify(2).unwrap(), 2);
    wait_until("two waiters to return", || locked_read(&cond, &seg, WOKEN) == 2);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(locked_read(&cond, &seg, WOKEN), 2);
    assert_eq!(cond.lock().unwrap().notify(usize::MAX).unwrap(), 2);
    join_all_ok(&mut children);
}

#[test]
fn wait_for_returns_with_the_predicate_true() {
    const TARGET: u64 = 5;
    let cond = Condition::new().unwrap();
    let seg = Arc::new(Segment::anonymous(8).unwrap());
    let mut c = start(Fork, {
        let (cond, seg) = (cond.clone(), Arc::clone(&seg));
        move || {
            let mut g = cond.lock().unwrap();
            let ok = g.wait_for(|| read_u64(&seg, 0) >= TARGET, None).unwrap();
            assert!(ok);
            assert!(read_u64(&seg, 0) >= TARGET);
        }
    });
    for _ in 0..TARGET {
        std::thread::sleep(Duration::from_millis(5));
        let g = cond.lock().unwrap();
        write_u64(&seg, 0, read_u64(&seg, 0) + 1);
        g.notify_all().unwrap();
    }
    join_ok(&mut c);
}

#[test]
fn wait_for_times_out_with_the_predicate_false() {
    let cond = Condition::new().unwrap();
    let mut g = cond.lock().unwrap();
    let timeout = Duration::from_millis(40);
    let start = Instant::now();
    let mut calls = 0;
    let ok = g
        .wait_for(
            || {
                calls += 1;
                false
            },
            Some(timeout),
        )
        .unwrap();
    assert!(!ok);
    assert!(start.elapsed() >= timeout, "gave up after {:?}", start.elapsed());
    assert!(calls >= 2, "the predicate is checked again after the wait");
    // An already true predicate returns at once, without waiting.
    assert!(g.wait_for(|| true, Some(Duration::ZERO)).unwrap());
}

#[test]
fn wait_timeout_holds_the_lock_again() {
    let timeout = Duration::from_millis(30);

    // Bound to a plain Lock.
    let lock = Lock::new().unwrap();
    let cond = Condition::with_lock(lock.clone()).unwrap();
    assert!(matches!(cond.bound_lock(), CondLock::Lock(_)));
    let mut g = cond.lock().unwrap();
    let start = Instant::now();
    assert!(!g.wait_timeout(timeout).unwrap());
    assert!(start.elapsed() >= timeout);
    assert!(lock.is_owned_by_current_thread());
    drop(g);
    assert!(!lock.is_locked());

    // Bound to an RLock held at depth 2: the depth is restored.
    let r = RLock::new().unwrap();
    let cond = Condition::with_lock(r.clone()).unwrap();
    let outer = r.lock().unwrap();
    let mut g = cond.lock().unwrap();
    assert_eq!(r.depth(), 2);
    let start = Instant::now();
    assert!(!g.wait_timeout(timeout).unwrap());
    assert!(start.elapsed() >= timeout);
    assert_eq!(r.depth(), 2);
    drop(g);
    assert_eq!(r.depth(), 1);
    drop(outer);
    assert!(!r.is_locked());
}

/// Forks a child that keeps notifying one waiter until one was there.
fn spawn_notifier(cond: &Condition) -> Proc<()> {
    let cond = cond.clone();
    start(Fork, move || {
        loop {
            let g = cond.lock().unwrap();
            if g.notify(1).unwrap() == 1 {
                return;
            }
            drop(g);
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

#[test]
fn rlock_at_depth_two_is_fully_released_while_waiting() {
    let r = RLock::new().unwrap();
    let cond = Condition::with_lock(r.clone()).unwrap();
    let outer = r.lock().unwrap();
    let mut g = cond.lock().unwrap();
    assert_eq!(r.depth(), 2);
    // The notifier can only take the lock if wait released both levels.
    let mut notifier = spawn_notifier(&cond);
    assert!(g.wait_timeout(common::WATCHDOG).unwrap(), "not notified");
    assert_eq!(r.depth(), 2);
    drop(g);
    drop(outer);
    join_ok(&mut notifier);
    assert!(!r.is_locked());
}

#[test]
fn plain_lock_is_released_while_waiting() {
    let lock = Lock::new().unwrap();
    let cond = Condition::with_lock(lock.clone()).unwrap();
    let mut g = cond.lock().unwrap();
    let mut notifier = spawn_notifier(&cond);
    assert!(g.wait_timeout(common::WATCHDOG).unwrap(), "not notified");
    assert!(lock.is_owned_by_current_thread());
    drop(g);
    join_ok(&mut notifier);
    assert!(!lock.is_locked());
}

#[test]
fn create_and_open_by_name() {
    let name = unique_name("cond-byname");
    let cond = Condition::create(&name).unwrap();
    assert_eq!(cond.name(), Some(name.as_str()));
    assert!(common::shm_path(&format!("{name}.lock")).exists(), "the bound RLock is named {name}.lock");
    assert!(matches!(Condition::create(&name), Err(Error::AlreadyExists { .. })));
    let mut g = cond.lock().unwrap();
    let mut c = start(Fork, {
        let name = name.clone();
        move || {
            let cond = Condition::open(&name).unwrap();
            assert!(matches!(cond.bound_lock(), CondLock::RLock(_)));
            loop {
                let g = cond.lock().unwrap();
                if g.notify_all().unwrap() == 1 {
                    return;
                }
                drop(g);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    assert!(g.wait_timeout(common::WATCHDOG).unwrap());
    drop(g);
    join_ok(&mut c);

    // With an explicitly named Lock.
    let cname = unique_name("cond-byname");
    let lname = unique_name("cond-byname");
    let lock = Lock::create(&lname).unwrap();
    let cond2 = Condition::create_with_lock(&cname, lock).unwrap();
    let mut g = cond2.lock().unwrap();
    let mut c = start(Fork, {
        let (cname, lname) = (cname.clone(), lname.clone());
        move || {
            let cond = Condition::open_with_lock(&cname, Lock::open(&lname).unwrap()).unwrap();
            loop {
                let g = cond.lock().unwrap();
                if g.notify(1).unwrap() == 1 {
                    return;
                }
                drop(g);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    assert!(g.wait_timeout(common::WATCHDOG).unwrap());
    drop(g);
    join_ok(&mut c);

    drop((cond, cond2));
    assert!(matches!(Condition::open(&name), Err(Error::NotFound { .. })));
    assert_no_leftovers("cond-byname");
}

#[test]
fn bound_lock_owner_killed() {
    let cond = Condition::new().unwrap();
    let held = Event::new().unwrap();
    let mut holder: Proc<()> = start(Fork, {
        let (cond, held) = (cond.clone(), held.clone());
        move || {
            let g = cond.lock().unwrap();
            held.set();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
                std::hint::black_box(&g);
            }
        }
    });
    assert!(held.wait_timeout(common::WATCHDOG).unwrap());
    assert!(matches!(cond.lock_timeout(Duration::from_millis(5)), Err(LockError::Failed(Error::Timeout))));
    common::kill_and_reap(&mut holder);
    let mut g = match cond.lock() {
        Err(LockError::OwnerDied(g)) => g,
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    // The guard is a working one.
    assert_eq!(g.notify_all().unwrap(), 0);
    assert!(!g.wait_timeout(Duration::from_millis(1)).unwrap());
    drop(g);
    drop(cond.lock().unwrap());
}
