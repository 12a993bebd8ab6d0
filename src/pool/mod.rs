//! Process pools: [`Pool`] (Python's `multiprocessing.Pool`) and its futures
//! (Python's `ProcessPoolExecutor`), which never hang when a worker dies.
//!
//! # How it works
//! Each worker is a child process (any start method) with a duplex pipe to
//! the pool ([`crate::pipe`]): tasks go down it, results come back. The pool
//! sends each worker at most a small window of tasks at a time and keeps the
//! rest in its own queue, so a slow task delays at most the window behind
//! it, and it knows at every moment which tasks each worker holds. One
//! thread per worker, in the pool's process, receives that worker's results
//! and watches it; nothing else runs in the background.
//!
//! Before it runs a task a worker writes the task's id into a shared word.
//! When a worker dies (even by `SIGKILL`), its thread reaps it and looks at
//! that word: the task it names, if the worker still held it, gets an error
//! naming the signal ([`Error::TaskFailed`]); the tasks the worker held but
//! had not started go to the other workers; and a new worker takes the dead
//! one's place. A task that panics gets an error carrying the panic message,
//! and its worker goes on. So every task ends, in a result or an error.
//!
//! # Dropping
//! Dropping a running [`Pool`] terminates it (as leaving Python's `with
//! Pool() as p:` does): workers are killed, and every unfinished task's
//! result is an error. Dropping a closed one that was not joined
//! ([`Pool::shutdown`]`(false)`, as `ProcessPoolExecutor.shutdown(wait=False)`)
//! lets its tasks finish on a thread of their own. Call [`Pool::close`] and
//! [`Pool::join`] to wait for them.
//!
//! # Callbacks
//! `on_success`/`on_error`/`add_done_callback` run exactly once: in the
//! pool's thread that received the outcome (that of the worker which ran the
//! task), in the thread that called [`Pool::terminate`] (or dropped the
//! pool) for the tasks it fails, or at once in the registering thread if the
//! result is already there. As in Python, a result's callbacks have run
//! before its `get` returns. A callback must not wait for the pool (`get`,
//! `apply`, `join`, dropping the last handle on it): that thread is the one
//! that receives its worker's results. A panic in a callback is caught and
//! ignored.
//!
//! # Panics
//! A task's panic is its result ([`Error::TaskFailed`] with the message);
//! workers print nothing. The pool wraps the process's panic hook once to
//! keep workers quiet (a hook set later replaces that wrapper).
//!
//! # Fork in a threaded program
//! The pool's threads exist while workers are replaced; with
//! [`StartMethod::Fork`] a replacement is forked from a threaded process
//! and inherits only the forking thread (see [`crate::process`]).
//! [`StartMethod::ForkServer`] and [`StartMethod::Spawn`] avoid this.

mod iter;
mod result;
mod worker;

pub(crate) use worker::{fuzz_examples, fuzz_parse};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::iter::{IMap, IMapUnordered};
pub use self::result::{AsCompleted, AsyncResult, Future, as_completed};
use self::result::{Failure, PartOutcome, Slot, Target, decode_chunks, decode_one};
use self::worker::{Message, WorkerArgs};
use crate::array::Value;
use crate::channel::{Connection, pipe};
use crate::codec;
use crate::error::{Error, Result};
use crate::process::target::{Entry, TypedEntry};
use crate::process::{Process, StartMethod, describe_exit, get_start_method};

/// Tasks a worker holds (sent, not yet answered) at least: the next task is
/// there when one ends, and a long task holds back at most one other.
const MIN_WINDOW: usize = 2;
/// ... and at most, for quick tasks: each one's round trip through the pool
/// then overlaps the others' work.
pub(crate) const MAX_WINDOW: usize = 64;
/// The work a worker may have queued behind the task it runs, by its recent
/// task times: the window is this over the mean task time, so quick tasks
/// stream and a slow one holds back little.
const QUEUED_WORK: Duration = Duration::from_micros(100);
/// Bytes of tasks a worker may hold unanswered, unless it holds none: a
/// quarter of its pipe's ring, so that a send to it never waits for room
/// (the ring holds all of them, framing and padding included). A send that
/// waited could wait for ever: the worker may itself be waiting to send an
/// answer to the very thread that sends.
const SEND_BUDGET: usize = crate::channel::PIPE_CAPACITY / 4;
/// The largest message a pool takes from a worker (a result, say): the size
/// is the worker's word, and a worker whose memory a task scribbled must not
/// make the pool allocate what it likes. Beyond it the worker is killed.
const MAX_MESSAGE: usize = 1 << 30;
/// The largest encoded arguments of one task (a message's length is a
/// `u32`).
const MAX_ARGS: usize = u32::MAX as usize - 1024;
/// A receive buffer grown past this by one large message is given back.
const KEEP_BUFFER: usize = 1 << 20;
/// What a task costs in that budget beyond its arguments (its headers, and
/// a definition of its function sent with it).
const TASK_OVERHEAD: usize = 128;

