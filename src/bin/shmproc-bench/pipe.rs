//! The `pipe` group: round trips of 64-byte messages through a duplex
//! [`Connection`] (`send_bytes` / `recv_bytes_into`, echoed by the peer
//! process) against the raw baselines, a Unix socket pair and `CPython`'s
//! `multiprocessing.Pipe` (run now), and a 64 MiB message streamed from one
//! process to another against a single-core `memcpy`.
//!
//! Every message is checked: round-trip messages carry a sequence number, and
//! each bulk message its transfer number at both ends and a pattern sampled
//! on every page, so a lost, repeated or torn message fails its row.

use std::cell::Cell;
use std::hint::black_box;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmproc::{Connection, WaitStrategy};

use crate::cpython;
use crate::kit::{self, Comparison, Contender, Figures, Floor, Kit, Placement, SharedWords, Side, Worker};
use crate::report::{RowSpec, Unit};
use crate::{Group, Plan};

/// The group as `main` lists it.
pub(crate) const GROUP: Group = Group { name: "pipe", plan, legend: LEGEND };

const LEGEND: &str = "\
pipe rows (a duplex shmproc::pipe() with the default 256 KiB ring each way, made anew for
  every run and used by forked processes):
  Connection 64 B         the driver stamps a sequence number into a 64-byte message and
    round trip            send_bytes it; the echo process recv_bytes_into a reused 64-byte
                          buffer and send_bytes the same bytes back; the driver receives them
                          the same way and checks the number. (Adaptive) default waiting: vs
                          raw futex same_core (SPEC ≤ 1.2×), raw spin cross_core (≤ 2×), raw
                          spin unpinned (ref); (Block) on both ends: vs raw futex, ≤ 1.2× in
                          every placement.
    vs socket pair        the (Adaptive) round trip interleaved with the same echo over a Unix
                          socket pair (std UnixStream::pair, SOCK_STREAM: what CPython's Pipe()
                          is), blocking write_all/read_exact of the 64 bytes (SPEC: ≥ 10× faster
                          cross_core; the other placements for reference).
    vs pipe(2),           the (Block) round trip interleaved with the same echo over the
    vs shared memory      operating system's own means, blocking, for reference (no SPEC
      + eventfd           target): a pipe(2) each way (write/read of the 64 bytes), and a
                          shared segment of two 64-byte slots with an eventfd each way (copy
                          into the slot, write 1 to the eventfd; the peer's blocking read of
                          the eventfd, then copy out: a hand-written IPC's way).
    vs CPython            the (Adaptive) subject's p50 (same runs as its row) against
                          ../shared/baselines/python/pipe_pingpong.py run now (python3 on the
                          PATH; ANCHORS_SCALE=0.2 with --quick; stopped once it has printed its
                          three figures): py/pipe_pingpong rtt_send_bytes_64B_<placement>,
                          mp.Pipe() send_bytes/recv_bytes of b'x' * 64 echoed by a fork child,
                          mean round trip of a repetition, median of 5 (it pins CPU 0 / CPU 1
                          whatever --pin says); run once, before the first of these rows, not
                          interleaved. Without python3: the newest stored baselines-*.jsonl
                          figure (named), or none (SPEC: ≥ 50× faster cross_core; the others for
                          reference).
  Connection 64 MiB       a sender process answers each 8-byte request on the pipe with one
    one message           64 MiB message (send_bytes of one buffer, streamed through the
                          256 KiB ring); the receiving process times request → whole message
                          received, checks it (length, transfer number at both ends, a byte per
                          page) outside the timing, and alternates each transfer with a memcpy
                          of 64 MiB between two buffers of its own (baseline: one core, as
                          os/memcpy_bw copy_64MiB). Per run: fresh pipe and processes, one
                          untimed transfer and memcpy first (warm ring, buffers faulted in),
                          then 3 timed pairs (5 without --quick). Figures: time per MiB moved =
                          bandwidth (GB = 10^9 bytes), medians over all transfers; ratio = median
                          of the per-pair ratios (SPEC: ≥ 0.4× memcpy bandwidth, i.e. ≤ 2.5× the
                          time, in every placement). Receiver on the first --pin CPU, sender on
                          the second (cross_core) or the same (same_core); default waiting.
    recv_bytes_into       into one 64 MiB buffer the receiver reuses.
    recv_bytes            a new Vec per message, as Python's recv_bytes (reference).
";

/// Bytes of a round-trip message (`CPython`'s `rtt_send_bytes_64B`).
pub(crate) const MESSAGE_BYTES: usize = 64;
/// Bytes of a bulk message.
const BULK_BYTES: usize = 64 << 20;
/// MiB in a bulk message.
const BULK_MIB: f64 = (BULK_BYTES >> 20) as f64;
/// The request that stops a bulk sender.
const STOP: u64 = u64::MAX;

fn plan() -> Vec<Plan> {
    let mut plans = Vec::new();
    let mut seen = Vec::new();
    for strategy in [WaitStrategy::Adaptive, WaitStrategy::Block] {
        for placement in Placement::ALL {
            let keep = (strategy == WaitStrategy::Adaptive).then(|| {
                let s: Seen = Rc::new(Cell::new(None));
                seen.push((placement, Rc::clone(&s)));
                s
            });
            plans.push(round_trip(strategy, placement, keep));
        }
    }
    for placement in Placement::ALL {
        plans.push(vs_socket_pair(placement));
    }
    for os in [OsLink::Pipe, OsLink::Eventfd] {
        for placement in Placement::ALL {
            plans.push(vs_os(os, placement));
        }
    }
    let py = Rc::new(py_pingpong());
    for (placement, s) in seen {
        plans.push(vs_cpython(placement, s, Rc::clone(&py)));
    }
    for placement in Placement::ALL {
        plans.push(bulk(Receive::Into, placement));
    }
    plans.push(bulk(Receive::Vec, Placement::CrossCore));
    plans
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

/// A byte channel one side of a round trip sends and receives on (the peers
/// group's libraries are links too).
pub(crate) trait Link {
    /// Sends `msg` whole.
    fn put(&mut self, msg: &[u8]) -> shmproc::Result<()>;

    /// Receives one message into `buf`; its length.
    fn take(&mut self, buf: &mut [u8]) -> shmproc::Result<usize>;
}

impl Link for Connection {
    fn put(&mut self, msg: &[u8]) -> shmproc::Result<()> {
        self.send_bytes(msg)
    }

    fn take(&mut self, buf: &mut [u8]) -> shmproc::Result<usize> {
        self.recv_bytes_into(buf)
    }
}

impl Link for UnixStream {
    fn put(&mut self, msg: &[u8]) -> shmproc::Result<()> {
        self.write_all(msg).map_err(|source| shmproc::Error::Io { op: "socket pair write", source })
    }

    /// Exactly `buf.len()` bytes: a stream has no message boundaries, and
    /// every message of these rows has the buffer's length.
    fn take(&mut self, buf: &mut [u8]) -> shmproc::Result<usize> {
        self.read_exact(buf).map_err(|source| shmproc::Error::Io { op: "socket pair read", source })?;
        Ok(buf.len())
    }
}

/// A `pipe(2)` each way: 64-byte `write`/`read` (blocking; a pipe keeps
/// writes of up to `PIPE_BUF` whole).
#[derive(Debug)]
struct OsPipe {
    read: std::fs::File,
    write: std::fs::File,
}

impl Link for OsPipe {
    fn put(&mut self, msg: &[u8]) -> shmproc::Result<()> {
        self.write.write_all(msg).map_err(|source| shmproc::Error::Io { op: "pipe write", source })
    }

    fn take(&mut self, buf: &mut [u8]) -> shmproc::Result<usize> {
        self.read.read_exact(buf).map_err(|source| shmproc::Error::Io { op: "pipe read", source })?;
        Ok(buf.len())
    }
}

/// Shared memory and an `eventfd` each way, as a hand-written IPC does it:
/// the sender copies the message into its slot of a shared segment and
/// adds 1 to its eventfd; the receiver's blocking `read` of the eventfd
/// returns once it is non-zero, then it copies the message out. (The
/// system calls order the copies.)
#[derive(Debug)]
struct ShmEventfd {
    slots: std::sync::Arc<shmproc::Segment>,
    /// My slot's offset and eventfd, and the peer's.
    mine: (usize, std::sync::Arc<std::os::fd::OwnedFd>),
    theirs: (usize, std::sync::Arc<std::os::fd::OwnedFd>),
}

impl Link for ShmEventfd {
    fn put(&mut self, msg: &[u8]) -> shmproc::Result<()> {
        self.slots.write_at(self.mine.0, msg)?;
        rustix::io::write(&*self.mine.1, &1u64.to_ne_bytes())
            .map_err(|e| shmproc::Error::Io { op: "eventfd write", source: e.into() })?;
        Ok(())
    }

    fn take(&mut self, buf: &mut [u8]) -> shmproc::Result<usize> {
        let mut count = [0u8; 8];
        rustix::io::read(&*self.theirs.1, &mut count)
            .map_err(|e| shmproc::Error::Io { op: "eventfd read", source: e.into() })?;
        // One wake per message: two writes before a read add up (a message
        // sent twice would otherwise go unseen).
        let n = u64::from_ne_bytes(count);
        if n != 1 {
            return Err(shmproc::Error::Corrupt { what: "eventfd round trip", detail: format!("{n} wakes at once") });
        }
        self.slots.read_at(self.theirs.0, buf)?;
        Ok(buf.len())
    }
}

/// The operating system's mechanisms the round trip is shown beside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OsLink {
    /// [`OsPipe`].
    Pipe,
    /// [`ShmEventfd`].
    Eventfd,
}

impl OsLink {
    fn name(self) -> &'static str {
        match self {
            OsLink::Pipe => "pipe(2)",
            OsLink::Eventfd => "shared memory + eventfd",
        }
    }
}

