//! Results of a batch of work collected in a queue (seed 000: "run many
//! processes over a list of IPs and put the results in a Queue"). Each worker
//! process scores its share of addresses and puts `(address, score)` pairs into
//! one `ObjectQueue`; the parent collects exactly as many results as there are
//! addresses.
//!
//! Run with `cargo run --example queue_results`.

// Process targets take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use shmproc::{ObjectQueue, Process};

/// A stand-in for the seed's per-address computation.
fn score(ip: &str) -> u32 {
    ip.split('.').filter_map(|o| o.parse::<u32>().ok()).sum()
}

fn worker((ips, results): (Vec<String>, ObjectQueue<(String, u32)>)) -> usize {
    for ip in &ips {
        results.put((ip.clone(), score(ip))).expect("the queue is open");
    }
    ips.len()
}

fn main() -> shmproc::Result<()> {
    let ips: Vec<String> = (1..=12).map(|i| format!("10.0.{}.{}", i / 4, i)).collect();
    let results = ObjectQueue::<(String, u32)>::new(4096)?;
    let mut procs = Vec::new();
    for share in ips.chunks(4) {
        let mut p = Process::new(worker, (share.to_vec(), results.clone()));
        p.start()?;
        procs.push(p);
    }
    let mut collected: Vec<(String, u32)> = (0..ips.len()).map(|_| results.get()).collect::<Result<_, _>>()?;
    let done: usize = procs.iter_mut().map(Process::join).sum::<shmproc::Result<usize>>()?;
    collected.sort();
    for (ip, score) in &collected {
        println!("{ip} -> {score}");
    }
    assert_eq!(done, ips.len());
    println!("{} results collected", collected.len());
    Ok(())
}
