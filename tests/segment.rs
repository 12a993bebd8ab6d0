//! `Segment`: every bad open gives an error naming what was expected and
//! found; names are unlinked by their creator only; `cleanup` removes only
//! dead creators' unused segments; garbage over a live object's payload never
//! panics or hangs.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{XorShift, assert_no_leftovers, fork_child, read_shm, scribble, shm_path, unique_name};
use shmproc::segment::{HEADER_LEN, Kind, MAX_NAME_LEN};
use shmproc::{Barrier, BoundedSemaphore, Condition, Error, Event, Lock, LockError, RLock, Segment, Semaphore};

// ---------------------------------------------------------------------------
// Forged headers
// ---------------------------------------------------------------------------

/// The header fields as documented in `src/segment/header.rs`, encoded here
/// independently (64 bytes, little-endian).
#[derive(Clone, Copy, Debug)]
struct Header {
    magic: [u8; 8],
    version: u32,
    kind: u32,
    type_fp: u64,
    payload_len: u64,
    creator_pid: u32,
    init_state: u32,
    creator_start: u64,
}

impl Header {
    fn good(kind: Kind, payload_len: u64) -> Self {
        Header {
            magic: *b"SHMPROC\0",
            version: 2,
            kind: kind as u32,
            type_fp: 0,
            payload_len,
            creator_pid: std::process::id(),
            init_state: 1,
            creator_start: 0,
        }
    }

    fn bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.magic);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.kind.to_le_bytes());
        b[16..24].copy_from_slice(&self.type_fp.to_le_bytes());
        b[24..32].copy_from_slice(&self.payload_len.to_le_bytes());
        b[32..36].copy_from_slice(&self.creator_pid.to_le_bytes());
        b[36..40].copy_from_slice(&self.init_state.to_le_bytes());
        b[40..48].copy_from_slice(&self.creator_start.to_le_bytes());
        b
    }
}

/// A file written into `/dev/shm` by hand. The file stays open while the
/// value lives (so that a concurrent `cleanup()` in another test counts it as
/// in use) and is removed on drop.
struct Forged {
    name: String,
    file: File,
}

impl Forged {
    fn new(tag: &str, contents: &[u8]) -> Self {
        let name = unique_name(tag);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(shm_path(&name))
            .expect("create forged segment");
        file.write_all(contents).unwrap();
        Forged { name, file }
    }

    /// A header followed by `payload` zero bytes.
    fn with_header(tag: &str, h: Header, payload: usize) -> Self {
        let mut contents = h.bytes().to_vec();
        contents.resize(HEADER_LEN + payload, 0);
        Self::new(tag, &contents)
    }
}

impl Drop for Forged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(shm_path(&self.name));
    }
}

/// The payload length of a real `Lock` segment.
fn lock_payload_len() -> u64 {
    let name = unique_name("seg-locklen");
    let _lock = Lock::create(&name).unwrap();
    let bytes = read_shm(&name);
    let len = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
    assert_eq!(bytes.len() as u64, HEADER_LEN as u64 + len);
    len
}

