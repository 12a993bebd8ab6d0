//! `Lock` across threads and forked processes: exclusion, timeouts, every wait
//! strategy, and owner death (SIGKILL, and a thread exiting with the lock held).

mod common;

use std::time::{Duration, Instant};

use std::sync::Arc;

use common::{Proc, assert_no_leftovers, join_all_ok, join_ok, read_u64, start, unique_name, write_u64};
use shmproc::{Error, Event, Lock, LockError, Segment, StartMethod::Fork, WaitStrategy};

const PROCS: usize = 4;
const INCREMENTS: u64 = 2000;

/// Adds 1 to the plain `u64` at offset 0 of `seg`, `n` times, each under `lock`.
/// The read-modify-write is deliberately non-atomic: only the lock makes the
/// total exact.
fn locked_increments(lock: &Lock, seg: &Segment, n: u64) {
    for _ in 0..n {
        let guard = lock.lock().expect("no owner dies in this test");
        let v = read_u64(seg, 0);
        std::hint::black_box(v);
        write_u64(seg, 0, v + 1);
        drop(guard);
    }
}

#[test]
fn smoke() {
    let lock = Lock::new().unwrap();
    assert!(!lock.is_locked());
    assert_eq!(lock.name(), None);
    {
        let _g = lock.lock().unwrap();
        assert!(lock.is_locked());
        assert!(lock.is_owned_by_current_thread());
        assert!(matches!(lock.try_lock(), Err(LockError::Failed(Error::WouldBlock))));
        assert!(matches!(lock.lock_timeout(Duration::from_millis(5)), Err(LockError::Failed(Error::Timeout))));
    }
    assert!(!lock.is_locked());
    assert!(!lock.is_owned_by_current_thread());
    let g = lock.try_lock().unwrap();
    drop(g);
    let g = lock.lock_timeout(Duration::from_millis(5)).unwrap();
    drop(g);
    // Another thread sees it held, and cannot take it.
    let g = lock.lock().unwrap();
    let l2 = lock.clone();
    let seen = std::thread::spawn(move || (l2.is_locked(), l2.is_owned_by_current_thread(), l2.try_lock().is_err()))
        .join()
        .unwrap();
    assert_eq!(seen, (true, false, true));
    drop(g);
}

#[test]
fn threads_exact_total() {
    let lock = Lock::new().unwrap();
    let seg = Segment::anonymous(8).unwrap();
    std::thread::scope(|s| {
        for _ in 0..PROCS {
            s.spawn(|| locked_increments(&lock, &seg, INCREMENTS));
        }
    });
    assert_eq!(read_u64(&seg, 0), PROCS as u64 * INCREMENTS);
}

#[test]
fn processes_exact_total() {
    let lock = Lock::new().unwrap();
    let seg = Arc::new(Segment::anonymous(8).unwrap());
    let mut children: Vec<Proc<()>> = (0..PROCS)
        .map(|_| {
            let (lock, seg) = (lock.clone(), Arc::clone(&seg));
            start(Fork, move || locked_increments(&lock, &seg, INCREMENTS))
        })
        .collect();
    join_all_ok(&mut children);
    assert_eq!(read_u64(&seg, 0), PROCS as u64 * INCREMENTS);
    assert!(!lock.is_locked());
}

#[test]
fn processes_exact_total_by_name() {
    let lock_name = unique_name("lock-byname");
    let seg_name = unique_name("lock-byname");
    let lock = Lock::create(&lock_name).unwrap();
    assert_eq!(lock.name(), Some(lock_name.as_str()));
    let seg = Segment::create(&seg_name, 8).unwrap();
    let mut children: Vec<Proc<()>> = (0..PROCS)
        .map(|_| {
            let (lock_name, seg_name) = (lock_name.clone(), seg_name.clone());
            start(Fork, move || {
                // Open both by name, as an unrelated process would.
                let lock = Lock::open(&lock_name).unwrap();
                let seg = Segment::open(&seg_name).unwrap();
                locked_increments(&lock, &seg, INCREMENTS);
            })
        })
        .collect();
    // The parent competes too, through its own handles.
    locked_increments(&lock, &seg, INCREMENTS);
    join_all_ok(&mut children);
    assert_eq!(read_u64(&seg, 0), (PROCS as u64 + 1) * INCREMENTS);
    drop((lock, seg));
    assert_no_leftovers("lock-byname");
}

