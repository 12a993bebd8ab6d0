//! [`SpscQueue`] and [`Queue`]: queues of fixed-size `Pod` elements, one
//! engine ([`RingQueue`]) over the two rings.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Control, GetError, PutError, Waiters, check_type, type_fingerprint};
use crate::codec::custom_error;
use crate::error::{Error, Result};
use crate::loom;
use crate::os::{Deadline, FutexWait, TaskId};
use crate::ring::mpmc::Probe;
use crate::ring::{self, Push, mpmc, spsc};
use crate::segment::{Kind, Layout, Shared, SharedState};
use crate::sync::wait::{self, WaitTarget};

/// The single-producer single-consumer ring ([`SpscQueue`]).
#[derive(Debug)]
pub(crate) enum Spsc {}
/// The multi-producer multi-consumer ring ([`Queue`]).
#[derive(Debug)]
pub(crate) enum Mpmc {}

pub(crate) use flavor::Flavor;

mod flavor {
    use super::{Kind, Probe, Push, Result, TaskId, mpmc, spsc};

    /// Which ring a [`RingQueue`](super::RingQueue) runs on.
    pub(crate) trait Flavor: Send + Sync + 'static {
        type Header: Default + Send + Sync + std::fmt::Debug;
        type Slot<T>;
        /// What a handle keeps to itself.
        type Cache: Default + Send + Sync + std::fmt::Debug;
        const KIND: Kind;
        /// Whether slots name their claimants (MPMC): waits must then probe the
        /// claimants' liveness, and operations need the caller's identity.
        const PROBES: bool;
        fn try_push<T: bytemuck::Pod>(
            h: &Self::Header,
            s: &[Self::Slot<T>],
            c: &Self::Cache,
            me: TaskId,
            v: T,
            probe: Probe,
        ) -> Result<(), Push<T>>;
        fn try_pop<T: bytemuck::Pod>(
            h: &Self::Header,
            s: &[Self::Slot<T>],
            c: &Self::Cache,
            me: TaskId,
            probe: Probe,
        ) -> Result<Option<T>>;
        /// Gives back what the handle holds in the ring (its claim records)
        /// as the calling thread; the handle is being dropped.
        fn release<T: bytemuck::Pod>(h: &Self::Header, s: &[Self::Slot<T>], c: &Self::Cache);
        fn looks_empty<T: bytemuck::Pod>(h: &Self::Header, s: &[Self::Slot<T>]) -> bool;
        fn looks_full<T: bytemuck::Pod>(h: &Self::Header, s: &[Self::Slot<T>]) -> bool;
        /// Whether a put is half-way at the head (claimed, not published).
        fn head_in_flight<T: bytemuck::Pod>(h: &Self::Header, s: &[Self::Slot<T>]) -> bool;
        fn len<T: bytemuck::Pod>(h: &Self::Header, s: &[Self::Slot<T>]) -> Result<usize>;
    }

    impl Flavor for super::Spsc {
        type Header = spsc::SpscHeader;
        type Slot<T> = spsc::Slot<T>;
        type Cache = spsc::Cache;
        const KIND: Kind = Kind::SpscQueue;
        const PROBES: bool = false;
        #[inline]
        fn try_push<T: bytemuck::Pod>(
            h: &Self::Header,
            s: &[Self::Slot<T>],
            c: &Self::Cache,
            _me: TaskId,
            v: T,
            _probe: Probe,
        ) -> Result<(), Push<T>> {
            spsc::Spsc { header: h, slots: s }.try_push(c, v)
        }
        #[inline]
        fn try_pop<T: bytemuck::Pod>(
            h: &Self::Header,
            s: &[Self::Slot<T>],
            c: &Self::Cache,
            _me: TaskId,
            _probe: Probe,
        ) -> Result<Option<T>> {
            spsc::Spsc { header: h, slots: s }.try_pop(c)
        }
        fn release<T: bytemuck::Pod>(_: &Self::Header, _: &[Self::Slot<T>], _: &Self::Cache) {}
        fn looks_empty<T: bytemuck::Pod>(h: &Self::Header, s: &[Self::Slot<T>]) -> bool {
            spsc::Spsc { header: h, slots: s }.looks_empty()
        }
        fn looks_full<T: bytemuck::Pod>(h: &Self::Header, s: &[Self::Slot<T>]) -> bool {
            spsc::Spsc { header: h, slots: s }.looks_full()
        }
        fn head_in_flight<T: bytemuck::Pod>(_: &Self::Header, _: &[Self::Slot<T>]) -> bool {
            false // an SPSC put publishes with one store
        }
        fn len<T: bytemuck::Pod>(h: &Self::Header, s: &[Self::Slot<T>]) -> Result<usize> {
            spsc::Spsc { header: h, slots: s }.len()
        }
    }

    impl Flavor for super::Mpmc {
        type Header = mpmc::MpmcHeader;
        type Slot<T> = mpmc::Slot<T>;
        type Cache = mpmc::Cache;
        const KIND: Kind = Kind::Queue;
        const PROBES: bool = true;
        #[inline]
        fn try_push<T: bytemuck::Pod>(
            h: &Self::Header,
            s: &[Self::Slot<T>],
            c: &Self::Cache,
            me: TaskId,
            v: T,
            probe: Probe,
        ) -> Result<(), Push<T>> {
            h.ring(s).try_push(me, c, v, probe)
        }
        #[inline]
        fn try_pop<T: bytemuck::Pod>(
            h: &Self::Header,
            s: &[Self::Slot<T>],
            c: &Self::Cache,
            me: TaskId,
            probe: Probe,
        ) -> Result<Option<T>> {
            h.ring(s).try_pop(me, c, probe)
        }
        fn release<T: bytemuck::Pod>(h: &Self::Header, s: &[Self::Slot<T>], c: &Self::Cache) {
            h.ring(s).release(c, crate::loom::current_task());
        }
        fn looks_empty<T: bytemuck::Pod>(h: &Self::Header, s: &[Self::Slot<T>]) -> bool {
            h.ring(s).looks_empty()
        }
        fn looks_full<T: bytemuck::Pod>(h: &Self::Header, s: &[Self::Slot<T>]) -> bool {
            h.ring(s).looks_full()
        }
        fn head_in_flight<T: bytemuck::Pod>(h: &Self::Header, s: &[Self::Slot<T>]) -> bool {
            h.ring(s).head_in_flight()
        }
        fn len<T: bytemuck::Pod>(h: &Self::Header, s: &[Self::Slot<T>]) -> Result<usize> {
            Ok(h.ring(s).len())
        }
    }
}

