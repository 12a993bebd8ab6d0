//! `ObjectQueue<T>` (any serde type, variable-size records on the byte ring,
//! producers and consumers taking turns through two locks in the segment)
//! and `JoinableQueue<T>` (the same queue plus a task count), within a
//! process and between processes.
//!
//! - smoke: FIFO of varied serde types, capacity rounding, `max_message`
//!   (half the ring minus a record header) and a message of exactly that
//!   size on an empty ring at every ring offset, `TooLarge` naming both
//!   sizes, full/empty, timeouts (lower bounds only), `len`/`is_empty`/
//!   `is_full`, values that do not encode or decode;
//! - close: wakes blocked getters and putters (threads, forked and spawned
//!   children, every wait strategy); later puts hand the value back; gets
//!   drain, then `Closed`;
//! - three producer and three consumer processes (fork and spawn) with
//!   messages of every size up to the limit: each exactly once, intact,
//!   FIFO per producer;
//! - named queues: opened from other processes; a wrong element type or
//!   kind is a `Mismatch`; `JoinableQueue::open` on an `ObjectQueue` works;
//! - `JoinableQueue`: `join` across processes, `join_timeout`, too many
//!   `task_done`s, what `close` does to a joiner;
//! - dying peers (SPEC §4): producers and consumers `SIGKILL`ed at random
//!   points and while they hold their side's lock; forged dead lock owners;
//! - garbage written over the positions, record headers, locks, counts and
//!   the segment header, between operations and while another process
//!   operates the queue.
//!
//! Every cross-process wait is bounded: children are joined under the
//! watchdog (`join_ok`, `join_all_ok`, `in_child`), and where the test
//! thread itself blocks in a queue, a [`Watchdog`] closes the queue after
//! [`WATCHDOG`] so that the blocked call returns and the test fails instead
//! of hanging. Timing assertions are lower bounds only. Named segments come
//! from `unique_name`, and every test that makes them checks `/dev/shm` for
//! leftovers once its handles are dropped.

// Process targets are `fn(A) -> R`: they take their arguments by value.
#![allow(clippy::needless_pass_by_value)]

mod common;

use std::collections::VecDeque;
use std::fmt::{self, Debug};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{
    Proc, ShmMap, WATCHDOG, Watchdog, XorShift, assert_no_leftovers, in_child, is_dead, join_all_ok, join_ok,
    join_thread, kill_and_reap, poll_until, proc_state, read_shm, scribble, start, start_fn, unique_name, wait_until,
};
use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shmproc::{
    Array, Bytes, Error, Event, GetError, JoinableQueue, Lock, ObjectQueue, PutError, Queue, Segment,
    StartMethod::{Fork, ForkServer, Spawn},
    WaitStrategy,
};

// ---------------------------------------------------------------------------
// The segment layout (src/segment/header.rs, src/channel/object.rs,
// src/ring/bytes.rs); `map_checked` fails loudly if it changes.
// ---------------------------------------------------------------------------

/// File offsets of segment header fields.
const KIND_AT: usize = 12;
const TYPE_FP_AT: usize = 16;
const PAYLOAD_LEN_AT: usize = 24;
/// `Kind::ObjectQueue`.
const OBJECT_QUEUE_KIND: u32 = 12;
/// The ring header: `tail` (the producers' byte position) and `head` (the
/// consumers'), each on a cache line of its own; then the writer's line (its
/// own tail, the head as it last read it) and the reader's (its own head, the
/// tail as it last read it).
const TAIL_AT: usize = 64;
const HEAD_AT: usize = 128;
const WRITER_AT: usize = 192;
const READER_AT: usize = 256;
/// The control line: `closed` (u32), then the `not_empty` and `not_full`
/// sides (seq u32, sleepers u32 each).
const CLOSED_AT: usize = 320;
/// The producers' line: their `OwnerLock` (word u32, pad u32, owner stamp
/// u64), then `pending`; the consumers' line: their `OwnerLock`.
const PRODUCER_LOCK_AT: usize = 384;
const PENDING_AT: usize = 400;
const CONSUMER_LOCK_AT: usize = 448;
/// Messages put (on the producers' line, after `pending`) and taken (on the
/// consumers' line, after their lock): `len` is the difference.
const PUTS_AT: usize = 408;
const GETS_AT: usize = 464;
/// `JoinableQueue` tasks put (producers' line, after `puts`) and marked done
/// (the counts line, before the `all_done` side): `unfinished` is the
/// difference.
const TASKS_AT: usize = 416;
const DONE_AT: usize = 512;
const ALL_DONE_AT: usize = 520;
/// The data region.
const DATA_AT: usize = 576;
/// Payload bytes before the data region.
const STATE_LEN: usize = DATA_AT - 64;
/// Record tags: a record header is `len | tag << 32`.
const MSG: u64 = 0x4d53_4721;
const PAD: u64 = 0x5041_4421;
/// The owner tid bits of a lock word (bit 31 says someone may sleep on it;
/// bits 22..=30 set make the word garbage, taken over at once).
const TID_MASK: u32 = (1 << 22) - 1;
const JUNK_BIT: u32 = 1 << 27;
/// A tid no task can have (above `pid_max`, 32768 here): a lock word that
/// names it names a dead owner.
const GHOST: u32 = TID_MASK;

fn record_header(len: u64, tag: u64) -> u64 {
    len | tag << 32
}

fn load64(map: &ShmMap, at: usize) -> u64 {
    map.u64_at(at).load(Ordering::SeqCst)
}

fn store64(map: &ShmMap, at: usize, v: u64) {
    map.u64_at(at).store(v, Ordering::SeqCst);
}

/// Forges the ring's positions as a ring at rest has them: the published
/// ones and each side's copies (its own position, the other's as last read).
/// Unfinished tasks by the counts in the segment: tasks − done.
fn unfinished(map: &ShmMap) -> u64 {
    load64(map, TASKS_AT).saturating_sub(load64(map, DONE_AT))
}

/// Messages in the ring by the counts in the segment: puts − gets.
fn items(map: &ShmMap) -> u64 {
    load64(map, PUTS_AT).wrapping_sub(load64(map, GETS_AT))
}

fn set_positions(map: &ShmMap, head: u64, tail: u64) {
    for at in [HEAD_AT, READER_AT, WRITER_AT + 8] {
        store64(map, at, head);
    }
    for at in [TAIL_AT, WRITER_AT, READER_AT + 8] {
        store64(map, at, tail);
    }
}

fn word(map: &ShmMap, at: usize) -> u32 {
    map.u32_at(at).load(Ordering::SeqCst)
}

/// The tid a lock word names (0: free).
fn owner(map: &ShmMap, at: usize) -> u32 {
    word(map, at) & TID_MASK
}

/// `len` bytes of the file from `at` (8-aligned), read with atomic loads.
fn read_bytes(map: &ShmMap, at: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&load64(map, at + out.len()).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Asserts that the named queue's file has the layout this file pokes at
/// (so that a layout change fails here rather than making the garbage and
/// crash tests test nothing), and maps it.
fn map_checked(name: &str, capacity: usize) -> ShmMap {
    let file = read_shm(name);
    let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().unwrap());
    assert_eq!(file.len(), DATA_AT + capacity, "header, state, then the data region");
    assert_eq!(u32_at(KIND_AT), OBJECT_QUEUE_KIND, "kind");
    assert_eq!(u64_at(PAYLOAD_LEN_AT), (STATE_LEN + capacity) as u64, "payload length");
    ShmMap::open(name)
}

/// The message at the consumers' position (after at most one PAD), decoded
/// as `T`: `None` if the ring is empty or no message is there. Only
/// meaningful while no consumer runs.
fn message_at_head<T: DeserializeOwned>(map: &ShmMap, capacity: usize) -> Option<T> {
    let (tail, head) = (load64(map, TAIL_AT), load64(map, HEAD_AT));
    if tail == head {
        return None;
    }
    let mut off = (head % capacity as u64) as usize;
    let mut h = load64(map, DATA_AT + off);
    if h >> 32 == PAD {
        off = 0;
        h = load64(map, DATA_AT);
    }
    let len = (h & 0xffff_ffff) as usize;
    if h >> 32 != MSG || off + 8 + len > capacity {
        return None;
    }
    postcard::from_bytes(&read_bytes(map, DATA_AT + off + 8, len)).ok()
}

// ---------------------------------------------------------------------------
// Message types
// ---------------------------------------------------------------------------

/// Bytes that encode with no length prefix (a tuple of `u8`s; decoding
/// takes every byte left): a value of n bytes is a message of exactly n
/// bytes, and the empty value a message of 0 bytes, an 8-byte record, which
/// no ordinary serde type with more than one value gives. Lets a test put
/// the ring's positions at any 8-byte offset and hit the limit exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawBytes(Vec<u8>);

impl Serialize for RawBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for RawBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Greedy;
        impl<'de> Visitor<'de> for Greedy {
            type Value = RawBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the rest of the message")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawBytes, A::Error> {
                let mut out = Vec::new();
                // postcard fails the element after the last byte: the end.
                while let Ok(Some(b)) = seq.next_element::<u8>() {
                    out.push(b);
                }
                Ok(RawBytes(out))
            }
        }
        d.deserialize_tuple(usize::MAX, Greedy)
    }
}

fn raw(bytes: &[u8]) -> RawBytes {
    RawBytes(bytes.to_vec())
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Shape {
    Dot,
    Circle { radius: f64 },
    Polygon(Vec<(i32, i32)>),
    Labelled(String, Box<Shape>),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Record {
    id: u64,
    name: String,
    shape: Shape,
    weights: Vec<f32>,
    parent: Option<u64>,
    flags: (bool, char, i8),
}

fn record(i: u64) -> Record {
    let shape = match i % 4 {
        0 => Shape::Dot,
        1 => Shape::Circle { radius: f64::from(i as u32) / 3.0 },
        2 => Shape::Polygon((0..(i % 7) as i32).map(|k| (k, -k * 3)).collect()),
        _ => Shape::Labelled(format!("ring {i}"), Box::new(Shape::Circle { radius: 0.5 })),
    };
    Record {
        id: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        name: "é✓".repeat((i % 5) as usize) + &i.to_string(),
        shape,
        weights: (0..(i % 9)).map(|k| f32::from(k as u16) * 0.25).collect(),
        parent: (i % 3 != 0).then_some(i / 2),
        flags: (i % 2 == 0, char::from_u32(0x1F600 + (i % 50) as u32).unwrap(), (i as i8).wrapping_neg()),
    }
}

/// A `u32` that refuses to encode 666 and to decode 13.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Picky(u32);

impl Serialize for Picky {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 666 {
            return Err(serde::ser::Error::custom("Picky refuses to encode 666"));
        }
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            13 => Err(serde::de::Error::custom("Picky refuses to decode 13")),
            v => Ok(Picky(v)),
        }
    }
}

/// A message of the many-process tests: who sent it, its sequence number, a
/// checksum of the two and of the payload's length (top bit set, so the
/// field always takes 10 bytes), and a payload whose length and bytes
/// depend on all that.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Tagged {
    producer: u32,
    seq: u32,
    check: u64,
    payload: String,
}

/// The producer id of the message that tells a consumer to stop.
const POISON: u32 = u32::MAX;

/// Printable ASCII noise that payloads are cut from (built at compile time:
/// forked children must not initialise statics).
const TABLE_LEN: usize = 4096;
static TABLE: [u8; TABLE_LEN] = {
    let mut t = [0u8; TABLE_LEN];
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut i = 0;
    while i < TABLE_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t[i] = b'!' + (x % 94) as u8;
        i += 1;
    }
    t
};

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Bytes of postcard's varint of `v`.
fn varint_len(v: usize) -> usize {
    let mut n = 1;
    let mut v = v >> 7;
    while v > 0 {
        n += 1;
        v >>= 7;
    }
    n
}

/// Encoded bytes of a `Tagged` without its payload's length and bytes.
fn tagged_fixed(producer: u32, seq: u32) -> usize {
    varint_len(producer as usize) + varint_len(seq as usize) + 10
}

/// Encoded bytes of `m`.
fn tagged_len(m: &Tagged) -> usize {
    tagged_fixed(m.producer, m.seq) + varint_len(m.payload.len()) + m.payload.len()
}

/// Message `seq` of `producer` for a queue whose messages may have up to
/// `max` bytes: one in sixteen is exactly `max` bytes encoded (when a
/// payload length gives that), one in sixteen has an empty payload, the
/// others spread over the whole range.
fn tagged(producer: u32, seq: u32, max: usize) -> Tagged {
    let h = mix(u64::from(producer) << 32 | u64::from(seq));
    let fixed = tagged_fixed(producer, seq);
    let room = max.checked_sub(fixed + 3).expect("a queue too small for tagged messages").min(TABLE_LEN - 1);
    let exact = (1..=3).map(|v| max - fixed - v).find(|l| fixed + varint_len(*l) + l == max);
    let len = match h % 16 {
        0 => exact.unwrap_or(room).min(TABLE_LEN - 1),
        1 => 0,
        _ => (h >> 8) as usize % (room + 1),
    };
    let start = (h >> 32) as usize % (TABLE_LEN - len);
    let payload = std::str::from_utf8(&TABLE[start..start + len]).expect("ASCII").to_owned();
    Tagged { producer, seq, check: mix(h ^ len as u64) | 1 << 63, payload }
}

fn poison() -> Tagged {
    Tagged { producer: POISON, seq: 0, check: 0, payload: String::new() }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const STRATEGIES: [WaitStrategy; 3] = [WaitStrategy::Spin, WaitStrategy::Block, WaitStrategy::Adaptive];

/// A wait strategy as a process argument (`WaitStrategy` is not `Serialize`).
fn strategy_code(s: WaitStrategy) -> u8 {
    STRATEGIES.iter().position(|x| *x == s).expect("a known strategy") as u8
}

fn strategy_of(code: u8) -> WaitStrategy {
    STRATEGIES[usize::from(code) % STRATEGIES.len()]
}

impl Watchdog {
    /// A watchdog that closes `q`.
    fn closing<T: Serialize + DeserializeOwned + 'static>(q: &ObjectQueue<T>) -> Watchdog {
        let q = q.clone();
        Watchdog::new(move || q.close())
    }
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    (unsafe { libc::gettid() }) as u32
}

