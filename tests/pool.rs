//! Pool and futures: every method, under fork and spawn, and the failures
//! `CPython`'s pool hangs on (a worker killed mid-task, a panicking task or
//! initializer, terminate during a map, `max_tasks_per_child`).
//!
//! Every test runs under a watchdog that aborts the test binary if the pool
//! hangs (workers are daemons: they go with it).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Watchdog;
use shmproc::{AsyncResult, Error, Pool, StartMethod, as_completed};

/// Fork and Spawn: the pool's two kinds of workers (`ForkServer` is Spawn's
/// protocol with Fork's cost; one test covers it).
const METHODS: [StartMethod; 2] = [StartMethod::Fork, StartMethod::Spawn];

fn watchdog(what: &'static str) -> Watchdog {
    Watchdog::new(move || common::abort_hung("pool", what))
}

fn pool(method: StartMethod, n: usize) -> Pool {
    Pool::builder().processes(n).start_method(method).build().unwrap_or_else(|e| panic!("a {method:?} pool: {e}"))
}

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn pid_of(_: u32) -> u32 {
    std::process::id()
}

fn boom(x: u32) -> u32 {
    assert!(x != 3, "boom at {x}");
    x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Kills its own worker with SIGKILL (mid-task).
fn die(x: u32) -> u32 {
    // SAFETY: raise(3) with a valid signal number; it does not return.
    unsafe { libc::raise(libc::SIGKILL) };
    x
}

#[test]
fn apply_map_starmap_and_imap_give_every_result_in_order() {
    let _w = watchdog("apply_map");
    for method in METHODS {
        let p = pool(method, 2);
        assert_eq!(p.apply(square, 7).unwrap(), 49);
        let r = p.apply_async(square, 12).unwrap();
        assert_eq!(r.get().unwrap(), 144);
        assert_eq!(r.get().unwrap(), 144, "get again");
        assert!(r.ready());
        assert_eq!(r.successful(), Some(true));
        assert_eq!(p.map(square, 0..100, None).unwrap(), (0..100).map(|x| x * x).collect::<Vec<_>>());
        assert_eq!(p.map(square, 0..10, Some(1)).unwrap(), (0..10).map(|x| x * x).collect::<Vec<_>>());
        assert!(p.map(square, Vec::new(), None).unwrap().is_empty());
        assert_eq!(
            p.starmap(add, (0..50).map(|i| (i, 2 * i)), Some(7)).unwrap(),
            (0..50).map(|i| 3 * i).collect::<Vec<_>>()
        );
        let ordered: Vec<u64> = p.imap(square, 0..1000, 3).map(Result::unwrap).collect();
        assert_eq!(ordered, (0..1000).map(|x| x * x).collect::<Vec<_>>());
        let mut unordered: Vec<u64> = p.imap_unordered(square, 0..1000, 5).map(Result::unwrap).collect();
        unordered.sort_unstable();
        assert_eq!(unordered, (0..1000).map(|x| x * x).collect::<Vec<_>>());
        p.close();
        p.join().unwrap();
    }
}

#[test]
fn imap_on_an_endless_iterator_reads_only_what_it_needs() {
    let _w = watchdog("imap_endless");
    let p = pool(StartMethod::Fork, 2);
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let input = (0u64..).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let first: Vec<u64> = p.imap(square, input, 1).take(10).map(Result::unwrap).collect();
    assert_eq!(first, (0..10).map(|x| x * x).collect::<Vec<_>>());
    let n = pulled.load(Ordering::Relaxed);
    // Ten taken, plus twice what the workers may hold (two windows of 64).
    assert!(n <= 10 + 2 * 2 * 64, "an endless input was read {n} items ahead");
}

#[test]
fn a_panicking_task_is_an_error_with_its_message_and_the_worker_goes_on() {
    let _w = watchdog("panic");
    for method in METHODS {
        let p = pool(method, 1);
        let before = p.apply(pid_of, 0).unwrap();
        let err = p.apply(boom, 3).unwrap_err();
        assert!(matches!(&err, Error::TaskFailed { reason } if reason.contains("boom at 3")), "{err}");
        assert_eq!(p.apply(pid_of, 0).unwrap(), before, "the same worker goes on");
        let err = p.map(boom, 0..10, Some(2)).unwrap_err();
        assert!(err.to_string().contains("boom at 3"), "{err}");
        let items: Vec<_> = p.imap(boom, 0..6, 1).collect();
        assert!(items[3].is_err() && items.iter().filter(|r| r.is_ok()).count() == 5, "{items:?}");
    }
}

#[test]
fn a_worker_killed_mid_task_fails_that_task_only_and_is_replaced() {
    let _w = watchdog("sigkill");
    for method in METHODS {
        let p = pool(method, 2);
        let workers = |p: &Pool| -> std::collections::HashSet<u32> {
            p.map(pid_square, 0..40, Some(1)).unwrap().into_iter().map(|(pid, _)| pid).collect()
        };
        let before = workers(&p);
        assert_eq!(before.len(), 2, "both workers take tasks: {before:?}");
        let others: Vec<_> = (0..40).map(|i| p.apply_async(square, i).unwrap()).collect();
        let killed = p.apply_async(die, 1).unwrap();
        let more: Vec<_> = (40..80).map(|i| p.apply_async(square, i).unwrap()).collect();
        let err = killed.get().unwrap_err();
        assert!(matches!(&err, Error::TaskFailed { reason } if reason.contains("SIGKILL")), "{err}");
        for (i, r) in others.iter().chain(&more).enumerate() {
            assert_eq!(r.get().unwrap(), (i as u64) * (i as u64));
        }
        // A new worker took the dead one's place (it may still be starting:
        // look until both answer).
        let mut after = workers(&p);
        let deadline = Instant::now() + Duration::from_secs(20);
        while after.len() < 2 && Instant::now() < deadline {
            after.extend(workers(&p));
        }
        assert_eq!(after.len(), 2, "two workers again: {after:?}");
        assert_eq!(after.intersection(&before).count(), 1, "one worker replaced: {before:?} then {after:?}");
        p.close();
        p.join().unwrap();
    }
}

fn init_panics(_: ()) {
    panic!("no initializing today");
}

static INIT_VALUE: Mutex<u64> = Mutex::new(0);

fn init_set(v: u64) {
    *INIT_VALUE.lock().unwrap() = v;
}

fn read_init(_: u32) -> u64 {
    *INIT_VALUE.lock().unwrap()
}

#[test]
fn the_initializer_runs_in_every_worker_and_a_panicking_one_fails_the_pool() {
    let _w = watchdog("initializer");
    for method in METHODS {
        let p = Pool::builder().processes(2).start_method(method).initializer(init_set, 77).build().unwrap();
        assert!(p.map(read_init, 0..8, Some(1)).unwrap().iter().all(|&v| v == 77));
        let started = Instant::now();
        let err = Pool::builder().processes(2).start_method(method).initializer(init_panics, ()).build().unwrap_err();
        assert!(err.to_string().contains("no initializing today"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20), "no endless respawn loop");
    }
}

#[test]
fn terminate_during_a_map_fails_what_is_pending_and_join_returns() {
    let _w = watchdog("terminate");
    for method in METHODS {
        let p = pool(method, 2);
        let r = p.map_async(sleep_ms, vec![200; 20], Some(1)).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let singles: Vec<_> = (0..10).map(|_| p.apply_async(sleep_ms, 200).unwrap()).collect();
        for one in &singles {
            let calls = calls.clone();
            one.on_error(move |_| {
                calls.fetch_add(1, Ordering::SeqCst);
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        p.terminate();
        let err = r.get().unwrap_err();
        assert!(err.to_string().contains("terminated"), "{err}");
        for one in &singles {
            assert!(one.get().is_err());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 10, "each error callback once, on the terminate path too");
        p.join().unwrap();
        assert!(p.apply(square, 1).is_err(), "a terminated pool takes no tasks");
    }
}

#[test]
fn max_tasks_per_child_replaces_workers_without_stranding_tasks() {
    let _w = watchdog("max_tasks");
    for method in METHODS {
        let p = Pool::builder().processes(2).start_method(method).max_tasks_per_child(3).build().unwrap();
        let rs: Vec<_> = (0..30).map(|_| p.apply_async(pid_of, 0).unwrap()).collect();
        let pids: Vec<u32> = rs.iter().map(|r| r.get().unwrap()).collect();
        let mut distinct = pids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 10, "30 tasks at 3 per worker need 10 workers: {distinct:?}");
        for pid in &distinct {
            assert!(pids.iter().filter(|&p| p == pid).count() <= 3, "{pid} ran more than 3");
        }
        p.close();
        p.join().unwrap();
    }
}

#[test]
fn futures_callbacks_and_as_completed() {
    let _w = watchdog("futures");
    let p = pool(StartMethod::Fork, 2);
    let nine = p.submit(square, 9).unwrap();
    assert_eq!(nine.result().unwrap(), 81);
    assert!(nine.done());
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let futures: Vec<_> = (0..10).map(|i| p.submit(sleep_ms, (10 - i) * 5).unwrap()).collect();
    for f in &futures {
        let calls = calls.clone();
        // A future's callback reads its result (it must not wait for itself).
        f.add_done_callback(move |f| {
            assert!(f.done() && f.result().is_ok());
            calls.fetch_add(1, Ordering::SeqCst);
        });
    }
    let order: Vec<u64> = as_completed(futures.clone()).map(|f| f.result().unwrap()).collect();
    assert_eq!(order.len(), 10);
    // A callback added after completion runs at once, here.
    futures[0].add_done_callback(move |f| seen.lock().unwrap().push(f.result().unwrap()));
    assert_eq!(calls.load(Ordering::SeqCst), 10, "each callback exactly once");
    let ok = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let (ok2, bad2) = (ok.clone(), bad.clone());
    p.apply_async(square, 3).unwrap().on_success(move |v| {
        assert_eq!(v, 9);
        ok2.fetch_add(1, Ordering::SeqCst);
    });
    let failing = p.apply_async(boom, 3).unwrap();
    failing.on_error(move |e| {
        assert!(e.to_string().contains("boom"));
        bad2.fetch_add(1, Ordering::SeqCst);
    });
    let _ = failing.wait_timeout(Duration::from_secs(10));
    p.shutdown(true).unwrap();
    assert_eq!((ok.load(Ordering::SeqCst), bad.load(Ordering::SeqCst)), (1, 1));
    // A future is a std future too.
    let one = pool(StartMethod::Fork, 1);
    assert_eq!(block_on(one.submit(square, 5).unwrap()).unwrap(), 25);
}

/// A minimal executor: polls `f` on this thread, parking between polls.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// `x * x`, and the pid of the worker that computed it; spins about a
/// millisecond first, so that kills land mid-task too.
fn pid_square(x: u64) -> (u32, u64) {
    let until = Instant::now() + Duration::from_micros(800);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    (std::process::id(), x * x)
}

/// A process's start time (field 22 of `/proc/<pid>/stat`), if it lives.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Sends SIGKILL to the process `pid` started at `start`, if it is still
/// that process: through a pidfd, so that a pid taken over by another
/// process (another test's) is never hit.
fn kill_exactly(pid: u32, start: u64) -> bool {
    // SAFETY: pidfd_open(2) with a pid and no flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return false;
    }
    let fd = fd as libc::c_int;
    // The pidfd names one process; if the pid was reused before it was
    // opened, the start time differs.
    let same = start_time(pid) == Some(start);
    // SAFETY: pidfd_send_signal(2) on the pidfd just opened, no info; then
    // the descriptor is closed once.
    let sent = same
        && unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGKILL, std::ptr::null::<u8>(), 0) } == 0;
    // SAFETY: closing the descriptor opened above, once.
    unsafe { libc::close(fd) };
    sent
}

