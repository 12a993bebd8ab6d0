//! A manager's lock for every task of a pool (seed 003, "Manager / Lock()"):
//! `lock = Manager().Lock()`, then `Pool(5)` runs twenty `work(i, lock)`
//! tasks, each of which takes the lock, prints its number and pid, sleeps
//! (5 ms here, five seconds in the seed), releases it and returns
//! `"i am {i} and {pid}"`; the main process prints every result in order.
//!
//! `Manager::lock` hands back the crate's native shared-memory lock, made by
//! the manager's server under a name (unlinked when the manager stops). A
//! named lock travels in a task's arguments, by name, as the seed's proxy
//! does. An anonymous `Lock::new()` does not: it reaches a process only as a
//! descriptor given when the process starts, so `examples/pool_lock.rs`
//! hands it to each worker through the pool's initializer instead.
//!
//! To show that the lock excludes, each task also adds one to a counter in a
//! manager's dict by reading it and writing it back under the lock (a plain
//! `get` then `insert`, not the atomic `SharedDict::update`): the final count
//! is exact.
//!
//! Run with `cargo run --example manager_lock_pool`.

// Pool tasks take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use std::time::Duration;

use shmproc::{Lock, Manager, Pool, SharedDict, current_process};

/// Tasks submitted, as in the seed.
const TASKS: u32 = 20;

/// The seed's `work(cout, lock)`, with the counter beside the lock.
fn work((cout, lock, counts): (u32, Lock, SharedDict<String, u32>)) -> String {
    let pid = current_process().pid;
    {
        let _guard = lock.lock().expect("no worker dies holding the lock");
        println!("{cout} {pid}");
        let seen = counts.get(&"tasks".to_owned()).expect("the manager runs").unwrap_or(0);
        std::thread::sleep(Duration::from_millis(5));
        counts.insert("tasks".to_owned(), seen + 1).expect("the manager runs");
    }
    format!("i am {cout} and {pid}")
}

fn main() -> shmproc::Result<()> {
    let manager = Manager::start()?;
    let lock = manager.lock()?;
    let counts = manager.dict::<String, u32>()?;
    let pool = Pool::new(5)?;

    let results = (0..TASKS)
        .map(|i| pool.apply_async(work, (i, lock.clone(), counts.clone())))
        .collect::<shmproc::Result<Vec<_>>>()?;
    for res in &results {
        println!("{}", res.get()?);
    }
    pool.close();
    pool.join()?;
    let total = counts.get(&"tasks".to_owned())?.unwrap_or(0);
    println!("counter: {total} (expected {TASKS})");
    manager.shutdown()
}
