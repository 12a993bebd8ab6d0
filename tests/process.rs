//! `Process` under every start method: results of several types and sizes,
//! timed joins, exit codes (returned, exited, panicked, killed, terminated),
//! names and identities, `active_children`, misuse (joining or starting twice,
//! closures outside Fork), arguments that do not decode, daemon children dying
//! with their parent (even by `SIGKILL`), and no zombies.
//!
//! Every join is bounded (`join_within` / `join_ok`): a hang kills the child
//! and fails the test. A `Proc` kills its child if the test fails half-way.

// Process targets are `fn(A) -> R`: they take their arguments by value.
#![allow(clippy::needless_pass_by_value)]

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::{
    METHODS, Proc, WATCHDOG, atomic_u32, is_dead, join_err, join_ok, join_within, kill_and_reap, poll_until,
    proc_state, start, start_fn, unique_name, wait_until,
};
use serde::{Deserialize, Serialize};
use shmproc::{
    Error, Event, Lock, Process, ProcessInfo, Segment, StartMethod, active_children, cpu_count, current_process,
    get_context, parent_process,
};

// ---------------------------------------------------------------------------
// Targets (plain `fn`s, so that every start method can run them).
// ---------------------------------------------------------------------------

fn double(x: u64) -> u64 {
    x * 2
}

fn negate(x: i32) -> i32 {
    -x
}

fn halve(x: f64) -> f64 {
    x / 2.0
}

fn shout(s: String) -> String {
    format!("{}!", s.to_uppercase())
}

fn count_to(n: u32) -> Vec<u32> {
    (1..=n).collect()
}

fn unit(_: ()) {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i64,
    y: f64,
    label: String,
    tags: Vec<String>,
    next: Option<Box<Point>>,
}

fn mirror(p: Point) -> Point {
    Point {
        x: -p.x,
        y: -p.y,
        label: p.label.chars().rev().collect(),
        tags: p.tags.into_iter().rev().collect(),
        next: p.next.map(|n| Box::new(mirror(*n))),
    }
}

/// A big text of `n` bytes (printable, varying, each 64-byte line numbered so
/// that a misplaced block shows), and a smaller byte vector: postcard encodes
/// a `Vec<u8>` element by element, about 200 ms per MiB in a debug build,
/// while a string is one copy.
fn big(n: usize) -> (String, Vec<u8>) {
    let mut text = String::with_capacity(n + 64);
    let mut line = 0u64;
    while text.len() < n {
        let _ = writeln!(text, "{line:>12} the quick brown fox jumps over the lazy dog {:>5}", line % 99_991);
        line += 1;
    }
    text.truncate(n);
    let bytes = (0..n / 16).map(|i| (i % 251) as u8).collect();
    (text, bytes)
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Returns 42 once `go` is set.
fn wait_for_go(go: Event) -> u64 {
    assert!(go.wait_timeout(WATCHDOG).unwrap(), "go was never set");
    42
}

/// Sleeps until killed (at most a minute, should a test leak it).
fn linger(_: ()) {
    std::thread::sleep(Duration::from_secs(60));
}

fn exit_three(_: ()) -> u32 {
    std::process::exit(3)
}

fn boom(what: String) -> u32 {
    panic!("boom: {what} went wrong")
}

/// What the child knows about itself.
fn who_am_i(_: ()) -> (u32, String, bool, Option<u32>) {
    let me = current_process();
    (me.pid, me.name, me.daemon, parent_process().map(|p| p.pid))
}

/// Serialises as one byte; refuses to deserialise.
#[derive(Debug)]
struct Undecodable;

impl Serialize for Undecodable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(7)
    }
}

impl<'de> Deserialize<'de> for Undecodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("Undecodable refuses to decode"))
    }
}

fn take_undecodable(_: Undecodable) -> u32 {
    1
}

fn take_lock(lock: Lock) -> bool {
    lock.try_lock().is_ok()
}

/// Starts `p` and joins it under the watchdog, panicking on failure.
fn run<R: serde::de::DeserializeOwned>(p: Process<R>) -> R {
    let mut p = Proc(p);
    p.start().unwrap_or_else(|e| panic!("start: {e}"));
    join_ok(&mut p)
}

fn builder(method: StartMethod) -> shmproc::Builder {
    Process::builder().start_method(method)
}

/// Asserts that `pid` no longer exists (reaped: not even a zombie).
fn assert_reaped(pid: u32, what: &str) {
    // A reaped pid could in principle be reused at once; a zombie is the
    // failure this looks for.
    let state = proc_state(pid);
    assert!(state.is_none() || state != Some('Z'), "{what}: pid {pid} left as a zombie");
}