/// Messages per second, for the report.
#[allow(clippy::cast_precision_loss)] // a rate to print
fn rate(n: u64, took: Duration) -> String {
    format!("{:.0} k msg/s", n as f64 / took.as_secs_f64() / 1e3)
}

/// Asserts `r` is a `Mismatch` whose message mentions every needle.
fn assert_mismatch<T: Debug>(what: &str, r: shmproc::Result<T>, needles: &[&str]) {
    match r {
        Err(e @ Error::Mismatch { .. }) => {
            let msg = e.to_string();
            for n in needles {
                assert!(msg.contains(n), "{what}: {msg:?} does not mention {n:?}");
            }
        }
        other => panic!("{what}: expected Mismatch, got {other:?}"),
    }
}

fn is_corrupt_get<T>(r: &Result<T, GetError>) -> bool {
    matches!(r, Err(GetError::Failed(e)) if matches!(**e, Error::Corrupt { .. }))
}

fn is_corrupt_put<T: PartialEq>(r: &Result<(), PutError<T>>, v: &T) -> bool {
    matches!(r, Err(PutError::Failed(x, e)) if x == v && matches!(**e, Error::Corrupt { .. }))
}

// ---------------------------------------------------------------------------
// Smoke
// ---------------------------------------------------------------------------

#[test]
fn the_segment_layout_is_the_one_these_tests_poke_at() {
    const TAG: &str = "oq-layout";
    let name = unique_name(TAG);
    let q = JoinableQueue::<RawBytes>::create(&name, 200).unwrap();
    let o = q.as_queue();
    assert_eq!((o.capacity(), o.max_message()), (256, 120));
    let map = map_checked(&name, 256);
    for at in [TAIL_AT, HEAD_AT, PUTS_AT, GETS_AT, TASKS_AT, DONE_AT] {
        assert_eq!(load64(&map, at), 0, "offset {at} of a new queue");
    }
    for at in [CLOSED_AT, PRODUCER_LOCK_AT, CONSUMER_LOCK_AT, ALL_DONE_AT] {
        assert_eq!(word(&map, at), 0, "offset {at} of a new queue");
    }

    // A record: header (len | MSG << 32), payload, padding to 8.
    q.put(raw(b"hello")).unwrap();
    assert_eq!((load64(&map, TAIL_AT), load64(&map, HEAD_AT)), (16, 0));
    assert_eq!(load64(&map, DATA_AT), record_header(5, MSG));
    assert_eq!(read_bytes(&map, DATA_AT + 8, 5), b"hello");
    assert_eq!((items(&map), unfinished(&map)), (1, 1));
    assert_eq!(q.get().unwrap(), raw(b"hello"));
    assert_eq!((load64(&map, HEAD_AT), load64(&map, GETS_AT), items(&map), unfinished(&map)), (16, 1, 0, 1));
    q.task_done().unwrap();
    assert_eq!((load64(&map, TASKS_AT), load64(&map, DONE_AT)), (1, 1));

    // A record that does not fit before the end: a PAD fills the rest, the
    // record starts at offset 0, both published by one move of the tail.
    q.put(RawBytes(vec![2; 176])).unwrap_err(); // over the limit: nothing written
    q.put(RawBytes(vec![2; 112])).unwrap(); // 16..136
    q.get().unwrap();
    q.put(RawBytes(vec![3; 120])).unwrap(); // 136 + 128 > 256: PAD 136..256, record 0..128
    assert_eq!(load64(&map, DATA_AT + 136), record_header(112, PAD));
    assert_eq!(load64(&map, DATA_AT), record_header(120, MSG));
    assert_eq!(load64(&map, TAIL_AT), 256 + 128);
    assert_eq!(message_at_head::<RawBytes>(&map, 256), Some(RawBytes(vec![3; 120])));
    assert_eq!(q.get().unwrap(), RawBytes(vec![3; 120]));
    assert_eq!(load64(&map, HEAD_AT), 256 + 128);
    q.task_done().unwrap();
    q.task_done().unwrap();

    // A thread blocked in a get holds the consumers' lock, one blocked in a
    // put the producers' (the lock word names its tid).
    let (tx, rx) = std::sync::mpsc::channel();
    let getter = {
        let q = q.clone();
        std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            q.get()
        })
    };
    let tid = rx.recv().unwrap();
    wait_until("the getter holds the consumers' lock", || owner(&map, CONSUMER_LOCK_AT) == tid);
    q.put(raw(b"x")).unwrap();
    assert_eq!(join_thread(getter).unwrap(), raw(b"x"));
    assert_eq!(word(&map, CONSUMER_LOCK_AT), 0, "released, no waiter bit left");
    q.put(RawBytes(vec![4; 120])).unwrap();
    q.put(RawBytes(vec![1; 8])).unwrap();
    assert!(o.is_full());
    let (tx, rx) = std::sync::mpsc::channel();
    let putter = {
        let q = q.clone();
        std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            q.put(raw(b"y"))
        })
    };
    let tid = rx.recv().unwrap();
    wait_until("the putter holds the producers' lock", || owner(&map, PRODUCER_LOCK_AT) == tid);
    assert_eq!(q.get().unwrap(), RawBytes(vec![4; 120]));
    join_thread(putter).unwrap();
    assert_eq!(word(&map, PRODUCER_LOCK_AT), 0);
    assert_eq!((items(&map), unfinished(&map)), (2, 4));
    q.close();
    assert_ne!(word(&map, CLOSED_AT), 0);
    drop((q, map));
    assert_no_leftovers(TAG);
}

/// Puts `values` through a small queue (so that it fills and wraps) and
/// checks that they come back equal and in order.
fn fifo<T>(what: &str, values: &[T])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    let q = ObjectQueue::<T>::new(512).unwrap();
    let mut pending = VecDeque::new();
    let mut full = 0;
    for v in values {
        loop {
            match q.try_put(v.clone()) {
                Ok(()) => {
                    pending.push_back(v.clone());
                    break;
                }
                Err(PutError::Full(back)) => {
                    assert_eq!(&back, v, "{what}: Full hands the value back");
                    full += 1;
                    let want = pending.pop_front().unwrap_or_else(|| panic!("{what}: full while empty"));
                    assert_eq!(q.try_get().unwrap(), want, "{what}");
                }
                Err(e) => panic!("{what}: {e:?}"),
            }
        }
        assert_eq!(q.len(), pending.len(), "{what}");
    }
    while let Some(want) = pending.pop_front() {
        assert_eq!(q.try_get().unwrap(), want, "{what}");
    }
    assert!(matches!(q.try_get(), Err(GetError::Empty)), "{what}");
    assert!(q.is_empty(), "{what}");
    assert_eq!(q.len(), 0, "{what}");
    assert!(full > 0 || values.len() < 10, "{what}: the ring never filled: the test wraps nothing");
}

#[test]
fn fifo_of_varied_serde_types() {
    let strings: Vec<String> =
        (0..300).map(|i| if i % 7 == 0 { String::new() } else { "ü∂x".repeat(i % 40) + &i.to_string() }).collect();
    fifo("String", &strings);
    let bytes: Vec<Vec<u8>> = (0..300).map(|i| (0..(i * 13 % 240)).map(|k| (k * i) as u8).collect()).collect();
    fifo("Vec<u8>", &bytes);
    let tuples: Vec<(u8, String, Vec<u16>, Option<i64>)> = (0..300)
        .map(|i| (i as u8, format!("{i:x}"), (0..(i % 11) as u16).collect(), (i % 2 == 0).then_some(-(i as i64) << 40)))
        .collect();
    fifo("tuple", &tuples);
    fifo("Record", &(0..300).map(record).collect::<Vec<_>>());
    fifo("()", &[(); 300]);
    fifo("RawBytes", &(0..300).map(|i| RawBytes(vec![i as u8; i % 200])).collect::<Vec<_>>());
    fifo("extremes", &[(u128::MAX, i64::MIN, f64::INFINITY, char::MAX), (0, 0, -0.0, '\0')]);
    fifo("Option<Vec<String>>", &[None, Some(vec![]), Some(vec![String::new(), "a".into()])]);
}

/// In a child: gets `n` messages and puts each back on `out`.
fn echo<T: Serialize + DeserializeOwned>((input, out, n): (ObjectQueue<T>, ObjectQueue<T>, u32)) -> u32 {
    for i in 0..n {
        let v = input.get().unwrap_or_else(|e| panic!("echo: get {i}: {e}"));
        if let Err(e) = out.put(v) {
            panic!("echo: put {i}: {e}");
        }
    }
    n
}

/// Records travel to a forked and a spawned child and back, in order (the
/// spawned child checks the type fingerprint of a re-executed binary).
#[test]
fn records_round_trip_through_forked_and_spawned_children() {
    const N: u32 = 400;
    for method in [Fork, Spawn, ForkServer] {
        let (there, back) = (ObjectQueue::<Record>::new(256).unwrap(), ObjectQueue::<Record>::new(256).unwrap());
        let dog = Watchdog::closing(&back);
        let mut child = start_fn(method, echo::<Record>, (there.clone(), back.clone(), N));
        let mut next = 0;
        for i in 0..u64::from(N) {
            there.put(record(i)).unwrap();
            while let Ok(r) = back.try_get() {
                assert_eq!(r, record(next), "{method:?}");
                next += 1;
            }
        }
        while next < u64::from(N) {
            let r = back.get();
            assert!(!dog.fired(), "{method:?}: the echo hung after {next}");
            assert_eq!(r.unwrap(), record(next), "{method:?}");
            next += 1;
        }
        assert_eq!(join_ok(&mut child), N);
    }
}

#[test]
fn capacity_rounds_up_to_a_power_of_two_of_at_least_64_bytes() {
    const TAG: &str = "oq-capacity";
    for (asked, cap) in [
        (0, 64),
        (1, 64),
        (63, 64),
        (64, 64),
        (65, 128),
        (100, 128),
        (128, 128),
        (129, 256),
        (1000, 1024),
        (4096, 4096),
        (4097, 8192),
        (100_000, 131_072),
    ] {
        let q = ObjectQueue::<u8>::new(asked).unwrap();
        assert_eq!(q.capacity(), cap, "asked for {asked}");
        assert_eq!(q.max_message(), cap / 2 - 8, "capacity {cap}: half the ring minus a record header");
        let j = JoinableQueue::<String>::new(asked).unwrap();
        assert_eq!((j.as_queue().capacity(), j.as_queue().max_message()), (cap, cap / 2 - 8));
    }
    for absurd in [usize::MAX, 1 << 63, (1 << 63) + 1] {
        assert!(matches!(ObjectQueue::<u8>::new(absurd), Err(Error::InvalidArgument { .. })), "{absurd}");
    }
    let q = ObjectQueue::<u8>::new(10).unwrap();
    assert_eq!(q.name(), None);
    assert_eq!(q.wait_strategy(), WaitStrategy::Adaptive, "the default");
    assert!(!q.is_closed() && q.is_empty() && !q.is_full());
    let debug = format!("{q:?}");
    assert!(debug.contains("ObjectQueue") && debug.contains("64"), "{debug}");
    assert!(format!("{:?}", JoinableQueue::<u8>::new(1).unwrap()).contains("JoinableQueue"));

    let name = unique_name(TAG);
    let q = ObjectQueue::<u8>::create(&name, 300).unwrap();
    assert_eq!((q.capacity(), q.name()), (512, Some(name.as_str())));
    drop(map_checked(&name, 512));
    drop(q);
    assert_no_leftovers(TAG);
}

/// The `n` for which `vec![0u8; n]` encodes to exactly `bytes` bytes.
fn vec_encoding_to(bytes: usize) -> usize {
    (1..=3)
        .map(|v| bytes - v)
        .find(|n| postcard::to_stdvec(&vec![0u8; *n]).unwrap().len() == bytes)
        .expect("a length whose encoding has that size")
}

fn expect_too_large<T: Debug + PartialEq>(
    what: &str,
    r: Result<(), PutError<T>>,
    value: &T,
    size: usize,
    limit: usize,
) {
    match r {
        Err(PutError::Failed(back, e)) if matches!(*e, Error::TooLarge { .. }) => {
            assert_eq!(&back, value, "{what}: the value comes back");
            assert!(matches!(*e, Error::TooLarge { size: s, limit: l } if s == size && l == limit), "{what}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(&size.to_string()) && msg.contains(&limit.to_string()), "{what}: {msg:?}");
        }
        other => panic!("{what}: expected TooLarge({size}, {limit}), got {other:?}"),
    }
}

/// `max_message` is the promise that a message of that size fits an empty
/// ring wherever its positions stand: before the end, or after a PAD to the
/// end (either part is at least half the ring). The positions are rotated
/// by 8 bytes at a time with empty messages (8-byte records) and the
/// largest message put at every offset; one byte more is refused up front,
/// by every kind of put, even on an empty ring.
#[test]
fn a_message_at_the_limit_fits_an_empty_ring_at_every_offset() {
    const TAG: &str = "oq-limit";
    for capacity in [64, 128, 1024] {
        let name = unique_name(TAG);
        let q = ObjectQueue::<RawBytes>::create(&name, capacity).unwrap();
        let map = map_checked(&name, capacity);
        let max = q.max_message();
        assert_eq!(max, capacity / 2 - 8);
        let big = RawBytes((0..max).map(|i| (i * 7) as u8 ^ 0x5a).collect());
        let mut bigger = big.clone();
        bigger.0.push(0xff);
        let mut wrapped = 0;
        for offset in (0..capacity as u64).step_by(8) {
            while load64(&map, TAIL_AT) % capacity as u64 != offset {
                q.try_put(raw(b"")).unwrap();
                assert_eq!(q.try_get().unwrap(), raw(b""));
            }
            assert!(q.is_empty());
            assert_eq!(q.len(), 0);
            let before = load64(&map, TAIL_AT);
            if let Err(e) = q.try_put(big.clone()) {
                panic!("capacity {capacity}, offset {offset}: the largest message on an empty ring: {e:?}");
            }
            if load64(&map, TAIL_AT) - before > (max + 8) as u64 {
                wrapped += 1; // it went after a PAD
            }
            assert_eq!(q.len(), 1);
            assert_eq!(q.try_get().unwrap(), big, "capacity {capacity}, offset {offset}");
            expect_too_large("try_put", q.try_put(bigger.clone()), &bigger, max + 1, max);
        }
        assert!(wrapped > 0, "capacity {capacity}: no offset needed a PAD: the test misses that case");
        // The blocking and timed puts refuse at once too (no wait for room
        // that can never come), also when the ring is not empty.
        q.put(raw(b"first")).unwrap();
        expect_too_large("put", q.put(bigger.clone()), &bigger, max + 1, max);
        expect_too_large("put_timeout", q.put_timeout(bigger.clone(), WATCHDOG), &bigger, max + 1, max);
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().unwrap(), raw(b"first"));

        // An ordinary type: a Vec<u8> whose encoding (length prefix
        // included) is exactly the limit, at offsets that messages of
        // various sizes leave behind.
        let v = ObjectQueue::<Vec<u8>>::new(capacity).unwrap();
        let n = vec_encoding_to(max);
        let mut rng = XorShift::new(capacity as u64);
        for _ in 0..40 {
            let small = vec![1u8; rng.next_u64() as usize % (max / 2)];
            v.try_put(small.clone()).unwrap();
            assert_eq!(v.try_get().unwrap(), small);
            v.try_put(vec![9; n]).unwrap();
            assert_eq!(v.try_get().unwrap(), vec![9; n]);
        }
        let over = vec![9; n + 1];
        expect_too_large("Vec<u8>", v.put(over.clone()), &over, max + 1, max);
        drop((q, map));
    }
    assert_no_leftovers(TAG);
}