/// How often a worker's thread looks at the worker's process while waiting
/// for a message (the pipe reports a death by itself; this is the backstop).
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Starts one worker process: its end of the pipe, its started word, the
/// start method, its task budget.
type Spawner = Arc<dyn Fn(Connection, Value<u64>, StartMethod, Option<u64>) -> Result<Process<()>> + Send + Sync>;

/// Configures a [`Pool`] (Python's `Pool(processes, initializer, initargs,
/// maxtasksperchild, context)`).
#[must_use]
pub struct PoolBuilder {
    processes: Option<usize>,
    method: Option<StartMethod>,
    max_tasks: Option<u64>,
    spawner: Spawner,
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("method", &self.method)
            .field("max_tasks", &self.max_tasks)
            .finish_non_exhaustive()
    }
}

fn spawner<IA>(init: Option<(TypedEntry<IA, ()>, IA)>) -> Spawner
where
    IA: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    Arc::new(move |conn, started, method, max_tasks| {
        let args = WorkerArgs { conn, started, init: init.clone(), max_tasks };
        let mut p = Process::builder()
            .name("PoolWorker")
            .daemon(true)
            .start_method(method)
            .target(worker::worker_main::<IA>, args);
        p.start()?;
        Ok(p)
    })
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder { processes: None, method: None, max_tasks: None, spawner: spawner::<()>(None) }
    }
}

impl PoolBuilder {
    /// Number of worker processes (default: [`cpu_count`](crate::cpu_count)).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// The workers' start method (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Each worker exits after this many tasks and a new one replaces it
    /// (Python's `maxtasksperchild`); no task is left behind.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks = Some(n.max(1));
        self
    }

    /// Each worker calls `f(args)` when it starts, before any task (Python's
    /// `initializer`/`initargs`). `args` travels as a process argument, so it
    /// may hold shmproc handles (a lock for every task, say). If `f` panics
    /// in a worker of a new pool, [`build`](Self::build) fails with the
    /// message; in a replacement worker, the pool stops with every
    /// unfinished task failing (it does not start workers for ever).
    pub fn initializer<IA>(mut self, f: fn(IA), args: IA) -> Self
    where
        IA: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.spawner = spawner(Some((TypedEntry::new(f), args)));
        self
    }

    /// Starts the workers and waits until each has run its initializer.
    ///
    /// # Errors
    /// [`Error::ChildFailed`] if a worker's initializer panicked or a worker
    /// died before it was ready; [`Error::InvalidArgument`] for 0 processes;
    /// [`Error::Io`] if the system refuses a process.
    pub fn build(self) -> Result<Pool> {
        let n = self.processes.unwrap_or_else(crate::cpu_count);
        if n == 0 {
            return Err(Error::InvalidArgument { what: "a pool needs at least one process" });
        }
        let method = self.method.unwrap_or_else(get_start_method);
        worker::install_quiet_hook();
        let inner = Arc::new(Inner {
            spawner: self.spawner,
            method,
            max_tasks: self.max_tasks,
            state: Mutex::new(State {
                phase: Phase::Running,
                pending: VecDeque::new(),
                tasks: HashMap::default(),
                slots: (0..n).map(|_| Worker::default()).collect(),
                funcs: HashMap::new(),
                next_id: 1,
            }),
            idle: Condvar::new(),
            links: (0..n).map(|_| Mutex::new(Link::default())).collect(),
            processes: n,
        });
        // Start them all, then wait for each: their start-ups overlap.
        let mut launched = Vec::with_capacity(n);
        let mut failure = None;
        for _ in 0..n {
            match inner.launch() {
                Ok(x) => launched.push(x),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let mut ready = Vec::with_capacity(n);
        for (conn, process, started) in launched {
            let process = Arc::new(Mutex::new(process));
            if failure.is_none() {
                match await_ready(&conn, &process) {
                    Ok(()) => {
                        ready.push((conn, process, started));
                        continue;
                    }
                    Err(e) => failure = Some(e),
                }
            }
            let _ = finish_now(&process);
        }
        if let Some(e) = failure {
            for (_, process, _) in ready {
                let _ = finish_now(&process);
            }
            return Err(e);
        }
        let mut threads = Vec::with_capacity(n);
        for (i, (conn, process, started)) in ready.into_iter().enumerate() {
            let _ = inner.worker_up(i, &conn, process.clone());
            let worker = inner.clone();
            let thread = std::thread::Builder::new().name(format!("shmproc-pool-{i}")).spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| worker.supervise(i, conn, process, started));
                if std::panic::catch_unwind(run).is_err() {
                    // A bug: no one watches this worker any more.
                    worker.broken(&format!("the thread of worker {i} panicked"));
                }
            });
            match thread {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The workers started so far go with the pool.
                    let pool = Pool { inner, threads: Mutex::new(threads) };
                    drop(pool);
                    return Err(Error::io("spawning a pool thread", e));
                }
            }
        }
        Ok(Pool { inner, threads: Mutex::new(threads) })
    }
}

