//! Ten processes passing one token through a queue (seed 000): the queue starts
//! with `0`; each process takes whatever is there and puts its own number back.
//! Whatever order the processes run in, each takes the number the previous one
//! put, so the numbers form one chain from 0.
//!
//! Run with `cargo run --example queue_token`.

// Process targets take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use shmproc::{Process, Queue};

/// The seed's `func(i, q)`.
fn func((i, q): (u32, Queue<u32>)) -> u32 {
    let got = q.get().expect("the queue is open");
    println!("process {i} took {got} from the queue, then put {i} into it");
    q.put(i).expect("the queue is open");
    got
}

fn main() -> shmproc::Result<()> {
    let lis = Queue::<u32>::new(20)?;
    lis.put(0)?;
    let mut procs = Vec::new();
    for i in 0..10 {
        let mut p = Process::new(func, (i, lis.clone()));
        p.start()?;
        procs.push(p);
    }
    let mut took = Vec::new();
    for mut p in procs {
        took.push(p.join()?);
    }
    let last = lis.get()?;
    // The first process took the initial 0, every other one the number of the
    // one before it, and the last one's number is left in the queue: with it,
    // the numbers taken are 0 and then every process's number exactly once.
    took.push(last);
    took.sort_unstable();
    let chain: Vec<u32> = std::iter::once(0).chain(0..10).collect();
    assert_eq!(took, chain, "a token was taken twice or lost");
    println!("the token ended with process {last}");
    Ok(())
}
