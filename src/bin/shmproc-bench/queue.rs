//! The `queue` group: one-way throughput of `SpscQueue<u64>` (against rtrb),
//! `Queue<u64>` with 2 producers and 2 consumers (against crossbeam's
//! `ArrayQueue`) and `ObjectQueue<Bytes>` (and `<Vec<u8>>`) with 64-byte messages (against
//! `CPython`'s `multiprocessing.Queue`, run now), and the ping-pong latency of
//! a pair of `SpscQueue<u64>`s against the raw baselines and `CPython`.
//!
//! Every stream is checked: consumers verify the sequence (or, with several
//! producers, per-producer order, counts and sums), so a run that loses,
//! repeats or reorders a message fails its row.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use shmproc::{Bytes, GetError, ObjectQueue, PutError, Queue, SpscQueue, WaitStrategy};

use crate::cpython;
use crate::kit::{self, Comparison, Contender, Figures, Floor, Kit, LINE, Placement, SharedWords, Side, Worker};
use crate::report::{RowSpec, Unit};
use crate::stored::{self, Stored};
use crate::{Group, Plan};

/// The group as `main` lists it.
pub(crate) const GROUP: Group = Group { name: "queue", plan, legend: LEGEND };

const LEGEND: &str = "\
queue rows (throughput: producers and consumers released at once by one go flag, figure =
  (last finish − first start) / messages, shown as ns per message = rate; each run is fresh
  queues and fresh processes or threads; subject and baseline runs alternate B A B A, the
  figures are medians over the runs and ratio = median of the per-pair ratios of ns per
  message, so a target ≤ 1.25× means ≥ 0.8× the baseline's messages/s; consumers check
  every message, and a lost, repeated or reordered one fails the row):
  SpscQueue<u64> one-way  a producer process puts 0..N, a consumer process gets them and
                          checks each (N = 8,000,000, 2,000,000 with --quick; 1024 slots);
                          consumer on the first --pin CPU, producer on the second.
    put/get               the blocking calls, default (Adaptive) waiting (SPEC: ≥ 0.8×).
    try_put/try_get spin  the non-blocking calls in the baseline's busy-wait (reference:
                          the ring without the wait loop's and wake protocol's costs).
    baseline rtrb         rtrb::RingBuffer<u64> of the same capacity, in-process: two threads
                          pinned like the processes (in one forked process), push/pop in a
                          busy-wait: a CPU pause per failed try, a yield every 64.
  Queue<u64> 2→2          2 producer and 2 consumer processes: producer p puts p<<32 | 1..=N
                          then a stop mark, each consumer takes until it gets one (N = 1,000,000
                          each, 250,000 with --quick; 1024 slots). This machine has 2 CPUs: a
                          producer and a consumer share each CPU, so every worker waits by
                          try_put/try_get in the busy-wait above (the yield every 64 failed
                          tries lets the worker that shares its CPU run) on both sides, like
                          for like; consumers check per-producer order, the parent counts and
                          sums per producer (SPEC: ≥ 0.8× crossbeam ArrayQueue<u64> of the same
                          capacity, 2+2 threads of one forked process pinned the same way).
  ObjectQueue<Bytes>      a producer process puts one 64-byte message N times by put_ref,
    64 B                  stamping the sequence number into its first 8 bytes before each put
                          (CPython's producer puts one bytes object N times too), a consumer
                          process gets (a new value each time, as unpickling makes one) and
                          checks them, blocking put/get with default waiting; 64 KiB ring;
                          N = 1,000,000, 250,000 with --quick (SPEC: ≥ 100× CPython).
                          same_core: both on the first --pin CPU; cross_core: consumer on the
                          first, producer on the second. shmproc::Bytes encodes as one byte
                          string, as pickle does Python's bytes (the counterpart of b'x' * 64).
  ObjectQueue<Vec<u8>>    the same with Vec<u8> messages, which serde encodes and decodes one
    64 B                  element at a time (reference: what a plain Vec costs).
    baseline CPython      ../shared/baselines/python/queue_throughput.py run now (python3 on
                          the PATH; ANCHORS_SCALE=0.2 with --quick: 5,000 messages × 5
                          repetitions, else 25,000 × 5; stopped once it has printed its three
                          bytes64B figures): py/queue_throughput msgs_per_s_bytes64B_<placement>,
                          multiprocessing.Queue (feeder thread, pipe, pickle) of b'x' * 64,
                          fork, median of 5 (it pins CPU 0 / CPU 1 whatever --pin says); run
                          once, before the first of these rows, not interleaved. Without
                          python3: the newest stored baselines-*.jsonl figure (named), or none.
  SpscQueue<u64>          two queues, one each way; each side puts 1, 2, 3, … and checks what it
    ping-pong             gets (8-byte values). (Adaptive) default waiting: vs raw futex
                          same_core (≤ 1.2×), raw spin cross_core (≤ 2×), raw spin unpinned (ref);
                          (Block): vs raw futex, ≤ 1.2× in every placement.
    vs CPython Queue      the (Adaptive) subject's p50 (same runs) against the stored
                          py/queue_pingpong rtt_int_<placement> (two multiprocessing.Queues,
                          mean round trip, median of 5) from the newest baselines-*.jsonl.
";

/// Slots of the fixed-element rings, subject and baseline alike.
const CAPACITY: usize = 1024;
/// Bytes of the `ObjectQueue`'s ring.
const OBJECT_CAPACITY: usize = 1 << 16;
/// Bytes per `ObjectQueue` message (`CPython`'s `bytes64B`).
const MESSAGE_BYTES: usize = 64;
/// A generous bound on one message, for the watchdog (`CPython` takes ~7 µs;
/// a message this slow has failed its purpose anyway).
const MESSAGE_LIMIT: Duration = Duration::from_micros(10);
/// The stop mark of the MPMC rows (producers' values are `p << 32 | 1..=N`).
const STOP: u64 = u64::MAX;

/// The CPU of `same_core` and the first of `cross_core` (consumer), the second
/// of `cross_core` (producer), or none: unpinned.
fn consumer_producer(kit: &Kit, placement: Placement) -> Result<(Option<usize>, Option<usize>), String> {
    kit.settings().cpus(placement)
}

fn plan() -> Vec<Plan> {
    let mut plans = vec![spsc_throughput(Waiting::Blocking), spsc_throughput(Waiting::Spinning), mpmc_throughput()];
    let cpython = Rc::new(py_throughput());
    for placement in Placement::ALL {
        plans.push(object_throughput::<Bytes>(placement, Rc::clone(&cpython), Some(0.01)));
    }
    for placement in Placement::ALL {
        plans.push(object_throughput::<Vec<u8>>(placement, Rc::clone(&cpython), None));
    }
    let stored_pingpong = stored::newest("py/queue_pingpong");
    let mut seen = Vec::new();
    for strategy in [WaitStrategy::Adaptive, WaitStrategy::Block] {
        for placement in Placement::ALL {
            let keep = (strategy == WaitStrategy::Adaptive).then(|| {
                let s: Seen = Rc::new(Cell::new(None));
                seen.push((placement, Rc::clone(&s)));
                s
            });
            plans.push(ping_pong(strategy, placement, keep));
        }
    }
    for (placement, s) in seen {
        plans.push(ping_pong_vs_cpython(placement, s, &stored_pingpong));
    }
    plans
}

// ---------------------------------------------------------------------------
// Throughput
// ---------------------------------------------------------------------------

/// How the SPSC subject waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// `put`/`get`, default (Adaptive) waiting.
    Blocking,
    /// `try_put`/`try_get` in [`backoff`]'s busy-wait, like the baseline.
    Spinning,
}