/// A pool of worker processes (Python's `multiprocessing.Pool`, and
/// `ProcessPoolExecutor` through [`submit`](Self::submit)).
///
/// Tasks are `fn(A) -> R` with serde arguments and results, named so that
/// every start method can run them. See the [module docs](self) for what
/// happens when a worker dies and when the pool is dropped.
///
/// # Examples
///
/// ```
/// use shmproc::Pool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.map(square, 1..=4, None)?, [1, 4, 9, 16]);
/// let r = pool.apply_async(square, 12)?;
/// assert_eq!(r.get()?, 144);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), shmproc::Error>(())
/// ```
pub struct Pool {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("processes", &self.inner.processes).finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool of `processes` workers with the default start method.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A builder, for the initializer, the start method and
    /// `max_tasks_per_child`.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers.
    pub fn processes(&self) -> usize {
        self.inner.processes
    }

    /// Tasks the workers may hold in all now (for `imap`'s read-ahead).
    pub(crate) fn capacity(&self) -> usize {
        self.inner.lock().slots.iter().map(|w| w.window.max(MIN_WINDOW)).sum()
    }

    /// Runs `f(args)` in a worker and waits for its result.
    ///
    /// # Errors
    /// [`Error::TaskFailed`] if the task panicked, its worker died, or the
    /// pool was terminated; [`Error::InvalidArgument`] if the pool is not
    /// running; [`Error::Codec`] if the arguments do not encode (an
    /// anonymous handle among them: pass handles through the initializer, or
    /// use named ones) or the result does not decode.
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.apply_async(f, args)?.get()
    }

    /// Queues `f(args)`; its result comes through the [`AsyncResult`].
    ///
    /// # Errors
    /// As [`apply`](Self::apply), for what is known at once.
    #[allow(clippy::needless_pass_by_value, reason = "Python's form: the arguments are the task's")]
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, args: A) -> Result<AsyncResult<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let bytes = codec::encode(&args)?;
        let slot = Slot::new(1);
        self.inner.submit(&Entry::new(f), vec![(bytes, Target::part(slot.clone(), 0))])?;
        Ok(AsyncResult::new(slot, decode_one::<R>))
    }

    /// Queues `f(args)` and returns its future (Python's
    /// `executor.submit`); the future is also a [`std::future::Future`].
    ///
    /// # Errors
    /// As [`apply_async`](Self::apply_async).
    pub fn submit<A, R>(&self, f: fn(A) -> R, args: A) -> Result<Future<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        Ok(Future::new(self.apply_async(f, args)?))
    }

    /// Applies `f` to every item, in chunks of `chunksize` items per task
    /// (`None`: Python's default, about four chunks per worker), and returns
    /// the results in order. The input is collected first, as Python's does;
    /// use [`imap`](Self::imap) for a long or endless input.
    ///
    /// # Errors
    /// As [`apply`](Self::apply): the first failed chunk's error.
    pub fn map<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.map_async(f, items, chunksize)?.get()
    }

    /// [`map`](Self::map), without waiting.
    ///
    /// # Errors
    /// As [`apply_async`](Self::apply_async).
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.chunked(&Entry::chunked(f), &items.into_iter().collect::<Vec<_>>(), chunksize)
    }

    /// [`map`](Self::map) for two-argument functions, each item a pair
    /// (Python's `starmap`).
    ///
    /// # Errors
    /// As [`map`](Self::map).
    pub fn starmap<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        B: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.starmap_async(f, items, chunksize)?.get()
    }

    /// [`starmap`](Self::starmap), without waiting.
    ///
    /// # Errors
    /// As [`apply_async`](Self::apply_async).
    pub fn starmap_async<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        B: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.chunked(&Entry::star_chunked(f), &items.into_iter().collect::<Vec<_>>(), chunksize)
    }

    fn chunked<T: Serialize, R: DeserializeOwned + 'static>(
        &self,
        entry: &Entry,
        items: &[T],
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>> {
        let size = match chunksize {
            Some(n) => n.max(1),
            // Python's: about four chunks per worker.
            None => items.len().div_ceil(self.inner.processes * 4).max(1),
        };
        let chunks = items.len().div_ceil(size);
        let slot = Slot::new(chunks);
        // Each chunk goes as soon as it is encoded: the workers start on the
        // first while the rest are encoded.
        for (n, chunk) in items.chunks(size).enumerate() {
            let job = (codec::encode(chunk)?, Target::part(slot.clone(), n));
            self.inner.submit(entry, vec![job])?;
        }
        Ok(AsyncResult::new(slot, decode_chunks::<R>))
    }

    /// Applies `f` to every item lazily, yielding results in order: the
    /// input is read only as results are taken, a bounded number of chunks
    /// ahead, so an endless iterator works (with `take`) and memory stays
    /// flat. Each item is a `Result`: a failed chunk gives an error for each
    /// of its items, and the iteration goes on.
    pub fn imap<'p, A, R>(
        &'p self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A> + 'p,
        chunksize: usize,
    ) -> IMap<'p, A, R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        IMap::new(self, Entry::chunked(f), Box::new(items.into_iter()), chunksize)
    }

    /// [`imap`](Self::imap), yielding results in the order they finish.
    pub fn imap_unordered<'p, A, R>(
        &'p self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A> + 'p,
        chunksize: usize,
    ) -> IMapUnordered<'p, A, R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        IMapUnordered::new(self, Entry::chunked(f), Box::new(items.into_iter()), chunksize)
    }

    /// No more tasks: the queued ones finish, then the workers exit
    /// ([`join`](Self::join) waits for that).
    pub fn close(&self) {
        let mut st = self.inner.lock();
        if matches!(st.phase, Phase::Running) {
            st.phase = Phase::Closed;
        }
    }

    /// Stops at once: workers are killed and every unfinished task's result
    /// is an error ([`Error::TaskFailed`]).
    pub fn terminate(&self) {
        self.inner.terminate();
    }

    /// Python's `executor.shutdown(wait)`: [`close`](Self::close), then, if
    /// `wait`, [`join`](Self::join).
    ///
    /// # Errors
    /// As `join`.
    pub fn shutdown(&self, wait: bool) -> Result<()> {
        self.close();
        if wait { self.join() } else { Ok(()) }
    }

    /// Waits for the workers to exit, after [`close`](Self::close) (once
    /// every task has finished) or [`terminate`](Self::terminate).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the pool is still running.
    pub fn join(&self) -> Result<()> {
        if matches!(self.inner.lock().phase, Phase::Running) {
            return Err(Error::InvalidArgument { what: "join a pool after close or terminate" });
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        self.inner.finish(threads);
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let threads = std::mem::take(self.threads.get_mut().unwrap_or_else(PoisonError::into_inner));
        if threads.is_empty() {
            return; // joined
        }
        let closed = matches!(self.inner.lock().phase, Phase::Closed);
        if !closed {
            self.terminate();
            self.inner.finish(threads);
            return;
        }
        // Closed and not joined (`shutdown(false)`, say): the queued tasks
        // still finish, on a thread of their own.
        let inner = self.inner.clone();
        let finisher = std::thread::Builder::new().name("shmproc-pool-join".into());
        if finisher.spawn(move || inner.finish(threads)).is_err() {
            // No thread for it: stop now rather than leave workers behind.
            self.terminate();
        }
    }
}

