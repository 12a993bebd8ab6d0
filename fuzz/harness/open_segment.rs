//! The `open_segment` fuzz harness: arbitrary bytes as a named segment.
//!
//! [`run`] writes the input as the whole file `/dev/shm/<unique name>`, opens it
//! as every kind of shmproc object, runs every non-blocking or short-timeout
//! operation on each that opens, and removes the file. Whatever the bytes, that
//! must neither crash, nor panic, nor wait much past its timeouts (SPEC §3):
//! garbage gives an error or in-bounds wrong data.
//!
//! Shared by the cargo-fuzz target (`fuzz/fuzz_targets/open_segment.rs`) and by
//! the corpus replay test (`tests/fuzz_corpus.rs`), both through `#[path]`.

use std::sync::OnceLock;
use std::time::Duration;

use shmproc::segment::{HEADER_LEN, HeaderSnapshot};
use shmproc::{Barrier, BoundedSemaphore, Condition, Event, Lock, LockError, RLock, Segment, Semaphore};

/// Every timed operation waits this long at most.
const TICK: Duration = Duration::from_millis(1);

use crate::shm_file::ShmFile;

/// Runs one input (the fuzz target's entry point).
#[allow(dead_code, reason = "the replay test calls `exercise` to see what opened")]
pub(crate) fn run(data: &[u8]) {
    exercise(data);
}

/// Runs one input; returns the kinds it opened as (for the replay test's
/// report and its checks on the seed corpus).
pub(crate) fn exercise(data: &[u8]) -> Vec<&'static str> {
    let file = ShmFile::write(data);
    let opened = open_as_every_kind(&file.name, data);
    if data.len() < HEADER_LEN {
        assert!(opened.is_empty(), "a {}-byte file opened as {opened:?}", data.len());
    }
    drop(file);
    opened
}

fn open_as_every_kind(name: &str, data: &[u8]) -> Vec<&'static str> {
    let mut opened = Vec::new();
    let header = HeaderSnapshot::from_bytes(data);
    if header.is_some_and(|h| h.init_state == 0) {
        // Every opener waits for the creator (up to 100 ms, or 2 s while the
        // named creator lives) before it looks at anything else, then fails
        // the same way whatever kind it wanted: once is enough.
        assert!(Segment::open(name).is_err(), "a segment still being initialised opened");
        return opened;
    }
    if let Ok(seg) = Segment::open(name) {
        opened.push("Segment");
        segment(&seg, data);
    }
    if let Ok(lock) = Lock::open(name) {
        opened.push("Lock");
        self::lock(&lock);
    }
    if let Ok(r) = RLock::open(name) {
        opened.push("RLock");
        rlock(&r);
    }
    if let Ok(sem) = Semaphore::open(name) {
        opened.push("Semaphore");
        let _ = sem.get_value();
        if sem.try_acquire() {
            let _ = sem.release();
        }
        if sem.acquire_timeout(TICK) {
            let _ = sem.release();
        }
        let _ = sem.release();
        let _ = format!("{sem:?}");
    }
    if let Ok(sem) = BoundedSemaphore::open(name) {
        opened.push("BoundedSemaphore");
        let _ = (sem.get_value(), sem.bound());
        if sem.try_acquire() {
            let _ = sem.release();
        }
        if sem.acquire_timeout(TICK) {
            let _ = sem.release();
        }
        let _ = sem.release();
        let _ = format!("{sem:?}");
    }
    if let Ok(ev) = Event::open(name) {
        opened.push("Event");
        let _ = ev.is_set();
        let _ = ev.wait_timeout(TICK);
        ev.set();
        let _ = ev.wait_timeout(TICK);
        ev.clear();
        let _ = format!("{ev:?}");
    }
    if let Ok(b) = Barrier::open(name) {
        opened.push("Barrier");
        let _ = (b.parties(), b.n_waiting(), b.broken());
        let _ = b.wait_timeout(TICK);
        let _ = (b.n_waiting(), b.broken());
        let _ = format!("{b:?}");
    }
    if let Ok(cond) = Condition::open_with_lock(name, cond_lock().clone()) {
        opened.push("Condition");
        condition(&cond);
    }
    opened
}

/// The payload must be exactly the file's bytes after the header, and reads
/// past it must be refused.
fn segment(seg: &Segment, data: &[u8]) {
    let len = seg.len();
    assert!(HEADER_LEN + len <= data.len(), "payload of {len} bytes in a {}-byte file", data.len());
    let mut buf = vec![0u8; len];
    seg.read_at(0, &mut buf).expect("reading the whole payload");
    assert_eq!(buf, data[HEADER_LEN..HEADER_LEN + len], "payload differs from the file");
    assert!(seg.read_at(len, &mut [0u8; 1]).is_err(), "read past the payload");
    assert!(seg.read_at(usize::MAX, &mut [0u8; 1]).is_err(), "read at usize::MAX");
    let _ = (seg.kind(), seg.name(), seg.is_empty(), format!("{seg:?}"));
}

fn lock(lock: &Lock) {
    let _ = (lock.is_locked(), lock.is_owned_by_current_thread(), format!("{lock:?}"));
    match lock.try_lock() {
        Ok(g) | Err(LockError::OwnerDied(g)) => {
            assert!(lock.is_owned_by_current_thread());
            drop(g);
        }
        Err(LockError::Failed(_)) => {}
    }
    if let Ok(g) | Err(LockError::OwnerDied(g)) = lock.lock_timeout(TICK) {
        drop(g);
    }
}

fn rlock(r: &RLock) {
    let _ = (r.is_locked(), r.depth(), format!("{r:?}"));
    if let Ok(g) | Err(LockError::OwnerDied(g)) = r.try_lock() {
        if let Ok(g2) | Err(LockError::OwnerDied(g2)) = r.try_lock() {
            let _ = r.depth();
            drop(g2);
        }
        drop(g);
    }
    if let Ok(g) | Err(LockError::OwnerDied(g)) = r.lock_timeout(TICK) {
        drop(g);
    }
    if r.acquire(false, None).unwrap_or(false) {
        let _ = r.release();
    }
    let _ = r.release(); // not held by us: refused
}

fn condition(cond: &Condition) {
    let _ = format!("{cond:?}");
    let mut g = match cond.lock_timeout(TICK) {
        Ok(g) | Err(LockError::OwnerDied(g)) => g,
        Err(LockError::Failed(e)) => panic!("our own anonymous lock failed: {e}"),
    };
    let _ = g.notify(1);
    let _ = g.notify_all();
    let _ = g.wait_timeout(TICK);
    let _ = g.wait_for(|| false, Some(TICK));
    drop(g);
}

/// The lock every opened `Condition` is bound to: anonymous, so no input can
/// touch it.
fn cond_lock() -> &'static Lock {
    static LOCK: OnceLock<Lock> = OnceLock::new();
    LOCK.get_or_init(|| Lock::new().expect("an anonymous lock"))
}
