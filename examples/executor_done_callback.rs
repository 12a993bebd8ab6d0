//! `concurrent.futures` on a pool (seed 004's `ProcessPoolExecutor(2)`):
//!
//! 1. `pool.submit(task, url)` for three urls, each task sleeping (20 ms
//!    here, one second in the seed) and printing its url; `shutdown()` waits
//!    for them (Python's `shutdown(wait=True)`: `close` and `join`).
//! 2. The callback form: `submit` returns a future, and
//!    `add_done_callback(done_res)` runs `done_res(future)` once it is done,
//!    in the pool's thread that received the result; here it prints the
//!    result and records it. `shutdown(true)` returns after every callback
//!    has run.
//! 3. `as_completed`: the futures in the order they finish, whatever order
//!    they were submitted in.
//!
//! Run with `cargo run --example executor_done_callback`.

// Pool tasks take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shmproc::{Future, Pool, as_completed, current_process};

const URL_LIST: [&str; 3] = ["https://www.baidu.com", "https://www.zhihu.com", "https://www.163.com"];

/// The seed's first `task(url)`: sleeps, then prints.
fn handle(url: String) {
    std::thread::sleep(Duration::from_millis(20));
    println!("{url} handled by ({})", current_process().pid);
}

/// The seed's second `task(task)`: returns its argument.
fn task(task: String) -> String {
    task
}

/// Sleeps `ms` milliseconds, returns its url.
fn fetch((url, ms): (String, u64)) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    url
}

fn main() -> shmproc::Result<()> {
    // 1. submit, then shutdown.
    let pool = Pool::new(2)?;
    for url in URL_LIST {
        pool.submit(handle, url.to_owned())?;
    }
    println!("waiting for all subprocesses done...");
    pool.shutdown(true)?;
    println!("all processes done...");

    // 2. add_done_callback.
    let pool = Pool::new(2)?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    for url in URL_LIST {
        let res = pool.submit(task, url.to_owned())?;
        let seen = seen.clone();
        // The seed's `done_res(future)`.
        res.add_done_callback(move |future: &Future<String>| {
            let result = future.result().expect("task returns its argument");
            println!("callback: {result}");
            seen.lock().expect("no callback panics").push(result);
        });
    }
    pool.shutdown(true)?;
    let mut seen = std::mem::take(&mut *seen.lock().expect("no callback panics"));
    seen.sort();
    println!("callbacks ran: {} ({})", seen.len(), seen.join(", "));

    // 3. as_completed, on futures whose tasks take 60, 30 and 10 ms.
    let pool = Pool::new(2)?;
    let futures = URL_LIST
        .iter()
        .zip([60, 30, 10])
        .map(|(url, ms)| pool.submit(fetch, ((*url).to_owned(), ms)))
        .collect::<shmproc::Result<Vec<_>>>()?;
    for (n, future) in as_completed(futures).enumerate() {
        println!("completed #{}: {}", n + 1, future.result()?);
    }
    pool.shutdown(true)?;
    Ok(())
}
