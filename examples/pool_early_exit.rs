//! Stopping a pool at the first wanted result (seed 000's 高级用法,
//! "advanced use"): 50 000 `apply_async(test, args=(i,))` on
//! `Pool(processes=10)`, their results kept in a queue; the main loop takes
//! them in submission order and, at the first `true`, calls `terminate()`
//! (workers killed, every unfinished task fails) and `join()`.
//!
//! The seed's `test(p)` sleeps 1 ms and returns `p == 10000`; here task 137
//! is the one (so the run is short), and the loop checks exactly 138 results.
//! The seed notes the drawback of this form: the `for` loop must submit all
//! 50 000 tasks before the checking starts (`pool_feeder_thread` does both
//! at once); the submission time is printed.
//!
//! Run with `cargo run --example pool_early_exit`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use shmproc::Pool;

/// Tasks submitted, as in the seed.
const TASKS: u64 = 50_000;

/// The task whose result is `true`.
const FOUND: u64 = 137;

/// The seed's `test(p)`.
fn test(p: u64) -> bool {
    std::thread::sleep(Duration::from_millis(1));
    p == FOUND
}

fn main() -> shmproc::Result<()> {
    let pool = Pool::new(10)?;
    let start = Instant::now();
    let mut q = VecDeque::new();
    for i in 0..TASKS {
        q.push_back(pool.apply_async(test, i)?);
    }
    println!("submitted {TASKS} tasks in {:?}", start.elapsed());

    let mut checked = 0;
    let mut found = None;
    while let Some(r) = q.pop_front() {
        checked += 1;
        if r.get()? {
            found = Some(Instant::now());
            pool.terminate();
            break;
        }
    }
    pool.join()?;
    if let Some(at) = found {
        println!("terminate and join took {:?}", at.elapsed());
    }
    println!("found: {}", found.is_some());
    println!("checked {checked} of {TASKS} results");
    // The tasks still queued were never run: terminate failed them.
    let failed = q.iter().filter(|r| r.get().is_err()).count();
    println!("results left unchecked: {}, failed by terminate: {failed}", q.len());
    println!("stopped {:?} after the first submission", start.elapsed());
    Ok(())
}
