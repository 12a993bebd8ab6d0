//! `set_start_method('spawn')` (seed 001): a spawned child hands a message back.
//!
//! The Python seed passes a `multiprocessing.Queue` to the child, which puts
//! `'Python'` in it; the parent prints `q.get()`. shmproc has no `Queue` yet
//! (it comes with the queues issue, and then this example becomes the
//! seed verbatim). Until then, two ways back from a spawned child:
//!
//! 1. the target's return value, which `join` hands back;
//! 2. shared memory: a named `Segment` the child writes into, and an `Event`
//!    (passed as an argument: it travels as a reference to its segment) that
//!    it sets when the message is there — a one-slot queue.
//!
//! Run with `cargo run --example spawn_queue`.

use std::time::Duration;

use shmproc::{Event, Process, Segment, StartMethod, current_process, get_start_method, set_start_method};

/// Bytes reserved for the message (a `u32` length, then UTF-8).
const SLOT: usize = 256;

/// Returns the message: `join` hands it to the parent.
fn foo(_: ()) -> String {
    println!("new process started: ({})", current_process().pid);
    "Python".to_owned()
}

/// Writes the message into the named segment, then sets `ready`.
fn foo_shared((segment, ready): (String, Event)) {
    println!("new process started: ({})", current_process().pid);
    let slot = Segment::open(&segment).expect("open the message slot");
    let msg = b"Python";
    slot.write_at(4, msg).expect("write the message");
    slot.write_at(0, &(msg.len() as u32).to_le_bytes()).expect("write its length");
    ready.set();
}

fn main() -> shmproc::Result<()> {
    // Must come before any process is started (Python says the same).
    set_start_method(StartMethod::Spawn)?;
    println!("start method: {:?}", get_start_method());

    // 1. Through the return value.
    let mut p = Process::new(foo, ());
    p.start()?;
    println!("{}", p.join()?);

    // 2. Through shared memory and an Event.
    let name = format!("shmproc-example-spawn-queue-{}", std::process::id());
    let slot = Segment::create(&name, SLOT)?; // unlinked when dropped
    let ready = Event::new()?;
    let mut p = Process::new(foo_shared, (name, ready.clone()));
    p.start()?;
    if !ready.wait_timeout(Duration::from_secs(10))? {
        p.kill()?;
        return Err(shmproc::Error::Timeout);
    }
    let mut len = [0u8; 4];
    slot.read_at(0, &mut len)?;
    let mut msg = vec![0u8; u32::from_le_bytes(len) as usize];
    slot.read_at(4, &mut msg)?;
    println!("{}", String::from_utf8_lossy(&msg));
    p.join()?;
    Ok(())
}
