//! A dict shared through a manager by ten processes (seed 000, "使用Manager共享数据"):
//! `dic = Manager().dict()`, then ten processes, each started and joined in
//! turn, run `func(i, dic)`, which sets `dic["num"] = 100 + i` and prints
//! `dic.items()`.
//!
//! The manager is a server process that owns the dict; a `SharedDict` is a
//! proxy to it, `Clone`, and handed to a process in its arguments like any
//! other value. Every call is a round trip to the server, so what one process
//! writes, the next one reads.
//!
//! Beyond the seed, the ten processes then run all at once, each writing its
//! own key into a second dict; the parent prints that dict sorted by key
//! (a dict's items come in no particular order).
//!
//! Run with `cargo run --example manager_dict_ten_processes`.

// Process targets take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use shmproc::{Manager, Process, SharedDict};

/// The seed's `func(i, dic)`.
fn func((i, dic): (u32, SharedDict<String, u32>)) {
    dic.insert("num".to_owned(), 100 + i).expect("the manager runs");
    let items = dic.items().expect("the manager runs");
    println!("process {i} modified the dict: {items:?}");
}

/// Each process writes its own key.
fn write_own_key((i, dic): (u32, SharedDict<u32, u32>)) {
    dic.insert(i, 100 + i).expect("the manager runs");
}

fn main() -> shmproc::Result<()> {
    let manager = Manager::start()?;

    // The seed: one process at a time, each overwriting "num".
    let dic = manager.dict::<String, u32>()?;
    for i in 0..10 {
        let mut p = Process::new(func, (i, dic.clone()));
        p.start()?;
        p.join()?;
    }

    // Ten processes at once, ten keys.
    let by_process = manager.dict::<u32, u32>()?;
    let mut procs = Vec::new();
    for i in 0..10 {
        let mut p = Process::new(write_own_key, (i, by_process.clone()));
        p.start()?;
        procs.push(p);
    }
    for mut p in procs {
        p.join()?;
    }
    let mut items = by_process.items()?;
    items.sort_unstable();
    println!("written by ten processes at once: {items:?}");

    manager.shutdown()
}
