//! A lock around a shared array (seed 000, "进程锁"): `Array('i', 1)` set to
//! 10, and ten processes that each take an `RLock`, decrement the element,
//! wait, print it and release the lock. The lock makes each
//! read-decrement-print one step, so the lines count down 9, 8, ..., 0.
//!
//! The seed passes its own `RLock`; an `Array` also carries one in its segment
//! (`arr.lock()`), shown at the end.
//!
//! Run with `cargo run --example array_rlock`.

// Process targets take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use std::time::Duration;

use shmproc::{Array, Process, RLock};

/// The seed's `func(i, lis, lc)`. A panic here comes back to `join` as an
/// error with its message.
fn func((_i, lis, lc): (u32, Array<i32>, RLock)) {
    lc.acquire(true, None).expect("acquiring the lock");
    lis.store(0, lis.load(0) - 1);
    std::thread::sleep(Duration::from_millis(20)); // the seed sleeps 1 s
    println!("say hi {}", lis.load(0));
    lc.release().expect("releasing the lock we hold");
}

fn main() -> shmproc::Result<()> {
    let array = Array::<i32>::new(1)?;
    array.store(0, 10);
    let lock = RLock::new()?;
    let mut procs = Vec::new();
    for i in 0..10 {
        let mut p = Process::new(func, (i, array.clone(), lock.clone()));
        p.start()?;
        procs.push(p);
    }
    for mut p in procs {
        p.join()?;
    }

    // The same with the array's own lock: a guard gives indexed access.
    for _ in 0..3 {
        let g = array.lock()?;
        g.store(0, g.load(0) + 1);
    }
    println!("after three locked increments: {}", array.load(0));
    Ok(())
}