fn full_and_empty(strategy: WaitStrategy) {
    let what = format!("{strategy:?}");
    let wait = Duration::from_millis(30);
    let q = ObjectQueue::<RawBytes>::new(64).unwrap().with_wait_strategy(strategy);
    assert_eq!(q.wait_strategy(), strategy);
    assert!(q.is_empty() && !q.is_full());
    assert_eq!(q.len(), 0);
    assert!(matches!(q.try_get(), Err(GetError::Empty)));
    assert!(matches!(q.get_timeout(Duration::ZERO), Err(GetError::Timeout)), "{what}");
    let t = Instant::now();
    assert!(matches!(q.get_timeout(wait), Err(GetError::Timeout)), "{what}");
    assert!(t.elapsed() >= wait, "{what}: get_timeout returned early: {:?}", t.elapsed());

    // Four 16-byte records fill 64 bytes.
    for i in 0..4u8 {
        q.try_put(RawBytes(vec![i; 8])).unwrap();
        assert_eq!(q.len(), usize::from(i) + 1);
        assert!(!q.is_empty());
    }
    assert!(q.is_full(), "{what}");
    assert!(matches!(q.try_put(raw(&[9])), Err(PutError::Full(v)) if v == raw(&[9])), "{what}");
    assert!(matches!(q.put_timeout(raw(&[9]), Duration::ZERO), Err(PutError::Timeout(_))), "{what}");
    let t = Instant::now();
    assert!(matches!(q.put_timeout(raw(&[8]), wait), Err(PutError::Timeout(v)) if v == raw(&[8])), "{what}");
    assert!(t.elapsed() >= wait, "{what}: put_timeout returned early: {:?}", t.elapsed());
    assert_eq!(q.len(), 4, "{what}: failed puts are not counted");

    assert_eq!(q.try_get().unwrap(), RawBytes(vec![0; 8]));
    assert!(!q.is_full());
    // Room for a 16-byte record, not for a 24-byte one.
    assert!(matches!(q.try_put(RawBytes(vec![5; 9])), Err(PutError::Full(_))), "{what}");
    q.try_put(RawBytes(vec![4; 8])).unwrap();

    // A blocked put completes once a get makes room, not before.
    let t = Instant::now();
    let putter = {
        let q = q.clone();
        std::thread::spawn(move || (q.put(RawBytes(vec![5; 8])), t.elapsed()))
    };
    std::thread::sleep(wait);
    assert!(!putter.is_finished(), "{what}: a put returned from a full queue");
    assert_eq!(q.get().unwrap(), RawBytes(vec![1; 8]));
    let (r, took) = join_thread(putter);
    r.unwrap();
    assert!(took >= wait, "{what}");
    for want in [2, 3, 4, 5] {
        assert_eq!(q.get_timeout(WATCHDOG).unwrap(), RawBytes(vec![want; 8]), "{what}");
    }
    assert!(q.is_empty());
    assert_eq!(q.len(), 0);

    // A blocked get completes once a put comes, not before.
    let t = Instant::now();
    let getter = {
        let q = q.clone();
        std::thread::spawn(move || (q.get_timeout(WATCHDOG), t.elapsed()))
    };
    std::thread::sleep(wait);
    assert!(!getter.is_finished(), "{what}: a get returned from an empty queue");
    q.put(raw(b"late")).unwrap();
    let (r, took) = join_thread(getter);
    assert_eq!(r.unwrap(), raw(b"late"));
    assert!(took >= wait, "{what}");
}

#[test]
fn full_empty_timeouts_and_sizes() {
    for s in STRATEGIES {
        full_and_empty(s);
    }
}

/// A `PutError` maker, the value it hands back, the `Error` it converts to.
type PutCase = (fn() -> PutError<u8>, u8, Error);

