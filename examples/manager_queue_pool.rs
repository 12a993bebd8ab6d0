//! A pool and a manager's queue (seed 002, "使用Pool+Queue的多进程"): the
//! parent prints its pid, makes `q = Manager().Queue()`, puts the items of
//! `listq` into it, and submits `qsize` tasks to `Pool(processes=4)`; each
//! task prints its pid, takes one item from the queue, sleeps (10 ms here,
//! two seconds in the seed) and prints the item.
//!
//! A plain `Queue` travels to a pool's workers only through the pool's
//! initializer (see `examples/pool_lock.rs`); the queue a manager makes is
//! named, so it travels in each task's arguments, as the seed's proxy does.
//! A manager's queue is the crate's `ObjectQueue`, with a ring of a fixed
//! number of bytes (Python's is unbounded).
//!
//! Beyond the seed, the tasks also answer: each puts what it took into a
//! second manager's queue, and the parent reads every answer from it.
//!
//! Run with `cargo run --example manager_queue_pool`.

// Pool tasks take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use std::time::Duration;

use shmproc::{Manager, ObjectQueue, Pool};

/// The seed's `listq`: what goes into the queue.
const LISTQ: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

/// The seed's `function(q)`, which also answers on `answers`.
fn function((q, answers): (ObjectQueue<String>, ObjectQueue<(String, u32)>)) {
    let pid = std::process::id();
    println!("running in process {pid}");
    let ele = q.get().expect("the queue is open");
    std::thread::sleep(Duration::from_millis(10));
    println!("took {ele} from the queue");
    answers.put((ele, pid)).expect("the queue is open");
}

fn main() -> shmproc::Result<()> {
    println!("parent process {}", std::process::id());
    let manager = Manager::start()?;
    let q = manager.queue::<String>(1 << 12)?;
    let answers = manager.queue::<(String, u32)>(1 << 12)?;
    for ele in LISTQ {
        q.put(ele.to_owned())?;
    }
    let qsize = q.len();
    println!("queue size: {qsize}");

    let pool = Pool::new(4)?;
    for _ in 0..qsize {
        // The seed does not wait for the results: the answers say it all.
        let _ = pool.apply_async(function, (q.clone(), answers.clone()))?;
    }
    pool.close();
    pool.join()?;

    let mut taken = Vec::new();
    for _ in 0..qsize {
        let (ele, pid) = answers.get_timeout(Duration::from_secs(10))?;
        println!("answer: {ele} was taken by process {pid}");
        taken.push(ele);
    }
    taken.sort_unstable();
    println!("taken: {taken:?}, left in the queue: {}", q.len());
    manager.shutdown()
}
