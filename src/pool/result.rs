//! Where a pool task's outcome goes: [`AsyncResult`], [`Future`], and the
//! streams behind `imap`.
//!
//! A result holds the encoded outcome of one or more parts (a `map` is one
//! part per chunk) and decodes it on every `get`, so `get` can be called any
//! number of times without `R: Clone`. Callbacks run exactly once, in the
//! pool's thread that received the outcome, or at once in the caller's if
//! the outcome is already there.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, Result};
use crate::os::Deadline;

/// Why a task has no result.
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    /// The task panicked, with this message.
    Panicked(String),
    /// The task could not run (its arguments did not decode, say).
    Failed(String),
    /// Its worker died while running it (how, e.g. "killed by signal 9").
    Died(String),
    /// The pool was terminated before the task finished.
    Terminated,
    /// The pool could not go on (a replacement worker's initializer failed).
    Broken(String),
}

impl Failure {
    /// The error a caller gets.
    pub(crate) fn error(&self) -> Error {
        let reason = match self {
            Failure::Panicked(msg) => format!("the task panicked: {msg}"),
            Failure::Failed(msg) => format!("the task could not run: {msg}"),
            Failure::Died(how) => format!("its worker process was {how} while running it"),
            Failure::Terminated => "the pool was terminated before the task finished".to_owned(),
            Failure::Broken(why) => format!("the pool is broken: {why}"),
        };
        Error::TaskFailed { reason }
    }
}

/// One part's outcome: its encoded result, or why there is none.
pub(crate) type PartOutcome = std::result::Result<Vec<u8>, Failure>;

/// Where a task's outcome is delivered: exactly once. A target dropped
/// undelivered (a bug, or a pool thread that died) delivers a failure
/// itself, so that no waiter waits for ever.
pub(crate) struct Target(Option<To>);

enum To {
    /// Part `n` of a result.
    Part(Arc<Slot>, usize),
    /// An `imap` stream, as item `n`.
    Stream(Arc<Stream>, u64),
}

impl Target {
    /// Part `n` of `slot`.
    pub(crate) fn part(slot: Arc<Slot>, n: usize) -> Target {
        Target(Some(To::Part(slot, n)))
    }

    /// Item `n` of `stream`.
    pub(crate) fn stream(stream: Arc<Stream>, n: u64) -> Target {
        Target(Some(To::Stream(stream, n)))
    }

    /// Delivers `outcome` (running callbacks, waking waiters).
    pub(crate) fn deliver(mut self, outcome: PartOutcome) {
        match self.0.take() {
            Some(To::Part(slot, n)) => slot.deliver(n, outcome),
            Some(To::Stream(stream, n)) => stream.push(n, outcome),
            None => {}
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.0.is_some() {
            let lost = Failure::Broken("the pool lost the task (a pool thread failed)".to_owned());
            Target(self.0.take()).deliver(Err(lost));
        }
    }
}

type Callback = Box<dyn FnOnce(&Slot) + Send>;

/// Looks at a result before a waiter sleeps on it.
const SPINS_BEFORE_SLEEP: u32 = 20;

/// The shared state of one result.
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    done: Condvar,
}

impl SlotState {
    /// Whether a waiter in this thread has what it waits for.
    fn ready_here(&self) -> bool {
        self.settled || (self.outcome.is_some() && self.delivering == Some(std::thread::current().id()))
    }
}

struct SlotState {
    /// Each part's encoded result (empty until it arrives; each arrives
    /// once: the pool delivers a task's outcome once).
    parts: Vec<Vec<u8>>,
    remaining: usize,
    /// Threads asleep in `wait` (a notify is a system call: only for them).
    sleepers: u32,
    /// Set once: every part arrived, or the first failure did.
    outcome: Option<std::result::Result<(), Failure>>,
    /// The outcome is there and every callback has run: what waiters wait
    /// for (as in Python, a callback has run when `get` returns).
    settled: bool,
    /// The thread running the callbacks: for it the outcome is there
    /// already (a future's callback reads its result).
    delivering: Option<std::thread::ThreadId>,
    callbacks: Vec<Callback>,
    wakers: Vec<Waker>,
}

