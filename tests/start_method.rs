//! The process-wide default start method. It is settable once per process, so
//! this binary holds a single test.

// Process targets are `fn(A) -> R`: they take their arguments by value.
#![allow(clippy::needless_pass_by_value)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::{Proc, join_ok};
use shmproc::{Error, Process, StartMethod, get_context, get_start_method, set_start_method};

/// Set by the test before starting children: a forked child sees the parent's
/// value, a spawned one (a fresh copy of this program) sees 0.
static MARK: AtomicU32 = AtomicU32::new(0);

fn read_mark(_: ()) -> u32 {
    MARK.load(Ordering::Relaxed)
}

#[test]
fn set_start_method_once_and_process_new_uses_it() {
    assert_eq!(get_start_method(), StartMethod::Fork, "the default is Fork");
    MARK.store(7, Ordering::Relaxed);

    set_start_method(StartMethod::Spawn).unwrap();
    assert_eq!(get_start_method(), StartMethod::Spawn);
    for again in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let e = set_start_method(again).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
        assert!(e.to_string().contains("already"), "{e}");
        assert_eq!(get_start_method(), StartMethod::Spawn, "a refused set changed the method");
    }

    // Process::new and a default builder use the new default ...
    let p = Process::new(read_mark, ());
    assert_eq!(p.start_method(), StartMethod::Spawn);
    let mut p = Proc(p);
    p.start().unwrap();
    assert_eq!(join_ok(&mut p), 0, "Process::new did not spawn a fresh process");
    let mut p = Proc(Process::builder().target(read_mark, ()));
    assert_eq!(p.start_method(), StartMethod::Spawn);
    p.start().unwrap();
    assert_eq!(join_ok(&mut p), 0);

    // ... while an explicit method or a context still wins.
    let mut p = Proc(get_context(StartMethod::Fork).process().target(read_mark, ()));
    p.start().unwrap();
    assert_eq!(join_ok(&mut p), 7, "a Fork context must fork");
    let mut p = Proc(Process::builder().start_method(StartMethod::Fork).target(read_mark, ()));
    p.start().unwrap();
    assert_eq!(join_ok(&mut p), 7);
}
