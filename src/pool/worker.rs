//! A pool worker: the process side, and the messages on its pipe.
//!
//! Each worker has a duplex [`Connection`] with the pool. Messages are a tag
//! byte, fixed little-endian fields, then raw bytes (already-encoded
//! arguments or results travel without a second encoding):
//!
//! | tag | direction | fields |
//! |---|---|---|
//! | `DEFINE` | pool → worker | `fid` u32, the function's [`Entry`] (postcard) |
//! | `RUN` | pool → worker | task `id` u64, `fid` u32, the encoded arguments |
//! | `STOP` | pool → worker | — |
//! | `READY` | worker → pool | — (the initializer returned) |
//! | `INIT_FAILED` | worker → pool | why, UTF-8 |
//! | `DONE` | worker → pool | task `id` u64, state u8 (`RETURNED`, `PANICKED`, `FAILED`), then the encoded result or the message |
//! | `BATCH` | pool → worker | `count` u32, then `count` × (`len` u32, a message other than `BATCH`) |
//!
//! Every length is checked by [`parse`]: a malformed message from either side
//! is [`Error::Corrupt`], never an out-of-range read. Before it runs a task
//! the worker stores the task's id in its `started` word (shared memory), so
//! that after its death the pool can tell the task it was running (an error)
//! from the ones it had not taken yet (sent to another worker).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::array::Value;
use crate::channel::Connection;
use crate::codec;
use crate::error::{Error, Result};
use crate::process::target::{Entry, Outcome, TypedEntry, run_caught};

const DEFINE: u8 = 1;
const RUN: u8 = 2;
const STOP: u8 = 3;
const READY: u8 = 10;
const INIT_FAILED: u8 = 11;
const DONE: u8 = 12;
const BATCH: u8 = 13;

/// How far beyond the functions a worker knows a new one's id may lie.
const MAX_FID_GAP: usize = 1 << 16;

/// A task's outcome as a `DONE` message carries it.
pub(crate) const RETURNED: u8 = 0;
/// The task panicked; the payload is the message.
pub(crate) const PANICKED: u8 = 1;
/// The task could not run (its arguments did not decode, say); the payload
/// says why.
pub(crate) const FAILED: u8 = 2;

/// A message, parsed (borrowing the received bytes).
#[derive(Debug)]
pub(crate) enum Message<'a> {
    Define {
        fid: u32,
        entry: Entry,
    },
    Run {
        id: u64,
        fid: u32,
        args: &'a [u8],
    },
    Stop,
    Ready,
    InitFailed(String),
    Done {
        id: u64,
        state: u8,
        payload: &'a [u8],
    },
    /// Several messages, each checked to lie within the batch (parse each).
    Batch(Vec<&'a [u8]>),
}

fn corrupt(what: String) -> Error {
    Error::corrupt("pool message", what)
}

/// Takes `N` bytes from the front of `rest`.
fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N]> {
    let (head, tail) =
        rest.split_first_chunk::<N>().ok_or_else(|| corrupt(format!("{} bytes where {N} were needed", rest.len())))?;
    *rest = tail;
    Ok(*head)
}