/// Where the pool is in its life.
enum Phase {
    Running,
    /// `close` was called: queued tasks finish, no new ones.
    Closed,
    Terminated,
    /// A replacement worker's initializer failed: every task fails.
    Broken(String),
}

/// One queued or running task.
struct Task {
    fid: u32,
    entry: Arc<Entry>,
    args: Arc<Vec<u8>>,
    target: Target,
}

/// The pool's view of one worker slot.
#[derive(Default)]
struct Worker {
    /// A worker is there and takes tasks.
    up: bool,
    /// Bumped for each new worker in the slot (matches its `Link`).
    generation: u64,
    /// Tasks sent to it, not answered yet, in the order sent, with their
    /// cost in the send budget.
    inflight: VecDeque<(u64, usize)>,
    /// The sum of those costs.
    inflight_bytes: usize,
    /// Tasks it may still be sent (`max_tasks_per_child`).
    budget: Option<u64>,
    /// Its process, to kill on `terminate`.
    process: Option<Arc<Mutex<Process<()>>>>,
    /// Tasks it may hold now (`MIN_WINDOW..=MAX_WINDOW`).
    window: usize,
    /// When it last answered, and the mean of its recent task times (ns).
    last_done: Option<Instant>,
    mean_ns: u64,
}

impl Worker {
    /// `n` tasks ended by `now`, while it held `held`. If it held more than
    /// those, it went straight on, so the time since its last answer is
    /// `n` tasks': the window follows the mean of those.
    fn answered(&mut self, now: Instant, n: usize, held: usize) {
        if held > n
            && let Some(last) = self.last_done
        {
            let took = u64::try_from(now.duration_since(last).as_nanos() / n.max(1) as u128).unwrap_or(u64::MAX);
            self.mean_ns = if self.mean_ns == 0 { took } else { self.mean_ns - self.mean_ns / 8 + took / 8 };
            let budget = u64::try_from(QUEUED_WORK.as_nanos()).unwrap_or(u64::MAX);
            self.window =
                usize::try_from(budget / self.mean_ns.max(1)).unwrap_or(MAX_WINDOW).clamp(MIN_WINDOW, MAX_WINDOW);
        }
        self.last_done = Some(now);
    }
}

