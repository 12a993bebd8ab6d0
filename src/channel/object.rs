//! [`ObjectQueue`] and [`JoinableQueue`]: queues of any serde type, of any
//! number of producers and consumers, on the byte-record ring.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Control, GetError, PutError, Waiters, check_type, type_fingerprint};
use crate::codec::{self, custom_error};
use crate::error::{Error, Result};
use crate::loom::{self, AtomicU64, Ordering};
use crate::os::{Deadline, FutexWait};
use crate::ring::bytes::{self, Bytes, ReadInto, Region, Write};
use crate::ring::{BytesHeader, Padded, Side};
use crate::segment::{Kind, Layout, Shared, SharedState};
use crate::sync::owner::{Acquired, OwnerLock};
use crate::sync::wait::{self, WaitTarget};

/// The producers' line: the lock that makes the one-writer byte ring a
/// ring of many producers, and the record of the put in flight.
#[repr(C)]
#[derive(Debug)]
struct Producers {
    /// Held by the producer writing a record. A producer killed holding it
    /// never published its record (the tail moves last): the next producer
    /// takes the lock over and writes over the remains.
    lock: OwnerLock,
    /// While the lock is held: 1 + the ring's tail when the holder counted
    /// its put (0: no put counted). A producer that takes the lock over from
    /// a dead one and finds the tail unmoved takes the dead put's counts
    /// back; if the tail moved, the record was published and counts.
    pending: AtomicU64,
    /// Messages put: raised by the lock holder before it publishes its
    /// record (so never below the records published), taken back if the put
    /// fails or its producer dies before publishing. `len` is `puts − gets`.
    /// Only the lock holder writes it: a load and a store, no atomic RMW on a
    /// line the consumers write.
    puts: AtomicU64,
    /// `JoinableQueue`: tasks put (every put that got as far as counting,
    /// failed ones included: those are marked done instead of taken back, as
    /// a `task_done` would). Raised by the lock holder before it publishes,
    /// so a consumer that got the message sees it; never lowered.
    /// `unfinished` is `tasks − done`.
    tasks: AtomicU64,
}

/// The consumers' line. (Apart from the producers' line: a producer and a
/// consumer taking their locks at the same time do not steal each other's
/// cache line.)
#[repr(C)]
#[derive(Debug)]
struct Consumers {
    /// Held by the consumer reading a record. A consumer killed holding it
    /// never moved the head: the next consumer takes over and reads the same
    /// record again, so the message is delivered to a live consumer.
    lock: OwnerLock,
    /// Messages taken: raised by the lock holder after it moved the head.
    gets: AtomicU64,
}

/// Counts beside the ring.
#[repr(C)]
#[derive(Debug, Default)]
struct Counts {
    /// `JoinableQueue`: tasks marked done (`task_done`, and failed or dead
    /// puts), never past `tasks` (a CAS that reads it first).
    done: AtomicU64,
    /// Joiners wait here for `tasks − done` to reach 0.
    all_done: Side,
}

/// The state before the data region.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ObjectState {
    ring: BytesHeader,
    ctl: Control,
    producers: Padded<Producers>,
    consumers: Padded<Consumers>,
    counts: Padded<Counts>,
}

impl ObjectState {
    /// Tasks put and not marked done (a snapshot; 0 if garbage says fewer).
    fn unfinished(&self) -> u64 {
        // `done` first: it never passes `tasks`, which only grows.
        let done = self.counts.0.done.load(Ordering::Acquire);
        self.producers.0.tasks.load(Ordering::Acquire).saturating_sub(done)
    }

    /// Messages in the ring: `puts − gets` (a snapshot).
    fn len(&self) -> usize {
        // `gets` first: `puts` is raised before a record is published and
        // `gets` after it is taken, so a later `puts` is never below it
        // (garbage aside, which only makes `len` wrong).
        let gets = self.consumers.0.gets.load(Ordering::Acquire);
        let puts = self.producers.0.puts.load(Ordering::Acquire);
        match puts.wrapping_sub(gets) {
            n if n > u64::MAX / 2 => 0,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }
}

const _: () = assert!(size_of::<ObjectState>() % 64 == 0, "the data region starts on a cache line");

/// Creation parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ObjectParams {
    fp: u64,
    capacity: usize,
}