// ---------------------------------------------------------------------------
// Results.
// ---------------------------------------------------------------------------

#[test]
fn join_returns_the_targets_value() {
    for m in METHODS {
        assert_eq!(run(builder(m).target(double, 21)), 42, "{m:?}");
        assert_eq!(run(builder(m).target(negate, 7)), -7, "{m:?}");
        assert!((run(builder(m).target(halve, 5.0)) - 2.5).abs() < f64::EPSILON, "{m:?}");
        assert_eq!(run(builder(m).target(shout, "héllo".to_owned())), "HÉLLO!", "{m:?}");
        assert_eq!(run(builder(m).target(count_to, 5)), vec![1, 2, 3, 4, 5], "{m:?}");
        run(builder(m).target(unit, ()));
        let p = Point {
            x: 3,
            y: 1.5,
            label: "abc".into(),
            tags: vec!["a".into(), "b".into()],
            next: Some(Box::new(Point { x: -1, y: 0.25, label: "n".into(), tags: vec![], next: None })),
        };
        assert_eq!(run(builder(m).target(mirror, p.clone())), mirror(p), "{m:?}");
    }
}

#[test]
fn a_big_result_comes_back_intact() {
    const LEN: usize = 4 << 20; // 4 MiB, far past the result cell's first page
    let expected = big(LEN);
    for m in METHODS {
        let got = run(builder(m).target(big, LEN));
        assert_eq!((got.0.len(), got.1.len()), (LEN, LEN / 16), "{m:?}");
        if got != expected {
            let i = got.0.bytes().zip(expected.0.bytes()).position(|(a, b)| a != b);
            let j = got.1.iter().zip(&expected.1).position(|(a, b)| a != b);
            panic!("{m:?}: the result differs (first text byte {i:?}, first vector byte {j:?})");
        }
    }
}

#[test]
fn process_new_and_context_use_their_start_methods() {
    // Process::new uses the default method (Fork: nothing in this binary sets
    // another; tests/start_method.rs covers set_start_method).
    let p = Process::new(double, 1);
    assert_eq!(p.start_method(), StartMethod::Fork);
    assert_eq!(run(p), 2);
    for m in METHODS {
        let ctx = get_context(m);
        assert_eq!(ctx.start_method(), m);
        let p = ctx.process().target(double, 50);
        assert_eq!(p.start_method(), m);
        assert_eq!(run(p), 100, "{m:?}");
    }
}

// ---------------------------------------------------------------------------
// Timed joins, liveness, exit codes.
// ---------------------------------------------------------------------------

#[test]
fn join_timeout_is_none_while_running_then_the_value() {
    for m in METHODS {
        // The child runs until the parent sets `go`: no timing assumptions.
        let go = Event::new().unwrap();
        let mut p = Proc(builder(m).target(wait_for_go, go.clone()));
        assert!(!p.is_alive(), "{m:?}: alive before start");
        assert_eq!(p.exitcode(), None);
        assert_eq!(p.pid(), None);
        p.start().unwrap();
        assert!(p.pid().is_some());
        let t = Instant::now();
        assert!(matches!(p.join_timeout(Duration::from_millis(20)), Ok(None)), "{m:?}");
        assert!(t.elapsed() >= Duration::from_millis(20), "{m:?}: join_timeout returned early");
        assert!(p.is_alive(), "{m:?}");
        assert_eq!(p.exitcode(), None, "{m:?}");
        assert!(matches!(p.join_timeout(Duration::ZERO), Ok(None)), "{m:?}");
        go.set();
        assert_eq!(join_within(&mut p, WATCHDOG).unwrap(), 42, "{m:?}");
        assert!(!p.is_alive(), "{m:?}");
        assert_eq!(p.exitcode(), Some(0), "{m:?}");
    }
}

#[test]
fn exit_status_without_a_result() {
    for m in METHODS {
        let mut p = Proc(builder(m).target(exit_three, ()));
        p.start().unwrap();
        let e = join_err(&mut p);
        match &e {
            Error::ChildFailed { reason, exitcode } => {
                assert_eq!(*exitcode, Some(3), "{m:?}");
                assert!(reason.contains("exited with status 3 without reporting a result"), "{m:?}: {reason}");
            }
            other => panic!("{m:?}: expected ChildFailed, got {other:?}"),
        }
        assert!(e.to_string().contains("status 3"), "{m:?}: {e}");
        assert_eq!(p.exitcode(), Some(3), "{m:?}");
        assert!(!p.is_alive());
    }
}