fn expect_mismatch(r: Result<impl std::fmt::Debug, Error>, field: &str, expected: &str, found: &str) {
    match r {
        Err(Error::Mismatch { field: f, expected: e, found: fd }) => {
            assert_eq!(f, field, "wrong field: expected {e:?}, found {fd:?}");
            assert!(e.contains(expected), "{field}: expected-side {e:?} lacks {expected:?}");
            assert!(fd.contains(found), "{field}: found-side {fd:?} lacks {found:?}");
        }
        other => panic!("expected a {field} mismatch, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

#[test]
fn missing_name_is_not_found() {
    let name = unique_name("seg-missing");
    for e in [Segment::open(&name).unwrap_err(), Lock::open(&name).unwrap_err(), Event::open(&name).unwrap_err()] {
        assert!(matches!(&e, Error::NotFound { name: n } if *n == name), "{e}");
        assert!(e.to_string().contains(&name));
    }
    assert!(matches!(Condition::open(&name), Err(Error::NotFound { .. })));
}

#[test]
fn create_twice_is_already_exists() {
    let name = unique_name("seg-twice");
    let seg = Segment::create(&name, 16).unwrap();
    let e = Segment::create(&name, 16).unwrap_err();
    assert!(matches!(&e, Error::AlreadyExists { name: n } if *n == name), "{e}");
    // Whatever the kind: the name is taken.
    assert!(matches!(Lock::create(&name), Err(Error::AlreadyExists { .. })));
    // The failed creates did not disturb the first one.
    seg.write_at(0, b"still mine").unwrap();
    let other = Segment::open(&name).unwrap();
    let mut buf = [0u8; 10];
    other.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"still mine");
    drop((seg, other));
    assert_no_leftovers("seg-twice");
}

#[test]
fn invalid_names_are_refused_before_any_system_call() {
    let long = "x".repeat(MAX_NAME_LEN + 1);
    for bad in ["a/b", "..", ".", ".hidden", "", long.as_str(), "/abs", "a..b", "sp ace", "nul\0x", "tab\t", "é"] {
        for e in [
            Segment::create(bad, 8).unwrap_err(),
            Segment::open(bad).unwrap_err(),
            Lock::create(bad).unwrap_err(),
            Lock::open(bad).unwrap_err(),
            Event::create(bad).unwrap_err(),
            Semaphore::create(bad, 1).unwrap_err(),
        ] {
            assert!(matches!(&e, Error::InvalidName { name, .. } if name == bad), "{bad:?}: {e}");
        }
    }
    // 200 bytes is allowed.
    let prefix = unique_name("seg-longname");
    let name = format!("{prefix}-{}", "y".repeat(MAX_NAME_LEN - prefix.len() - 1));
    assert_eq!(name.len(), MAX_NAME_LEN);
    let seg = Segment::create(&name, 8).unwrap();
    assert_eq!(seg.name(), Some(name.as_str()));
    drop(seg);
    assert_no_leftovers("seg-longname");
}

// ---------------------------------------------------------------------------
// Bad headers
// ---------------------------------------------------------------------------

#[test]
fn too_short_file_is_a_segment_length_mismatch() {
    let f = Forged::new("seg-short", &[0x55; 10]);
    expect_mismatch(Segment::open(&f.name), "segment length", "64", "10 bytes");
    expect_mismatch(Lock::open(&f.name), "segment length", "64", "10 bytes");
    let empty = Forged::new("seg-short", &[]);
    expect_mismatch(Event::open(&empty.name), "segment length", "64", "0 bytes");
    drop((f, empty));
    assert_no_leftovers("seg-short");
}

#[test]
fn wrong_magic_version_kind_and_lengths() {
    let lock_len = lock_payload_len();
    let good = Header::good(Kind::Lock, lock_len);
    let pad = lock_len as usize;

    {
        // A well-formed forged Lock opens (the forging itself is right).
        let ok = Forged::with_header("seg-hdr", good, pad);
        let lock = Lock::open(&ok.name).unwrap();
        drop(lock.lock().unwrap());

        let f = Forged::with_header("seg-hdr", Header { magic: *b"NOTSHMP\0", ..good }, pad);
        expect_mismatch(Lock::open(&f.name), "magic", "SHMPROC", "not a shmproc segment");
        expect_mismatch(Segment::open(&f.name), "magic", "SHMPROC", "not a shmproc segment");

        let f = Forged::with_header("seg-hdr", Header { version: 1, ..good }, pad);
        expect_mismatch(Lock::open(&f.name), "layout version", "2", "1");

        let f = Forged::with_header("seg-hdr", Header { kind: 999, ..good }, pad);
        expect_mismatch(Lock::open(&f.name), "kind", "Lock", "unknown kind 999");

        let f = Forged::with_header("seg-hdr", Header { payload_len: lock_len + 8, ..good }, pad + 8);
        expect_mismatch(Lock::open(&f.name), "payload length", &lock_len.to_string(), &(lock_len + 8).to_string());

        // A payload longer than the file: refused, for raw segments too.
        let f = Forged::with_header("seg-hdr", Header { payload_len: lock_len, ..good }, pad - 1);
        expect_mismatch(Lock::open(&f.name), "segment length", "", &format!("{} bytes", HEADER_LEN + pad - 1));
        let raw = Header { kind: Kind::Raw as u32, ..good };
        let f = Forged::with_header("seg-hdr", Header { payload_len: 4096, ..raw }, 100);
        expect_mismatch(Segment::open(&f.name), "segment length", "4096", "164 bytes");
        // A length that would overflow when the header is added.
        let f = Forged::with_header("seg-hdr", Header { payload_len: u64::MAX, ..raw }, 100);
        expect_mismatch(Segment::open(&f.name), "segment length", "", "164 bytes");

        // A non-zero element type fingerprint where none is expected.
        let f = Forged::with_header("seg-hdr", Header { type_fp: 0xabc, ..good }, pad);
        expect_mismatch(Lock::open(&f.name), "element type", "0x0", "0xabc");
    } // every forged file is removed here
    assert_no_leftovers("seg-hdr");
}

#[test]
fn wrong_kind_names_both_kinds() {
    let name = unique_name("seg-kind");
    let lock = Lock::create(&name).unwrap();
    expect_mismatch(Event::open(&name), "kind", "Event (kind 5)", "Lock (kind 2)");
    expect_mismatch(RLock::open(&name), "kind", "RLock", "Lock (kind 2)");
    expect_mismatch(Barrier::open(&name), "kind", "Barrier", "Lock");
    expect_mismatch(Segment::open(&name), "kind", "Raw", "Lock");
    let raw_name = unique_name("seg-kind");
    let raw = Segment::create(&raw_name, 64).unwrap();
    expect_mismatch(Lock::open(&raw_name), "kind", "Lock", "Raw (kind 1)");
    drop((lock, raw));
    assert_no_leftovers("seg-kind");
}

#[test]
fn header_still_initialising_without_creator_is_not_ready_after_a_while() {
    let pending = Header { init_state: 0, creator_pid: 0, ..Header::good(Kind::Raw, 16) };
    let f = Forged::with_header("seg-pending", pending, 16);
    let start = Instant::now();
    let e = Segment::open(&f.name).unwrap_err();
    let elapsed = start.elapsed();
    match e {
        Error::NotReady { waited, creator_pid } => {
            assert_eq!(creator_pid, 0);
            assert!(waited >= Duration::from_millis(100), "gave up after {waited:?}");
            assert!(elapsed >= Duration::from_millis(100), "gave up after {elapsed:?}");
        }
        other => panic!("expected NotReady, got {other}"),
    }
    drop(f);
    assert_no_leftovers("seg-pending");
}

#[test]
fn header_still_initialising_by_a_dead_creator_is_not_ready_at_once() {
    // A pid that existed and is gone (reaped), with a start time no live
    // process can have.
    let mut child = fork_child(|| 0);
    assert_eq!(child.wait_timeout(common::WATCHDOG), Some(0));
    let dead = child.pid() as u32;
    let pending = Header { init_state: 0, creator_pid: dead, creator_start: 1, ..Header::good(Kind::Lock, 16) };
    let f = Forged::with_header("seg-deadcreator", pending, 16);
    let start = Instant::now();
    match Lock::open(&f.name) {
        Err(Error::NotReady { creator_pid, waited }) => {
            assert_eq!(creator_pid, dead);
            eprintln!("dead creator noticed after {waited:?} ({:?} measured)", start.elapsed());
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    drop(f);
    assert_no_leftovers("seg-deadcreator");
}

#[test]
fn header_still_initialising_by_a_live_creator_is_waited_for() {
    let lock_len = lock_payload_len();
    // Our own pid: a live creator. It publishes after 50 ms: the open waits.
    let pending = Header { init_state: 0, ..Header::good(Kind::Lock, lock_len) };
    let f = Forged::with_header("seg-livecreator", pending, lock_len as usize);
    let name = f.name.clone();
    let opener = std::thread::spawn(move || {
        let start = Instant::now();
        let r = Lock::open(&name).map(|l| l.is_locked());
        (r, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(50));
    scribble(&f.name, 36, &1u32.to_le_bytes());
    let (r, elapsed) = opener.join().unwrap();
    assert!(!r.unwrap(), "opened once published");
    assert!(elapsed >= Duration::from_millis(40), "returned after {elapsed:?}, before the publish");

    // A live creator that never publishes: NotReady naming it, after a while.
    let g = Forged::with_header("seg-livecreator", pending, lock_len as usize);
    match Lock::open(&g.name) {
        Err(Error::NotReady { creator_pid, waited }) => {
            assert_eq!(creator_pid, std::process::id());
            assert!(waited >= Duration::from_millis(100), "{waited:?}");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    drop((f, g));
    assert_no_leftovers("seg-livecreator");
}

#[test]
fn unknown_init_state_is_corrupt() {
    for state in [2u32, 7, u32::MAX] {
        let h = Header { init_state: state, ..Header::good(Kind::Raw, 16) };
        let f = Forged::with_header("seg-initstate", h, 16);
        match Segment::open(&f.name) {
            Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains(&state.to_string()), "{e}"),
            other => panic!("init state {state}: expected Corrupt, got {other:?}"),
        }
    }
    assert_no_leftovers("seg-initstate");
}

// ---------------------------------------------------------------------------
// Raw segments and name ownership
// ---------------------------------------------------------------------------

#[test]
fn raw_segment_basics() {
    let seg = Segment::anonymous(100).unwrap();
    assert_eq!((seg.len(), seg.is_empty(), seg.name(), seg.kind()), (100, false, None, Kind::Raw));
    assert!(matches!(seg.write_at(96, &[0; 5]), Err(Error::InvalidArgument { .. })));
    assert!(matches!(seg.read_at(usize::MAX, &mut [0; 2]), Err(Error::InvalidArgument { .. })));
    seg.write_at(95, &[7; 5]).unwrap();
    // A forked child shares the anonymous segment.
    common::in_child(|| {
        let mut b = [0u8; 5];
        seg.read_at(95, &mut b).unwrap();
        assert_eq!(b, [7; 5]);
        seg.write_at(0, b"child").unwrap();
    });
    let mut b = [0u8; 5];
    seg.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"child");
    assert!(Segment::anonymous(0).unwrap().is_empty());
}

#[test]
fn dropping_the_creating_handle_unlinks_a_childs_copy_does_not() {
    let name = unique_name("seg-drop");
    let seg = Segment::create(&name, 16).unwrap();
    seg.write_at(0, b"parent").unwrap();
    let slot = Mutex::new(Some(seg));
    // The child drops its inherited copy of the creating handle.
    common::in_child(|| {
        let seg = slot.lock().unwrap().take().unwrap();
        drop(seg);
    });
    assert!(shm_path(&name).exists(), "a forked child's drop must not unlink the parent's name");
    let opened = Segment::open(&name).unwrap();
    // Dropping an opened handle never unlinks either.
    drop(opened);
    assert!(shm_path(&name).exists());
    // The creator's drop does.
    drop(slot);
    assert!(!shm_path(&name).exists());
    assert!(matches!(Segment::open(&name), Err(Error::NotFound { .. })));

    // keep_name: the name outlives the handle; unlink() removes it.
    let seg = Segment::create(&name, 16).unwrap();
    seg.keep_name();
    drop(seg);
    assert!(shm_path(&name).exists());
    let opened = Segment::open(&name).unwrap();
    opened.unlink().unwrap();
    assert!(!shm_path(&name).exists());
    drop(opened);

    // unlink() by the creator: the mapping stays usable, drop is quiet.
    let seg = Segment::create(&name, 16).unwrap();
    seg.unlink().unwrap();
    assert!(!shm_path(&name).exists());
    seg.write_at(0, b"still mapped").unwrap();
    drop(seg);
    // The same for typed objects: a child dropping its clone keeps the name.
    let lock = Lock::create(&name).unwrap();
    common::in_child(|| {
        let l = lock.clone();
        drop(l);
        drop(Lock::open(&name).unwrap());
    });
    assert!(shm_path(&name).exists());
    drop(lock);
    assert!(!shm_path(&name).exists());
    assert_no_leftovers("seg-drop");
}

// ---------------------------------------------------------------------------
// cleanup
// ---------------------------------------------------------------------------

/// Forks a child that creates the named segment `name`, keeps its name, and
/// exits; waits for it.
fn create_in_dead_child(name: &str) {
    common::in_child(|| {
        let seg = Segment::create(name, 32).unwrap();
        seg.write_at(0, b"orphan").unwrap();
        seg.keep_name();
    });
}

// Every cleanup() scenario is in this one test: cleanup() is process-wide, and
// two tests running it at once could remove each other's dead segments. The
// scenario runs in a forked (so single-threaded) child: a child forked by
// another test thread while we hold a segment open would inherit the
// descriptor and keep the segment in use for as long as it lives.
#[test]
fn cleanup_removes_only_dead_creators_unused_segments() {
    let names = common::RemoveOnDrop((0..5).map(|_| unique_name("seg-cleanup")).collect());
    common::in_child(|| cleanup_scenario(&names.0));
    drop(names);
    assert_no_leftovers("seg-cleanup");
}

fn cleanup_scenario(names: &[String]) {
    let [dead, alive, mapped, other, foreign] = names else { unreachable!() };

    // A: creator dead, nobody maps it -> removed.
    create_in_dead_child(dead);
    assert!(shm_path(dead).exists(), "keep_name left the name");
    let orphan = Segment::open(dead).unwrap();
    let mut b = [0u8; 6];
    orphan.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"orphan");
    drop(orphan);

    // B: creator alive (this process) -> kept.
    let alive_seg = Segment::create(alive, 32).unwrap();
    alive_seg.keep_name();

    // C: creator dead, but this process still maps it -> kept, until dropped.
    create_in_dead_child(mapped);
    let mapped_seg = Segment::open(mapped).unwrap();

    // D: creator alive in another process -> kept, even though nobody maps it.
    let created = Event::new().unwrap();
    let release = Event::new().unwrap();
    let other_creator = fork_child(|| {
        let seg = Segment::create(other, 32).unwrap();
        seg.keep_name();
        drop(seg);
        created.set();
        release.wait().unwrap();
        0
    });
    assert!(created.wait_timeout(common::WATCHDOG).unwrap());

    // E: not a shmproc segment at all -> never touched.
    std::fs::write(shm_path(foreign), b"just some bytes, no magic here, long enough to hold a header......").unwrap();

    let report = shmproc::cleanup().unwrap();
    assert!(report.removed.contains(dead), "dead and unused: must be removed: {report:?}");
    assert!(!shm_path(dead).exists());
    for kept in [alive, mapped, other] {
        assert!(report.kept.contains(kept), "{kept} must be kept: {report:?}");
        assert!(!report.removed.contains(kept));
        assert!(shm_path(kept).exists());
    }
    assert!(!report.removed.contains(foreign) && !report.kept.contains(foreign), "{report:?}");
    assert!(shm_path(foreign).exists());
    // The survivor still works.
    mapped_seg.write_at(0, b"alive").unwrap();

    // Once nobody maps C, and D's creator is gone, they go too.
    drop(mapped_seg);
    release.set();
    common::expect_success(&mut [other_creator]);
    let report = shmproc::cleanup().unwrap();
    assert!(report.removed.contains(mapped), "{report:?}");
    assert!(report.removed.contains(other), "{report:?}");
    assert!(report.kept.contains(alive), "{report:?}");
    assert!(!shm_path(mapped).exists() && !shm_path(other).exists());

    alive_seg.unlink().unwrap();
    std::fs::remove_file(shm_path(foreign)).unwrap();
}

// ---------------------------------------------------------------------------
// Garbage over live objects
// ---------------------------------------------------------------------------

const SHORT: Duration = Duration::from_millis(20);

/// A lock attempt's outcome is acceptable under garbage: acquired, acquired
/// after a (presumed) dead owner, or refused with an error that says why.
fn check_lock<G>(what: &str, r: Result<G, LockError<G>>) {
    match r {
        Ok(g) | Err(LockError::OwnerDied(g)) => drop(g),
        Err(LockError::Failed(Error::WouldBlock | Error::Timeout | Error::Corrupt { .. } | Error::Overflow { .. })) => {
        }
        Err(LockError::Failed(e)) => panic!("{what}: unexpected error {e}"),
    }
}

fn check_err(what: &str, e: &Error) {
    assert!(
        matches!(
            e,
            Error::Corrupt { .. }
                | Error::NotOwner
                | Error::OwnerDied
                | Error::Overflow { .. }
                | Error::OverRelease { .. }
                | Error::BrokenBarrier
        ),
        "{what}: unexpected error {e}"
    );
}

/// Overwrites the whole payload of the named segment `name` with random bytes.
fn scribble_payload(name: &str, rng: &mut XorShift) {
    let len = read_shm(name).len() - HEADER_LEN;
    scribble(name, HEADER_LEN as u64, &rng.bytes(len));
}

#[test]
fn garbage_over_live_objects_never_panics_or_hangs() {
    for seed in 1..=8u64 {
        let mut rng = XorShift::new(seed);
        let names: Vec<String> = (0..7).map(|_| unique_name("seg-garbage")).collect();
        let lock = Lock::create(&names[0]).unwrap();
        let rlock = RLock::create(&names[1]).unwrap();
        let sem = Semaphore::create(&names[2], 2).unwrap();
        let bsem = BoundedSemaphore::create(&names[3], 2).unwrap();
        let barrier = Barrier::create(&names[4], 2).unwrap();
        let cond = Condition::create(&names[5]).unwrap();
        let event = Event::create(&names[6]).unwrap();
        for name in &names {
            scribble_payload(name, &mut rng);
        }
        scribble_payload(&format!("{}.lock", names[5]), &mut rng);

        // Each seed's operations run in a child under the watchdog.
        common::in_child(|| {
            check_lock("Lock::try_lock", lock.try_lock());
            check_lock("Lock::lock_timeout", lock.lock_timeout(SHORT));
            let _ = (lock.is_locked(), lock.is_owned_by_current_thread(), format!("{lock:?}"));
            if let Ok(l) = Lock::open(&names[0]) {
                check_lock("opened Lock::lock_timeout", l.lock_timeout(SHORT));
            }

            check_lock("RLock::try_lock", rlock.try_lock());
            check_lock("RLock::lock_timeout", rlock.lock_timeout(SHORT));
            match rlock.acquire(true, Some(SHORT)) {
                Ok(true) => {
                    let _ = rlock.depth();
                    if let Err(e) = rlock.release() {
                        check_err("RLock::release", &e);
                    }
                }
                Ok(false) => {}
                Err(e) => check_err("RLock::acquire", &e),
            }
            if let Err(e) = rlock.release() {
                check_err("RLock::release (not held)", &e);
            }

            let _ = (sem.try_acquire(), sem.acquire_timeout(SHORT), sem.get_value(), format!("{sem:?}"));
            if let Err(e) = sem.release() {
                check_err("Semaphore::release", &e);
            }
            let _ = (bsem.try_acquire(), bsem.acquire_timeout(SHORT), bsem.bound());
            if let Err(e) = bsem.release() {
                check_err("BoundedSemaphore::release", &e);
            }

            let _ = (barrier.parties(), barrier.n_waiting(), barrier.broken(), format!("{barrier:?}"));
            if let Err(e) = barrier.wait_timeout(SHORT) {
                check_err("Barrier::wait_timeout", &e);
            }
            if let Err(e) = barrier.abort() {
                check_err("Barrier::abort", &e);
            }
            if let Err(e) = barrier.reset() {
                check_err("Barrier::reset", &e);
            }
            if let Err(e) = Barrier::open(&names[4]) {
                check_err("Barrier::open", &e);
            }

            match cond.lock_timeout(SHORT) {
                Ok(mut g) | Err(LockError::OwnerDied(mut g)) => {
                    if let Err(e) = g.notify(1) {
                        check_err("Condition::notify", &e);
                    }
                    match g.wait_timeout(SHORT) {
                        Ok(_) => {}
                        Err(e) => check_err("Condition::wait_timeout", &e),
                    }
                    if let Err(e) = g.notify_all() {
                        check_err("Condition::notify_all", &e);
                    }
                }
                Err(LockError::Failed(e)) => {
                    assert!(matches!(e, Error::Timeout | Error::Corrupt { .. } | Error::Overflow { .. }), "{e}");
                }
            }

            for r in [event.is_set().map(|_| ()), event.wait_timeout(SHORT).map(|_| ())] {
                if let Err(e) = r {
                    check_err("Event", &e);
                }
            }
        });
        drop((lock, rlock, sem, bsem, barrier, cond, event));
    }
    assert_no_leftovers("seg-garbage");
}

/// A lock word that names a live task (here: the parent, seen from a child)
/// is garbage that looks like a holder. Timed operations must still return
/// within their timeout (SPEC §3: garbage never makes us wait past it).
#[test]
fn garbage_lock_word_naming_a_live_task_respects_timeouts() {
    let parent = std::process::id();
    let word = parent.to_le_bytes();
    let lname = unique_name("seg-liveword");
    let rname = unique_name("seg-liveword");
    let bname = unique_name("seg-liveword");
    let lock = Lock::create(&lname).unwrap();
    let rlock = RLock::create(&rname).unwrap();
    let barrier = Barrier::create(&bname, 2).unwrap();
    // Each object's OwnerLock word is the first u32 of its payload.
    for name in [&lname, &rname, &bname] {
        scribble(name, HEADER_LEN as u64, &word);
    }
    let child = fork_child(|| {
        let timeout = Duration::from_millis(100);
        let start = Instant::now();
        assert!(matches!(lock.lock_timeout(timeout), Err(LockError::Failed(Error::Timeout))));
        assert!(start.elapsed() >= timeout);
        assert!(matches!(rlock.lock_timeout(timeout), Err(LockError::Failed(Error::Timeout))));
        // Barrier::wait_timeout takes the barrier's internal lock first.
        let r = barrier.wait_timeout(timeout);
        assert!(matches!(r, Err(Error::BrokenBarrier | Error::Timeout | Error::Corrupt { .. })), "{r:?}");
        0
    });
    let mut children = [child];
    let codes = common::join_all(&mut children, Duration::from_secs(10));
    assert_eq!(codes, [0], "{}", children[0].describe());
    drop((lock, rlock, barrier));
    assert_no_leftovers("seg-liveword");
}

// ---------------------------------------------------------------------------
// Hostile files under a name (a same-user peer, or another user)
// ---------------------------------------------------------------------------

/// Whether `e` is the I/O error of an open, with `needle` in its message.
fn open_refused(e: &Error, needle: &str) -> bool {
    matches!(e, Error::Io { op: "shm_open", source } if source.to_string().contains(needle))
}

#[test]
fn a_symbolic_link_planted_under_a_name_is_never_followed() {
    let target = Lock::create(&unique_name("seg-link-target")).unwrap();
    let link = unique_name("seg-link");
    let remove = common::RemoveOnDrop(vec![link.clone()]);
    std::os::unix::fs::symlink(shm_path(target.name().unwrap()), shm_path(&link)).unwrap();
    for e in [Lock::open(&link).unwrap_err(), Segment::open(&link).unwrap_err()] {
        assert!(open_refused(&e, "symbolic links"), "{e}");
    }
    // cleanup() leaves the link alone (it is not a segment of ours).
    let report = shmproc::cleanup().unwrap();
    assert!(!report.removed.contains(&link), "{report:?}");
    assert!(shm_path(&link).symlink_metadata().is_ok());
    drop((target, remove));
    assert_no_leftovers("seg-link");
}

#[test]
fn a_segment_file_of_another_user_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: only root can give a file to another user here");
        return;
    }
    let lock = Lock::create(&unique_name("seg-foreign")).unwrap();
    let name = lock.name().unwrap().to_owned();
    Lock::open(&name).unwrap();
    // The same bytes, but the file is now another user's (nobody's).
    std::os::unix::fs::chown(shm_path(&name), Some(65534), Some(65534)).unwrap();
    for e in [Lock::open(&name).unwrap_err(), Segment::open(&name).unwrap_err()] {
        assert!(open_refused(&e, "belongs to user 65534"), "{e}");
    }
    drop(lock);
    assert_no_leftovers("seg-foreign");
}

#[test]
fn a_peer_holding_an_exclusive_flock_makes_open_fail_not_hang() {
    // A file no shmproc handle holds (each holds a shared flock, so none
    // could be taken exclusively): a peer made it and keeps it locked.
    let f = Forged::new("seg-flock", &Header::good(Kind::Raw, 8).bytes());
    let name = f.name.clone();
    // SAFETY: flock on a descriptor the forged file owns.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f.file), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let opener = std::thread::spawn(move || {
        let started = Instant::now();
        (Segment::open(&name).map(drop), started.elapsed())
    });
    let (outcome, took) = common::join_thread(opener);
    let e = outcome.unwrap_err();
    assert!(open_refused(&e, "exclusive lock"), "{e}");
    assert!(took >= Duration::from_secs(2), "gave up after {took:?}, before its 2 s");
    // Once the peer lets go, the open gets past the lock (to the header,
    // which says 8 payload bytes where the file has none).
    // SAFETY: as above.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f.file), libc::LOCK_UN) }, 0);
    expect_mismatch(Segment::open(&f.name), "segment length", "64 + 8", "64 bytes");
    drop(f);
    assert_no_leftovers("seg-flock");
}

#[test]
fn a_huge_file_behind_a_small_segment_is_never_mapped_whole() {
    let lock = Lock::create(&unique_name("seg-huge")).unwrap();
    let name = lock.name().unwrap().to_owned();
    // A peer grows the file to 1 GiB (sparse): only the header and the
    // payload it names are ours to map, and nothing is faulted in beyond.
    std::fs::OpenOptions::new().write(true).open(shm_path(&name)).unwrap().set_len(1 << 30).unwrap();
    let opened = Lock::open(&name).unwrap();
    drop(opened.lock().unwrap());
    let path = shm_path(&name).to_string_lossy().into_owned();
    let sizes: Vec<usize> = common::mappings(|p| p == path).into_iter().map(|(_, len)| len).collect();
    assert!(!sizes.is_empty(), "the segment is mapped");
    assert!(sizes.iter().all(|&s| s <= 1 << 20), "mappings of {sizes:?} bytes for a lock");
    drop((opened, lock));
    assert_no_leftovers("seg-huge");
}

#[test]
fn a_fifo_planted_under_a_name_is_refused_without_blocking() {
    let name = unique_name("seg-fifo");
    let remove = common::RemoveOnDrop(vec![name.clone()]);
    let path = std::ffi::CString::new(shm_path(&name).to_string_lossy().into_owned()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    // Opening a FIFO for reading blocks until a writer comes, unless the
    // open says not to: each of these would hang the test.
    let opener = std::thread::spawn(move || {
        let e = Segment::open(&name).unwrap_err();
        shmproc::cleanup().unwrap();
        (e, name)
    });
    let (e, name) = common::join_thread(opener);
    assert!(open_refused(&e, "not a regular file"), "{e}");
    assert!(shm_path(&name).exists(), "cleanup leaves what is not ours");
    drop(remove);
    assert_no_leftovers("seg-fifo");
}
