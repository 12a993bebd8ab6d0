//! Criterion benches for the core `sync` rows, to track regressions:
//!
//! - `lock_uncontended/{shmproc_lock,std_mutex}`: lock + unlock on one thread;
//! - `event_ping_pong_fork/{Adaptive,Block}`: a round trip between this
//!   process and a forked echo through two `Event`s (wait, clear, set the
//!   other's), timed with `iter_custom`, parent and child pinned to two CPUs
//!   when there are two.
//!
//! `cargo bench --bench sync` runs them with short settings (10 samples, about
//! a second each). The side-by-side table against baselines and the SPEC
//! targets is `cargo run --release --bin shmproc-bench`.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{HANG_SECS, cpu_set, current_cpu_set, pin, two_cpus};
use criterion::{Criterion, criterion_group, criterion_main};
use shmproc::{Event, Lock, WaitStrategy};

fn lock_uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock_uncontended");
    let lock = Lock::new().expect("Lock::new");
    group.bench_function("shmproc_lock", |b| b.iter(|| drop(black_box(&lock).lock())));
    let rlock = shmproc::RLock::new().expect("an rlock");
    group.bench_function("shmproc_rlock", |b| b.iter(|| drop(black_box(&rlock).lock())));
    let mutex = std::sync::Mutex::new(());
    group.bench_function("std_mutex", |b| b.iter(|| drop(black_box(&mutex).lock())));
    group.finish();
}

fn event_ping_pong(c: &mut Criterion) {
    let cpus = two_cpus();
    let mut group = c.benchmark_group("event_ping_pong_fork");
    for strategy in [WaitStrategy::Adaptive, WaitStrategy::Block] {
        group.bench_function(format!("{strategy:?}"), |b| b.iter_custom(|iters| round_trips(strategy, iters, cpus)));
    }
    group.finish();
}

/// Times `iters` Event round trips with a forked echo. With `cpus`, this
/// thread runs on the first CPU while timing and the echo on the second.
fn round_trips(strategy: WaitStrategy, iters: u64, cpus: Option<(usize, usize)>) -> Duration {
    let to_child = Event::new().expect("Event::new").with_wait_strategy(strategy);
    let to_parent = Event::new().expect("Event::new").with_wait_strategy(strategy);
    // SAFETY: criterion runs the benches on this one thread; the child only
    // plays its part of the ping-pong (atomics and futex calls) and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: plain system calls: die with the parent, and die rather
        // than hang; `_exit` skips the parent's destructors and buffers.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::alarm(HANG_SECS);
        }
        // Answer every ping whatever happens (the parent waits for each), and
        // report trouble through the exit status.
        let mut ok = cpus.is_none_or(|(_, cpu)| pin(&cpu_set(cpu)));
        for _ in 0..iters {
            ok &= to_child.wait().is_ok();
            to_child.clear();
            to_parent.set();
        }
        // SAFETY: see above.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    let saved = cpus.map(|(cpu, _)| {
        let saved = current_cpu_set();
        assert!(pin(&cpu_set(cpu)), "sched_setaffinity: {}", std::io::Error::last_os_error());
        saved
    });
    // SAFETY: plain system call; a stuck round trip kills the bench.
    unsafe { libc::alarm(HANG_SECS) };
    let start = Instant::now();
    for _ in 0..iters {
        to_child.set();
        to_parent.wait().expect("Event::wait");
        to_parent.clear();
    }
    let elapsed = start.elapsed();
    // SAFETY: plain system call (cancels the alarm).
    unsafe { libc::alarm(0) };
    if let Some(saved) = saved {
        assert!(pin(&saved), "sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    let mut status = 0;
    // SAFETY: reaps our own child; `status` is writable.
    let reaped = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert!(reaped == pid && status == 0, "the echo child failed (wait status {status})");
    elapsed
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = lock_uncontended, event_ping_pong
}
criterion_main!(benches);