/// The busy-wait of every spinning worker, subject and baseline alike: a CPU
/// pause per failed try, and a yield every 64 (so that a worker whose peer
/// shares its CPU lets it run, as `WaitStrategy::Spin` does).
#[inline]
fn backoff(tries: &mut u32) {
    *tries = tries.wrapping_add(1);
    if *tries % 64 == 0 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// Checks that a consumer got `want`.
#[inline]
fn check(i: u64, got: u64, want: u64) -> Result<(), String> {
    if got == want { Ok(()) } else { Err(format!("message {i}: got {got}, expected {want}")) }
}

/// `subject` and `baseline` runs (ns per message each) alternated B A B A …,
/// bracketed by spin-floor probes: every throughput row spins across CPUs.
fn alternate(
    kit: &Kit,
    msgs: u64,
    subject: &dyn Fn() -> Result<f64, String>,
    baseline: &dyn Fn() -> Result<f64, String>,
    baseline_name: &str,
) -> Result<Comparison, String> {
    let before = kit.spin_floor()?;
    let mut pairs = Vec::with_capacity(kit.settings().alternations);
    for i in 0..kit.settings().alternations {
        let b = baseline().map_err(|e| format!("{baseline_name} run {}: {e}", i + 1))?;
        let s = subject().map_err(|e| format!("run {}: {e}", i + 1))?;
        pairs.push((s, b));
    }
    let after = kit.spin_floor()?;
    let only = |v: f64| Figures { p50: v, p99: None, p999: None };
    Ok(Comparison {
        subject: only(kit::median(pairs.iter().map(|p| p.0))),
        baseline: only(kit::median(pairs.iter().map(|p| p.1))),
        ratio: kit::median(pairs.iter().map(|(s, b)| s / b)),
        floor: before.zip(after).map(|(before, after)| Floor { before, after }),
        samples: msgs * pairs.len() as u64,
        same_cpu: None,
    })
}

/// Messages of one SPSC run.
fn spsc_messages(quick: bool) -> u64 {
    if quick { 2_000_000 } else { 8_000_000 }
}

/// `SpscQueue<u64>` one way across two processes against rtrb in-process.
fn spsc_throughput(waiting: Waiting) -> Plan {
    let spec = RowSpec {
        group: GROUP.name,
        name: match waiting {
            Waiting::Blocking => "SpscQueue<u64> one-way, put/get".to_owned(),
            Waiting::Spinning => "SpscQueue<u64> one-way, try_put/try_get spin".to_owned(),
        },
        placement: Placement::CrossCore.name(),
        unit: Unit::NsPerMsg,
        baseline: "rtrb, 2 threads".to_owned(),
        target: (waiting == Waiting::Blocking).then_some(1.25),
    };
    Plan::new(spec, move |kit| {
        let n = spsc_messages(kit.settings().quick);
        let cpus = consumer_producer(kit, Placement::CrossCore)?;
        let subject = || spsc_run(kit, waiting, n, cpus);
        let baseline = || rtrb_run(kit, n, cpus);
        alternate(kit, n, &subject, &baseline, "rtrb")
    })
}

/// One `SpscQueue<u64>` run of `n` messages, (consumer, producer) pinned to
/// `cpus`; ns per message.
fn spsc_run(kit: &Kit, waiting: Waiting, n: u64, cpus: (Option<usize>, Option<usize>)) -> Result<f64, String> {
    let q = SpscQueue::<u64>::new(CAPACITY).map_err(|e| format!("SpscQueue::new: {e}"))?;
    let (qp, qc) = (&q, &q);
    let producer = move || {
        for i in 0..n {
            match waiting {
                Waiting::Blocking => qp.put(i).map_err(|e| format!("put {i}: {e}"))?,
                Waiting::Spinning => {
                    let (mut v, mut tries) = (i, 0);
                    loop {
                        match qp.try_put(v) {
                            Ok(()) => break,
                            Err(PutError::Full(back)) => {
                                v = back;
                                backoff(&mut tries);
                            }
                            Err(e) => return Err(format!("try_put {i}: {e}")),
                        }
                    }
                }
            }
        }
        Ok(())
    };
    let consumer = move || {
        for i in 0..n {
            let got = match waiting {
                Waiting::Blocking => qc.get().map_err(|e| format!("get {i}: {e}"))?,
                Waiting::Spinning => {
                    let mut tries = 0;
                    loop {
                        match qc.try_get() {
                            Ok(v) => break v,
                            Err(GetError::Empty) => backoff(&mut tries),
                            Err(e) => return Err(format!("try_get {i}: {e}")),
                        }
                    }
                }
            };
            check(i, got, i)?;
        }
        Ok(())
    };
    let workers = vec![Worker::process("consumer", cpus.0, consumer), Worker::process("producer", cpus.1, producer)];
    let ns = kit::processes(kit, workers, MESSAGE_LIMIT * n as u32)?;
    if !q.is_empty() {
        return Err(format!("{} messages left in the queue", q.len()));
    }
    Ok(ns / n as f64)
}

/// One rtrb run of `n` messages between two threads, (consumer, producer)
/// pinned to `cpus`; ns per message.
fn rtrb_run(kit: &Kit, n: u64, cpus: (Option<usize>, Option<usize>)) -> Result<f64, String> {
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAPACITY);
    let producer = move || {
        for i in 0..n {
            let (mut v, mut tries) = (i, 0);
            while let Err(rtrb::PushError::Full(back)) = tx.push(v) {
                v = back;
                backoff(&mut tries);
            }
        }
        Ok(())
    };
    let consumer = move || {
        for i in 0..n {
            let mut tries = 0;
            let got = loop {
                match rx.pop() {
                    Ok(v) => break v,
                    Err(_) => backoff(&mut tries),
                }
            };
            check(i, got, i)?;
        }
        Ok(())
    };
    let workers =
        vec![Worker::thread("rtrb consumer", cpus.0, consumer), Worker::thread("rtrb producer", cpus.1, producer)];
    Ok(kit::threads(kit, workers, MESSAGE_LIMIT * n as u32)? / n as f64)
}

