//! Pipes: `pipe()`/`pipe_simplex()` and `Connection` (src/channel/pipe.rs).
//!
//! Ordering in both directions at once; messages of 0 bytes up to 256 MiB,
//! streamed through rings much smaller than them; `recv_bytes_into` with a
//! short buffer; `poll` and timeouts; end of file on `close`, on the drop of
//! every copy of an end, and on `SIGKILL` (also in the middle of a streamed
//! message, on both sides); connections passed to forked, spawned and
//! fork-server children. Every cross-process test runs under the watchdog.

mod common;

use std::time::{Duration, Instant};

use common::{WATCHDOG, Watchdog, fork_child, join_ok, kill_and_reap, start, start_fn};
use shmproc::{
    Connection, Error,
    StartMethod::{Fork, ForkServer, Spawn},
    WaitStrategy, pipe, pipe_simplex, pipe_with_capacity,
};

/// A watchdog that closes the pipe through `a` when it fires (closing one
/// end closes both directions), so that a hang turns into `Closed` errors
/// and a failed assertion. It holds a copy of `a` only: a copy of the other
/// end would keep that end alive.
fn watch(a: &Connection) -> Watchdog {
    let a = a.clone();
    Watchdog::new(move || a.close())
}

/// Bytes `0..len` of a pattern that depends on `seed`: a message can be
/// checked whole from its length and seed.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (i.wrapping_mul(31).wrapping_add(seed.wrapping_mul(7)) % 251) as u8).collect()
}

fn assert_pattern(seed: u64, got: &[u8], len: usize, what: &str) {
    assert_eq!(got.len(), len, "{what}: length");
    if let Some(i) = got.iter().zip(pattern(seed, len)).position(|(a, b)| *a != b) {
        panic!("{what}: byte {i} of {len} differs");
    }
}

#[test]
fn duplex_messages_keep_their_order_in_both_directions_at_once() {
    const N: u64 = 20_000;
    let (a, b) = pipe_with_capacity(1024, true).unwrap();
    let dog = watch(&a);
    let peer = std::thread::spawn(move || {
        // Sends and receives interleaved, with sizes that make records
        // straddle the ring's end.
        for i in 0..N {
            b.send(&(i, "from b")).unwrap();
            let (j, s): (u64, String) = b.recv().unwrap();
            assert_eq!((j, s.as_str()), (i, "from a"));
        }
    });
    for i in 0..N {
        a.send(&(i, "from a")).unwrap();
        let (j, s): (u64, String) = a.recv().unwrap();
        assert_eq!((j, s.as_str()), (i, "from b"), "{}", dog.hung_note());
    }
    peer.join().unwrap();
}

#[test]
fn many_messages_in_flight_arrive_in_order() {
    const N: u64 = 100_000;
    let (a, b) = pipe_with_capacity(4096, true).unwrap();
    let dog = watch(&a);
    let writer = std::thread::spawn(move || {
        for i in 0..N {
            a.send_bytes(&pattern(i, (i % 97) as usize)).unwrap();
        }
        a
    });
    for i in 0..N {
        let got = b.recv_bytes().unwrap_or_else(|e| panic!("message {i}: {e}{}", dog.hung_note()));
        assert_pattern(i, &got, (i % 97) as usize, "message");
    }
    drop(writer.join().unwrap());
}

#[test]
fn zero_byte_and_boundary_sized_messages() {
    let (a, b) = pipe_with_capacity(256, true).unwrap();
    // Half the ring less a record header fits one record; one more byte is
    // streamed; so is anything up to many times the ring.
    let max = 256 / 2 - 8;
    for len in [0, 1, 7, 8, 9, max - 1, max, max + 1, 2 * max, 1000, 4096 + 3] {
        let msg = pattern(len as u64, len);
        let reader = {
            let b = b.clone();
            std::thread::spawn(move || b.recv_bytes().unwrap())
        };
        a.send_bytes(&msg).unwrap();
        assert_pattern(len as u64, &reader.join().unwrap(), len, &format!("{len} bytes"));
    }
    // A 0-byte message is a message: it is received, and it is not end of file.
    a.send_bytes(&[]).unwrap();
    a.send_bytes(b"after").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"");
    assert_eq!(b.recv_bytes().unwrap(), b"after");
}