/// The state before the slots: the ring's positions, then the control line.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct FixedState<F: Flavor> {
    ring: F::Header,
    ctl: Control,
}

/// Creation parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FixedParams {
    /// `type_fingerprint::<T>()`.
    fp: u64,
    slots: usize,
    slot_size: usize,
}

// SAFETY: repr(C); the ring headers and Control are repr(C) atomics only
// (Padded and Control are aligned to 64, so the slots that follow are too);
// every position and stamp read is checked by the rings.
unsafe impl<F: Flavor> SharedState for FixedState<F> {
    const KIND: Kind = F::KIND;
    type Params = FixedParams;

    fn zeroed() -> Self {
        FixedState { ring: F::Header::default(), ctl: Control::default() }
    }

    fn init(&self, _: FixedParams) {}

    fn layout(p: &FixedParams) -> Result<Layout> {
        let tail_len = p
            .slots
            .checked_mul(p.slot_size)
            .filter(|n| isize::try_from(*n).is_ok())
            .ok_or(Error::InvalidArgument { what: "queue capacity too large for a segment" })?;
        Ok(Layout { type_fp: p.fp, tail_len })
    }

    /// The element type and slot count are checked by the handle, which knows
    /// `T`; here only that there is a typed fingerprint and some slots.
    fn check_layout(found: Layout) -> Result<()> {
        if found.type_fp == 0 || found.tail_len == 0 {
            return Err(Error::mismatch(
                "queue layout",
                "a typed queue with at least one slot",
                format!("fingerprint {:#x}, {} slot bytes", found.type_fp, found.tail_len),
            ));
        }
        Ok(())
    }
}

/// The engine of [`Queue`] and [`SpscQueue`]: a bounded queue of `T: Pod`
/// on the ring `F`.
pub(crate) struct RingQueue<F: Flavor, T: Pod> {
    state: Shared<FixedState<F>>,
    /// Slot count, a power of two, checked at open; fixed for the handle's life.
    slots: usize,
    cache: F::Cache,
    wait: Waiters,
    _elements: PhantomData<fn(T) -> T>,
}