/// The smallest data region: messages of up to 24 encoded bytes.
const MIN_CAPACITY: usize = 64;

// SAFETY: repr(C), atomics only (BytesHeader, Control, OwnerLock, Side are
// repr(C) atomics), size a multiple of 64, no pointers; the byte ring checks
// every position, tag and length it reads.
unsafe impl SharedState for ObjectState {
    const KIND: Kind = Kind::ObjectQueue;
    type Params = ObjectParams;

    fn zeroed() -> Self {
        ObjectState {
            ring: BytesHeader::default(),
            ctl: Control::default(),
            producers: Padded(Producers {
                lock: OwnerLock::zeroed(),
                pending: AtomicU64::new(0),
                puts: AtomicU64::new(0),
                tasks: AtomicU64::new(0),
            }),
            consumers: Padded(Consumers { lock: OwnerLock::zeroed(), gets: AtomicU64::new(0) }),
            counts: Padded(Counts::default()),
        }
    }

    fn init(&self, _: ObjectParams) {}

    fn layout(p: &ObjectParams) -> Result<Layout> {
        Ok(Layout { type_fp: p.fp, tail_len: p.capacity })
    }

    fn check_layout(found: Layout) -> Result<()> {
        if found.type_fp == 0 || found.tail_len < MIN_CAPACITY || !found.tail_len.is_power_of_two() {
            return Err(Error::mismatch(
                "queue layout",
                format!("a typed queue with a power-of-two data region of at least {MIN_CAPACITY} bytes"),
                format!("fingerprint {:#x}, {} bytes", found.type_fp, found.tail_len),
            ));
        }
        Ok(())
    }
}

/// A bounded queue of any serde type between processes, for any number of
/// producers and consumers (Python's `multiprocessing.Queue`).
///
/// Messages are encoded (postcard) into a ring of bytes, so they can have any
/// size up to [`ObjectQueue::max_message`]: a larger one is refused with
/// [`Error::TooLarge`], which names both sizes (create the queue bigger; a
/// `Connection` streams messages of any size). The capacity is in bytes.
/// Producers take turns through a lock in the segment, as do consumers; a
/// producer killed in the middle of a put leaves nothing behind (its record
/// was never published), and a consumer killed in the middle of a get leaves
/// the message to the next consumer.
///
/// # Examples
///
/// ```
/// use shmproc::ObjectQueue;
///
/// let q = ObjectQueue::<(String, Vec<u32>)>::new(4096)?;
/// q.put(("primes".to_owned(), vec![2, 3, 5, 7]))?;
/// let (name, values) = q.get()?;
/// assert_eq!((name.as_str(), values.len()), ("primes", 4));
/// # Ok::<(), shmproc::Error>(())
/// ```
pub struct ObjectQueue<T> {
    state: Shared<ObjectState>,
    /// Data region bytes, checked at open.
    capacity: usize,
    wait: Waiters,
    _messages: PhantomData<fn(T) -> T>,
}

impl<T> Clone for ObjectQueue<T> {
    fn clone(&self) -> Self {
        ObjectQueue {
            state: self.state.clone(),
            capacity: self.capacity,
            wait: self.wait.clone(),
            _messages: PhantomData,
        }
    }
}

impl<T> Drop for ObjectQueue<T> {
    fn drop(&mut self) {
        self.state.ctl.unregister(&self.wait);
    }
}

impl<T> fmt::Debug for ObjectQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectQueue")
            .field("segment", &self.state)
            .field("capacity", &self.capacity)
            .field("len", &self.state.len())
            .field("closed", &self.state.ctl.is_closed())
            .finish_non_exhaustive()
    }
}

