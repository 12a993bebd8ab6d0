//! `Event` across processes: set wakes every waiter, timeouts, clear, and a
//! flag that a peer overwrote with garbage.

mod common;

use std::time::{Duration, Instant};

use common::{Proc, assert_no_leftovers, join_all_ok, join_ok, scribble, start, unique_name};
use shmproc::{Error, Event, Semaphore, StartMethod::Fork, WaitStrategy};

/// Byte offset of the event's flag in its `/dev/shm` file: the first `u32` of
/// the payload, right after the 64-byte header.
const FLAG_OFFSET: u64 = 64;

#[test]
fn smoke_set_clear() {
    let e = Event::new().unwrap();
    assert!(!e.is_set().unwrap());
    e.set();
    assert!(e.is_set().unwrap());
    e.set(); // idempotent
    assert!(e.is_set().unwrap());
    e.wait().unwrap();
    assert!(e.wait_timeout(Duration::ZERO).unwrap());
    e.clear();
    assert!(!e.is_set().unwrap());
    assert!(!e.wait_timeout(Duration::ZERO).unwrap());
    e.clear();
    assert!(!e.is_set().unwrap());
}

#[test]
fn set_wakes_every_waiting_process() {
    const WAITERS: usize = 4;
    let e = Event::new().unwrap();
    let ready = Semaphore::new(0).unwrap();
    let mut children: Vec<Proc<()>> = (0..WAITERS)
        .map(|i| {
            let (e, ready) = (e.clone(), ready.clone());
            start(Fork, move || {
                let strategy = [WaitStrategy::Adaptive, WaitStrategy::Block, WaitStrategy::Spin][i % 3];
                let e = e.with_wait_strategy(strategy);
                assert!(!e.is_set().unwrap(), "set too early");
                ready.release().unwrap();
                // Untimed: a lost wake-up shows up as the watchdog firing.
                e.wait().unwrap();
                assert!(e.is_set().unwrap());
            })
        })
        .collect();
    for _ in 0..WAITERS {
        assert!(ready.acquire_timeout(common::WATCHDOG));
    }
    // Give them time to fall asleep (not needed for correctness).
    std::thread::sleep(Duration::from_millis(30));
    for c in &mut children {
        assert!(c.is_alive(), "a waiter returned before set: {:?}", c.join_timeout(Duration::ZERO));
    }
    e.set();
    join_all_ok(&mut children);
}

#[test]
fn wait_timeout_is_false_after_at_least_the_timeout() {
    let e = Event::new().unwrap();
    for strategy in [WaitStrategy::Adaptive, WaitStrategy::Block, WaitStrategy::Spin] {
        e.set_wait_strategy(strategy);
        for timeout in [Duration::ZERO, Duration::from_millis(2), Duration::from_millis(40)] {
            let start = Instant::now();
            assert!(!e.wait_timeout(timeout).unwrap());
            let elapsed = start.elapsed();
            assert!(elapsed >= timeout, "{strategy:?}: wait_timeout({timeout:?}) returned after {elapsed:?}");
        }
    }
}

#[test]
fn wait_timeout_true_when_set_by_another_process() {
    let e = Event::new().unwrap();
    let mut c = start(Fork, {
        let e = e.clone();
        move || {
            std::thread::sleep(Duration::from_millis(20));
            e.set();
        }
    });
    assert!(e.wait_timeout(common::WATCHDOG).unwrap());
    join_ok(&mut c);
    // Cleared by another process: waits time out again.
    let mut c = start(Fork, {
        let e = e.clone();
        move || e.clear()
    });
    join_ok(&mut c);
    assert!(!e.wait_timeout(Duration::from_millis(5)).unwrap());
}

#[test]
fn by_name() {
    let name = unique_name("event-byname");
    let e = Event::create(&name).unwrap();
    assert_eq!(e.name(), Some(name.as_str()));
    assert!(matches!(Event::create(&name), Err(Error::AlreadyExists { .. })));
    let mut c = start(Fork, {
        let name = name.clone();
        move || {
            let e = Event::open(&name).unwrap();
            e.wait().unwrap();
            e.clear();
        }
    });
    e.set();
    join_ok(&mut c);
    assert!(!e.is_set().unwrap());
    drop(e);
    assert!(matches!(Event::open(&name), Err(Error::NotFound { .. })));
    assert_no_leftovers("event-byname");
}

#[test]
fn garbage_flag_is_corrupt_not_a_panic_or_a_hang() {
    for garbage in [2u32, 7, 0x8000_0000, u32::MAX] {
        let name = unique_name("event-garbage");
        let e = Event::create(&name).unwrap();
        let opened = Event::open(&name).unwrap();
        scribble(&name, FLAG_OFFSET, &garbage.to_le_bytes());
        // Run the checks in a child under the watchdog: a hang fails the test.
        let (e2, opened2) = (e.clone(), opened.clone());
        let mut checker = start(Fork, move || {
            let (e, opened) = (e2, opened2);
            for ev in [&e, &opened] {
                let r = ev.is_set();
                assert!(matches!(r, Err(Error::Corrupt { .. })), "is_set on {garbage:#x}: {r:?}");
                assert!(r.unwrap_err().to_string().contains(&garbage.to_string()));
                assert!(matches!(ev.wait(), Err(Error::Corrupt { .. })));
                assert!(matches!(ev.wait_timeout(Duration::from_millis(10)), Err(Error::Corrupt { .. })));
                for s in [WaitStrategy::Block, WaitStrategy::Spin] {
                    let ev = ev.clone().with_wait_strategy(s);
                    assert!(matches!(ev.wait(), Err(Error::Corrupt { .. })), "{s:?}");
                }
            }
            let _ = format!("{e:?}"); // Debug must not panic either
        });
        join_ok(&mut checker);
        // set and clear repair it.
        e.set();
        assert!(opened.is_set().unwrap());
        scribble(&name, FLAG_OFFSET, &garbage.to_le_bytes());
        e.clear();
        assert!(!opened.is_set().unwrap());
        drop((e, opened));
    }
    assert_no_leftovers("event-garbage");
}
