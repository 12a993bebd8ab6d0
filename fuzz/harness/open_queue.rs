//! The `open_queue` fuzz harness: arbitrary queue state in a valid segment.
//!
//! The first input byte picks the queue type (modulo 3: [`kind`]) and, from
//! `(byte / 3) % 2`, how the rest becomes the payload:
//! - 0 (raw): the rest is the whole payload (ring header, control line,
//!   slots or data region), whatever its length;
//! - 1 (shaped): the next byte picks a valid size ([`shaped_len`]) and the
//!   rest becomes a payload of that size ([`shaped_payload`]). For a
//!   `SpscQueue` or an `ObjectQueue`, the rest is the payload, cut or
//!   zero-filled to the size. A `Queue`'s state is 33 KB, nearly all of it
//!   claim records (256 per side), which a flat copy of a fuzzer's few
//!   hundred bytes would never get past; so the rest is scattered over the
//!   parts that matter, in this order ([`mpmc_regions`]): the two indices (payload 0..128), every
//!   slot, the first [`SHAPED_RECORDS`] records of the producers' table, the
//!   first [`SHAPED_RECORDS`] of the consumers' table, the control line. Each
//!   part takes the input's next bytes (as many as it has: a short input
//!   fills the first parts only), the rest of the payload is zero, and bytes
//!   past the last part are ignored.
//!
//! The file is a ready segment header (magic, version 1, the type's kind and
//! element type fingerprint, the payload's real length) and that payload. It
//! must open as its own type exactly when the payload's length fits it (always
//! when shaped), and as no other type; what opens gets `try_get`, `try_put`,
//! `get_timeout(1 ms)`, `put_timeout(1 ms)`, `len`, `is_empty`, `is_full` a
//! few times, then `close` and the same again. Whatever the ring holds, that
//! must neither crash, nor panic, nor read or write out of bounds
//! (`AddressSanitizer` watches), nor hang: garbage gives errors or in-bounds
//! data, a refused put hands its value back, and a closed queue refuses every
//! put.
//!
//! Shared by the cargo-fuzz target (`fuzz/fuzz_targets/open_queue.rs`) and the
//! corpus replay test (`tests/fuzz_corpus.rs`).

use std::time::Duration;

use shmproc::segment::HEADER_LEN;
use shmproc::{Error, GetError, JoinableQueue, ObjectQueue, PutError, Queue, SpscQueue};

use crate::shm_file::ShmFile;

/// Every timed operation waits this long at most.
const TICK: Duration = Duration::from_millis(1);

/// Rounds of operations before and after the close.
const ROUNDS: usize = 3;

/// Gets at most, draining after the close.
const DRAIN: usize = 40;

/// The queue types (first byte modulo 3), and their segment kinds.
pub(crate) mod kind {
    /// `SpscQueue<u64>`, segment kind 10.
    pub(crate) const SPSC: u8 = 0;
    /// `Queue<u64>`, segment kind 11.
    pub(crate) const QUEUE: u8 = 1;
    /// `ObjectQueue<Vec<u8>>`, segment kind 12.
    pub(crate) const OBJECT: u8 = 2;
}

/// Raw payload (mode 0) or shaped (mode 1): `byte0 = type + 3 * mode`.
pub(crate) const SHAPED: u8 = 3;

/// Bytes before the slots of a `Queue`: `enqueue` and `dequeue` on cache
/// lines of their own, the producers' and the consumers' claim records, then
/// the control line.
pub(crate) const MPMC_STATE: usize = MPMC_CONTROL + 64;
/// Payload offset of a `Queue`'s producers' claim records (after the two
/// indices); the consumers' follow them. A record is a line: `owner` (a task
/// stamp, `start_time << 22 | tid`; 0: free) at +0, `pos` (the position
/// claimed, plus one; 0: none) at +8.
pub(crate) const PRODUCERS_AT: usize = 128;
/// Payload offset of a `Queue`'s consumers' claim records.
pub(crate) const CONSUMERS_AT: usize = PRODUCERS_AT + CLAIMS * RECORD;
/// Payload offset of a `Queue`'s control line.
const MPMC_CONTROL: usize = CONSUMERS_AT + CLAIMS * RECORD;
/// Claim records per side of a `Queue`.
pub(crate) const CLAIMS: usize = 256;
/// A claim record: one cache line.
pub(crate) const RECORD: usize = 64;
/// Records of each table that a shaped `Queue` input reaches.
pub(crate) const SHAPED_RECORDS: usize = 4;
/// Bytes before the slots of a `SpscQueue`: the two published positions,
/// each side's private copy of its own, then the control line.
pub(crate) const SPSC_STATE: usize = 320;
/// Payload offset of the control line (`closed`, then the sleepers' sides).
#[allow(dead_code, reason = "for tests/fuzz_corpus.rs, which writes the seeds")]
pub(crate) fn control_at(ty: u8) -> usize {
    // SPSC and byte rings: two published positions and two private lines.
    if ty % 3 == kind::QUEUE { MPMC_CONTROL } else { SPSC_STATE - 64 }
}