impl<F: Flavor, T: Pod> Clone for RingQueue<F, T> {
    fn clone(&self) -> Self {
        RingQueue {
            state: self.state.clone(),
            slots: self.slots,
            cache: F::Cache::default(),
            wait: self.wait.clone(),
            _elements: PhantomData,
        }
    }
}

impl<F: Flavor, T: Pod> Drop for RingQueue<F, T> {
    fn drop(&mut self) {
        self.state.ctl.unregister(&self.wait);
        let (h, s) = self.ring();
        F::release(h, s, &self.cache);
    }
}

impl<F: Flavor, T: Pod> fmt::Debug for RingQueue<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(if F::PROBES { "Queue" } else { "SpscQueue" })
            .field("segment", &self.state)
            .field("capacity", &self.slots)
            .field("len", &self.len())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<F: Flavor, T: Pod> RingQueue<F, T> {
    fn params(capacity: usize) -> Result<FixedParams> {
        if align_of::<F::Slot<T>>() > 64 {
            return Err(Error::InvalidArgument { what: "queue elements must be aligned to at most 64 bytes" });
        }
        Ok(FixedParams {
            fp: type_fingerprint::<T>(),
            slots: ring::slots_for(capacity)?,
            slot_size: size_of::<F::Slot<T>>(),
        })
    }

    fn from_state(state: Shared<FixedState<F>>) -> Result<Self> {
        let layout = state.layout();
        check_type::<T>(layout.type_fp)?;
        let slot = size_of::<F::Slot<T>>();
        let slots = layout.tail_len / slot;
        if layout.tail_len % slot != 0 || !slots.is_power_of_two() || align_of::<F::Slot<T>>() > 64 {
            return Err(Error::mismatch(
                "queue slots",
                format!("a power-of-two number of {slot}-byte slots"),
                format!("{} bytes", layout.tail_len),
            ));
        }
        Ok(RingQueue { state, slots, cache: F::Cache::default(), wait: Waiters::default(), _elements: PhantomData })
    }

    /// A new empty queue holding at least `capacity` elements, in an anonymous
    /// segment (shared with child processes).
    pub(crate) fn new(capacity: usize) -> Result<Self> {
        Shared::anonymous(Self::params(capacity)?).and_then(Self::from_state)
    }

    /// A new empty queue in the named segment `name`, which must not exist.
    pub(crate) fn create(name: &str, capacity: usize) -> Result<Self> {
        Shared::create(name, Self::params(capacity)?).and_then(Self::from_state)
    }

    /// Opens the queue in the named segment `name`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if it holds another element type or kind of queue.
    pub(crate) fn open(name: &str) -> Result<Self> {
        Shared::open(name).and_then(Self::from_state)
    }

    #[inline]
    fn ring(&self) -> (&F::Header, &[F::Slot<T>]) {
        // SAFETY: the tail holds `slots` slots of this size (checked in
        // `from_state`), 64-aligned (the state's size is a multiple of 64) and
        // kept mapped by `state`; slots are atomics and `UnsafeCell`s of a Pod,
        // valid for any bytes.
        let slots = unsafe { std::slice::from_raw_parts(self.state.tail().cast::<F::Slot<T>>(), self.slots) };
        (&self.state.ring, slots)
    }

    /// How many elements the queue holds when full.
    pub(crate) fn capacity(&self) -> usize {
        self.slots
    }

    /// Elements in the queue (a snapshot; Python's `qsize`). A corrupt ring
    /// reads as full.
    pub(crate) fn len(&self) -> usize {
        let (h, s) = self.ring();
        F::len(h, s).unwrap_or(self.slots)
    }

    /// Whether the queue holds nothing (a snapshot).
    pub(crate) fn is_empty(&self) -> bool {
        let (h, s) = self.ring();
        F::looks_empty(h, s)
    }

    /// Whether the queue is full (a snapshot).
    pub(crate) fn is_full(&self) -> bool {
        let (h, s) = self.ring();
        F::looks_full(h, s)
    }

    /// Closes the queue: every waiter wakes; puts fail with
    /// [`PutError::Closed`]; gets drain what is left, then fail with
    /// [`GetError::Closed`]. Idempotent; affects every handle in every process.
    pub(crate) fn close(&self) {
        self.state.ctl.close();
    }

    /// Whether the queue was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.ctl.is_closed()
    }

    /// Appends `v`, waiting for room as long as it takes.
    ///
    /// # Errors
    /// [`PutError::Closed`] or [`PutError::Failed`], with `v`.
    #[inline]
    pub(crate) fn put(&self, v: T) -> Result<(), PutError<T>> {
        self.put_until(v, None, true)
    }

    /// Appends `v`, waiting at most `timeout` for room.
    pub(crate) fn put_timeout(&self, v: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_until(v, Some(Deadline::after(timeout)), true)
    }

    /// Appends `v` if there is room now; [`PutError::Full`] hands it back.
    #[inline]
    pub(crate) fn try_put(&self, v: T) -> Result<(), PutError<T>> {
        self.put_until(v, None, false)
    }

    /// Takes the oldest element, waiting as long as it takes.
    ///
    /// # Errors
    /// [`GetError::Closed`] once closed and drained; [`GetError::Failed`].
    #[inline]
    pub(crate) fn get(&self) -> Result<T, GetError> {
        self.get_until(None, true)
    }

    /// Takes the oldest element, waiting at most `timeout`.
    pub(crate) fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_until(Some(Deadline::after(timeout)), true)
    }

    /// Takes the oldest element if there is one now ([`GetError::Empty`] if
    /// not).
    #[inline]
    pub(crate) fn try_get(&self) -> Result<T, GetError> {
        self.get_until(None, false)
    }

    /// The caller's identity, which the MPMC ring's claim records hold; the
    /// SPSC ring names nobody, so its hot path skips the thread-local lookup.
    #[inline]
    fn me() -> TaskId {
        if F::PROBES { loom::current_task() } else { TaskId { tid: 0, start: 0 } }
    }

    // The fast path (one attempt, then the wake-up check) is inlined into the
    // caller and keeps nothing in memory; everything that waits is in the
    // out-of-line `*_slow` functions. When the wait loop's target (which
    // holds the value) was built on the fast path, its address escaped into
    // the loop and every put and get went through the stack: the blocking
    // calls ran at half the speed of `try_put`/`try_get`.
    #[allow(clippy::inline_always, reason = "measured: see the comment above")]
    #[inline(always)]
    fn put_until(&self, v: T, deadline: Option<Deadline>, block: bool) -> Result<(), PutError<T>> {
        let probing = if block { Probe::No } else { Probe::Gated };
        match PutTarget::attempt_once(self, Self::me(), v, probing) {
            Ok(Ok(())) => {
                self.state.ctl.not_empty.notify(1);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(v) if !block => Err(PutError::Full(v)),
            Err(v) => self.put_slow(v, deadline),
        }
    }

    #[inline(never)]
    fn put_slow(&self, v: T, deadline: Option<Deadline>) -> Result<(), PutError<T>> {
        let mut target = PutTarget { q: self, me: Self::me(), v: Some(v) };
        let outcome = wait::wait_after_attempt(&self.wait.cfg, deadline, &mut target)
            .unwrap_or_else(|| Err(PutError::Timeout(target.v.take().expect("kept while waiting"))));
        if outcome.is_ok() {
            self.state.ctl.not_empty.notify(1);
        }
        outcome
    }

    #[allow(clippy::inline_always, reason = "measured: see put_until")]
    #[inline(always)]
    fn get_until(&self, deadline: Option<Deadline>, block: bool) -> Result<T, GetError> {
        let probing = if block { Probe::No } else { Probe::Gated };
        match (GetTarget { q: self, me: Self::me() }).attempt_probing(probing) {
            Some(Ok(v)) => {
                self.state.ctl.not_full.notify(1);
                Ok(v)
            }
            Some(Err(e)) => Err(e),
            None if !block => Err(GetError::Empty),
            None => self.get_slow(deadline),
        }
    }

    #[inline(never)]
    fn get_slow(&self, deadline: Option<Deadline>) -> Result<T, GetError> {
        let mut target = GetTarget { q: self, me: Self::me() };
        let outcome = wait::wait_after_attempt(&self.wait.cfg, deadline, &mut target).unwrap_or(Err(GetError::Timeout));
        if outcome.is_ok() {
            self.state.ctl.not_full.notify(1);
        }
        outcome
    }
}

