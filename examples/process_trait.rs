//! The "subclass `Process` and override `run()`" idiom.
//!
//! Python (seed 001) writes `class MyProcess(multiprocessing.Process)` with a
//! `run(self)` method. In Rust the job is a value whose type implements a
//! small trait, and the process runs it. Two ways to start one:
//!
//! - a closure target, `move || job.run()` (the Fork start method only: a
//!   closure cannot cross an `exec`);
//! - a generic `fn` target, `run_job::<Countdown>`, which every start method
//!   can run, Spawn included (the job travels as serde data).
//!
//! Run with `cargo run --example process_trait`.

use serde::{Deserialize, Serialize};
use shmproc::{Process, StartMethod, current_process, parent_process};

/// What Python's `Process.run` is: the body of a process.
trait Runnable {
    /// What the body returns (handed back by `join`).
    type Output;
    /// The body.
    fn run(self) -> Self::Output;
}

/// Python's `MyProcess(max)`: counts up to `max`, printing each step.
#[derive(Debug, Serialize, Deserialize)]
struct Countdown {
    max: u32,
}

impl Runnable for Countdown {
    type Output = u32;

    fn run(self) -> u32 {
        let me = current_process();
        let parent = parent_process().map_or(0, |p| p.pid);
        for i in 0..self.max {
            println!("({}) child of ({parent}): {i}", me.pid);
        }
        (0..self.max).sum()
    }
}

/// A `fn` target that runs any serde `Runnable`: one instance per job type.
fn run_job<J: Runnable>(job: J) -> J::Output {
    job.run()
}

fn main() -> shmproc::Result<()> {
    // 1. A closure (Fork): the job is moved into the child as it is.
    let job = Countdown { max: 3 };
    let mut p = Process::builder().name("closure").start_method(StartMethod::Fork).closure(move || job.run());
    p.start()?;
    println!("closure process returned {}", p.join()?);

    // 2. A generic fn target: works with Spawn too (a fresh copy of this
    //    program runs `run_job::<Countdown>` on the decoded job).
    let mut p =
        Process::builder().name("spawned").start_method(StartMethod::Spawn).target(run_job, Countdown { max: 4 });
    p.start()?;
    println!("spawned process returned {}", p.join()?);
    println!("main process done");
    Ok(())
}