impl Slot {
    /// A result of `parts` parts (0: complete at once, an empty `map`).
    pub(crate) fn new(parts: usize) -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState {
                parts: vec![Vec::new(); parts],
                remaining: parts,
                sleepers: 0,
                outcome: (parts == 0).then_some(Ok(())),
                settled: parts == 0,
                delivering: None,
                callbacks: Vec::new(),
                wakers: Vec::new(),
            }),
            done: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deliver(&self, n: usize, outcome: PartOutcome) {
        let mut s = self.lock();
        if s.outcome.is_some() {
            return; // an earlier part failed: the result is settled
        }
        match outcome {
            Ok(bytes) => {
                if let Some(part) = s.parts.get_mut(n) {
                    *part = bytes;
                    s.remaining = s.remaining.saturating_sub(1);
                }
                if s.remaining > 0 {
                    return;
                }
                s.outcome = Some(Ok(()));
            }
            Err(failure) => s.outcome = Some(Err(failure)),
        }
        // Callbacks first (those added meanwhile too), then the waiters. A
        // panicking callback is caught: the others, and the waiters, still
        // get theirs.
        s.delivering = Some(std::thread::current().id());
        loop {
            let callbacks = std::mem::take(&mut s.callbacks);
            if callbacks.is_empty() {
                break;
            }
            drop(s);
            for callback in callbacks {
                self.run(callback);
            }
            s = self.lock();
        }
        s.settled = true;
        s.delivering = None;
        let wakers = std::mem::take(&mut s.wakers);
        let sleepers = s.sleepers;
        drop(s);
        if sleepers > 0 {
            self.done.notify_all();
        }
        for waker in wakers {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
        }
    }

    /// Whether the outcome is there (and its callbacks have run, unless this
    /// thread is running them).
    fn ready(&self) -> bool {
        self.lock().ready_here()
    }

    /// Waits for the outcome until `deadline`: whether it is there. Looks a
    /// few times, yielding, before it sleeps: results of quick tasks come
    /// within microseconds, and a sleep costs a wake-up on each side.
    fn wait(&self, deadline: Option<Deadline>) -> bool {
        for _ in 0..SPINS_BEFORE_SLEEP {
            if self.ready() {
                return true;
            }
            std::thread::yield_now();
        }
        let mut s = self.lock();
        s.sleepers += 1;
        let mut ready = true;
        while !s.ready_here() {
            match deadline {
                None => s = self.done.wait(s).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let left = d.left();
                    if left.is_zero() {
                        ready = false;
                        break;
                    }
                    s = self.done.wait_timeout(s, left).unwrap_or_else(PoisonError::into_inner).0;
                }
            }
        }
        s.sleepers -= 1;
        ready
    }

    /// Decodes the outcome with `decode` (over the parts in order); `None`
    /// if it is not there yet.
    fn read<R>(&self, decode: fn(&[Vec<u8>]) -> Result<R>) -> Option<Result<R>> {
        let s = self.lock();
        if let Err(failure) = s.outcome.as_ref()? {
            return Some(Err(failure.error()));
        }
        Some(decode(&s.parts))
    }

    /// Whether it succeeded; `None` if not finished.
    fn succeeded(&self) -> Option<bool> {
        let s = self.lock();
        s.outcome.as_ref().filter(|_| s.settled).map(std::result::Result::is_ok)
    }

    /// Runs `f` once the outcome is there (at once, here, if it is).
    fn on_done(&self, f: Callback) {
        let mut s = self.lock();
        if !s.settled {
            s.callbacks.push(f);
            return;
        }
        drop(s);
        self.run(f);
    }

    /// Runs one callback, here and now. One that panics is ignored (the
    /// panic hook prints its message), as Python's `concurrent.futures`
    /// logs and ignores a callback's exception: whether it ran in the
    /// pool's thread or at once in the caller's, because the result was
    /// already there, depends only on timing.
    fn run(&self, f: Callback) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
    }

    /// Registers `waker` unless the outcome is there: whether it is.
    fn poll_ready(&self, waker: &Waker) -> bool {
        let mut s = self.lock();
        if s.settled {
            return true;
        }
        if !s.wakers.iter().any(|w| w.will_wake(waker)) {
            s.wakers.push(waker.clone());
        }
        false
    }
}

