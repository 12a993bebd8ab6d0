//! The `queue_model` fuzz harness: every queue type against a `VecDeque`.
//!
//! There is one fuzz target per queue type (`queue_model_queue`,
//! `queue_model_spsc`, `queue_model_object`, `queue_model_joinable`): each
//! runs [`exercise_as`] with its type. The first input byte's low two bits
//! name the type (and the target overrides them with its own), the rest of
//! it the capacity passed to `new` (an anonymous segment: nothing can leak). The rest is an operation stream of byte pairs `[op, arg]`: the
//! low nibble of `op` is one of the [`op`] codes, its high nibble picks which
//! of the handles (the queue and its clones) runs it, and `arg` sizes or
//! times it. Single-threaded, so the queue must agree with the model exactly:
//!
//! - fixed-size queues: `try_put` succeeds iff the model has room, and `Full`
//!   otherwise; `try_get` returns exactly the model's front, `Empty` if none;
//!   `len`, `is_empty`, `is_full` agree after every operation;
//! - `ObjectQueue` (room is in bytes): a message too large fails with
//!   `Error::TooLarge` naming its encoded size and `max_message`; a fitting
//!   one is refused as `Full` only when the queue holds something; everything
//!   put comes back in order; `len` and `is_empty` agree;
//! - `JoinableQueue`: `task_done` succeeds iff a put is not yet marked done,
//!   `join_timeout(0)` is true iff none is, `unfinished` counts them;
//! - after `close`: puts fail with `Closed`, handing the value back; gets
//!   drain the model, then fail with `Closed`.
//!
//! Every refused put hands the same value back. Blocking `put`/`get` run only
//! when the model says they cannot block; timed ones wait 0 or 1 ms (at most
//! [`SLEEPS`] 1 ms waits per input).
//!
//! Shared by the cargo-fuzz target (`fuzz/fuzz_targets/queue_model.rs`) and
//! the corpus replay test (`tests/fuzz_corpus.rs`).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::time::Duration;

use shmproc::{Error, GetError, JoinableQueue, ObjectQueue, PutError, Queue, SpscQueue, WaitStrategy};

/// The longest timed wait.
const TICK: Duration = Duration::from_millis(1);

/// 1 ms waits per input at most; later timed operations wait 0.
const SLEEPS: u32 = 8;

/// Handles (the queue and its clones) alive at once at most.
const HANDLES: usize = 4;

/// The queue types (first byte modulo 4).
pub(crate) mod kind {
    pub(crate) const QUEUE: u8 = 0;
    pub(crate) const SPSC: u8 = 1;
    pub(crate) const OBJECT: u8 = 2;
    pub(crate) const JOINABLE: u8 = 3;
}

/// Capacities passed to `new` by the fixed-size queues: `FIXED_CAPS[(byte0 / 4) % len]`.
pub(crate) const FIXED_CAPS: [usize; 10] = [0, 1, 2, 3, 4, 5, 7, 8, 9, 16];
/// Capacities (bytes) passed to `new` by the object queues.
pub(crate) const OBJECT_CAPS: [usize; 8] = [0, 1, 64, 65, 100, 128, 256, 512];