/// A fresh pair of `pipe(2)`s, one each way.
fn os_pipes() -> shmproc::Result<(Bounce<OsPipe>, Bounce<OsPipe>)> {
    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map(|(r, w)| (std::fs::File::from(r), std::fs::File::from(w)))
            .map_err(|e| shmproc::Error::Io { op: "pipe", source: e.into() })
    };
    let ((to_echo_r, to_echo_w), (to_driver_r, to_driver_w)) = (pipe()?, pipe()?);
    Ok(Bounce::pair(OsPipe { read: to_driver_r, write: to_echo_w }, OsPipe { read: to_echo_r, write: to_driver_w }))
}

/// A fresh segment of two message slots and two eventfds.
fn shm_eventfds() -> shmproc::Result<(Bounce<ShmEventfd>, Bounce<ShmEventfd>)> {
    let slots = std::sync::Arc::new(shmproc::Segment::anonymous(2 * MESSAGE_BYTES)?);
    let eventfd = || {
        rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)
            .map(std::sync::Arc::new)
            .map_err(|e| shmproc::Error::Io { op: "eventfd", source: e.into() })
    };
    let (to_echo, to_driver) = ((0, eventfd()?), (MESSAGE_BYTES, eventfd()?));
    let driver = ShmEventfd { slots: slots.clone(), mine: to_echo.clone(), theirs: to_driver.clone() };
    let echo = ShmEventfd { slots, mine: to_driver, theirs: to_echo };
    Ok(Bounce::pair(driver, echo))
}