/// Messages per producer of one MPMC run.
fn mpmc_messages(quick: bool) -> u64 {
    if quick { 250_000 } else { 1_000_000 }
}

/// What each consumer saw of each producer: a line per (consumer, producer)
/// with the count, the sum and the sum of squares (wrapping) of the sequence
/// numbers, so that the parent can check that every message arrived once.
struct Tally {
    words: SharedWords,
}

impl Tally {
    const PRODUCERS: usize = 2;
    const CONSUMERS: usize = 2;

    fn new() -> Result<Self, String> {
        let words = SharedWords::new(Self::PRODUCERS * Self::CONSUMERS * LINE).map_err(|e| format!("tally: {e}"))?;
        Ok(Tally { words })
    }

    fn at(&self, consumer: usize, producer: usize, field: usize) -> &std::sync::atomic::AtomicU64 {
        self.words.u64_at((consumer * Self::PRODUCERS + producer) * LINE + field * 8)
    }

    /// A consumer: takes values by `take` until a stop mark; checks
    /// per-producer order; records its tally.
    fn consume(&self, consumer: usize, mut take: impl FnMut() -> Result<u64, String>) -> Result<(), String> {
        let mut seen = [(0u64, 0u64, 0u64); Self::PRODUCERS];
        let mut last = [0u64; Self::PRODUCERS];
        loop {
            let v = take()?;
            if v == STOP {
                break;
            }
            let (p, seq) = ((v >> 32) as usize, v & 0xffff_ffff);
            if p >= Self::PRODUCERS || seq <= last[p] {
                let after = last.get(p).copied().unwrap_or(0);
                return Err(format!("got {v:#x} (producer {p}, sequence {seq}) after sequence {after}"));
            }
            last[p] = seq;
            let s = &mut seen[p];
            *s = (s.0 + 1, s.1.wrapping_add(seq), s.2.wrapping_add(seq.wrapping_mul(seq)));
        }
        for (p, (count, sum, squares)) in seen.into_iter().enumerate() {
            self.at(consumer, p, 0).store(count, Ordering::Relaxed);
            self.at(consumer, p, 1).store(sum, Ordering::Relaxed);
            self.at(consumer, p, 2).store(squares, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether the consumers together got 1..=n of each producer exactly once
    /// (read after they exited).
    fn verify(&self, n: u64) -> Result<(), String> {
        let want = (n, (1..=n).fold(0u64, u64::wrapping_add), (1..=n).fold(0u64, |a, s| a.wrapping_add(s * s)));
        for p in 0..Self::PRODUCERS {
            let field =
                |f| (0..Self::CONSUMERS).fold(0u64, |a, c| a.wrapping_add(self.at(c, p, f).load(Ordering::Relaxed)));
            let got = (field(0), field(1), field(2));
            if got != want {
                return Err(format!(
                    "producer {p}: consumers got {} messages (sum {}, squares {}), expected {n} (sum {}, squares {})",
                    got.0, got.1, got.2, want.1, want.2
                ));
            }
        }
        Ok(())
    }
}

/// A producer: puts `p << 32 | 1..=n`, then a stop mark, by `put`.
fn produce(p: usize, n: u64, mut put: impl FnMut(u64) -> Result<(), String>) -> Result<(), String> {
    for seq in 1..=n {
        put((p as u64) << 32 | seq)?;
    }
    put(STOP)
}

/// `Queue<u64>` with 2 producer and 2 consumer processes against crossbeam's
/// `ArrayQueue` with 2+2 threads.
fn mpmc_throughput() -> Plan {
    let spec = RowSpec {
        group: GROUP.name,
        name: "Queue<u64> 2→2 processes, try_put/try_get spin".to_owned(),
        placement: Placement::CrossCore.name(),
        unit: Unit::NsPerMsg,
        baseline: "crossbeam ArrayQueue, 2+2 threads".to_owned(),
        target: Some(1.25),
    };
    Plan::new(spec, move |kit| {
        let per_producer = mpmc_messages(kit.settings().quick);
        let (cpu_a, cpu_b) = consumer_producer(kit, Placement::CrossCore)?;
        let total = Tally::PRODUCERS as u64 * per_producer;
        let limit = MESSAGE_LIMIT * total as u32;
        let subject = || {
            let q = Queue::<u64>::new(CAPACITY).map_err(|e| format!("Queue::new: {e}"))?;
            let tally = Tally::new()?;
            let (q, tally) = (&q, &tally);
            let put = move |v: u64| {
                let (mut v, mut tries) = (v, 0);
                loop {
                    match q.try_put(v) {
                        Ok(()) => return Ok(()),
                        Err(PutError::Full(back)) => {
                            v = back;
                            backoff(&mut tries);
                        }
                        Err(e) => return Err(format!("try_put: {e}")),
                    }
                }
            };
            let take = move || {
                let mut tries = 0;
                loop {
                    match q.try_get() {
                        Ok(v) => return Ok(v),
                        Err(GetError::Empty) => backoff(&mut tries),
                        Err(e) => return Err(format!("try_get: {e}")),
                    }
                }
            };
            let workers = vec![
                Worker::process("producer 0", cpu_a, move || produce(0, per_producer, put)),
                Worker::process("consumer 0", cpu_a, move || tally.consume(0, take)),
                Worker::process("producer 1", cpu_b, move || produce(1, per_producer, put)),
                Worker::process("consumer 1", cpu_b, move || tally.consume(1, take)),
            ];
            let ns = kit::processes(kit, workers, limit)?;
            tally.verify(per_producer)?;
            if !q.is_empty() {
                return Err(format!("{} messages left in the queue", q.len()));
            }
            Ok(ns / total as f64)
        };
        let baseline = || {
            let q = ArrayQueue::<u64>::new(CAPACITY);
            let tally = Tally::new()?;
            let (qr, tally) = (&q, &tally);
            let put = move |v: u64| {
                let (mut v, mut tries) = (v, 0);
                while let Err(back) = qr.push(v) {
                    v = back;
                    backoff(&mut tries);
                }
                Ok(())
            };
            let take = move || {
                let mut tries = 0;
                loop {
                    match qr.pop() {
                        Some(v) => return Ok(v),
                        None => backoff(&mut tries),
                    }
                }
            };
            let workers = vec![
                Worker::thread("ArrayQueue producer 0", cpu_a, move || produce(0, per_producer, put)),
                Worker::thread("ArrayQueue consumer 0", cpu_a, move || tally.consume(0, take)),
                Worker::thread("ArrayQueue producer 1", cpu_b, move || produce(1, per_producer, put)),
                Worker::thread("ArrayQueue consumer 1", cpu_b, move || tally.consume(1, take)),
            ];
            let ns = kit::threads(kit, workers, limit)?;
            tally.verify(per_producer)?;
            Ok(ns / total as f64)
        };
        alternate(kit, total, &subject, &baseline, "ArrayQueue")
    })
}

/// Messages of one `ObjectQueue` run.
fn object_messages(quick: bool) -> u64 {
    if quick { 250_000 } else { 1_000_000 }
}

/// The benchmark of `CPython`'s `multiprocessing.Queue` throughput figures.
const PY_BENCH: &str = "py/queue_throughput";

/// The `CPython` figure of `placement`.
fn py_metric(placement: Placement) -> String {
    format!("msgs_per_s_bytes64B_{}", placement.name())
}

/// `CPython`'s `multiprocessing.Queue` throughput of 64-byte messages: run
/// once (by the first row that needs it), or stored.
fn py_throughput() -> cpython::Baseline {
    let wanted = Placement::ALL.iter().map(|&p| (PY_BENCH, py_metric(p))).collect();
    cpython::Baseline::new("queue_throughput.py", "msg/s", wanted)
}

/// A message type of the `ObjectQueue` rows: Python's `bytes` as
/// [`Bytes`] (encoded as one byte string: the row with the target) or as a
/// plain `Vec<u8>` (encoded element by element by serde: for reference).
trait Message:
    serde::Serialize + serde::de::DeserializeOwned + From<Vec<u8>> + AsRef<[u8]> + AsMut<[u8]> + 'static
{
    const NAME: &'static str;
}

impl Message for Bytes {
    const NAME: &'static str = "Bytes";
}

impl Message for Vec<u8> {
    const NAME: &'static str = "Vec<u8>";
}

/// `ObjectQueue<M>` of 64-byte messages across two processes in
/// `placement`, against `CPython`.
fn object_throughput<M: Message>(placement: Placement, cpython: Rc<cpython::Baseline>, target: Option<f64>) -> Plan {
    let spec = RowSpec {
        group: GROUP.name,
        name: format!("ObjectQueue<{}> 64 B one-way, put/get", M::NAME),
        placement: placement.name(),
        unit: Unit::NsPerMsg,
        baseline: cpython.label("mp.Queue"),
        target,
    };
    Plan::new(spec, move |kit| {
        // ns per message (NaN: no figure, shown without a ratio).
        let py = 1e9 / cpython.value(kit.settings().quick, PY_BENCH, &py_metric(placement))?;
        let n = object_messages(kit.settings().quick);
        let (consumer_cpu, producer_cpu) = consumer_producer(kit, placement)?;
        let limit = MESSAGE_LIMIT * n as u32;
        let run = || {
            let q = ObjectQueue::<M>::new(OBJECT_CAPACITY).map_err(|e| format!("ObjectQueue::new: {e}"))?;
            let (qp, qc) = (&q, &q);
            let producer = move || {
                let mut m = M::from(vec![0x78u8; MESSAGE_BYTES]);
                for i in 0..n {
                    m.as_mut()[..8].copy_from_slice(&i.to_le_bytes());
                    qp.put_ref(&m).map_err(|e| format!("put {i}: {e}"))?;
                }
                Ok(())
            };
            let consumer = move || {
                for i in 0..n {
                    let m = qc.get().map_err(|e| format!("get {i}: {e}"))?;
                    let m = m.as_ref();
                    let seq = m.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                    if m.len() != MESSAGE_BYTES || seq != Some(i) {
                        return Err(format!("message {i}: got {} bytes, sequence {seq:?}", m.len()));
                    }
                }
                Ok(())
            };
            let workers = vec![
                Worker::process("consumer", consumer_cpu, consumer),
                Worker::process("producer", producer_cpu, producer),
            ];
            let ns = kit::processes(kit, workers, limit)?;
            if !q.is_empty() {
                return Err(format!("{} messages left in the queue", q.len()));
            }
            Ok(ns / n as f64)
        };
        // Across CPUs each message moves lines between them, so a run
        // follows the machine's cross-CPU level: the spin floor shows it.
        let probe = || if placement == Placement::SameCore { Ok(None) } else { kit.spin_floor() };
        let before = probe()?;
        let mut runs = Vec::with_capacity(kit.settings().alternations);
        for i in 0..kit.settings().alternations {
            runs.push(run().map_err(|e| format!("run {}: {e}", i + 1))?);
        }
        let after = probe()?;
        let p50 = kit::median(runs.into_iter());
        let only = |v: f64| Figures { p50: v, p99: None, p999: None };
        Ok(Comparison {
            subject: only(p50),
            baseline: only(py),
            ratio: p50 / py,
            floor: before.zip(after).map(|(before, after)| Floor { before, after }),
            samples: n * kit.settings().alternations as u64,
            same_cpu: None,
        })
    })
}

// ---------------------------------------------------------------------------
// Ping-pong
// ---------------------------------------------------------------------------

/// One side of the queue ping-pong: puts 1, 2, 3, … on the peer's queue and
/// checks that its own queue yields 1, 2, 3, … too.
#[derive(Debug)]
struct QueueSide {
    mine: SpscQueue<u64>,
    theirs: SpscQueue<u64>,
    sent: u64,
    received: u64,
}

impl QueueSide {
    fn pair(strategy: WaitStrategy) -> shmproc::Result<(Self, Self)> {
        let to_echo = SpscQueue::<u64>::new(CAPACITY)?.with_wait_strategy(strategy);
        let to_driver = SpscQueue::<u64>::new(CAPACITY)?.with_wait_strategy(strategy);
        let side = |mine, theirs| QueueSide { mine, theirs, sent: 0, received: 0 };
        Ok((side(to_driver.clone(), to_echo.clone()), side(to_echo, to_driver)))
    }
}

impl Side for QueueSide {
    fn send(&mut self) -> shmproc::Result<()> {
        self.sent += 1;
        self.theirs.put(self.sent)?;
        Ok(())
    }

    fn recv(&mut self) -> shmproc::Result<()> {
        let got = self.mine.get()?;
        self.received += 1;
        if got != self.received {
            return Err(shmproc::Error::Corrupt {
                what: "queue ping-pong",
                detail: format!("got {got}, expected {}", self.received),
            });
        }
        Ok(())
    }
}

/// The subject's figures and round trips in a placement, kept for the
/// `CPython` row.
type Seen = Rc<Cell<Option<(Figures, u64)>>>;

const PING_PONG: &str = "SpscQueue<u64> ping-pong";

fn contender(strategy: WaitStrategy) -> Contender {
    Contender::new(PING_PONG, move || QueueSide::pair(strategy))
}

/// The baseline and target of a ping-pong row (SPEC §6, as the sync rows).
fn ping_pong_baseline(strategy: WaitStrategy, placement: Placement) -> (Contender, Option<f64>) {
    if strategy == WaitStrategy::Block || placement == Placement::SameCore {
        (Contender::raw_futex(), Some(1.2))
    } else {
        (Contender::raw_spin(), (placement == Placement::CrossCore).then_some(2.0))
    }
}

fn ping_pong(strategy: WaitStrategy, placement: Placement, keep: Option<Seen>) -> Plan {
    let (baseline, target) = ping_pong_baseline(strategy, placement);
    let spec = RowSpec {
        group: GROUP.name,
        name: format!("{PING_PONG} ({strategy:?})"),
        placement: placement.name(),
        unit: Unit::Ns,
        baseline: baseline.name().to_owned(),
        target,
    };
    let floor = strategy != WaitStrategy::Block && placement != Placement::SameCore;
    Plan::new(spec, move |kit| {
        let c = kit.ping_pong(&contender(strategy), &baseline, placement, floor)?;
        if let Some(keep) = keep {
            keep.set(Some((c.subject, c.samples)));
        }
        Ok(c)
    })
}

/// The (Adaptive) ping-pong in `placement` against `CPython`'s stored
/// `multiprocessing.Queue` ping-pong (measured anew only if its own row was
/// filtered out).
fn ping_pong_vs_cpython(placement: Placement, seen: Seen, cpython: &Result<Stored, String>) -> Plan {
    let metric = format!("rtt_int_{}", placement.name());
    let py = cpython.as_ref().ok().and_then(|run| run.value("py/queue_pingpong", &metric, "ns").map(|v| (v, run)));
    let baseline = match py {
        Some((_, run)) => format!("CPython mp.Queue {}", run.stamp),
        None => "CPython figures not found".to_owned(),
    };
    let py = py.map_or(f64::NAN, |(v, _)| v);
    let spec = RowSpec {
        group: GROUP.name,
        name: format!("{PING_PONG} (Adaptive) vs CPython"),
        placement: placement.name(),
        unit: Unit::Ns,
        baseline,
        target: None,
    };
    Plan::new(spec, move |kit| {
        let (subject, samples) = if let Some(seen) = seen.get() {
            seen
        } else {
            let (baseline, _) = ping_pong_baseline(WaitStrategy::Adaptive, placement);
            let c = kit.ping_pong(&contender(WaitStrategy::Adaptive), &baseline, placement, false)?;
            (c.subject, c.samples)
        };
        let baseline = Figures { p50: py, p99: None, p999: None };
        Ok(Comparison { subject, baseline, ratio: subject.p50 / py, floor: None, samples, same_cpu: None })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_targets_and_units() {
        let plans = plan();
        let ids: Vec<String> = plans.iter().map(|p| p.spec.id()).collect();
        assert!(ids.iter().all(|id| id.starts_with("queue/")), "{ids:?}");
        let targeted = |needle: &str| {
            plans.iter().filter(|p| p.spec.name.contains(needle)).map(|p| p.spec.target).collect::<Vec<_>>()
        };
        assert_eq!(targeted("SpscQueue<u64> one-way"), [Some(1.25), None]);
        assert_eq!(targeted("Queue<u64> 2→2"), [Some(1.25)]);
        assert_eq!(targeted("ObjectQueue<Bytes>"), [Some(0.01); 3]);
        assert_eq!(targeted("ObjectQueue<Vec<u8>>"), [None; 3]);
        assert_eq!(targeted("(Block)"), [Some(1.2); 3]);
        assert_eq!(targeted("ping-pong (Adaptive)").len(), 6);
        assert!(
            plans
                .iter()
                .filter(|p| p.spec.name.contains("one-way") || p.spec.name.contains("2→2"))
                .all(|p| p.spec.unit == Unit::NsPerMsg)
        );
    }

    #[test]
    fn the_tally_finds_lost_and_repeated_messages() {
        let tally = Tally::new().unwrap();
        let mut values = vec![1 << 32 | 1, 1, 2, 1 << 32 | 2, 3, STOP].into_iter();
        tally.consume(0, || Ok(values.next().unwrap())).unwrap();
        let mut values = vec![1 << 32 | 3, STOP].into_iter();
        tally.consume(1, || Ok(values.next().unwrap())).unwrap();
        tally.verify(3).unwrap();
        assert!(tally.verify(4).unwrap_err().contains("producer 0"));
        let mut reordered = vec![2, 1, STOP].into_iter();
        assert!(tally.consume(0, || Ok(reordered.next().unwrap())).unwrap_err().contains("after sequence 2"));
    }
}