#[test]
fn exitcode_is_known_before_join() {
    for m in METHODS {
        let mut p = Proc(builder(m).target(exit_three, ()));
        p.start().unwrap();
        assert!(poll_until(WATCHDOG, || p.exitcode().is_some()), "{m:?}: never exited");
        assert_eq!(p.exitcode(), Some(3), "{m:?}");
        assert!(!p.is_alive());
        assert!(matches!(join_err(&mut p), Error::ChildFailed { exitcode: Some(3), .. }), "{m:?}");
    }
}

#[test]
fn a_panicking_target_is_child_failed_with_the_message() {
    for m in METHODS {
        let mut p = Proc(builder(m).target(boom, format!("the {m:?} child")));
        p.start().unwrap();
        let e = join_err(&mut p);
        let want = format!("boom: the {m:?} child went wrong");
        match &e {
            Error::ChildFailed { reason, exitcode } => {
                assert!(reason.contains(&want), "{m:?}: {reason}");
                assert_eq!(*exitcode, Some(1), "{m:?}");
            }
            other => panic!("{m:?}: expected ChildFailed, got {other:?}"),
        }
        assert!(e.to_string().contains(&want), "{m:?}: {e}");
        assert_eq!(p.exitcode(), Some(1), "{m:?}");
    }
}

#[test]
fn kill_and_terminate() {
    for m in METHODS {
        for (sig, name) in [(libc::SIGKILL, "SIGKILL"), (libc::SIGTERM, "SIGTERM")] {
            let mut p = Proc(builder(m).target(linger, ()));
            p.start().unwrap();
            let pid = p.pid().unwrap();
            assert!(p.is_alive());
            if sig == libc::SIGKILL {
                p.kill().unwrap();
            } else {
                p.terminate().unwrap();
            }
            let e = join_err(&mut p);
            match &e {
                Error::ChildFailed { reason, exitcode } => {
                    assert_eq!(*exitcode, Some(-sig), "{m:?} {name}");
                    assert!(reason.contains(&format!("signal {sig}")) && reason.contains(name), "{m:?}: {reason}");
                }
                other => panic!("{m:?} {name}: expected ChildFailed, got {other:?}"),
            }
            assert_eq!(p.exitcode(), Some(-sig), "{m:?} {name}");
            assert!(!p.is_alive());
            // Signalling an exited process is a no-op, as in Python.
            p.kill().unwrap();
            p.terminate().unwrap();
            assert_reaped(pid, &format!("{m:?} after {name}"));
        }
    }
}

#[test]
fn signalling_or_joining_an_unstarted_process_is_an_error() {
    let mut p = Process::new(double, 1);
    assert!(matches!(p.kill(), Err(Error::InvalidArgument { .. })));
    assert!(matches!(p.terminate(), Err(Error::InvalidArgument { .. })));
    assert!(matches!(p.join(), Err(Error::InvalidArgument { .. })));
    assert!(matches!(p.join_timeout(Duration::ZERO), Err(Error::InvalidArgument { .. })));
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), None);
}

// ---------------------------------------------------------------------------
// Names and identities.
// ---------------------------------------------------------------------------

#[test]
fn names_explicit_and_generated() {
    for m in METHODS {
        let p = builder(m).name("worker-7").target(double, 1);
        assert_eq!(p.name(), "worker-7");
        assert!(!p.daemon());
        let a = builder(m).target(double, 1);
        let b = builder(m).target(double, 1);
        for p in [&a, &b] {
            let n = p.name().strip_prefix("Process-").unwrap_or_else(|| panic!("generated name {:?}", p.name()));
            assert!(n.parse::<u32>().is_ok(), "generated name {:?}", p.name());
        }
        assert_ne!(a.name(), b.name(), "generated names must differ");
    }
}

#[test]
fn current_and_parent_process_inside_the_child() {
    let me = current_process();
    assert_eq!(me.pid, std::process::id());
    assert_eq!(me.name, "MainProcess");
    assert!(!me.daemon);
    assert_eq!(parent_process(), None);
    for m in METHODS {
        for daemon in [false, true] {
            let name = format!("ident-{m:?}-{daemon}");
            let mut p = Proc(builder(m).name(name.clone()).daemon(daemon).target(who_am_i, ()));
            assert_eq!(p.daemon(), daemon);
            p.start().unwrap();
            let (pid, got_name, got_daemon, parent) = join_ok(&mut p);
            assert_eq!(Some(pid), p.pid(), "{m:?}: pid() and the child's own pid differ");
            assert_eq!(got_name, name, "{m:?}");
            assert_eq!(got_daemon, daemon, "{m:?}");
            assert_eq!(parent, Some(std::process::id()), "{m:?}");
        }
    }
}