/// One side of a round trip over a [`Link`]: the driver stamps 1, 2, 3, …
/// into the message it sends; the echo sends back the message it got,
/// unchanged. Both check every number they receive.
#[derive(Debug)]
pub(crate) struct Bounce<L> {
    link: L,
    buf: [u8; MESSAGE_BYTES],
    /// Stamps what it sends (the driver), or echoes (the echo).
    stamps: bool,
    sent: u64,
    received: u64,
}

impl<L: Link> Bounce<L> {
    /// (driver, echo) over the two ends of one link.
    pub(crate) fn pair(driver: L, echo: L) -> (Self, Self) {
        let side = |link, stamps| Bounce { link, buf: [0x78; MESSAGE_BYTES], stamps, sent: 0, received: 0 };
        (side(driver, true), side(echo, false))
    }
}

impl<L: Link> Side for Bounce<L> {
    fn send(&mut self) -> shmproc::Result<()> {
        self.sent += 1;
        if self.stamps {
            self.buf[..8].copy_from_slice(&self.sent.to_le_bytes());
        }
        self.link.put(&self.buf)
    }

    fn recv(&mut self) -> shmproc::Result<()> {
        let len = self.link.take(&mut self.buf)?;
        self.received += 1;
        let seq = u64::from_le_bytes(self.buf[..8].try_into().expect("8 bytes"));
        if len != MESSAGE_BYTES || seq != self.received {
            return Err(shmproc::Error::Corrupt {
                what: "pipe round trip",
                detail: format!("message {}: {len} bytes, sequence {seq}", self.received),
            });
        }
        Ok(())
    }
}

