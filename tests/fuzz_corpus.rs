//! Replays the fuzz corpus as an ordinary test, so that stable CI exercises
//! every input cargo-fuzz keeps (SPEC §7).
//!
//! Every file in `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes
//! through the harness that fuzz target runs (`fuzz/harness/<target>.rs`), each
//! under a watchdog: a hang fails the test instead of stalling CI.
//!
//! The seeds are made afresh through the public API by [`seeds`] (a valid
//! object of every kind, and damaged variants of them), so they follow the
//! real layout: [`fresh_seeds_open_as_expected`] runs them and checks what each
//! opens as, and with `SHMPROC_SEED_DIR=dir` also writes them there as
//! `<target>/seed-*` files (CI does so before fuzzing; after a layout change
//! refresh the committed ones with `SHMPROC_SEED_DIR=fuzz/corpus cargo test
//! --test fuzz_corpus fresh_seeds_open_as_expected`).

#[path = "../fuzz/harness/open_array.rs"]
mod open_array;
#[path = "../fuzz/harness/open_segment.rs"]
mod open_segment;
#[path = "../fuzz/harness/shm_file.rs"]
mod shm_file;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest one input may take. The slowest legitimate input waits 2 s for a
/// live creator that never finishes initialising.
const WATCHDOG: Duration = Duration::from_secs(20);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted (none if it does not exist).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.expect("reading a corpus directory").path()).filter(|p| p.is_file()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", dir.display()),
    };
    files.sort();
    files
}

/// A harness: runs one input, returns what it opened as.
type Harness = fn(&[u8]) -> Vec<&'static str>;

/// Every fuzz target and its harness.
const TARGETS: [(&str, Harness); 2] = [("open_segment", open_segment::exercise), ("open_array", open_array::exercise)];

/// Runs `harness` on `path`'s bytes (see [`replay_bytes`]).
fn replay(harness: Harness, path: &Path) -> Vec<&'static str> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    replay_bytes(harness, &path.display().to_string(), data)
}

/// Runs `harness` on `data` in a thread; panics naming the input (`what`) if
/// the harness panics or takes longer than [`WATCHDOG`].
fn replay_bytes(harness: Harness, what: &str, data: Vec<u8>) -> Vec<&'static str> {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(harness(&data));
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(opened) => {
            worker.join().expect("the harness thread");
            opened
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The harness panicked: re-raise its panic with the file's name.
            let payload = worker.join().expect_err("no result but no panic either");
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            panic!("{what}: {msg}");
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            remove_our_files();
            panic!("{what}: the harness hung for {WATCHDOG:?} (SPEC §3: garbage must not hang a timed call)");
        }
    }
}

/// Removes the files a hung harness run left under `/dev/shm`.
fn remove_our_files() {
    let ours = format!("{}{}-", shm_file::NAME_PREFIX, std::process::id());
    for entry in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&ours) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Replays every file of `fuzz/<sub>/<target>/` for every target, and says
/// what they opened as.
fn replay_dir(sub: &str) {
    for (target, harness) in TARGETS {
        let dir = fuzz_dir().join(sub).join(target);
        let mut opened: BTreeMap<&str, usize> = BTreeMap::new();
        let files = inputs(&dir);
        let start = Instant::now();
        for path in &files {
            for kind in replay(harness, path) {
                *opened.entry(kind).or_default() += 1;
            }
        }
        eprintln!("{sub}/{target}: {} inputs in {:?}; opened as {opened:?}", files.len(), start.elapsed());
    }
}

