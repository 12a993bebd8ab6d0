//! `RLock`: recursion, ownership by (process, thread), Python-style
//! acquire/release, cross-process exclusion, and owner death.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Proc, assert_no_leftovers, join_all_ok, join_ok, kill_and_reap, read_u64, unique_name, write_u64};
use shmproc::{Error, Event, LockError, RLock, Segment, StartMethod::Fork};

#[test]
fn recursion_depth() {
    let r = RLock::new().unwrap();
    assert_eq!(r.depth(), 0);
    assert!(!r.is_locked());
    let a = r.lock().unwrap();
    let b = r.try_lock().unwrap();
    let c = r.lock_timeout(Duration::from_millis(1)).unwrap();
    assert_eq!(r.depth(), 3);
    drop(c);
    assert_eq!(r.depth(), 2);
    drop(b);
    assert_eq!(r.depth(), 1);
    assert!(r.is_locked());
    drop(a);
    assert_eq!(r.depth(), 0);
    assert!(!r.is_locked());
}

#[test]
fn release_by_a_non_owner_thread_is_not_owner() {
    let r = RLock::new().unwrap();
    let g = r.lock().unwrap();
    let r2 = r.clone();
    let (release, depth, try_lock_blocked) = std::thread::spawn(move || {
        let release = r2.release();
        (release, r2.depth(), matches!(r2.try_lock(), Err(LockError::Failed(Error::WouldBlock))))
    })
    .join()
    .unwrap();
    assert!(matches!(release, Err(Error::NotOwner)), "{release:?}");
    assert_eq!(depth, 0, "another thread holds no level");
    assert!(try_lock_blocked);
    // The failed release changed nothing.
    assert_eq!(r.depth(), 1);
    drop(g);
    assert!(!r.is_locked());
}

#[test]
fn release_when_not_held_is_not_owner() {
    let r = RLock::new().unwrap();
    assert!(matches!(r.release(), Err(Error::NotOwner)));
    assert!(r.acquire(true, None).unwrap());
    r.release().unwrap();
    assert!(matches!(r.release(), Err(Error::NotOwner)));
}

#[test]
fn python_style_acquire_release() {
    let r = RLock::new().unwrap();
    assert!(r.acquire(true, None).unwrap());
    assert!(r.acquire(false, None).unwrap());
    assert!(r.acquire(true, Some(Duration::from_millis(1))).unwrap());
    assert_eq!(r.depth(), 3);

    // Another process cannot take it, blocking or not, while we hold it.
    let r2 = r.clone();
    let mut c = common::start(Fork, move || {
        assert!(!r2.acquire(false, None).unwrap());
        let start = Instant::now();
        assert!(!r2.acquire(true, Some(Duration::from_millis(50))).unwrap());
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(matches!(r2.release(), Err(Error::NotOwner)));
    });
    join_ok(&mut c);

    for depth in (0..3).rev() {
        r.release().unwrap();
        assert_eq!(r.depth(), depth);
    }
    assert!(!r.is_locked());

    // Now the other process gets it, and hands it back.
    let r2 = r.clone();
    let mut c = common::start(Fork, move || {
        let r = r2;
        assert!(r.acquire(true, Some(Duration::from_secs(10))).unwrap());
        assert!(r.acquire(true, None).unwrap());
        assert_eq!(r.depth(), 2);
        r.release().unwrap();
        r.release().unwrap();
        assert!(r.release().is_err());
    });
    join_ok(&mut c);
    assert!(!r.is_locked());
}

#[test]
fn cross_process_exclusion_exact_total() {
    const PROCS: usize = 4;
    const ROUNDS: u64 = 1000;
    let r = RLock::new().unwrap();
    let seg = Arc::new(Segment::anonymous(8).unwrap());
    let mut children: Vec<Proc<()>> = (0..PROCS)
        .map(|_| {
            let (r, seg) = (r.clone(), Arc::clone(&seg));
            common::start(Fork, move || {
                for _ in 0..ROUNDS {
                    // Two levels, each adding one: only the lock makes it exact.
                    let outer = r.lock().unwrap();
                    let v = read_u64(&seg, 0);
                    write_u64(&seg, 0, v + 1);
                    let inner = r.lock().unwrap();
                    assert_eq!(r.depth(), 2);
                    let v = read_u64(&seg, 0);
                    write_u64(&seg, 0, v + 1);
                    drop(inner);
                    drop(outer);
                }
            })
        })
        .collect();
    join_all_ok(&mut children);
    assert_eq!(read_u64(&seg, 0), PROCS as u64 * ROUNDS * 2);
}