/// A fresh pipe, both ends waiting by `strategy`.
fn pipe_pair(strategy: WaitStrategy) -> shmproc::Result<(Bounce<Connection>, Bounce<Connection>)> {
    let (a, b) = shmproc::pipe()?;
    Ok(Bounce::pair(a.with_wait_strategy(strategy), b.with_wait_strategy(strategy)))
}

/// A fresh Unix socket pair (blocking).
fn socket_pair() -> shmproc::Result<(Bounce<UnixStream>, Bounce<UnixStream>)> {
    let (a, b) = UnixStream::pair().map_err(|source| shmproc::Error::Io { op: "socketpair", source })?;
    Ok(Bounce::pair(a, b))
}

/// The name of the round-trip rows (and their subject).
pub(crate) const ROUND_TRIP: &str = "Connection 64 B round trip";

/// The round trip over a fresh pipe, both ends waiting by `strategy`: the
/// subject of the round-trip rows here and in the peers group.
pub(crate) fn contender(strategy: WaitStrategy) -> Contender {
    Contender::new(ROUND_TRIP, move || pipe_pair(strategy))
}

/// The subject's figures and round trips in a placement, kept for the
/// `CPython` row.
type Seen = Rc<Cell<Option<(Figures, u64)>>>;

/// The raw baseline and target of a round-trip row (SPEC §6, as the sync and
/// queue rows).
fn raw_baseline(strategy: WaitStrategy, placement: Placement) -> (Contender, Option<f64>) {
    if strategy == WaitStrategy::Block || placement == Placement::SameCore {
        (Contender::raw_futex(), Some(1.2))
    } else {
        (Contender::raw_spin(), (placement == Placement::CrossCore).then_some(2.0))
    }
}

/// Spinning subjects get a spin-floor probe, where two CPUs are involved.
pub(crate) fn spins(strategy: WaitStrategy, placement: Placement) -> bool {
    strategy != WaitStrategy::Block && placement != Placement::SameCore
}

fn round_trip(strategy: WaitStrategy, placement: Placement, keep: Option<Seen>) -> Plan {
    let (baseline, target) = raw_baseline(strategy, placement);
    let spec = RowSpec {
        group: GROUP.name,
        name: format!("{ROUND_TRIP} ({strategy:?})"),
        placement: placement.name(),
        unit: Unit::Ns,
        baseline: baseline.name().to_owned(),
        target,
    };
    Plan::new(spec, move |kit| {
        let c = kit.ping_pong(&contender(strategy), &baseline, placement, spins(strategy, placement))?;
        if let Some(keep) = keep {
            keep.set(Some((c.subject, c.samples)));
        }
        Ok(c)
    })
}

/// The (Adaptive) round trip against a Unix socket pair's, interleaved.
fn vs_socket_pair(placement: Placement) -> Plan {
    let spec = RowSpec {
        group: GROUP.name,
        name: format!("{ROUND_TRIP} (Adaptive) vs socket pair"),
        placement: placement.name(),
        unit: Unit::Ns,
        baseline: "Unix socket pair".to_owned(),
        target: (placement == Placement::CrossCore).then_some(0.1),
    };
    Plan::new(spec, move |kit| {
        let sockets = Contender::new("Unix socket pair", socket_pair);
        let floor = spins(WaitStrategy::Adaptive, placement);
        kit.ping_pong(&contender(WaitStrategy::Adaptive), &sockets, placement, floor)
    })
}