/// A new empty queue segment named `name` for messages whose type
/// fingerprint is `fp` (a manager's server makes queues for its clients'
/// types, which it does not know): the segment lives, and keeps its name,
/// while the returned handle does.
pub(crate) fn create_queue_segment(name: &str, capacity: usize, fp: u64) -> Result<Box<dyn std::any::Any + Send>> {
    let mut params = ObjectQueue::<crate::codec::Bytes>::params(capacity)?;
    params.fp = fp;
    Ok(Box::new(Shared::<ObjectState>::create(name, params)?))
}

impl<T: Serialize + DeserializeOwned> ObjectQueue<T> {
    fn params(capacity: usize) -> Result<ObjectParams> {
        let capacity = capacity
            .max(MIN_CAPACITY)
            .checked_next_power_of_two()
            .filter(|c| isize::try_from(*c).is_ok())
            .ok_or(Error::InvalidArgument { what: "queue capacity too large" })?;
        Ok(ObjectParams { fp: type_fingerprint::<T>(), capacity })
    }

    fn from_state(state: Shared<ObjectState>) -> Result<Self> {
        // `ObjectState::check_layout` passed when the handle was made.
        let layout = state.layout();
        check_type::<T>(layout.type_fp)?;
        Ok(ObjectQueue { state, capacity: layout.tail_len, wait: Waiters::default(), _messages: PhantomData })
    }

    /// A new empty queue with a ring of at least `capacity` bytes (rounded up
    /// to a power of two, at least 64), in an anonymous segment. Messages of
    /// up to half of it fit ([`ObjectQueue::max_message`]).
    pub fn new(capacity: usize) -> Result<Self> {
        Shared::anonymous(Self::params(capacity)?).and_then(Self::from_state)
    }

    /// A new empty queue in the named segment `name`, which must not exist.
    pub fn create(name: &str, capacity: usize) -> Result<Self> {
        Shared::create(name, Self::params(capacity)?).and_then(Self::from_state)
    }

    /// Opens the queue in the named segment `name`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if it holds messages of another type, and the
    /// errors of [`Segment::open`](crate::Segment::open).
    pub fn open(name: &str) -> Result<Self> {
        Shared::open(name).and_then(Self::from_state)
    }

    crate::sync::wait_strategy_accessors!();

