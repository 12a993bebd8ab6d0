//! Two processes sharing a queue made by their parent (seed 002): a writer puts
//! 'A', 'B', 'C'; a reader loops on `get` forever, so the parent terminates it
//! once the writer is done and everything was read.
//!
//! The seed's parent terminates the reader right after the writer ends, which
//! can cut it off before it printed the last value; here the reader also
//! reports each value on a second queue, and the parent waits for all three
//! before terminating it.
//!
//! Run with `cargo run --example queue_writer_reader`.

// Process targets take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use std::time::Duration;

use shmproc::{ObjectQueue, Process, current_process};

/// The seed's `write(q)`.
fn write(q: ObjectQueue<String>) {
    println!("Process to write: {}", current_process().pid);
    for (i, value) in ["A", "B", "C"].into_iter().enumerate() {
        println!("Put {value} to queue...");
        q.put(value.to_owned()).expect("the queue is open");
        std::thread::sleep(Duration::from_millis(10 * (i as u64 % 2 + 1))); // the seed sleeps random()
    }
}

/// The seed's `read(q)`: an endless loop, reporting each value on `seen`.
fn read((q, seen): (ObjectQueue<String>, ObjectQueue<String>)) {
    println!("Process to read: {}", current_process().pid);
    loop {
        let value = q.get().expect("the queue is open");
        println!("Get {value} from queue.");
        seen.put(value).expect("the queue is open");
    }
}

fn main() -> shmproc::Result<()> {
    let q = ObjectQueue::<String>::new(1024)?;
    let seen = ObjectQueue::<String>::new(1024)?;
    let mut pw = Process::new(write, q.clone());
    let mut pr = Process::new(read, (q.clone(), seen.clone()));
    pw.start()?;
    pr.start()?;
    pw.join()?;
    for _ in 0..3 {
        seen.get()?;
    }
    pr.terminate()?; // the reader never returns
    let _ = pr.join(); // reaped: it was killed by SIGTERM
    println!("reader terminated with exit code {:?}", pr.exitcode());
    Ok(())
}
