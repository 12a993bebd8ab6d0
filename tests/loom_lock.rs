//! Loom models of the owner-tracking locks: [`Lock`], [`RLock`], and the
//! [`Condition`] built on them.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --target-dir target/loom --test 'loom_*'`.
//! Under `cfg(loom)` every `new()` puts the state on the heap and the futex is a
//! loom `Mutex` + `Condvar` (see `src/loom.rs`), so a lost wake-up shows up as a
//! loom deadlock and a missing happens-before edge as a causality violation on
//! the [`Cell`] the critical sections write.
//!
//! Each model uses only the public API. `LOOM_MAX_PREEMPTIONS` overrides the
//! preemption bound each model picks.
#![cfg(loom)]

mod loom_common;

use loom_common::{Cell, model};

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use loom::thread;
use shmproc::{Condition, Error, Lock, LockError, RLock};

/// Locks `lock` and bumps `cell` `times` times, each in its own critical section.
fn bump_locked(lock: &Lock, cell: &Cell, times: u32) {
    for _ in 0..times {
        let g = lock.lock().expect("nobody dies in a loom model");
        cell.bump();
        drop(g);
    }
}

#[test]
fn lock_two_threads_exclude_each_other() {
    model(4, || {
        let lock = Lock::new().unwrap();
        let cell = Cell::new();
        let (l, c) = (lock.clone(), cell.clone());
        let t = thread::spawn(move || bump_locked(&l, &c, 1));
        bump_locked(&lock, &cell, 1);
        t.join().unwrap();
        assert_eq!(cell.get(), 2);
        assert!(!lock.is_locked());
    });
}

/// Three contenders: whoever sleeps on the word is woken by a later unlock
/// (a waiter left asleep would be a loom deadlock at `join`).
#[test]
fn lock_three_threads_every_sleeper_is_woken() {
    model(3, || {
        let lock = Lock::new().unwrap();
        let cell = Cell::new();
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let (l, c) = (lock.clone(), cell.clone());
                thread::spawn(move || bump_locked(&l, &c, 1))
            })
            .collect();
        bump_locked(&lock, &cell, 1);
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(cell.get(), 3);
        assert!(!lock.is_locked());
    });
}

/// The same thread locking twice in a row while another contends: the second
/// acquisition of a thread that was woken keeps the waiter bit correct.
#[test]
fn lock_reacquire_while_contended() {
    model(4, || {
        let lock = Lock::new().unwrap();
        let cell = Cell::new();
        let (l, c) = (lock.clone(), cell.clone());
        let t = thread::spawn(move || bump_locked(&l, &c, 2));
        bump_locked(&lock, &cell, 1);
        t.join().unwrap();
        assert_eq!(cell.get(), 3);
    });
}

/// `try_lock` never waits and never breaks exclusion; `lock_timeout` either
/// gets the lock or reports `Timeout` (under the model a timed sleep times out
/// at once, so both outcomes are explored).
#[test]
fn lock_try_and_timeout_are_exclusive() {
    model(4, || {
        let lock = Lock::new().unwrap();
        let cell = Cell::new();
        let (l, c) = (lock.clone(), cell.clone());
        let t = thread::spawn(move || match l.try_lock() {
            Ok(g) => {
                c.bump();
                drop(g);
                1
            }
            Err(LockError::Failed(Error::WouldBlock)) => 0,
            Err(e) => panic!("try_lock: {e}"),
        });
        let mine = match lock.lock_timeout(std::time::Duration::from_secs(1)) {
            Ok(g) => {
                assert!(lock.is_owned_by_current_thread());
                cell.bump();
                drop(g);
                1
            }
            Err(LockError::Failed(Error::Timeout)) => 0,
            Err(e) => panic!("lock_timeout: {e}"),
        };
        let theirs = t.join().unwrap();
        assert_eq!(cell.get(), mine + theirs);
        assert!(!lock.is_locked());
    });
}

#[test]
fn rlock_recursion_and_a_second_thread() {
    model(4, || {
        let r = RLock::new().unwrap();
        let cell = Cell::new();
        let (r2, c2) = (r.clone(), cell.clone());
        let t = thread::spawn(move || {
            let a = r2.lock().unwrap();
            let b = r2.lock().unwrap();
            assert_eq!(r2.depth(), 2);
            c2.bump();
            drop(b);
            assert_eq!(r2.depth(), 1);
            c2.bump();
            drop(a);
            assert_eq!(r2.depth(), 0);
        });
        {
            let g = r.lock().unwrap();
            assert_eq!(r.depth(), 1);
            cell.bump();
            drop(g);
        }
        assert_eq!(r.depth(), 0);
        t.join().unwrap();
        assert_eq!(cell.get(), 3);
        assert!(!r.is_locked());
    });
}

/// Python-style `acquire` / `release`, and a release by a non-owner refused.
#[test]
fn rlock_acquire_release_and_not_owner() {
    model(4, || {
        let r = RLock::new().unwrap();
        let cell = Cell::new();
        let (r2, c2) = (r.clone(), cell.clone());
        let t = thread::spawn(move || {
            assert!(r2.acquire(true, None).unwrap());
            assert!(r2.acquire(false, None).unwrap()); // re-entry never blocks
            c2.bump();
            r2.release().unwrap();
            r2.release().unwrap();
            assert!(matches!(r2.release(), Err(Error::NotOwner)));
        });
        // Never owned here: refused whatever the other thread is doing.
        assert!(matches!(r.release(), Err(Error::NotOwner)));
        assert!(r.acquire(true, None).unwrap());
        cell.bump();
        r.release().unwrap();
        t.join().unwrap();
        assert_eq!(cell.get(), 2);
    });
}