/// A value that does not encode comes back with `Failed(Codec)` and leaves
/// no trace; a message that does not decode is consumed and reported, and
/// the next one comes through.
#[test]
fn values_that_do_not_encode_or_decode_and_the_error_types() {
    let q = JoinableQueue::<Picky>::new(256).unwrap();
    match q.put(Picky(666)) {
        Err(PutError::Failed(v, e)) if matches!(*e, Error::Codec { .. }) => {
            assert_eq!(v, Picky(666));
            // postcard keeps no message of a type's own serde error.
            assert!(e.to_string().contains("encoding"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(q.try_put(Picky(666)), Err(PutError::Failed(Picky(666), e)) if matches!(*e, Error::Codec { .. })));
    assert_eq!((q.as_queue().len(), q.unfinished()), (0, 0), "a value that does not encode is not counted");
    q.put(Picky(13)).unwrap();
    q.put(Picky(14)).unwrap();
    match q.get() {
        Err(GetError::Failed(e)) if matches!(*e, Error::Codec { .. }) => {
            assert!(e.to_string().contains("Picky"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(q.get().unwrap(), Picky(14), "the undecodable message was consumed");
    assert!(q.as_queue().is_empty());
    assert_eq!(q.unfinished(), 2, "both were put: a consumer calls task_done for the bad one too");

    // The error types: values come back, conversions, messages.
    let cases: [PutCase; 4] = [
        (|| PutError::Full(1), 1, Error::WouldBlock),
        (|| PutError::Timeout(2), 2, Error::Timeout),
        (|| PutError::Closed(3), 3, Error::Closed),
        (
            || PutError::Failed(4, Box::new(Error::TooLarge { size: 10, limit: 5 })),
            4,
            Error::TooLarge { size: 10, limit: 5 },
        ),
    ];
    for (make, back, as_error) in cases {
        let e = make();
        assert!(!format!("{e:?}").is_empty() && !e.to_string().is_empty());
        assert_eq!(make().into_inner(), back);
        assert_eq!(format!("{:?}", Error::from(e)), format!("{as_error:?}"));
    }
    assert_eq!(PutError::Closed(String::from("v")).into_inner(), "v");
    assert_eq!(PutError::Failed(7, Box::new(Error::Closed)).into_inner(), 7);
    for (e, as_error) in [
        (GetError::Empty, Error::WouldBlock),
        (GetError::Timeout, Error::Timeout),
        (GetError::Closed, Error::Closed),
        (
            GetError::Failed(Box::new(Error::Corrupt { what: "x", detail: "y".into() })),
            Error::Corrupt { what: "x", detail: "y".into() },
        ),
    ] {
        assert!(!e.to_string().is_empty());
        assert_eq!(format!("{:?}", Error::from(e)), format!("{as_error:?}"));
    }
}

/// `put_ref` and its forms encode from a reference: the value stays with the
/// caller (reused here, changed between puts), errors carry no value, and a
/// `JoinableQueue` counts each as a task.
#[test]
fn put_ref_leaves_the_value_with_the_caller() {
    let q = JoinableQueue::<Bytes>::new(256).unwrap();
    let mut m = Bytes::from(vec![0u8; 40]);
    let mut n = 0u8;
    loop {
        m[0] = n;
        match q.try_put_ref(&m) {
            Ok(()) => n += 1,
            Err(PutError::Full(())) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(n >= 2, "a 256-byte ring holds several 56-byte records");
    assert!(matches!(q.put_ref_timeout(&m, Duration::from_millis(10)), Err(PutError::Timeout(()))));
    assert_eq!(m.len(), 40, "still ours");
    let got: Vec<u8> = (0..n).map(|_| q.get().unwrap()[0]).collect();
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    assert_eq!(q.unfinished(), u64::from(n));
    q.put_ref_timeout(&m, Duration::from_millis(10)).unwrap();
    q.put_ref(&m).unwrap();
    assert_eq!(q.unfinished(), u64::from(n) + 2);
    let big = Bytes::from(vec![0u8; q.as_queue().max_message()]);
    assert!(matches!(q.put_ref(&big), Err(PutError::Failed((), e)) if matches!(*e, Error::TooLarge { .. })));
    q.as_queue().close();
    assert!(matches!(q.put_ref(&m), Err(PutError::Closed(()))));
    assert_eq!(q.unfinished(), u64::from(n) + 2, "failed puts are not counted");
}

/// `try_get` takes small messages (read on the stack) and larger ones (read
/// through the scratch buffer) alike, says `Empty` on an open empty queue and
/// `Closed` on a closed, drained one.
#[test]
fn try_get_of_small_and_large_messages_and_of_a_closed_queue() {
    let q = ObjectQueue::<Bytes>::new(1 << 12).unwrap();
    assert!(matches!(q.try_get(), Err(GetError::Empty)));
    for len in [0, 10, 255, 256, 1000] {
        q.put(Bytes::from(vec![len as u8; len])).unwrap();
    }
    for len in [0, 10, 255, 256, 1000] {
        assert_eq!(q.try_get().unwrap(), Bytes::from(vec![len as u8; len]), "{len} bytes");
    }
    assert!(matches!(q.try_get(), Err(GetError::Empty)));
    q.put(Bytes::from(vec![7; 3])).unwrap();
    q.close();
    assert_eq!(q.try_get().unwrap()[..], [7, 7, 7]);
    assert!(matches!(q.try_get(), Err(GetError::Closed)));
}

/// A put that waits for the producers' lock while the queue closes gets
/// `Closed` once it has the lock, and writes nothing: the consumers may have
/// drained the queue and gone (found in review: the in-place path wrote).
#[test]
fn a_put_waiting_for_the_lock_across_a_close_writes_nothing() {
    let q = JoinableQueue::<Bytes>::new(256).unwrap();
    let mut queued = 0u64;
    while q.try_put(Bytes::from(vec![1u8; 40])).is_ok() {
        queued += 1;
    }
    std::thread::scope(|s| {
        // A waits for room, holding the producers' lock; B waits for the lock.
        let a = s.spawn(|| q.put(Bytes::from(vec![2u8; 40])));
        std::thread::sleep(Duration::from_millis(50));
        let b = s.spawn(|| q.put(Bytes::from(vec![3u8; 8])));
        std::thread::sleep(Duration::from_millis(50));
        q.as_queue().close();
        assert!(matches!(a.join().unwrap(), Err(PutError::Closed(_))));
        assert!(matches!(b.join().unwrap(), Err(PutError::Closed(_))), "a put after the close went in");
    });
    let mut drained = 0;
    loop {
        match q.get_timeout(WATCHDOG) {
            Ok(m) => {
                assert_eq!(m[0], 1, "only what was queued before the close");
                drained += 1;
            }
            Err(GetError::Closed) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((drained, q.unfinished()), (queued, queued));
}

/// A value whose `Serialize` panics (after writing some bytes) when it holds
/// 0: values are encoded under the producers' lock, straight into the ring.
#[derive(Debug, PartialEq, Deserialize)]
struct Bomb(u64, u32);

impl Serialize for Bomb {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.0)?;
        assert!(self.1 != 0, "the bomb went off mid-encoding");
        t.serialize_element(&self.1)?;
        t.end()
    }
}

#[test]
fn a_serialize_that_panics_leaves_the_queue_unlocked_and_uncounted() {
    let q = JoinableQueue::<Bomb>::new(256).unwrap();
    q.put(Bomb(7, 1)).unwrap();
    for attempt in 0..3 {
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = if attempt == 0 { q.put(Bomb(7, 0)) } else { q.try_put(Bomb(7, 0)) };
        }));
        assert!(panicked.is_err(), "the panic reaches the caller");
    }
    // Not counted, nothing published, and the lock is free: a try_put from
    // another thread gets it at once.
    assert_eq!((q.as_queue().len(), q.unfinished()), (1, 1));
    std::thread::scope(|s| s.spawn(|| q.try_put(Bomb(7, 2)).unwrap()).join().unwrap());
    assert_eq!(q.get().unwrap(), Bomb(7, 1));
    assert_eq!(q.get().unwrap(), Bomb(7, 2));
    assert!(q.as_queue().is_empty());
}

/// Messages of every size up to the limit, at every offset of a small ring:
/// written in place when the run to the ring's end holds them, else through
/// the scratch buffer with padding; all come back whole and in order.
#[test]
fn in_place_and_padded_writes_interleave_at_every_offset() {
    let q = ObjectQueue::<Bytes>::new(256).unwrap();
    let max = q.max_message();
    let mut sent = VecDeque::new();
    for i in 0..600usize {
        let len = (i * 37) % (max - 2);
        let mut m = Bytes::from(vec![(i % 251) as u8; len]);
        loop {
            match q.try_put(m) {
                Ok(()) => break,
                Err(PutError::Full(back)) => {
                    let oldest = sent.pop_front().unwrap_or_else(|| panic!("message {i}: full when empty"));
                    assert_eq!(q.get().unwrap(), oldest, "message {i}");
                    m = back;
                }
                Err(e) => panic!("message {i}: {e:?}"),
            }
        }
        sent.push_back(Bytes::from(vec![(i % 251) as u8; len]));
        if i % 3 == 0 {
            assert_eq!(q.get().unwrap(), sent.pop_front().unwrap(), "message {i}");
        }
    }
    while let Some(m) = sent.pop_front() {
        assert_eq!(q.get().unwrap(), m);
    }
    assert!(q.is_empty());
}

// ---------------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------------

/// Threads blocked in `get` on an empty queue and in `put` on a full one all
/// wake when the queue closes (one waits in the ring, the others for the
/// side's lock: the wake passes along), whatever their wait strategy; the
/// putters get their values back, what was queued stays.
fn close_wakes_threads(strategy: WaitStrategy) {
    let what = format!("{strategy:?}");
    let settle = Duration::from_millis(40);
    let q = ObjectQueue::<String>::new(64).unwrap().with_wait_strategy(strategy);
    let getters: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || q.get())
        })
        .collect();
    std::thread::sleep(settle);
    assert!(getters.iter().all(|h| !h.is_finished()), "{what}: a get returned from an empty queue");
    q.close();
    for h in getters {
        let r = join_thread(h);
        assert!(matches!(r, Err(GetError::Closed)), "{what}: a woken get gave {r:?}");
    }

    let q = JoinableQueue::<String>::new(64).unwrap().with_strategy(strategy);
    for i in 0..4 {
        q.put(format!("queued{i}")).unwrap(); // 8 bytes encoded: four 16-byte records
    }
    assert!(q.as_queue().is_full());
    let putters: Vec<_> = (0..3)
        .map(|i| {
            let q = q.clone();
            std::thread::spawn(move || q.put(format!("late{i}")))
        })
        .collect();
    std::thread::sleep(settle);
    assert!(putters.iter().all(|h| !h.is_finished()), "{what}: a put returned from a full queue");
    q.close();
    for (i, h) in putters.into_iter().enumerate() {
        match join_thread(h) {
            Err(PutError::Closed(v)) => assert_eq!(v, format!("late{i}"), "{what}"),
            other => panic!("{what}: a woken put gave {other:?}"),
        }
    }
    assert_eq!(q.unfinished(), 4, "{what}: the refused puts are not counted");
    for i in 0..4 {
        assert_eq!(q.get().unwrap(), format!("queued{i}"), "{what}: what was queued stays");
    }
    assert!(matches!(q.get(), Err(GetError::Closed)));
}

/// `with_wait_strategy` for a `JoinableQueue`, through its `ObjectQueue`.
trait WithStrategy {
    #[must_use]
    fn with_strategy(self, s: WaitStrategy) -> Self;
}

impl<T: Serialize + DeserializeOwned> WithStrategy for JoinableQueue<T> {
    fn with_strategy(self, s: WaitStrategy) -> Self {
        self.as_queue().set_wait_strategy(s);
        self
    }
}

#[test]
fn close_wakes_blocked_threads() {
    for s in STRATEGIES {
        close_wakes_threads(s);
    }
}

/// In a child: announces itself, then blocks in `get` until the close.
fn blocked_getter((q, ready, strategy): (ObjectQueue<String>, Event, u8)) -> String {
    let q = q.with_wait_strategy(strategy_of(strategy));
    ready.set();
    match q.get() {
        Err(GetError::Closed) => "closed".to_owned(),
        other => format!("{other:?}"),
    }
}

/// In a child: announces itself, then blocks in `put` (the queue is full).
fn blocked_putter((q, ready, strategy): (ObjectQueue<String>, Event, u8)) -> String {
    let q = q.with_wait_strategy(strategy_of(strategy));
    ready.set();
    match q.put("from the child".to_owned()) {
        Err(PutError::Closed(v)) => format!("closed({v})"),
        other => format!("{other:?}"),
    }
}

/// Two children block in `get` (or in `put` on a full queue): one holds the
/// side's lock and waits in the ring, the other waits for the lock. A close
/// from the parent wakes both.
#[test]
fn close_wakes_blocked_getters_and_putters_in_other_processes() {
    const TAG: &str = "oq-close-child";
    for (method, strategy) in [(Fork, WaitStrategy::Adaptive), (Fork, WaitStrategy::Block), (Spawn, WaitStrategy::Spin)]
    {
        for putter in [false, true] {
            let what = format!("{method:?} {strategy:?} putter={putter}");
            let name = unique_name(TAG);
            let q = ObjectQueue::<String>::create(&name, 64).unwrap();
            let map = map_checked(&name, 64);
            if putter {
                while q.try_put("0123456".into()).is_ok() {}
            }
            let target: fn((ObjectQueue<String>, Event, u8)) -> String =
                if putter { blocked_putter } else { blocked_getter };
            let lock_at = if putter { PRODUCER_LOCK_AT } else { CONSUMER_LOCK_AT };
            let events = [Event::new().unwrap(), Event::new().unwrap()];
            let mut children: Vec<Proc<String>> = events
                .iter()
                .map(|e| start_fn(method, target, (q.clone(), e.clone(), strategy_code(strategy))))
                .collect();
            for e in &events {
                assert!(e.wait_timeout(WATCHDOG).unwrap(), "{what}: a child never started");
            }
            let pids: Vec<u32> = children.iter().map(|c| c.pid().unwrap()).collect();
            wait_until("a child holds the lock", || pids.contains(&owner(&map, lock_at)));
            std::thread::sleep(Duration::from_millis(30));
            assert!(children.iter_mut().all(|c| c.is_alive()), "{what}: a child returned from a blocking call");
            q.close();
            let expected = if putter { "closed(from the child)" } else { "closed" };
            assert_eq!(join_all_ok(&mut children), vec![expected; 2], "{what}");
            assert_eq!(word(&map, lock_at), 0, "{what}: the lock is free again");
            if putter {
                assert_eq!(q.len(), 4, "{what}: what was queued stays");
            }
        }
    }
    assert_no_leftovers(TAG);
}

/// A close from a child wakes the parent's blocked get.
#[test]
fn a_close_in_a_child_wakes_the_parent() {
    for strategy in STRATEGIES {
        let q = ObjectQueue::<u64>::new(64).unwrap().with_wait_strategy(strategy);
        let mut child = start(Fork, {
            let q = q.clone();
            move || {
                std::thread::sleep(Duration::from_millis(30));
                q.close();
            }
        });
        let dog = Watchdog::closing(&q);
        let r = q.get();
        assert!(!dog.fired(), "{strategy:?}: the parent's get hung; the watchdog closed the queue");
        assert!(matches!(r, Err(GetError::Closed)), "{strategy:?}: {r:?}");
        join_ok(&mut child);
    }
}

/// In a child: drains a closed queue with every kind of get; what it got,
/// and whether each kind then reports `Closed`.
fn drain_closed((q, n): (ObjectQueue<Record>, u64)) -> (Vec<Record>, bool) {
    assert!(q.is_closed());
    let mut got = Vec::new();
    for i in 0..n {
        got.push(match i % 3 {
            0 => q.get().unwrap(),
            1 => q.try_get().unwrap(),
            _ => q.get_timeout(WATCHDOG).unwrap(),
        });
    }
    let closed = matches!(q.get(), Err(GetError::Closed))
        && matches!(q.try_get(), Err(GetError::Closed))
        && matches!(q.get_timeout(Duration::from_millis(1)), Err(GetError::Closed));
    (got, closed)
}

#[test]
fn after_close_puts_fail_and_gets_drain_then_report_closed() {
    for method in [Fork, Spawn] {
        let q = ObjectQueue::<Record>::new(1024).unwrap();
        let other = q.clone();
        for i in 0..6 {
            q.put(record(i)).unwrap();
        }
        other.close();
        other.close(); // idempotent
        assert!(q.is_closed() && other.is_closed());
        assert!(matches!(q.put(record(6)), Err(PutError::Closed(r)) if r == record(6)));
        assert!(matches!(q.try_put(record(7)), Err(PutError::Closed(r)) if r == record(7)));
        assert!(matches!(q.put_timeout(record(8), WATCHDOG), Err(PutError::Closed(r)) if r == record(8)));
        // Checked before anything else: a too-large value is Closed too.
        let huge = Record { name: "x".repeat(5000), ..record(0) };
        assert!(matches!(q.put(huge), Err(PutError::Closed(_))));
        assert_eq!(q.len(), 6);
        assert_eq!((q.get().unwrap(), q.try_get().unwrap()), (record(0), record(1)));
        let mut child = start_fn(method, drain_closed, (q.clone(), 4));
        let (got, closed) = join_ok(&mut child);
        assert_eq!(got, (2..6).map(record).collect::<Vec<_>>(), "{method:?}");
        assert!(closed, "{method:?}: every kind of get reports Closed once drained");
        assert!(matches!(q.get(), Err(GetError::Closed)));
        assert!(matches!(q.try_get(), Err(GetError::Closed)));
        assert!(matches!(q.get_timeout(Duration::from_millis(1)), Err(GetError::Closed)));
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
    }
}

// ---------------------------------------------------------------------------
// Many producers and consumers
// ---------------------------------------------------------------------------

/// In a child: puts `tagged(id, 0..n)`, storing in `progress[id]` how many
/// puts completed.
fn tagged_producer((q, progress, id, n, strategy): (ObjectQueue<Tagged>, Array<u64>, u32, u32, u8)) -> u32 {
    let q = q.with_wait_strategy(strategy_of(strategy));
    let max = q.max_message();
    for seq in 0..n {
        let m = tagged(id, seq, max);
        assert!(tagged_len(&m) <= max, "message {seq} of {id}: {} bytes", tagged_len(&m));
        if let Err(e) = q.put(m) {
            panic!("producer {id}: put {seq}: {e:?}");
        }
        progress.store(id as usize, u64::from(seq) + 1);
    }
    n
}

type CrashProducerArgs = (ObjectQueue<Tagged>, Array<u64>, Array<u64>, u32, u32, u8, Event);

/// In a child: as [`tagged_producer`], but it pauses before put number
/// `pause[id]` until the parent changes that word (so that the parent,
/// however slow, kills it in mid-stream), and once done it waits for `hold`
/// before it returns (so that a kill aimed at it never finds it gone).
fn crash_producer((q, progress, pause, id, n, strategy, hold): CrashProducerArgs) -> u32 {
    let q = q.with_wait_strategy(strategy_of(strategy));
    let max = q.max_message();
    for seq in 0..n {
        let start = Instant::now();
        while pause.load(id as usize) == u64::from(seq) {
            assert!(start.elapsed() < WATCHDOG, "never released from the pause");
            std::thread::sleep(Duration::from_micros(100));
        }
        if let Err(e) = q.put(tagged(id, seq, max)) {
            panic!("producer {id}: put {seq}: {e:?}");
        }
        progress.store(id as usize, u64::from(seq) + 1);
    }
    assert!(hold.wait_timeout(WATCHDOG).unwrap(), "never released at the end");
    n
}

/// What a consumer saw.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy)]
struct Seen {
    messages: u64,
    bytes: u64,
    /// Messages of exactly `max_message` bytes, and with an empty payload.
    at_limit: u64,
    empty: u64,
}

type ConsumerArgs = (ObjectQueue<Tagged>, Array<u8>, Array<u64>, u32, u32, u8);

/// In a child: gets until the queue is closed and drained or a poison
/// message comes. Checks every message (it must equal what its producer
/// made of its id and number: contents intact), FIFO per producer in its own
/// view, and counts it in `counts` (index `producer * n + seq`) and in
/// `received[0]`.
fn tagged_consumer((q, counts, received, producers, n, strategy): ConsumerArgs) -> Seen {
    let q = q.with_wait_strategy(strategy_of(strategy));
    let max = q.max_message();
    let mut last: Vec<Option<u32>> = vec![None; producers as usize];
    let mut seen = Seen::default();
    loop {
        let m = match q.get() {
            Ok(m) if m.producer == POISON => return seen,
            Ok(m) => m,
            Err(GetError::Closed) => return seen,
            Err(e) => panic!("get after {} messages: {e:?}", seen.messages),
        };
        assert!(m.producer < producers && m.seq < n, "a message never sent: {m:?}");
        let want = tagged(m.producer, m.seq, max);
        assert!(m == want, "message {} of producer {} corrupted: {m:?}", m.seq, m.producer);
        if let Some(prev) = last[m.producer as usize] {
            assert!(m.seq > prev, "producer {}: {} after {prev}", m.producer, m.seq);
        }
        last[m.producer as usize] = Some(m.seq);
        counts.fetch_add((m.producer * n + m.seq) as usize, 1);
        received.fetch_add(0, 1);
        seen.messages += 1;
        seen.bytes += tagged_len(&m) as u64;
        seen.at_limit += u64::from(tagged_len(&m) == max);
        seen.empty += u64::from(m.payload.is_empty());
    }
}

/// (producer, seq, times delivered) of up to ten messages not delivered
/// exactly once.
fn not_exactly_once(counts: &[u8], n: u32) -> Vec<(usize, usize, u8)> {
    let n = n as usize;
    counts.iter().enumerate().filter(|(_, c)| **c != 1).take(10).map(|(i, c)| (i / n, i % n, *c)).collect()
}

#[test]
fn three_producer_and_three_consumer_processes_deliver_every_message_once_intact() {
    const PRODUCERS: u32 = 3;
    const N: u32 = 20_000;
    let q = ObjectQueue::<Tagged>::new(1024).unwrap();
    let counts = Array::<u8>::new((PRODUCERS * N) as usize).unwrap();
    let received = Array::<u64>::new(1).unwrap();
    let progress = Array::<u64>::new(PRODUCERS as usize).unwrap();
    let start = Instant::now();
    let code = strategy_code(WaitStrategy::Adaptive);
    let mut consumers: Vec<Proc<Seen>> = [Spawn, Fork, Fork]
        .into_iter()
        .map(|m| start_fn(m, tagged_consumer, (q.clone(), counts.clone(), received.clone(), PRODUCERS, N, code)))
        .collect();
    let mut producers: Vec<Proc<u32>> = [Fork, Spawn, Fork]
        .into_iter()
        .enumerate()
        .map(|(id, m)| start_fn(m, tagged_producer, (q.clone(), progress.clone(), id as u32, N, code)))
        .collect();
    assert_eq!(join_all_ok(&mut producers), vec![N; PRODUCERS as usize]);
    q.close();
    let seen = join_all_ok(&mut consumers);
    let took = start.elapsed();
    let total: u64 = seen.iter().map(|s| s.messages).sum();
    assert_eq!(total, u64::from(PRODUCERS * N), "consumers saw {seen:?}");
    let wrong = not_exactly_once(&counts.to_vec().unwrap(), N);
    assert!(wrong.is_empty(), "(producer, seq, times delivered) not exactly once: {wrong:?}");
    assert!(seen.iter().map(|s| s.at_limit).sum::<u64>() > 0, "no message of exactly max_message bytes went through");
    assert!(seen.iter().map(|s| s.empty).sum::<u64>() > 0);
    assert!(q.is_empty());
    assert_eq!(q.len(), 0);
    let bytes: u64 = seen.iter().map(|s| s.bytes).sum();
    eprintln!(
        "ObjectQueue 3 producers × {N} → 3 consumers (capacity 1024, max message {}): {took:?} with start-up, {}, \
         {} KiB; split {:?}",
        q.max_message(),
        rate(total, took),
        bytes / 1024,
        seen.iter().map(|s| s.messages).collect::<Vec<_>>()
    );
}

/// Threads share a `JoinableQueue`: four producers, four workers that mark
/// every task done, and `join` returning once all are.
#[test]
fn threads_share_a_joinable_queue() {
    const THREADS: u32 = 4;
    const N: u32 = 4000;
    let q = JoinableQueue::<Tagged>::new(512).unwrap();
    let counts = Array::<u8>::new((THREADS * N) as usize).unwrap();
    let received = Array::<u64>::new(1).unwrap();
    let progress = Array::<u64>::new(THREADS as usize).unwrap();
    let dog = Watchdog::closing(q.as_queue());
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (q, counts, received) = (q.clone(), counts.clone(), received.clone());
                s.spawn(move || {
                    let max = q.as_queue().max_message();
                    let mut got = 0;
                    while let Ok(m) = q.get() {
                        assert_eq!(m, tagged(m.producer, m.seq, max));
                        counts.fetch_add((m.producer * N + m.seq) as usize, 1);
                        received.fetch_add(0, 1);
                        q.task_done().unwrap();
                        got += 1;
                    }
                    got
                })
            })
            .collect();
        let producers: Vec<_> = (0..THREADS)
            .map(|id| {
                let (q, progress) = (q.as_queue().clone(), progress.clone());
                s.spawn(move || tagged_producer((q, progress, id, N, 2)))
            })
            .collect();
        for p in producers {
            assert_eq!(p.join().unwrap(), N);
        }
        assert!(q.join_timeout(WATCHDOG), "join did not return");
        assert_eq!(received.load(0), u64::from(THREADS * N), "join returned before every task_done");
        q.close();
        let got: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(got, THREADS * N);
    });
    assert!(!dog.fired());
    assert!(not_exactly_once(&counts.to_vec().unwrap(), N).is_empty());
    assert_eq!(q.unfinished(), 0);
}