#[test]
fn cpu_count_is_sane() {
    let n = cpu_count();
    assert!(n >= 1);
    assert_eq!(n, std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
}

// ---------------------------------------------------------------------------
// active_children and reaping.
// ---------------------------------------------------------------------------

fn listed(pid: u32) -> Option<ProcessInfo> {
    active_children().into_iter().find(|c| c.pid == pid)
}

#[test]
fn active_children_lists_running_children_only() {
    for m in METHODS {
        let name = format!("active-{m:?}");
        let mut p = Proc(builder(m).name(name.clone()).daemon(true).target(linger, ()));
        p.start().unwrap();
        let pid = p.pid().unwrap();
        let info = listed(pid).unwrap_or_else(|| panic!("{m:?}: running child {pid} not in active_children"));
        assert_eq!(info.name, name);
        assert!(info.daemon);
        assert_eq!(kill_and_reap(&mut p), Some(-libc::SIGKILL));
        assert_eq!(listed(pid), None, "{m:?}: a reaped child is still listed");
        assert_reaped(pid, &format!("{m:?} killed"));
    }
}

#[test]
fn a_child_that_exited_is_dropped_from_active_children_and_still_joins() {
    for m in METHODS {
        let mut p = Proc(builder(m).target(double, 4));
        p.start().unwrap();
        let pid = p.pid().unwrap();
        // active_children reaps the finished child (as Python's does) ...
        assert!(poll_until(WATCHDOG, || listed(pid).is_none()), "{m:?}: an exited child stays listed");
        assert!(poll_until(WATCHDOG, || proc_state(pid).is_none()), "{m:?}: not reaped: {:?}", proc_state(pid));
        // ... and its result is still there for join.
        assert_eq!(join_ok(&mut p), 8, "{m:?}");
        assert_eq!(p.exitcode(), Some(0));
    }
}

#[test]
fn joined_children_leave_no_zombie() {
    for m in METHODS {
        let mut procs: Vec<Proc<u64>> = (0..3).map(|i| start_fn(m, double, i)).collect();
        let pids: Vec<u32> = procs.iter().map(|p| p.pid().unwrap()).collect();
        for (i, p) in procs.iter_mut().enumerate() {
            assert_eq!(join_ok(p), 2 * i as u64);
        }
        for pid in pids {
            assert_reaped(pid, &format!("{m:?} joined"));
        }
    }
}

#[test]
fn dropping_an_unjoined_process_leaves_no_zombie() {
    for m in METHODS {
        let mut p = builder(m).target(nap, 50);
        p.start().unwrap();
        let pid = p.pid().unwrap();
        drop(p);
        assert!(
            poll_until(WATCHDOG, || proc_state(pid).is_none()),
            "{m:?}: dropped child {pid} was never reaped (state {:?})",
            proc_state(pid)
        );
    }
}

// ---------------------------------------------------------------------------
// Misuse.
// ---------------------------------------------------------------------------

#[test]
fn joining_twice_is_an_error() {
    for m in METHODS {
        let mut p = start_fn(m, double, 3);
        assert_eq!(join_ok(&mut p), 6);
        assert!(matches!(p.join(), Err(Error::InvalidArgument { .. })), "{m:?}");
        assert!(matches!(p.join_timeout(Duration::ZERO), Err(Error::InvalidArgument { .. })), "{m:?}");
        assert_eq!(p.exitcode(), Some(0));
    }
}

#[test]
fn starting_twice_is_an_error() {
    for m in METHODS {
        let mut p = start_fn(m, double, 3);
        let pid = p.pid();
        assert!(matches!(p.start(), Err(Error::InvalidArgument { .. })), "{m:?}");
        assert_eq!(p.pid(), pid, "{m:?}: a refused start changed the pid");
        assert_eq!(join_ok(&mut p), 6);
        assert!(matches!(p.start(), Err(Error::InvalidArgument { .. })), "{m:?}: restart after join");
    }
}

#[test]
fn a_closure_works_with_fork_only() {
    let words = ["a".to_owned(), "bb".to_owned()];
    let base = 100usize;
    let mut p = start(StartMethod::Fork, move || base + words.iter().map(String::len).sum::<usize>());
    assert_eq!(join_ok(&mut p), 103);

    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let mut p = builder(m).closure(move || base);
        let e = p.start().unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{m:?}: {e:?}");
        assert!(e.to_string().contains("Fork"), "{m:?}: the error should say closures need Fork: {e}");
        assert_eq!(p.pid(), None);
        assert!(!p.is_alive());
        assert!(matches!(p.join(), Err(Error::InvalidArgument { .. })));
    }
}