/// Bytes before an `ObjectQueue`'s data region: ring positions and each
/// side's copies, control line, the producers' and the consumers' lines, the
/// counts.
pub(crate) const OBJECT_STATE: usize = 512;
/// A `SpscQueue<u64>` slot: the element.
pub(crate) const SPSC_SLOT: usize = 8;
/// A `Queue<u64>` slot: its stamp (`lap << 1 | full`), then the element.
pub(crate) const MPMC_SLOT: usize = 16;
/// The smallest `ObjectQueue` data region.
pub(crate) const MIN_REGION: usize = 64;

/// The segment kind code of queue type `ty`.
pub(crate) fn kind_code(ty: u8) -> u32 {
    10 + u32::from(ty % 3)
}

/// The element type fingerprint of queue type `ty`, as the crate computes it
/// (`type_fingerprint` in `src/channel/mod.rs`; the replay test checks it
/// against real queues): FNV-1a of the type's name, size and alignment, with
/// the low bit set.
pub(crate) fn fingerprint(ty: u8) -> u64 {
    fn of<T>() -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let sizes = [size_of::<T>() as u64, align_of::<T>() as u64];
        let name = std::any::type_name::<T>().bytes();
        for b in name.chain(sizes.iter().flat_map(|s| s.to_le_bytes())) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h | 1
    }
    match ty % 3 {
        kind::SPSC | kind::QUEUE => of::<u64>(),
        _ => of::<Vec<u8>>(),
    }
}

/// The payload length of a shaped input whose size byte is `size`: 1 to 32
/// slots, or a data region of 64 to 2048 bytes.
pub(crate) fn shaped_len(ty: u8, size: u8) -> usize {
    let e = u32::from(size % 6);
    match ty % 3 {
        kind::SPSC => SPSC_STATE + SPSC_SLOT * (1 << e),
        kind::QUEUE => MPMC_STATE + MPMC_SLOT * (1 << e),
        _ => OBJECT_STATE + (MIN_REGION << e),
    }
}

/// Where a shaped `Queue` input of `slots` slots puts its bytes, in input
/// order: (payload offset, length) of the indices, the slots, the first
/// [`SHAPED_RECORDS`] producers' and consumers' records and the control line
/// (see the module docs).
pub(crate) fn mpmc_regions(slots: usize) -> [(usize, usize); 5] {
    [
        (0, PRODUCERS_AT),
        (MPMC_STATE, slots * MPMC_SLOT),
        (PRODUCERS_AT, SHAPED_RECORDS * RECORD),
        (CONSUMERS_AT, SHAPED_RECORDS * RECORD),
        (MPMC_CONTROL, 64),
    ]
}

/// The payload of a shaped input of queue type `ty` whose size byte is
/// `size` and whose remaining bytes are `rest` (see the module docs).
pub(crate) fn shaped_payload(ty: u8, size: u8, rest: &[u8]) -> Vec<u8> {
    let len = shaped_len(ty, size);
    if ty % 3 != kind::QUEUE {
        let mut p = rest[..rest.len().min(len)].to_vec();
        p.resize(len, 0);
        return p;
    }
    let mut p = vec![0; len];
    let mut rest = rest;
    for (at, n) in mpmc_regions((len - MPMC_STATE) / MPMC_SLOT) {
        let (part, after) = rest.split_at(n.min(rest.len()));
        p[at..at + part.len()].copy_from_slice(part);
        rest = after;
    }
    p
}

/// Whether a payload of `len` bytes holds a queue of type `ty`: the state,
/// then a power-of-two number of slots (a power-of-two data region of at
/// least 64 bytes).
pub(crate) fn fits(ty: u8, len: usize) -> bool {
    let slots = |state: usize, slot: usize| {
        len.checked_sub(state).is_some_and(|tail| tail % slot == 0 && (tail / slot).is_power_of_two())
    };
    match ty % 3 {
        kind::SPSC => slots(SPSC_STATE, SPSC_SLOT),
        kind::QUEUE => slots(MPMC_STATE, MPMC_SLOT),
        _ => len.checked_sub(OBJECT_STATE).is_some_and(|r| r >= MIN_REGION && r.is_power_of_two()),
    }
}