#[test]
fn send_bytes_part_takes_pythons_offset_and_size() {
    let (a, b) = pipe().unwrap();
    let buf = b"0123456789";
    a.send_bytes_part(buf, 2, Some(3)).unwrap();
    a.send_bytes_part(buf, 7, None).unwrap();
    a.send_bytes_part(buf, 10, None).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"234");
    assert_eq!(b.recv_bytes().unwrap(), b"789");
    assert_eq!(b.recv_bytes().unwrap(), b"");
    for (offset, size) in [(11, None), (5, Some(6)), (usize::MAX, Some(1)), (1, Some(usize::MAX))] {
        assert!(
            matches!(a.send_bytes_part(buf, offset, size), Err(Error::InvalidArgument { .. })),
            "offset {offset}, size {size:?}"
        );
    }
    assert!(!b.poll(Some(Duration::ZERO)).unwrap(), "a refused send sent nothing");
}

#[test]
fn recv_bytes_into_a_short_buffer_says_the_size_and_keeps_the_message() {
    let (a, b) = pipe_with_capacity(256, true).unwrap();
    let mut small = [0u8; 4];
    let mut big = vec![0u8; 8192];
    // A whole record, then a streamed message.
    for len in [10, 5000] {
        let writer = {
            let a = a.clone();
            std::thread::spawn(move || a.send_bytes(&pattern(9, len)).unwrap())
        };
        assert!(b.poll(Some(WATCHDOG)).unwrap());
        match b.recv_bytes_into(&mut small) {
            Err(Error::BufferTooShort { needed, got }) => assert_eq!((needed, got), (len, 4)),
            other => panic!("{len} bytes into 4: {other:?}"),
        }
        let n = b.recv_bytes_into(&mut big).unwrap();
        assert_pattern(9, &big[..n], len, &format!("{len} bytes after the short buffer"));
        writer.join().unwrap();
    }
    a.send_bytes(b"fits").unwrap();
    assert_eq!(b.recv_bytes_into(&mut small).unwrap(), 4);
    assert_eq!(&small, b"fits");
}

#[test]
fn poll_waits_at_least_its_timeout_and_sees_messages_and_end_of_file() {
    let (a, b) = pipe().unwrap();
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    let t = Instant::now();
    assert!(!b.poll(Some(Duration::from_millis(50))).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(50), "poll returned early: {:?}", t.elapsed());
    a.send(&1u8).unwrap();
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    assert!(b.poll(None).unwrap());
    assert_eq!(b.recv::<u8>().unwrap(), 1);
    let t = Instant::now();
    assert!(matches!(b.recv_timeout::<u8>(Duration::from_millis(30)), Err(Error::Timeout)));
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert!(matches!(b.recv_bytes_timeout(Duration::ZERO), Err(Error::Timeout)));
    // A poll in another thread wakes when a message comes.
    let poller = {
        let b = b.clone();
        std::thread::spawn(move || b.poll(Some(WATCHDOG)).unwrap())
    };
    std::thread::sleep(Duration::from_millis(20));
    a.send(&2u8).unwrap();
    assert!(poller.join().unwrap());
    assert_eq!(b.recv::<u8>().unwrap(), 2);
    // At end of file a poll is true: a recv would not block.
    a.close();
    assert!(b.poll(Some(WATCHDOG)).unwrap());
    assert!(matches!(b.recv::<u8>(), Err(Error::Closed)));
}

