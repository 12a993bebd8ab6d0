//! `Process(target=fun, args=(i,))`: start several processes with arguments,
//! join each, and print what their targets returned.
//!
//! The Python seed (a multiprocessing tutorial) starts
//! `multiprocessing.Process(target=fun, args=(1,))`, where `fun` prints
//! `sys.path`, `sys.version_info` and `sys.platform`. Here the target prints
//! where it runs, and — beyond Python — returns a value that `join` hands back.
//!
//! Run with `cargo run --example process_args`.

use shmproc::{Process, current_process};

/// A target is a plain `fn(A) -> R`, where `A` and `R` are serde types. A
/// tuple plays the part of Python's `args=(...)`.
fn fun((i, word): (u32, String)) -> String {
    let me = current_process();
    println!(
        "child {i}: {} (pid {}) on {}/{}, says {word:?}",
        me.name,
        me.pid,
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    format!("{word} x{i}")
}

fn main() -> shmproc::Result<()> {
    // Python: m = multiprocessing.Process(target=fun, args=(1,)); m.start()
    let mut one = Process::new(fun, (1, "hello".to_owned()));
    one.start()?;
    let result = one.join()?;
    println!("{} returned {result:?}", one.name());

    // Several processes, each with its own arguments and a name.
    let mut procs = Vec::new();
    for i in 2..=4 {
        let mut p = Process::builder().name(format!("worker-{i}")).target(fun, (i, "hi".to_owned()));
        p.start()?;
        procs.push(p);
    }
    // Join each (in start order) and print its result and exit code.
    for mut p in procs {
        let result = p.join()?;
        let code = p.exitcode();
        println!("{} returned {result:?} (exitcode {code:?})", p.name());
    }
    println!("all done");
    Ok(())
}
