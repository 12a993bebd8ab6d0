//! `Barrier` across processes: distinct arrival indices, the action once per
//! round, several rounds, timeouts and abort breaking it for everyone, reset.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Proc, assert_no_leftovers, atomic_u32, join_all_ok, join_ok, start, unique_name, wait_until};
use shmproc::{Barrier, Error, Segment, StartMethod::Fork, WaitStrategy};

#[test]
fn zero_parties_is_invalid() {
    assert!(matches!(Barrier::new(0), Err(Error::InvalidArgument { .. })));
    let name = unique_name("barrier-zero");
    assert!(matches!(Barrier::create(&name, 0), Err(Error::InvalidArgument { .. })));
    assert!(!common::shm_path(&name).exists(), "a refused barrier must not leave a segment");
    assert_no_leftovers("barrier-zero");
}

#[test]
fn one_party_never_waits() {
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let r = runs.clone();
    let b = Barrier::new(1).unwrap().with_action(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(b.parties(), 1);
    for _ in 0..3 {
        assert_eq!(b.wait().unwrap(), 0);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert!(!b.broken());
}

/// Word offsets in the results segment of `rounds_across_processes`.
const ACTIONS: usize = 0;
fn slot(round: usize, child: usize, parties: usize) -> usize {
    4 * (1 + round * parties + child)
}

#[test]
fn rounds_across_processes() {
    const PARTIES: usize = 4;
    const ROUNDS: usize = 6;
    let seg = Arc::new(Segment::anonymous(4 * (1 + ROUNDS * PARTIES)).unwrap());
    let barrier = Barrier::new(PARTIES as u32).unwrap();
    assert_eq!(barrier.parties(), PARTIES as u32);
    let mut children: Vec<Proc<()>> = (0..PARTIES)
        .map(|i| {
            let seg = seg.clone();
            let barrier = barrier.clone();
            start(Fork, move || {
                // The action belongs to each process's handle; whichever party
                // completes a round runs its own, once.
                let s = seg.clone();
                let strategy = [WaitStrategy::Adaptive, WaitStrategy::Block, WaitStrategy::Spin][i % 3];
                let b = barrier.with_wait_strategy(strategy).with_action(move || {
                    atomic_u32(&s, ACTIONS).fetch_add(1, Ordering::SeqCst);
                });
                for round in 0..ROUNDS {
                    let index = b.wait().unwrap();
                    // The action ran before anyone was released.
                    assert!(atomic_u32(&seg, ACTIONS).load(Ordering::SeqCst) > round as u32);
                    atomic_u32(&seg, slot(round, i, PARTIES)).store(index + 1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    join_all_ok(&mut children);
    assert_eq!(atomic_u32(&seg, ACTIONS).load(Ordering::SeqCst), ROUNDS as u32, "one action per round");
    for round in 0..ROUNDS {
        let mut indices: Vec<u32> =
            (0..PARTIES).map(|i| atomic_u32(&seg, slot(round, i, PARTIES)).load(Ordering::SeqCst)).collect();
        indices.sort_unstable();
        let expected: Vec<u32> = (1..=PARTIES as u32).collect();
        assert_eq!(indices, expected, "round {round}: indices (+1) must be 0..{PARTIES}");
    }
    assert!(!barrier.broken());
    assert_eq!(barrier.n_waiting(), 0);
}

/// Forks a child that waits on `b` without a timeout and expects its wait to
/// fail with `BrokenBarrier`.
fn spawn_expecting_broken(b: &Barrier) -> Proc<()> {
    let b = b.clone();
    start(Fork, move || {
        let r = b.wait();
        assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?}");
    })
}

/// Runs one full round of `b` with `b.parties() - 1` children and this thread.
fn full_round(b: &Barrier) {
    let parties = b.parties() as usize;
    let mut children: Vec<Proc<()>> = (1..parties)
        .map(|_| {
            let b = b.clone();
            start(Fork, move || {
                let index = b.wait_timeout(common::WATCHDOG).unwrap();
                assert!(index < b.parties());
            })
        })
        .collect();
    let index = b.wait_timeout(common::WATCHDOG).unwrap();
    assert!(index < b.parties());
    join_all_ok(&mut children);
    assert!(!b.broken());
}

#[test]
fn a_timeout_breaks_it_for_every_waiter_and_reset_repairs_it() {
    let b = Barrier::new(3).unwrap();
    let mut waiters = vec![spawn_expecting_broken(&b)];
    wait_until("the child to wait", || b.n_waiting() == 1);

    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    assert!(matches!(b.wait_timeout(timeout), Err(Error::BrokenBarrier)));
    assert!(start.elapsed() >= timeout, "timed out after {:?}", start.elapsed());
    assert!(b.broken());
    join_all_ok(&mut waiters);
    // Broken for later callers too, at once.
    assert!(matches!(b.wait_timeout(common::WATCHDOG), Err(Error::BrokenBarrier)));
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));

    b.reset().unwrap();
    assert!(!b.broken());
    assert_eq!(b.n_waiting(), 0);
    full_round(&b);
    full_round(&b);
}

#[test]
fn the_handle_default_timeout_breaks_it() {
    let timeout = Duration::from_millis(30);
    let b = Barrier::new(2).unwrap().with_timeout(timeout);
    let start = Instant::now();
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    assert!(start.elapsed() >= timeout);
    assert!(b.broken());
    b.reset().unwrap();
    full_round(&b);
}

#[test]
fn abort_breaks_it_for_every_waiter() {
    let b = Barrier::new(3).unwrap();
    let mut waiters = vec![spawn_expecting_broken(&b), spawn_expecting_broken(&b)];
    wait_until("both children to wait", || b.n_waiting() == 2);
    b.abort().unwrap();
    assert!(b.broken());
    join_all_ok(&mut waiters);
    assert!(matches!(b.wait_timeout(common::WATCHDOG), Err(Error::BrokenBarrier)));
    b.reset().unwrap();
    assert!(!b.broken());
    full_round(&b);
}

#[test]
fn reset_while_parties_wait_breaks_their_wait_only() {
    let b = Barrier::new(3).unwrap();
    let mut waiters = vec![spawn_expecting_broken(&b)];
    wait_until("the child to wait", || b.n_waiting() == 1);
    b.reset().unwrap();
    // As in Python: the waiter's wait fails, but the barrier is not broken.
    assert!(!b.broken());
    join_all_ok(&mut waiters);
    assert!(!b.broken());
    full_round(&b);
}

#[test]
fn by_name() {
    let name = unique_name("barrier-byname");
    let b = Barrier::create(&name, 2).unwrap();
    assert_eq!(b.name(), Some(name.as_str()));
    assert!(matches!(Barrier::create(&name, 2), Err(Error::AlreadyExists { .. })));
    let mut c = start(Fork, {
        let name = name.clone();
        move || {
            let b = Barrier::open(&name).unwrap();
            assert_eq!(b.parties(), 2);
            b.wait_timeout(common::WATCHDOG).unwrap()
        }
    });
    let mine = b.wait_timeout(common::WATCHDOG).unwrap();
    let theirs = join_ok(&mut c);
    let mut both = [mine, theirs];
    both.sort_unstable();
    assert_eq!(both, [0, 1]);
    drop(b);
    assert!(matches!(Barrier::open(&name), Err(Error::NotFound { .. })));
    assert_no_leftovers("barrier-byname");
}