/// A blocked put, for the wait loop; holds the value between attempts.
struct PutTarget<'a, F: Flavor, T: Pod> {
    q: &'a RingQueue<F, T>,
    me: TaskId,
    v: Option<T>,
}

impl<F: Flavor, T: Pod> PutTarget<'_, F, T> {
    /// One try: `Err(v)` hands the value back if the ring is full.
    #[allow(clippy::inline_always, reason = "measured: see RingQueue::put_until")]
    #[inline(always)]
    fn attempt_once(queue: &RingQueue<F, T>, me: TaskId, value: T, probe: Probe) -> Result<Result<(), PutError<T>>, T> {
        if queue.state.ctl.is_closed() {
            return Ok(Err(PutError::Closed(value)));
        }
        let (header, slots) = queue.ring();
        match F::try_push(header, slots, &queue.cache, me, value, probe) {
            Ok(()) => Ok(Ok(())),
            Err(Push::Full(v)) => Err(v),
            Err(Push::Failed(v, e)) => Ok(Err(PutError::Failed(v, Box::new(e)))),
        }
    }
}

impl<F: Flavor, T: Pod> WaitTarget for PutTarget<'_, F, T> {
    type Output = Result<(), PutError<T>>;
    const PROBES: bool = F::PROBES;

    #[inline]
    fn attempt(&mut self, probe: bool) -> Option<Self::Output> {
        let v = self.v.take()?;
        match Self::attempt_once(self.q, self.me, v, probe.into()) {
            Ok(done) => Some(done),
            Err(v) => {
                self.v = Some(v);
                None
            }
        }
    }

    fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
        let (h, s) = self.q.ring();
        let ctl = &self.q.state.ctl;
        ctl.sleep_not_full(&self.q.wait, until, || ctl.is_closed() || !F::looks_full(h, s))
    }
}