/// Decodes a one-part result.
pub(crate) fn decode_one<R: DeserializeOwned>(parts: &[Vec<u8>]) -> Result<R> {
    codec::decode(parts.first().map_or(&[][..], Vec::as_slice))
}

/// Decodes a result of chunks, each a `Vec<T>`, as one `Vec<T>`.
pub(crate) fn decode_chunks<T: DeserializeOwned>(parts: &[Vec<u8>]) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for part in parts {
        out.extend(codec::decode::<Vec<T>>(part)?);
    }
    Ok(out)
}

/// The result of [`Pool::apply_async`](super::Pool::apply_async) and
/// [`Pool::map_async`](super::Pool::map_async) (Python's `AsyncResult`).
///
/// `get` may be called any number of times: each call decodes the result
/// afresh. A task that panicked, whose worker died, or whose pool was
/// terminated gives [`Error::TaskFailed`] saying which.
pub struct AsyncResult<R> {
    slot: Arc<Slot>,
    decode: fn(&[Vec<u8>]) -> Result<R>,
    _r: PhantomData<fn() -> R>,
}

impl<R> Clone for AsyncResult<R> {
    fn clone(&self) -> Self {
        AsyncResult { slot: self.slot.clone(), decode: self.decode, _r: PhantomData }
    }
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("ready", &self.slot.ready()).finish_non_exhaustive()
    }
}

impl<R: 'static> AsyncResult<R> {
    pub(crate) fn new(slot: Arc<Slot>, decode: fn(&[Vec<u8>]) -> Result<R>) -> Self {
        AsyncResult { slot, decode, _r: PhantomData }
    }

    /// Waits for the result and returns it.
    ///
    /// # Errors
    /// [`Error::TaskFailed`] if the task failed; [`Error::Codec`] if the
    /// result does not decode as `R`.
    pub fn get(&self) -> Result<R> {
        self.slot.wait(None);
        self.slot.read(self.decode).unwrap_or(Err(Error::Timeout))
    }

    /// [`get`](Self::get), waiting at most `timeout` ([`Error::Timeout`]).
    ///
    /// # Errors
    /// As `get`, and [`Error::Timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        if !self.slot.wait(Some(Deadline::after(timeout))) {
            return Err(Error::Timeout);
        }
        self.slot.read(self.decode).unwrap_or(Err(Error::Timeout))
    }

    /// Waits until the result is there.
    pub fn wait(&self) {
        self.slot.wait(None);
    }

    /// Waits at most `timeout`: whether the result is there.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait(Some(Deadline::after(timeout)))
    }

    /// Whether the task has finished.
    pub fn ready(&self) -> bool {
        self.slot.ready()
    }

    /// Whether the task finished without failing; `None` while it runs
    /// (Python raises `ValueError` there).
    pub fn successful(&self) -> Option<bool> {
        self.slot.succeeded()
    }

    /// Calls `f` with the result once the task succeeds (exactly once; at
    /// once, here, if it already has; in the pool's thread otherwise).
    /// Nothing happens if it fails. A callback that panics is ignored
    /// (the panic hook prints its message), wherever it runs.
    pub fn on_success(&self, f: impl FnOnce(R) + Send + 'static) -> &Self {
        let decode = self.decode;
        self.slot.on_done(Box::new(move |slot| {
            if let Some(Ok(r)) = slot.read(decode) {
                f(r);
            }
        }));
        self
    }

    /// Calls `f` with the error once the task fails (exactly once; as
    /// [`on_success`](Self::on_success)). A result that does not decode
    /// counts as a failure here.
    pub fn on_error(&self, f: impl FnOnce(Error) + Send + 'static) -> &Self {
        let decode = self.decode;
        self.slot.on_done(Box::new(move |slot| {
            if let Some(Err(e)) = slot.read(decode) {
                f(e);
            }
        }));
        self
    }
}

/// The future of [`Pool::submit`](super::Pool::submit) (Python's
/// `concurrent.futures.Future`); it is also a [`std::future::Future`], so
/// async code can `.await` it.
pub struct Future<R>(AsyncResult<R>);