/// The send side of one worker slot.
#[derive(Default)]
struct Link {
    conn: Option<Connection>,
    generation: u64,
    /// Functions defined to the current worker.
    known: Vec<bool>,
    buf: Vec<u8>,
}

struct State {
    phase: Phase,
    /// Tasks not sent yet, oldest first, with their cost in a worker's send
    /// budget.
    pending: VecDeque<(u64, usize)>,
    /// Every unfinished task (queued or sent).
    tasks: HashMap<u64, Task, Ids>,
    slots: Vec<Worker>,
    /// Functions by entry key: their id and entry.
    funcs: HashMap<(u64, u64), (u32, Arc<Entry>)>,
    next_id: u64,
}

/// Hashes task ids (sequential `u64`s, never chosen by anyone else) with one
/// multiplication: `SipHash` was a tenth of the pool's time per task.
#[derive(Default, Clone, Copy)]
struct Ids;

impl std::hash::BuildHasher for Ids {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A task to send to a worker, decided under the state lock and sent after.
struct Dispatch {
    slot: usize,
    generation: u64,
    id: u64,
    fid: u32,
    entry: Arc<Entry>,
    args: Arc<Vec<u8>>,
}

impl State {
    /// Hands queued tasks to workers with room: what to send.
    fn assign(&mut self) -> Vec<Dispatch> {
        let mut sends = Vec::new();
        while let Some(&(id, cost)) = self.pending.front() {
            let Some(slot) = (0..self.slots.len())
                .filter(|&i| {
                    let w = &self.slots[i];
                    w.up && w.inflight.len() < w.window
                        && w.budget != Some(0)
                        && (w.inflight.is_empty() || w.inflight_bytes + cost <= SEND_BUDGET)
                })
                .min_by_key(|&i| self.slots[i].inflight.len())
            else {
                break;
            };
            self.pending.pop_front();
            let Some(task) = self.tasks.get(&id) else { continue };
            let w = &mut self.slots[slot];
            w.inflight.push_back((id, cost));
            w.inflight_bytes += cost;
            if let Some(b) = &mut w.budget {
                *b -= 1;
            }
            sends.push(Dispatch {
                slot,
                generation: w.generation,
                id,
                fid: task.fid,
                entry: task.entry.clone(),
                args: task.args.clone(),
            });
        }
        sends
    }

    /// Takes every unfinished task out, for failing them all.
    fn drain_tasks(&mut self) -> Vec<Task> {
        self.pending.clear();
        for w in &mut self.slots {
            w.inflight.clear();
            w.inflight_bytes = 0;
        }
        self.tasks.drain().map(|(_, t)| t).collect()
    }
}

struct Inner {
    spawner: Spawner,
    method: StartMethod,
    max_tasks: Option<u64>,
    processes: usize,
    state: Mutex<State>,
    /// Signalled when the last unfinished task finishes.
    idle: Condvar,
    links: Vec<Mutex<Link>>,
}

/// What a worker's thread does after its worker went.
enum Next {
    Replace,
    Stop,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues tasks of `entry` (encoded arguments, where each outcome goes)
    /// and sends what workers have room for.
    fn submit(&self, entry: &Entry, jobs: Vec<(Vec<u8>, Target)>) -> Result<()> {
        let mut st = self.lock();
        match &st.phase {
            Phase::Running => {}
            Phase::Broken(why) => return Err(Failure::Broken(why.clone()).error()),
            Phase::Closed | Phase::Terminated => {
                return Err(Error::InvalidArgument { what: "the pool is not running (closed or terminated)" });
            }
        }
        if let Some((args, _)) = jobs.iter().find(|(args, _)| args.len() > MAX_ARGS) {
            return Err(Error::TooLarge { size: args.len(), limit: MAX_ARGS });
        }
        let next_fid = u32::try_from(st.funcs.len()).unwrap_or(u32::MAX);
        let (fid, entry) = st.funcs.entry(entry.key()).or_insert_with(|| (next_fid, Arc::new(entry.clone()))).clone();
        for (args, target) in jobs {
            let id = st.next_id;
            st.next_id += 1;
            let cost = args.len() + TASK_OVERHEAD;
            st.tasks.insert(id, Task { fid, entry: entry.clone(), args: Arc::new(args), target });
            st.pending.push_back((id, cost));
        }
        let sends = st.assign();
        drop(st);
        self.send_all(sends);
        Ok(())
    }