/// Operation codes (the low nibble of an operation byte).
pub(crate) mod op {
    /// `try_put` of a message sized by `arg`.
    pub(crate) const TRY_PUT: u8 = 0;
    /// `put_timeout`: 1 ms if `arg` is odd, else 0; size `arg >> 1`.
    pub(crate) const PUT_TIMEOUT: u8 = 1;
    /// `put`, when the model says it cannot block (else `try_put`).
    pub(crate) const PUT: u8 = 2;
    /// `try_get`.
    pub(crate) const TRY_GET: u8 = 3;
    /// `get_timeout`: 1 ms if `arg` is odd, else 0.
    pub(crate) const GET_TIMEOUT: u8 = 4;
    /// `get`, when the model says it cannot block (else `try_get`).
    pub(crate) const GET: u8 = 5;
    /// `arg % 8 + 1` `try_put`s, sized by `arg`.
    pub(crate) const PUT_BURST: u8 = 6;
    /// `arg % 8 + 1` `try_get`s.
    pub(crate) const GET_BURST: u8 = 7;
    /// Snapshots, `Debug`, `name`, `capacity`; `is_full` probed with a put.
    pub(crate) const CHECK: u8 = 8;
    /// Clones the handle (up to four handles).
    pub(crate) const CLONE: u8 = 9;
    /// Drops the handle, unless it is the last.
    pub(crate) const DROP: u8 = 10;
    /// Closes the queue if `arg % 8 == 0`.
    pub(crate) const CLOSE: u8 = 11;
    /// Sets the handle's wait strategy (`arg % 3`: spin, block, adaptive).
    pub(crate) const STRATEGY: u8 = 12;
    /// `JoinableQueue::task_done` (others: `try_get`).
    pub(crate) const TASK_DONE: u8 = 13;
    /// `JoinableQueue::join_timeout` (0, or 1 ms if `arg` is odd; `join`
    /// when nothing is unfinished); `ObjectQueue`: `try_get`; fixed-size
    /// queues: `CHECK`.
    pub(crate) const JOIN: u8 = 14;
    /// `try_put` until refused (at most 64), sized by `arg`.
    pub(crate) const FILL: u8 = 15;
}

/// Runs one input on the queue type `ty` (a fuzz target's entry point).
#[allow(dead_code, reason = "the replay test calls `exercise_as` to see what ran")]
pub(crate) fn run_as(ty: u8, data: &[u8]) {
    exercise_as(ty, data);
}

/// Runs one input on the queue type `ty` (one of [`kind`]): its first byte's
/// type bits are replaced by `ty`.
pub(crate) fn exercise_as(ty: u8, data: &[u8]) -> Vec<&'static str> {
    match data.split_first() {
        Some((&first, rest)) => exercise(&[&[(first & !3) | (ty & 3)][..], rest].concat()),
        None => Vec::new(),
    }
}

/// Runs one input; returns the queue type it ran on (nothing if `new`
/// refused the capacity, as it must only for 0).
pub(crate) fn exercise(data: &[u8]) -> Vec<&'static str> {
    let Some((&first, rest)) = data.split_first() else { return Vec::new() };
    let mut ops = Ops { data: rest, at: 0, sleeps: 0 };
    let pick = usize::from(first / 4);
    let ran = match first % 4 {
        kind::QUEUE => fixed::<Queue<u64>>(FIXED_CAPS[pick % FIXED_CAPS.len()], &mut ops).then_some("Queue"),
        kind::SPSC => fixed::<SpscQueue<u32>>(FIXED_CAPS[pick % FIXED_CAPS.len()], &mut ops).then_some("SpscQueue"),
        kind::OBJECT => {
            object::<ObjectQueue<Vec<u8>>>(OBJECT_CAPS[pick % OBJECT_CAPS.len()], &mut ops);
            Some("ObjectQueue")
        }
        kind::JOINABLE => {
            object::<JoinableQueue<u16>>(OBJECT_CAPS[pick % OBJECT_CAPS.len()], &mut ops);
            Some("JoinableQueue")
        }
        _ => unreachable!("modulo 4"),
    };
    ran.into_iter().collect()
}

/// The operation stream.
struct Ops<'a> {
    data: &'a [u8],
    at: usize,
    /// 1 ms waits so far.
    sleeps: u32,
}

impl Ops<'_> {
    /// The next `(op code, handle selector, arg)`.
    fn next(&mut self) -> Option<(u8, usize, u8)> {
        let op = *self.data.get(self.at)?;
        let arg = self.data.get(self.at + 1).copied().unwrap_or(0);
        self.at += 2;
        Some((op & 15, usize::from(op >> 4), arg))
    }

    /// 1 ms if `arg` asks for it and the budget allows, else 0.
    fn timeout(&mut self, arg: u8) -> Duration {
        if arg & 1 == 1 && self.sleeps < SLEEPS {
            self.sleeps += 1;
            TICK
        } else {
            Duration::ZERO
        }
    }
}

