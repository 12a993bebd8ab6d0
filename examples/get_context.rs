//! `get_context('fork')` (seed 001): a `Context` carries a start method, and
//! processes made from it use that method, whatever the default is.
//!
//! Python: `ctx = multiprocessing.get_context('fork'); mp = ctx.Process(...)`.
//! The seed hands a Queue to the child; shmproc has no Queue yet (it comes with
//! the queues issue), so the child's message comes back as its return value.
//!
//! Run with `cargo run --example get_context`.

use shmproc::{StartMethod, current_process, get_context};

fn foo(word: String) -> String {
    println!("new process started: ({})", current_process().pid);
    word
}

fn main() -> shmproc::Result<()> {
    let ctx = get_context(StartMethod::Fork);
    let mut mp = ctx.process().target(foo, "Python".to_owned());
    mp.start()?;
    println!("{}", mp.join()?);

    // The same with each start method.
    for method in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let ctx = get_context(method);
        let mut mp = ctx.process().target(foo, format!("Python via {method:?}"));
        mp.start()?;
        let got = mp.join()?;
        println!("{:?}: {got}", ctx.start_method());
    }
    Ok(())
}
