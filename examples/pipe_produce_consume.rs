//! A producer and a consumer process joined by a pipe made by their parent
//! (seed 000): the producer sends '666' and sleeps a moment; the consumer
//! prints what it receives. Each gets one end of the duplex pipe.
//!
//! After the producer exits, the consumer's next `recv` is end of file: the
//! consumer shows it by reading on until `Closed`.
//!
//! Run with `cargo run --example pipe_produce_consume`.

// Process targets take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use std::time::Duration;

use shmproc::{Connection, Error, Process, pipe};

/// The seed's `produce(pipe)`.
fn produce(pipe: Connection) {
    pipe.send("666").expect("the consumer holds the other end");
    std::thread::sleep(Duration::from_millis(100)); // the seed sleeps 1 s
}

/// The seed's `consume(pipe)`, then a read past the last message.
fn consume(pipe: Connection) {
    println!("{}", pipe.recv::<String>().expect("the producer sends one message"));
    match pipe.recv::<String>() {
        Err(Error::Closed) => println!("end of file: the producer has exited"),
        other => println!("unexpected: {other:?}"),
    }
}

fn main() -> shmproc::Result<()> {
    let (send_pi, recv_pi) = pipe()?;
    let mut pro = Process::new(produce, send_pi);
    let mut con = Process::new(consume, recv_pi);
    pro.start()?;
    con.start()?;
    pro.join()?;
    con.join()?;
    Ok(())
}