    /// Sends tasks decided under the lock. One whose worker has gone since
    /// (another generation) is skipped: the death sent it elsewhere. A send
    /// that fails is left to the worker's thread, which sees the death.
    fn send_all(&self, mut sends: Vec<Dispatch>) {
        // One message per worker: a batch of its tasks, in order.
        sends.sort_by_key(|s| s.slot);
        for group in sends.chunk_by(|a, b| a.slot == b.slot) {
            let mut link = self.links[group[0].slot].lock().unwrap_or_else(PoisonError::into_inner);
            let link = &mut *link;
            let Some(conn) = link.conn.clone() else { continue };
            worker::batch_start(&mut link.buf);
            for s in group.iter().filter(|s| s.generation == link.generation) {
                let fid = s.fid as usize;
                if !link.known.get(fid).copied().unwrap_or(false) {
                    if worker::batch_push(&mut link.buf, |b| worker::define(b, s.fid, &s.entry)).is_err() {
                        continue;
                    }
                    if link.known.len() <= fid {
                        link.known.resize(fid + 1, false);
                    }
                    link.known[fid] = true;
                }
                let _ = worker::batch_push(&mut link.buf, |b| {
                    worker::run(b, s.id, s.fid, &s.args);
                    Ok(())
                });
            }
            // A failed send is the worker's death: its thread sees it.
            let _ = conn.send_bytes(&link.buf);
        }
    }

    /// A worker answered tasks (ids and outcomes, in order).
    fn complete(&self, slot: usize, answers: &mut Vec<(u64, PartOutcome)>) {
        let mut st = self.lock();
        let held = st.slots[slot].inflight.len();
        st.slots[slot].answered(Instant::now(), answers.len(), held);
        let mut done = Vec::with_capacity(answers.len());
        for (id, outcome) in answers.drain(..) {
            let w = &mut st.slots[slot];
            // Only a task this worker holds: anything else is ignored.
            // A worker answers in the order it was sent tasks, almost always.
            let at = if w.inflight.front().is_some_and(|&(x, _)| x == id) {
                Some(0)
            } else {
                w.inflight.iter().position(|&(x, _)| x == id)
            };
            let Some(at) = at else { continue };
            if let Some((_, cost)) = w.inflight.remove(at) {
                w.inflight_bytes -= cost;
            }
            if let Some(task) = st.tasks.remove(&id) {
                done.push((task, outcome));
            }
        }
        let sends = st.assign();
        let idle = st.tasks.is_empty();
        drop(st);
        if idle {
            self.idle.notify_all();
        }
        self.send_all(sends);
        for (task, outcome) in done {
            task.target.deliver(outcome);
        }
    }

    /// Starts a worker for a slot (not waiting for it): the pool's end of
    /// its pipe, its process, its started word.
    fn launch(&self) -> Result<(Connection, Process<()>, Value<u64>)> {
        let started = Value::new(0u64)?;
        let (here, there) = pipe()?;
        let process = (self.spawner)(there, started.clone(), self.method, self.max_tasks)?;
        Ok((here, process, started))
    }

    /// A new worker is ready in `slot`: it takes tasks. `false` if the pool
    /// stopped meanwhile (the worker is stopped).
    fn worker_up(&self, slot: usize, conn: &Connection, process: Arc<Mutex<Process<()>>>) -> bool {
        let generation = {
            let mut link = self.links[slot].lock().unwrap_or_else(PoisonError::into_inner);
            link.generation += 1;
            link.known.clear();
            link.conn = Some(conn.clone());
            link.generation
        };
        let mut st = self.lock();
        let stop = match st.phase {
            Phase::Running => false,
            Phase::Closed => st.tasks.is_empty(),
            Phase::Terminated | Phase::Broken(_) => true,
        };
        if stop {
            drop(st);
            let _ = conn.send_bytes(&worker::STOP_MESSAGE);
            return false;
        }
        let max_tasks = self.max_tasks;
        let w = &mut st.slots[slot];
        *w = Worker {
            up: true,
            generation,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            budget: max_tasks,
            process: Some(process),
            window: MIN_WINDOW,
            last_done: None,
            mean_ns: 0,
        };
        let sends = st.assign();
        drop(st);
        self.send_all(sends);
        true
    }

