//! A hostile peer (SPEC §3): for each shared type, a child scribbles random
//! and aimed words into the live segment while this process keeps operating
//! it. This process must never crash, read or write out of bounds, or wait
//! past a timeout (each row runs under a watchdog): it gets `Corrupt` errors
//! or in-bounds data. The queues have their own, deeper scribbler tests
//! (in `tests/queue.rs` and `tests/object_queue.rs`); this file covers the
//! other types.
//!
//! The scribbler is forked after the object is made, so it maps the same
//! segments: the shmproc mappings of `/proc/self/maps` (memfds, and named
//! segments), listed just before the fork (this binary has one test, so the
//! row's objects are the only ones), are where it writes. For a pool, those
//! are the pipes between it and its workers; for a manager, this process's
//! connection to the server; for a listener, its request board and a
//! connection it accepted; for processes, their result cells.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Watchdog, XorShift, fork_child};
use shmproc::{
    Array, Barrier, BoundedSemaphore, Condition, Error, Event, Listener, Lock, LockError, Manager, Pool, RLock,
    Semaphore, StartMethod, client_timeout, pipe,
};

/// Operations per type.
const OPS: u32 = 1500;
/// Every timed operation's timeout.
const T: Duration = Duration::from_millis(1);

/// The shmproc segments this process maps: (address, length, whether it
/// has a segment header). Anonymous ones, children's result cells (a
/// header of their own), and named ones: opened by name (a connection's
/// pipe, by its listener), or made by this process (its listener's board,
/// a client's pipe), which maps them under the name of the nameless file
/// they were made as (`/dev/shm/#<inode>`, see `Segment::create`).
fn segments() -> Vec<(usize, usize, bool)> {
    let segment = |path: &str| {
        path == "/memfd:shmproc (deleted)" || path.starts_with("/dev/shm/shmproc-") || path.starts_with("/dev/shm/#")
    };
    let mut all: Vec<(usize, usize, bool)> =
        common::mappings(segment).into_iter().map(|(base, len)| (base, len, true)).collect();
    all.extend(
        common::mappings(|path| path == "/memfd:shmproc-result (deleted)").into_iter().map(|(b, l)| (b, l, false)),
    );
    all
}

/// Forks a child that writes garbage into every anonymous segment mapped
/// now (listed here, before the fork, so that the child's own report segment
/// is not among them), for ever: random words, small numbers, zeros, all
/// ones, and thread ids (the operating thread's, its own, a ghost) where
/// lock words live. Mostly the payload (a quarter of it in its first 4 KiB,
/// where large segments keep their control words); one write in sixteen
/// lands in the header, which a handle validated once and must not trust
/// again. It stops when this process goes (a watchdog's abort must not
/// leave it spinning).
fn scribbler(what: &str, seed: u64) -> common::Child {
    // SAFETY: gettid has no preconditions.
    let victim = unsafe { libc::gettid() } as u64;
    let parent = std::process::id();
    // Listed here, before the fork (the child's own report segment is made
    // by `fork_child`, and must not be among them).
    let listed = segments();
    assert!(!listed.is_empty(), "{what}: no segment to scribble");
    fork_child(move || {
        // Of those, the ones mapped in this child: another thread of the
        // parent (a pool's, replacing a worker) may have unmapped one
        // between the listing and the fork. This child's mappings no longer
        // change, so its reads below are of live memory.
        let here = segments();
        // Each segment's own length, read from its header before any
        // scribbling (the mapping is a whole number of pages).
        let segs: Vec<(usize, usize)> = listed
            .iter()
            .filter(|s| here.contains(s))
            .map(|&(base, mapped, headed)| {
                if !headed {
                    return (base, mapped);
                }
                // SAFETY: the header's payload length word, at offset 24
                // of a mapping of at least one page that this process
                // keeps.
                let payload = unsafe { AtomicU64::from_ptr((base + 24) as *mut u64).load(Ordering::Relaxed) };
                // (Saturating: a segment an earlier row left mapped may
                // have a scribbled header.)
                (base, 64usize.saturating_add(usize::try_from(payload).unwrap_or(usize::MAX)).min(mapped))
            })
            .collect();
        if segs.is_empty() {
            return 3;
        }
        let mut rng = XorShift::new(seed);
        for i in 0u64.. {
            let r = rng.next_u64();
            let (base, len) = segs[(r % segs.len() as u64) as usize];
            let words = len / 8;
            let word = if (r >> 8) % 16 == 0 || words <= 8 {
                (r >> 12) as usize % 8
            } else if (r >> 8) % 4 == 1 {
                // The first 4 KiB of the payload, where a large segment
                // (a pipe, a pool's) keeps its positions, locks and records.
                8 + (r >> 12) as usize % (words - 8).min(512)
            } else {
                8 + (r >> 12) as usize % (words - 8)
            };
            let v = match (r >> 40) % 8 {
                0 => rng.next_u64(),
                1 => rng.next_u64() % 4,
                2 => 0,
                3 => u64::MAX,
                4 => victim,
                5 => u64::from(std::process::id()),
                6 => 0x3f_ffff, // a ghost tid
                _ => rng.next_u64() & 0xffff_ffff,
            };
            // SAFETY: `base + 8 * word` lies within the segment's length in
            // a shared mapping this child inherited and never unmaps (it was
            // there at the fork, checked above), 8-aligned; an atomic store
            // races only with the parent's atomic accesses.
            unsafe { AtomicU64::from_ptr((base + 8 * word) as *mut u64).store(v, Ordering::Relaxed) };
            if i % 64 == 0 {
                // SAFETY: getppid has no preconditions.
                if unsafe { libc::getppid() } as u32 != parent {
                    return 0;
                }
                std::thread::yield_now();
            }
        }
        0
    })
}