/// A blocked get, for the wait loop.
struct GetTarget<'a, F: Flavor, T: Pod> {
    q: &'a RingQueue<F, T>,
    me: TaskId,
}

impl<F: Flavor, T: Pod> WaitTarget for GetTarget<'_, F, T> {
    type Output = Result<T, GetError>;
    const PROBES: bool = F::PROBES;

    #[allow(clippy::inline_always, reason = "measured: see RingQueue::put_until")]
    #[inline(always)]
    fn attempt(&mut self, probe: bool) -> Option<Self::Output> {
        self.attempt_probing(probe.into())
    }

    fn sleep(&mut self, until: Option<Deadline>) -> FutexWait {
        let (h, s) = self.q.ring();
        let ctl = &self.q.state.ctl;
        ctl.sleep_not_empty(&self.q.wait, until, || {
            (ctl.is_closed() && !F::head_in_flight(h, s)) || !F::looks_empty(h, s)
        })
    }
}

impl<F: Flavor, T: Pod> GetTarget<'_, F, T> {
    #[allow(clippy::inline_always, reason = "measured: see RingQueue::put_until")]
    #[inline(always)]
    fn attempt_probing(&mut self, probe: Probe) -> Option<Result<T, GetError>> {
        let (h, s) = self.q.ring();
        let pop = || F::try_pop(h, s, &self.q.cache, self.me, probe);
        match pop() {
            Ok(Some(v)) => Some(Ok(v)),
            Ok(None) if self.q.state.ctl.is_closed() => {
                // Closed: one more look, for puts that finished before the
                // close (the close's Release and our Acquire order them).
                match pop() {
                    Ok(Some(v)) => Some(Ok(v)),
                    // A put is half-way at the head: if its producer lives, it
                    // (and any finished behind it) will be published; if it
                    // died, the next probing attempt skips it. Not drained yet.
                    Ok(None) if F::head_in_flight(h, s) => None,
                    Ok(None) => Some(Err(GetError::Closed)),
                    Err(e) => Some(Err(GetError::Failed(Box::new(e)))),
                }
            }
            Ok(None) => None,
            Err(e) => Some(Err(GetError::Failed(Box::new(e)))),
        }
    }
}