    /// The worker in `slot` is gone: `how` it died (`None`: it exited by
    /// itself), `started` the id in its started word. Fails the task it was
    /// running, queues again those it had not started, and says whether to
    /// replace it.
    fn worker_gone(&self, slot: usize, how: Option<&str>, started: u64) -> Next {
        {
            let mut link = self.links[slot].lock().unwrap_or_else(PoisonError::into_inner);
            link.conn = None;
            link.generation += 1;
            link.known.clear();
        }
        let mut st = self.lock();
        let w = &mut st.slots[slot];
        w.up = false;
        w.process = None;
        let held = std::mem::take(&mut w.inflight);
        w.inflight_bytes = 0;
        let mut failed = None;
        // The task it started and did not answer fails (even if it left by
        // itself: running it again could repeat its effects); the others it
        // never started go to the others, in order.
        for &(id, cost) in held.iter().rev() {
            if id == started {
                let how = how.unwrap_or("exited without answering").to_owned();
                failed = st.tasks.remove(&id).map(|t| (t, how));
            } else {
                st.pending.push_front((id, cost));
            }
        }
        let sends = st.assign();
        let next = match st.phase {
            Phase::Running => Next::Replace,
            Phase::Closed if !st.tasks.is_empty() => Next::Replace,
            Phase::Closed | Phase::Terminated | Phase::Broken(_) => Next::Stop,
        };
        let idle = st.tasks.is_empty();
        drop(st);
        if idle {
            self.idle.notify_all();
        }
        self.send_all(sends);
        if let Some((task, how)) = failed {
            task.target.deliver(Err(Failure::Died(how)));
        }
        next
    }

