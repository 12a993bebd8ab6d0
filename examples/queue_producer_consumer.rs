//! The producer and the consumer (seed 002): a producer puts 1 to 4 into a
//! queue, a consumer takes four items, slower than they are produced. The seed
//! uses threads; here they are processes.
//!
//! Run with `cargo run --example queue_producer_consumer`.

// Process targets take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use std::time::Duration;

use shmproc::{Process, Queue};

fn producer(q: Queue<u32>) {
    for i in 1..5 {
        println!("Producer is producing {i} to the queue!");
        q.put(i).expect("the queue is open");
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("Producer finished!");
}

fn consumer(q: Queue<u32>) -> Vec<u32> {
    let mut got = Vec::new();
    for _ in 1..5 {
        let val = q.get().expect("the queue is open");
        println!("Consumer is consuming {val} in the queue.");
        got.push(val);
        std::thread::sleep(Duration::from_millis(20)); // slower than the producer
    }
    println!("Consumer finished!");
    got
}

fn main() -> shmproc::Result<()> {
    let q = Queue::<u32>::new(10)?;
    let mut p = Process::new(producer, q.clone());
    let mut c = Process::new(consumer, q.clone());
    p.start()?;
    c.start()?;
    p.join()?;
    let got = c.join()?;
    assert_eq!(got, [1, 2, 3, 4]);
    println!("All processes finished!");
    Ok(())
}