    fn ring(&self) -> Bytes<'_, Region> {
        // SAFETY: the tail is `capacity` bytes (checked at open), 64-aligned
        // (the state's size is a multiple of 64), mapped while `state` lives,
        // and accessed only through the byte ring's protocol.
        let region = unsafe { Region::new(self.state.tail(), self.capacity) };
        Bytes { header: &self.state.ring, region, capacity: self.capacity }
    }

    /// The ring's size in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The largest encoded message the queue takes, in bytes.
    pub fn max_message(&self) -> usize {
        bytes::max_payload(self.capacity)
    }

    /// Messages in the queue (a snapshot; Python's `qsize`).
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Whether the queue holds no message (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.ring().looks_empty()
    }

    /// Whether not even an empty message fits now (a snapshot).
    pub fn is_full(&self) -> bool {
        self.ring().looks_full(0)
    }

    /// Closes the queue for every handle: waiters wake; puts fail with
    /// [`PutError::Closed`]; gets drain what is left, then fail with
    /// [`GetError::Closed`].
    pub fn close(&self) {
        self.state.ctl.close();
        self.state.counts.0.all_done.notify(u32::MAX);
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.state.ctl.is_closed()
    }

    /// Appends `value`, waiting for room as long as it takes.
    ///
    /// The value is encoded under the producers' lock, straight into the
    /// ring (through a scratch buffer when it does not fit before the ring's
    /// end, so its `Serialize` may run twice). A `Serialize` must therefore
    /// not block on anything a producer of this queue may hold while it puts
    /// (serde's impl for `Mutex` locks it), nor put to this queue itself. A
    /// value too large for the queue is refused once the put has the lock.
    ///
    /// # Errors
    /// [`PutError::Closed`]; [`PutError::Failed`] with [`Error::TooLarge`] if
    /// the encoded message exceeds [`ObjectQueue::max_message`], with
    /// [`Error::Codec`] if it cannot be encoded. The value always comes back.
    pub fn put(&self, value: T) -> Result<(), PutError<T>> {
        self.put_until(value, None, true)
    }

    /// Appends `value`, waiting at most `timeout` (for the producers' lock and
    /// for room together).
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_until(value, Some(Deadline::after(timeout)), true)
    }

    /// Appends `value` if that needs no waiting ([`PutError::Full`] hands it
    /// back; also when another producer is writing at this instant, even if
    /// the value is too large: its size is known once it is encoded, which
    /// happens under the producers' lock).
    pub fn try_put(&self, value: T) -> Result<(), PutError<T>> {
        self.put_until(value, None, false)
    }

    /// Appends a copy of `*value`, waiting for room as long as it takes: the
    /// value is encoded from the reference and stays with the caller (as
    /// Python's `put` leaves the object to its caller), so a producer that
    /// sends the same or a reused value needs no allocation per message.
    ///
    /// # Errors
    /// As [`put`](Self::put), without a value to hand back.
    pub fn put_ref(&self, value: &T) -> Result<(), PutError<()>> {
        self.put_inner(value, None, true)
    }

    /// [`put_ref`](Self::put_ref), waiting at most `timeout`.
    pub fn put_ref_timeout(&self, value: &T, timeout: Duration) -> Result<(), PutError<()>> {
        self.put_inner(value, Some(Deadline::after(timeout)), true)
    }

    /// [`put_ref`](Self::put_ref) if that needs no waiting (as
    /// [`try_put`](Self::try_put)).
    pub fn try_put_ref(&self, value: &T) -> Result<(), PutError<()>> {
        self.put_inner(value, None, false)
    }

    /// Takes the oldest message, waiting as long as it takes.
    ///
    /// # Errors
    /// [`GetError::Closed`] once closed and drained; [`GetError::Failed`] if
    /// the ring is corrupt or a message does not decode as `T` (that message
    /// is consumed).
    pub fn get(&self) -> Result<T, GetError> {
        self.get_until(None, true)
    }

    /// Takes the oldest message, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_until(Some(Deadline::after(timeout)), true)
    }

    /// Takes the oldest message if that needs no waiting ([`GetError::Empty`]).
    pub fn try_get(&self) -> Result<T, GetError> {
        self.get_until(None, false)
    }

    fn put_until(&self, value: T, deadline: Option<Deadline>, block: bool) -> Result<(), PutError<T>> {
        self.put_inner(&value, deadline, block).map_err(|e| e.carrying(value))
    }

    /// A put of `*value`; errors carry no value (the caller attaches its own).
    fn put_inner(&self, value: &T, deadline: Option<Deadline>, block: bool) -> Result<(), PutError<()>> {
        if self.is_closed() {
            return Err(PutError::Closed(()));
        }
        let me = loom::current_task();
        let lock = &self.state.producers.0.lock;
        let held = if block { lock.lock(me, &self.wait.cfg, deadline) } else { lock.try_lock(me) };
        let Some(acquired) = held else {
            return Err(if block { PutError::Timeout(()) } else { PutError::Full(()) });
        };
        let Producers { pending, puts, tasks, .. } = &self.state.producers.0;
        let tail = self.ring().tail();
        if acquired == Acquired::OwnerDied {
            // The previous producer died holding the lock: if it had counted a
            // put whose record it never published, take those counts back.
            // `pending` is cleared first: a taker killed right after must not
            // leave the same record for the next taker to undo again (a death
            // between the clear and the subtractions leaks one count instead).
            if pending.swap(0, Ordering::Relaxed) == tail.wrapping_add(1) {
                puts.store(puts.load(Ordering::Relaxed).wrapping_sub(1), Ordering::Relaxed);
                self.finish_task();
            }
        }
        // Counted before the record is published (see `Counts`), taken back
        // if it is not (by us, or by whoever takes the lock over if we die).
        // `pending` goes last: a death between the two leaks one count (a
        // `len` one too high, a `join` that waits), never takes back a count
        // that was not added.
        // (`puts` and `tasks` are ours alone while we hold the lock: no RMW
        // needed.)
        puts.store(puts.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        tasks.store(tasks.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        pending.store(tail.wrapping_add(1), Ordering::Relaxed);
        // The value is encoded under the lock, so a `Serialize` impl that
        // panics must not leave the lock held (the other producers would wait
        // for a live owner for ever) nor the counts raised.
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.write(value, deadline, block)));
        // `pending` is cleared before a failed put takes its count back: a
        // death between the two leaks a count (a `len` one too high) instead
        // of letting the next taker undo the put a second time.
        pending.store(0, Ordering::Relaxed);
        let failed = !matches!(written, Ok(Ok(())));
        if failed {
            puts.store(puts.load(Ordering::Relaxed).wrapping_sub(1), Ordering::Relaxed);
        }
        lock.unlock(me);
        if failed {
            // Taken back as a task_done would: never below 0 (a task_done
            // may have taken this count meanwhile), and a joiner that saw
            // it and went to sleep is woken at 0.
            self.finish_task();
        }
        match written {
            Ok(Ok(())) => {
                self.state.ctl.not_empty.notify(1);
                Ok(())
            }
            Ok(Err(why)) => Err(match why {
                WriteOutcome::Full => PutError::Full(()),
                WriteOutcome::Timeout => PutError::Timeout(()),
                WriteOutcome::Closed => PutError::Closed(()),
                WriteOutcome::Failed(e) => PutError::Failed((), Box::new(e)),
            }),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Encodes `value` into the ring as one record (the caller holds the
    /// producers' lock): straight into the free run at the tail when it fits
    /// there, else through the scratch buffer, waiting for room (`block`)
    /// until `deadline`.
    fn write(&self, value: &T, deadline: Option<Deadline>, block: bool) -> Result<(), WriteOutcome> {
        // Under the lock: a put that waited for it while the queue was closed
        // must not write after the close (the consumers may have drained and
        // gone).
        if self.is_closed() {
            return Err(WriteOutcome::Closed);
        }
        // Otherwise (no room in place, larger than the run to the end, or an
        // error: a corrupt ring, a value that does not encode) the path below
        // encodes on its own, so that a too-large message is `TooLarge`
        // whatever the ring's state, and reports the rest.
        if let Ok(true) = self.ring().try_write_in_place(|record| codec::encode_to(value, |bytes| record.push(bytes))) {
            return Ok(());
        }
        codec::with_scratch(|encoded| {
            codec::encode_into(value, encoded).map_err(WriteOutcome::Failed)?;
            if encoded.len() > self.max_message() {
                return Err(WriteOutcome::Failed(Error::TooLarge { size: encoded.len(), limit: self.max_message() }));
            }
            let mut target = WriteTarget { q: self, bytes: encoded };
            match target.attempt(false) {
                Some(done) => done,
                None if !block => Err(WriteOutcome::Full),
                None => wait::wait_after_attempt(&self.wait.cfg, deadline, &mut target)
                    .unwrap_or(Err(WriteOutcome::Timeout)),
            }
        })
    }

    fn get_until(&self, deadline: Option<Deadline>, block: bool) -> Result<T, GetError> {
        let me = loom::current_task();
        let lock = &self.state.consumers.0.lock;
        let held = if block { lock.lock(me, &self.wait.cfg, deadline) } else { lock.try_lock(me) };
        if held.is_none() {
            return Err(if block { GetError::Timeout } else { GetError::Empty });
        }
        // A small message ready now: read onto the stack and decode from there
        // (the scratch buffer's thread-local costs more than the copy).
        let mut small = [std::mem::MaybeUninit::<u8>::uninit(); SMALL_MESSAGE];
        match self.ring().try_read_into(&mut small) {
            Ok(ReadInto::Message(message)) => {
                self.count_get();
                lock.unlock(me);
                self.state.ctl.not_full.notify(1);
                return codec::decode(message).map_err(|e| GetError::Failed(Box::new(e)));
            }
            // A poll of an open queue with nothing in it: no more to do (a
            // closed one is drained, or reported, below).
            Ok(ReadInto::Empty) if !block && !self.is_closed() => {
                lock.unlock(me);
                return Err(GetError::Empty);
            }
            // None ready, to wait for; or a larger one: the general path.
            Ok(ReadInto::Empty | ReadInto::Longer) => {}
            Err(e) => {
                lock.unlock(me);
                return Err(GetError::Failed(Box::new(e)));
            }
        }
        codec::with_scratch(|buf| {
            let mut target = ReadTarget { q: self, buf };
            let outcome = match target.attempt(false) {
                Some(done) => done,
                None if !block => Err(GetError::Empty),
                None => {
                    wait::wait_after_attempt(&self.wait.cfg, deadline, &mut target).unwrap_or(Err(GetError::Timeout))
                }
            };
            if outcome.is_ok() {
                self.count_get();
            }
            lock.unlock(me);
            outcome?;
            self.state.ctl.not_full.notify(1);
            codec::decode(target.buf).map_err(|e| GetError::Failed(Box::new(e)))
        })
    }

    /// Counts a get (the caller holds the consumers' lock and has moved the
    /// head past a message).
    #[inline]
    fn count_get(&self) {
        // Ours alone while we hold the lock. A consumer killed between
        // moving the head and this store leaves `len` one too high.
        let gets = &self.state.consumers.0.gets;
        gets.store(gets.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// `JoinableQueue::task_done`.
    fn task_done(&self) -> Result<()> {
        if self.finish_task() {
            Ok(())
        } else {
            Err(Error::InvalidArgument { what: "task_done() called more times than items were put" })
        }
    }

    /// Marks one task done unless none is unfinished (`false` then), and
    /// wakes the joiners when none is left.
    fn finish_task(&self) -> bool {
        let done = &self.state.counts.0.done;
        let tasks = &self.state.producers.0.tasks;
        let mut d = done.load(Ordering::Relaxed);
        loop {
            // Acquire: a consumer that took a message sees the `tasks` raised
            // before it was published (the ring's tail Release/Acquire, then
            // coherence); `tasks` only grows, so a stale read is only smaller.
            let t = tasks.load(Ordering::Acquire);
            if d >= t {
                return false;
            }
            match done.compare_exchange_weak(d, d + 1, Ordering::AcqRel, Ordering::Relaxed) {
                // `t` may be stale (smaller): waking when `d + 1 >= t` never
                // misses the moment none is left, at worst wakes joiners early.
                Ok(_) if d + 1 >= t => {
                    self.state.counts.0.all_done.notify(u32::MAX);
                    return true;
                }
                Ok(_) => return true,
                Err(now) => d = now,
            }
        }
    }

    /// `JoinableQueue::join` until `deadline`; `false` on timeout.
    fn join_until(&self, deadline: Option<Deadline>) -> bool {
        wait::wait(&self.wait.cfg, deadline, &mut JoinTarget { q: self }).is_some()
    }
}

/// Messages up to this many bytes are read onto the stack (see `get_until`).
const SMALL_MESSAGE: usize = 256;

/// Why a write ended without a record.
enum WriteOutcome {
    Full,
    Timeout,
    Closed,
    Failed(Error),
}

/// A producer waiting for room (holding the producers' lock).
struct WriteTarget<'a, T> {
    q: &'a ObjectQueue<T>,
    bytes: &'a [u8],
}

impl<T: Serialize + DeserializeOwned> WaitTarget for WriteTarget<'_, T> {
    type Output = Result<(), WriteOutcome>;

    fn attempt(&mut self, _probe: bool) -> Option<Self::Output> {
        if self.q.is_closed() {
            return Some(Err(WriteOutcome::Closed));
        }
        match self.q.ring().try_write(self.bytes) {
            Ok(Ok(())) => Some(Ok(())),
            Ok(Err(Write::Full)) => None,
            Ok(Err(Write::TooLarge(size, limit))) => Some(Err(WriteOutcome::Failed(Error::TooLarge { size, limit }))),
            Err(e) => Some(Err(WriteOutcome::Failed(e))),
        }
    }

    fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
        let ctl = &self.q.state.ctl;
        ctl.sleep_not_full(&self.q.wait, until, || ctl.is_closed() || self.q.ring().writer_has_room(self.bytes.len()))
    }
}

/// A consumer waiting for a message (holding the consumers' lock).
struct ReadTarget<'a, T> {
    q: &'a ObjectQueue<T>,
    buf: &'a mut Vec<u8>,
}

