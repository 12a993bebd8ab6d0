//! Sharing data with an `Array` (seed 000): `Array('i', [1, 2, 3, 4])` and ten
//! processes that each add 100 to its first element.
//!
//! Python's `temp[0] += 100` is a read, then a write: two processes can
//! interleave and lose an update (the seed got lucky). Here each child adds
//! with one atomic `fetch_add`, so the first element always ends at exactly
//! 1 + 10 × 100 = 1001.
//!
//! Run with `cargo run --example array_share`.

// Process targets take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use shmproc::{Array, Process};

/// The seed's `func(i, temp)`: adds 100 to `temp[0]` and reports what it saw.
fn func((i, temp): (u32, Array<i32>)) -> i32 {
    let now = temp.fetch_add(0, 100) + 100;
    println!("process {i}: first element after adding 100 -----> {now}");
    now
}

fn main() -> shmproc::Result<()> {
    let temp = Array::<i32>::from_slice(&[1, 2, 3, 4])?;
    let mut procs = Vec::new();
    for i in 0..10 {
        let mut p = Process::new(func, (i, temp.clone()));
        p.start()?;
        procs.push(p);
    }
    let mut seen = Vec::new();
    for mut p in procs {
        seen.push(p.join()?);
    }
    seen.sort_unstable();
    // Every child saw a different total: no update was lost.
    assert_eq!(seen, (1..=10).map(|k| 1 + 100 * k).collect::<Vec<_>>());
    println!("temp = {:?}", temp.to_vec()?);
    Ok(())
}
