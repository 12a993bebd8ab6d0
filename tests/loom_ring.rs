//! Loom models of the rings under the queues: the SPSC ring, the MPMC ring
//! (index claims, stamped slots, claim records and the passing over of dead
//! claimants), and [`Side`]'s wake protocol between them and sleepers.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --target-dir target/loom --test 'loom_*'`.
//! The ring module is public under `cfg(loom)` only (`#[doc(hidden)]`), so these
//! models drive the rings directly, on heap-allocated headers and slots.
//! Elements live in loom `UnsafeCell`s, so a write and a read of one slot that
//! the positions or stamps do not order by happens-before is reported as a
//! causality violation; the futex is modelled (see `src/loom.rs`), so a lost
//! wake-up is reported as a deadlock.
//!
//! `LOOM_MAX_PREEMPTIONS` overrides the preemption bound each model picks.
#![cfg(loom)]

mod loom_common;

use loom::sync::Arc;
use loom::thread;
use loom_common::model;
use shmproc::ring::mpmc::{self, Claim, Mpmc, MpmcIndex};
use shmproc::ring::spsc::{self, Cache, Spsc, SpscHeader};
use shmproc::ring::{FencedWaiter, Push, Side};

/// An SPSC ring of `u32` with the two sides a queue sleeps on.
#[derive(Debug)]
struct SpscRing {
    header: SpscHeader,
    slots: Vec<spsc::Slot<u32>>,
    not_empty: Side,
    not_full: Side,
}

// SAFETY: the slots are written and read only as the ring's positions allow;
// loom checks that claim on every access (the slots are loom `UnsafeCell`s).
unsafe impl Sync for SpscRing {}

impl SpscRing {
    fn new(slots: usize) -> Arc<Self> {
        Arc::new(SpscRing {
            header: SpscHeader::new(),
            slots: (0..slots).map(|_| spsc::Slot::new()).collect(),
            not_empty: Side::new(),
            not_full: Side::new(),
        })
    }

    fn ring(&self) -> Spsc<'_, u32> {
        Spsc { header: &self.header, slots: &self.slots }
    }

    /// Pushes `v`, yielding while the ring is full.
    fn push_spinning(&self, cache: &Cache, mut v: u32) {
        loop {
            match self.ring().try_push(cache, v) {
                Ok(()) => return,
                Err(Push::Full(back)) => v = back,
                Err(Push::Failed(_, e)) => panic!("push: {e}"),
            }
            thread::yield_now();
        }
    }

    /// Pops, yielding while the ring is empty.
    fn pop_spinning(&self, cache: &Cache) -> u32 {
        loop {
            if let Some(v) = self.ring().try_pop(cache).expect("pop") {
                return v;
            }
            thread::yield_now();
        }
    }

    /// Pushes `v`, sleeping on `not_full` while the ring is full (as the
    /// queue's blocking put does), then wakes a consumer.
    fn push_blocking(&self, cache: &Cache, mut v: u32) {
        loop {
            match self.ring().try_push(cache, v) {
                Ok(()) => break,
                Err(Push::Full(back)) => v = back,
                Err(Push::Failed(_, e)) => panic!("push: {e}"),
            }
            self.not_full.sleep_untimed(|| !self.ring().looks_full());
        }
        self.not_empty.notify(1);
    }

    /// Pops, sleeping on `not_empty` while the ring is empty (as the queue's
    /// blocking get does), then wakes a producer.
    fn pop_blocking(&self, cache: &Cache) -> u32 {
        let v = loop {
            if let Some(v) = self.ring().try_pop(cache).expect("pop") {
                break v;
            }
            self.not_empty.sleep_untimed(|| !self.ring().looks_empty());
        };
        self.not_full.notify(1);
        v
    }
}

/// An MPMC ring of `u32` with the two sides a queue sleeps on.
#[derive(Debug)]
struct MpmcRing {
    index: MpmcIndex,
    producers: Vec<Claim>,
    consumers: Vec<Claim>,
    slots: Vec<mpmc::Slot<u32>>,
    not_empty: Side,
    not_full: Side,
}

// SAFETY: a slot's element is accessed only by the thread whose claim its
// stamp holds; loom checks that claim on every access.
unsafe impl Sync for MpmcRing {}

impl MpmcRing {
    fn new(slots: usize) -> Arc<Self> {
        // Three claim records a side: every model has at most three threads.
        Arc::new(MpmcRing {
            index: MpmcIndex::default(),
            producers: (0..3).map(|_| Claim::default()).collect(),
            consumers: (0..3).map(|_| Claim::default()).collect(),
            slots: (0..slots).map(|_| mpmc::Slot::new()).collect(),
            not_empty: Side::new(),
            not_full: Side::new(),
        })
    }