#[test]
fn by_name_across_processes() {
    let name = unique_name("rlock-byname");
    let r = RLock::create(&name).unwrap();
    assert_eq!(r.name(), Some(name.as_str()));
    assert!(matches!(RLock::create(&name), Err(Error::AlreadyExists { .. })));
    let g = r.lock().unwrap();
    let mut c = common::start(Fork, {
        let name = name.clone();
        move || {
            let r = RLock::open(&name).unwrap();
            assert!(r.is_locked());
            assert!(r.try_lock().is_err());
            assert_eq!(r.depth(), 0);
        }
    });
    join_ok(&mut c);
    drop(g);
    drop(r);
    assert!(matches!(RLock::open(&name), Err(Error::NotFound { .. })));
    assert_no_leftovers("rlock-byname");
}

#[test]
fn owner_killed_at_depth_three() {
    let r = RLock::new().unwrap();
    let held = Event::new().unwrap();
    let mut holder: Proc<()> = common::start(Fork, {
        let (r, held) = (r.clone(), held.clone());
        move || {
            let guards = [r.lock().unwrap(), r.lock().unwrap(), r.lock().unwrap()];
            assert_eq!(r.depth(), 3);
            held.set();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
                std::hint::black_box(&guards);
            }
        }
    });
    assert!(held.wait_timeout(common::WATCHDOG).unwrap(), "holder never took the lock");
    assert!(r.is_locked());
    assert_eq!(r.depth(), 0);
    assert_eq!(kill_and_reap(&mut holder), Some(-libc::SIGKILL));

    let start = Instant::now();
    let g = match r.lock() {
        Err(LockError::OwnerDied(g)) => g,
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    let took = start.elapsed();
    eprintln!("RLock owner death noticed after {took:?}");
    assert!(took < Duration::from_secs(5), "takeover took {took:?}");
    // The dead owner's three levels are gone: we hold exactly one.
    assert_eq!(r.depth(), 1);
    drop(g);
    assert_eq!(r.depth(), 0);
    assert!(!r.is_locked());
    // Works normally afterwards, recursively too.
    let a = r.lock().unwrap();
    let b = r.lock().unwrap();
    assert_eq!(r.depth(), 2);
    drop((b, a));
    assert!(!r.is_locked());
}

#[test]
fn owner_killed_python_style_acquire_reports_true() {
    let r = RLock::new().unwrap();
    let held = Event::new().unwrap();
    let mut holder: Proc<()> = common::start(Fork, {
        let (r, held) = (r.clone(), held.clone());
        move || {
            assert!(r.acquire(true, None).unwrap());
            held.set();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    });
    assert!(held.wait_timeout(common::WATCHDOG).unwrap());
    kill_and_reap(&mut holder);
    assert!(r.acquire(true, Some(Duration::from_secs(10))).unwrap());
    assert_eq!(r.depth(), 1);
    r.release().unwrap();
    assert!(!r.is_locked());
}

#[test]
fn thread_exiting_at_depth_two() {
    let r = RLock::new().unwrap();
    let r2 = r.clone();
    std::thread::spawn(move || {
        assert!(r2.acquire(true, None).unwrap());
        assert!(r2.acquire(true, None).unwrap());
    })
    .join()
    .unwrap();
    assert!(r.is_locked());
    assert!(matches!(r.release(), Err(Error::NotOwner)));
    match r.lock() {
        Err(LockError::OwnerDied(g)) => {
            assert_eq!(r.depth(), 1);
            drop(g);
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(!r.is_locked());
}