fn strategy(arg: u8) -> WaitStrategy {
    match arg % 3 {
        0 => WaitStrategy::Spin,
        1 => WaitStrategy::Block,
        _ => WaitStrategy::Adaptive,
    }
}

/// What a put gives.
type Put<T> = Result<(), PutError<T>>;

/// A put, as a checked helper runs it (`try_put`, `put_timeout`, `put`).
type PutWith<'a, Q> = &'a dyn Fn(&Q, <Q as Handle>::Item) -> Put<<Q as Handle>::Item>;

/// The operations both kinds of queue share, so that one model loop drives
/// each (implemented below by macros, since the types share no trait).
trait Handle: Clone + Debug + Sized {
    type Item: Clone + PartialEq + Debug;
    fn new(capacity: usize) -> shmproc::Result<Self>;
    fn try_put(&self, v: Self::Item) -> Put<Self::Item>;
    fn put_timeout(&self, v: Self::Item, t: Duration) -> Put<Self::Item>;
    fn put(&self, v: Self::Item) -> Put<Self::Item>;
    fn try_get(&self) -> Result<Self::Item, GetError>;
    fn get_timeout(&self, t: Duration) -> Result<Self::Item, GetError>;
    fn get(&self) -> Result<Self::Item, GetError>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool;
    fn is_full(&self) -> bool;
    fn capacity(&self) -> usize;
    fn close(&self);
    fn is_closed(&self) -> bool;
    fn name(&self) -> Option<&str>;
    fn set_wait_strategy(&self, s: WaitStrategy);
    fn wait_strategy(&self) -> WaitStrategy;
}

macro_rules! handle {
    ($ty:ty, $item:ty, $inner:ident => $q:expr) => {
        impl Handle for $ty {
            type Item = $item;
            fn new(capacity: usize) -> shmproc::Result<Self> {
                <$ty>::new(capacity)
            }
            fn try_put(&self, v: $item) -> Put<$item> {
                <$ty>::try_put(self, v)
            }
            fn put_timeout(&self, v: $item, t: Duration) -> Put<$item> {
                <$ty>::put_timeout(self, v, t)
            }
            fn put(&self, v: $item) -> Put<$item> {
                <$ty>::put(self, v)
            }
            fn try_get(&self) -> Result<$item, GetError> {
                <$ty>::try_get(self)
            }
            fn get_timeout(&self, t: Duration) -> Result<$item, GetError> {
                <$ty>::get_timeout(self, t)
            }
            fn get(&self) -> Result<$item, GetError> {
                <$ty>::get(self)
            }
            fn len(&self) -> usize {
                let $inner = self;
                $q.len()
            }
            fn is_empty(&self) -> bool {
                let $inner = self;
                $q.is_empty()
            }
            fn is_full(&self) -> bool {
                let $inner = self;
                $q.is_full()
            }
            fn capacity(&self) -> usize {
                let $inner = self;
                $q.capacity()
            }
            fn close(&self) {
                <$ty>::close(self)
            }
            fn is_closed(&self) -> bool {
                let $inner = self;
                $q.is_closed()
            }
            fn name(&self) -> Option<&str> {
                let $inner = self;
                $q.name()
            }
            fn set_wait_strategy(&self, s: WaitStrategy) {
                let $inner = self;
                $q.set_wait_strategy(s)
            }
            fn wait_strategy(&self) -> WaitStrategy {
                let $inner = self;
                $q.wait_strategy()
            }
        }
    };
}

handle!(Queue<u64>, u64, q => q);
handle!(SpscQueue<u32>, u32, q => q);
handle!(ObjectQueue<Vec<u8>>, Vec<u8>, q => q);
handle!(JoinableQueue<u16>, u16, q => q.as_queue());

/// What every model keeps: the queue's handles, its contents, whether it is
/// closed.
struct Model<Q: Handle> {
    handles: Vec<Q>,
    items: VecDeque<Q::Item>,
    closed: bool,
    /// Values made so far (each put gets a new one).
    made: u32,
}