// ---------------------------------------------------------------------------
// Named queues
// ---------------------------------------------------------------------------

/// In a child: opens the queue by name, as an unrelated process would, and
/// puts `record(0..n)`.
fn open_and_produce((name, n): (String, u64)) -> u64 {
    let q = ObjectQueue::<Record>::open(&name).unwrap();
    assert_eq!(q.name(), Some(name.as_str()));
    for i in 0..n {
        q.put(record(i)).unwrap();
    }
    n
}

/// In a child: opens the `ObjectQueue` by name as a `JoinableQueue`, and
/// works through `n` tasks.
fn open_and_work((name, n): (String, u64)) -> u64 {
    let q = JoinableQueue::<Record>::open(&name).unwrap();
    for i in 0..n {
        assert_eq!(q.get().unwrap(), record(i));
        q.task_done().unwrap();
    }
    n
}

#[test]
fn named_queues_are_opened_from_other_processes() {
    const TAG: &str = "oq-named";
    for method in [Fork, Spawn] {
        let name = unique_name(TAG);
        let q = ObjectQueue::<Record>::create(&name, 512).unwrap();
        assert_eq!(q.name(), Some(name.as_str()));
        let mut child = start_fn(method, open_and_produce, (name.clone(), 300));
        let dog = Watchdog::closing(&q);
        for i in 0..300 {
            let r = q.get();
            assert!(!dog.fired(), "{method:?}: hung at {i}");
            assert_eq!(r.unwrap(), record(i), "{method:?}");
        }
        assert_eq!(join_ok(&mut child), 300);
        drop(dog);
        // The same segment as a JoinableQueue in a child: every put counts
        // (an ObjectQueue's too: one layout), the child's task_done calls
        // bring the count down, and the parent's join sees it.
        let j = JoinableQueue::<Record>::open(&name).unwrap();
        assert_eq!(j.unfinished(), 300, "{method:?}: the ObjectQueue's puts count as tasks (one layout)");
        for _ in 0..300 {
            j.task_done().unwrap();
        }
        let mut child = start_fn(method, open_and_work, (name.clone(), 100));
        for i in 0..100 {
            q.put(record(i)).unwrap();
        }
        assert!(j.join_timeout(WATCHDOG), "{method:?}: join never returned (unfinished {})", j.unfinished());
        assert_eq!(join_ok(&mut child), 100);
        assert_eq!(j.unfinished(), 0, "{method:?}");
    }
    assert_no_leftovers(TAG);
}

#[test]
fn opening_with_the_wrong_type_or_kind_is_a_mismatch() {
    const TAG: &str = "oq-mismatch";
    let strings = unique_name(TAG);
    let fixed = unique_name(TAG);
    let raw_name = unique_name(TAG);
    let lock_name = unique_name(TAG);
    let q = ObjectQueue::<String>::create(&strings, 256).unwrap();
    let fq = Queue::<u64>::create(&fixed, 4).unwrap();
    let seg = Segment::create(&raw_name, 4096).unwrap();
    let lock = Lock::create(&lock_name).unwrap();
    let file = read_shm(&strings);
    let fp = u64::from_le_bytes(file[TYPE_FP_AT..TYPE_FP_AT + 8].try_into().unwrap());
    let found = format!("{fp:#x}");

    // Another element type: the message names the type expected (and its
    // fingerprint) and the fingerprint found (the segment records no name).
    let needles = ["element type", "u32", found.as_str()];
    assert_mismatch("u32 on String", ObjectQueue::<u32>::open(&strings), &needles);
    assert_mismatch("JoinableQueue<u32> on String", JoinableQueue::<u32>::open(&strings), &needles);
    assert_mismatch("Vec<u8> on String", ObjectQueue::<Vec<u8>>::open(&strings), &["element type", "Vec<u8>", &found]);
    assert_mismatch("(String,) on String", ObjectQueue::<(String,)>::open(&strings), &["element type", &found]);
    assert_mismatch("Record on String", ObjectQueue::<Record>::open(&strings), &["element type", "Record", &found]);
    // Another kind of segment, either way.
    let kind = ["kind", "ObjectQueue", "Queue"];
    assert_mismatch("ObjectQueue<u64> on Queue<u64>", ObjectQueue::<u64>::open(&fixed), &kind);
    assert_mismatch("JoinableQueue<u64> on Queue<u64>", JoinableQueue::<u64>::open(&fixed), &kind);
    assert_mismatch("Queue<u64> on ObjectQueue", Queue::<u64>::open(&strings), &kind);
    assert_mismatch("ObjectQueue on Raw", ObjectQueue::<String>::open(&raw_name), &["kind", "ObjectQueue", "Raw"]);
    assert_mismatch("ObjectQueue on Lock", ObjectQueue::<String>::open(&lock_name), &["kind", "Lock"]);
    assert_mismatch("Raw on ObjectQueue", Segment::open(&strings), &["kind", "ObjectQueue"]);
    assert_mismatch("Lock on ObjectQueue", Lock::open(&strings), &["kind", "ObjectQueue"]);

    // Names.
    assert!(matches!(ObjectQueue::<String>::create(&strings, 64), Err(Error::AlreadyExists { .. })));
    assert!(matches!(JoinableQueue::<u8>::create(&fixed, 64), Err(Error::AlreadyExists { .. })));
    assert!(matches!(ObjectQueue::<String>::open(&unique_name(TAG)), Err(Error::NotFound { .. })));
    for bad in ["", "a/b", "..", &"x".repeat(300)] {
        assert!(matches!(ObjectQueue::<u8>::create(bad, 64), Err(Error::InvalidName { .. })), "{bad:?}");
        assert!(matches!(JoinableQueue::<u8>::open(bad), Err(Error::InvalidName { .. })), "{bad:?}");
    }

    // The right type opens the same queue, as either flavor.
    let again = ObjectQueue::<String>::open(&strings).unwrap();
    let joinable = JoinableQueue::<String>::open(&strings).unwrap();
    q.put("one".into()).unwrap();
    joinable.put("two".into()).unwrap();
    assert_eq!(again.get().unwrap(), "one");
    assert_eq!(joinable.get().unwrap(), "two");
    assert_eq!(joinable.unfinished(), 2, "the ObjectQueue's put counts as a task too");
    joinable.task_done().unwrap();
    joinable.task_done().unwrap();
    assert!(joinable.join_timeout(Duration::ZERO));
    drop((q, fq, seg, lock, again, joinable));
    assert_no_leftovers(TAG);
}

// ---------------------------------------------------------------------------
// JoinableQueue
// ---------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
struct Job {
    id: u32,
    sleep_us: u32,
}

/// In a child: waits for the gate, then works through jobs until the queue
/// closes: each job is counted in `done[0]` (and `done[1 + id]`) before its
/// `task_done`. Returns how many it did.
fn joinable_worker((q, done, gate): (JoinableQueue<Job>, Array<u64>, Event)) -> u64 {
    assert!(gate.wait_timeout(WATCHDOG).unwrap(), "the gate never opened");
    let mut n = 0;
    loop {
        match q.get() {
            Ok(job) => {
                if job.sleep_us > 0 {
                    std::thread::sleep(Duration::from_micros(job.sleep_us.into()));
                }
                done.fetch_add(1 + job.id as usize, 1);
                done.fetch_add(0, 1);
                q.task_done().unwrap();
                n += 1;
            }
            Err(GetError::Closed) => return n,
            Err(e) => panic!("get: {e}"),
        }
    }
}

/// In a child: joins, then reports how many jobs were done by then.
fn joiner((q, done): (JoinableQueue<Job>, Array<u64>)) -> u64 {
    q.join();
    done.load(0)
}

/// `join` (in the parent, and in a forked and a spawned child) waits until
/// every put has its `task_done`, which workers in other processes call:
/// not before (checked while the workers are held at a gate), and every job
/// is done when it returns. (Every job is put before the gate opens: `join`
/// returns whenever the count touches 0, which it may do between two puts.)
#[test]
fn join_waits_for_task_done_calls_from_other_processes() {
    const N: u32 = 600;
    let q = JoinableQueue::<Job>::new(16 * 1024).unwrap();
    let done = Array::<u64>::new(1 + N as usize).unwrap();
    let gate = Event::new().unwrap();
    for id in 0..N {
        q.put(Job { id, sleep_us: if id % 50 == 0 { 2000 } else { 0 } }).unwrap();
    }
    assert_eq!(q.unfinished(), u64::from(N));
    let mut workers: Vec<Proc<u64>> = [Fork, Spawn]
        .into_iter()
        .map(|m| start_fn(m, joinable_worker, (q.clone(), done.clone(), gate.clone())))
        .collect();
    let mut joiners: Vec<Proc<u64>> =
        [Fork, Spawn].into_iter().map(|m| start_fn(m, joiner, (q.clone(), done.clone()))).collect();
    let wait = Duration::from_millis(50);
    let t = Instant::now();
    assert!(!q.join_timeout(wait), "join returned with {N} tasks unfinished");
    assert!(t.elapsed() >= wait, "join_timeout returned early: {:?}", t.elapsed());
    assert!(joiners.iter_mut().all(|j| j.is_alive()), "a joining child returned early");
    assert_eq!((done.load(0), q.unfinished()), (0, u64::from(N)));

    gate.set();
    assert!(q.join_timeout(WATCHDOG), "join never returned (unfinished {})", q.unfinished());
    assert_eq!(done.load(0), u64::from(N), "join returned before the last task_done");
    assert_eq!(q.unfinished(), 0);
    assert_eq!(join_all_ok(&mut joiners), vec![u64::from(N); 2], "the joining children returned early");
    // join returns at once now, and a task_done too many is refused.
    q.join();
    assert!(matches!(q.task_done(), Err(Error::InvalidArgument { .. })));
    assert_eq!(q.unfinished(), 0, "a refused task_done leaves the count at 0");
    q.close();
    assert_eq!(join_all_ok(&mut workers).iter().sum::<u64>(), u64::from(N));
    assert!(done.to_vec().unwrap()[1..].iter().all(|c| *c == 1), "every job done exactly once");
}

#[test]
fn join_timeout_task_done_and_unfinished() {
    let q = JoinableQueue::<u32>::new(256).unwrap();
    assert!(q.join_timeout(Duration::ZERO), "nothing was put");
    q.join();
    assert!(matches!(q.task_done(), Err(Error::InvalidArgument { .. })));
    assert_eq!(q.unfinished(), 0);
    for i in 0..3 {
        q.put(i).unwrap();
    }
    assert_eq!(q.unfinished(), 3, "counted at put");
    let wait = Duration::from_millis(20);
    let t = Instant::now();
    assert!(!q.join_timeout(wait));
    assert!(t.elapsed() >= wait);
    for i in 0..3 {
        assert_eq!(q.get().unwrap(), i);
    }
    assert_eq!(q.unfinished(), 3, "a get does not finish a task");
    q.task_done().unwrap();
    q.task_done().unwrap();
    assert!(!q.join_timeout(Duration::from_millis(1)));
    // A joiner thread returns at the last task_done.
    let joiner = {
        let q = q.clone();
        std::thread::spawn(move || q.join())
    };
    std::thread::sleep(wait);
    assert!(!joiner.is_finished(), "join returned with a task unfinished");
    q.task_done().unwrap();
    join_thread(joiner);
    assert!(q.join_timeout(Duration::ZERO));
    for _ in 0..3 {
        assert!(matches!(q.task_done(), Err(Error::InvalidArgument { .. })));
        assert_eq!(q.unfinished(), 0, "the count stays at 0");
    }
    // Refused puts are not counted: Full, Timeout, TooLarge, Closed.
    let small = JoinableQueue::<RawBytes>::new(64).unwrap();
    while small.try_put(RawBytes(vec![0; 8])).is_ok() {}
    let n = small.unfinished();
    assert_eq!(n, 4);
    assert!(matches!(small.try_put(raw(b"a")), Err(PutError::Full(_))));
    assert!(matches!(small.put_timeout(raw(b"b"), Duration::from_millis(1)), Err(PutError::Timeout(_))));
    assert!(
        matches!(small.put(RawBytes(vec![0; 25])), Err(PutError::Failed(_, e)) if matches!(*e, Error::TooLarge { .. }))
    );
    small.close();
    assert!(matches!(small.put(raw(b"c")), Err(PutError::Closed(_))));
    assert_eq!(small.unfinished(), n);
}