/// A ready segment header for a queue of type `ty` with a `payload_len`-byte payload.
pub(crate) fn header(ty: u8, payload_len: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(b"SHMPROC\0");
    h.extend_from_slice(&2u32.to_le_bytes()); // layout version
    h.extend_from_slice(&kind_code(ty).to_le_bytes());
    h.extend_from_slice(&fingerprint(ty).to_le_bytes());
    h.extend_from_slice(&(payload_len as u64).to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // creator pid: none
    h.extend_from_slice(&1u32.to_le_bytes()); // init state: ready
    h.resize(HEADER_LEN, 0); // creator start time, reserved
    h
}

/// Runs one input (the fuzz target's entry point).
#[allow(dead_code, reason = "the replay test calls `exercise` to see what opened")]
pub(crate) fn run(data: &[u8]) {
    exercise(data);
}

/// Runs one input; returns the types it opened as.
pub(crate) fn exercise(data: &[u8]) -> Vec<&'static str> {
    let Some((&first, rest)) = data.split_first() else { return Vec::new() };
    let ty = first % 3;
    let payload = if (first / SHAPED) % 2 == 1 {
        let (size, rest) = rest.split_first().map_or((0, &[][..]), |(s, r)| (*s, r));
        shaped_payload(ty, size, rest)
    } else {
        rest.to_vec()
    };
    let mut file = header(ty, payload.len());
    file.extend_from_slice(&payload);
    let shm = ShmFile::write(&file);
    let opened = open_as_every_queue(&shm.name, ty, payload.len());
    drop(shm);
    opened
}

/// Runs the operations on an opened `SpscQueue<u64>` or `Queue<u64>` whose
/// payload is `$len` bytes (a macro: the two share no trait). `$drains`: a get
/// on the closed queue never reports `Empty` (an SPSC queue; a `Queue` reports
/// `Empty` instead while a put is half-way at the head: an empty slot at
/// `dequeue` below `enqueue`, as garbage may say, whose claimant is live or not
/// probed yet).
macro_rules! fixed {
    ($q:expr, $len:expr, $state:expr, $slot:expr, $drains:expr) => {{
        let q = $q;
        let slots = ($len - $state) / $slot;
        assert_eq!(q.capacity(), slots, "capacity");
        let _ = (format!("{q:?}"), q.name());
        let mut v = 0x5eed_0000_u64;
        for round in 0..2 * ROUNDS + 2 {
            if round == ROUNDS {
                q.close();
                assert!(q.is_closed(), "closed, yet is_closed is false");
            }
            if round == ROUNDS + 1 {
                for _ in 0..DRAIN {
                    match q.try_get() {
                        Ok(_) => {}
                        Err(GetError::Empty) if $drains => panic!("try_get on a closed queue gave Empty"),
                        Err(_) => break,
                    }
                }
            }
            let closed = q.is_closed();
            assert!(q.len() <= q.capacity(), "len {} of {}", q.len(), q.capacity());
            let _ = (q.is_empty(), q.is_full());
            match q.try_get() {
                Err(GetError::Empty) if closed && $drains => panic!("try_get on a closed queue gave Empty"),
                Err(GetError::Timeout) => panic!("try_get timed out"),
                _ => {}
            }
            v += 1;
            refused(q.try_put(v), &v, closed);
            if round % 2 == 0 {
                let _ = q.get_timeout(TICK);
                v += 1;
                refused(q.put_timeout(v, TICK), &v, closed);
            }
        }
        let _ = (q.len(), format!("{q:?}"));
    }};
}

fn open_as_every_queue(name: &str, ty: u8, len: usize) -> Vec<&'static str> {
    let mut opened = Vec::new();
    let fits = fits(ty, len);
    let expect = |want: u8, what: &str, r: Result<(), Error>| {
        let should = want == ty && fits;
        assert_eq!(r.is_ok(), should, "a {len}-byte payload of kind {} opened as {what}: {r:?}", kind_code(ty));
    };
    // Same sizes, other fingerprints: never.
    expect(u8::MAX, "Queue<i64>", Queue::<i64>::open(name).map(drop));
    expect(u8::MAX, "SpscQueue<i64>", SpscQueue::<i64>::open(name).map(drop));
    expect(u8::MAX, "ObjectQueue<u64>", ObjectQueue::<u64>::open(name).map(drop));
    let spsc = SpscQueue::<u64>::open(name);
    expect(kind::SPSC, "SpscQueue<u64>", spsc.as_ref().map(drop).map_err(clone_error));
    if let Ok(q) = spsc {
        opened.push("SpscQueue");
        fixed!(q, len, SPSC_STATE, SPSC_SLOT, true);
    }
    let mpmc = Queue::<u64>::open(name);
    expect(kind::QUEUE, "Queue<u64>", mpmc.as_ref().map(drop).map_err(clone_error));
    if let Ok(q) = mpmc {
        opened.push("Queue");
        fixed!(q, len, MPMC_STATE, MPMC_SLOT, false);
    }
    let object = ObjectQueue::<Vec<u8>>::open(name);
    expect(kind::OBJECT, "ObjectQueue<Vec<u8>>", object.as_ref().map(drop).map_err(clone_error));
    if let Ok(q) = object {
        opened.push("ObjectQueue");
        self::object(&q, len);
    }
    let joinable = JoinableQueue::<Vec<u8>>::open(name);
    expect(kind::OBJECT, "JoinableQueue<Vec<u8>>", joinable.as_ref().map(drop).map_err(clone_error));
    if let Ok(q) = joinable {
        opened.push("JoinableQueue");
        self::joinable(&q);
    }
    opened
}