#[test]
fn simplex_pipes_receive_on_the_first_end_and_send_on_the_second() {
    let (r, w) = pipe_simplex().unwrap();
    assert!(r.readable() && !r.writable() && w.writable() && !w.readable());
    w.send(&"one way").unwrap();
    assert_eq!(r.recv::<String>().unwrap(), "one way");
    assert!(matches!(r.send(&1u8), Err(Error::InvalidArgument { .. })));
    assert!(matches!(w.recv::<u8>(), Err(Error::InvalidArgument { .. })));
    assert!(matches!(w.poll(Some(Duration::ZERO)), Err(Error::InvalidArgument { .. })));
    // Streamed messages cross a simplex pipe too.
    let (r, w) = pipe_with_capacity(1 << 10, false).unwrap();
    let writer = std::thread::spawn(move || w.send_bytes(&pattern(3, 200_000)).unwrap());
    assert_pattern(3, &r.recv_bytes().unwrap(), 200_000, "simplex stream");
    writer.join().unwrap();
}

#[test]
fn close_drains_then_reports_closed_on_both_sides() {
    let (a, b) = pipe().unwrap();
    for i in 0..5u32 {
        a.send(&i).unwrap();
    }
    a.close();
    assert!(a.closed());
    assert!(matches!(a.send(&9u32), Err(Error::Closed)), "the closed end's own send");
    assert!(matches!(a.recv::<u32>(), Err(Error::Closed)), "the closed end's own recv");
    for i in 0..5u32 {
        assert_eq!(b.recv::<u32>().unwrap(), i, "what was sent before the close");
    }
    assert!(matches!(b.recv::<u32>(), Err(Error::Closed)));
    // A look (a zero timeout) at the drained, closed pipe sees the close
    // too: it is not a timeout.
    assert!(matches!(b.recv_bytes_timeout(Duration::ZERO), Err(Error::Closed)), "a zero-timeout read");
    assert!(matches!(b.send(&1u32), Err(Error::Closed)), "sending to a closed peer");
}

