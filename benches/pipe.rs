//! Criterion benches for the core `pipe` rows, to track regressions:
//!
//! - `pipe_one_thread/send_recv_64B`: `send_bytes` then `recv_bytes_into` of
//!   64 bytes on one thread (the code path, no waiting);
//! - `pipe_round_trip_fork/{Adaptive,Block}`: a 64-byte round trip between
//!   this process and a forked echo, timed with `iter_custom`, parent and
//!   child pinned to two CPUs when there are two.
//!
//! `cargo bench --bench pipe` runs them with short settings (10 samples, about
//! a second each). The side-by-side table against baselines and the SPEC
//! targets is `cargo run --release --bin shmproc-bench`.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{time_with_forked_echo, two_cpus};
use criterion::{Criterion, criterion_group, criterion_main};
use shmproc::{Connection, WaitStrategy};

const MESSAGE: usize = 64;

fn one_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipe_one_thread");
    let (a, b) = shmproc::pipe().expect("a pipe");
    let msg = [7u8; MESSAGE];
    let mut buf = [0u8; MESSAGE];
    group.bench_function("send_recv_64B", |bench| {
        bench.iter(|| {
            a.send_bytes(black_box(&msg)).expect("send_bytes");
            let n = b.recv_bytes_into(&mut buf).expect("recv_bytes_into");
            assert_eq!(n, MESSAGE);
        });
    });
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let cpus = two_cpus();
    let mut group = c.benchmark_group("pipe_round_trip_fork");
    for strategy in [WaitStrategy::Adaptive, WaitStrategy::Block] {
        group.bench_function(format!("{strategy:?}"), |b| b.iter_custom(|iters| round_trips(strategy, iters, cpus)));
    }
    group.finish();
}

/// Times `iters` round trips of 64 bytes with a forked echo. With `cpus`,
/// this thread runs on the first CPU while timing and the echo on the second.
fn round_trips(strategy: WaitStrategy, iters: u64, cpus: Option<(usize, usize)>) -> Duration {
    let (here, there): (Connection, Connection) = shmproc::pipe().expect("a pipe");
    let (here, there) = (here.with_wait_strategy(strategy), there.with_wait_strategy(strategy));
    time_with_forked_echo(
        cpus,
        || {
            let (mut ok, mut buf) = (true, [0u8; MESSAGE]);
            for _ in 0..iters {
                ok &= there.recv_bytes_into(&mut buf).is_ok_and(|n| n == MESSAGE);
                ok &= there.send_bytes(&buf).is_ok();
            }
            ok
        },
        || {
            let (msg, mut buf) = ([7u8; MESSAGE], [0u8; MESSAGE]);
            for _ in 0..iters {
                here.send_bytes(&msg).expect("send_bytes");
                here.recv_bytes_into(&mut buf).expect("recv_bytes_into");
            }
        },
    )
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = one_thread, round_trip
}
criterion_main!(benches);