#[test]
fn every_fuzz_target_has_a_harness_here() {
    let listed: Vec<String> = inputs(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let ours: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
    for target in &listed {
        assert!(ours.contains(&target.as_str()), "fuzz target {target} is not replayed by tests/fuzz_corpus.rs");
    }
}

#[test]
fn corpus_replays_cleanly() {
    replay_dir("corpus");
}

#[test]
fn regressions_replay_cleanly() {
    replay_dir("regressions");
}

/// Every seed opens as exactly the kinds it is meant to: valid objects as
/// their own kind only, damaged headers as nothing, damaged payloads still as
/// their kind (garbage state is the primitives' problem, not the opener's).
///
/// With `SHMPROC_SEED_DIR=dir` set, the checked seeds are also written there as
/// `<target>/seed-*` files (CI does so before fuzzing; after a layout change,
/// run it with `SHMPROC_SEED_DIR=fuzz/corpus` to refresh the committed ones).
#[test]
fn fresh_seeds_open_as_expected() {
    let out = std::env::var_os("SHMPROC_SEED_DIR").map(PathBuf::from);
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    for (target, harness) in TARGETS {
        let seeds = match target {
            "open_segment" => seeds(),
            "open_array" => array_seeds(),
            other => panic!("no seeds for fuzz target {other}"),
        };
        if let Some(dir) = &out {
            std::fs::create_dir_all(dir.join(target)).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        }
        for seed in seeds {
            if let Some(dir) = &out {
                let path = dir.join(target).join(&seed.name);
                std::fs::write(&path, &seed.bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            }
            let what = format!("{target}/{}", seed.name);
            let opened = replay_bytes(harness, &what, seed.bytes);
            assert_eq!(opened, seed.opens_as, "{what}: opened as {opened:?}, expected {:?}", seed.opens_as);
        }
    }
}

/// A seed input and the kinds the harness must open it as.
struct Seed {
    name: String,
    bytes: Vec<u8>,
    opens_as: Vec<&'static str>,
}

/// The segment file of a live object, copied.
fn file_of(name: &str) -> Vec<u8> {
    let path = format!("/dev/shm/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// `bytes` with `patch` written at `at`.
fn patched(bytes: &[u8], at: usize, patch: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + patch.len()].copy_from_slice(patch);
    b
}

/// Valid objects of every kind, copied from real named segments, and damaged
/// variants of them.
fn seeds() -> Vec<Seed> {
    static RUN: AtomicU32 = AtomicU32::new(0);
    let base = format!("shmproc-seed-{}-{}", std::process::id(), RUN.fetch_add(1, Ordering::Relaxed));
    let n = |s: &str| format!("{base}-{s}");
    let mut out = Vec::new();
    let mut seed = |name: &str, bytes: Vec<u8>, opens_as: &[&'static str]| {
        out.push(Seed { name: format!("seed-{name}"), bytes, opens_as: opens_as.to_vec() });
    };

    let seg = shmproc::Segment::create(&n("raw"), 32).unwrap();
    seg.write_at(0, b"payload bytes").unwrap();
    seed("valid-segment", file_of(&n("raw")), &["Segment"]);
    let lock = shmproc::Lock::create(&n("lock")).unwrap();
    let lock_bytes = file_of(&n("lock"));
    seed("valid-lock", lock_bytes.clone(), &["Lock"]);
    {
        let _held = lock.lock().unwrap();
        // Names this thread, which is gone by the time the seed is used.
        seed("valid-lock-held", file_of(&n("lock")), &["Lock"]);
    }
    let _r = shmproc::RLock::create(&n("rlock")).unwrap();
    seed("valid-rlock", file_of(&n("rlock")), &["RLock"]);
    let _s = shmproc::Semaphore::create(&n("sem"), 1).unwrap();
    seed("valid-semaphore", file_of(&n("sem")), &["Semaphore"]);
    let _b = shmproc::BoundedSemaphore::create(&n("bsem"), 2).unwrap();
    seed("valid-bounded-semaphore", file_of(&n("bsem")), &["BoundedSemaphore"]);
    let e = shmproc::Event::create(&n("event")).unwrap();
    let event_bytes = file_of(&n("event"));
    seed("valid-event", event_bytes.clone(), &["Event"]);
    e.set();
    seed("valid-event-set", file_of(&n("event")), &["Event"]);
    let _bar = shmproc::Barrier::create(&n("barrier"), 2).unwrap();
    let barrier_bytes = file_of(&n("barrier"));
    seed("valid-barrier", barrier_bytes.clone(), &["Barrier"]);
    let _c = shmproc::Condition::create_with_lock(&n("cond"), shmproc::Lock::new().unwrap()).unwrap();
    seed("valid-condition", file_of(&n("cond")), &["Condition"]);

    let l = &lock_bytes;
    let hl = shmproc::segment::HEADER_LEN;
    seed("empty", Vec::new(), &[]);
    seed("truncated-header", l[..40].to_vec(), &[]);
    seed("header-only", l[..hl].to_vec(), &[]);
    seed("truncated-payload", l[..l.len() - 1].to_vec(), &[]);
    seed("wrong-magic", patched(l, 0, b"SHMPROX\0"), &[]);
    seed("wrong-version", patched(l, 8, &2u32.to_le_bytes()), &[]);
    seed("unknown-kind", patched(l, 12, &99u32.to_le_bytes()), &[]);
    // An Event's kind on a Lock's payload length: refused as an Event too.
    seed("lock-as-event", patched(l, 12, &5u32.to_le_bytes()), &[]);
    seed("type-fingerprint", patched(l, 16, &7u64.to_le_bytes()), &[]);
    seed("huge-payload-len", patched(l, 24, &u64::MAX.to_le_bytes()), &[]);
    seed("payload-len-past-file", patched(l, 24, &4096u64.to_le_bytes()), &[]);
    seed("init-corrupt", patched(l, 36, &7u32.to_le_bytes()), &[]);
    // init_state 0 and creator pid 0: the opener waits 100 ms (by design).
    seed("init-pending-no-creator", patched(&patched(l, 36, &0u32.to_le_bytes()), 32, &0u32.to_le_bytes()), &[]);
    // init_state 0 and a creator pid that cannot exist: fails at once.
    seed("init-pending-dead-creator", patched(&patched(l, 36, &0u32.to_le_bytes()), 32, &u32::MAX.to_le_bytes()), &[]);
    // A lock word with junk bits: taken over as a dead owner's.
    seed("lock-word-junk", patched(l, hl, &0x7fff_ffffu32.to_le_bytes()), &["Lock"]);
    // A lock word naming a thread that does not exist (tid below 2^22).
    seed("lock-owner-dead", patched(l, hl, &0x8030_0000u32.to_le_bytes()), &["Lock"]);
    seed("event-flag-junk", patched(&event_bytes, hl, &2u32.to_le_bytes()), &["Event"]);
    seed("event-sleepers-max", patched(&event_bytes, hl + 4, &u32::MAX.to_le_bytes()), &["Event"]);
    // The internal lock held by a live process (pid 1): a timed wait must
    // still return (bounded grace), not wait for it forever.
    seed("barrier-lock-owned-by-pid-1", patched(&barrier_bytes, hl, &1u32.to_le_bytes()), &["Barrier"]);
    // Every handle drops here, unlinking its name.
    out
}

/// Typecode texts, valid arrays of every typecode, and damaged ones, for the
/// `open_array` harness (its first byte picks the mode: see the harness).
fn array_seeds() -> Vec<Seed> {
    use shmproc::{ArrayBuilder, Typecode};
    const TEXT: u8 = 0;
    const FILE: u8 = 1;
    const FORGED: u8 = 2;
    const CLAIMED: u8 = 3;
    static RUN: AtomicU32 = AtomicU32::new(0);
    let base = format!("shmproc-seed-{}-a{}", std::process::id(), RUN.fetch_add(1, Ordering::Relaxed));
    let mut out = Vec::new();
    let mut seed = |name: &str, mode: u8, body: &[u8], opens: bool| {
        let mut bytes = vec![mode];
        bytes.extend_from_slice(body);
        out.push(Seed { name: format!("seed-{name}"), bytes, opens_as: if opens { vec!["DynArray"] } else { vec![] } });
    };
    for text in ["d", "u", "z", "", "ii", "\u{e9}"] {
        let hex: String = text
            .bytes()
            .flat_map(|b| [b >> 4, b & 15])
            .map(|d| char::from_digit(d.into(), 16).unwrap_or('?'))
            .collect();
        seed(&format!("text-{hex}"), TEXT, text.as_bytes(), false);
    }
    let mut arrays = Vec::new();
    for (i, code) in Typecode::ALL.into_iter().enumerate() {
        let name = format!("{base}-{}", code.c_type());
        let array = ArrayBuilder::new().typecode(code).name(&name).dynamic(i % 4 + 1).unwrap();
        let bytes = file_of(&name);
        seed(&format!("valid-{}", code.c_type()), FILE, &bytes, true);
        arrays.push((array, bytes));
    }
    let (_no_lock, no_lock) = {
        let name = format!("{base}-nolock");
        let a = ArrayBuilder::new().lock(false).name(&name).from_slice(&[1.5f64, -2.0]).unwrap();
        (a, file_of(&name))
    };
    seed("valid-no-lock", FILE, &no_lock, true);
    let empty_name = format!("{base}-empty");
    let _empty = ArrayBuilder::new().name(&empty_name).zeroed::<i32>(0).unwrap();
    seed("valid-empty", FILE, &file_of(&empty_name), true);

    let ints = &arrays[5].1; // 'i', 2 elements
    seed("unknown-typecode", FILE, &patched(ints, 16, b"z"), false);
    seed("typecode-wrong-size", FILE, &patched(ints, 17, &[8]), false);
    seed("payload-not-a-multiple", FILE, &patched(ints, 24, &(64u64 + 6).to_le_bytes()), false);
    seed("payload-past-file", FILE, &patched(ints, 24, &(64u64 + 4096).to_le_bytes()), false);
    seed("payload-shorter-than-state", FILE, &patched(ints, 24, &8u64.to_le_bytes()), false);
    seed("lock-word-junk", FILE, &patched(ints, 64, &0x7fff_ffffu32.to_le_bytes()), true);
    seed("flags-junk", FILE, &patched(ints, 88, &u32::MAX.to_le_bytes()), true);
    let fp = |c: u8, size: u8| u64::from(c) | u64::from(size) << 8;
    let forged = |fp: u64, payload: &[u8]| [&fp.to_le_bytes()[..], payload].concat();
    seed("forged-int", FORGED, &forged(fp(b'i', 4), &[0u8; 64 + 12]), true);
    seed("forged-char", FORGED, &forged(fp(b'c', 1), &[&[0u8; 64][..], b"hello\0"].concat()), true);
    seed(
        "forged-wchar-surrogate",
        FORGED,
        &forged(fp(b'u', 4), &[&[0u8; 64][..], &0xD800u32.to_le_bytes()].concat()),
        true,
    );
    seed("forged-no-state", FORGED, &forged(fp(b'd', 8), &[0u8; 8]), false);
    let claimed = |fp: u64, len: u64, payload: &[u8]| [&fp.to_le_bytes()[..], &len.to_le_bytes(), payload].concat();
    seed("claimed-huge", CLAIMED, &claimed(fp(b'Q', 8), u64::MAX - 8, &[0u8; 64 + 8]), false);
    seed("claimed-exact", CLAIMED, &claimed(fp(b'h', 2), 64 + 4, &[0u8; 64 + 4]), true);
    out
}