#[test]
fn every_wait_strategy_gives_the_exact_total() {
    for strategy in [WaitStrategy::Spin, WaitStrategy::Block, WaitStrategy::Adaptive] {
        let lock = Lock::new().unwrap().with_wait_strategy(strategy);
        assert_eq!(lock.wait_strategy(), strategy);
        let seg = Arc::new(Segment::anonymous(8).unwrap());
        let mut children: Vec<Proc<()>> = (0..PROCS)
            .map(|_| {
                let (lock, seg) = (lock.clone(), Arc::clone(&seg));
                start(Fork, move || {
                    // The strategy is per handle; a clone keeps it.
                    assert_eq!(lock.wait_strategy(), strategy);
                    locked_increments(&lock, &seg, INCREMENTS / 2);
                })
            })
            .collect();
        join_all_ok(&mut children);
        assert_eq!(read_u64(&seg, 0), PROCS as u64 * (INCREMENTS / 2), "{strategy:?}");
    }
}

#[test]
fn lock_timeout_waits_at_least_the_timeout() {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let done = Event::new().unwrap();
    let mut holder = start(Fork, {
        let (lock, held, done) = (lock.clone(), held.clone(), done.clone());
        move || {
            let _g = lock.lock().unwrap();
            held.set();
            done.wait().unwrap();
        }
    });
    held.wait_timeout(common::WATCHDOG).unwrap();
    for timeout in [Duration::ZERO, Duration::from_millis(1), Duration::from_millis(30), Duration::from_millis(120)] {
        let start = Instant::now();
        let r = lock.lock_timeout(timeout);
        let elapsed = start.elapsed();
        assert!(matches!(r, Err(LockError::Failed(Error::Timeout))), "{timeout:?}: {r:?}");
        assert!(elapsed >= timeout, "lock_timeout({timeout:?}) gave up after {elapsed:?}");
    }
    // The same from a thread of another process's point of view: Block strategy.
    let blocking = lock.clone().with_wait_strategy(WaitStrategy::Block);
    let start = Instant::now();
    assert!(blocking.lock_timeout(Duration::from_millis(50)).is_err());
    assert!(start.elapsed() >= Duration::from_millis(50));
    done.set();
    join_ok(&mut holder);
    // Free again: a timed lock succeeds.
    drop(lock.lock_timeout(Duration::from_millis(50)).unwrap());
}

/// Forks a child that takes `lock`, sets `held`, and then blocks forever.
fn spawn_holder(lock: &Lock, held: &Event) -> Proc<()> {
    let (lock, held) = (lock.clone(), held.clone());
    start(Fork, move || {
        let g = lock.lock().unwrap();
        held.set();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
            std::hint::black_box(&g);
        }
    })
}