/// Tally of one row.
#[derive(Default, Debug)]
struct Tally {
    ok: u32,
    corrupt: u32,
    other: u32,
}

impl Tally {
    #[allow(clippy::needless_pass_by_value, reason = "takes each operation's result as it comes")]
    fn result<T>(&mut self, r: Result<T, Error>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(Error::Corrupt { .. }) => self.corrupt += 1,
            Err(_) => self.other += 1,
        }
    }

    fn lock<G>(&mut self, r: Result<G, LockError<G>>) {
        match r {
            Ok(_) | Err(LockError::OwnerDied(_)) => self.ok += 1,
            Err(LockError::Failed(e)) => self.result::<()>(Err(e)),
        }
    }

    fn flag(&mut self, good: bool) {
        if good {
            self.ok += 1;
        } else {
            self.other += 1;
        }
    }
}

/// Runs `op` `OPS` times while a scribbler writes into the object's segment.
fn under_fire(what: &'static str, seed: u64, op: impl FnMut(&mut XorShift, &mut Tally)) -> Tally {
    under_fires(what, seed, 1, op)
}

/// [`under_fire`] in `rounds` rounds, each with a new scribbler, which maps
/// the segments there are then: a pool replaces a worker whose pipes went
/// bad with a new one, in new segments.
fn under_fires(what: &'static str, seed: u64, rounds: u32, mut op: impl FnMut(&mut XorShift, &mut Tally)) -> Tally {
    let _w = Watchdog::new(move || common::abort_hung("hostile_peer", what));
    let mut rng = XorShift::new(seed ^ 0x9e37);
    let mut tally = Tally::default();
    for round in 0..rounds {
        let mut s = scribbler(what, seed.wrapping_add(u64::from(round) << 32));
        for _ in 0..OPS / rounds {
            op(&mut rng, &mut tally);
        }
        assert!(s.try_wait().is_none(), "{what}: the scribbler stopped: {}", s.describe());
        s.kill();
    }
    tally
}