/// The (Block) round trip against an operating-system mechanism's,
/// interleaved (for reference: the SPEC sets no target).
fn vs_os(os: OsLink, placement: Placement) -> Plan {
    let spec = RowSpec {
        group: GROUP.name,
        name: format!("{ROUND_TRIP} (Block) vs {}", os.name()),
        placement: placement.name(),
        unit: Unit::Ns,
        baseline: os.name().to_owned(),
        target: None,
    };
    Plan::new(spec, move |kit| {
        let baseline = match os {
            OsLink::Pipe => Contender::new(os.name(), os_pipes),
            OsLink::Eventfd => Contender::new(os.name(), shm_eventfds),
        };
        kit.ping_pong(&contender(WaitStrategy::Block), &baseline, placement, false)
    })
}

/// The benchmark of `CPython`'s `Pipe` round-trip figures.
const PY_BENCH: &str = "py/pipe_pingpong";

/// The `CPython` figure of `placement`.
fn py_metric(placement: Placement) -> String {
    format!("rtt_send_bytes_64B_{}", placement.name())
}

/// `CPython`'s `multiprocessing.Pipe` round trips of 64 bytes: run once (by
/// the first row that needs them), or stored.
fn py_pingpong() -> cpython::Baseline {
    let wanted = Placement::ALL.iter().map(|&p| (PY_BENCH, py_metric(p))).collect();
    cpython::Baseline::new("pipe_pingpong.py", "ns", wanted)
}

/// The (Adaptive) round trip in `placement` against `CPython`'s `Pipe`
/// (the subject measured anew only if its own row was filtered out).
fn vs_cpython(placement: Placement, seen: Seen, cpython: Rc<cpython::Baseline>) -> Plan {
    let spec = RowSpec {
        group: GROUP.name,
        name: format!("{ROUND_TRIP} (Adaptive) vs CPython"),
        placement: placement.name(),
        unit: Unit::Ns,
        baseline: cpython.label("mp.Pipe"),
        target: (placement == Placement::CrossCore).then_some(0.02),
    };
    Plan::new(spec, move |kit| {
        let py = cpython.value(kit.settings().quick, PY_BENCH, &py_metric(placement))?;
        let (subject, samples) = if let Some(seen) = seen.get() {
            seen
        } else {
            let (baseline, _) = raw_baseline(WaitStrategy::Adaptive, placement);
            let c = kit.ping_pong(&contender(WaitStrategy::Adaptive), &baseline, placement, false)?;
            (c.subject, c.samples)
        };
        let baseline = Figures { p50: py, p99: None, p999: None };
        Ok(Comparison { subject, baseline, ratio: subject.p50 / py, floor: None, samples, same_cpu: None })
    })
}

// ---------------------------------------------------------------------------
// Bulk
// ---------------------------------------------------------------------------

/// How the bulk receiver takes a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Receive {
    /// `recv_bytes_into` a buffer it reuses.
    Into,
    /// `recv_bytes`: a new `Vec` each time.
    Vec,
}

/// Timed transfers (each paired with a memcpy) per run.
fn transfers(quick: bool) -> usize {
    if quick { 3 } else { 5 }
}

/// A generous bound on one transfer or memcpy of 64 MiB, for the watchdog
/// (page faults alone cost ~60 ms here; a second means it has failed anyway).
const TRANSFER_LIMIT: Duration = Duration::from_secs(1);

fn bulk(receive: Receive, placement: Placement) -> Plan {
    let spec = RowSpec {
        group: GROUP.name,
        name: match receive {
            Receive::Into => "Connection 64 MiB one message, recv_bytes_into".to_owned(),
            Receive::Vec => "Connection 64 MiB one message, recv_bytes".to_owned(),
        },
        placement: placement.name(),
        unit: Unit::NsPerMiB,
        baseline: "memcpy 64 MiB, one core".to_owned(),
        target: (receive == Receive::Into).then_some(2.5),
    };
    Plan::new(spec, move |kit| {
        let floor = spins(WaitStrategy::Adaptive, placement);
        let probe = || if floor { kit.spin_floor() } else { Ok(None) };
        let before = probe()?;
        let mut pairs = Vec::new();
        for i in 0..kit.settings().alternations {
            pairs.extend(bulk_run(kit, receive, placement).map_err(|e| format!("run {}: {e}", i + 1))?);
        }
        let after = probe()?;
        let only = |v: f64| Figures { p50: v, p99: None, p999: None };
        Ok(Comparison {
            subject: only(kit::median(pairs.iter().map(|p| p.0 / BULK_MIB))),
            baseline: only(kit::median(pairs.iter().map(|p| p.1 / BULK_MIB))),
            ratio: kit::median(pairs.iter().map(|(s, b)| s / b)),
            floor: before.zip(after).map(|(before, after)| Floor { before, after }),
            samples: pairs.len() as u64,
            same_cpu: None,
        })
    })
}