    fn ring(&self) -> Mpmc<'_, u32> {
        Mpmc { index: &self.index, producers: &self.producers, consumers: &self.consumers, slots: &self.slots }
    }

    /// Pops until the ring is empty (after every other thread was joined).
    fn drain(&self) -> Vec<u32> {
        std::iter::from_fn(|| self.ring().try_pop_here(false).expect("pop")).collect()
    }

    /// As [`SpscRing::push_blocking`].
    fn push_blocking(&self, mut v: u32) {
        loop {
            match self.ring().try_push_here(v, false) {
                Ok(()) => break,
                Err(Push::Full(back)) => v = back,
                Err(Push::Failed(_, e)) => panic!("push: {e}"),
            }
            self.not_full.sleep_untimed(|| !self.ring().looks_full());
        }
        self.not_empty.notify(1);
    }

    /// As [`SpscRing::pop_blocking`].
    fn pop_blocking(&self) -> u32 {
        let v = loop {
            if let Some(v) = self.ring().try_pop_here(false).expect("pop") {
                break v;
            }
            self.not_empty.sleep_untimed(|| !self.ring().looks_empty());
        };
        self.not_full.notify(1);
        v
    }
}

/// One try of a push on the MPMC ring: `Some(v)` if it went in, `None` if the
/// ring was (or looked) full; `Corrupt` fails the model.
trait PushOnce {
    fn push_once(&self, v: u32) -> Option<u32>;
    /// As `push_once`, probing a full ring's stuck reader.
    fn push_probing(&self, v: u32) -> Option<u32>;
}

