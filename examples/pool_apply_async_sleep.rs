//! A pool of five workers running ten tasks (seed 000's `Pool(5)` with ten
//! `p.apply_async(func=func, args=(i,))`, then `close()` and `join()`): each
//! task sleeps (20 ms here, one second in the seed), says which worker runs
//! it, and returns that worker's pid. The results come back through the
//! `AsyncResult`s, in the order the tasks were submitted, whatever order
//! they ran in.
//!
//! Run with `cargo run --example pool_apply_async_sleep`.

use std::time::Duration;

use shmproc::{Pool, current_process};

/// The seed's `func(args)`: sleeps, then reports.
fn func(i: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(20));
    let pid = current_process().pid;
    println!("running task {i} in worker ({pid})");
    pid
}

fn main() -> shmproc::Result<()> {
    println!("main process ({})", current_process().pid);
    let p = Pool::new(5)?;
    let results = (0..10).map(|i| p.apply_async(func, i)).collect::<shmproc::Result<Vec<_>>>()?;
    p.close();
    p.join()?;
    // Every task has finished: `get` returns at once.
    for (i, r) in results.iter().enumerate() {
        println!("task {i} ran in worker ({})", r.get()?);
    }
    println!("all 10 tasks done");
    Ok(())
}