#[test]
fn close_wakes_a_blocked_reader_and_a_blocked_writer() {
    for strategy in [WaitStrategy::Adaptive, WaitStrategy::Block, WaitStrategy::Spin] {
        let (a, b) = pipe_with_capacity(64, true).unwrap();
        let (a, b) = (a.with_wait_strategy(strategy), b.with_wait_strategy(strategy));
        let _dog = watch(&a);
        let reader = {
            let b = b.clone();
            std::thread::spawn(move || b.recv::<u32>())
        };
        // The writer fills the ring, then waits for room no one makes.
        let writer = {
            let b = b.clone();
            std::thread::spawn(move || {
                loop {
                    if let Err(e) = b.send_bytes(&[7; 20]) {
                        return e;
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(30));
        a.close();
        assert!(matches!(reader.join().unwrap(), Err(Error::Closed)), "{strategy:?}");
        assert!(matches!(writer.join().unwrap(), Error::Closed), "{strategy:?}");
    }
}

/// `blocks` MiB: a 1 MiB pattern whose first 8 bytes are replaced by the
/// block's number in each (cheap to build and check even in a debug build).
fn big_message(blocks: usize) -> Vec<u8> {
    let base = pattern(5, 1 << 20);
    let mut msg = Vec::with_capacity(blocks << 20);
    for k in 0..blocks as u64 {
        msg.extend_from_slice(&k.to_le_bytes());
        msg.extend_from_slice(&base[8..]);
    }
    msg
}

fn check_big_message(got: &[u8], blocks: usize) {
    assert_eq!(got.len(), blocks << 20, "length");
    let base = pattern(5, 1 << 20);
    for (k, block) in got.chunks(1 << 20).enumerate() {
        assert_eq!(block[..8], (k as u64).to_le_bytes(), "block {k} is out of place");
        assert!(block[8..] == base[8..], "block {k} differs");
    }
}

#[test]
fn a_streamed_message_of_256_mib_crosses_a_256_kib_ring_to_a_child() {
    const BLOCKS: usize = 256;
    let (a, b) = pipe().unwrap();
    let dog = watch(&a);
    let there = b.clone();
    let mut child = start(Fork, move || {
        let got = there.recv_bytes().unwrap();
        check_big_message(&got, BLOCKS);
        there.send(&(got.len() as u64)).unwrap();
    });
    a.send_bytes(&big_message(BLOCKS)).unwrap();
    assert_eq!(a.recv::<u64>().unwrap_or_else(|e| panic!("{e}{}", dog.hung_note())), (BLOCKS << 20) as u64);
    join_ok(&mut child);
}

/// The echo child: receives `n` messages and sends each back.
fn echo((conn, n): (Connection, u32)) -> u32 {
    for i in 0..n {
        let m: Vec<u8> = conn.recv_bytes().unwrap_or_else(|e| panic!("echo: recv {i}: {e}"));
        conn.send_bytes(&m).unwrap_or_else(|e| panic!("echo: send {i}: {e}"));
    }
    n
}

#[test]
fn connections_pass_to_forked_spawned_and_fork_server_children() {
    const N: u32 = 200;
    for method in [Fork, Spawn, ForkServer] {
        let (a, b) = pipe_with_capacity(512, true).unwrap();
        let dog = watch(&a);
        let mut child = start_fn(method, echo, (b, N));
        for i in 0..N {
            let len = (i as usize * 13) % 700;
            a.send_bytes(&pattern(u64::from(i), len)).unwrap();
            let back = a.recv_bytes().unwrap_or_else(|e| panic!("{method:?}: {e}{}", dog.hung_note()));
            assert_pattern(u64::from(i), &back, len, &format!("{method:?} echo {i}"));
        }
        assert_eq!(join_ok(&mut child), N);
        // The child was the last holder of `b`: it exited, so end of file.
        assert!(matches!(a.recv_bytes(), Err(Error::Closed)), "{method:?}: end of file after the child exited");
        assert!(!dog.fired(), "{method:?}: end of file came only from the watchdog");
    }
}

#[test]
fn dropping_every_copy_of_an_end_is_end_of_file_for_the_peer() {
    let (a, b) = pipe().unwrap();
    let copy = b.clone();
    b.send(&1u8).unwrap();
    drop(b);
    copy.send(&2u8).unwrap();
    assert_eq!(a.recv::<u8>().unwrap(), 1);
    assert_eq!(a.recv::<u8>().unwrap(), 2);
    assert!(matches!(a.recv_timeout::<u8>(Duration::from_millis(5)), Err(Error::Timeout)), "a copy still holds it");
    drop(copy);
    let t = Instant::now();
    assert!(matches!(a.recv::<u8>(), Err(Error::Closed)));
    assert!(t.elapsed() < WATCHDOG);
    // And the writer side: sending to a reader whose every copy is gone
    // fails once the ring is full, instead of waiting.
    let (a, b) = pipe_with_capacity(64, true).unwrap();
    drop(a);
    let sent = (0..1000).find_map(|_| b.send_bytes(&[1; 16]).err());
    assert!(matches!(sent, Some(Error::Closed)), "{sent:?}");
}

#[test]
fn a_peer_killed_by_sigkill_is_end_of_file_after_what_it_sent() {
    for run in 0..40u64 {
        let (a, b) = pipe_with_capacity(4096, true).unwrap();
        let dog = watch(&a);
        // The child sends numbered messages as fast as it can, some of them
        // streamed, and is killed at a random moment.
        let sender = b.clone();
        let mut child = start(Fork, move || {
            for i in 0u64.. {
                sender.send_bytes(&pattern(i, if i % 7 == 3 { 10_000 } else { 40 })).unwrap();
            }
        });
        drop(b);
        std::thread::sleep(Duration::from_micros(200 + run * 700));
        kill_and_reap(&mut child);
        // Every message received is whole and in order; then end of file.
        let mut i = 0u64;
        loop {
            match a.recv_bytes() {
                Ok(m) => {
                    assert_pattern(i, &m, if i % 7 == 3 { 10_000 } else { 40 }, &format!("run {run}, message {i}"));
                    i += 1;
                }
                Err(Error::Closed) => break,
                Err(e) => panic!("run {run}: {e}{}", dog.hung_note()),
            }
        }
        assert!(!dog.fired(), "run {run}: end of file came only from the watchdog");
    }
}

#[test]
fn a_reader_killed_mid_stream_makes_the_writer_fail_not_hang() {
    for run in 0..20u64 {
        let (a, b) = pipe_with_capacity(1024, true).unwrap();
        let dog = watch(&a);
        let reader = b.clone();
        let mut child = start(Fork, move || while reader.recv_bytes().is_ok() {});
        drop(b);
        let big = pattern(run, 1 << 20);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1 + run * 3));
            kill_and_reap(&mut child);
        });
        let outcome = (0..10_000).find_map(|_| a.send_bytes(&big).err());
        killer.join().unwrap();
        assert!(matches!(outcome, Some(Error::Closed)), "run {run}: {outcome:?}{}", dog.hung_note());
        assert!(!dog.fired(), "run {run}: the writer was stopped only by the watchdog");
    }
}