/// The byte at `i` of bulk message `seq` (its first and last 8 bytes hold
/// `seq`): a pattern that differs from page to page and from the memcpy's.
fn pattern(i: usize) -> u8 {
    (i >> 12) as u8 ^ 0x3c
}

/// Stamps `seq` into the first and last 8 bytes of `msg`.
fn stamp(msg: &mut [u8], seq: u64) {
    let n = msg.len();
    msg[..8].copy_from_slice(&seq.to_le_bytes());
    msg[n - 8..].copy_from_slice(&seq.to_le_bytes());
}

/// Whether `msg` is bulk message `seq`: its length, both stamps, and the
/// pattern at one byte of every page.
fn check_bulk(msg: &[u8], seq: u64) -> Result<(), String> {
    let n = msg.len();
    if n != BULK_BYTES {
        return Err(format!("message {seq}: {n} bytes, expected {BULK_BYTES}"));
    }
    let word = |at: usize| u64::from_le_bytes(msg[at..at + 8].try_into().expect("8 bytes"));
    let (head, tail) = (word(0), word(n - 8));
    if head != seq || tail != seq {
        return Err(format!("message {seq}: stamped {head} at the start and {tail} at the end"));
    }
    match (4096..n - 8).step_by(4096).map(|i| i + 100).find(|&i| msg[i] != pattern(i)) {
        Some(i) => Err(format!("message {seq}: byte {i} is {:#x}, expected {:#x}", msg[i], pattern(i))),
        None => Ok(()),
    }
}

/// Nanoseconds `f` took.
fn timed<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed().as_nanos() as f64)
}

/// One timed transfer: request bulk message `seq`, receive it whole (into
/// `dst`, or a new `Vec`), then, with the clock stopped, check it; ns.
fn transfer(conn: &Connection, receive: Receive, dst: &mut [u8], seq: u64) -> Result<f64, String> {
    let (got, ns) = timed(|| {
        conn.send_bytes(&seq.to_le_bytes())?;
        match receive {
            Receive::Into => conn.recv_bytes_into(dst).map(|len| (len, None)),
            Receive::Vec => conn.recv_bytes().map(|v| (v.len(), Some(v))),
        }
    });
    let (len, owned) = got.map_err(|e| format!("transfer {seq}: {e}"))?;
    check_bulk(owned.as_deref().unwrap_or(&dst[..len]), seq)?;
    Ok(ns)
}