impl<R> Clone for Future<R> {
    fn clone(&self) -> Self {
        Future(self.0.clone())
    }
}

impl<R> std::fmt::Debug for Future<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Future").field("done", &self.0.slot.ready()).finish_non_exhaustive()
    }
}

impl<R: 'static> Future<R> {
    pub(crate) fn new(result: AsyncResult<R>) -> Self {
        Future(result)
    }

    /// Waits for the result and returns it.
    ///
    /// # Errors
    /// As [`AsyncResult::get`].
    pub fn result(&self) -> Result<R> {
        self.0.get()
    }

    /// [`result`](Self::result), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`AsyncResult::get_timeout`].
    pub fn result_timeout(&self, timeout: Duration) -> Result<R> {
        self.0.get_timeout(timeout)
    }

    /// Whether the task has finished (Python's `done()`).
    pub fn done(&self) -> bool {
        self.0.ready()
    }

    /// Calls `f` with this future once it is done, whether it succeeded or
    /// not (exactly once; at once, here, if it is done already). A callback
    /// that panics is ignored (the panic hook prints its message), as
    /// Python logs and ignores a callback's exception.
    pub fn add_done_callback(&self, f: impl FnOnce(&Future<R>) + Send + 'static) {
        let me = self.clone();
        self.0.slot.on_done(Box::new(move |_| f(&me)));
    }
}

impl<R: 'static> std::future::Future for Future<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        if !self.0.slot.poll_ready(cx.waker()) {
            return Poll::Pending;
        }
        Poll::Ready(self.0.slot.read(self.0.decode).unwrap_or(Err(Error::Timeout)))
    }
}

/// The futures of `futures` in the order they finish (Python's
/// `as_completed`); those already done come first.
pub fn as_completed<R: 'static>(futures: impl IntoIterator<Item = Future<R>>) -> AsCompleted<R> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut count = 0;
    for f in futures {
        count += 1;
        let tx = tx.clone();
        f.add_done_callback(move |f| {
            let _ = tx.send(f.clone());
        });
    }
    AsCompleted { rx, left: count }
}

/// The iterator of [`as_completed`].
#[derive(Debug)]
pub struct AsCompleted<R> {
    rx: std::sync::mpsc::Receiver<Future<R>>,
    left: usize,
}

impl<R> Iterator for AsCompleted<R> {
    type Item = Future<R>;

    fn next(&mut self) -> Option<Future<R>> {
        if self.left == 0 {
            return None;
        }
        // Every future's callback runs exactly once (a terminated pool fails
        // them), so each sends.
        let f = self.rx.recv().ok()?;
        self.left -= 1;
        Some(f)
    }
}

/// Outcomes of an `imap`'s tasks as they arrive, for its iterator.
pub(crate) struct Stream {
    /// What arrived, and whether the reader sleeps.
    arrived: Mutex<(VecDeque<(u64, PartOutcome)>, bool)>,
    signal: Condvar,
}

impl Stream {
    pub(crate) fn new() -> Arc<Stream> {
        Arc::new(Stream { arrived: Mutex::new((VecDeque::new(), false)), signal: Condvar::new() })
    }

    fn push(&self, n: u64, outcome: PartOutcome) {
        let mut arrived = self.arrived.lock().unwrap_or_else(PoisonError::into_inner);
        arrived.0.push_back((n, outcome));
        let asleep = arrived.1;
        drop(arrived);
        if asleep {
            self.signal.notify_all();
        }
    }

    /// Waits for the next outcome to arrive.
    pub(crate) fn next(&self) -> (u64, PartOutcome) {
        for _ in 0..SPINS_BEFORE_SLEEP {
            if let Some(x) = self.arrived.lock().unwrap_or_else(PoisonError::into_inner).0.pop_front() {
                return x;
            }
            std::thread::yield_now();
        }
        let mut arrived = self.arrived.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(x) = arrived.0.pop_front() {
                arrived.1 = false;
                return x;
            }
            arrived.1 = true;
            arrived = self.signal.wait(arrived).unwrap_or_else(PoisonError::into_inner);
        }
    }
}