impl PushOnce for Mpmc<'_, u32> {
    fn push_probing(&self, v: u32) -> Option<u32> {
        match self.try_push_here(v, true) {
            Ok(()) => Some(v),
            Err(Push::Full(back)) => {
                assert_eq!(back, v);
                None
            }
            Err(Push::Failed(_, e)) => panic!("push: {e}"),
        }
    }

    fn push_once(&self, v: u32) -> Option<u32> {
        match self.try_push_here(v, false) {
            Ok(()) => Some(v),
            Err(Push::Full(back)) => {
                assert_eq!(back, v);
                None
            }
            Err(Push::Failed(_, e)) => panic!("push: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// 1. SPSC ring

/// Three values through two slots (so the producer reuses a slot the consumer
/// just read): in order, each exactly once, and no data race on the slots.
#[test]
fn spsc_values_arrive_in_order_through_a_wrap() {
    model(5, || {
        let r = SpscRing::new(2);
        let r2 = r.clone();
        let producer = thread::spawn(move || {
            let cache = Cache::default();
            for v in 1..=3 {
                r2.push_spinning(&cache, v);
            }
        });
        let cache = Cache::default();
        let got: Vec<u32> = (0..3).map(|_| r.pop_spinning(&cache)).collect();
        producer.join().unwrap();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(r.ring().try_pop(&cache).unwrap(), None);
    });
}

// ---------------------------------------------------------------------------
// 2. MPMC ring
//
// Two threads that spin against each other (two consumers on an empty ring,
// two producers on a full one) can yield to each other forever under loom,
// which assumes no fairness, so these models make one attempt per operation
// and drain the ring afterwards: what was pushed is what comes out, once.

/// Two producers, one value each, and two consumers, one attempt each, on two
/// slots: the concurrent claims hand every value to exactly one consumer (the
/// drain after the joins finds the rest), and the slots are race-free.
#[test]
fn mpmc_two_producers_two_consumers() {
    model(2, || {
        let r = MpmcRing::new(2);
        let producers: Vec<_> = [10, 20]
            .into_iter()
            .map(|v| {
                let r = r.clone();
                thread::spawn(move || r.ring().try_push_here(v, false).expect("two values fit in two slots"))
            })
            .collect();
        let r2 = r.clone();
        let consumer = thread::spawn(move || r2.ring().try_pop_here(false).expect("pop"));
        let mine = r.ring().try_pop_here(false).expect("pop");
        let theirs = consumer.join().unwrap();
        for p in producers {
            p.join().unwrap();
        }
        let mut got: Vec<u32> = mine.into_iter().chain(theirs).chain(r.drain()).collect();
        got.sort_unstable();
        assert_eq!(got, [10, 20]);
    });
}

/// A full ring of two, one consumer taking two and two producers trying one
/// value each: a producer either gets a slot its last reader released (the
/// next lap) or is told `Full` and gets its value back; the consumer sees the
/// ring in FIFO order, and every value that went in comes out exactly once.
#[test]
fn mpmc_two_producers_reuse_released_slots() {
    model(3, || {
        let r = MpmcRing::new(2);
        for v in [1, 2] {
            r.ring().try_push_here(v, false).expect("an empty ring of two");
        }
        let producers: Vec<_> = [10, 20]
            .into_iter()
            .map(|v| {
                let r = r.clone();
                thread::spawn(move || match r.ring().try_push_here(v, false) {
                    Ok(()) => Some(v),
                    Err(Push::Full(back)) => {
                        assert_eq!(back, v);
                        None
                    }
                    Err(Push::Failed(_, e)) => panic!("push: {e}"),
                })
            })
            .collect();
        let mut got: Vec<u32> = (0..2).filter_map(|_| r.ring().try_pop_here(false).expect("pop")).collect();
        let mut pushed: Vec<u32> = producers.into_iter().filter_map(|p| p.join().unwrap()).collect();
        got.extend(r.drain());
        assert_eq!(got[..2], [1, 2], "FIFO: got {got:?}");
        let mut rest = got[2..].to_vec();
        rest.sort_unstable();
        pushed.sort_unstable();
        assert_eq!(rest, pushed, "got {got:?}");
    });
}

// ---------------------------------------------------------------------------
// 3. The wake protocol

/// A consumer that sleeps on an empty SPSC ring is woken by the producer's
/// push (two values: it may sleep twice); a lost wake-up is a deadlock.
#[test]
fn spsc_sleeping_consumer_is_woken() {
    model(4, || {
        let r = SpscRing::new(2);
        let r2 = r.clone();
        let consumer = thread::spawn(move || {
            let cache = Cache::default();
            [r2.pop_blocking(&cache), r2.pop_blocking(&cache)]
        });
        let cache = Cache::default();
        r.push_blocking(&cache, 1);
        r.push_blocking(&cache, 2);
        assert_eq!(consumer.join().unwrap(), [1, 2]);
    });
}

/// A producer that sleeps on a full SPSC ring is woken by the consumer's pops
/// (two values into a ring already full: it may sleep twice, and the consumer
/// may sleep on the ring it emptied).
#[test]
fn spsc_sleeping_producer_is_woken() {
    model(4, || {
        let r = SpscRing::new(2);
        let pc = Cache::default();
        r.push_blocking(&pc, 1);
        r.push_blocking(&pc, 2);
        let r2 = r.clone();
        let producer = thread::spawn(move || {
            r2.push_blocking(&pc, 3);
            r2.push_blocking(&pc, 4);
        });
        let cache = Cache::default();
        let got: Vec<u32> = (0..4).map(|_| r.pop_blocking(&cache)).collect();
        producer.join().unwrap();
        assert_eq!(got, [1, 2, 3, 4]);
    });
}

/// Fenced waiters (`WaitStrategy::Block` handles): with the waker's light
/// fence free (as in a process registered for membarrier), a consumer that
/// sleeps as a registered fenced waiter pairs with the full fence the waker
/// adds once it sees the count, and is woken for each value. The waker reads
/// both counts with one load and, seeing a fenced waiter, fences and reads
/// the sleepers' count again: using the first read would lose a wake-up
/// (a deadlock here). The registration is taken back at the end.
///
/// The waiter registers before the producer starts: a registration's
/// membarrier forces a barrier on every CPU running a waker, which loom
/// cannot model, so a notify racing with the registration itself is outside
/// the model (the argument for it is in `ring::Side`'s docs).
#[test]
fn spsc_fenced_sleeping_consumer_is_woken() {
    shmproc::ring::light_fence_is_free(true);
    model(3, || {
        let r = SpscRing::new(2);
        let waiter = FencedWaiter::default();
        r.not_empty.sleep_fenced_untimed(&waiter, || true); // registers, does not sleep
        let r2 = r.clone();
        let consumer = thread::spawn(move || {
            let cache = Cache::default();
            let mut got = [0; 2];
            for slot in &mut got {
                *slot = loop {
                    if let Some(v) = r2.ring().try_pop(&cache).expect("pop") {
                        break v;
                    }
                    r2.not_empty.sleep_fenced_untimed(&waiter, || !r2.ring().looks_empty());
                };
            }
            r2.not_empty.unregister_fenced(&waiter);
            got
        });
        let cache = Cache::default();
        for v in [1, 2] {
            r.ring().try_push(&cache, v).expect("room for two");
            r.not_empty.notify(1);
        }
        assert_eq!(consumer.join().unwrap(), [1, 2]);
    });
    shmproc::ring::light_fence_is_free(false);
}

/// As [`spsc_sleeping_consumer_is_woken`], on the MPMC ring (whose
/// "empty" also covers a slot still being written).
#[test]
fn mpmc_sleeping_consumer_is_woken() {
    model(4, || {
        let r = MpmcRing::new(2);
        let r2 = r.clone();
        let consumer = thread::spawn(move || [r2.pop_blocking(), r2.pop_blocking()]);
        r.push_blocking(1);
        r.push_blocking(2);
        assert_eq!(consumer.join().unwrap(), [1, 2]);
    });
}

/// As [`spsc_sleeping_producer_is_woken`], on the MPMC ring (whose "full"
/// also covers a slot of the previous lap still being read).
#[test]
fn mpmc_sleeping_producer_is_woken() {
    model(3, || {
        let r = MpmcRing::new(2);
        r.push_blocking(1);
        r.push_blocking(2);
        let r2 = r.clone();
        let producer = thread::spawn(move || {
            r2.push_blocking(3);
            r2.push_blocking(4);
        });
        let got: Vec<u32> = (0..4).map(|_| r.pop_blocking()).collect();
        producer.join().unwrap();
        assert_eq!(got, [1, 2, 3, 4]);
    });
}

/// Two consumers asleep (or about to be) on one side, and one `notify(1)` per
/// pushed value: each value reaches a consumer, whichever the wake-up picks.
#[test]
fn mpmc_two_sleeping_consumers_one_wake_each() {
    model(2, || {
        let r = MpmcRing::new(2);
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let r = r.clone();
                thread::spawn(move || r.pop_blocking())
            })
            .collect();
        r.push_blocking(1);
        r.push_blocking(2);
        let mut got: Vec<u32> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

/// The same with the roles reversed: two producers asleep (or about to be) on
/// a full ring (of one slot, a queue of capacity 1), and one `notify(1)` per
/// popped value.
#[test]
fn mpmc_two_sleeping_producers_one_wake_each() {
    model(1, || {
        let r = MpmcRing::new(1);
        r.push_blocking(1);
        let producers: Vec<_> = [10, 20]
            .into_iter()
            .map(|v| {
                let r = r.clone();
                thread::spawn(move || r.push_blocking(v))
            })
            .collect();
        let got: Vec<u32> = (0..3).map(|_| r.pop_blocking()).collect();
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(got[0], 1, "FIFO: got {got:?}");
        let mut rest = got[1..].to_vec();
        rest.sort_unstable();
        assert_eq!(rest, [10, 20], "got {got:?}");
    });
}

// ---------------------------------------------------------------------------
// 4. A thread preempted between its reads: never `Corrupt`
//
// `try_push` / `try_pop` read their index, then the stamp of the slot it
// names, and call a lap that does not fit corruption only if the index still
// holds the value read before. A thread preempted between the two reads while
// the others take the ring round finds the slot laps ahead: stale, not
// corrupt. (These models found that in the previous, hint-based design,
// whose hints could also go back; the index-claim design keeps the models.)

/// A producer that tries once while the consumer side takes a one-slot ring
/// round twice: `Full` or `Ok`, never `Corrupt`; every value out exactly once.
#[test]
fn mpmc_preempted_push_is_not_corrupt() {
    model(2, || {
        let r = MpmcRing::new(1);
        let r2 = r.clone();
        let producer = thread::spawn(move || match r2.ring().try_push_here(100, false) {
            Ok(()) => Some(100),
            Err(Push::Full(_)) => None,
            Err(Push::Failed(_, e)) => panic!("push: {e}"),
        });
        let mut pushed = Vec::new();
        let mut got = Vec::new();
        for v in [1, 2] {
            if r.ring().try_push_here(v, false).is_ok() {
                pushed.push(v);
            }
            got.extend(r.ring().try_pop_here(false).expect("pop"));
        }
        pushed.extend(producer.join().unwrap());
        got.extend(r.drain());
        pushed.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, pushed);
    });
}

/// A consumer that tries once while the other thread takes a one-slot ring
/// round three times: a value or `None`, never `Corrupt`; every value out
/// exactly once.
#[test]
fn mpmc_preempted_pop_is_not_corrupt() {
    model(2, || {
        let r = MpmcRing::new(1);
        let r2 = r.clone();
        let consumer = thread::spawn(move || r2.ring().try_pop_here(false).expect("pop"));
        let mut pushed = Vec::new();
        let mut got = Vec::new();
        for v in [1, 2, 3] {
            if r.ring().try_push_here(v, false).is_ok() {
                pushed.push(v);
            }
            got.extend(r.ring().try_pop_here(false).expect("pop"));
        }
        got.extend(consumer.join().unwrap());
        got.extend(r.drain());
        got.sort_unstable();
        assert_eq!(got, pushed);
    });
}

/// Two consumers race on a full ring of two while the main thread goes on
/// putting and taking: nothing is taken twice or skipped, never `Corrupt`,
/// and once drained the ring's snapshots say so (`looks_empty`, `len` 0, no
/// put in flight).
#[test]
fn mpmc_racing_consumers_leave_consistent_snapshots() {
    model(2, || {
        let r = MpmcRing::new(2);
        let mut pushed = vec![1, 2];
        for v in [1, 2] {
            r.ring().try_push_here(v, false).expect("an empty ring of two");
        }
        let r2 = r.clone();
        let consumer = thread::spawn(move || r2.ring().try_pop_here(false).expect("pop"));
        let mut got: Vec<u32> = r.ring().try_pop_here(false).expect("pop").into_iter().collect();
        pushed.extend([3, 4].into_iter().filter_map(|v| r.ring().push_once(v)));
        got.extend(r.ring().try_pop_here(false).expect("pop"));
        let theirs = consumer.join().unwrap();
        got.extend(theirs);
        got.extend(r.drain());
        assert!(r.ring().looks_empty() && !r.ring().looks_full(), "drained: got {got:?}");
        assert_eq!(r.ring().len(), 0);
        got.sort_unstable();
        assert_eq!(got, pushed);
    });
}

/// The same on the producers' side: two producers race on an empty ring of
/// two while the main thread also takes; every value comes out once, and the
/// snapshots agree with the contents at the end.
#[test]
fn mpmc_racing_producers_leave_consistent_snapshots() {
    model(2, || {
        let r = MpmcRing::new(2);
        let r2 = r.clone();
        let producer = thread::spawn(move || r2.ring().push_once(10));
        r.ring().try_push_here(20, false).expect("room for one");
        let mut got: Vec<u32> = r.ring().try_pop_here(false).expect("pop").into_iter().collect();
        let mut pushed = vec![20];
        pushed.extend(r.ring().push_once(30));
        pushed.extend(producer.join().unwrap());
        let left = pushed.len() - got.len();
        assert_eq!(r.ring().len(), left, "got {got:?} of {pushed:?}");
        assert_eq!(r.ring().looks_full(), left == 2);
        got.extend(r.drain());
        assert!(r.ring().looks_empty());
        got.sort_unstable();
        pushed.sort_unstable();
        assert_eq!(got, pushed);
    });
}

// ---------------------------------------------------------------------------
// 5. Dying claimants (SPEC §4)
//
// A model thread "dies" right after its index CAS (`claim_*_and_die`, which
// marks it dead for `task_alive` at once and returns). Probing operations
// must pass over a dead claimant's position, and must never pass over a live
// one's: the record protocol in `src/ring/mpmc.rs` ("Why a live claimant is
// never passed over").

/// The key race: two live producers put while a consumer probes at every
/// attempt, so it scans the claim records whenever it finds a put in flight
/// at the head. A skip of a live producer's position would lose its value (or
/// its `FULL` store would land on a skipped slot): every value must come out
/// exactly once, each producer's in order.
#[test]
fn mpmc_probing_consumer_never_skips_a_live_put() {
    model(2, || {
        let r = MpmcRing::new(2);
        let producers: Vec<_> = [10, 20]
            .into_iter()
            .map(|v| {
                let r = r.clone();
                thread::spawn(move || r.ring().try_push_here(v, false).expect("two values fit in two slots"))
            })
            .collect();
        let mut got: Vec<u32> = (0..2).filter_map(|_| r.ring().try_pop_here(true).expect("pop")).collect();
        for p in producers {
            p.join().unwrap();
        }
        got.extend(std::iter::from_fn(|| r.ring().try_pop_here(true).expect("pop")));
        got.sort_unstable();
        assert_eq!(got, [10, 20]);
    });
}

/// One producer putting twice while a probing consumer takes: in order, none
/// lost, even when the consumer scans between the producer's claim and its
/// publish, or between its publish and the clearing of its record.
#[test]
fn mpmc_probing_consumer_keeps_one_producers_order() {
    model(3, || {
        let r = MpmcRing::new(2);
        let r2 = r.clone();
        let producer = thread::spawn(move || {
            for v in [1, 2] {
                r2.ring().try_push_here(v, false).expect("two values fit in two slots");
            }
        });
        let mut got: Vec<u32> = (0..2).filter_map(|_| r.ring().try_pop_here(true).expect("pop")).collect();
        producer.join().unwrap();
        got.extend(std::iter::from_fn(|| r.ring().try_pop_here(true).expect("pop")));
        assert_eq!(got, [1, 2]);
    });
}

/// A producer gives its claim record back between two puts (a handle's drop,
/// then a new handle) while a consumer probes: the record's release and the
/// new registration are ordered after the publish, so the prober never
/// passes over either put, and they arrive in order.
#[test]
fn mpmc_a_record_given_back_and_taken_again_under_a_probe() {
    model(2, || {
        let r = MpmcRing::new(2);
        let r2 = r.clone();
        let producer = thread::spawn(move || {
            r2.ring().try_push_here(1, false).expect("room");
            r2.ring().release_here();
            r2.ring().try_push_here(2, false).expect("room");
        });
        let mut got: Vec<u32> = (0..2).filter_map(|_| r.ring().try_pop_here(true).expect("pop")).collect();
        producer.join().unwrap();
        got.extend(std::iter::from_fn(|| r.ring().try_pop_here(true).expect("pop")));
        assert_eq!(got, [1, 2]);
    });
}

/// A producer dies between its claim and its publish while another puts: a
/// probing consumer passes over the dead one's position and gets the live
/// one's value; nothing else is lost, and the ring works for the next lap.
#[test]
fn mpmc_dead_writers_position_is_skipped() {
    model(2, || {
        let r = MpmcRing::new(2);
        let r2 = r.clone();
        let dying = thread::spawn(move || r2.ring().claim_push_and_die());
        let r3 = r.clone();
        let live = thread::spawn(move || r3.ring().try_push_here(7, false).expect("room for two"));
        let mut got: Vec<u32> = r.ring().try_pop_here(true).expect("pop").into_iter().collect();
        assert!(dying.join().unwrap().is_some(), "an empty ring of two has room");
        live.join().unwrap();
        // Both claimants are done now (one dead): probing drains the rest.
        for _ in 0..3 {
            got.extend(r.ring().try_pop_here(true).expect("pop"));
        }
        assert_eq!(got, [7]);
        assert!(r.ring().looks_empty() && !r.ring().head_in_flight() && r.ring().len() == 0);
        for v in [8, 9] {
            r.ring().try_push_here(v, false).expect("the skipped slot serves the next lap");
        }
        assert_eq!(r.drain(), [8, 9]);
    });
}

/// Two producers die in a row, each between its claim and its publish: both
/// positions are passed over, one at a time, and the ring goes on.
#[test]
fn mpmc_two_dead_writers_in_a_row_are_skipped() {
    model(2, || {
        let r = MpmcRing::new(2);
        let dying: Vec<_> = (0..2)
            .map(|_| {
                let r = r.clone();
                thread::spawn(move || r.ring().claim_push_and_die())
            })
            .collect();
        let got = r.ring().try_pop_here(true).expect("pop");
        assert_eq!(got, None, "nothing was published");
        for d in dying {
            assert!(d.join().unwrap().is_some());
        }
        assert_eq!(r.ring().try_pop_here(true).expect("pop"), None, "both skipped");
        assert_eq!(r.ring().len(), 0);
        r.ring().try_push_here(5, false).expect("room again");
        assert_eq!(r.drain(), [5]);
    });
}

/// A consumer dies between its claim and the release of its slot, on a full
/// ring: a probing producer releases the slot (the dead one's element is
/// lost: at most that one) while a live consumer takes the other element;
/// every other value comes out exactly once.
#[test]
fn mpmc_dead_readers_slot_is_released() {
    model(2, || {
        let r = MpmcRing::new(2);
        for v in [1, 2] {
            r.ring().try_push_here(v, false).expect("an empty ring of two");
        }
        let r2 = r.clone();
        let dying = thread::spawn(move || r2.ring().claim_pop_and_die());
        let r3 = r.clone();
        let live = thread::spawn(move || r3.ring().try_pop_here(true).expect("pop"));
        let pushed = r.ring().push_probing(3);
        let lost = dying.join().unwrap().expect("a full ring has an element to take");
        let mut got: Vec<u32> = live.join().unwrap().into_iter().collect();
        let pushed_later = if pushed.is_none() { r.ring().push_probing(3) } else { None };
        assert!(pushed.is_some() || pushed_later.is_some(), "the dead reader's slot was never released");
        got.extend(r.drain());
        got.sort_unstable();
        let want: Vec<u32> = [1, 2, 3].into_iter().filter(|v| u64::from(*v) != lost + 1).collect();
        assert_eq!(got, want, "position {lost} was the dead reader's");
    });
}

// ---------------------------------------------------------------------------
// 6. The negative check

/// Set (to anything) in the child that runs [`lost_wake_up_model`].
const NEGATIVE: &str = "SHMPROC_LOOM_NEGATIVE";

/// The negative check: a sleeper that skips the re-check between its
/// announcement and the futex wait can miss the producer's notify (which reads
/// no sleeper yet) and sleep forever; loom must find that schedule and report
/// the deadlock, which shows that the models above would catch a lost wake-up.
///
/// loom reports a deadlock by panicking from its scheduler, and the unwinding
/// model panics again in a destructor (an abort), so the broken model runs in
/// a child process: this test binary, running [`lost_wake_up_model`] alone.
#[test]
fn without_the_recheck_a_wake_up_is_lost() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lost_wake_up_model", "--nocapture", "--test-threads=1"])
        .env(NEGATIVE, "1")
        .env("RUST_BACKTRACE", "0")
        .env_remove("LOOM_MAX_PREEMPTIONS")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "loom found no lost wake-up without the re-check:\n{text}");
    assert!(text.contains("deadlock; threads"), "expected loom to report a deadlock, got {}:\n{text}", out.status);
}

/// The model [`without_the_recheck_a_wake_up_is_lost`] expects to deadlock:
/// [`SpscRing::pop_blocking`] with a re-check that never holds. Does nothing
/// unless run by that test.
#[test]
fn lost_wake_up_model() {
    if std::env::var_os(NEGATIVE).is_none() {
        return;
    }
    model(2, || {
        let r = SpscRing::new(2);
        let r2 = r.clone();
        let consumer = thread::spawn(move || {
            let cache = Cache::default();
            loop {
                if let Some(v) = r2.ring().try_pop(&cache).expect("pop") {
                    return v;
                }
                r2.not_empty.sleep_untimed(|| false);
            }
        });
        r.push_blocking(&Cache::default(), 1);
        assert_eq!(consumer.join().unwrap(), 1);
    });
}

// ---------------------------------------------------------------------------
// 5. The byte-record ring (ObjectQueue, pipes): variable-length records,
// padding at the end of the region instead of wrapping.

/// A byte ring over loom cells, so that every byte copied in or out is
/// checked for a race.
#[derive(Debug)]
struct ByteRing {
    header: shmproc::ring::bytes::BytesHeader,
    cells: Vec<loom::cell::UnsafeCell<u8>>,
}

// SAFETY: the cells are written and read only as the ring's positions allow;
// loom checks that on every access.
unsafe impl Sync for ByteRing {}

impl ByteRing {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(ByteRing {
            header: shmproc::ring::bytes::BytesHeader::new(),
            cells: (0..capacity).map(|_| loom::cell::UnsafeCell::new(0)).collect(),
        })
    }

    fn ring(&self) -> shmproc::ring::bytes::Bytes<'_, shmproc::ring::bytes::Region<'_>> {
        shmproc::ring::bytes::Bytes {
            header: &self.header,
            region: shmproc::ring::bytes::Region::new(&self.cells),
            capacity: self.cells.len(),
        }
    }
}

