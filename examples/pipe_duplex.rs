//! A parent and a child talking both ways over one pipe (seeds 001 and 004):
//! the child sends "I am `child_conn`", receives the parent's answer, prints
//! it and closes its end; the parent prints what the child sent and answers.
//!
//! Run with `cargo run --example pipe_duplex`.

// Process targets take their arguments by value (they arrive decoded).
#![allow(clippy::needless_pass_by_value)]

use shmproc::{Connection, Process, current_process, pipe};

/// The seed's `handle_message(conn)`.
fn handle_message(conn: Connection) {
    println!("({}) child sends", current_process().pid);
    conn.send("I am child_conn").expect("the parent holds the other end");
    let res: String = conn.recv().expect("the parent answers");
    println!("child_conn {res}");
    conn.close();
}

fn main() -> shmproc::Result<()> {
    let (parent_conn, child_conn) = pipe()?;
    let mut p = Process::new(handle_message, child_conn);
    p.start()?;
    let res: String = parent_conn.recv()?;
    println!("parent_res {res}");
    parent_conn.send("I am parent_conn")?;
    p.join()?;
    // The child closed its end: nothing more will come.
    println!("after the child closed: {:?}", parent_conn.recv::<String>().err());
    Ok(())
}
