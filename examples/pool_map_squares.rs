//! `Pool.map`: one function over a list, the results in the list's order.
//!
//! 1. Seed 000's `Pool(processes=2)` with `pool.map(test, [1, 2, 3])`; here
//!    `test` squares its argument (the seed's only prints it).
//! 2. Seed 001's `Pool(processes=4)` with `pool.map(action, (50, 100, 150))`,
//!    where `action(max)` sums `range(max)`: three tasks, one result each,
//!    printed after a line of dashes. The seed prints every step of every
//!    sum; here each task prints one line.
//!
//! Both pools are closed and joined, as the seeds do (the second seed's
//! `with Pool() as pool:` terminates it on leaving; dropping a `Pool` does
//! the same).
//!
//! Run with `cargo run --example pool_map_squares`.

use shmproc::{Pool, current_process};

/// Seed 000's `test(i)`.
fn test(i: u64) -> u64 {
    i * i
}

/// Seed 001's `action(max)`: the sum of `0..max`.
fn action(max: u64) -> u64 {
    println!("({}) process summing range({max})", current_process().pid);
    (0..max).sum()
}

fn main() -> shmproc::Result<()> {
    let lists = vec![1, 2, 3];
    let pool = Pool::new(2)?;
    let squares = pool.map(test, lists.clone(), None)?;
    println!("squares of {lists:?}: {squares:?}");
    pool.close();
    pool.join()?;

    let pool = Pool::new(4)?;
    let results = pool.map(action, [50, 100, 150], None)?;
    println!("--------------");
    for r in &results {
        println!("{r}");
    }
    pool.close();
    pool.join()?;
    Ok(())
}