/// One run: a fresh pipe, a receiver process (on the first CPU of
/// `placement`) and a sender process (on the other); the (transfer, memcpy)
/// times in ns of each timed pair.
fn bulk_run(kit: &Kit, receive: Receive, placement: Placement) -> Result<Vec<(f64, f64)>, String> {
    let n = transfers(kit.settings().quick);
    let (receiver_cpu, sender_cpu) = kit.settings().cpus(placement)?;
    let (here, there) = shmproc::pipe().map_err(|e| format!("pipe: {e}"))?;
    let times = SharedWords::new(2 * n * size_of::<u64>()).map_err(|e| format!("times: {e}"))?;
    let (times_in, here) = (&times, &here);
    let receiver = move || {
        let mut dst = vec![0u8; BULK_BYTES];
        let src = vec![0xa5u8; BULK_BYTES];
        let copy = |dst: &mut [u8]| timed(|| black_box(&mut *dst).copy_from_slice(black_box(&src))).1;
        copy(&mut dst); // faults the pages of both buffers in
        transfer(here, receive, &mut dst, 0)?; // warms the ring (and the sender's buffer)
        for k in 0..n {
            let memcpy = copy(&mut dst);
            let ns = transfer(here, receive, &mut dst, k as u64 + 1)?;
            times_in.u64_at(16 * k).store(ns as u64, Ordering::Relaxed);
            times_in.u64_at(16 * k + 8).store(memcpy as u64, Ordering::Relaxed);
        }
        here.send_bytes(&STOP.to_le_bytes()).map_err(|e| format!("stop: {e}"))
    };
    let sender = move || {
        let mut msg: Vec<u8> = (0..BULK_BYTES).map(pattern).collect();
        let mut request = [0u8; 8];
        loop {
            let len = there.recv_bytes_into(&mut request).map_err(|e| format!("request: {e}"))?;
            let seq = u64::from_le_bytes(request);
            if len != 8 {
                return Err(format!("a request of {len} bytes"));
            }
            if seq == STOP {
                return Ok(());
            }
            stamp(&mut msg, seq);
            there.send_bytes(&msg).map_err(|e| format!("send {seq}: {e}"))?;
        }
    };
    let workers =
        vec![Worker::process("receiver", receiver_cpu, receiver), Worker::process("sender", sender_cpu, sender)];
    kit::processes(kit, workers, TRANSFER_LIMIT * (2 * n as u32 + 4))?;
    Ok((0..n)
        .map(|k| {
            let at = |offset| times.u64_at(16 * k + offset).load(Ordering::Relaxed) as f64;
            (at(0), at(8))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_targets_and_units() {
        let plans = plan();
        let ids: Vec<String> = plans.iter().map(|p| p.spec.id()).collect();
        assert!(ids.iter().all(|id| id.starts_with("pipe/")), "{ids:?}");
        let targets = |suffix: &str| {
            plans.iter().filter(|p| p.spec.name.ends_with(suffix)).map(|p| p.spec.target).collect::<Vec<_>>()
        };
        // Placements in table order: same_core, cross_core, unpinned.
        assert_eq!(targets("(Adaptive)"), [Some(1.2), Some(2.0), None]);
        assert_eq!(targets("(Block)"), [Some(1.2); 3]);
        assert_eq!(targets("vs socket pair"), [None, Some(0.1), None]);
        assert_eq!(targets("vs CPython"), [None, Some(0.02), None]);
        assert_eq!(targets("recv_bytes_into"), [Some(2.5); 3]);
        assert_eq!(targets("recv_bytes"), [None]);
        let bulk = plans.iter().filter(|p| p.spec.name.contains("64 MiB"));
        assert!(bulk.clone().count() == 4 && bulk.clone().all(|p| p.spec.unit == Unit::NsPerMiB));
    }

    #[test]
    fn bulk_messages_are_checked() {
        let mut msg: Vec<u8> = (0..BULK_BYTES).map(pattern).collect();
        stamp(&mut msg, 7);
        check_bulk(&msg, 7).unwrap();
        assert!(check_bulk(&msg, 8).unwrap_err().contains("stamped 7"));
        msg[3 * 4096 + 100] ^= 1;
        assert!(check_bulk(&msg, 7).unwrap_err().contains("byte 12388"));
        assert!(check_bulk(&msg[..4096], 7).unwrap_err().contains("4096 bytes"));
    }

    #[test]
    fn a_round_trip_over_each_link_checks_the_sequence() {
        let (mut driver, mut echo) = socket_pair().unwrap();
        for _ in 0..3 {
            driver.send().unwrap();
            echo.recv().unwrap();
            echo.send().unwrap();
            driver.recv().unwrap();
        }
        let (mut driver, mut echo) = pipe_pair(WaitStrategy::Block).unwrap();
        driver.send().unwrap();
        echo.recv().unwrap();
        echo.send().unwrap();
        driver.recv().unwrap();
        // An echo that answers twice: the driver's next receive sees 1 again.
        echo.send().unwrap();
        driver.send().unwrap();
        assert!(driver.recv().unwrap_err().to_string().contains("sequence 1"));

        let (mut driver, mut echo) = os_pipes().unwrap();
        for _ in 0..3 {
            driver.send().unwrap();
            echo.recv().unwrap();
            echo.send().unwrap();
            driver.recv().unwrap();
        }
        let (mut driver, mut echo) = shm_eventfds().unwrap();
        for _ in 0..3 {
            driver.send().unwrap();
            echo.recv().unwrap();
            echo.send().unwrap();
            driver.recv().unwrap();
        }
        // Two sends before a receive: two wakes at once, refused.
        driver.send().unwrap();
        driver.send().unwrap();
        assert!(echo.recv().unwrap_err().to_string().contains("2 wakes at once"));
    }
}