impl<Q: Handle> Model<Q> {
    /// Clones, drops, closes, strategies; `true` if `op` was one of those.
    fn common(&mut self, op: u8, h: usize, arg: u8) -> bool {
        match op {
            op::CLONE => {
                if self.handles.len() < HANDLES {
                    let c = self.handles[h].clone();
                    assert_eq!(c.capacity(), self.handles[h].capacity());
                    self.handles.push(c);
                }
            }
            op::DROP => {
                if self.handles.len() > 1 {
                    drop(self.handles.swap_remove(h));
                }
            }
            op::CLOSE => {
                if arg % 8 == 0 {
                    self.handles[h].close();
                    self.closed = true;
                }
            }
            op::STRATEGY => {
                self.handles[h].set_wait_strategy(strategy(arg));
                assert_eq!(self.handles[h].wait_strategy(), strategy(arg));
            }
            _ => return false,
        }
        true
    }

    /// A get's outcome against the model: the front, else `Empty`/`Timeout`
    /// (`empty`) while open, `Closed` once closed.
    fn got(&mut self, what: &str, got: Result<Q::Item, GetError>, empty: fn(&GetError) -> bool) {
        match (got, self.items.front()) {
            (Ok(v), Some(front)) if v == *front => {
                self.items.pop_front();
            }
            (Err(GetError::Closed), None) if self.closed => {}
            (Err(e), None) if !self.closed && empty(&e) => {}
            (other, front) => panic!(
                "{what} gave {other:?}; the model's front is {front:?} ({} queued, closed: {})",
                self.items.len(),
                self.closed
            ),
        }
    }

    /// `TRY_GET`, `GET_TIMEOUT`, `GET` (a `try_get` when it would block) or
    /// `GET_BURST` on handle `h`, checked.
    fn get_op(&mut self, ops: &mut Ops, op: u8, h: usize, arg: u8) {
        let waits = self.items.is_empty() && !self.closed;
        match op {
            op::GET_TIMEOUT => {
                let t = if waits { ops.timeout(arg) } else { TICK };
                let got = self.handles[h].get_timeout(t);
                self.got("get_timeout", got, is_timeout_error);
            }
            op::GET if !waits => {
                let got = self.handles[h].get();
                self.got("get", got, |_| false);
            }
            _ => {
                let n = if op == op::GET_BURST { arg % 8 + 1 } else { 1 };
                for _ in 0..n {
                    let got = self.handles[h].try_get();
                    self.got("try_get", got, is_empty_error);
                }
            }
        }
    }

    /// The snapshots every handle must agree on, after every operation.
    fn snapshots(&self, h: usize) {
        let q = &self.handles[h];
        assert_eq!(q.len(), self.items.len(), "len; model {:?}", self.items);
        assert_eq!(q.is_empty(), self.items.is_empty(), "is_empty; model {:?}", self.items);
        assert_eq!(q.is_closed(), self.closed, "is_closed");
    }
}

/// A refused put must hand `v` back.
fn handed_back<T: PartialEq + Debug>(e: PutError<T>, v: &T) -> PutError<T> {
    let back = match &e {
        PutError::Full(b) | PutError::Timeout(b) | PutError::Closed(b) | PutError::Failed(b, _) => b,
    };
    assert_eq!(back, v, "a refused put handed back another value ({e:?})");
    e
}

fn is_empty_error(e: &GetError) -> bool {
    matches!(e, GetError::Empty)
}

fn is_timeout_error(e: &GetError) -> bool {
    matches!(e, GetError::Timeout)
}

/// `Queue<u64>` and `SpscQueue<u32>`: room is counted in elements.
trait FixedItem: Sized {
    fn make(n: u32, arg: u8) -> Self;
}

impl FixedItem for u64 {
    fn make(n: u32, arg: u8) -> u64 {
        u64::from(n) | u64::from(arg) << 40
    }
}

impl FixedItem for u32 {
    fn make(n: u32, arg: u8) -> u32 {
        n ^ u32::from(arg) << 24
    }
}