/// Forks a child that sends one streamed message of `len` bytes on `conn`,
/// and stops it (`SIGSTOP`) once it is in the middle of it: the reader has
/// taken some chunks and timed out waiting for the rest.
fn stopped_mid_stream(conn: &Connection, reader: &Connection, seed: u64, len: usize) -> common::Child {
    let sender = conn.clone();
    let child = fork_child(move || {
        sender.send_bytes(&pattern(seed, len)).unwrap();
        0
    });
    // The ring fills and the child waits for room.
    assert!(reader.poll(Some(WATCHDOG)).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(child.pid(), libc::SIGSTOP) }, 0);
    let read = reader.recv_bytes_timeout(Duration::from_millis(50));
    assert!(matches!(read, Err(Error::Timeout)), "a stopped writer's message cannot be whole: {read:?}");
    child
}

#[test]
fn a_writer_killed_mid_stream_loses_that_message_only() {
    // Two processes hold the sending end: one is killed in the middle of a
    // streamed message; the other sends next. The reader gets the message
    // before, not the partial one, then the next one whole.
    let (a, b) = pipe_with_capacity(1024, true).unwrap();
    let dog = watch(&a);
    b.send_bytes(b"before").unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"before");
    let mut victim = stopped_mid_stream(&b, &a, 1, 100_000);
    victim.kill();
    // The next writer takes the writers' lock over from the dead one.
    b.send_bytes(b"after").unwrap();
    let next = a.recv_bytes().unwrap_or_else(|e| panic!("{e}{}", dog.hung_note()));
    assert_eq!(next, b"after", "the partial message is dropped, the next one arrives whole");
    // With no other holder left, the partial message ends in end of file.
    let (a, b) = pipe_with_capacity(1024, true).unwrap();
    let dog = watch(&a);
    let mut victim = stopped_mid_stream(&b, &a, 2, 100_000);
    drop(b);
    victim.kill();
    assert!(matches!(a.recv_bytes(), Err(Error::Closed)), "{}", dog.hung_note());
    assert!(!dog.fired(), "end of file came only from the watchdog");
}

#[test]
fn a_timed_out_read_in_the_middle_of_a_message_goes_on_at_the_next_read() {
    let (a, b) = pipe_with_capacity(256, true).unwrap();
    let dog = watch(&a);
    let mut writer = stopped_mid_stream(&a, &b, 4, 3000);
    // The short-buffer check sees the stashed message's full length.
    let mut small = [0u8; 100];
    assert!(matches!(b.recv_bytes_into(&mut small), Err(Error::BufferTooShort { needed: 3000, got: 100 })));
    // SAFETY: as in `stopped_mid_stream`.
    assert_eq!(unsafe { libc::kill(writer.pid(), libc::SIGCONT) }, 0);
    let got = b.recv_bytes().unwrap_or_else(|e| panic!("{e}{}", dog.hung_note()));
    assert_pattern(4, &got, 3000, "the message resumed after the timeout");
    assert_eq!(writer.wait_timeout(WATCHDOG), Some(0));
}

