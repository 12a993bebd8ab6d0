//! `imap` and `imap_unordered`: lazy iteration over a pool's results.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Pool;
use super::result::{PartOutcome, Stream, Target};
use crate::codec;
use crate::error::{Error, Result};
use crate::process::target::Entry;

/// Reads the input a bounded number of chunks ahead of the results taken.
struct Feed<'p, A> {
    pool: &'p Pool,
    entry: Entry,
    input: Box<dyn Iterator<Item = A> + 'p>,
    chunksize: usize,
    stream: Arc<Stream>,
    /// Chunks sent, and outcomes taken from the stream.
    sent: u64,
    taken: u64,
    /// Items per chunk not yet taken (a failed chunk fails each of them).
    sizes: HashMap<u64, usize>,
    /// The input ended, or a chunk could not be queued.
    exhausted: bool,
    /// Why a chunk could not be queued, reported once after the rest.
    error: Option<Error>,
}

impl<'p, A: Serialize> Feed<'p, A> {
    fn new(pool: &'p Pool, entry: Entry, input: Box<dyn Iterator<Item = A> + 'p>, chunksize: usize) -> Self {
        Feed {
            pool,
            entry,
            input,
            chunksize: chunksize.max(1),
            stream: Stream::new(),
            sent: 0,
            taken: 0,
            sizes: HashMap::new(),
            exhausted: false,
            error: None,
        }
    }

    /// Queues chunks until enough are outstanding (twice what the workers
    /// may hold now) or the input ends.
    fn top_up(&mut self) {
        let ahead = (self.pool.capacity() * 2) as u64;
        while !self.exhausted && self.sent - self.taken < ahead {
            let chunk: Vec<A> = self.input.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                self.exhausted = true;
                break;
            }
            let queued = codec::encode(&chunk).and_then(|bytes| {
                self.pool.inner.submit(&self.entry, vec![(bytes, Target::stream(self.stream.clone(), self.sent))])
            });
            if let Err(e) = queued {
                self.error = Some(e);
                self.exhausted = true;
                break;
            }
            self.sizes.insert(self.sent, chunk.len());
            self.sent += 1;
        }
    }

    /// The next outcome to arrive: its chunk number and items.
    fn receive(&mut self) -> (u64, PartOutcome) {
        let (n, outcome) = self.stream.next();
        self.taken += 1;
        (n, outcome)
    }

    /// Chunk `n`'s items from its outcome.
    fn items<R: DeserializeOwned>(&mut self, n: u64, outcome: PartOutcome) -> VecDeque<Result<R>> {
        let size = self.sizes.remove(&n).unwrap_or(1);
        match outcome.map(|bytes| codec::decode::<Vec<R>>(&bytes)) {
            Ok(Ok(items)) => items.into_iter().map(Ok).collect(),
            Ok(Err(e)) => {
                let detail = e.to_string();
                (0..size).map(|_| Err(Error::Codec { detail: detail.clone() })).collect()
            }
            Err(failure) => (0..size).map(|_| Err(failure.error())).collect(),
        }
    }
}

/// The iterator of [`Pool::imap`]: results in input order.
pub struct IMap<'p, A, R> {
    feed: Feed<'p, A>,
    arrived: BTreeMap<u64, PartOutcome>,
    next: u64,
    current: VecDeque<Result<R>>,
}

impl<A, R> std::fmt::Debug for IMap<'_, A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap").field("chunks_sent", &self.feed.sent).field("next", &self.next).finish()
    }
}

impl<'p, A: Serialize, R: DeserializeOwned> IMap<'p, A, R> {
    pub(crate) fn new(pool: &'p Pool, entry: Entry, input: Box<dyn Iterator<Item = A> + 'p>, chunksize: usize) -> Self {
        IMap {
            feed: Feed::new(pool, entry, input, chunksize),
            arrived: BTreeMap::new(),
            next: 0,
            current: VecDeque::new(),
        }
    }
}

impl<A: Serialize, R: DeserializeOwned> Iterator for IMap<'_, A, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(item) = self.current.pop_front() {
                return Some(item);
            }
            self.feed.top_up();
            if self.next == self.feed.sent {
                return self.feed.error.take().map(Err);
            }
            let outcome = loop {
                if let Some(o) = self.arrived.remove(&self.next) {
                    break o;
                }
                let (n, o) = self.feed.receive();
                self.arrived.insert(n, o);
            };
            self.current = self.feed.items(self.next, outcome);
            self.next += 1;
        }
    }
}

/// The iterator of [`Pool::imap_unordered`]: results as they finish.
pub struct IMapUnordered<'p, A, R> {
    feed: Feed<'p, A>,
    current: VecDeque<Result<R>>,
}

impl<A, R> std::fmt::Debug for IMapUnordered<'_, A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMapUnordered").field("chunks_sent", &self.feed.sent).finish()
    }
}

impl<'p, A: Serialize, R: DeserializeOwned> IMapUnordered<'p, A, R> {
    pub(crate) fn new(pool: &'p Pool, entry: Entry, input: Box<dyn Iterator<Item = A> + 'p>, chunksize: usize) -> Self {
        IMapUnordered { feed: Feed::new(pool, entry, input, chunksize), current: VecDeque::new() }
    }
}

impl<A: Serialize, R: DeserializeOwned> Iterator for IMapUnordered<'_, A, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(item) = self.current.pop_front() {
                return Some(item);
            }
            self.feed.top_up();
            if self.feed.taken == self.feed.sent {
                return self.feed.error.take().map(Err);
            }
            let (n, outcome) = self.feed.receive();
            self.current = self.feed.items(n, outcome);
        }
    }
}