/// Runs the stream on a fixed-size queue; `false` if `new` refused the
/// capacity (as it must only for 0).
fn fixed<Q: Handle>(requested: usize, ops: &mut Ops) -> bool
where
    Q::Item: FixedItem,
{
    let q = match Q::new(requested) {
        Ok(q) => q,
        Err(e) => {
            assert!(requested == 0 && matches!(e, Error::InvalidArgument { .. }), "new({requested}): {e}");
            return false;
        }
    };
    assert!(requested > 0, "new(0) made a queue");
    let cap = q.capacity();
    assert_eq!(cap, requested.next_power_of_two(), "capacity of new({requested})");
    assert!(q.name().is_none(), "an anonymous queue has a name");
    let mut m = Model { handles: vec![q], items: VecDeque::new(), closed: false, made: 0 };
    while let Some((op, h, arg)) = ops.next() {
        let h = h % m.handles.len();
        if !m.common(op, h, arg) {
            fixed_op(&mut m, ops, op, h, arg);
        }
        let h = h % m.handles.len();
        m.snapshots(h);
        assert_eq!(m.handles[h].is_full(), m.items.len() == cap, "is_full; model {:?}", m.items);
    }
    true
}

fn fixed_op<Q: Handle>(m: &mut Model<Q>, ops: &mut Ops, op: u8, h: usize, arg: u8)
where
    Q::Item: FixedItem,
{
    let cap = m.handles[h].capacity();
    // A put, checked: `Ok` iff open with room; else `Closed` once closed,
    // else `refused` (Full or Timeout).
    let put = |m: &mut Model<Q>, what: &str, f: PutWith<Q>| {
        let v = Q::Item::make(m.made, arg);
        m.made = m.made.wrapping_add(1);
        let room = m.items.len() < cap;
        match (f(&m.handles[h], v.clone()).map_err(|e| handed_back(e, &v)), m.closed, room) {
            (Ok(()), false, true) => m.items.push_back(v),
            (Err(PutError::Closed(_)), true, _) => {}
            (Err(PutError::Full(_)), false, false) if what != "put_timeout" => {}
            (Err(PutError::Timeout(_)), false, false) if what == "put_timeout" => {}
            (other, closed, room) => panic!("{what}({v:?}) gave {other:?} (room: {room}, closed: {closed})"),
        }
        room
    };
    match op {
        op::TRY_PUT => {
            put(m, "try_put", &|q, v| q.try_put(v));
        }
        op::PUT_TIMEOUT => {
            let t = if m.items.len() < cap || m.closed { TICK } else { ops.timeout(arg) };
            put(m, "put_timeout", &|q, v| q.put_timeout(v, t));
        }
        op::PUT => {
            if m.items.len() < cap || m.closed {
                put(m, "put", &|q, v| q.put(v));
            } else {
                put(m, "try_put", &|q, v| q.try_put(v));
            }
        }
        op::PUT_BURST => {
            for _ in 0..=arg % 8 {
                put(m, "try_put", &|q, v| q.try_put(v));
            }
        }
        op::FILL => {
            for _ in 0..=cap {
                if !put(m, "try_put", &|q, v| q.try_put(v)) {
                    break;
                }
            }
        }
        op::TRY_GET | op::TASK_DONE => m.get_op(ops, op::TRY_GET, h, arg),
        op::GET_TIMEOUT | op::GET | op::GET_BURST => m.get_op(ops, op, h, arg),
        op::CHECK | op::JOIN => {
            let q = &m.handles[h];
            let _ = format!("{q:?}");
            assert!(q.name().is_none());
            assert_eq!(q.capacity(), cap);
        }
        _ => unreachable!("op {op}"),
    }
}

/// `ObjectQueue<Vec<u8>>` and `JoinableQueue<u16>`: room is counted in bytes.
trait ObjectItem: Sized {
    /// A value sized by `arg` for a queue of `max`-byte messages.
    fn make(n: u32, arg: u8, max: usize, capacity: usize) -> Self;
    /// Its encoded (postcard) size.
    fn encoded_len(&self) -> usize;
}