#[test]
fn owner_killed_holding_the_lock() {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let mut holder = spawn_holder(&lock, &held);
    assert!(held.wait_timeout(common::WATCHDOG).unwrap(), "holder never took the lock");
    assert!(lock.is_locked());
    assert!(matches!(lock.try_lock(), Err(LockError::Failed(Error::WouldBlock))));
    assert_eq!(common::kill_and_reap(&mut holder), Some(-libc::SIGKILL));

    let start = Instant::now();
    match lock.lock() {
        Err(LockError::OwnerDied(g)) => drop(g),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    let took = start.elapsed();
    eprintln!("owner death noticed after {took:?} (SPEC: within 100 ms)");
    assert!(took < Duration::from_secs(5), "takeover took {took:?}");

    // The lock works normally afterwards.
    let g = lock.lock().expect("clean after the takeover");
    assert!(lock.is_owned_by_current_thread());
    drop(g);
    assert!(!lock.is_locked());
    drop(lock.try_lock().unwrap());
}

#[test]
fn owner_killed_try_lock_takes_over() {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let mut holder = spawn_holder(&lock, &held);
    assert!(held.wait_timeout(common::WATCHDOG).unwrap());
    common::kill_and_reap(&mut holder);
    // try_lock probes the owner at once.
    match lock.try_lock() {
        Err(LockError::OwnerDied(g)) => drop(g),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    drop(lock.try_lock().unwrap());
}

#[test]
fn owner_killed_while_others_wait() {
    const CLEAN: i32 = 10;
    const DIED: i32 = 20;
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let mut holder = spawn_holder(&lock, &held);
    assert!(held.wait_timeout(common::WATCHDOG).unwrap());

    let about_to_wait = Event::new().unwrap();
    let mut waiter = start(Fork, {
        let (lock, about_to_wait) = (lock.clone(), about_to_wait.clone());
        move || {
            about_to_wait.set();
            let r = lock.lock();
            let code = match &r {
                Ok(_) => CLEAN,
                Err(LockError::OwnerDied(_)) => DIED,
                Err(LockError::Failed(_)) => 1,
            };
            // Hold it a little so that the parent really has to wait for us.
            std::thread::sleep(Duration::from_millis(20));
            drop(r);
            code
        }
    });
    assert!(about_to_wait.wait_timeout(common::WATCHDOG).unwrap());

    // Kill the holder while the child and this thread are both inside lock().
    let holder_pid = holder.pid().unwrap() as libc::pid_t;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        // SAFETY: the holder is our child, not reaped before this thread is
        // joined, so the pid still names it.
        unsafe { libc::kill(holder_pid, libc::SIGKILL) };
        Instant::now()
    });
    let r = lock.lock();
    let got = Instant::now();
    let parent_died = match &r {
        Ok(_) => false,
        Err(LockError::OwnerDied(_)) => true,
        Err(LockError::Failed(e)) => panic!("untimed lock failed: {e}"),
    };
    drop(r);
    let killed_at = killer.join().unwrap();
    assert!(common::join_within(&mut holder, common::WATCHDOG).is_err());
    assert_eq!(holder.exitcode(), Some(-libc::SIGKILL));
    let took = got.saturating_duration_since(killed_at);
    let child_died = match join_ok(&mut waiter) {
        DIED => true,
        CLEAN => false,
        code => panic!("waiter failed: its lock() gave {code}"),
    };
    eprintln!("both waiters served; the parent got the lock {took:?} after the kill");
    assert!(took < Duration::from_secs(5), "takeover took {took:?}");
    assert!(parent_died ^ child_died, "exactly one waiter must be told: parent {parent_died}, child {child_died}");
    drop(lock.try_lock().unwrap());
}