impl<T: Serialize + DeserializeOwned> WaitTarget for ReadTarget<'_, T> {
    type Output = Result<(), GetError>;

    fn attempt(&mut self, _probe: bool) -> Option<Self::Output> {
        let ring = self.q.ring();
        match ring.try_read(self.buf) {
            Ok(true) => Some(Ok(())),
            Ok(false) if self.q.is_closed() => match ring.try_read(self.buf) {
                Ok(true) => Some(Ok(())),
                Ok(false) => Some(Err(GetError::Closed)),
                Err(e) => Some(Err(GetError::Failed(Box::new(e)))),
            },
            Ok(false) => None,
            Err(e) => Some(Err(GetError::Failed(Box::new(e)))),
        }
    }

    fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
        let ctl = &self.q.state.ctl;
        ctl.sleep_not_empty(&self.q.wait, until, || ctl.is_closed() || self.q.ring().reader_has_record())
    }
}

/// A joiner waiting for every task to be done.
struct JoinTarget<'a, T> {
    q: &'a ObjectQueue<T>,
}

impl<T> WaitTarget for JoinTarget<'_, T> {
    type Output = ();

    fn attempt(&mut self, _probe: bool) -> Option<()> {
        (self.q.state.unfinished() == 0).then_some(())
    }

    fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
        let state = &self.q.state;
        state.counts.0.all_done.sleep(until, || state.unfinished() == 0)
    }
}

