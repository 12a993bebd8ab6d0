//! One lock for every task of a pool (seed 003): `Pool(5)` runs twenty
//! `work(i, lock)` tasks, each of which takes the lock, prints its number
//! and pid, sleeps (5 ms here, five seconds in the seed), releases it and
//! returns `"i am {i} and {pid}"`; the main process prints every result.
//!
//! The seed passes a `Manager().Lock()` (a proxy to a lock in a server
//! process) in each task's arguments. A `shmproc::Lock` made with
//! `Lock::new()` lives in an anonymous segment, which reaches a process only
//! as a descriptor handed over when the process starts: a task's arguments
//! go to workers that are already running, so it cannot travel there (the
//! example shows the error). The way to give every task the lock is to give
//! it to every worker when it starts: `Pool::builder().initializer(init,
//! args)` runs `init(args)` in each worker (and in each replacement worker)
//! before any task, and `init` keeps the handles in a `static OnceLock`.
//! (A named lock, `Lock::create(name)`, does travel in the arguments, by
//! name: but each task then opens and maps the segment again, the name must
//! be unique, and it stays in `/dev/shm` until the creating handle is
//! dropped, or, if the creator is killed first, until `shmproc::cleanup`.)
//!
//! To show that the lock excludes, each task also adds one to a shared
//! counter by reading it and writing it back under the lock (no atomic
//! add): the final count is exact.
//!
//! Run with `cargo run --example pool_lock`.

// Pool tasks take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use std::sync::OnceLock;
use std::time::Duration;

use shmproc::{Lock, Pool, Value, current_process};

/// Tasks submitted, as in the seed.
const TASKS: u64 = 20;

/// What every worker gets from the initializer: the lock and the counter.
static SHARED: OnceLock<(Lock, Value<u64>)> = OnceLock::new();

/// The initializer: runs once in each worker, before any task.
fn init(shared: (Lock, Value<u64>)) {
    SHARED.set(shared).expect("a worker is initialised once");
}

/// The seed's `work(cout, lock)`, with the lock from the initializer.
fn work(cout: u64) -> String {
    let (lock, counter) = SHARED.get().expect("the initializer ran");
    let pid = current_process().pid;
    {
        let _guard = lock.lock().expect("no worker dies holding the lock");
        println!("{cout} {pid}");
        let seen = counter.get();
        std::thread::sleep(Duration::from_millis(5));
        counter.set(seen + 1);
    }
    format!("i am {cout} and {pid}")
}

/// A task that wants the lock in its arguments, as the seed's does.
fn work_with_lock((cout, lock): (u64, Lock)) -> u64 {
    let _guard = lock.lock().expect("no worker dies holding the lock");
    cout
}

fn main() -> shmproc::Result<()> {
    let lock = Lock::new()?;
    let counter = Value::new(0u64)?;
    let pool = Pool::builder().processes(5).initializer(init, (lock.clone(), counter.clone())).build()?;

    match pool.apply_async(work_with_lock, (0, lock.clone())) {
        Ok(_) => println!("the lock travelled in a task's arguments"),
        Err(e) => println!("the lock in a task's arguments: {e}"),
    }

    let results = (0..TASKS).map(|i| pool.apply_async(work, i)).collect::<shmproc::Result<Vec<_>>>()?;
    for res in &results {
        println!("{}", res.get()?);
    }
    pool.close();
    pool.join()?;
    println!("counter: {} (expected {TASKS})", counter.get());
    Ok(())
}