#[test]
#[allow(clippy::too_many_lines, reason = "one short block per type, in one test so that only its object is mapped")]
fn every_type_under_a_scribbling_peer_gives_errors_or_data_never_a_crash_or_hang() {
    let mut report = Vec::new();
    for seed in 1..=2u64 {
        let lock = Lock::new().unwrap();
        report.push((
            "Lock",
            under_fire("lock", seed, |rng, t| match rng.next_u64() % 3 {
                0 => t.lock(lock.try_lock()),
                1 => t.lock(lock.lock_timeout(T)),
                _ => {
                    let _ = (lock.is_locked(), lock.is_owned_by_current_thread());
                    t.ok += 1;
                }
            }),
        ));
        drop(lock);

        let rlock = RLock::new().unwrap();
        report.push((
            "RLock",
            under_fire("rlock", seed, |rng, t| match rng.next_u64() % 3 {
                0 => t.lock(rlock.try_lock()),
                1 => match rlock.acquire(true, Some(T)) {
                    Ok(true) => t.result(rlock.release()),
                    other => t.result(other),
                },
                _ => {
                    let _ = (rlock.depth(), rlock.is_locked());
                    t.ok += 1;
                }
            }),
        ));
        drop(rlock);

        let sem = Semaphore::new(2).unwrap();
        let bsem = BoundedSemaphore::new(2).unwrap();
        report.push((
            "Semaphore, BoundedSemaphore",
            under_fire("semaphore", seed, |rng, t| match rng.next_u64() % 6 {
                0 => t.flag(sem.try_acquire()),
                1 => t.flag(sem.acquire_timeout(T)),
                2 => t.result(sem.release()),
                3 => t.flag(bsem.acquire_timeout(T)),
                4 => t.result(bsem.release()),
                _ => {
                    let _ = (sem.get_value(), bsem.get_value());
                    t.ok += 1;
                }
            }),
        ));
        drop((sem, bsem));

        let event = Event::new().unwrap();
        report.push((
            "Event",
            under_fire("event", seed, |rng, t| match rng.next_u64() % 4 {
                0 => {
                    event.set();
                    t.ok += 1;
                }
                1 => {
                    event.clear();
                    t.ok += 1;
                }
                2 => t.result(event.is_set()),
                _ => t.result(event.wait_timeout(T)),
            }),
        ));
        drop(event);

        let cond = Condition::new().unwrap();
        report.push((
            "Condition",
            under_fire("condition", seed, |rng, t| match cond.lock_timeout(T) {
                Ok(mut g) | Err(LockError::OwnerDied(mut g)) => match rng.next_u64() % 3 {
                    0 => t.result(g.wait_timeout(T)),
                    1 => t.result(g.notify(1)),
                    _ => t.result(g.notify_all()),
                },
                Err(LockError::Failed(e)) => t.result::<()>(Err(e)),
            }),
        ));
        drop(cond);

        let barrier = Barrier::new(2).unwrap();
        report.push((
            "Barrier",
            under_fire("barrier", seed, |rng, t| match rng.next_u64() % 4 {
                0 => t.result(barrier.wait_timeout(T)),
                1 => t.result(barrier.reset()),
                2 => t.result(barrier.abort()),
                _ => {
                    let _ = (barrier.n_waiting(), barrier.broken());
                    t.ok += 1;
                }
            }),
        ));
        drop(barrier);

        let array = Array::<i64>::new(16).unwrap();
        report.push((
            "Array<i64>",
            under_fire("array", seed, |rng, t| {
                let i = (rng.next_u64() % 20) as usize; // some past the end
                match rng.next_u64() % 6 {
                    0 => t.flag(array.get(i).is_some() == (i < array.len())),
                    1 if i < array.len() => {
                        array.store(i, 7);
                        t.ok += 1;
                    }
                    2 if i < array.len() => {
                        array.fetch_add(i, 1);
                        t.ok += 1;
                    }
                    3 => t.result(array.to_vec().map(|v| assert_eq!(v.len(), 16))),
                    4 => t.lock(array.lock_timeout(T)),
                    _ => t.result(array.copy_from_slice(&[1; 16])),
                }
            }),
        ));
        drop(array);

        // A pipe with messages in both directions. Only timed reads and
        // polls: a send has no timeout (as in Python), and would wait for
        // room for as long as the reader lives, here this very process.
        let (a, b) = pipe().unwrap();
        for i in 0..50u64 {
            a.send(&i).unwrap();
            b.send_bytes(&[i as u8; 100]).unwrap();
        }
        report.push((
            "Connection",
            under_fire("pipe", seed, |rng, t| match rng.next_u64() % 4 {
                0 => t.result(b.recv_timeout::<u64>(T)),
                1 => t.result(a.recv_bytes_timeout(T)),
                2 => t.result(b.poll(Some(T))),
                _ => t.result(a.poll(Some(T))),
            }),
        ));
        drop(b);
        drop(a);

        report.push(("Process", process_row(seed)));
        report.push(("Listener", listener_row(seed)));
        report.push(("Pool", pool_row(seed)));
        report.push(("Manager", manager_row(seed)));
    }
    for (what, tally) in &report {
        assert_eq!(tally.ok + tally.corrupt + tally.other, OPS, "{what}");
    }
    eprintln!("under a scribbling peer (ok, Corrupt, other errors): {report:?}");
}

fn bytes_after(i: u64) -> Vec<u8> {
    std::thread::sleep(Duration::from_millis(i * 3));
    vec![i as u8; 64 * i as usize]
}