/// Parses one message; anything malformed is `Corrupt`.
pub(crate) fn parse(msg: &[u8]) -> Result<Message<'_>> {
    let Some((&tag, mut rest)) = msg.split_first() else { return Err(corrupt("an empty message".to_owned())) };
    let whole = |rest: &[u8], m: Message<'static>| {
        if rest.is_empty() { Ok(m) } else { Err(corrupt(format!("{} bytes after a message of tag {tag}", rest.len()))) }
    };
    match tag {
        DEFINE => {
            let fid = u32::from_le_bytes(take(&mut rest)?);
            let entry = codec::decode(rest).map_err(|e| corrupt(format!("a function entry: {e}")))?;
            Ok(Message::Define { fid, entry })
        }
        RUN => {
            let id = u64::from_le_bytes(take(&mut rest)?);
            let fid = u32::from_le_bytes(take(&mut rest)?);
            Ok(Message::Run { id, fid, args: rest })
        }
        STOP => whole(rest, Message::Stop),
        READY => whole(rest, Message::Ready),
        INIT_FAILED => Ok(Message::InitFailed(String::from_utf8_lossy(rest).into_owned())),
        DONE => {
            let id = u64::from_le_bytes(take(&mut rest)?);
            let [state] = take::<1>(&mut rest)?;
            if state > FAILED {
                return Err(corrupt(format!("task state {state}")));
            }
            Ok(Message::Done { id, state, payload: rest })
        }
        BATCH => {
            let count = u32::from_le_bytes(take(&mut rest)?);
            // Each item takes at least its length word and a tag.
            if u64::from(count) * 5 > rest.len() as u64 {
                return Err(corrupt(format!("a batch of {count} in {} bytes", rest.len())));
            }
            let mut items = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let len = u32::from_le_bytes(take(&mut rest)?) as usize;
                let Some((item, after)) = rest.split_at_checked(len) else {
                    return Err(corrupt(format!("a batch item of {len} bytes with {} left", rest.len())));
                };
                if item.first() == Some(&BATCH) {
                    return Err(corrupt("a batch inside a batch".to_owned()));
                }
                items.push(item);
                rest = after;
            }
            whole(rest, Message::Batch(Vec::new())).map(|_| Message::Batch(items))
        }
        other => Err(corrupt(format!("unknown tag {other}"))),
    }
}

/// For the fuzz target `peer_messages`: parses `msg` as the pool and its
/// workers parse each other's messages (a batch's items too); what it was.
pub(crate) fn fuzz_parse(msg: &[u8]) -> &'static str {
    match parse(msg) {
        Err(_) => "pool: corrupt",
        Ok(Message::Batch(items)) => {
            if items.iter().all(|item| parse(item).is_ok()) {
                "pool: batch"
            } else {
                "pool: batch, item corrupt"
            }
        }
        Ok(Message::Define { .. }) => "pool: define",
        Ok(Message::Run { .. }) => "pool: run",
        Ok(Message::Stop) => "pool: stop",
        Ok(Message::Ready) => "pool: ready",
        Ok(Message::InitFailed(_)) => "pool: init failed",
        Ok(Message::Done { .. }) => "pool: done",
    }
}

/// For the fuzz target's seeds: a valid message of each plain kind, and a
/// batch of two.
pub(crate) fn fuzz_examples() -> Vec<Vec<u8>> {
    let (mut r, mut d, mut batch) = (Vec::new(), Vec::new(), Vec::new());
    run(&mut r, 7, 1, b"args");
    done(&mut d, 7, RETURNED, b"payload");
    batch_start(&mut batch);
    for item in [&r, &d] {
        batch_push(&mut batch, |buf| {
            buf.extend_from_slice(item);
            Ok(())
        })
        .expect("a small item fits");
    }
    vec![r, d, STOP_MESSAGE.to_vec(), vec![READY], [&[INIT_FAILED][..], b"why"].concat(), batch]
}

/// Starts a `BATCH` message in `buf`.
pub(crate) fn batch_start(buf: &mut Vec<u8>) {
    buf.clear();
    buf.push(BATCH);
    buf.extend_from_slice(&0u32.to_le_bytes());
}

/// Appends to the batch in `buf` the message `write` appends (nothing, if
/// it fails).
pub(crate) fn batch_push(buf: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
    let at = buf.len();
    buf.extend_from_slice(&0u32.to_le_bytes());
    if let Err(e) = write(buf) {
        buf.truncate(at);
        return Err(e);
    }
    let Ok(len) = u32::try_from(buf.len() - at - 4) else {
        let size = buf.len() - at - 4;
        buf.truncate(at);
        return Err(Error::TooLarge { size, limit: u32::MAX as usize });
    };
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    let count = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) + 1;
    buf[1..5].copy_from_slice(&count.to_le_bytes());
    Ok(())
}

/// Appends a `DEFINE` message to `buf`.
pub(crate) fn define(buf: &mut Vec<u8>, fid: u32, entry: &Entry) -> Result<()> {
    buf.push(DEFINE);
    buf.extend_from_slice(&fid.to_le_bytes());
    codec::encode_to(entry, |b| {
        buf.extend_from_slice(b);
        true
    })
    .map(drop)
}