/// A waiter registered under the lock is woken by `notify(1)`, and the
/// notifier, who saw it registered under the lock, counts it.
#[test]
fn condition_notify_one_after_the_waiter_registered() {
    model(4, || {
        let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
        let registered = Arc::new(AtomicBool::new(false));
        let (c2, reg2) = (cond.clone(), registered.clone());
        let waiter = thread::spawn(move || {
            let mut g = c2.lock().unwrap();
            reg2.store(true, SeqCst);
            g.wait().unwrap(); // untimed: returns only once notified
        });
        loop {
            let g = cond.lock().unwrap();
            if registered.load(SeqCst) {
                assert_eq!(g.notify(1).unwrap(), 1);
                break;
            }
            drop(g);
            thread::yield_now();
        }
        waiter.join().unwrap();
        // The slot was freed: nobody is left to notify.
        assert_eq!(cond.lock().unwrap().notify_all().unwrap(), 0);
    });
}

/// `notify_all` with two registered waiters wakes both (each sleeps on its
/// own slot's word; the wake-ups are issued once the notifier unlocks).
#[test]
fn condition_notify_all_wakes_two_waiters() {
    model(2, || {
        let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
        let registered = Arc::new(AtomicU32::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (c, reg) = (cond.clone(), registered.clone());
                thread::spawn(move || {
                    let mut g = c.lock().unwrap();
                    reg.fetch_add(1, SeqCst);
                    g.wait().unwrap();
                })
            })
            .collect();
        loop {
            let g = cond.lock().unwrap();
            if registered.load(SeqCst) == 2 {
                assert_eq!(g.notify_all().unwrap(), 2);
                break;
            }
            drop(g);
            thread::yield_now();
        }
        for w in waiters {
            w.join().unwrap();
        }
    });
}

/// A notifier that goes on to wait itself (rather than dropping its guard)
/// still wakes the waiter it notified.
#[test]
fn condition_notifier_that_waits_still_wakes() {
    model(3, || {
        let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
        let registered = Arc::new(AtomicBool::new(false));
        let (c2, reg2) = (cond.clone(), registered.clone());
        let waiter = thread::spawn(move || {
            let mut g = c2.lock().unwrap();
            reg2.store(true, SeqCst);
            g.wait().unwrap();
            g.notify(1).unwrap() // the notifier may be waiting by now
        });
        loop {
            let mut g = cond.lock().unwrap();
            if registered.load(SeqCst) {
                assert_eq!(g.notify(1).unwrap(), 1);
                let _ = g.wait_timeout(std::time::Duration::from_secs(1)).unwrap();
                assert!(bound_lock_held_here(&cond));
                break;
            }
            drop(g);
            thread::yield_now();
        }
        let _ = waiter.join().unwrap();
    });
}

/// `wait_for` with a predicate on an atomic set under the lock by a notifier.
#[test]
fn condition_wait_for_predicate() {
    model(4, || {
        let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
        let flag = Arc::new(AtomicU32::new(0));
        let (c2, f2) = (cond.clone(), flag.clone());
        let waiter = thread::spawn(move || {
            let mut g = c2.lock().unwrap();
            assert!(g.wait_for(|| f2.load(SeqCst) == 1, None).unwrap());
        });
        {
            let g = cond.lock().unwrap();
            flag.store(1, SeqCst);
            g.notify_all().unwrap();
        }
        waiter.join().unwrap();
    });
}

/// A condition bound to an `RLock` held twice: waiting releases every level
/// (or the notifier could never lock) and restores the depth afterwards.
#[test]
fn condition_on_rlock_restores_depth() {
    model(4, || {
        let r = RLock::new().unwrap();
        let cond = Condition::with_lock(r.clone()).unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let (c2, r2, f2) = (cond.clone(), r.clone(), flag.clone());
        let waiter = thread::spawn(move || {
            let mut g = c2.lock().unwrap();
            let inner = r2.lock().unwrap();
            assert_eq!(r2.depth(), 2);
            assert!(g.wait_for(|| f2.load(SeqCst), None).unwrap());
            assert_eq!(r2.depth(), 2);
            drop(inner);
            drop(g);
            assert_eq!(r2.depth(), 0);
        });
        {
            let g = cond.lock().unwrap();
            flag.store(true, SeqCst);
            g.notify(1).unwrap();
        }
        waiter.join().unwrap();
        assert!(!r.is_locked());
    });
}

/// A timed wait (which the model times out at once, or that a notify beats)
/// always comes back holding the lock and frees its slot.
#[test]
fn condition_timed_wait_frees_its_slot() {
    model(4, || {
        let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
        let c2 = cond.clone();
        let waiter = thread::spawn(move || {
            let mut g = c2.lock().unwrap();
            let _notified = g.wait_timeout(std::time::Duration::from_secs(1)).unwrap();
            assert!(bound_lock_held_here(&c2));
        });
        let n = cond.lock().unwrap().notify(1).unwrap();
        assert!(n <= 1);
        waiter.join().unwrap();
        assert_eq!(cond.lock().unwrap().notify_all().unwrap(), 0);
    });
}

/// Whether the calling thread holds `cond`'s bound lock.
fn bound_lock_held_here(cond: &Condition) -> bool {
    match cond.bound_lock() {
        shmproc::CondLock::Lock(l) => l.is_owned_by_current_thread(),
        shmproc::CondLock::RLock(r) => r.depth() > 0,
    }
}
