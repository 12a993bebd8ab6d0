//! Why locks: processes updating one counter (seeds 000 and 004).
//!
//! 1. A plain global is not shared: each forked child decrements its own copy
//!    (seed 004's `data -= 1`), so the parent still sees 100.
//! 2. A counter in shared memory, incremented with read-modify-write and no
//!    lock: increments are lost when two processes interleave.
//! 3. The same under a `Lock`: the total is exact.
//!
//! Run with `cargo run --example counter_race`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shmproc::{Lock, Process, Segment, StartMethod};

const PROCS: u64 = 4;
const INCREMENTS: u64 = 10_000;

/// Seed 004's `data = 100`.
static DATA: AtomicU64 = AtomicU64::new(100);

fn read(seg: &Segment) -> u64 {
    let mut b = [0u8; 8];
    seg.read_at(0, &mut b).expect("in range");
    u64::from_le_bytes(b)
}

fn write(seg: &Segment, v: u64) {
    seg.write_at(0, &v.to_le_bytes()).expect("in range");
}

/// Starts `PROCS` forked processes running `f`, and joins them.
fn run_all(f: impl Fn() + Clone + Send + 'static) -> shmproc::Result<()> {
    let mut procs = Vec::new();
    for _ in 0..PROCS {
        let f = f.clone();
        let mut p = Process::builder().start_method(StartMethod::Fork).closure(f);
        p.start()?;
        procs.push(p);
    }
    for mut p in procs {
        p.join()?;
    }
    Ok(())
}

fn main() -> shmproc::Result<()> {
    // 1. Ten children each do `data -= 1` on their own copy.
    let mut procs = Vec::new();
    for _ in 0..10 {
        let mut p =
            Process::builder().start_method(StartMethod::Fork).closure(|| DATA.fetch_sub(1, Ordering::Relaxed) - 1);
        p.start()?;
        procs.push(p);
    }
    let seen: Vec<u64> = procs.iter_mut().map(Process::join).collect::<shmproc::Result<_>>()?;
    println!("each child saw data = {}", seen.iter().map(u64::to_string).collect::<Vec<_>>().join(", "));
    println!("plain global after 10 children: data = {}", DATA.load(Ordering::Relaxed));

    let expected = PROCS * INCREMENTS;

    // 2. Shared memory, no lock: read, add one, write back.
    let counter = Arc::new(Segment::anonymous(8)?);
    let c = Arc::clone(&counter);
    run_all(move || {
        for _ in 0..INCREMENTS {
            let v = read(&c);
            write(&c, std::hint::black_box(v) + 1);
        }
    })?;
    let total = read(&counter);
    println!("without a lock: {total} (expected {expected}, {} lost)", expected - total);

    // 3. The same under a Lock.
    let counter = Arc::new(Segment::anonymous(8)?);
    let lock = Lock::new()?;
    let c = Arc::clone(&counter);
    run_all(move || {
        for _ in 0..INCREMENTS {
            let _guard = lock.lock().expect("no process dies holding it");
            let v = read(&c);
            write(&c, v + 1);
        }
    })?;
    println!("with a lock: {} (expected {expected})", read(&counter));
    Ok(())
}
