//! A dict and a list shared through a manager (seed 004, "Managers"): inside
//! `with Manager() as manager:`, three processes run `handle_message(d, l)`,
//! which sets `d[os.getpid()] = os.getpid()` and appends its pid to `l`; the
//! parent joins them and prints `d` and `l`.
//!
//! Python's `with` block is a scope here: a `Manager` dropped at the end of
//! a scope shuts its server down. A proxy kept past the scope still exists,
//! but its calls fail with `Error::Closed`, as Python's raise once the
//! manager has exited.
//!
//! Run with `cargo run --example manager_dict_list_pids`.

// Process targets take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use shmproc::{Error, Manager, Process, SharedDict, SharedList};

/// The seed's `handle_message(d, l)`; returns its pid, for the parent to check.
fn handle_message((d, l): (SharedDict<u32, u32>, SharedList<u32>)) -> u32 {
    let pid = std::process::id();
    d.insert(pid, pid).expect("the manager runs");
    l.push(pid).expect("the manager runs");
    pid
}

fn main() -> shmproc::Result<()> {
    let kept;
    {
        // Python: with Manager() as manager:
        let manager = Manager::start()?;
        let d = manager.dict::<u32, u32>()?;
        let l = manager.list::<u32>()?;

        let mut p_list = Vec::new();
        for _ in 0..3 {
            let mut p = Process::new(handle_message, (d.clone(), l.clone()));
            p.start()?;
            p_list.push(p);
        }
        let mut joined = Vec::new();
        for mut p in p_list {
            joined.push(p.join()?);
        }

        // A dict's items and a list filled at once come in no set order.
        let mut items = d.items()?;
        items.sort_unstable();
        let mut pids = l.to_vec()?;
        println!("d = {items:?}");
        println!("l = {pids:?}");
        pids.sort_unstable();
        joined.sort_unstable();
        let keys_are_values = items.iter().all(|(k, v)| k == v);
        let keys: Vec<u32> = items.iter().map(|&(k, _)| k).collect();
        println!("d's keys, l and the children's pids agree: {}", keys_are_values && keys == pids && pids == joined);
        kept = d;
        // `manager` is dropped here: its server shuts down.
    }
    match kept.len() {
        Err(Error::Closed) => println!("after the scope, the dict is closed"),
        other => println!("after the scope, the dict answered {other:?}"),
    }
    Ok(())
}