/// Appends a `RUN` message to `buf`.
pub(crate) fn run(buf: &mut Vec<u8>, id: u64, fid: u32, args: &[u8]) {
    buf.push(RUN);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&fid.to_le_bytes());
    buf.extend_from_slice(args);
}

/// A `STOP` message.
pub(crate) const STOP_MESSAGE: [u8; 1] = [STOP];

/// Writes a `DONE` message into `buf`.
fn done(buf: &mut Vec<u8>, id: u64, state: u8, payload: &[u8]) {
    buf.clear();
    buf.push(DONE);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.push(state);
    buf.extend_from_slice(payload);
}

/// What a worker process is started with.
#[derive(Serialize, Deserialize)]
#[serde(bound = "IA: Serialize + DeserializeOwned")]
pub(crate) struct WorkerArgs<IA> {
    /// The worker's end of its pipe with the pool.
    pub(crate) conn: Connection,
    /// The id of the task it runs or last ran (0: none yet).
    pub(crate) started: Value<u64>,
    /// The initializer and its argument.
    pub(crate) init: Option<(TypedEntry<IA, ()>, IA)>,
    /// Tasks after which the worker exits (Python's `maxtasksperchild`).
    pub(crate) max_tasks: Option<u64>,
}

/// Set in a pool worker: its panics are quiet.
static IN_WORKER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs, once per process, a panic hook that says nothing in a pool
/// worker and defers to the previous hook everywhere else. A task's panic
/// is its result, not output (Python's pool prints nothing either), and a
/// worker forked from a threaded process must not print: the hook would
/// take stderr's lock, which another thread of the parent may have held at
/// the fork, and wait for ever. The pool calls this before it starts
/// workers, so forked ones inherit it; a spawned worker, a fresh process,
/// installs it itself. It runs with no fork of the crate's under way
/// ([`crate::process::without_forks`]): a child forked while another thread
/// held std's hook lock to write the hook, or stood inside the `Once`,
/// would inherit them held and hang at its first panic, or its first pool.
pub(crate) fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if ONCE.is_completed() {
        return;
    }
    crate::process::without_forks(|| {
        ONCE.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !IN_WORKER.load(std::sync::atomic::Ordering::Relaxed) {
                    previous(info);
                }
            }));
        });
    });
}

/// The worker process: runs the initializer, says it is ready, then runs
/// tasks until told to stop, until `max_tasks`, or until the pool is gone.
pub(crate) fn worker_main<IA: Serialize + DeserializeOwned>(args: WorkerArgs<IA>) {
    let WorkerArgs { conn, started, init, max_tasks } = args;
    IN_WORKER.store(true, std::sync::atomic::Ordering::Relaxed);
    install_quiet_hook();
    if let Some((entry, arg)) = init {
        let outcome = match entry.get() {
            Ok(f) => run_caught(move || f(arg)),
            Err(e) => Outcome::Failed(e.to_string()),
        };
        let why = match outcome {
            Outcome::Returned(_) => None,
            Outcome::Panicked(msg) => Some(format!("the initializer panicked: {msg}")),
            Outcome::Failed(msg) => Some(format!("the initializer could not run: {msg}")),
        };
        if let Some(why) = why {
            let _ = conn.send_bytes(&[&[INIT_FAILED][..], why.as_bytes()].concat());
            return;
        }
    }
    if conn.send_bytes(&[READY]).is_err() {
        return;
    }
    let mut funcs: Vec<Option<Entry>> = Vec::new();
    let mut ran = 0u64;
    let mut inbox = vec![0; 4096];
    let mut outbox = Vec::new();
    loop {
        // The pool is trusted: any size it sends.
        let Ok(len) = conn.recv_bytes_growing(&mut inbox, None, usize::MAX) else { return };
        // A batch that does not parse is handled as one message: `handle`
        // refuses it, and the worker leaves.
        let items = match parse(&inbox[..len]) {
            Ok(Message::Batch(items)) => items,
            _ => vec![&inbox[..len]],
        };
        for item in items {
            if !handle(item, &conn, &started, &mut funcs, &mut outbox) {
                return;
            }
            if item.first() == Some(&RUN) {
                ran += 1;
                if max_tasks.is_some_and(|max| ran >= max) {
                    return;
                }
            }
        }
    }
}