#[test]
fn workers_killed_at_random_points_lose_only_the_tasks_they_were_running() {
    let _w = watchdog("random_kills");
    let mut rng = common::XorShift::new(0x5eed_0007);
    for method in METHODS {
        for round in 0..3 {
            let p = pool(method, 2);
            let seen = Arc::new(Mutex::new(Vec::<(u32, u64)>::new()));
            let results: Vec<_> = (0..300u64)
                .map(|i| {
                    let r = p.apply_async(pid_square, i).unwrap();
                    let seen = seen.clone();
                    r.on_success(move |(pid, _)| {
                        let mut s = seen.lock().unwrap();
                        if !s.iter().any(|&(p, _)| p == pid)
                            && let Some(start) = start_time(pid)
                        {
                            s.push((pid, start));
                        }
                    });
                    r
                })
                .collect();
            let mut kills = 0;
            for _ in 0..10 {
                std::thread::sleep(Duration::from_millis(5 + rng.next_u64() % 30));
                let live: Vec<(u32, u64)> = seen.lock().unwrap().clone();
                if let Some(&(pid, start)) = live.get((rng.next_u64() as usize) % live.len().max(1))
                    && kill_exactly(pid, start)
                {
                    kills += 1;
                }
            }
            assert!(kills > 0, "{method:?} round {round}: no worker was killed, the test proves nothing");
            let mut failed = 0;
            for (i, r) in results.iter().enumerate() {
                match r.get() {
                    Ok((_, v)) => assert_eq!(v, (i as u64) * (i as u64)),
                    Err(Error::TaskFailed { reason }) if reason.contains("SIGKILL") => failed += 1,
                    Err(e) => panic!("{method:?} round {round}: task {i}: {e}"),
                }
            }
            assert!(failed <= kills, "{method:?} round {round}: {failed} tasks failed for {kills} kills");
            // The pool still works, with every worker replaced as needed.
            assert_eq!(p.map(square, 0..50, Some(1)).unwrap(), (0..50).map(|x| x * x).collect::<Vec<_>>());
            p.close();
            p.join().unwrap();
        }
    }
}