/// A writer sends three messages of different sizes through a 32-byte ring
/// (at most 8 payload bytes a record, so the third needs padding and a wrap)
/// while a reader takes them: each arrives whole, in order, and no byte is
/// read while it is written.
#[test]
fn byte_records_arrive_whole_and_in_order_across_a_wrap() {
    use shmproc::ring::bytes::Write;
    const MESSAGES: [&[u8]; 3] = [b"abcdefg", b"", b"12345678"];
    model(3, || {
        let r = ByteRing::new(32);
        let writer = {
            let r = r.clone();
            thread::spawn(move || {
                for msg in MESSAGES {
                    loop {
                        match r.ring().try_write(msg).expect("a healthy ring") {
                            Ok(()) => break,
                            Err(Write::Full) => thread::yield_now(),
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < MESSAGES.len() {
            let mut buf = Vec::new();
            if r.ring().try_read(&mut buf).expect("a healthy ring") {
                got.push(buf);
            } else {
                thread::yield_now();
            }
        }
        writer.join().unwrap();
        assert_eq!(got, MESSAGES.map(<[u8]>::to_vec));
    });
}

/// The same with records written in place (`try_write_in_place`, as
/// `ObjectQueue` puts encode), falling back to `try_write` when the run to
/// the ring's end is too short: whole, in order, and no byte of a record in
/// place is read before it is published.
#[test]
fn byte_records_written_in_place_arrive_whole_and_in_order() {
    use shmproc::ring::bytes::Write;
    const MESSAGES: [&[u8]; 3] = [b"abcdefg", b"", b"12345678"];
    model(3, || {
        let r = ByteRing::new(32);
        let writer = {
            let r = r.clone();
            thread::spawn(move || {
                for msg in MESSAGES {
                    loop {
                        if r.ring().try_write_in_place(|rec| Ok(rec.push(msg))).expect("a healthy ring") {
                            break;
                        }
                        match r.ring().try_write(msg).expect("a healthy ring") {
                            Ok(()) => break,
                            Err(Write::Full) => thread::yield_now(),
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < MESSAGES.len() {
            let mut buf = Vec::new();
            if r.ring().try_read(&mut buf).expect("a healthy ring") {
                got.push(buf);
            } else {
                thread::yield_now();
            }
        }
        writer.join().unwrap();
        assert_eq!(got, MESSAGES.map(<[u8]>::to_vec));
    });
}

// ---------------------------------------------------------------------------
// Pipes (src/channel/pipe.rs): the byte ring with framing, a closed flag and
// a writers' lock, as a connection uses them.

/// A pipe's direction: a byte ring, the closed flag of its `Control`, the
/// side readers sleep on, and the writers' lock word (1 while a writer
/// streams a message).
#[derive(Debug)]
struct PipeDir {
    bytes: Arc<ByteRing>,
    closed: loom::sync::atomic::AtomicU32,
    not_empty: Side,
    writers: loom::sync::atomic::AtomicU32,
}

impl PipeDir {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(PipeDir {
            bytes: ByteRing::new(capacity),
            closed: loom::sync::atomic::AtomicU32::new(0),
            not_empty: Side::new(),
            writers: loom::sync::atomic::AtomicU32::new(0),
        })
    }

    /// Writes one record of `frame`, yielding while the ring is full.
    fn write(&self, frame: shmproc::ring::bytes::Frame, part: &[u8]) {
        use shmproc::ring::bytes::Write;
        loop {
            match self.bytes.ring().try_write_frame(frame, part).expect("a healthy ring") {
                Ok(()) => break,
                Err(Write::Full) => thread::yield_now(),
                Err(other) => panic!("{other:?}"),
            }
        }
        self.not_empty.notify(1);
    }

    /// `Control::close`: the flag (`Release`), then every sleeper woken.
    fn close(&self) {
        self.closed.store(1, loom::sync::atomic::Ordering::Release);
        self.not_empty.notify(u32::MAX);
    }
}

/// What a reader got: a message, or end of file.
#[derive(Debug, PartialEq)]
enum Got {
    Message(Vec<u8>),
    Closed,
}

/// The connection's read: takes records, assembling a streamed message; on
/// an empty ring, end of file once the pipe is closed (after one more look,
/// behind a fence, for what was published before the close), a dropped
/// partial message once the writers' lock is free with nothing left; else a
/// sleep on `not_empty` (ready once closed or not empty).
fn pipe_read(dir: &PipeDir) -> Got {
    use shmproc::ring::bytes::Frame;
    let mut out = Vec::new();
    let mut collecting: Option<u64> = None;
    loop {
        match dir.bytes.ring().try_read_frame(&mut out).expect("a healthy ring") {
            Some(Frame::Whole) => return Got::Message(out),
            Some(Frame::First(total)) => collecting = Some(total),
            Some(Frame::More) => assert!(collecting.is_some(), "a chunk with no first chunk"),
            None => {
                let closed = dir.closed.load(loom::sync::atomic::Ordering::Acquire) != 0;
                let orphaned = collecting.is_some() && dir.writers.load(loom::sync::atomic::Ordering::Relaxed) == 0;
                if closed || orphaned {
                    loom::sync::atomic::fence(loom::sync::atomic::Ordering::SeqCst);
                    if dir.bytes.ring().peek_frame().expect("a healthy ring").is_some() {
                        continue;
                    }
                    if closed {
                        return Got::Closed;
                    }
                    panic!("a streamed message dropped though its writer published it all before unlocking");
                }
                let ring = dir.bytes.ring();
                dir.not_empty.sleep_untimed(|| {
                    dir.closed.load(loom::sync::atomic::Ordering::Acquire) != 0 || !ring.looks_empty()
                });
                continue;
            }
        }
        if collecting.is_some_and(|total| out.len() as u64 == total) {
            return Got::Message(out);
        }
    }
}

/// A writer sends two messages and closes the pipe while a reader, sleeping
/// when it finds nothing, reads: it gets both messages, then end of file,
/// never end of file first, and is always woken.
#[test]
fn pipe_close_after_messages_drains_them_then_reports_end_of_file() {
    use shmproc::ring::bytes::Frame;
    model(3, || {
        let dir = PipeDir::new(32);
        let writer = {
            let dir = dir.clone();
            thread::spawn(move || {
                dir.write(Frame::Whole, b"one");
                dir.write(Frame::Whole, b"two");
                dir.close();
            })
        };
        assert_eq!(pipe_read(&dir), Got::Message(b"one".to_vec()));
        assert_eq!(pipe_read(&dir), Got::Message(b"two".to_vec()));
        assert_eq!(pipe_read(&dir), Got::Closed);
        writer.join().unwrap();
    });
}

/// A writer streams a message larger than a record (a first chunk and a
/// later one) through a 64-byte ring under the writers' lock, then unlocks;
/// the reader, which drops a partial message once the lock is free and the
/// ring empty, always gets the whole message: the last chunk is published
/// before the unlock, and the reader looks again behind a fence.
#[test]
fn pipe_streamed_message_is_never_dropped_by_a_reader_that_sees_the_unlock() {
    use shmproc::ring::bytes::Frame;
    model(3, || {
        let dir = PipeDir::new(64);
        dir.writers.store(1, loom::sync::atomic::Ordering::Relaxed);
        let writer = {
            let dir = dir.clone();
            thread::spawn(move || {
                dir.write(Frame::First(10), b"abcde");
                dir.write(Frame::More, b"fghij");
                // The unlock (`Release`, as `OwnerLock::unlock`'s CAS).
                dir.writers.store(0, loom::sync::atomic::Ordering::Release);
                dir.not_empty.notify(1);
            })
        };
        assert_eq!(pipe_read(&dir), Got::Message(b"abcdefghij".to_vec()));
        writer.join().unwrap();
    });
}