/// Handles one message from the pool: whether to go on.
fn handle(
    msg: &[u8],
    conn: &Connection,
    started: &Value<u64>,
    funcs: &mut Vec<Option<Entry>>,
    outbox: &mut Vec<u8>,
) -> bool {
    match parse(msg) {
        Ok(Message::Define { fid, entry }) => {
            let i = fid as usize;
            // Function ids are handed out in order: one far beyond those
            // known is garbage, not a reason to allocate gigabytes.
            if i > funcs.len() + MAX_FID_GAP {
                return false;
            }
            if funcs.len() <= i {
                funcs.resize(i + 1, None);
            }
            funcs[i] = Some(entry);
            true
        }
        Ok(Message::Run { id, fid, args }) => {
            started.set(id);
            let outcome = match funcs.get(fid as usize).and_then(Option::as_ref) {
                Some(entry) => entry.call(args).unwrap_or_else(|e| Outcome::Failed(e.to_string())),
                None => Outcome::Failed(format!("no function {fid} was defined to this worker")),
            };
            // Each answer goes before the next task starts: after a death,
            // the started word names the one task without an answer.
            match outcome {
                Outcome::Returned(bytes) => done(outbox, id, RETURNED, &bytes),
                Outcome::Panicked(msg) => done(outbox, id, PANICKED, msg.as_bytes()),
                Outcome::Failed(msg) => done(outbox, id, FAILED, msg.as_bytes()),
            }
            conn.send_bytes(outbox).is_ok()
        }
        // Told to stop; or a message no pool sends: leaving says so (the
        // pool sees the worker go, and replaces it if it has work).
        Ok(_) | Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: u8) -> u8 {
        x
    }

    #[test]
    fn messages_round_trip_and_malformed_ones_are_corrupt() {
        let mut buf = Vec::new();
        run(&mut buf, 7, 3, b"args");
        assert!(matches!(parse(&buf).unwrap(), Message::Run { id: 7, fid: 3, args: b"args" }));
        done(&mut buf, 9, PANICKED, b"boom");
        assert!(matches!(parse(&buf).unwrap(), Message::Done { id: 9, state: PANICKED, payload: b"boom" }));
        buf.clear();
        define(&mut buf, 2, &Entry::new(f)).unwrap();
        assert!(matches!(parse(&buf).unwrap(), Message::Define { fid: 2, .. }));
        batch_start(&mut buf);
        batch_push(&mut buf, |b| define(b, 0, &Entry::new(f))).unwrap();
        batch_push(&mut buf, |b| {
            run(b, 5, 0, b"xy");
            Ok(())
        })
        .unwrap();
        match parse(&buf).unwrap() {
            Message::Batch(items) => {
                assert_eq!(items.len(), 2);
                assert!(matches!(parse(items[1]).unwrap(), Message::Run { id: 5, fid: 0, args: b"xy" }));
            }
            other => panic!("{other:?}"),
        }
        let mut nested = Vec::new();
        batch_start(&mut nested);
        let inner = buf.clone();
        batch_push(&mut nested, |b| {
            b.extend_from_slice(&inner);
            Ok(())
        })
        .unwrap();
        assert!(matches!(parse(&nested), Err(Error::Corrupt { .. })), "a batch in a batch");
        let mut short = buf.clone();
        short.truncate(short.len() - 1);
        assert!(matches!(parse(&short), Err(Error::Corrupt { .. })), "a cut batch");
        for bad in
            [&[][..], &[RUN, 1, 2], &[DONE, 0, 0, 0, 0, 0, 0, 0, 0, 9], &[STOP, 0], &[99], &[DEFINE, 0, 0, 0, 0, 0xff]]
        {
            assert!(matches!(parse(bad), Err(Error::Corrupt { .. })), "{bad:?}");
        }
    }
}
