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
use std::time::Duration;

use common::{time_with_forked_echo, two_cpus};
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
    time_with_forked_echo(
        cpus,
        || {
            let mut ok = true;
            for _ in 0..iters {
                ok &= to_child.wait().is_ok();
                to_child.clear();
                to_parent.set();
            }
            ok
        },
        || {
            for _ in 0..iters {
                to_child.set();
                to_parent.wait().expect("Event::wait");
                to_parent.clear();
            }
        },
    )
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = lock_uncontended, event_ping_pong
}
criterion_main!(benches);