    /// After `close` or `terminate`: waits until every task is done (or the
    /// pool stopped), tells the workers to go, and joins `threads`.
    fn finish(&self, threads: Vec<JoinHandle<()>>) {
        let mut st = self.lock();
        while matches!(st.phase, Phase::Closed) && !st.tasks.is_empty() {
            st = self.idle.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        drop(st);
        for link in &self.links {
            let link = link.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(conn) = &link.conn {
                let _ = conn.send_bytes(&worker::STOP_MESSAGE);
            }
        }
        for t in threads {
            let _ = t.join();
        }
    }

    fn terminate(&self) {
        let mut st = self.lock();
        st.phase = Phase::Terminated;
        let tasks = st.drain_tasks();
        let processes: Vec<_> = st.slots.iter().filter_map(|w| w.process.clone()).collect();
        drop(st);
        self.idle.notify_all();
        for p in processes {
            let _ = p.lock().unwrap_or_else(PoisonError::into_inner).kill();
        }
        for t in tasks {
            t.target.deliver(Err(Failure::Terminated));
        }
    }

    /// A replacement's initializer failed: the pool fails every task.
    fn broken(&self, why: &str) {
        let mut st = self.lock();
        if matches!(st.phase, Phase::Terminated) {
            return;
        }
        st.phase = Phase::Broken(why.to_owned());
        let tasks = st.drain_tasks();
        drop(st);
        self.idle.notify_all();
        for t in tasks {
            t.target.deliver(Err(Failure::Broken(why.to_owned())));
        }
    }

    /// The thread of worker slot `slot`: receives results, and replaces the
    /// worker when it goes.
    fn supervise(
        &self,
        slot: usize,
        mut conn: Connection,
        mut process: Arc<Mutex<Process<()>>>,
        mut started: Value<u64>,
    ) {
        let mut buf = vec![0; 4096];
        let mut answers = Vec::new();
        loop {
            // One answer (waiting), then whatever else is there already: the
            // pool's lock is taken once for all of them.
            let mut gone = false;
            let mut wait = LOOK_EVERY;
            loop {
                match conn.recv_bytes_growing(&mut buf, Some(wait), MAX_MESSAGE) {
                    Ok(len) => {
                        let Ok(Message::Done { id, state, payload }) = worker::parse(&buf[..len]) else {
                            // Anything else from a running worker breaks the protocol.
                            gone = true;
                            break;
                        };
                        answers.push((id, answer(state, payload)));
                    }
                    Err(Error::Timeout) => {
                        if gone || !answers.is_empty() || lock_process(&process).is_alive() {
                            break;
                        }
                        // Gone between two looks: what it sent before it went
                        // is still in the pipe; take it first.
                        gone = true;
                    }
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
                if answers.len() >= MAX_WINDOW && !gone {
                    break;
                }
                wait = Duration::ZERO;
            }
            if buf.len() > KEEP_BUFFER {
                buf = vec![0; 4096];
            }
            if !answers.is_empty() {
                self.complete(slot, &mut answers);
            }
            if !gone {
                continue;
            }
            let how = finish(&mut lock_process(&process));
            match self.worker_gone(slot, how.as_deref(), started.get()) {
                Next::Stop => return,
                Next::Replace => {}
            }
            // A new worker in the slot; until one is ready, the others work.
            // It is the slot's process while it starts, so that `terminate`
            // kills it there too.
            let replacement = self.launch().and_then(|(c, p, s)| {
                let p = Arc::new(Mutex::new(p));
                // Registered and checked under one lock: either `terminate`
                // finds it to kill, or it sees the pool stopped here.
                let mut st = self.lock();
                st.slots[slot].process = Some(p.clone());
                let stopped = !matches!(st.phase, Phase::Running | Phase::Closed);
                drop(st);
                if stopped {
                    let _ = finish_now(&p);
                    return Err(Error::Closed);
                }
                await_ready(&c, &p)?;
                Ok((c, p, s))
            });
            match replacement {
                Ok((c, p, s)) => {
                    conn = c;
                    process = p;
                    started = s;
                    if !self.worker_up(slot, &conn, process.clone()) {
                        let _ = finish(&mut lock_process(&process));
                        return;
                    }
                }
                Err(_) if !matches!(self.lock().phase, Phase::Running | Phase::Closed) => return,
                Err(e) => {
                    self.broken(&format!("a replacement worker could not start: {e}"));
                    return;
                }
            }
        }
    }
}

/// A `DONE` message's outcome.
fn answer(state: u8, payload: &[u8]) -> PartOutcome {
    match state {
        worker::RETURNED => Ok(payload.to_vec()),
        worker::PANICKED => Err(Failure::Panicked(String::from_utf8_lossy(payload).into_owned())),
        _ => Err(Failure::Failed(String::from_utf8_lossy(payload).into_owned())),
    }
}

fn lock_process(p: &Mutex<Process<()>>) -> MutexGuard<'_, Process<()>> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Kills and reaps a worker at once.
fn finish_now(p: &Mutex<Process<()>>) -> Option<String> {
    let mut p = lock_process(p);
    let _ = p.kill();
    finish(&mut p)
}

/// Reaps a worker that went (killing it first if it still runs after a
/// grace period): how it died, or `None` if it exited by itself.
fn finish(p: &mut Process<()>) -> Option<String> {
    let outcome = match p.join_timeout(Duration::from_secs(1)) {
        Ok(Some(())) => return None,
        Ok(None) => {
            // Alive but off the protocol: it cannot be trusted with tasks.
            let _ = p.kill();
            p.join()
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => None,
        Err(Error::ChildFailed { exitcode: Some(code), .. }) => Some(describe_exit(code)),
        Err(e) => Some(e.to_string()),
    }
}

/// Waits until a new worker says it is ready.
///
/// # Errors
/// [`Error::ChildFailed`] if its initializer failed or it died first.
fn await_ready(conn: &Connection, process: &Mutex<Process<()>>) -> Result<()> {
    let failed = |reason: String| Error::ChildFailed { reason, exitcode: None };
    let mut buf = vec![0; 256];
    loop {
        // The process is locked only to act on it: `terminate` kills it there.
        match conn.recv_bytes_growing(&mut buf, Some(LOOK_EVERY), MAX_MESSAGE) {
            Ok(len) => {
                let mut process = lock_process(process);
                return match worker::parse(&buf[..len]) {
                    Ok(Message::Ready) => {
                        // It has opened every handle in its arguments.
                        process.release_args();
                        Ok(())
                    }
                    Ok(Message::InitFailed(why)) => {
                        let _ = finish(&mut process);
                        Err(failed(format!("a pool worker failed to start: {why}")))
                    }
                    _ => {
                        let _ = process.kill();
                        let _ = finish(&mut process);
                        Err(failed("a pool worker broke the protocol while starting".to_owned()))
                    }
                };
            }
            Err(Error::Timeout) if lock_process(process).is_alive() => {}
            Err(_) => {
                let how = finish(&mut lock_process(process)).unwrap_or_else(|| "exited".to_owned());
                return Err(failed(format!("a pool worker {how} before it was ready")));
            }
        }
    }
}
