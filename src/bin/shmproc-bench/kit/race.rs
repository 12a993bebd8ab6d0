//! Workers released together by one go flag and timed from the first start to
//! the last finish (`CLOCK_MONOTONIC`, read in the workers: one clock for every
//! process): forked processes ([`processes`]), or threads of one forked process
//! ([`threads`]: the in-process baselines; the bench itself starts no thread,
//! so that it may keep forking).
//!
//! A worker that fails stores why in the shared block, and the caller gets
//! that message rather than a bare exit status.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::time::{ClockId, clock_gettime};

use super::Kit;
use super::child::{self, pin_self};
use super::shm::{LINE, SharedWords};

/// A worker's job: runs once, says why it failed.
pub(crate) type Job<'a> = Box<dyn FnOnce() -> Result<(), String> + 'a>;
/// A job for a thread.
pub(crate) type SendJob<'a> = Box<dyn FnOnce() -> Result<(), String> + Send + 'a>;

/// One worker: what it is (for messages), where it runs, what it does.
pub(crate) struct Worker<J> {
    role: &'static str,
    cpu: Option<usize>,
    job: J,
}

impl<J> std::fmt::Debug for Worker<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("role", &self.role).field("cpu", &self.cpu).finish_non_exhaustive()
    }
}

impl<'a> Worker<Job<'a>> {
    /// A worker process, pinned to `cpu` if any.
    pub(crate) fn process(
        role: &'static str,
        cpu: Option<usize>,
        job: impl FnOnce() -> Result<(), String> + 'a,
    ) -> Self {
        Worker { role, cpu, job: Box::new(job) }
    }
}

impl<'a> Worker<SendJob<'a>> {
    /// A worker thread, pinned to `cpu` if any.
    pub(crate) fn thread(
        role: &'static str,
        cpu: Option<usize>,
        job: impl FnOnce() -> Result<(), String> + Send + 'a,
    ) -> Self {
        Worker { role, cpu, job: Box::new(job) }
    }
}

/// Byte offsets in the shared block: workers ready, the go flag, whether one
/// failed; its message; then a line per worker with its start and finish (ns).
const READY: usize = 0;
const GO: usize = 4;
const FAILED: usize = 8;
const MESSAGE: usize = LINE;
const MESSAGE_CAP: usize = 508;
const TIMES: usize = MESSAGE + 4 + MESSAGE_CAP;

/// The shared block of one race.
struct Board {
    words: SharedWords,
    workers: usize,
}

impl Board {
    fn new(workers: usize) -> Result<Self, String> {
        let words = SharedWords::new(TIMES + workers * LINE).map_err(|e| format!("race block: {e}"))?;
        Ok(Board { words, workers })
    }

    fn time(&self, worker: usize, finish: bool) -> &AtomicU64 {
        self.words.u64_at(TIMES + worker * LINE + if finish { 8 } else { 0 })
    }