impl<F: Flavor, T: Pod> Serialize for RingQueue<F, T> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        self.state.serialize(s)
    }
}

impl<'de, F: Flavor, T: Pod> Deserialize<'de> for RingQueue<F, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_state(Shared::deserialize(d)?).map_err(custom_error::<D::Error>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_flavours_are_fifo_and_close_drains() {
        fn check<F: Flavor>() {
            let q = RingQueue::<F, u32>::new(3).unwrap();
            assert_eq!(q.capacity(), 4);
            for i in 0..4 {
                q.try_put(i).unwrap();
            }
            assert!(q.is_full());
            assert!(matches!(q.put_timeout(9, Duration::from_millis(5)), Err(PutError::Timeout(9))));
            assert_eq!(q.len(), 4);
            assert_eq!(q.get().unwrap(), 0);
            q.close();
            assert!(matches!(q.put(5), Err(PutError::Closed(5))));
            assert_eq!((q.get().unwrap(), q.try_get().unwrap(), q.get().unwrap()), (1, 2, 3));
            assert!(matches!(q.get(), Err(GetError::Closed)));
            assert!(q.is_empty());
        }
        check::<Spsc>();
        check::<Mpmc>();
    }

    #[test]
    fn a_timed_get_on_an_empty_queue_times_out() {
        let q = Queue::<u64>::new(1).unwrap();
        assert!(matches!(q.try_get(), Err(GetError::Empty)));
        assert!(matches!(q.get_timeout(Duration::from_millis(5)), Err(GetError::Timeout)));
    }
}

/// Declares a public queue type over the engine: the same methods, documented
/// once here, on each.
macro_rules! ring_queue {
    ($(#[$doc:meta])* $name:ident, $flavor:ty) => {
        $(#[$doc])*
        pub struct $name<T: Pod>(RingQueue<$flavor, T>);

        impl<T: Pod> Clone for $name<T> {
            fn clone(&self) -> Self {
                $name(self.0.clone())
            }
        }

        impl<T: Pod> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl<T: Pod> Serialize for $name<T> {
            fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de, T: Pod> Deserialize<'de> for $name<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                RingQueue::deserialize(d).map($name)
            }
        }

        impl<T: Pod> $name<T> {
            /// A new empty queue holding at least `capacity` elements (rounded
            /// up to a power of two), in an anonymous segment shared with
            /// child processes.
            pub fn new(capacity: usize) -> Result<Self> {
                RingQueue::new(capacity).map($name)
            }

            /// A new empty queue in the named segment `name`, which must not exist.
            pub fn create(name: &str, capacity: usize) -> Result<Self> {
                RingQueue::create(name, capacity).map($name)
            }

            /// Opens the queue in the named segment `name`.
            ///
            /// # Errors
            /// [`Error::Mismatch`] if it holds another element type or kind of
            /// queue, and the errors of [`Segment::open`](crate::Segment::open).
            pub fn open(name: &str) -> Result<Self> {
                RingQueue::open(name).map($name)
            }

            /// Sets how this handle's blocking calls wait, builder-style.
            #[must_use]
            pub fn with_wait_strategy(self, strategy: crate::WaitStrategy) -> Self {
                self.0.wait.set_strategy(strategy);
                self
            }

            /// Sets how this handle's blocking calls wait (other handles keep theirs).
            pub fn set_wait_strategy(&self, strategy: crate::WaitStrategy) {
                self.0.wait.set_strategy(strategy);
            }

            /// How this handle's blocking calls wait.
            pub fn wait_strategy(&self) -> crate::WaitStrategy {
                self.0.wait.strategy()
            }

            /// The name of the segment holding the queue (`None` if anonymous).
            pub fn name(&self) -> Option<&str> {
                self.0.state.segment().and_then(crate::Segment::name)
            }

            /// How many elements the queue holds when full (the capacity asked
            /// for, rounded up to a power of two).
            pub fn capacity(&self) -> usize {
                self.0.capacity()
            }

            /// Elements in the queue (a snapshot; Python's `qsize`).
            pub fn len(&self) -> usize {
                self.0.len()
            }

            /// Whether the queue holds nothing (a snapshot).
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            /// Whether the queue is full (a snapshot).
            pub fn is_full(&self) -> bool {
                self.0.is_full()
            }

            /// Closes the queue for every handle in every process: waiters
            /// wake; puts fail with [`PutError::Closed`]; gets drain what is
            /// left, then fail with [`GetError::Closed`]. Idempotent.
            pub fn close(&self) {
                self.0.close();
            }

            /// Whether the queue was closed.
            pub fn is_closed(&self) -> bool {
                self.0.is_closed()
            }

            /// Appends `value`, waiting for room as long as it takes.
            ///
            /// # Errors
            /// [`PutError::Closed`] or [`PutError::Failed`], with the value.
            #[inline]
            pub fn put(&self, value: T) -> Result<(), PutError<T>> {
                self.0.put(value)
            }

            /// Appends `value`, waiting at most `timeout` for room
            /// ([`PutError::Timeout`] hands it back).
            pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError<T>> {
                self.0.put_timeout(value, timeout)
            }

            /// Appends `value` if there is room now ([`PutError::Full`] hands
            /// it back). Python's `put_nowait`.
            #[inline]
            pub fn try_put(&self, value: T) -> Result<(), PutError<T>> {
                self.0.try_put(value)
            }

            /// Takes the oldest element, waiting as long as it takes.
            ///
            /// # Errors
            /// [`GetError::Closed`] once closed and drained; [`GetError::Failed`].
            #[inline]
            pub fn get(&self) -> Result<T, GetError> {
                self.0.get()
            }

            /// Takes the oldest element, waiting at most `timeout`
            /// ([`GetError::Timeout`]).
            pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
                self.0.get_timeout(timeout)
            }

            /// Takes the oldest element if there is one now
            /// ([`GetError::Empty`] if not). Python's `get_nowait`.
            #[inline]
            pub fn try_get(&self) -> Result<T, GetError> {
                self.0.try_get()
            }
        }
    };
}