/// Children started (forked) before the fire, their result cells under it
/// while they finish at different times: timed joins, which give each one's
/// result, or an error (`Corrupt`, a failed child), or time out while it
/// runs.
fn process_row(seed: u64) -> Tally {
    let mut children: Vec<shmproc::Process<Vec<u8>>> = (0..16u64)
        .map(|i| {
            let mut p = shmproc::Process::builder().start_method(StartMethod::Fork).target(bytes_after, i);
            p.start().unwrap();
            p
        })
        .collect();
    let mut joined = [false; 16];
    let tally = under_fire("process", seed, |rng, t| {
        let i = (rng.next_u64() % 16) as usize;
        let p = &mut children[i];
        if joined[i] {
            // Taken: what is left to ask is its exit code.
            let _ = p.exitcode();
            t.ok += 1;
            return;
        }
        match p.join_timeout(T) {
            // Still running.
            Ok(None) => t.ok += 1,
            // In-bounds data (right or wrong).
            Ok(Some(_)) => {
                joined[i] = true;
                t.ok += 1;
            }
            Err(e) => {
                joined[i] = true;
                t.result::<()>(Err(e));
            }
        }
    });
    let _w = Watchdog::new(|| common::abort_hung("hostile_peer", "joining the processes after the fire"));
    for mut p in children {
        let _ = p.join_timeout(Duration::from_secs(10));
        assert!(!p.is_alive(), "a child still runs");
    }
    tally
}

/// How long a connection, an accept or a manager call may take in the rows
/// below.
const CONNECT: Duration = Duration::from_millis(20);

/// A listener and a connection it accepted, under fire: connections made
/// and accepted (on two threads), accepts and connections alone (which
/// time out), and timed reads and polls on the accepted connection.
fn listener_row(seed: u64) -> Tally {
    let address = common::unique_name("hostile-listener");
    let key = b"hostile".to_vec();
    let listener = Listener::bind(&address, Some(&key)).unwrap();
    let connect = || client_timeout(&address, Some(&key), CONNECT);
    let (ours, theirs) = std::thread::scope(|s| {
        let c = s.spawn(|| client_timeout(&address, Some(&key), Duration::from_secs(5)).unwrap());
        (listener.accept_timeout(Duration::from_secs(5)).unwrap(), c.join().unwrap())
    });
    theirs.send(&7u64).unwrap();
    let tally = under_fire("listener", seed, |rng, t| match rng.next_u64() % 5 {
        0 => std::thread::scope(|s| {
            let c = s.spawn(connect);
            let accepted = listener.accept_timeout(CONNECT);
            // One operation: its outcome is the worse side's.
            t.result(c.join().expect("the client thread").and(accepted));
        }),
        1 => t.result(listener.accept_timeout(T)),
        2 => t.result(connect()),
        3 => t.result(ours.recv_bytes_timeout(T)),
        _ => t.result(theirs.poll(Some(T))),
    });
    drop((ours, theirs, listener));
    common::assert_no_leftovers("hostile-listener");
    tally
}

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

/// A pool of two forked workers, its pipes under fire: tasks sent and
/// their results awaited for a while; then the pool must terminate (a
/// worker may have died of garbage: that is its task's error). In ten
/// rounds, each scribbler mapping the pipes of the workers there are then.
fn pool_row(seed: u64) -> Tally {
    let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build().unwrap();
    let tally = under_fires("pool", seed, 10, |rng, t| {
        let x = rng.next_u64() % 1000;
        match pool.apply_async(square, x) {
            // In-bounds wrong data is allowed (SPEC §3); counted as data.
            Ok(r) => t.result(r.get_timeout(Duration::from_millis(20))),
            Err(e) => t.result::<()>(Err(e)),
        }
    });
    let _w = Watchdog::new(|| common::abort_hung("hostile_peer", "terminating the pool after the fire"));
    pool.terminate();
    let _ = pool.join();
    tally
}

/// A manager's connection from this process under fire, its calls bounded
/// by a call timeout: dict calls. Afterwards the server still serves (a new
/// connection, past the scribbled one).
fn manager_row(seed: u64) -> Tally {
    let m = Manager::start().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    d.insert(0, 0).unwrap();
    m.set_call_timeout(Some(CONNECT));
    let tally = under_fire("manager", seed, |rng, t| {
        let k = rng.next_u64() % 8;
        match rng.next_u64() % 3 {
            0 => t.result(d.insert(k, k)),
            1 => t.result(d.get(&k)),
            _ => t.result(d.len()),
        }
    });
    let _w = Watchdog::new(|| common::abort_hung("hostile_peer", "the manager after the fire"));
    // The scribbled connection may fail a call or two; a new one serves
    // (with time for a handshake under load), and the dict is still there.
    m.set_call_timeout(Some(Duration::from_secs(1)));
    let started = std::time::Instant::now();
    let mut tries = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        let r = d.insert(1, 1);
        let served = r.is_ok();
        tries.push(r);
        if served {
            break;
        }
    }
    let alive = m.pid().is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(tries.iter().any(Result::is_ok), "the manager's server no longer serves (alive: {alive}): {tries:?}");
    drop(d);
    m.shutdown().unwrap();
    tally
}
