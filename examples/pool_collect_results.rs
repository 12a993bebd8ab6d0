//! Collecting tasks' return values with `get` from a list of `AsyncResult`s.
//!
//! 1. Seed 002's `getResult()`: `Pool(processes=4)`, four
//!    `apply_async(squarecalc, args=(i,))` kept in a list, then `item.get()`
//!    for each, in the list's order (before `close` and `join`: `get` waits
//!    for its task).
//! 2. Seed 000's 初级用法 ("basic use"): `Pool(processes=10)`, 50 000
//!    `apply_async(test, args=(i,))` where `test(p)` returns `p`, then
//!    `close()`, `join()`, and `get()` on each result. The seed prints all
//!    50 000; here they are checked, and a summary is printed.
//!
//! Run with `cargo run --example pool_collect_results`.

use std::time::Instant;

use shmproc::{Pool, current_process};

/// Seed 000's task count.
const TASKS: u64 = 50_000;

/// Seed 002's `squarecalc(i)`: `i ** 20`.
fn squarecalc(i: u64) -> u64 {
    println!("child process: {} - task {i}", current_process().pid);
    i.pow(20)
}

/// Seed 000's `test(p)`.
fn test(p: u64) -> u64 {
    p
}

/// Seed 002's `getResult()`.
fn get_result() -> shmproc::Result<Vec<u64>> {
    let pool = Pool::new(4)?;
    let listprocesses = (0..4).map(|i| pool.apply_async(squarecalc, i)).collect::<shmproc::Result<Vec<_>>>()?;
    let mut listresults = Vec::new();
    for item in &listprocesses {
        listresults.push(item.get()?);
    }
    pool.close();
    pool.join()?;
    Ok(listresults)
}

fn main() -> shmproc::Result<()> {
    println!("results: {:?}", get_result()?);

    let start = Instant::now();
    let pool = Pool::new(10)?;
    let result = (0..TASKS).map(|i| pool.apply_async(test, i)).collect::<shmproc::Result<Vec<_>>>()?;
    let submitted = start.elapsed();
    pool.close();
    pool.join()?;
    let values = result.iter().map(shmproc::AsyncResult::get).collect::<shmproc::Result<Vec<u64>>>()?;
    println!("submitted {TASKS} tasks in {submitted:?}, all done in {:?}", start.elapsed());
    println!("collected {} results", values.len());
    println!("each result is its task's argument: {}", values.iter().copied().eq(0..TASKS));
    println!("sum: {}", values.iter().sum::<u64>());
    Ok(())
}