/// What `close` does to a joiner. `ObjectQueue::close` says "waiters wake",
/// and `JoinableQueue::close` notifies the joiners' side too, but `join` is
/// documented as waiting "until every message put has been marked done" and
/// only checks that count: a close wakes a joiner, which goes back to sleep.
/// As in Python, closing does not finish tasks: `join` still returns when
/// (and only when) the last `task_done` comes, which consumers can still
/// call after the close (they drain what is left).
#[test]
fn close_does_not_release_a_joiner_only_the_last_task_done_does() {
    let q = JoinableQueue::<u32>::new(256).unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    let joiner = {
        let q = q.clone();
        std::thread::spawn(move || q.join())
    };
    let settle = Duration::from_millis(30);
    std::thread::sleep(settle);
    assert!(!joiner.is_finished());
    q.close();
    std::thread::sleep(settle);
    assert!(!joiner.is_finished(), "close released a joiner with 2 tasks unfinished");
    let t = Instant::now();
    assert!(!q.join_timeout(settle), "join_timeout after close with tasks unfinished");
    assert!(t.elapsed() >= settle);
    assert_eq!(q.get().unwrap(), 1);
    q.task_done().unwrap();
    std::thread::sleep(settle);
    assert!(!joiner.is_finished());
    assert_eq!(q.get().unwrap(), 2);
    q.task_done().unwrap();
    join_thread(joiner);
    assert!(matches!(q.get(), Err(GetError::Closed)));
    assert!(q.join_timeout(Duration::ZERO));
}

