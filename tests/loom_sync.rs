//! Loom models of the primitives that sleep through the counted-sleeper
//! handshake (`sleep_counted` / `wake_counted`): [`Semaphore`],
//! [`BoundedSemaphore`], [`Event`] and [`Barrier`].
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --target-dir target/loom --test 'loom_*'`.
//! Under `cfg(loom)` every `new()` puts the state on the heap and the futex is a
//! loom `Mutex` + `Condvar` (see `src/loom.rs`): a waker that skips the wake-up
//! while someone sleeps leaves that thread asleep forever, which loom reports as
//! a deadlock.
//!
//! Each model uses only the public API. `LOOM_MAX_PREEMPTIONS` overrides the
//! preemption bound each model picks.
#![cfg(loom)]

mod loom_common;

use loom_common::{Cell, model};

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering::SeqCst};
use loom::thread;
use shmproc::{Barrier, BoundedSemaphore, Error, Event, Semaphore};

/// A semaphore of value 1 is a lock: two threads exclude each other, and the
/// one that sleeps is woken by the other's release.
#[test]
fn semaphore_of_one_excludes_two_threads() {
    model(4, || {
        let sem = Semaphore::new(1).unwrap();
        let cell = Cell::new();
        let (s, c) = (sem.clone(), cell.clone());
        let t = thread::spawn(move || {
            s.acquire();
            c.bump();
            s.release().unwrap();
        });
        sem.acquire();
        cell.bump();
        sem.release().unwrap();
        t.join().unwrap();
        assert_eq!(cell.get(), 2);
        assert_eq!(sem.get_value(), 1);
    });
}

/// Three threads on one slot: every sleeper is eventually woken.
#[test]
fn semaphore_of_one_three_threads() {
    model(3, || {
        let sem = Semaphore::new(1).unwrap();
        let cell = Cell::new();
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let (s, c) = (sem.clone(), cell.clone());
                thread::spawn(move || {
                    s.acquire();
                    c.bump();
                    s.release().unwrap();
                })
            })
            .collect();
        sem.acquire();
        cell.bump();
        sem.release().unwrap();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(cell.get(), 3);
        assert_eq!(sem.get_value(), 1);
    });
}

/// A release wakes a thread asleep on an empty semaphore (two sleepers, two
/// releases: each release must reach a sleeper).
#[test]
fn semaphore_release_wakes_sleepers() {
    model(3, || {
        let sem = Semaphore::new(0).unwrap();
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let s = sem.clone();
                thread::spawn(move || s.acquire())
            })
            .collect();
        sem.release().unwrap();
        sem.release().unwrap();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(sem.get_value(), 0);
    });
}

/// `try_acquire` and `acquire_timeout` (which the model times out at once, or
/// that a release beats) never hand out more slots than exist.
#[test]
fn semaphore_try_and_timeout_never_oversubscribe() {
    model(4, || {
        let sem = Semaphore::new(1).unwrap();
        let held = Arc::new(AtomicU32::new(0));
        let (s, h) = (sem.clone(), held.clone());
        let t = thread::spawn(move || {
            if s.try_acquire() {
                assert_eq!(h.fetch_add(1, SeqCst), 0);
                h.fetch_sub(1, SeqCst);
                s.release().unwrap();
            }
        });
        if sem.acquire_timeout(std::time::Duration::from_secs(1)) {
            assert_eq!(held.fetch_add(1, SeqCst), 0);
            held.fetch_sub(1, SeqCst);
            sem.release().unwrap();
        }
        t.join().unwrap();
        assert_eq!(sem.get_value(), 1);
    });
}

/// A bounded semaphore passes its one slot between two threads and refuses a
/// release above its bound.
#[test]
fn bounded_semaphore_handoff_and_over_release() {
    model(4, || {
        let sem = BoundedSemaphore::new(1).unwrap();
        let cell = Cell::new();
        let (s, c) = (sem.clone(), cell.clone());
        let t = thread::spawn(move || {
            s.acquire();
            c.bump();
            s.release().unwrap();
        });
        sem.acquire();
        cell.bump();
        sem.release().unwrap();
        t.join().unwrap();
        assert_eq!(cell.get(), 2);
        assert!(matches!(sem.release(), Err(Error::OverRelease { bound: 1 })));
        assert_eq!(sem.get_value(), 1);
    });
}

/// `set` wakes every waiter, however the waiters' announcements interleave
/// with it, and publishes what the setter wrote before it.
#[test]
fn event_set_wakes_every_waiter() {
    model(3, || {
        let ev = Event::new().unwrap();
        let data = Arc::new(AtomicU32::new(0));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let (e, d) = (ev.clone(), data.clone());
                thread::spawn(move || {
                    e.wait().unwrap();
                    assert!(e.is_set().unwrap());
                    assert_eq!(d.load(SeqCst), 7);
                })
            })
            .collect();
        data.store(7, SeqCst);
        ev.set();
        for t in ts {
            t.join().unwrap();
        }
    });
}

/// A timed wait (timed out at once by the model, or beaten by `set`) reports
/// the flag truthfully; a `clear` before `set` does not lose the `set`.
#[test]
fn event_timed_wait_and_clear() {
    model(4, || {
        let ev = Event::new().unwrap();
        let e = ev.clone();
        let t = thread::spawn(move || {
            let got = e.wait_timeout(std::time::Duration::from_secs(1)).unwrap();
            e.wait().unwrap(); // the set below always comes
            got
        });
        ev.clear();
        ev.set();
        let _ = t.join().unwrap();
        assert!(ev.is_set().unwrap());
        ev.clear();
        assert!(!ev.is_set().unwrap());
    });
}

/// Two parties meet: both are released, with distinct arrival indices.
#[test]
fn barrier_two_parties_distinct_indices() {
    model(4, || {
        let b = Barrier::new(2).unwrap();
        let b2 = b.clone();
        let t = thread::spawn(move || b2.wait().unwrap());
        let mine = b.wait().unwrap();
        let theirs = t.join().unwrap();
        assert_eq!(mine + theirs, 1, "indices {mine} and {theirs}");
        assert!(!b.broken());
        assert_eq!(b.n_waiting(), 0);
    });
}

/// `abort` releases a party that waits (or meets one about to), with
/// `BrokenBarrier`; `reset` makes the barrier usable again.
#[test]
fn barrier_abort_breaks_a_waiter() {
    model(4, || {
        let b = Barrier::new(2).unwrap();
        let b2 = b.clone();
        let t = thread::spawn(move || b2.wait());
        b.abort().unwrap();
        assert!(matches!(t.join().unwrap(), Err(Error::BrokenBarrier)));
        assert!(b.broken());
        b.reset().unwrap();
        assert!(!b.broken());
    });
}