#[test]
fn arguments_that_fail_to_decode_give_an_error_not_a_hang() {
    // Fork does not encode the arguments: the child gets the value itself.
    assert_eq!(run(builder(StartMethod::Fork).target(take_undecodable, Undecodable)), 1);
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let mut p = start_fn(m, take_undecodable, Undecodable);
        let e = join_err(&mut p);
        match &e {
            Error::ChildFailed { reason, exitcode } => {
                assert!(reason.contains("did not decode"), "{m:?}: {reason}");
                assert!(exitcode.is_some_and(|c| c > 0), "{m:?}: exit code {exitcode:?}");
            }
            other => panic!("{m:?}: expected ChildFailed, got {other:?}"),
        }
    }
}

#[test]
fn a_named_handle_whose_name_is_gone_gives_an_error_not_a_hang() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let name = unique_name("proc-unlinked");
        let lock = Lock::create(&name).unwrap();
        // Remove the name before the child can open it (the parent's mapping
        // stays valid; the child has only the name to go by).
        std::fs::remove_file(common::shm_path(&name)).unwrap();
        let mut p = start_fn(m, take_lock, lock.clone());
        let e = join_err(&mut p);
        match &e {
            Error::ChildFailed { reason, exitcode } => {
                assert!(reason.contains("did not decode"), "{m:?}: {reason}");
                assert!(exitcode.is_some_and(|c| c > 0), "{m:?}: exit code {exitcode:?}");
            }
            other => panic!("{m:?}: expected ChildFailed, got {other:?}"),
        }
        drop(lock);
    }
}

// ---------------------------------------------------------------------------
// Daemons and parent death.
// ---------------------------------------------------------------------------

/// Grandchild: records its pid in the named segment, then sleeps (bounded).
fn record_pid_and_linger(seg: String) {
    let seg = Segment::open(&seg).expect("open the pid segment");
    atomic_u32(&seg, 0).store(std::process::id(), std::sync::atomic::Ordering::Release);
    std::thread::sleep(Duration::from_secs(30));
}

/// Intermediate: starts a grandchild (`METHODS[method]`, daemon or not) that
/// records its pid, then sleeps until the test kills it.
fn start_grandchild_and_linger((method, seg, daemon): (u8, String, bool)) {
    let method = METHODS[usize::from(method)];
    let mut p = Process::builder().start_method(method).daemon(daemon).target(record_pid_and_linger, seg);
    p.start().expect("start the grandchild");
    std::thread::sleep(Duration::from_secs(30));
    drop(p);
}

/// Runs an intermediate process that starts a grandchild with `method`, kills
/// the intermediate with `SIGKILL` once the grandchild runs, and returns the
/// grandchild's pid.
///
/// The intermediate is a spawned (fresh, single-threaded) process: a forked
/// copy of this multi-threaded test harness that starts processes itself could
/// inherit a lock another test's thread held at fork time.
fn orphan_a_grandchild(method: StartMethod, daemon: bool) -> u32 {
    let seg_name = unique_name("proc-daemon");
    let seg = Segment::create(&seg_name, 64).unwrap();
    let index = METHODS.iter().position(|x| *x == method).unwrap() as u8;
    let mut mid = start_fn(StartMethod::Spawn, start_grandchild_and_linger, (index, seg_name, daemon));
    let word = atomic_u32(&seg, 0);
    wait_until("the grandchild records its pid", || {
        assert!(mid.is_alive(), "the intermediate died: {:?}", mid.join_timeout(Duration::ZERO));
        word.load(std::sync::atomic::Ordering::Acquire) != 0
    });
    let grandchild = word.load(std::sync::atomic::Ordering::Acquire);
    assert!(!is_dead(grandchild), "{method:?}: the grandchild died before its parent");
    assert_eq!(kill_and_reap(&mut mid), Some(-libc::SIGKILL));
    grandchild
}

