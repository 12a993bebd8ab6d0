//! Criterion benches for the `array` rows, to track regressions (one thread,
//! no contention):
//!
//! - `array_increment/fetch_add`: `Array<i64>::fetch_add(0, 1)`;
//! - `array_increment/locked`: `let g = arr.lock()?; g.store(0, g.load(0) + 1);`
//!   on `Array<i64>` (the array's `RLock`, taken and released);
//! - `array_increment/std_atomic_fetch_add`, `array_increment/std_mutex`: the
//!   same on a `std::sync::atomic::AtomicI64` and a `std::sync::Mutex<i64>`,
//!   for scale.
//!
//! `cargo bench --bench array` runs them with short settings (10 samples, about
//! a second each). The cross-process figures against `CPython` and the SPEC
//! target are `cargo run --release --bin shmproc-bench -- --filter array`.

mod common;

use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use shmproc::Array;

fn array_increment(c: &mut Criterion) {
    let mut group = c.benchmark_group("array_increment");
    let arr = Array::<i64>::new(1).expect("Array::new");
    group.bench_function("fetch_add", |b| b.iter(|| black_box(&arr).fetch_add(0, 1)));
    group.bench_function("locked", |b| {
        b.iter(|| {
            let g = black_box(&arr).lock().expect("Array::lock");
            g.store(0, g.load(0) + 1);
        });
    });
    let atomic = AtomicI64::new(0);
    group.bench_function("std_atomic_fetch_add", |b| b.iter(|| black_box(&atomic).fetch_add(1, Ordering::AcqRel)));
    let mutex = Mutex::new(0i64);
    group.bench_function("std_mutex", |b| {
        b.iter(|| *black_box(&mutex).lock().expect("Mutex::lock") += 1);
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = array_increment
}
criterion_main!(benches);
