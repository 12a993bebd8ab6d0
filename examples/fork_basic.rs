//! `os.fork()` (seed 001), with shmproc's Fork start method.
//!
//! Python's `os.fork()` returns twice; `Process` with `StartMethod::Fork`
//! forks too, but the child runs only the target and then exits, so the code
//! after `start()` runs in the parent alone. The child sees itself through
//! `current_process()` and its parent through `parent_process()`.
//!
//! Run with `cargo run --example fork_basic`.

use shmproc::{Process, StartMethod, current_process, parent_process};

/// The child's part: say who we are, and return (our pid, our parent's pid).
fn child(_: ()) -> (u32, u32) {
    let me = current_process().pid;
    println!("process entered: {me}");
    let parent = parent_process().expect("started by shmproc").pid;
    println!("child, its pid is ({me}), its parent's pid is ({parent})");
    println!("process ending: {me}");
    (me, parent)
}

fn main() -> shmproc::Result<()> {
    let me = current_process().pid;
    println!("parent process ({me}) starting");
    let mut p = Process::builder().start_method(StartMethod::Fork).target(child, ());
    p.start()?;
    let pid = p.pid().expect("started");
    println!("I ({me}) created a child process ({pid})");
    let (child_pid, childs_parent) = p.join()?;
    println!("child {child_pid} reported parent {childs_parent}: pid matches {}", child_pid == pid);
    println!("parent is me: {}", childs_parent == me);
    println!("process ending: {me}");
    Ok(())
}