/// An error's text, as an error (they are not `Clone`).
fn clone_error(e: &Error) -> Error {
    Error::Codec { detail: e.to_string() }
}

/// A refused put must hand `v` back; on a closed queue, it must be refused as
/// `Closed`.
fn refused<T: PartialEq + std::fmt::Debug>(r: Result<(), PutError<T>>, v: &T, closed: bool) {
    match r {
        Ok(()) => assert!(!closed, "a put into a closed queue succeeded"),
        Err(e) => {
            let what = format!("{e:?} ({e})");
            let is_closed = matches!(e, PutError::Closed(_));
            assert_eq!(&e.into_inner(), v, "{what} handed back another value");
            assert!(is_closed || !closed, "a put into a closed queue gave {what}");
        }
    }
}

/// Runs the operations on an opened `ObjectQueue<Vec<u8>>` whose payload is
/// `len` bytes: every message read lies inside the ring; a message larger
/// than `max_message` is refused as `TooLarge` (or `Closed`).
fn object(q: &ObjectQueue<Vec<u8>>, len: usize) {
    assert_eq!(q.capacity(), len - OBJECT_STATE, "capacity");
    assert_eq!(q.max_message(), q.capacity() / 2 - 8, "max_message");
    let _ = (format!("{q:?}"), q.name());
    let got = |r: Result<Vec<u8>, GetError>| match r {
        Ok(m) => assert!(m.len() <= q.capacity(), "a {}-byte message out of a {}-byte ring", m.len(), q.capacity()),
        Err(GetError::Failed(e)) => {
            let _ = e.to_string();
        }
        Err(_) => {}
    };
    let mut n = 0u8;
    for round in 0..2 * ROUNDS + 2 {
        if round == ROUNDS {
            q.close();
            assert!(q.is_closed(), "closed, yet is_closed is false");
        }
        if round == ROUNDS + 1 {
            for _ in 0..DRAIN {
                match q.try_get() {
                    Ok(m) => got(Ok(m)),
                    Err(_) => break,
                }
            }
        }
        let closed = q.is_closed();
        let _ = (q.len(), q.is_empty(), q.is_full());
        got(q.try_get());
        n = n.wrapping_add(1);
        let v = vec![n; usize::from(n) % 24];
        refused(q.try_put(v.clone()), &v, closed);
        let big = vec![n; q.capacity()];
        match q.try_put(big.clone()) {
            Err(PutError::Closed(b)) if closed => assert_eq!(b, big),
            // The size is known once the value is encoded, under the
            // producers' lock, which garbage may show as held.
            Err(PutError::Full(b)) => assert_eq!(b, big),
            Err(PutError::Failed(b, err)) if !closed && matches!(*err, Error::TooLarge { .. }) => {
                let Error::TooLarge { size, limit } = *err else { unreachable!() };
                assert_eq!(b, big);
                assert!(size > limit && limit == q.max_message(), "TooLarge {{ size: {size}, limit: {limit} }}");
            }
            other => panic!("a message of the ring's size (closed: {closed}) gave {other:?}"),
        }
        if round % 2 == 0 {
            got(q.get_timeout(TICK));
            let v = vec![n; 3];
            refused(q.put_timeout(v.clone(), TICK), &v, closed);
        }
    }
    let _ = (q.len(), format!("{q:?}"));
}

/// The task count on an opened `JoinableQueue` (whatever the count says):
/// `task_done` fails only at 0, `join_timeout(0)` is true only at 0.
fn joinable(q: &JoinableQueue<Vec<u8>>) {
    let _ = format!("{q:?}");
    for _ in 0..2 {
        let before = q.unfinished();
        let done = q.task_done();
        assert_eq!(done.is_ok(), before != 0, "task_done with {before} unfinished: {done:?}");
        let now = q.unfinished();
        assert_eq!(q.join_timeout(Duration::ZERO), now == 0, "join_timeout(0) with {now} unfinished");
    }
    let _ = q.try_get();
    let v = vec![7u8; 5];
    refused(q.try_put(v.clone()), &v, q.as_queue().is_closed());
    let _ = q.get_timeout(TICK);
    q.close();
    refused(q.put_timeout(v.clone(), TICK), &v, true);
    let _ = q.unfinished();
}