#[test]
fn a_daemon_child_dies_when_its_parent_is_killed() {
    for m in METHODS {
        let grandchild = orphan_a_grandchild(m, true);
        let t = Instant::now();
        let died = poll_until(Duration::from_secs(5), || is_dead(grandchild));
        if !died {
            // SAFETY: signalling the grandchild this test started (its pid
            // was just seen alive), so that a failure leaves nothing behind.
            unsafe { libc::kill(grandchild as i32, libc::SIGKILL) };
        }
        assert!(died, "{m:?}: daemon grandchild {grandchild} outlived its parent by 5 s");
        eprintln!("{m:?}: daemon died {:?} after its parent", t.elapsed());
    }
}

#[test]
fn a_non_daemon_child_survives_its_parent() {
    for m in METHODS {
        let grandchild = orphan_a_grandchild(m, false);
        // A daemon dies within milliseconds (see above); this one must not.
        std::thread::sleep(Duration::from_millis(150));
        let alive = !is_dead(grandchild);
        // SAFETY: as above: the grandchild this test started, now an orphan.
        unsafe { libc::kill(grandchild as i32, libc::SIGKILL) };
        assert!(alive, "{m:?}: a non-daemon child died with its parent");
        assert!(poll_until(WATCHDOG, || is_dead(grandchild)), "{m:?}: orphan {grandchild} survived SIGKILL");
    }
}

// ---------------------------------------------------------------------------
// A forked child that starts children itself.
// ---------------------------------------------------------------------------

fn own_pid(_: ()) -> u32 {
    std::process::id()
}

/// Starts `n` `ForkServer` children one after the other; returns how many of
/// them reported a pid other than the one `pid()` gave for them.
fn fork_server_pid_mismatches(n: u32) -> u32 {
    let mut mismatches = 0;
    for _ in 0..n {
        let mut p = Proc(builder(StartMethod::ForkServer).target(own_pid, ()));
        p.start().expect("start a ForkServer child");
        let pid = p.pid();
        if Some(join_ok(&mut p)) != pid {
            mismatches += 1;
        }
    }
    mismatches
}

/// A forked child inherits its parent's fork-server connection (the socket and
/// the `SERVER` state in src/process/forkserver.rs). When parent and child
/// both start `ForkServer` children at once, their requests share one socket
/// and each may read the other's reply: `pid()` names someone else's child
/// (and `kill()` would signal it).
#[test]
fn a_forked_child_and_its_parent_share_no_fork_server_replies() {
    const ROUNDS: u32 = 100;
    // Make sure this process has a fork server before forking.
    assert_eq!(fork_server_pid_mismatches(1), 0);
    let mut child = start(StartMethod::Fork, || fork_server_pid_mismatches(ROUNDS));
    let parent_mismatches = fork_server_pid_mismatches(ROUNDS);
    let child_mismatches = join_ok(&mut child);
    assert_eq!(
        (parent_mismatches, child_mismatches),
        (0, 0),
        "pid() of a ForkServer child was another process's pid ({parent_mismatches} times in the parent, \
         {child_mismatches} in its forked child, out of {ROUNDS} each)"
    );
}

/// Takes `lock`, says so, and holds it.
fn take_and_hold((lock, held): (Lock, Event)) {
    let _g = lock.lock().unwrap();
    held.set();
    std::thread::sleep(Duration::from_secs(60));
}

/// In a spawned child (whose whole life runs in the crate's startup
/// constructor): forks a grandchild that takes `lock`; true if this process
/// then sees the lock as someone else's, as it is.
fn fork_from_a_spawned_child(lock: Lock) -> bool {
    let held = Event::new().unwrap();
    let mut p = Process::builder().start_method(StartMethod::Fork).target(take_and_hold, (lock.clone(), held.clone()));
    p.start().unwrap();
    assert!(held.wait_timeout(Duration::from_secs(10)).unwrap(), "the grandchild never took the lock");
    let mine = lock.is_owned_by_current_thread();
    p.kill().unwrap();
    let _ = p.join();
    !mine
}

#[test]
fn a_spawned_child_that_forks_gives_its_child_an_identity_of_its_own() {
    // The fork handlers must be registered before a spawned child's target
    // runs (in the startup constructor, whose order against the handlers'
    // follows the link): without the child handler, the grandchild took
    // the lock under its parent's cached thread id.
    let lock = Lock::new().unwrap();
    let mut p = start_fn(StartMethod::Spawn, fork_from_a_spawned_child, lock.clone());
    assert!(join_ok(&mut p), "the spawned child saw its own child's lock as its own");
}