/// A forked reader sees end of file when the process at the other end, its
/// parent, is killed, though it inherited a copy of every descriptor of that
/// end at the fork. And when that parent closes the pipe instead.
///
/// A subreaper process runs each case, so that the reader, orphaned when its
/// parent is killed, is reaped (no zombie is left behind).
#[test]
fn a_forked_reader_sees_its_killed_or_closing_parent_go() {
    for kill in [true, false] {
        // outcome[0]: messages the reader received; outcome[1]: 1 once it got
        // end of file, 2 on any other error.
        let outcome = shmproc::Array::<u32>::new(2).unwrap();
        let seen = outcome.clone();
        let mut reaper = fork_child(move || {
            // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) has no memory-safety
            // preconditions.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            let out = seen.clone();
            let mut parent = fork_child(move || {
                let (a, b) = pipe().unwrap();
                let out = seen.clone();
                let _reader = fork_child(move || {
                    loop {
                        match b.recv::<u32>() {
                            Ok(_) => {
                                out.fetch_add(0, 1);
                            }
                            Err(Error::Closed) => {
                                out.store(1, 1);
                                return 0;
                            }
                            Err(_) => {
                                out.store(1, 2);
                                return 1;
                            }
                        }
                    }
                });
                for i in 0..3u32 {
                    a.send(&i).unwrap();
                }
                while seen.load(1) == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                    if !kill && seen.load(0) == 3 {
                        a.close();
                    }
                }
                0
            });
            assert!(common::poll_until(WATCHDOG, || out.load(0) == 3), "{} of 3 messages", out.load(0));
            if kill {
                // Killed while it holds `a`.
                parent.kill();
            }
            assert!(common::poll_until(WATCHDOG, || out.load(1) != 0), "no end of file");
            if !kill {
                assert_eq!(parent.wait_timeout(WATCHDOG), Some(0));
            }
            // Reap the reader (orphaned into us if its parent was killed).
            // SAFETY: waitpid on our own children, with no status wanted.
            while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
            0
        });
        let code = reaper.wait_timeout(WATCHDOG);
        assert_eq!(code, Some(0), "kill {kill}: {}", reaper.describe());
        assert_eq!((outcome.load(0), outcome.load(1)), (3, 1), "kill {kill}: three messages, then end of file");
    }
}

#[test]
fn messages_written_and_read_in_place_round_trip_through_many_wraps() {
    let (a, b) = pipe_with_capacity(256, true).unwrap();
    let dog = watch(&a);
    assert_eq!(a.max_in_place(), 256 / 2 - 8);
    let writer = {
        let a = a.clone();
        std::thread::spawn(move || {
            for i in 0..5000u64 {
                let len = 8 + (i as usize * 7) % 100;
                a.send_in_place(len, |w| {
                    assert_eq!(w.remaining(), len);
                    assert!(w.write(&i.to_le_bytes()));
                    // Past the end: refused, nothing written.
                    assert!(!w.write(&vec![1; len]));
                    // The rest is left unwritten: zeros.
                })
                .unwrap();
            }
        })
    };
    for i in 0..5000u64 {
        let (n, len, rest_zero) = b
            .recv_in_place(|m| {
                let mut n = [0; 8];
                assert!(m.copy_to(0, &mut n));
                let rest = m.to_vec();
                assert!(!m.copy_to(m.len(), &mut [0]), "past the end");
                (u64::from_le_bytes(n), m.len(), rest[8..].iter().all(|&x| x == 0))
            })
            .unwrap_or_else(|e| panic!("message {i}: {e}{}", dog.hung_note()));
        assert_eq!((n, len, rest_zero), (i, 8 + (i as usize * 7) % 100, true), "message {i}");
    }
    writer.join().unwrap();
}

