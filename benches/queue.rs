//! Criterion benches for the `queue` rows, to track regressions (one thread,
//! no peer, nothing to wait for: the cost of the operations themselves):
//!
//! - `queue_put_get/{spsc,mpmc}`: `SpscQueue<u64>` / `Queue<u64>`, one `put`
//!   then one `get` (the blocking calls, default waiting, which never wait
//!   here: the wake protocol's check included);
//! - `queue_put_get/{spsc,mpmc}_try`: the same with `try_put` / `try_get`;
//! - `queue_put_get/{spsc,mpmc}_batch64`: 64 puts then 64 gets, per element;
//! - `queue_put_get/object_64B`: `ObjectQueue<Vec<u8>>`, a fresh 64-byte `Vec`
//!   put then got (encoding, the producer and consumer locks, decoding);
//! - `queue_put_get/rtrb`, `queue_put_get/crossbeam_array_queue`: the
//!   in-process baselines of the table, push then pop, for scale.
//!
//! `cargo bench --bench queue` runs them with short settings (10 samples, about
//! a second each). The cross-process figures against rtrb, crossbeam and
//! `CPython` and the SPEC targets are
//! `cargo run --release --bin shmproc-bench -- --filter queue`.

mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use shmproc::{Bytes, ObjectQueue, Queue, SpscQueue};

/// Slots, as in the table's rows.
const CAPACITY: usize = 1024;
/// Elements per batch of the `_batch64` benches.
const BATCH: u64 = 64;

fn queue_put_get(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_put_get");
    let spsc = SpscQueue::<u64>::new(CAPACITY).expect("SpscQueue::new");
    group.bench_function("spsc", |b| {
        b.iter(|| {
            spsc.put(black_box(7)).expect("put");
            black_box(spsc.get().expect("get"))
        });
    });
    group.bench_function("spsc_try", |b| {
        b.iter(|| {
            spsc.try_put(black_box(7)).expect("try_put");
            black_box(spsc.try_get().expect("try_get"))
        });
    });
    let mpmc = Queue::<u64>::new(CAPACITY).expect("Queue::new");
    group.bench_function("mpmc", |b| {
        b.iter(|| {
            mpmc.put(black_box(7)).expect("put");
            black_box(mpmc.get().expect("get"))
        });
    });
    group.bench_function("mpmc_try", |b| {
        b.iter(|| {
            mpmc.try_put(black_box(7)).expect("try_put");
            black_box(mpmc.try_get().expect("try_get"))
        });
    });
    let object = ObjectQueue::<Vec<u8>>::new(1 << 16).expect("ObjectQueue::new");
    group.bench_function("object_64B", |b| {
        b.iter(|| {
            object.put(black_box(vec![0x78; 64])).expect("put");
            black_box(object.get().expect("get"))
        });
    });
    let bytes = ObjectQueue::<Bytes>::new(1 << 16).expect("ObjectQueue::new");
    group.bench_function("object_64B_bytes", |b| {
        b.iter(|| {
            bytes.put(black_box(Bytes(vec![0x78; 64]))).expect("put");
            black_box(bytes.get().expect("get"))
        });
    });
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAPACITY);
    group.bench_function("rtrb", |b| {
        b.iter(|| {
            tx.push(black_box(7)).expect("push");
            black_box(rx.pop().expect("pop"))
        });
    });
    let array = ArrayQueue::<u64>::new(CAPACITY);
    group.bench_function("crossbeam_array_queue", |b| {
        b.iter(|| {
            array.push(black_box(7)).expect("push");
            black_box(array.pop().expect("pop"))
        });
    });
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("spsc_batch64", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                spsc.put(black_box(i)).expect("put");
            }
            for _ in 0..BATCH {
                black_box(spsc.get().expect("get"));
            }
        });
    });
    group.bench_function("mpmc_batch64", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                mpmc.put(black_box(i)).expect("put");
            }
            for _ in 0..BATCH {
                black_box(mpmc.get().expect("get"));
            }
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = queue_put_get
}
criterion_main!(benches);