/// Bytes of postcard's length prefix for `n`: a LEB128 varint.
fn varint_len(n: usize) -> usize {
    let bits = usize::BITS - n.leading_zeros();
    (bits.max(1) as usize).div_ceil(7)
}

impl ObjectItem for Vec<u8> {
    /// 0 to 16 bytes past the largest message, evenly by `arg`; 255 makes one
    /// four times the ring.
    fn make(n: u32, arg: u8, max: usize, capacity: usize) -> Vec<u8> {
        let len = if arg == 255 { capacity * 4 + 3 } else { usize::from(arg) * (max + 16) / 254 };
        (0..len).map(|i| (n as u8).wrapping_add(i as u8)).collect()
    }
    fn encoded_len(&self) -> usize {
        varint_len(self.len()) + self.len()
    }
}

impl ObjectItem for u16 {
    fn make(n: u32, arg: u8, _max: usize, _capacity: usize) -> u16 {
        (n as u16) ^ u16::from(arg) << 8
    }
    fn encoded_len(&self) -> usize {
        varint_len(usize::from(*self))
    }
}

/// The `JoinableQueue` task operations (no-ops on an `ObjectQueue`).
trait Tasks {
    /// Runs `op` (`TASK_DONE` or `JOIN`) on a joinable queue; `false` if this
    /// is not one.
    fn task_op(&self, op: u8, timeout: Duration, unfinished: &mut u64) -> bool;
}

impl Tasks for ObjectQueue<Vec<u8>> {
    fn task_op(&self, _: u8, _: Duration, _: &mut u64) -> bool {
        false
    }
}

impl Tasks for JoinableQueue<u16> {
    fn task_op(&self, op: u8, timeout: Duration, unfinished: &mut u64) -> bool {
        if op == op::TASK_DONE {
            match (self.task_done(), *unfinished) {
                (Ok(()), n) if n > 0 => *unfinished -= 1,
                (Err(Error::InvalidArgument { .. }), 0) => {}
                (other, n) => panic!("task_done with {n} unfinished: {other:?}"),
            }
        } else {
            assert!(
                self.join_timeout(Duration::ZERO) == (*unfinished == 0),
                "join_timeout(0), {unfinished} unfinished"
            );
            if *unfinished == 0 {
                self.join();
                assert!(self.join_timeout(TICK), "join_timeout(1 ms) with nothing unfinished");
            } else {
                assert!(!self.join_timeout(timeout), "join_timeout with {unfinished} unfinished");
            }
        }
        assert_eq!(self.unfinished(), *unfinished, "unfinished");
        true
    }
}

/// Runs the stream on an object queue.
fn object<Q: Handle + Tasks>(requested: usize, ops: &mut Ops)
where
    Q::Item: ObjectItem,
{
    let q = Q::new(requested).unwrap_or_else(|e| panic!("new({requested}): {e}"));
    let cap = q.capacity();
    assert_eq!(cap, requested.max(64).next_power_of_two(), "capacity of new({requested})");
    assert!(q.name().is_none(), "an anonymous queue has a name");
    let mut m = Model { handles: vec![q], items: VecDeque::new(), closed: false, made: 0 };
    let mut unfinished = 0u64;
    while let Some((op, h, arg)) = ops.next() {
        let h = h % m.handles.len();
        if !m.common(op, h, arg) {
            object_op(&mut m, &mut unfinished, ops, op, h, arg);
        }
        let h = h % m.handles.len();
        m.snapshots(h);
        if m.handles[h].is_full() {
            assert!(!m.items.is_empty(), "an empty queue is full");
        }
    }
}