#[test]
#[allow(
    clippy::redundant_closure_for_method_calls,
    reason = "`Received::to_vec` as a path is not general over the message's lifetime"
)]
fn in_place_reads_take_streamed_messages_too_and_mix_with_the_other_forms() {
    let (a, b) = pipe_with_capacity(256, true).unwrap();
    let _dog = watch(&a);
    assert!(matches!(a.send_in_place(121, |_| ()), Err(Error::TooLarge { size: 121, limit: 120 })));
    let writer = {
        let a = a.clone();
        std::thread::spawn(move || {
            a.send_bytes(&pattern(1, 5000)).unwrap();
            a.send_in_place(3, |w| assert!(w.write(b"abc"))).unwrap();
            a.send_bytes(b"plain").unwrap();
        })
    };
    let streamed = b.recv_in_place(|m| m.to_vec()).unwrap();
    assert_pattern(1, &streamed, 5000, "a streamed message read in place");
    assert_eq!(b.recv_bytes().unwrap(), b"abc");
    assert_eq!(b.recv_in_place(|m| m.to_vec()).unwrap(), b"plain");
    writer.join().unwrap();
    a.close();
    assert!(matches!(b.recv_in_place(|m| m.len()), Err(Error::Closed)));
}

/// A poll of zero timeout sees a dead peer (it looks on its way out, at most
/// once per probe slice), so a `while !poll(0) { work }` loop ends.
#[test]
fn a_zero_timeout_poll_sees_a_dead_peer() {
    let (a, b) = pipe().unwrap();
    let mut child = start(Fork, move || drop(b.send(&1u8)));
    join_ok(&mut child);
    assert_eq!(a.recv::<u8>().unwrap(), 1);
    assert!(common::poll_until(WATCHDOG, || a.poll(Some(Duration::ZERO)).unwrap()), "poll(0) never saw the peer go");
    let closed = || matches!(a.recv_bytes_timeout(Duration::ZERO), Err(Error::Closed));
    assert!(common::poll_until(WATCHDOG, closed), "a zero-timeout read never saw the peer go");
}

/// A partial message set aside by a timed-out read goes on only if nobody
/// read on meanwhile: here a forked reader takes the next message (skipping
/// the first one's later chunks), and the first reader's next read returns
/// the message after that, not the first message's head spliced to the
/// second's tail.
#[test]
fn a_set_aside_partial_message_is_dropped_once_another_reader_read_on() {
    let (a, b) = pipe_with_capacity(256, true).unwrap();
    let dog = watch(&a);
    // M1 stalls half-way: `b` holds part of it.
    let mut writer = stopped_mid_stream(&a, &b, 1, 3000);
    // SAFETY: as in `stopped_mid_stream`.
    assert_eq!(unsafe { libc::kill(writer.pid(), libc::SIGCONT) }, 0);
    // M1's writer can finish only once M1's later chunks are read (skipped).
    // M2, of the same size, and then a small one.
    let sender = {
        let a = a.clone();
        std::thread::spawn(move || {
            a.send_bytes(&pattern(2, 3000)).unwrap();
            a.send_bytes(b"after").unwrap();
        })
    };
    let other = b.clone();
    let mut reader = fork_child(move || {
        // A forked copy of the set-aside part is not ours to go on with.
        let m = other.recv_bytes().unwrap();
        assert_pattern(2, &m, 3000, "the forked reader's message");
        0
    });
    assert_eq!(reader.wait_timeout(WATCHDOG), Some(0), "{}", reader.describe());
    assert_eq!(writer.wait_timeout(WATCHDOG), Some(0), "{}", writer.describe());
    sender.join().unwrap();
    assert_eq!(b.recv_bytes().unwrap_or_else(|e| panic!("{e}{}", dog.hung_note())), b"after");
}