ring_queue! {
    /// A bounded multi-producer multi-consumer queue of `T: Pod` between
    /// processes (Python's `multiprocessing.Queue` for fixed-size values).
    ///
    /// Lock-free (positions claimed on each side's index, stamped slots, as
    /// crossbeam's `ArrayQueue`). A producer killed in the middle of a put never
    /// blocks consumers: the position it claimed is skipped once a consumer
    /// finds it dead (each thread records the position it is claiming in the
    /// segment); a consumer killed in the middle of a get loses at most the
    /// element it was taking. Order is FIFO per producer.
    ///
    /// At most 256 live threads (over all processes) may have put, and 256
    /// have got: each takes a claim record on its first put or get, and keeps
    /// it until it drops the handle it used or exits (a handle shared by many
    /// threads gives back only the dropping thread's record; an exited
    /// thread's is taken over). One more gets [`Error::Overflow`] in
    /// [`PutError::Failed`] or [`GetError::Failed`]. The records take 33 KB of
    /// the segment, whatever the capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmproc::{PutError, Queue};
    ///
    /// let q = Queue::<u64>::new(2)?;
    /// q.put(1)?;
    /// q.try_put(2)?;
    /// assert!(matches!(q.try_put(3), Err(PutError::Full(3)))); // the value comes back
    /// assert_eq!(q.get()?, 1);
    /// q.close();
    /// assert_eq!(q.get()?, 2); // drains what is left
    /// assert!(q.get().is_err()); // then Closed
    /// # Ok::<(), shmproc::Error>(())
    /// ```
    Queue, Mpmc
}

ring_queue! {
    /// A bounded single-producer single-consumer queue of `T: Pod` between
    /// processes (Python's `SimpleQueue` when one process puts and one gets):
    /// the fastest path.
    ///
    /// At most one thread may put and one get at a time (the roles may move
    /// between processes); a second concurrent producer or consumer may lose or
    /// repeat elements, never read or write out of bounds. Each side keeps a
    /// cached copy of the other's position in its handle, so in the common case
    /// a put or get touches no cache line the other side writes.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmproc::SpscQueue;
    ///
    /// let q = SpscQueue::<[u8; 16]>::new(64)?;
    /// q.put(*b"sixteen bytes!!!")?;
    /// assert_eq!(&q.get()?, b"sixteen bytes!!!");
    /// # Ok::<(), shmproc::Error>(())
    /// ```
    SpscQueue, Spsc
}