fn object_op<Q: Handle + Tasks>(m: &mut Model<Q>, unfinished: &mut u64, ops: &mut Ops, op: u8, h: usize, arg: u8)
where
    Q::Item: ObjectItem,
{
    let cap = m.handles[h].capacity();
    let max = cap / 2 - 8;
    // A put, checked: `Closed` once closed; `TooLarge` naming both sizes for
    // a message over `max`; `Ok`, or `refused` (Full or Timeout) only when
    // the queue holds something. `true` if it was put.
    let put = |m: &mut Model<Q>, unfinished: &mut u64, what: &str, arg: u8, f: PutWith<Q>| {
        let v = Q::Item::make(m.made, arg, max, cap);
        m.made = m.made.wrapping_add(1);
        let size = v.encoded_len();
        let outcome = f(&m.handles[h], v.clone()).map_err(|e| handed_back(e, &v));
        match outcome {
            Ok(()) if !m.closed && size <= max => {
                m.items.push_back(v);
                *unfinished += 1;
                return true;
            }
            Err(PutError::Closed(_)) if m.closed => {}
            Err(PutError::Failed(_, err)) if !m.closed && size > max && matches!(*err, Error::TooLarge { .. }) => {
                let Error::TooLarge { size: s, limit } = *err else { unreachable!() };
                assert_eq!((s, limit), (size, max), "TooLarge's sizes");
                let text = Error::TooLarge { size: s, limit }.to_string();
                assert!(text.contains(&s.to_string()) && text.contains(&limit.to_string()), "{text}");
            }
            Err(PutError::Full(_)) if what != "put_timeout" && !m.closed && size <= max && !m.items.is_empty() => {}
            Err(PutError::Timeout(_)) if what == "put_timeout" && !m.closed && size <= max && !m.items.is_empty() => {}
            other => panic!(
                "{what} of a {size}-byte message (at most {max}) gave {other:?} ({} queued, closed: {})",
                m.items.len(),
                m.closed
            ),
        }
        false
    };
    match op {
        op::TRY_PUT => {
            put(m, unfinished, "try_put", arg, &|q, v| q.try_put(v));
        }
        op::PUT_TIMEOUT => {
            let t = if m.items.is_empty() || m.closed { TICK } else { ops.timeout(arg) };
            put(m, unfinished, "put_timeout", arg >> 1, &|q, v| q.put_timeout(v, t));
        }
        op::PUT => {
            // Cannot block: closed, too large, or an empty queue (where any
            // message up to `max` fits).
            let size = Q::Item::make(m.made, arg, max, cap).encoded_len();
            if m.closed || size > max || m.items.is_empty() {
                put(m, unfinished, "put", arg, &|q, v| q.put(v));
            } else {
                put(m, unfinished, "try_put", arg, &|q, v| q.try_put(v));
            }
        }
        op::PUT_BURST => {
            for _ in 0..=arg % 8 {
                put(m, unfinished, "try_put", arg, &|q, v| q.try_put(v));
            }
        }
        op::FILL => {
            for _ in 0..64 {
                if !put(m, unfinished, "try_put", arg, &|q, v| q.try_put(v)) {
                    break;
                }
            }
        }
        op::TRY_GET | op::GET_TIMEOUT | op::GET | op::GET_BURST => m.get_op(ops, op, h, arg),
        op::TASK_DONE | op::JOIN => {
            let t = if arg & 1 == 1 && *unfinished > 0 { ops.timeout(arg) } else { Duration::ZERO };
            if !m.handles[h].task_op(op, t, unfinished) {
                let got = m.handles[h].try_get();
                m.got("try_get", got, is_empty_error);
            }
        }
        op::CHECK => {
            let q = &m.handles[h];
            let _ = format!("{q:?}");
            assert!(q.name().is_none());
            assert_eq!(q.capacity(), cap);
            if q.is_full() {
                // Not even an empty message fits: a try_put of one is Full.
                assert!(!m.items.is_empty(), "an empty queue is full");
                if !m.closed {
                    let v = Q::Item::make(m.made, 0, max, cap);
                    match q.try_put(v.clone()).map_err(|e| handed_back(e, &v)) {
                        Err(PutError::Full(_)) => {}
                        other => panic!("is_full, yet a put of the smallest message gave {other:?}"),
                    }
                }
            }
        }
        _ => unreachable!("op {op}"),
    }
}
