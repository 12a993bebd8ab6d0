//! `Semaphore` and `BoundedSemaphore` across processes: the count bounds how
//! many are inside, timeouts, over-release, opening by name and by wrong kind.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Proc, assert_no_leftovers, atomic_u32, join_all_ok, join_ok, start, unique_name};
use shmproc::{BoundedSemaphore, Error, Segment, Semaphore, StartMethod::Fork, WaitStrategy};

#[test]
fn smoke() {
    let s = Semaphore::new(2).unwrap();
    assert_eq!(s.get_value(), 2);
    s.acquire();
    assert!(s.try_acquire());
    assert!(!s.try_acquire());
    assert_eq!(s.get_value(), 0);
    s.release().unwrap();
    assert_eq!(s.get_value(), 1);
    // An unbounded semaphore may be released above its initial value.
    s.release().unwrap();
    s.release().unwrap();
    assert_eq!(s.get_value(), 3);

    let zero = Semaphore::new(0).unwrap();
    assert!(!zero.try_acquire());
}

#[test]
fn at_most_four_of_eight_processes_inside() {
    const SLOTS: u32 = 4;
    const PROCS: usize = 8;
    const ROUNDS: usize = 25;
    let sem = Semaphore::new(SLOTS).unwrap();
    // Word 0: processes inside now; word 1: most ever seen inside;
    // word 2: times a process saw more than SLOTS inside.
    let seg = Arc::new(Segment::anonymous(64).unwrap());
    let mut children: Vec<Proc<()>> = (0..PROCS)
        .map(|i| {
            let sem = sem.clone();
            let seg = Arc::clone(&seg);
            start(Fork, move || {
                let (inside, max, over) = (atomic_u32(&seg, 0), atomic_u32(&seg, 4), atomic_u32(&seg, 8));
                if i % 2 == 1 {
                    sem.set_wait_strategy(WaitStrategy::Block);
                }
                for _ in 0..ROUNDS {
                    sem.acquire();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    if now > SLOTS {
                        over.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    inside.fetch_sub(1, Ordering::SeqCst);
                    sem.release().unwrap();
                }
            })
        })
        .collect();
    join_all_ok(&mut children);
    assert_eq!(atomic_u32(&seg, 8).load(Ordering::SeqCst), 0, "more than {SLOTS} inside at once");
    assert_eq!(atomic_u32(&seg, 4).load(Ordering::SeqCst), SLOTS, "the maximum inside should reach {SLOTS}");
    assert_eq!(atomic_u32(&seg, 0).load(Ordering::SeqCst), 0);
    assert_eq!(sem.get_value(), SLOTS);
}

#[test]
fn acquire_timeout_and_wake_up_by_another_process() {
    let sem = Semaphore::new(0).unwrap();
    for timeout in [Duration::ZERO, Duration::from_millis(1), Duration::from_millis(40)] {
        let start = Instant::now();
        assert!(!sem.acquire_timeout(timeout));
        assert!(start.elapsed() >= timeout, "acquire_timeout({timeout:?}) returned after {:?}", start.elapsed());
    }
    let blocking = sem.clone().with_wait_strategy(WaitStrategy::Block);
    let start = Instant::now();
    assert!(!blocking.acquire_timeout(Duration::from_millis(40)));
    assert!(start.elapsed() >= Duration::from_millis(40));

    // Two processes wait; releases from the parent wake each exactly once.
    let got = Arc::new(Segment::anonymous(8).unwrap());
    let mut children: Vec<Proc<()>> = (0..2)
        .map(|_| {
            let (sem, got) = (sem.clone(), Arc::clone(&got));
            common::start(Fork, move || {
                assert!(sem.acquire_timeout(common::WATCHDOG), "never released");
                atomic_u32(&got, 0).fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    sem.release().unwrap();
    sem.release().unwrap();
    join_all_ok(&mut children);
    assert_eq!(atomic_u32(&got, 0).load(Ordering::SeqCst), 2);
    assert_eq!(sem.get_value(), 0);
}

#[test]
fn bounded_over_release() {
    let b = BoundedSemaphore::new(2).unwrap();
    assert_eq!(b.bound(), 2);
    assert!(matches!(b.release(), Err(Error::OverRelease { bound: 2 })));
    assert_eq!(b.get_value(), 2);
    b.acquire();
    assert!(b.try_acquire());
    assert!(!b.acquire_timeout(Duration::from_millis(5)));
    b.release().unwrap();
    b.release().unwrap();
    let e = b.release().unwrap_err();
    assert!(matches!(e, Error::OverRelease { bound: 2 }), "{e}");
    assert!(e.to_string().contains('2'), "{e}");
    assert_eq!(b.get_value(), 2);

    // Across processes: a child's extra release is refused too.
    b.acquire();
    let mut c = start(Fork, {
        let b = b.clone();
        move || {
            b.release().unwrap();
            assert!(matches!(b.release(), Err(Error::OverRelease { bound: 2 })));
        }
    });
    join_ok(&mut c);
    assert_eq!(b.get_value(), 2);
}

#[test]
fn open_by_name() {
    let name = unique_name("sem-byname");
    let sem = Semaphore::create(&name, 3).unwrap();
    assert_eq!(sem.name(), Some(name.as_str()));
    assert!(matches!(Semaphore::create(&name, 1), Err(Error::AlreadyExists { .. })));
    let bname = unique_name("sem-byname");
    let bounded = BoundedSemaphore::create(&bname, 1).unwrap();
    let mut c = start(Fork, {
        let (name, bname) = (name.clone(), bname.clone());
        move || {
            let s = Semaphore::open(&name).unwrap();
            assert_eq!(s.get_value(), 3);
            assert!(s.try_acquire());
            let b = BoundedSemaphore::open(&bname).unwrap();
            assert_eq!(b.bound(), 1);
            assert!(b.try_acquire());
        }
    });
    join_ok(&mut c);
    assert_eq!(sem.get_value(), 2);
    assert_eq!(bounded.get_value(), 0);
    bounded.release().unwrap();
    drop((sem, bounded));
    assert!(matches!(Semaphore::open(&name), Err(Error::NotFound { .. })));
    assert_no_leftovers("sem-byname");
}

#[test]
fn wrong_kind_open_is_a_mismatch_naming_the_kinds() {
    let name = unique_name("sem-kind");
    let sem = Semaphore::create(&name, 1).unwrap();
    let e = BoundedSemaphore::open(&name).unwrap_err();
    match &e {
        Error::Mismatch { field, expected, found } => {
            assert_eq!(*field, "kind");
            assert!(expected.contains("BoundedSemaphore"), "{e}");
            assert!(found.contains("Semaphore") && !found.contains("Bounded"), "{e}");
        }
        other => panic!("expected Mismatch, got {other}"),
    }
    let bname = unique_name("sem-kind");
    let bounded = BoundedSemaphore::create(&bname, 1).unwrap();
    let e = Semaphore::open(&bname).unwrap_err();
    assert!(matches!(&e, Error::Mismatch { field: "kind", found, .. } if found.contains("BoundedSemaphore")), "{e}");
    // And not a lock either.
    let e = shmproc::Lock::open(&name).unwrap_err();
    assert!(matches!(&e, Error::Mismatch { field: "kind", .. }), "{e}");
    assert!(e.to_string().contains("Lock") && e.to_string().contains("Semaphore"), "{e}");
    drop((sem, bounded));
    assert_no_leftovers("sem-kind");
}