fn is_the_one(i: u32) -> bool {
    i == 137
}

#[test]
fn early_exit_at_the_first_true_result_among_50000_tasks_returns_promptly() {
    let _w = watchdog("early_exit");
    for method in METHODS {
        let p = pool(method, 2);
        let results: Vec<_> = (0..50_000).map(|i| p.apply_async(is_the_one, i).unwrap()).collect();
        let found = results.iter().position(|r| r.get().unwrap());
        assert_eq!(found, Some(137));
        p.terminate();
        p.join().unwrap();
        // Everything settled: what had not run failed, nothing waits.
        assert!(results.iter().all(AsyncResult::ready));
        assert!(results.last().unwrap().get().is_err(), "{method:?}: the last task ran before the terminate");
    }
}

fn stays_for(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn misuse_is_an_error_and_a_dropped_pool_fails_its_tasks_without_hanging() {
    let _w = watchdog("misuse");
    let p = pool(StartMethod::Fork, 1);
    assert!(matches!(p.join(), Err(Error::InvalidArgument { .. })), "join before close");
    let pending: Vec<_> = (0..5).map(|_| p.apply_async(stays_for, 300).unwrap()).collect();
    drop(p);
    for r in &pending {
        let err = r.get().unwrap_err();
        assert!(err.to_string().contains("terminated"), "{err}");
    }
    let p = pool(StartMethod::Fork, 1);
    p.close();
    assert!(matches!(p.apply(square, 2), Err(Error::InvalidArgument { .. })), "apply after close");
    p.join().unwrap();
    assert!(Pool::builder().processes(0).build().is_err());
}

#[test]
fn a_killed_task_calls_its_error_callback_exactly_once() {
    let _w = watchdog("callback_once");
    let p = pool(StartMethod::Fork, 2);
    let errors = Arc::new(AtomicUsize::new(0));
    let successes = Arc::new(AtomicUsize::new(0));
    let r = p.apply_async(die, 1).unwrap();
    let e = errors.clone();
    let s = successes.clone();
    r.on_error(move |_| {
        e.fetch_add(1, Ordering::SeqCst);
    })
    .on_success(move |_| {
        s.fetch_add(1, Ordering::SeqCst);
    });
    assert!(r.get().is_err());
    assert_eq!(r.successful(), Some(false));
    p.close();
    p.join().unwrap();
    assert_eq!((errors.load(Ordering::SeqCst), successes.load(Ordering::SeqCst)), (1, 0));
}

#[test]
fn a_forkserver_pool_runs_tasks_too() {
    let _w = watchdog("forkserver");
    let p = pool(StartMethod::ForkServer, 2);
    assert_eq!(p.map(square, 0..20, None).unwrap(), (0..20).map(|x| x * x).collect::<Vec<_>>());
    assert!(p.apply(boom, 3).is_err());
    assert_eq!(p.apply(square, 4).unwrap(), 16);
    p.close();
    p.join().unwrap();
}

fn echo_big(v: shmproc::Bytes) -> shmproc::Bytes {
    v
}

#[test]
fn large_arguments_and_results_stream_without_a_deadlock() {
    // Each task and its answer are bigger than half a pipe ring: the pool
    // must never send a task while its worker waits to send an answer to the
    // very thread that sends.
    let _w = watchdog("large");
    for method in METHODS {
        let p = pool(method, 1);
        let msg: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let results: Vec<_> = (0..12).map(|_| p.apply_async(echo_big, shmproc::Bytes(msg.clone())).unwrap()).collect();
        for r in &results {
            assert!(r.get().unwrap().0 == msg, "{method:?}: a large answer came back changed");
        }
        let chunks = p.map(echo_big, (0..6).map(|_| shmproc::Bytes(msg.clone())), Some(2)).unwrap();
        assert!(chunks.iter().all(|c| c.0 == msg));
        p.close();
        p.join().unwrap();
    }
}

fn low_byte(x: u64) -> u8 {
    (x % 256) as u8
}

#[test]
fn imap_over_ten_million_items_keeps_a_bounded_read_ahead() {
    // The input is never collected: at any moment it has been read at most
    // a bounded distance past what was consumed.
    const N: u64 = 10_000_000;
    const CHUNK: usize = 50_000;
    let _w = watchdog("imap_ten_million");
    let p = pool(StartMethod::Fork, 2);
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let input = (0..N).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let (mut sum, mut consumed, mut ahead) = (0u64, 0usize, 0usize);
    for r in p.imap_unordered(low_byte, input, CHUNK) {
        sum += u64::from(r.unwrap());
        consumed += 1;
        ahead = ahead.max(pulled.load(Ordering::Relaxed) - consumed);
    }
    assert_eq!(consumed as u64, N);
    assert_eq!(sum, (0..N).map(|x| x % 256).sum::<u64>());
    // Twice what the workers may hold, and the chunk being read. A chunk
    // takes far longer than the 100 µs of queued work a window allows, so
    // each worker holds two: nine chunks, not ten million items.
    assert!(ahead <= 10 * CHUNK, "read {ahead} items ahead");
    p.close();
    p.join().unwrap();
}

#[test]
fn get_timeout_and_wait_timeout_give_up_and_then_the_result_comes() {
    let _w = watchdog("timeouts");
    let p = pool(StartMethod::Fork, 1);
    let r = p.apply_async(stays_for, 300).unwrap();
    let started = Instant::now();
    assert!(matches!(r.get_timeout(Duration::from_millis(20)), Err(Error::Timeout)));
    assert!(started.elapsed() >= Duration::from_millis(20));
    assert!(!r.wait_timeout(Duration::from_millis(10)));
    assert!(!r.ready());
    assert_eq!(r.successful(), None);
    let f = p.submit(stays_for, 1).unwrap();
    assert!(matches!(f.result_timeout(Duration::from_millis(5)), Err(Error::Timeout)));
    r.wait();
    assert_eq!(r.get_timeout(Duration::from_millis(1)).unwrap(), 300);
    assert_eq!(f.result().unwrap(), 1);
}

/// Initializes the first two workers; every later one (a replacement)
/// panics. The count is shared memory passed in the initializer's argument.
#[allow(clippy::needless_pass_by_value, reason = "an initializer takes its argument by value")]
fn init_twice(count: shmproc::Value<u64>) {
    assert!(count.fetch_add(1) < 2, "a replacement worker refuses to start");
}

#[test]
fn a_replacement_whose_initializer_panics_fails_the_pool_instead_of_looping() {
    let _w = watchdog("broken");
    for method in METHODS {
        let count = shmproc::Value::new(0u64).unwrap();
        let p =
            Pool::builder().processes(2).start_method(method).initializer(init_twice, count.clone()).build().unwrap();
        assert_eq!(p.apply(square, 3).unwrap(), 9);
        let killed = p.apply_async(die, 1).unwrap();
        assert!(killed.get().unwrap_err().to_string().contains("SIGKILL"));
        // The replacement's initializer panics: the pool stops, and every
        // task fails (no endless respawning; a few tries at most).
        let started = Instant::now();
        let err = loop {
            match p.apply(square, 2) {
                Ok(_) if started.elapsed() < Duration::from_secs(20) => std::thread::sleep(Duration::from_millis(5)),
                Ok(_) => panic!("{method:?}: the pool never noticed its replacement failed"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("refuses to start"), "{method:?}: {err}");
        assert!(count.get() <= 4, "{method:?}: {} initializer runs", count.get());
        p.close();
        p.join().unwrap();
    }
}

#[test]
fn a_panicking_callback_loses_no_result_and_runs_the_other_callbacks() {
    let _w = watchdog("callback_panic");
    let p = pool(StartMethod::Fork, 1);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = p.apply_async(square, 4).unwrap();
    r.on_success(|_| panic!("a callback that panics"));
    let counted = ran.clone();
    r.on_success(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(r.get().unwrap(), 16);
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the callbacks ran before get returned");
    // Registered after the result came, callbacks run at once here: one
    // that panics is ignored here too (the task may well have finished
    // before the first two were registered: CI saw that race).
    r.on_success(|_| panic!("a late callback that panics"));
    let counted = ran.clone();
    r.on_success(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(ran.load(Ordering::SeqCst), 2, "the late callback ran at once");
    // The pool goes on: its thread survived the panic.
    assert_eq!(p.map(square, 0..100, Some(1)).unwrap().len(), 100);
    p.close();
    p.join().unwrap();
}

/// Initializes the first worker at once; later ones (replacements) hang.
#[allow(clippy::needless_pass_by_value, reason = "an initializer takes its argument by value")]
fn init_then_hang(count: shmproc::Value<u64>) {
    if count.fetch_add(1) >= 1 {
        std::thread::sleep(Duration::from_secs(600));
    }
}

#[test]
fn terminate_kills_a_replacement_that_is_still_starting() {
    let _w = watchdog("terminate_starting");
    let count = shmproc::Value::new(0u64).unwrap();
    let p = Pool::builder()
        .processes(1)
        .start_method(StartMethod::Fork)
        .initializer(init_then_hang, count.clone())
        .build()
        .unwrap();
    assert!(p.apply(die, 1).is_err());
    // The replacement hangs in its initializer.
    let queued = p.apply_async(square, 5).unwrap();
    let started = Instant::now();
    while count.get() < 2 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(count.get(), 2, "a replacement started");
    p.terminate();
    p.join().unwrap();
    assert!(queued.get().is_err());
}

#[test]
fn a_pool_closed_and_dropped_without_join_still_finishes_its_tasks() {
    let _w = watchdog("shutdown_nowait");
    for method in METHODS {
        let p = pool(method, 2);
        let results: Vec<_> = (0..20).map(|i| p.submit(stays_for, 5 + i % 3).unwrap()).collect();
        p.shutdown(false).unwrap();
        drop(p);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.result().unwrap(), 5 + (i as u64) % 3, "{method:?}");
        }
    }
}
