//! Submitting and checking at the same time (seed 000's 多线程+多进程,
//! "threads plus processes"): one thread (`pool_th`) feeds the pool with
//! `apply_async` and puts each result into a channel; another
//! (`result_th`) takes them in order and, at the first `true`, calls
//! `terminate()`. The feeder's next `apply_async` then fails (the pool is
//! not running), and it stops.
//!
//! The seed's pool has `cpu_count()` workers (`Pool()`), and its feeder
//! would submit 50 000 000 tasks; task 137 is the `true` one here. A `Pool`
//! is `Sync`, so both threads borrow it (`std::thread::scope`). Unlike the
//! seed's unbounded `queue.Queue`, the channel holds at most `AHEAD`
//! results: the feeder cannot run millions of tasks ahead of the checker.
//!
//! Run with `cargo run --example pool_feeder_thread`.

use std::sync::mpsc;
use std::time::Duration;

use shmproc::{AsyncResult, Pool};

/// The feeder's limit.
const TASKS: u64 = 50_000_000;

/// Results submitted but not yet taken by the checker, at most.
const AHEAD: usize = 1000;

/// The task whose result is `true`.
const FOUND: u64 = 137;

/// The seed's `test(p)`.
fn test(p: u64) -> bool {
    std::thread::sleep(Duration::from_millis(1));
    p == FOUND
}

fn main() -> shmproc::Result<()> {
    let pool = Pool::builder().build()?;
    println!("a pool of {} workers", pool.processes());
    let (tx, rx) = mpsc::sync_channel::<AsyncResult<bool>>(AHEAD);
    let (submitted, checked) = std::thread::scope(|s| {
        let pool = &pool;
        // The seed's `pool_th`.
        let feeder = s.spawn(move || {
            let mut submitted = 0u64;
            for i in 0..TASKS {
                // Fails once the checker has terminated the pool.
                let Ok(r) = pool.apply_async(test, i) else { break };
                submitted += 1;
                // Fails once the checker has stopped listening.
                if tx.send(r).is_err() {
                    break;
                }
            }
            submitted
        });
        // The seed's `result_th`.
        let checker = s.spawn(move || {
            for (n, r) in rx.into_iter().enumerate() {
                // At the first `true` (or a failed task): stop everything.
                let found = r.get();
                if !matches!(found, Ok(false)) {
                    pool.terminate();
                    return found.map(|_| Some(n + 1));
                }
            }
            Ok(None)
        });
        (feeder.join().expect("the feeder does not panic"), checker.join().expect("the checker does not panic"))
    });
    pool.join()?;
    match checked? {
        Some(n) => println!("the checker found task {FOUND}'s true after checking {n} results"),
        None => println!("the checker found no true result"),
    }
    println!("the feeder stopped after submitting {submitted} tasks (limit {TASKS}, at most {AHEAD} ahead)");
    Ok(())
}