impl<T> Serialize for ObjectQueue<T> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        self.state.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for ObjectQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_state(Shared::deserialize(d)?).map_err(custom_error::<D::Error>)
    }
}

/// An [`ObjectQueue`] that counts unfinished tasks (Python's
/// `multiprocessing.JoinableQueue`): every put adds one, [`task_done`]
/// removes one, and [`join`] waits until none is left.
///
/// [`task_done`]: JoinableQueue::task_done
/// [`join`]: JoinableQueue::join
///
/// # Examples
///
/// ```
/// use shmproc::JoinableQueue;
///
/// let q = JoinableQueue::<u32>::new(1024)?;
/// q.put(7)?;
/// let worker = { let q = q.clone(); std::thread::spawn(move || { let _job = q.get(); q.task_done() }) };
/// q.join(); // returns once the worker called task_done
/// worker.join().unwrap()?;
/// assert!(q.task_done().is_err()); // more task_done calls than items
/// # Ok::<(), shmproc::Error>(())
/// ```
pub struct JoinableQueue<T>(ObjectQueue<T>);

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue(self.0.clone())
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JoinableQueue").field(&self.0).finish()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ObjectQueue::deserialize(d).map(JoinableQueue)
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A new empty queue with a ring of at least `capacity` bytes.
    pub fn new(capacity: usize) -> Result<Self> {
        ObjectQueue::new(capacity).map(JoinableQueue)
    }

    /// A new empty queue in the named segment `name`.
    pub fn create(name: &str, capacity: usize) -> Result<Self> {
        ObjectQueue::create(name, capacity).map(JoinableQueue)
    }

    /// Opens the queue in the named segment `name` (an [`ObjectQueue`]'s
    /// segment too: they share a layout).
    pub fn open(name: &str) -> Result<Self> {
        ObjectQueue::open(name).map(JoinableQueue)
    }

    /// The queue without the task methods (the same queue).
    pub fn as_queue(&self) -> &ObjectQueue<T> {
        &self.0
    }

    /// [`ObjectQueue::put`]; the task count goes up by one.
    pub fn put(&self, value: T) -> Result<(), PutError<T>> {
        self.0.put(value)
    }

    /// [`ObjectQueue::put_timeout`].
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.0.put_timeout(value, timeout)
    }

    /// [`ObjectQueue::try_put`].
    pub fn try_put(&self, value: T) -> Result<(), PutError<T>> {
        self.0.try_put(value)
    }

    /// [`ObjectQueue::put_ref`]; the task count goes up by one.
    pub fn put_ref(&self, value: &T) -> Result<(), PutError<()>> {
        self.0.put_ref(value)
    }

    /// [`ObjectQueue::put_ref_timeout`].
    pub fn put_ref_timeout(&self, value: &T, timeout: Duration) -> Result<(), PutError<()>> {
        self.0.put_ref_timeout(value, timeout)
    }

    /// [`ObjectQueue::try_put_ref`].
    pub fn try_put_ref(&self, value: &T) -> Result<(), PutError<()>> {
        self.0.try_put_ref(value)
    }

    /// [`ObjectQueue::get`].
    pub fn get(&self) -> Result<T, GetError> {
        self.0.get()
    }

    /// [`ObjectQueue::get_timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.0.get_timeout(timeout)
    }

    /// [`ObjectQueue::try_get`].
    pub fn try_get(&self) -> Result<T, GetError> {
        self.0.try_get()
    }

    /// Marks one task done.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if every put is already marked done
    /// (Python's `ValueError`); the count is left at 0.
    pub fn task_done(&self) -> Result<()> {
        self.0.task_done()
    }

    /// Waits until every message put has been marked done. Closing the queue
    /// finishes no task: `join` still waits for the last `task_done` (as in
    /// Python). A consumer killed before its `task_done` leaves its task
    /// unfinished for ever. A producer killed in the middle of a put leaves
    /// no count behind once the next producer takes its lock over.
    pub fn join(&self) {
        self.0.join_until(None);
    }

    /// Waits at most `timeout`; `true` if every task is done.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.0.join_until(Some(Deadline::after(timeout)))
    }

    /// Messages put and not yet marked done (a snapshot).
    pub fn unfinished(&self) -> u64 {
        self.0.state.unfinished()
    }

    /// Closes the queue ([`ObjectQueue::close`]); finishes no task.
    pub fn close(&self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_every_size_up_to_the_limit_and_too_large_refused() {
        let q = ObjectQueue::<Vec<u8>>::new(256).unwrap();
        for n in [0, 1, 7, 8, 100, q.max_message() - 2] {
            q.put(vec![n as u8; n]).unwrap();
            assert_eq!(q.get().unwrap(), vec![n as u8; n]);
        }
        assert_eq!(q.max_message(), 120);
        match q.put(vec![0; 300]) {
            Err(PutError::Failed(v, e)) => {
                let Error::TooLarge { size, limit } = *e else { panic!("{e:?}") };
                assert_eq!((v.len(), size, limit), (300, 302, 120));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(q.try_get(), Err(GetError::Empty)));
    }

    #[test]
    fn close_drains_and_join_counts_tasks() {
        let q = JoinableQueue::<String>::new(64).unwrap();
        q.put("a".into()).unwrap();
        q.put("b".into()).unwrap();
        assert!(!q.join_timeout(Duration::from_millis(2)));
        q.close();
        assert!(matches!(q.put("c".into()), Err(PutError::Closed(c)) if c == "c"));
        assert_eq!(q.get().unwrap(), "a");
        assert_eq!(q.get().unwrap(), "b");
        assert!(matches!(q.get(), Err(GetError::Closed)));
        q.task_done().unwrap();
        q.task_done().unwrap();
        assert!(q.join_timeout(Duration::ZERO));
        assert!(q.task_done().is_err());
    }
}