/// BUG (see the report): a put that fails (Full, Timeout, Closed, Corrupt)
/// takes back the task count it added before writing, with a plain
/// `fetch_sub` and no wake-up. If that brings `unfinished` to 0, a joiner
/// that saw the put's count and went to sleep is never told: `join()`
/// sleeps forever, `join_timeout` runs to its deadline. Here the count is
/// 0 while the ring is full because the queued tasks were marked done before
/// being taken (Python allows that); with only legitimate `task_done`s the
/// same happens when a close makes an in-flight put on an empty queue fail.
#[test]
fn a_failed_put_that_takes_back_the_last_task_count_wakes_the_joiners() {
    let q = JoinableQueue::<RawBytes>::new(64).unwrap();
    for i in 0..4 {
        q.put(RawBytes(vec![i; 8])).unwrap();
    }
    for _ in 0..4 {
        q.task_done().unwrap();
    }
    assert!(q.as_queue().is_full());
    assert_eq!(q.unfinished(), 0);
    // A producer waits for room: its put is counted while it waits.
    let putter = {
        let q = q.clone();
        std::thread::spawn(move || q.put_timeout(raw(b"never"), Duration::from_millis(300)))
    };
    wait_until("the waiting put is counted", || q.unfinished() == 1);
    // A joiner comes now and sleeps: one task (the waiting put) unfinished.
    let joiner = {
        let q = q.clone().with_strategy(WaitStrategy::Block);
        std::thread::spawn(move || {
            let t = Instant::now();
            (q.join_timeout(Duration::from_secs(5)), t.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(!joiner.is_finished(), "join returned with a put in flight");
    assert!(matches!(join_thread(putter), Err(PutError::Timeout(_))));
    assert_eq!(q.unfinished(), 0, "the failed put took its count back");
    // Nothing is unfinished: the joiner must wake (not at its deadline). A
    // liveness bound, 1000 times what a wake-up takes, like a watchdog.
    let woke = poll_until(Duration::from_secs(2), || joiner.is_finished());
    let (all_done, took) = join_thread(joiner);
    assert!(all_done);
    assert!(
        woke,
        "BUG: the joiner slept on after the failed put brought the count to 0 (join_timeout(5 s) returned after {took:?})"
    );
}

/// BUG (see the report; the same fix as the test above): a `task_done`
/// while a put is in flight can take the put's count (the count cannot
/// tell it from a finished task); when that put then fails, its plain
/// `fetch_sub` takes 1 from 0 and the count wraps to 2^64 - 1: `join` never
/// returns again and `task_done` never again reports a surplus. Python
/// counts a put only once it succeeded, so there the `task_done` is refused
/// (`ValueError`) and the count stays 0.
#[test]
fn a_failed_put_never_wraps_the_task_count() {
    let q = JoinableQueue::<RawBytes>::new(64).unwrap();
    for i in 0..4 {
        q.put(RawBytes(vec![i; 8])).unwrap();
    }
    for _ in 0..4 {
        q.task_done().unwrap();
    }
    let putter = {
        let q = q.clone();
        std::thread::spawn(move || q.put_timeout(raw(b"never"), Duration::from_millis(100)))
    };
    wait_until("the waiting put is counted", || q.unfinished() == 1);
    let surplus = q.task_done(); // Python: ValueError; here it takes the put's count
    assert!(matches!(join_thread(putter), Err(PutError::Timeout(_))));
    assert_eq!(
        q.unfinished(),
        0,
        "BUG: the count wrapped (task_done during the put gave {surplus:?}); join would never return"
    );
    assert!(q.join_timeout(Duration::ZERO));
}

// ---------------------------------------------------------------------------
// Dying peers (SPEC §4)
// ---------------------------------------------------------------------------

/// Sends `sig` to our child `pid`.
fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling our own child, which is not reaped before the
    // caller's `kill_and_reap` (a `Process` reaps only when asked), so the
    // pid still names it.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Waits until `pid` is stopped or dead.
fn wait_stopped(pid: u32) {
    let start = Instant::now();
    while !matches!(proc_state(pid), Some('T' | 't' | 'Z' | 'X') | None) {
        assert!(start.elapsed() < WATCHDOG, "pid {pid} did not stop");
        std::thread::yield_now();
    }
}

/// Freezes `pid` (`SIGSTOP`) at random moments until `caught()` holds while
/// it is frozen, then `SIGKILL`s it there: a kill aimed at a window (its
/// side's lock held) that random kills rarely hit. (The other peers run on:
/// freezing them could freeze the lock's holder and keep the victim out.)
/// Gives up (and lets the victim run on) after 1000 tries or once it has
/// exited. Whether it was killed.
fn kill_when_caught(pid: u32, rng: &mut XorShift, mut caught: impl FnMut() -> bool) -> bool {
    let mut killed = false;
    for _ in 0..1000 {
        signal(pid, libc::SIGSTOP);
        wait_stopped(pid);
        if is_dead(pid) {
            break;
        }
        if caught() {
            signal(pid, libc::SIGKILL);
            killed = true;
            break;
        }
        signal(pid, libc::SIGCONT);
        for _ in 0..rng.next_u64() % 3000 {
            std::hint::spin_loop();
        }
    }
    if !killed {
        signal(pid, libc::SIGCONT);
    }
    killed
}

/// What the crash runs saw, for the report and for "the runs test
/// something" assertions.
#[derive(Debug, Default)]
struct CrashStats {
    runs: u32,
    killed: u32,
    /// Victims killed before they completed their puts (producer runs).
    mid_stream: u32,
    /// Victims that died holding their side's lock.
    held_lock: u32,
    /// Victims left unreaped (zombies) while the others went on.
    zombies: u32,
    /// From a holder's death to a survivor's takeover of its lock.
    takeovers: Vec<Duration>,
    /// Messages lost (consumer runs), and `len()` over-counts after the drain.
    lost: u32,
    overcount: u32,
}

impl CrashStats {
    fn report(&self, what: &str, took: Duration) {
        let mut t = self.takeovers.clone();
        t.sort();
        let median = t.get(t.len() / 2).copied().unwrap_or_default();
        eprintln!(
            "{what}: {} runs in {took:?}: {} killed ({} before their last put, {} holding their lock, {} left as \
             zombies meanwhile), {} takeovers (median {median:?}, max {:?}), {} messages lost, len() over by {} in all",
            self.runs,
            self.killed,
            self.mid_stream,
            self.held_lock,
            self.zombies,
            t.len(),
            t.last().copied().unwrap_or_default(),
            self.lost,
            self.overcount
        );
    }
}

/// Kills victim `pid` at once (if `kill_when_caught` did not), then either
/// reaps it or, for `zombie`, waits until it is dead but leaves it unreaped
/// (the lock takeover must not wait for the parent to reap).
fn finish_kill<R: DeserializeOwned>(p: &mut Proc<R>, killed_frozen: bool, zombie: bool) {
    let pid = p.pid().unwrap();
    if !killed_frozen {
        signal(pid, libc::SIGKILL);
    }
    if zombie {
        wait_until("the victim dies", || is_dead(pid));
    } else {
        let _ = kill_and_reap(&mut **p);
    }
}

/// After a victim died holding the lock at `lock_at`: waits until a survivor
/// took the lock over (or `nobody_left()`, when no survivor needs it) and
/// records how long that took.
fn time_takeover(
    map: &ShmMap,
    lock_at: usize,
    pid: u32,
    died: Instant,
    stats: &mut CrashStats,
    nobody_left: impl Fn() -> bool,
) {
    let start = Instant::now();
    while owner(map, lock_at) == pid {
        if nobody_left() {
            return;
        }
        assert!(start.elapsed() < WATCHDOG, "watchdog: the lock of dead {pid} was never taken over");
        std::thread::sleep(Duration::from_micros(200));
    }
    stats.takeovers.push(died.elapsed());
}

/// One run: three producers, two consumers; one producer (two, every third
/// run) is `SIGKILL`ed a random moment after it has completed a random
/// number of puts (it pauses there until the parent is ready, so that a
/// slow parent still kills it in mid-stream): odd runs aim at a put in
/// progress (the victim frozen until the producers' lock names it); every
/// fourth run leaves the victim unreaped (a zombie) until the end.
///
/// Guarantee observed: the consumers never hang (a dead producer's lock is
/// taken over by the next producer, or by the parent's final puts, within
/// a probe slice: 20 ms); nothing is duplicated or corrupted; a killed
/// producer's messages are exactly its completed puts, plus possibly the
/// one in flight (published if it died after moving the tail); `len()`
/// over-counts by at most one per killed producer: one that died holding
/// the lock had counted its put before publishing, and nobody takes that
/// back (the same holds for the task count: see the report).
fn producer_crash_run(run: u64, stats: &mut CrashStats) {
    const TAG: &str = "oq-crash-prod";
    const PRODUCERS: u32 = 3;
    const N: u32 = 600;
    let mut rng = XorShift::new(run + 1);
    let strategy = (run % 3) as u8;
    let zombie = run % 4 == 2;
    let capacity = [256, 512, 1024][(rng.next_u64() % 3) as usize];
    let name = unique_name(TAG);
    let q = ObjectQueue::<Tagged>::create(&name, capacity).unwrap();
    let map = map_checked(&name, capacity);
    let progress = Array::<u64>::new(PRODUCERS as usize).unwrap();
    let counts = Array::<u8>::new((PRODUCERS * N) as usize).unwrap();
    let received = Array::<u64>::new(1).unwrap();
    let mut consumers: Vec<Proc<Seen>> = (0..2)
        .map(|_| start_fn(Fork, tagged_consumer, (q.clone(), counts.clone(), received.clone(), PRODUCERS, N, strategy)))
        .collect();
    let first = (rng.next_u64() % u64::from(PRODUCERS)) as usize;
    let mut victims = vec![first];
    if run % 3 == 0 {
        victims.push((first + 1) % PRODUCERS as usize);
    }
    let pause = Array::<u64>::from_slice(&[u64::MAX; PRODUCERS as usize]).unwrap();
    for &v in &victims {
        pause.store(v, rng.next_u64() % u64::from(N * 9 / 10));
    }
    let finish = Event::new().unwrap();
    let mut producers: Vec<Proc<u32>> = (0..PRODUCERS)
        .map(|id| {
            let args = (q.clone(), progress.clone(), pause.clone(), id, N, strategy, finish.clone());
            start_fn(Fork, crash_producer, args)
        })
        .collect();

    let mut held: u32 = 0;
    for &v in &victims {
        let pid = producers[v].pid().unwrap();
        let threshold = pause.load(v);
        wait_until("the victim reaches its pause", || progress.load(v) == threshold);
        pause.store(v, u64::MAX);
        for _ in 0..rng.next_u64() % 50_000 {
            std::hint::spin_loop();
        }
        let mut frozen_kill = false;
        if run % 2 == 1 {
            frozen_kill = kill_when_caught(pid, &mut rng, || owner(&map, PRODUCER_LOCK_AT) == pid);
        }
        finish_kill(&mut producers[v], frozen_kill, zombie);
        let died = Instant::now();
        stats.mid_stream += u32::from(progress.load(v) < u64::from(N));
        held += u32::from(frozen_kill || owner(&map, PRODUCER_LOCK_AT) == pid);
        if owner(&map, PRODUCER_LOCK_AT) == pid {
            let live: Vec<usize> = (0..PRODUCERS as usize).filter(|i| !victims.contains(i)).collect();
            time_takeover(&map, PRODUCER_LOCK_AT, pid, died, stats, || {
                live.iter().all(|i| progress.load(*i) == u64::from(N))
            });
        }
    }
    finish.set();
    for (id, p) in producers.iter_mut().enumerate() {
        if !victims.contains(&id) {
            assert_eq!(join_ok(&mut **p), N, "run {run}");
        }
    }
    // One poison message per consumer: the ring is FIFO, so it comes after
    // every other message. These puts take a dead producer's lock over if
    // no surviving producer did.
    for _ in 0..consumers.len() {
        q.put_timeout(poison(), WATCHDOG).unwrap_or_else(|e| panic!("run {run}: poison: {e:?}"));
    }
    let seen = join_all_ok(&mut consumers);
    assert_eq!(seen.iter().map(|s| s.messages).sum::<u64>(), received.load(0));
    for &v in &victims {
        let code = kill_and_reap(&mut *producers[v]);
        assert_eq!(code, Some(-libc::SIGKILL), "run {run}: producer {v} was not killed");
        stats.killed += 1;
        stats.zombies += u32::from(zombie);
    }
    check_deliveries(run, &counts.to_vec().unwrap(), &progress.to_vec().unwrap(), &victims, N);
    assert!(q.is_empty(), "run {run}");
    let over = q.len();
    assert!(
        over <= victims.len(),
        "run {run}: len() is {over} after the drain, with {} producers killed",
        victims.len()
    );
    assert_eq!((word(&map, PRODUCER_LOCK_AT), word(&map, CONSUMER_LOCK_AT)), (0, 0), "run {run}: a lock left held");
    stats.held_lock += held;
    stats.overcount += over as u32;
    stats.runs += 1;
    drop((q, map));
}

/// Each message delivered exactly once, except a killed producer's: those
/// it completed (`progress`) exactly once, possibly the one in flight, none
/// after it.
fn check_deliveries(run: u64, counts: &[u8], progress: &[u64], victims: &[usize], n: u32) {
    for (id, done) in progress.iter().copied().enumerate() {
        let killed = victims.contains(&id);
        for seq in 0..u64::from(n) {
            let times = counts[id * n as usize + seq as usize];
            let ok = match times {
                1 => seq <= done,
                0 => killed && seq >= done,
                _ => false,
            };
            assert!(
                ok,
                "run {run}: producer {id} (killed: {killed}, {done} puts completed): message {seq} delivered {times} \
                 times"
            );
        }
    }
}

#[test]
fn producers_killed_at_random_points_never_block_consumers() {
    let start = Instant::now();
    let mut stats = CrashStats::default();
    for run in 0..30 {
        producer_crash_run(run, &mut stats);
    }
    stats.report("producers killed", start.elapsed());
    assert!(stats.mid_stream * 2 >= stats.killed, "most producers finished before the kills: the runs test little");
    assert!(stats.held_lock > 0, "no producer died holding its lock: the aimed kills test nothing");
    assert_no_leftovers("oq-crash-prod");
}

/// One run: two producers, three consumers; one consumer (two, every third
/// run) is `SIGKILL`ed once a random number of messages were received: odd
/// runs aim at a get in progress (the victim frozen until the consumers'
/// lock names it while the ring holds a message), and the message then at
/// the head is noted; every fourth run
/// leaves the victim unreaped until the end.
///
/// Guarantee observed: the surviving consumers never hang (a dead
/// consumer's lock is taken over); nothing is duplicated or corrupted; a
/// killed consumer loses at most one message: the one it took (its head
/// moved) and had not yet counted. The message at the head when an aimed
/// victim died is always delivered: either it is the victim's own (the head
/// had not moved: another consumer reads it again) or the next one.
fn consumer_crash_run(run: u64, stats: &mut CrashStats) {
    const TAG: &str = "oq-crash-cons";
    const PRODUCERS: u32 = 2;
    const CONSUMERS: usize = 3;
    const N: u32 = 500;
    let mut rng = XorShift::new(run + 1000);
    let strategy = (run % 3) as u8;
    let zombie = run % 4 == 2;
    let capacity = [256, 512, 1024][(rng.next_u64() % 3) as usize];
    let name = unique_name(TAG);
    let q = ObjectQueue::<Tagged>::create(&name, capacity).unwrap();
    let map = map_checked(&name, capacity);
    let progress = Array::<u64>::new(PRODUCERS as usize).unwrap();
    let counts = Array::<u8>::new((PRODUCERS * N) as usize).unwrap();
    let received = Array::<u64>::new(1).unwrap();
    let mut consumers: Vec<Proc<Seen>> = (0..CONSUMERS)
        .map(|_| start_fn(Fork, tagged_consumer, (q.clone(), counts.clone(), received.clone(), PRODUCERS, N, strategy)))
        .collect();
    let mut producers: Vec<Proc<u32>> = (0..PRODUCERS)
        .map(|id| start_fn(Fork, tagged_producer, (q.clone(), progress.clone(), id, N, strategy)))
        .collect();

    let first = (rng.next_u64() % CONSUMERS as u64) as usize;
    let mut victims = vec![first];
    if run % 3 == 0 {
        victims.push((first + 1) % CONSUMERS);
    }
    let mut at_head: Vec<Tagged> = Vec::new();
    let mut held: u32 = 0;
    for &v in &victims {
        // Some way into the stream (not at the very end: the survivors must
        // still have work).
        let threshold = rng.next_u64() % u64::from(PRODUCERS * N * 9 / 10);
        let start = Instant::now();
        while received.load(0) < threshold {
            assert!(start.elapsed() < WATCHDOG, "run {run}: stalled at {} received", received.load(0));
            std::thread::yield_now();
        }
        let pid = consumers[v].pid().unwrap();
        let mut frozen_kill = false;
        if run % 2 == 1 {
            let mut at_kill = None;
            frozen_kill = kill_when_caught(pid, &mut rng, || {
                let caught = owner(&map, CONSUMER_LOCK_AT) == pid && load64(&map, TAIL_AT) != load64(&map, HEAD_AT);
                if caught {
                    at_kill = message_at_head::<Tagged>(&map, capacity);
                }
                caught
            });
            at_head.extend(at_kill);
        }
        finish_kill(&mut consumers[v], frozen_kill, zombie);
        let died = Instant::now();
        held += u32::from(frozen_kill || owner(&map, CONSUMER_LOCK_AT) == pid);
        if owner(&map, CONSUMER_LOCK_AT) == pid {
            time_takeover(&map, CONSUMER_LOCK_AT, pid, died, stats, || false);
        }
    }
    // The producers finish (the survivors consume), then the close lets the
    // survivors drain and stop.
    assert_eq!(join_all_ok(&mut producers), vec![N; PRODUCERS as usize], "run {run}");
    q.close();
    let (dead, survivors): (Vec<_>, Vec<_>) = consumers.into_iter().enumerate().partition(|(i, _)| victims.contains(i));
    let mut survivors: Vec<Proc<Seen>> = survivors.into_iter().map(|(_, p)| p).collect();
    join_all_ok(&mut survivors);
    for (v, mut p) in dead {
        assert_eq!(kill_and_reap(&mut *p), Some(-libc::SIGKILL), "run {run}: consumer {v} had stopped");
        stats.killed += 1;
        stats.zombies += u32::from(zombie);
    }

    let counts = counts.to_vec().unwrap();
    let twice = not_exactly_once(&counts, N).into_iter().filter(|(_, _, c)| *c > 1).collect::<Vec<_>>();
    let lost: usize = counts.iter().map(|c| usize::from(*c == 0)).sum();
    assert!(twice.is_empty(), "run {run}: delivered more than once: {twice:?}");
    assert!(lost <= victims.len(), "run {run}: {lost} messages lost with {} consumers killed", victims.len());
    for m in &at_head {
        let n = counts[(m.producer * N + m.seq) as usize];
        assert_eq!(
            n, 1,
            "run {run}: the message at the head when a consumer died ({}, {}) delivered {n} times",
            m.producer, m.seq
        );
    }
    assert!(q.is_empty(), "run {run}");
    let over = q.len();
    assert!(over <= victims.len(), "run {run}: len() is {over} after the drain");
    assert_eq!((word(&map, PRODUCER_LOCK_AT), word(&map, CONSUMER_LOCK_AT)), (0, 0), "run {run}: a lock left held");
    stats.held_lock += held;
    stats.lost += lost as u32;
    stats.overcount += over as u32;
    stats.runs += 1;
    drop((q, map));
}

#[test]
fn consumers_killed_at_random_points_lose_at_most_one_message_each() {
    let start = Instant::now();
    let mut stats = CrashStats::default();
    for run in 0..30 {
        consumer_crash_run(run, &mut stats);
    }
    stats.report("consumers killed", start.elapsed());
    assert!(stats.held_lock > 0, "no consumer died holding its lock: the aimed kills test nothing");
    assert_no_leftovers("oq-crash-cons");
}

/// A child that sleeps until killed (a live lock owner).
fn sleeper() -> Proc<()> {
    start(Fork, || std::thread::sleep(WATCHDOG))
}

/// Lock words naming a dead owner (a tid no task has, with or without the
/// waiters bit; junk bits) are taken over by every kind of put and get: at once by the
/// non-blocking ones (they probe the owner), within a probe slice by the
/// blocking ones. A live owner is waited for, not taken over. The forged
/// dead producer also left what a producer killed mid-put leaves: its put
/// counted (items, unfinished) and a half-written record after the tail,
/// which the next producer writes over.
#[test]
fn a_dead_lock_owner_is_taken_over_and_a_live_one_waited_for() {
    const TAG: &str = "oq-forged";
    for forged in [GHOST, JUNK_BIT | 5, 1 << 31 | GHOST] {
        for blocking in [false, true] {
            let what = format!("owner word {forged:#x}, blocking {blocking}");
            let name = unique_name(TAG);
            let q = JoinableQueue::<RawBytes>::create(&name, 256).unwrap();
            let map = map_checked(&name, 256);
            map.u32_at(PRODUCER_LOCK_AT).store(forged, Ordering::SeqCst);
            map.u64_at(PUTS_AT).fetch_add(1, Ordering::SeqCst);
            map.u64_at(TASKS_AT).fetch_add(1, Ordering::SeqCst);
            // Its put was in flight at tail 0 (`pending` = 1 + tail, after
            // the lock on the producers' line).
            map.u64_at(PENDING_AT).store(1, Ordering::SeqCst);
            store64(&map, DATA_AT, record_header(u64::from(u32::MAX), MSG));
            store64(&map, DATA_AT + 8, u64::MAX);
            let t = Instant::now();
            let r = if blocking { q.put(raw(b"after")) } else { q.try_put(raw(b"after")) };
            let took = t.elapsed();
            r.unwrap_or_else(|e| panic!("{what}: {e:?}"));
            assert_eq!(word(&map, PRODUCER_LOCK_AT), 0, "{what}: released after the takeover");
            assert!(q.as_queue().len() <= 2, "{what}");
            map.u32_at(CONSUMER_LOCK_AT).store(forged, Ordering::SeqCst);
            let r = if blocking { q.get() } else { q.try_get() };
            assert_eq!(r.unwrap(), raw(b"after"), "{what}: the half-written record was overwritten");
            assert_eq!(word(&map, CONSUMER_LOCK_AT), 0, "{what}");
            assert!(matches!(q.try_get(), Err(GetError::Empty)), "{what}");
            // The producer that took the lock over took the dead put's
            // counts back: exact again.
            assert!(q.as_queue().is_empty());
            assert_eq!(q.as_queue().len(), 0, "{what}");
            q.task_done().unwrap();
            assert_eq!(q.unfinished(), 0, "{what}");
            assert!(q.join_timeout(Duration::ZERO), "{what}");
            if blocking {
                eprintln!("{what}: the blocking put took the lock over in {took:?}");
            }
            drop((q, map));
        }
    }
    // A live owner (a sleeping child, or this very thread: the word cannot
    // be right, but nothing says who wrote it) is waited for until the
    // timeout, and taken over once it is dead.
    let name = unique_name(TAG);
    let q = ObjectQueue::<RawBytes>::create(&name, 256).unwrap();
    let map = map_checked(&name, 256);
    let mut live = sleeper();
    let pid = live.pid().unwrap();
    let wait = Duration::from_millis(60);
    for at in [PRODUCER_LOCK_AT, CONSUMER_LOCK_AT] {
        for owner_tid in [pid, gettid()] {
            map.u32_at(at).store(owner_tid, Ordering::SeqCst);
            let t = Instant::now();
            if at == PRODUCER_LOCK_AT {
                assert!(matches!(q.put_timeout(raw(b"x"), wait), Err(PutError::Timeout(_))));
                assert!(matches!(q.try_put(raw(b"x")), Err(PutError::Full(_))));
            } else {
                assert!(matches!(q.get_timeout(wait), Err(GetError::Timeout)));
                assert!(matches!(q.try_get(), Err(GetError::Empty)));
            }
            assert!(t.elapsed() >= wait);
            assert_eq!(owner(&map, at), owner_tid, "a live owner's lock was taken");
        }
        map.u32_at(at).store(pid, Ordering::SeqCst);
    }
    let getter = {
        let q = q.clone();
        std::thread::spawn(move || q.get_timeout(WATCHDOG))
    };
    kill_and_reap(&mut *live);
    q.put_timeout(raw(b"once dead"), WATCHDOG).unwrap();
    assert_eq!(join_thread(getter).unwrap(), raw(b"once dead"));
    drop((q, map));
    assert_no_leftovers(TAG);
}

// ---------------------------------------------------------------------------
// Garbage
// ---------------------------------------------------------------------------

/// Runs `f` on a fresh named queue of `capacity` bytes (with `map` on its
/// file), in a forked child under the watchdog: a panic, a crash or a hang
/// fails the test.
fn with_garbage<T: Serialize + DeserializeOwned>(capacity: usize, f: impl FnOnce(&ObjectQueue<T>, &ShmMap)) {
    let name = unique_name("oq-garbage-state");
    let q = ObjectQueue::<T>::create(&name, capacity).unwrap();
    let map = map_checked(&name, capacity);
    in_child(|| f(&q, &map));
}

/// Every kind of get and put on the queue gives `Corrupt` (a put hands its
/// value back), none waits, and the snapshots do not panic.
fn all_corrupt(what: &str, q: &ObjectQueue<Vec<u8>>) {
    assert!(is_corrupt_get(&q.try_get()), "{what}: try_get");
    assert!(is_corrupt_get(&q.get()), "{what}: a blocking get gives up");
    assert!(is_corrupt_get(&q.get_timeout(WATCHDOG)), "{what}: get_timeout");
    let v = vec![1u8, 2, 3];
    assert!(is_corrupt_put(&q.try_put(v.clone()), &v), "{what}: try_put");
    assert!(is_corrupt_put(&q.put(v.clone()), &v), "{what}: a blocking put gives up");
    assert!(is_corrupt_put(&q.put_timeout(v.clone(), WATCHDOG), &v), "{what}: put_timeout");
    let _ = (q.len(), q.is_empty(), q.is_full(), q.is_closed(), format!("{q:?}"));
}

/// Every kind of get gives `Corrupt`, and keeps giving it (the bad record
/// is not skipped); none waits.
fn gets_corrupt(what: &str, q: &ObjectQueue<Vec<u8>>) {
    for _ in 0..2 {
        assert!(is_corrupt_get(&q.try_get()), "{what}: try_get");
        assert!(is_corrupt_get(&q.get()), "{what}: get");
        assert!(is_corrupt_get(&q.get_timeout(WATCHDOG)), "{what}: get_timeout");
    }
    let _ = (q.len(), q.is_empty(), q.is_full(), format!("{q:?}"));
}

#[test]
fn impossible_ring_states_are_corrupt_errors_not_hangs() {
    const CAP: usize = 256;
    // Positions more than the capacity apart, either way; unaligned.
    for (tail, head) in [(CAP as u64 + 8, 0), (0, 8), (12, 0), (16, 4), (u64::MAX - 7, 16)] {
        with_garbage::<Vec<u8>>(CAP, |q, map| {
            set_positions(map, head, tail);
            all_corrupt(&format!("tail {tail}, head {head}"), q);
        });
    }
    // Records that cannot be: each published as 16 bytes at the head.
    // Records that cannot be: (what, where, header, bytes published from there).
    let records: [(&str, usize, u64, u64); 7] = [
        ("a tag that is neither MSG nor PAD", 0, record_header(3, 0xdead_beef), 16),
        ("a zero header", 8, 0, 16),
        ("a message longer than what was published", 0, record_header(100, MSG), 16),
        ("a message running past the region", 0, record_header(u64::from(u32::MAX), MSG), 16),
        ("a PAD that does not end at the region's end", 0, record_header(8, PAD), 16),
        ("a PAD longer than what was published", CAP - 16, record_header(8, PAD), 8),
        ("a PAD followed by junk at offset 0", CAP - 16, record_header(8, PAD), 32),
    ];
    for (what, at, header, published) in records {
        with_garbage::<Vec<u8>>(CAP, |q, map| {
            set_positions(map, at as u64, at as u64 + published);
            store64(map, DATA_AT + at, header);
            store64(map, DATA_AT, if at == 0 { header } else { record_header(1, 0x1234) });
            gets_corrupt(what, q);
            // The producers' side does not read records: a put still works.
            q.try_put(vec![7]).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        });
    }
    // A record that is fine but does not decode as the queue's type: that
    // message is consumed and reported, the next one comes through.
    with_garbage::<String>(CAP, |q, map| {
        store64(map, DATA_AT, record_header(3, MSG));
        store64(map, DATA_AT + 8, u64::from_le_bytes([2, 0xff, 0xfe, 0, 0, 0, 0, 0]));
        set_positions(map, 0, 16);
        q.try_put("next".into()).unwrap();
        assert!(matches!(q.get(), Err(GetError::Failed(e)) if matches!(*e, Error::Codec { .. })));
        assert_eq!(q.get().unwrap(), "next");
    });
    // Plausible but false: in-bounds wrong data.
    with_garbage::<Vec<u8>>(CAP, |q, map| {
        store64(map, DATA_AT, record_header(3, MSG));
        store64(map, DATA_AT + 8, u64::from_le_bytes([2, 7, 8, 0, 0, 0, 0, 0]));
        set_positions(map, 0, 16);
        assert_eq!(q.get().unwrap(), vec![7, 8]);
        assert!(matches!(q.try_get(), Err(GetError::Empty)));
    });
    // Control and counts: junk closes, or only costs wakes or a wrong len.
    with_garbage::<Vec<u8>>(CAP, |q, map| {
        for at in [CLOSED_AT + 4, CLOSED_AT + 8, CLOSED_AT + 12, CLOSED_AT + 16, ALL_DONE_AT, ALL_DONE_AT + 4] {
            map.u32_at(at).store(u32::MAX, Ordering::SeqCst);
        }
        store64(map, PUTS_AT, u64::MAX);
        store64(map, GETS_AT, 1 << 40);
        q.put(vec![1]).unwrap();
        assert_eq!(q.get().unwrap(), vec![1]);
        assert!(q.is_empty(), "emptiness comes from the positions");
        let _ = q.len();
        assert!(matches!(q.get_timeout(Duration::from_millis(5)), Err(GetError::Timeout)));
        map.u32_at(CLOSED_AT).store(0xDEAD_BEEF, Ordering::SeqCst);
        assert!(q.is_closed());
        assert!(matches!(q.put(vec![2]), Err(PutError::Closed(v)) if v == [2]));
        assert!(matches!(q.get(), Err(GetError::Closed)));
    });
    with_garbage::<u8>(CAP, |q, map| {
        let name = q.name().unwrap().to_owned();
        let j = JoinableQueue::<u8>::open(&name).unwrap();
        store64(map, TASKS_AT, u64::MAX);
        j.task_done().unwrap();
        assert!(!j.join_timeout(Duration::from_millis(2)));
        store64(map, TASKS_AT, 0);
        assert!(j.task_done().is_err(), "done (1) is past tasks (0)");
        assert!(j.join_timeout(Duration::ZERO));
        assert_eq!(j.unfinished(), 0);
    });
    assert_no_leftovers("oq-garbage-state");
}

/// Garbage in the segment header: a data region that is not a power of two
/// or too small, no type fingerprint, another one, a payload shorter than
/// the state. Every open is a `Mismatch`, never a panic.
#[test]
fn header_garbage_is_a_mismatch_on_open() {
    const TAG: &str = "oq-garbage-header";
    let cases: [(&str, usize, u64, &str); 5] = [
        ("data region of 100 bytes", PAYLOAD_LEN_AT, (STATE_LEN + 100) as u64, "queue layout"),
        ("data region of 32 bytes", PAYLOAD_LEN_AT, (STATE_LEN + 32) as u64, "queue layout"),
        ("payload shorter than the state", PAYLOAD_LEN_AT, 100, "payload length"),
        ("no fingerprint", TYPE_FP_AT, 0, "queue layout"),
        ("another fingerprint", TYPE_FP_AT, 0x1234_5679, "element type"),
    ];
    for (what, at, value, field) in cases {
        let name = unique_name(TAG);
        let q = ObjectQueue::<String>::create(&name, 256).unwrap();
        scribble(&name, at as u64, &value.to_le_bytes());
        in_child(|| {
            assert_mismatch(what, ObjectQueue::<String>::open(&name), &[field]);
            assert_mismatch(what, JoinableQueue::<String>::open(&name), &[field]);
        });
        drop(q);
    }
    let name = unique_name(TAG);
    let q = ObjectQueue::<String>::create(&name, 256).unwrap();
    scribble(&name, KIND_AT as u64, &11u32.to_le_bytes());
    assert_mismatch("kind", ObjectQueue::<String>::open(&name), &["kind", "ObjectQueue", "Queue"]);
    drop(q);
    assert_no_leftovers(TAG);
}

/// In a child: writes garbage over the named queue's state and data region,
/// forever: positions near the real ones (moved by a few records, unaligned,
/// swapped) or random; record headers (MSG, PAD or junk tags; small,
/// to-the-end, absurd lengths), often at the head; payload bytes; lock words
/// (junk bits, dead tids, the operator's tid, a live tid: its own); counts;
/// the closed word (mostly reopened) and the sides.
fn scribbler((name, victim, capacity, seed): (String, u32, usize, u64)) {
    let map = ShmMap::open(&name);
    let mut rng = XorShift::new(seed);
    let me = std::process::id();
    let cap = capacity as u64;
    for i in 0u64.. {
        let r = rng.next_u64();
        let (tail, head) = (load64(&map, TAIL_AT), load64(&map, HEAD_AT));
        match r % 12 {
            0 | 1 => {
                // A published position or one of the sides' copies.
                let at = [TAIL_AT, HEAD_AT, WRITER_AT, WRITER_AT + 8, READER_AT, READER_AT + 8][(r >> 4) as usize % 6];
                let tail_like = matches!(at, TAIL_AT | WRITER_AT) || at == READER_AT + 8;
                let base = if tail_like { tail } else { head };
                let v = match (r >> 8) % 5 {
                    0 => base.wrapping_add((r >> 16) % 9 * 8).wrapping_sub(32),
                    1 => base.wrapping_add((r >> 16) % 7 + 1),
                    2 => rng.next_u64(),
                    3 => {
                        if tail_like {
                            head
                        } else {
                            tail
                        }
                    }
                    _ => base.wrapping_add(cap),
                };
                store64(&map, at, v);
            }
            2..=5 => {
                let off = if r & 32 == 0 { (head % cap) & !7 } else { rng.next_u64() % (cap / 8) * 8 };
                let tag = [MSG, MSG, PAD, rng.next_u64() >> 32][((r >> 8) % 4) as usize];
                let len = match (r >> 16) % 5 {
                    0 => rng.next_u64() % 64,
                    1 => (cap - off).saturating_sub(8),
                    2 => u64::from(u32::MAX),
                    3 => rng.next_u64() % cap,
                    _ => rng.next_u64() & 0xffff_ffff,
                };
                store64(&map, DATA_AT + off as usize, record_header(len, tag));
            }
            6 => store64(&map, DATA_AT + (rng.next_u64() % (cap / 8) * 8) as usize, rng.next_u64()),
            7 => {
                let at = if r & 16 == 0 { PRODUCER_LOCK_AT } else { CONSUMER_LOCK_AT };
                let v = [JUNK_BIT | 3, GHOST, victim, me, 0, 1 << 31 | victim, rng.next_u64() as u32]
                    [((r >> 8) % 7) as usize];
                map.u32_at(at).store(v, Ordering::SeqCst);
                if r & 64 == 0 {
                    store64(&map, at + 8, rng.next_u64());
                }
            }
            8 => {
                let at = [PUTS_AT, GETS_AT, TASKS_AT, DONE_AT][((r >> 8) % 4) as usize];
                store64(&map, at, [0, 1, u64::MAX, rng.next_u64()][((r >> 16) % 4) as usize]);
            }
            9 => map.u32_at(CLOSED_AT).store(u32::from(r % 7 == 0), Ordering::SeqCst),
            10 => {
                let at = [CLOSED_AT + 4, CLOSED_AT + 8, CLOSED_AT + 12, CLOSED_AT + 16, ALL_DONE_AT, ALL_DONE_AT + 4]
                    [((r >> 8) % 6) as usize];
                map.u32_at(at).store(rng.next_u64() as u32, Ordering::SeqCst);
            }
            _ => {
                let words = (DATA_AT - TAIL_AT) / 8;
                store64(&map, TAIL_AT + (rng.next_u64() as usize % words) * 8, 0);
            }
        }
        if i % 8 == 0 {
            std::thread::yield_now();
        }
    }
}

/// What the operator saw under fire.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy)]
struct Fire {
    ok: u32,
    corrupt: u32,
    other_errors: u32,
}

/// In a child: operates the queue (non-blocking and timed calls, through an
/// `ObjectQueue` and a `JoinableQueue` handle) while the scribbler writes.
/// Every call must return; gets give data (any in-bounds bytes) or an
/// error; a too-large put is refused whatever the state says (its size
/// check reads nothing shared).
fn operate((name, ops, seed): (String, u32, u64)) -> Fire {
    let q = ObjectQueue::<Vec<u8>>::open(&name).unwrap();
    let j = JoinableQueue::<Vec<u8>>::open(&name).unwrap();
    let (cap, max) = (q.capacity(), q.max_message());
    let mut rng = XorShift::new(seed);
    let t = Duration::from_millis(1);
    let mut fire = Fire::default();
    for _ in 0..ops {
        let small = vec![rng.next_u64() as u8; rng.next_u64() as usize % (max / 2)];
        let outcome: Result<(), Option<Error>> = match rng.next_u64() % 10 {
            0 => q.try_put(small).map_err(|e| Some(e.into())),
            1 => q.put_timeout(small, t).map_err(|e| Some(e.into())),
            2 => q.try_get().map(|v| assert!(v.len() < cap)).map_err(|e| Some(e.into())),
            3 => q.get_timeout(t).map(|v| assert!(v.len() < cap)).map_err(|e| Some(e.into())),
            4 => {
                let _ = (q.len(), q.is_empty(), q.is_full(), q.is_closed(), format!("{q:?}"), j.unfinished());
                Ok(())
            }
            5 => j.task_done().map_err(Some),
            6 => j.join_timeout(t).then_some(()).ok_or(None),
            7 => match q.try_put(vec![0; max + 1]) {
                Err(PutError::Failed(back, err)) if back.len() == max + 1 && matches!(*err, Error::TooLarge { .. }) => {
                    Ok(())
                }
                Err(PutError::Closed(back)) if back.len() == max + 1 => Ok(()),
                // The size is known once the value is encoded, under the
                // producers' lock, which garbage may show as held.
                Err(PutError::Full(back)) if back.len() == max + 1 => Ok(()),
                other => panic!("a too-large put under garbage: {other:?}"),
            },
            8 => q.clone().try_get().map(drop).map_err(|e| Some(e.into())),
            _ => {
                assert_eq!((q.capacity(), q.max_message()), (cap, max), "fixed at open");
                Ok(())
            }
        };
        match outcome {
            Ok(()) => fire.ok += 1,
            Err(Some(Error::Corrupt { .. })) => fire.corrupt += 1,
            Err(_) => fire.other_errors += 1,
        }
    }
    fire
}

#[test]
fn garbage_written_while_operating_gives_errors_or_data_never_a_crash_or_hang() {
    const TAG: &str = "oq-garbage-live";
    let mut total = Fire::default();
    for seed in 1..=3u64 {
        let capacity = [64, 256, 1024][seed as usize % 3];
        let name = unique_name(TAG);
        let q = ObjectQueue::<Vec<u8>>::create(&name, capacity).unwrap();
        let mut op = start_fn(Fork, operate, (name.clone(), 3000, seed));
        let victim = op.pid().unwrap();
        let mut scribbler = start_fn(Fork, scribbler, (name.clone(), victim, capacity, seed));
        let fire = join_ok(&mut op);
        assert!(scribbler.is_alive(), "the scribbler stopped: {:?}", scribbler.0.join_timeout(WATCHDOG));
        kill_and_reap(&mut *scribbler);
        assert_eq!(fire.ok + fire.corrupt + fire.other_errors, 3000);
        total.ok += fire.ok;
        total.corrupt += fire.corrupt;
        total.other_errors += fire.other_errors;
        drop(q);
    }
    eprintln!("ObjectQueue under a scribbler: {total:?}");
    assert!(total.corrupt > 0, "no Corrupt error: the scribbler wrote nothing that mattered");
    assert!(total.ok > 0);
    assert_no_leftovers(TAG);
}