    /// A worker's part: pin itself (threads), get ready, wait for the go
    /// flag, run `job` timed. On failure the message is on the board.
    fn run(
        &self,
        i: usize,
        role: &str,
        pin: Option<usize>,
        job: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), ()> {
        if let Some(cpu) = pin
            && !pin_self(cpu)
        {
            self.fail(role, &format!("could not pin itself to CPU {cpu} (see --pin)"));
            return Err(());
        }
        self.words.u32_at(READY).fetch_add(1, Ordering::Release);
        // Acquire: pairs with the Release of the flag in `release`.
        while self.words.u32_at(GO).load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        let start = monotonic_ns();
        let outcome = panic::catch_unwind(AssertUnwindSafe(job)).unwrap_or_else(|_| Err("panicked".to_owned()));
        let finish = monotonic_ns();
        match outcome {
            Ok(()) => {
                self.time(i, false).store(start, Ordering::Relaxed);
                self.time(i, true).store(finish, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.fail(role, &e);
                Err(())
            }
        }
    }

    /// Records why `role` failed, unless another worker failed first.
    fn fail(&self, role: &str, why: &str) {
        let first = self.words.u32_at(FAILED).compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if first {
            self.words.put_str(MESSAGE, MESSAGE_CAP, &format!("{role}: {why}"));
        }
    }

    /// The first failure's message (read once every worker is gone).
    fn failure(&self) -> Option<String> {
        (self.words.u32_at(FAILED).load(Ordering::Acquire) != 0).then(|| self.words.get_str(MESSAGE, MESSAGE_CAP))
    }

    /// Waits until every worker is ready (at most `grace`), then lets them go.
    fn release(&self, grace: Duration) -> Result<(), String> {
        let ready_by = Instant::now() + grace;
        while (self.words.u32_at(READY).load(Ordering::Acquire) as usize) < self.workers {
            if Instant::now() > ready_by || self.words.u32_at(FAILED).load(Ordering::Acquire) != 0 {
                return Err(self.failure().unwrap_or_else(|| {
                    "the workers did not get ready (could they pin themselves? see --pin)".to_owned()
                }));
            }
            std::thread::yield_now();
        }
        self.words.u32_at(GO).store(1, Ordering::Release);
        Ok(())
    }

    /// ns from the first start to the last finish (every worker finished).
    fn elapsed(&self) -> Result<f64, String> {
        let times = |finish| (0..self.workers).map(move |i| self.time(i, finish).load(Ordering::Relaxed));
        let first_start = times(false).min().unwrap_or(0);
        let last_finish = times(true).max().unwrap_or(0);
        if times(false).any(|t| t == 0) || last_finish <= first_start {
            return Err(format!("bad times: start {first_start} ns, finish {last_finish} ns"));
        }
        Ok((last_finish - first_start) as f64)
    }
}

/// Runs each worker in a forked process (pinned to its CPU), all released at
/// once; ns from the first start to the last finish. Everything must be over
/// within `limit` (plus the grace period) of the release, or all are killed.
///
/// # Errors
/// The first worker's failure (its message), a hang, or a setup error.
pub(crate) fn processes(kit: &Kit, workers: Vec<Worker<Job<'_>>>, limit: Duration) -> Result<f64, String> {
    let board = Board::new(workers.len())?;
    let grace = kit.settings().grace;
    let mut children = Vec::with_capacity(workers.len());
    for (i, w) in workers.into_iter().enumerate() {
        let board = &board;
        let (role, job) = (w.role, w.job);
        let child = child::fork(role, w.cpu, move || board.run(i, role, None, job).map_err(|()| worker_failed()))
            .map_err(|e| e.to_string())?;
        children.push(child);
    }
    // On an error, dropping `children` kills and reaps them.
    board.release(grace)?;
    let waited = child::wait_all(children, Instant::now() + grace + limit);
    if let Some(why) = board.failure() {
        return Err(why);
    }
    waited.map_err(|e| e.to_string())?;
    board.elapsed()
}

/// Runs each worker in a thread (pinned to its CPU) of one forked process,
/// all released at once; as [`processes`] otherwise. A worker that fails ends
/// the whole process at once (its peers might wait for it forever).
///
/// # Errors
/// As [`processes`].
pub(crate) fn threads(kit: &Kit, workers: Vec<Worker<SendJob<'_>>>, limit: Duration) -> Result<f64, String> {
    let board = Board::new(workers.len())?;
    let grace = kit.settings().grace;
    let child = child::fork("threads' host", None, || {
        let board = &board;
        std::thread::scope(|s| {
            for (i, w) in workers.into_iter().enumerate() {
                s.spawn(move || {
                    if board.run(i, w.role, w.cpu, w.job).is_err() {
                        // SAFETY: ends this forked process at once, threads and
                        // all; the parent reads why from the board.
                        unsafe { libc::_exit(EXIT_WORKER) };
                    }
                });
            }
            if let Err(e) = board.release(grace) {
                board.fail("threads' host", &e);
                // SAFETY: as above; the workers wait for a go that never comes.
                unsafe { libc::_exit(EXIT_WORKER) };
            }
        });
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let waited = child::wait_all(vec![child], Instant::now() + 2 * grace + limit);
    if let Some(why) = board.failure() {
        return Err(why);
    }
    waited.map_err(|e| e.to_string())?;
    board.elapsed()
}

/// Exit status of a threads' host whose worker failed (the message is on the board).
const EXIT_WORKER: i32 = 6;

/// The error a failed worker process exits with (the message is on the board).
fn worker_failed() -> shmproc::Error {
    shmproc::Error::Corrupt { what: "benchmark worker", detail: "see the race block".to_owned() }
}

/// `CLOCK_MONOTONIC` in ns: one clock for every process (unlike `Instant`,
/// whose values cannot be handed to another process).
fn monotonic_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