#[test]
fn thread_exiting_with_the_lock_held() {
    let lock = Lock::new().unwrap();
    let l2 = lock.clone();
    std::thread::spawn(move || {
        let g = l2.lock().unwrap();
        std::mem::forget(g);
    })
    .join()
    .unwrap();
    assert!(lock.is_locked());
    let start = Instant::now();
    match lock.lock() {
        Err(LockError::OwnerDied(g)) => drop(g),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(lock.lock().unwrap());

    // And with try_lock, which probes at once.
    let l2 = lock.clone();
    std::thread::spawn(move || std::mem::forget(l2.lock().unwrap())).join().unwrap();
    assert!(matches!(lock.try_lock(), Err(LockError::OwnerDied(_))));
    assert!(!lock.is_locked());
}

#[test]
fn owner_died_converts_into_error() {
    let lock = Lock::new().unwrap();
    let l2 = lock.clone();
    std::thread::spawn(move || std::mem::forget(l2.lock().unwrap())).join().unwrap();
    let e: Error = lock.lock().unwrap_err().into();
    assert!(matches!(e, Error::OwnerDied), "{e}");
    // Converting dropped the guard: the lock is free.
    assert!(!lock.is_locked());
}

#[test]
fn create_open_errors_and_cleanup() {
    let name = unique_name("lock-names");
    let lock = Lock::create(&name).unwrap();
    assert!(matches!(Lock::create(&name), Err(Error::AlreadyExists { .. })));
    let other = Lock::open(&name).unwrap();
    {
        let _g = other.lock().unwrap();
        assert!(lock.is_locked());
    }
    // A child that opens it and drops its handle leaves the name alone.
    let mut c = start(Fork, {
        let name = name.clone();
        move || drop(Lock::open(&name).unwrap())
    });
    join_ok(&mut c);
    assert!(common::shm_path(&name).exists());
    drop(other);
    drop(lock);
    assert!(matches!(Lock::open(&name), Err(Error::NotFound { .. })));
    assert_no_leftovers("lock-names");
}

/// Environment variable that turns [`helper_fork_during_first_lock`] from a
/// no-op into the scenario, in a fresh copy of this test binary.
const FORK_RACE_ENV: &str = "SHMPROC_TEST_FORK_DURING_FIRST_LOCK";

/// A fork while another thread takes its process's very first lock must give
/// a child whose own locks work. The scenario needs processes in which no
/// lock was ever taken, so it runs [`helper_fork_during_first_lock`] in a
/// fresh copy of this test binary.
#[test]
fn fork_during_another_threads_first_lock() {
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "helper_fork_during_first_lock", "--test-threads=1", "--nocapture"])
        .env(FORK_RACE_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > common::WATCHDOG {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the helper did not run: {text}");
}

/// Forks and waits (at most `timeout`) for a child that runs `f` and `_exit`s
/// with its result; `None` if it had to be killed. Raw `fork`, not
/// `fork_child`, which works around the bug this scenario looks for.
fn raw_fork_wait(timeout: Duration, f: impl FnOnce() -> i32) -> Option<i32> {
    // SAFETY: the child runs `f` (no printing) and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child without running the harness's destructors.
        unsafe { libc::_exit(code) };
    }
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid out-pointer.
        if unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) } == pid {
            return Some(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 });
        }
        if start.elapsed() > timeout {
            // SAFETY: our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &raw mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Without [`FORK_RACE_ENV`] this does nothing. With it, in a process where no
/// lock was ever taken, each round forks a fresh process M in which thread B
/// takes M's first lock while M's main thread forks a child G at (nearly) the
/// same moment, with B's start swept over a range of small delays; G's own
/// first lock must never hang.
#[test]
fn helper_fork_during_first_lock() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const ROUNDS: usize = 150;
    const HUNG: i32 = 3;
    if std::env::var_os(FORK_RACE_ENV).is_none() {
        return;
    }
    for round in 0..ROUNDS {
        let delay = (round * 7919) % 400;
        let m = raw_fork_wait(common::WATCHDOG, || {
            let (first, mine) = (Lock::new().unwrap(), Lock::new().unwrap());
            let (ready, go) = (AtomicBool::new(false), AtomicBool::new(false));
            std::thread::scope(|s| {
                s.spawn(|| {
                    ready.store(true, Ordering::SeqCst);
                    while !go.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                    for _ in 0..delay {
                        std::hint::spin_loop();
                    }
                    drop(first.lock());
                });
                while !ready.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                go.store(true, Ordering::SeqCst);
                let g = raw_fork_wait(Duration::from_secs(2), || {
                    drop(mine.lock());
                    0
                });
                if g.is_some() { 0 } else { HUNG }
            })
        });
        assert!(
            m != Some(HUNG),
            "round {round}: a child forked while another thread took its process's first lock hung in its own \
             first lock (the fork handler is registered lazily under a std Once in src/os/linux.rs \
             current_task_slow; a fork during that Once leaves it running forever in the child)"
        );
        assert_eq!(m, Some(0), "round {round}: the intermediate process failed");
    }
}
