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

#[path = "../fuzz/harness/listener.rs"]
mod listener;
#[path = "../fuzz/harness/manager_request.rs"]
mod manager_request;
#[path = "../fuzz/harness/open_array.rs"]
mod open_array;
#[path = "../fuzz/harness/open_pipe.rs"]
mod open_pipe;
#[path = "../fuzz/harness/open_queue.rs"]
mod open_queue;
#[path = "../fuzz/harness/open_segment.rs"]
mod open_segment;
#[path = "../fuzz/harness/peer_messages.rs"]
mod peer_messages;
#[path = "../fuzz/harness/queue_model.rs"]
mod queue_model;
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
const TARGETS: [(&str, Harness); 11] = [
    ("open_segment", open_segment::exercise),
    ("open_array", open_array::exercise),
    ("queue_model_queue", |d| queue_model::exercise_as(queue_model::kind::QUEUE, d)),
    ("queue_model_spsc", |d| queue_model::exercise_as(queue_model::kind::SPSC, d)),
    ("queue_model_object", |d| queue_model::exercise_as(queue_model::kind::OBJECT, d)),
    ("queue_model_joinable", |d| queue_model::exercise_as(queue_model::kind::JOINABLE, d)),
    ("open_queue", open_queue::exercise),
    ("open_pipe", open_pipe::exercise),
    ("manager_request", manager_request::exercise),
    ("peer_messages", peer_messages::exercise),
    ("listener", listener::exercise),
];

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
            "queue_model_queue" => model_seeds(queue_model::kind::QUEUE),
            "queue_model_spsc" => model_seeds(queue_model::kind::SPSC),
            "queue_model_object" => model_seeds(queue_model::kind::OBJECT),
            "queue_model_joinable" => model_seeds(queue_model::kind::JOINABLE),
            "open_queue" => queue_seeds(),
            "open_pipe" => pipe_seeds(),
            "manager_request" => manager_seeds(),
            "peer_messages" => peer_seeds(),
            "listener" => listener_seeds(),
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
    seed("wrong-version", patched(l, 8, &1u32.to_le_bytes()), &[]);
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

/// A `queue_model` operation: (op code, handle, arg).
type Step = (u8, u8, u8);

/// `queue_model` scenarios, run on every queue type.
mod scenario {
    use super::Step;
    use super::queue_model::op::*;

    pub(super) const FILL_DRAIN: &[Step] = &[
        (FILL, 0, 40),
        (TRY_PUT, 0, 40),
        (CHECK, 0, 0),
        (PUT_BURST, 0, 3),
        (GET_BURST, 0, 7),
        (GET_BURST, 0, 7),
        (TRY_GET, 0, 0),
        (CHECK, 0, 0),
    ];
    /// Repeated: positions run many laps.
    pub(super) const WRAP: &[Step] =
        &[(TRY_PUT, 0, 90), (PUT, 0, 20), (GET, 0, 0), (TRY_PUT, 0, 200), (GET_BURST, 0, 1)];
    pub(super) const TIMED: &[Step] = &[
        (GET_TIMEOUT, 0, 1),
        (GET_TIMEOUT, 0, 0),
        (FILL, 0, 60),
        (PUT_TIMEOUT, 0, 121),
        (PUT_TIMEOUT, 0, 120),
        (GET_TIMEOUT, 0, 1),
        (PUT_TIMEOUT, 0, 1),
        (STRATEGY, 0, 0),
        (GET_TIMEOUT, 0, 1),
        (STRATEGY, 0, 1),
        (GET_BURST, 0, 7),
        (GET_TIMEOUT, 0, 1),
    ];
    pub(super) const CLONES: &[Step] = &[
        (CLONE, 0, 0),
        (CLONE, 1, 0),
        (TRY_PUT, 1, 10),
        (TRY_PUT, 2, 11),
        (TRY_GET, 0, 0),
        (DROP, 0, 0),
        (FILL, 1, 12),
        (GET, 2, 0),
        (TRY_PUT, 0, 13),
        (GET_BURST, 1, 7),
        (CHECK, 2, 0),
    ];
    pub(super) const CLOSE_DRAIN: &[Step] = &[
        (TRY_PUT, 0, 5),
        (TRY_PUT, 0, 6),
        (CLOSE, 0, 1), // arg % 8 != 0: no close
        (TRY_PUT, 0, 7),
        (CLOSE, 0, 8),
        (TRY_PUT, 0, 8),
        (PUT, 0, 9),
        (PUT_TIMEOUT, 0, 1),
        (GET, 0, 0),
        (GET_TIMEOUT, 0, 1),
        (GET_BURST, 0, 7),
        (GET, 0, 0),
        (CHECK, 0, 0),
    ];
    pub(super) const TASKS: &[Step] = &[
        (JOIN, 0, 1),
        (TASK_DONE, 0, 0),
        (TRY_PUT, 0, 1),
        (TRY_PUT, 0, 2),
        (JOIN, 0, 0),
        (JOIN, 0, 1),
        (GET, 0, 0),
        (TASK_DONE, 0, 0),
        (GET, 0, 0),
        (TASK_DONE, 0, 0),
        (JOIN, 0, 1),
        (TASK_DONE, 0, 0),
        (CLOSE, 0, 0),
        (JOIN, 0, 0),
    ];
    /// Every size, up to past the largest message and a huge one (arg 255).
    pub(super) fn sizes() -> Vec<Step> {
        (0..=255u8)
            .step_by(17)
            .chain([253, 254, 255])
            .flat_map(|a| [(TRY_PUT, 0, a), (PUT, 0, a), (GET_BURST, 0, 1)])
            .collect()
    }
}

/// The `queue_model` scenarios, by name.
fn model_scenarios() -> Vec<(&'static str, Vec<Step>)> {
    let wrap = scenario::WRAP.iter().copied().cycle().take(scenario::WRAP.len() * 24).collect();
    vec![
        ("fill-drain", scenario::FILL_DRAIN.to_vec()),
        ("wrap", wrap),
        ("timed", scenario::TIMED.to_vec()),
        ("clones", scenario::CLONES.to_vec()),
        ("close", scenario::CLOSE_DRAIN.to_vec()),
        ("sizes", scenario::sizes()),
        ("tasks", scenario::TASKS.to_vec()),
    ]
}

/// Operation streams for the `queue_model` harness: every scenario on the
/// queue type `only` (the `queue_model_*` target of that type; its first
/// byte picks the type and capacity, then `[op, arg]` pairs: see the
/// harness).
fn model_seeds(only: u8) -> Vec<Seed> {
    use queue_model::{kind, op};
    let stream = |steps: &[Step]| -> Vec<u8> { steps.iter().flat_map(|&(o, h, a)| [o | h << 4, a]).collect() };
    let scenarios = model_scenarios();
    // (type, name, capacity index, what it opens as)
    let types = [
        (kind::QUEUE, "queue", 4, "Queue"),
        (kind::SPSC, "spsc", 2, "SpscQueue"),
        (kind::OBJECT, "object", 5, "ObjectQueue"),
        (kind::JOINABLE, "joinable", 2, "JoinableQueue"),
    ];
    let mut out = Vec::new();
    for (ty, name, cap, opens) in types.into_iter().filter(|t| t.0 == only) {
        for (scenario, steps) in &scenarios {
            let mut bytes = vec![ty + 4 * cap];
            bytes.extend(stream(steps));
            out.push(Seed { name: format!("seed-{name}-{scenario}"), bytes, opens_as: vec![opens] });
        }
        // Every capacity, briefly (index 0 is capacity 0: refused by the
        // fixed-size queues, 64 bytes for the object ones).
        for cap in 0..10u8 {
            let mut bytes = vec![ty + 4 * cap];
            bytes.extend(stream(&[
                (op::FILL, 0, 100),
                (op::TRY_PUT, 0, 255),
                (op::GET_BURST, 0, 7),
                (op::CHECK, 0, 0),
            ]));
            let refused = cap == 0 && (ty == kind::QUEUE || ty == kind::SPSC);
            out.push(Seed {
                name: format!("seed-{name}-capacity-{cap}"),
                bytes,
                opens_as: if refused { vec![] } else { vec![opens] },
            });
        }
    }
    out.push(Seed { name: "seed-empty".into(), bytes: Vec::new(), opens_as: vec![] });
    out
}

/// An `open_queue` seed: the first byte (type and mode), then `body`.
fn queue_seed(name: &str, first: u8, body: &[u8], opens_as: Vec<&'static str>) -> Seed {
    Seed { name: format!("seed-{name}"), bytes: [&[first][..], body].concat(), opens_as }
}

/// What an `open_queue` input of queue type `ty` opens as when it fits.
fn queue_opens(ty: u8) -> Vec<&'static str> {
    match ty {
        open_queue::kind::SPSC => vec!["SpscQueue"],
        open_queue::kind::QUEUE => vec!["Queue"],
        _ => vec!["ObjectQueue", "JoinableQueue"],
    }
}

/// `bytes` with the little-endian `v` at `at`.
fn u64_at(bytes: &[u8], at: usize, v: u64) -> Vec<u8> {
    patched(bytes, at, &v.to_le_bytes())
}

/// `bytes` with the little-endian `v` at `at`.
fn u32_at(bytes: &[u8], at: usize, v: u32) -> Vec<u8> {
    patched(bytes, at, &v.to_le_bytes())
}

/// Queue payloads for the `open_queue` harness: copied from real queues (whose
/// headers must match the harness's forged ones), shaped ones, payloads of the
/// wrong length, and garbage in every part of the state.
fn queue_seeds() -> Vec<Seed> {
    use open_queue::{MPMC_SLOT, MPMC_STATE, OBJECT_STATE, SHAPED, SPSC_SLOT, SPSC_STATE, control_at, kind};
    use shmproc::{JoinableQueue, ObjectQueue, Queue, SpscQueue};
    static RUN: AtomicU32 = AtomicU32::new(0);
    let base = format!("shmproc-seed-{}-q{}", std::process::id(), RUN.fetch_add(1, Ordering::Relaxed));
    let hl = shmproc::segment::HEADER_LEN;
    let mut out = Vec::new();
    let opens = queue_opens;
    let mut seed = |name: &str, first: u8, body: &[u8], opens_as| out.push(queue_seed(name, first, body, opens_as));
    // A real queue's payload, after checking its header against the harness's.
    let payload_of = |ty: u8, name: &str| -> Vec<u8> {
        let file = file_of(name);
        let payload = file[hl..].to_vec();
        let forged = open_queue::header(ty, payload.len());
        // Creator pid and start time (32..36, 40..48) differ; the rest must not.
        assert_eq!(file[..32], forged[..32], "{name}: the harness forges another header than a real queue's");
        assert_eq!(file[36..40], forged[36..40], "{name}: init state");
        assert!(open_queue::fits(ty, payload.len()), "{name}: the harness's layout sizes are wrong");
        payload
    };

    // SpscQueue<u64>: positions moved (3 put, 1 taken: 2 queued), 4 slots.
    let spsc_name = format!("{base}-spsc");
    let spsc = SpscQueue::<u64>::create(&spsc_name, 4).unwrap();
    for v in [11, 12, 13] {
        spsc.try_put(v).unwrap();
    }
    assert_eq!(spsc.try_get().unwrap(), 11);
    let sp = payload_of(kind::SPSC, &spsc_name);
    assert_eq!(sp.len(), SPSC_STATE + 4 * SPSC_SLOT);
    // Queue<u64>: the same, 8 slots, after a lap.
    let mpmc_name = format!("{base}-mpmc");
    let mpmc = Queue::<u64>::create(&mpmc_name, 8).unwrap();
    for v in 0..10 {
        mpmc.try_put(v).unwrap();
        if v % 3 != 2 {
            mpmc.try_get().unwrap();
        }
    }
    let mp = payload_of(kind::QUEUE, &mpmc_name);
    assert_eq!(mp.len(), MPMC_STATE + 8 * MPMC_SLOT);
    // ObjectQueue<Vec<u8>>, 64-byte ring: a message wrapped after padding.
    let object_name = format!("{base}-object");
    let object = ObjectQueue::<Vec<u8>>::create(&object_name, 64).unwrap();
    object.put(vec![1; 20]).unwrap(); // 32-byte record at 0
    object.get().unwrap();
    object.put(vec![2; 14]).unwrap(); // 24-byte record at 32
    object.get().unwrap();
    object.put(vec![3; 20]).unwrap(); // at 56: 8 bytes of padding, then at 0
    let ob = payload_of(kind::OBJECT, &object_name);
    assert_eq!(ob.len(), OBJECT_STATE + 64);
    // A JoinableQueue's segment is an ObjectQueue's: a bigger one, with tasks.
    let joinable_name = format!("{base}-joinable");
    let joinable = JoinableQueue::<Vec<u8>>::create(&joinable_name, 256).unwrap();
    for n in [0, 5, 100, 7] {
        joinable.put(vec![n as u8; n]).unwrap();
    }
    joinable.get().unwrap();
    joinable.task_done().unwrap();
    let jo = payload_of(kind::OBJECT, &joinable_name);
    assert_eq!(jo.len(), OBJECT_STATE + 256);

    for (ty, name, p) in [(kind::SPSC, "spsc", &sp), (kind::QUEUE, "mpmc", &mp), (kind::OBJECT, "object", &ob)] {
        seed(&format!("{name}-valid"), ty, p, opens(ty));
        // A Queue's shaped input is scattered over its state (see the harness).
        let shaped_valid = if ty == kind::QUEUE { mpmc_shaped(p) } else { [&[2u8][..], p].concat() };
        seed(&format!("{name}-shaped-valid"), ty + SHAPED, &shaped_valid, opens(ty));
        for size in 0..6u8 {
            seed(&format!("{name}-shaped-zero-{size}"), ty + SHAPED, &[size], opens(ty));
        }
        seed(&format!("{name}-shaped-nothing"), ty + SHAPED, &[], opens(ty));
        seed(&format!("{name}-truncated"), ty, &p[..p.len() - 1], vec![]);
        let state = [SPSC_STATE, MPMC_STATE, OBJECT_STATE][usize::from(ty)];
        seed(&format!("{name}-state-only"), ty, &p[..state], vec![]);
        seed(&format!("{name}-empty"), ty, &[], vec![]);
        let ctl = control_at(ty);
        seed(&format!("{name}-closed"), ty, &u32_at(p, ctl, 1), opens(ty));
        seed(&format!("{name}-closed-junk"), ty, &u32_at(p, ctl, 0xdead_beef), opens(ty));
        // Sides with sleepers that are not there: spurious wakes only.
        seed(&format!("{name}-sleepers-junk"), ty, &u64_at(p, ctl + 4, u64::MAX), opens(ty));
        seed(&format!("{name}-tail-far-ahead"), ty, &u64_at(p, 0, 1000), opens(ty));
        seed(&format!("{name}-head-ahead-of-tail"), ty, &u64_at(p, 64, u64::MAX - 3), opens(ty));
    }
    seed("spsc-three-slots", kind::SPSC, &sp[..SPSC_STATE + 3 * SPSC_SLOT], vec![]);
    seed("spsc-half-slot", kind::SPSC, &sp[..sp.len() - 4], vec![]);
    seed("mpmc-three-slots", kind::QUEUE, &mp[..MPMC_STATE + 3 * MPMC_SLOT], vec![]);
    seed("mpmc-one-slot", kind::QUEUE, &mp[..MPMC_STATE + MPMC_SLOT], opens(kind::QUEUE));
    seed("mpmc-shaped-one-slot", kind::QUEUE + SHAPED, &mpmc_shaped(&mp[..MPMC_STATE + MPMC_SLOT]), opens(kind::QUEUE));
    seed("object-region-32", kind::OBJECT, &ob[..OBJECT_STATE + 32], vec![]);
    seed("object-region-96", kind::OBJECT, &[&ob[..], &[0u8; 32][..]].concat(), vec![]);
    seed("joinable-valid", kind::OBJECT, &jo, opens(kind::OBJECT));

    out.extend(mpmc_seeds());
    out.extend(object_seeds(&ob, &jo));
    drop((spsc, mpmc, object, joinable)); // unlinks their names
    out
}

/// A `Queue<u64>` payload (`open_queue`'s layout constants), built up for
/// the seeds.
#[derive(Clone)]
struct MpmcState(Vec<u8>);

impl MpmcState {
    /// A fresh ring of `slots` slots: every slot empty for lap 0.
    fn new(slots: usize) -> Self {
        MpmcState(vec![0; open_queue::MPMC_STATE + slots * open_queue::MPMC_SLOT])
    }

    fn at(mut self, at: usize, v: u64) -> Self {
        self.0[at..at + 8].copy_from_slice(&v.to_le_bytes());
        self
    }

    fn enqueue(self, p: u64) -> Self {
        self.at(0, p)
    }

    fn dequeue(self, q: u64) -> Self {
        self.at(64, q)
    }

    /// Slot `i`'s stamp, `lap << 1 | full`.
    fn stamp(self, i: usize, lap: u64, full: bool) -> Self {
        self.at(open_queue::MPMC_STATE + i * open_queue::MPMC_SLOT, lap << 1 | u64::from(full))
    }

    /// Slot `i` full for `lap`, holding `v`.
    fn full(self, i: usize, lap: u64, v: u64) -> Self {
        self.stamp(i, lap, true).at(open_queue::MPMC_STATE + i * open_queue::MPMC_SLOT + 8, v)
    }

    /// Record `i` of the producers' table: `owner` (a task stamp) claiming
    /// `pos` (a position plus one).
    fn producer(self, i: usize, owner: u64, pos: u64) -> Self {
        let at = open_queue::PRODUCERS_AT + i * open_queue::RECORD;
        self.at(at, owner).at(at + 8, pos)
    }

    /// Record `i` of the consumers' table.
    fn consumer(self, i: usize, owner: u64, pos: u64) -> Self {
        let at = open_queue::CONSUMERS_AT + i * open_queue::RECORD;
        self.at(at, owner).at(at + 8, pos)
    }
}

/// A `Queue<u64>` payload as the body of a shaped `open_queue` input (after
/// the first byte): the size byte, then the parts `open_queue::mpmc_regions`
/// names, trailing zeros cut. Checks that the harness makes the payload of it
/// again: it must hold nothing outside those parts.
fn mpmc_shaped(payload: &[u8]) -> Vec<u8> {
    use open_queue::{MPMC_SLOT, MPMC_STATE, kind, mpmc_regions, shaped_payload};
    let slots = (payload.len() - MPMC_STATE) / MPMC_SLOT;
    assert!(slots.is_power_of_two() && slots <= 32, "{slots} slots: no shaped size");
    let size = slots.trailing_zeros() as u8;
    let mut body: Vec<u8> = mpmc_regions(slots).iter().flat_map(|&(at, n)| &payload[at..at + n]).copied().collect();
    body.truncate(body.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1));
    assert!(
        shaped_payload(kind::QUEUE, size, &body) == payload,
        "a {}-byte payload holds bytes that a shaped input does not reach",
        payload.len()
    );
    [&[size][..], &body].concat()
}

/// `open_queue` seeds: slot stamps, indices and claim records of a
/// `Queue<u64>`, mostly in the shaped encoding (compact: the harness scatters
/// it over the indices, slots, first records and control line); states that
/// need more records than that are raw payloads.
fn mpmc_seeds() -> Vec<Seed> {
    use open_queue::{CLAIMS, SHAPED, kind};
    let opens = queue_opens(kind::QUEUE);
    let shaped = |name: &str, s: &MpmcState| queue_seed(name, kind::QUEUE + SHAPED, &mpmc_shaped(&s.0), opens.clone());
    let raw = |name: &str, s: &MpmcState| queue_seed(name, kind::QUEUE, &s.0, opens.clone());
    // Task stamps (start time << 22 | tid): a tid at pid_max, so no such
    // thread; init (pid 1), start time 0: alive, its start not checked.
    let ghost = (1u64 << 22) - 1;
    let live = 1;
    let fresh = MpmcState::new(4);
    let mut out = Vec::new();

    out.push(shaped("mpmc-slot-lap-far-ahead", &fresh.clone().full(0, 9, 1)));
    // Slot 0 two laps behind the indices (8, 8), the others right.
    let behind = fresh.clone().enqueue(8).dequeue(8).stamp(1, 2, false).stamp(2, 2, false).stamp(3, 2, false);
    out.push(shaped("mpmc-slot-lap-behind", &behind));
    // One lap behind but empty: a put finds it full, a get finds it wrong.
    out.push(shaped("mpmc-slot-empty-lap-behind", &fresh.clone().enqueue(4).dequeue(4)));
    // A writer that died mid-put: position 0 empty below enqueue, its
    // record naming it; position 1 published behind it.
    let dead_writer = fresh.clone().enqueue(2).full(1, 0, 42).producer(0, ghost, 1);
    out.push(shaped("mpmc-dead-writer", &dead_writer));
    out.push(shaped("mpmc-dead-writer-alone", &fresh.clone().enqueue(1).producer(0, ghost, 1)));
    // Two in a row, in records out of order, then a published position.
    let two_dead = fresh.clone().enqueue(3).full(2, 0, 43).producer(3, ghost, 2).producer(1, ghost - 1, 1);
    out.push(shaped("mpmc-dead-writers-in-a-row", &two_dead));
    // In flight with no record naming it (a dead writer whose record was
    // taken over, or a free record that kept its position).
    out.push(shaped("mpmc-in-flight-unrecorded", &fresh.clone().enqueue(2).full(1, 0, 44)));
    out.push(shaped("mpmc-free-record-names-head", &fresh.clone().enqueue(1).producer(0, 0, 1)));
    // A writer that lives (init) at the head: waited for, never skipped.
    out.push(shaped("mpmc-live-writer", &dead_writer.clone().producer(0, live, 1)));
    out.push(shaped("mpmc-live-and-dead-writer-same-position", &dead_writer.clone().producer(2, live, 1)));
    // Position 0 skipped (its slot a lap ahead) with dequeue still at it.
    out.push(shaped("mpmc-skipped-position", &fresh.clone().enqueue(2).stamp(0, 1, false).full(1, 0, 45)));
    // Full: four published, none taken.
    let full = (0..4).fold(fresh.clone().enqueue(4), |s, i| s.full(i, 0, 100 + i as u64));
    out.push(shaped("mpmc-full", &full));
    // Full, with a dead reader holding position 0, the next put's slot.
    let dead_reader = full.clone().dequeue(1).consumer(0, ghost, 1);
    out.push(shaped("mpmc-full-dead-reader", &dead_reader));
    out.push(shaped("mpmc-full-live-reader", &dead_reader.clone().consumer(0, live, 1)));
    // Every position taken by a reader that died holding it.
    let all_dead = (0..4).fold(full.clone().dequeue(4), |s, i| s.consumer(i, ghost - i as u64, i as u64 + 1));
    out.push(shaped("mpmc-full-dead-readers-everywhere", &all_dead));
    // A dead reader's slot, the ring not full: it stays held for a lap.
    out.push(shaped(
        "mpmc-dead-reader-not-full",
        &full.clone().enqueue(2).stamp(2, 0, false).stamp(3, 0, false).dequeue(1).consumer(2, ghost, 1),
    ));
    out.push(shaped("mpmc-indices-far-apart", &fresh.clone().enqueue(u64::MAX).dequeue(7)));
    // Positions about to pass 2^64 (laps are 63 bits: they do not wrap with
    // them), slots stamped for the positions' laps.
    let lap = (u64::MAX - 1) >> 2;
    let wrapping = fresh.clone().enqueue(u64::MAX - 1).dequeue(u64::MAX - 1).stamp(2, lap, false).stamp(3, lap, false);
    out.push(shaped("mpmc-indices-wrap", &wrapping));
    // Slot 1's stamp and element all ones (full, of the last lap).
    out.push(shaped("mpmc-slot-all-ones", &fresh.clone().full(1, u64::MAX >> 1, u64::MAX)));
    // 32 slots, half full after many laps.
    let big = (0..16).fold(MpmcState::new(32).enqueue(1000 + 16).dequeue(1000), |s, i| {
        let p = 1000 + i as u64;
        s.full(p as usize % 32, p / 32, p)
    });
    let big = (16..32).fold(big, |s, i| {
        let p = 1000 + i as u64;
        s.stamp(p as usize % 32, p / 32, false)
    });
    out.push(shaped("mpmc-32-slots-many-laps", &big));

    // Junk in the records.
    let two = fresh.clone().enqueue(2).full(0, 0, 1).full(1, 0, 2);
    out.push(shaped(
        "mpmc-record-owner-junk",
        &dead_writer.clone().producer(0, u64::MAX, 1).consumer(1, 0xdead_beef_dead_beef, 0),
    ));
    out.push(shaped(
        "mpmc-record-pos-junk",
        &two.clone().producer(0, live, u64::MAX).producer(1, ghost, 1 << 63).consumer(0, live, 12_345).consumer(
            3,
            ghost,
            u64::MAX,
        ),
    ));
    // A live record naming a position a lap ahead of the head.
    out.push(shaped("mpmc-record-pos-lap-ahead", &dead_writer.clone().producer(1, live, 5)));
    let ghosts = (0..open_queue::SHAPED_RECORDS).fold(two.clone(), |s, i| {
        let junk = 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i as u64 + 1);
        s.producer(i, ghost - i as u64, junk).consumer(i, ghost - 8 - i as u64, junk >> 7)
    });
    out.push(shaped("mpmc-records-shaped-all-ghosts", &ghosts));
    out.push(shaped(
        "mpmc-records-shaped-all-live",
        &(0..open_queue::SHAPED_RECORDS).fold(two.clone(), |s, i| s.producer(i, live, 0).consumer(i, live, 0)),
    ));

    // Raw: every record of a table taken (the harness's thread must take a
    // dead owner's over, or gets Overflow where all are live), and a dead
    // writer whose record is the last one.
    let every = |s: MpmcState, producers: bool, owner: &dyn Fn(usize) -> u64| {
        (0..CLAIMS).fold(s, |s, i| {
            if producers { s.producer(i, owner(i), i as u64 + 7) } else { s.consumer(i, owner(i), i as u64 + 7) }
        })
    };
    let dead = |i: usize| ghost - i as u64;
    out.push(raw("mpmc-producers-all-dead", &every(two.clone(), true, &dead)));
    out.push(raw("mpmc-consumers-all-dead", &every(two.clone(), false, &dead)));
    out.push(raw("mpmc-producers-all-live", &every(two.clone(), true, &|_| live)));
    out.push(raw("mpmc-consumers-all-live", &every(two.clone(), false, &|_| live)));
    let junk = |i: usize| 0x2545_f491_4f6c_dd1d_u64.wrapping_mul(i as u64 + 3);
    out.push(raw("mpmc-records-all-junk", &every(every(two.clone(), true, &junk), false, &|i| junk(i + CLAIMS))));
    out.push(raw(
        "mpmc-dead-writer-last-record",
        &fresh.clone().enqueue(2).full(1, 0, 42).producer(CLAIMS - 1, ghost, 1),
    ));
    out
}

/// `open_queue` seeds: garbage records, locks and counts in an
/// `ObjectQueue<Vec<u8>>` (`ob`, a real one's payload; `jo`, a
/// `JoinableQueue`'s).
fn object_seeds(ob: &[u8], jo: &[u8]) -> Vec<Seed> {
    use open_queue::{OBJECT_STATE, kind};
    const MSG: u64 = 0x4d53_4721;
    const PAD: u64 = 0x5041_4421;
    let opens = queue_opens(kind::OBJECT);
    let seed = |name: &str, body: &[u8]| queue_seed(name, kind::OBJECT, body, opens.clone());
    let mut out = Vec::new();
    // ObjectQueue records: an 8-byte header, `len | tag << 32` (MSG
    // 0x4d534721, PAD 0x50414421), the payload padded to 8. The region
    // starts at OBJECT_STATE; the producer lock's word at 192, the
    // consumer's at 208; the counts (items, unfinished) at 256 and 264.
    let region = OBJECT_STATE;
    // One published 16-byte record at offset 0 holding `bytes`.
    let one_record = |len: u64, tag: u64, bytes: &[u8]| {
        let mut p = vec![0u8; OBJECT_STATE + 64];
        p = u64_at(&p, 0, 16); // tail
        p = u64_at(&p, region, len | tag << 32);
        p[region + 8..region + 8 + bytes.len()].copy_from_slice(bytes);
        p
    };
    out.push(seed("object-record", &one_record(3, MSG, &[2, 0xab, 0xcd])));
    // The postcard length says more bytes than the record holds.
    out.push(seed("object-record-lying-length", &one_record(3, MSG, &[0xff, 0xff, 0x7f])));
    out.push(seed("object-record-huge-len", &one_record(u64::from(u32::MAX), MSG, &[])));
    out.push(seed("object-record-past-tail", &one_record(9, MSG, &[1; 8])));
    out.push(seed("object-record-junk-tag", &one_record(3, 0xdead, &[2, 1, 1])));
    out.push(seed("object-pad-short", &one_record(8, PAD, &[])));
    // Padding over the whole region and nothing after it (writers publish
    // padding only together with the message that follows).
    out.push(seed("object-pad-alone", &u64_at(&one_record(56, PAD, &[]), 0, 64)));
    out.push(seed("object-tail-unaligned", &u64_at(ob, 0, 12)));
    out.push(seed("object-producer-lock-held-by-pid-1", &u32_at(ob, 192, 1)));
    out.push(seed("object-consumer-lock-held-by-pid-1", &u32_at(ob, 208, 1)));
    out.push(seed("object-locks-junk", &u32_at(&u32_at(ob, 192, 0x7fff_ffff), 208, 0x4000_0000)));
    out.push(seed("object-counts-max", &u64_at(&u64_at(ob, 256, u64::MAX), 264, u64::MAX)));
    out.push(seed("object-unfinished-zero", &u64_at(jo, 264, 0)));
    out
}

/// A pipe payload (`open_pipe`'s layout constants), built up for the seeds:
/// records are appended as a writer appends them, padding included.
#[derive(Clone)]
struct PipeState {
    p: Vec<u8>,
    capacity: usize,
}

impl PipeState {
    /// A fresh pipe with rings of `capacity` bytes: every byte zero.
    fn new(capacity: usize) -> Self {
        PipeState { p: vec![0; open_pipe::STATE + 2 * capacity], capacity }
    }

    fn at(mut self, at: usize, v: u64) -> Self {
        self.p[at..at + 8].copy_from_slice(&v.to_le_bytes());
        self
    }

    fn at32(mut self, at: usize, v: u32) -> Self {
        self.p[at..at + 4].copy_from_slice(&v.to_le_bytes());
        self
    }

    fn get(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.p[at..at + 8].try_into().unwrap())
    }

    /// Direction `d`'s field at `field` (an `open_pipe::at` offset).
    fn field(self, d: usize, field: usize, v: u64) -> Self {
        self.at(open_pipe::dir_at(d, field), v)
    }

    /// Direction `d`'s positions, as a ring at rest has them (each side's
    /// copies equal to the published positions).
    fn positions(self, d: usize, head: u64, tail: u64) -> Self {
        use open_pipe::at;
        let s = self.field(d, at::HEAD, head).field(d, at::READER_OWN, head).field(d, at::WRITER_SEEN, head);
        s.field(d, at::TAIL, tail).field(d, at::WRITER_OWN, tail).field(d, at::READER_SEEN, tail)
    }

    /// Appends a record to direction `d` at the writer's position, as the
    /// crate's writer does (padding to the region's end first if it does
    /// not fit there), with `len` as its header's length.
    fn record_len(mut self, d: usize, tag: u64, len: u64, payload: &[u8]) -> Self {
        use open_pipe::{at, data_at, tag::PAD};
        let cap = self.capacity as u64;
        let tail = self.get(open_pipe::dir_at(d, at::WRITER_OWN));
        let rec = 8 + payload.len().next_multiple_of(8) as u64;
        let (mut off, mut next) = (tail % cap, tail.wrapping_add(rec));
        let base = data_at(d, self.capacity);
        if off + rec > cap {
            self = self.at(base + off as usize, (cap - off - 8) | PAD << 32);
            next = next.wrapping_add(cap - off);
            off = 0;
        }
        let head = self.get(open_pipe::dir_at(d, at::READER_OWN));
        assert!(next.wrapping_sub(head) <= cap, "records past the ring's room");
        let at = base + off as usize;
        self = self.at(at, len | tag << 32);
        self.p[at + 8..at + 8 + payload.len()].copy_from_slice(payload);
        self.field(d, at::TAIL, next).field(d, at::WRITER_OWN, next)
    }

    fn record(self, d: usize, tag: u64, payload: &[u8]) -> Self {
        self.record_len(d, tag, payload.len() as u64, payload)
    }

    fn whole(self, d: usize, message: &[u8]) -> Self {
        self.record(d, open_pipe::tag::MSG, message)
    }

    /// A FIRST record: the total, then the first chunk.
    fn first(self, d: usize, total: u64, chunk: &[u8]) -> Self {
        self.record(d, open_pipe::tag::FIRST, &[&total.to_le_bytes()[..], chunk].concat())
    }

    fn more(self, d: usize, chunk: &[u8]) -> Self {
        self.record(d, open_pipe::tag::MORE, chunk)
    }

    /// `message` streamed into direction `d` as the crate's writer cuts it
    /// (a FIRST, then MORE chunks of half a record); only its first `records`.
    fn streamed(self, d: usize, message: &[u8], records: usize) -> Self {
        let max = open_pipe::max_payload(self.capacity);
        let chunk = (max / 2).max(1);
        let (first, rest) = message.split_at(chunk.min(max - 8));
        let s = self.first(d, message.len() as u64, first);
        rest.chunks(chunk).take(records - 1).fold(s, |s, c| s.more(d, c))
    }

    fn closed(self, d: usize, v: u32) -> Self {
        self.at32(open_pipe::dir_at(d, open_pipe::at::CLOSED), v)
    }

    /// Direction `d`'s writers' lock (`lock` = `at::WRITERS`) or readers'.
    fn lock(self, d: usize, lock: usize, word: u32, stamp: u64) -> Self {
        let at = open_pipe::dir_at(d, lock);
        self.at32(at, word).at(at + 8, stamp)
    }

    /// Record `i` of end `e`'s holder table.
    fn holder(self, e: usize, i: usize, stamp: u64) -> Self {
        self.at(open_pipe::holder_at(e, i), stamp)
    }
}

/// A pipe payload as an `open_pipe` shaped input (mode `mode`, which gets
/// the shaped bit): the size byte, then the parts `open_pipe::shaped_regions`
/// names, trailing zeros cut. Checks that the harness makes the payload of
/// it again: it must hold nothing outside those parts.
fn pipe_shaped(mode: u8, s: &PipeState) -> Vec<u8> {
    use open_pipe::{shaped_capacity, shaped_payload, shaped_regions};
    let size = (s.capacity / open_pipe::MIN_CAPACITY).trailing_zeros() as u8;
    assert_eq!(shaped_capacity(size), s.capacity, "no shaped size for a {}-byte ring", s.capacity);
    let mut body: Vec<u8> = shaped_regions(s.capacity).iter().flat_map(|&(at, n)| &s.p[at..at + n]).copied().collect();
    body.truncate(body.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1));
    assert!(shaped_payload(size, &body) == s.p, "a pipe payload holds bytes that a shaped input does not reach");
    [&[mode | open_pipe::mode::SHAPED, size][..], &body].concat()
}

/// Checks the seeds' layout against the crate: a pipe forged with the
/// harness's header opens by name, and messages sent through it by the crate
/// leave exactly the bytes [`PipeState`] writes (holder records and lock
/// stamps aside: they name this process); then the crate reads them back.
fn check_pipe_layout() {
    use open_pipe::{HOLDERS, at, dir_at, holder_at};
    use shmproc::Connection;
    let capacity = 1024;
    let empty = PipeState::new(capacity);
    let mut file = open_pipe::header(empty.p.len(), true);
    file.extend_from_slice(&empty.p);
    let shm = shm_file::ShmFile::write(&file);
    let (a, b) = (Connection::open_named_end(&shm.name, 0).unwrap(), Connection::open_named_end(&shm.name, 1).unwrap());
    assert_eq!((a.capacity(), b.capacity()), (capacity, capacity));
    let big: Vec<u8> = (0..600u32).map(|i| (i * 7) as u8).collect();
    b.send_bytes(b"hello").unwrap();
    b.send_bytes(&big).unwrap(); // a FIRST and two MOREs
    a.send_bytes(b"back").unwrap();
    let mut sent = PipeState { p: file_of(&shm.name)[shmproc::segment::HEADER_LEN..].to_vec(), capacity };
    for e in 0..2 {
        assert_ne!(sent.get(holder_at(e, 0)), 0, "end {e}'s holder record");
        assert!((1..HOLDERS).all(|i| sent.get(holder_at(e, i)) == 0), "one record per end");
        sent = sent.holder(e, 0, 0);
        let writers = dir_at(e, at::WRITERS);
        assert_eq!(sent.get(writers) as u32, 0, "the writers' lock of direction {e} is released");
        sent = sent.at(writers + 8, 0);
    }
    let expected = PipeState::new(capacity).whole(1, b"hello").streamed(1, &big, 3).whole(0, b"back");
    assert!(sent.p == expected.p, "the crate's pipe differs from the seeds' layout");
    let tick = Duration::from_millis(100);
    assert_eq!(a.recv_bytes_timeout(tick).unwrap(), b"hello");
    assert_eq!(a.recv_bytes_timeout(tick).unwrap(), big);
    assert_eq!(b.recv_bytes_timeout(tick).unwrap(), b"back");
    drop((a, b, shm));
}

/// Process stamps (`start << 22 | pid`) and lock words (a tid) for the
/// `open_pipe` seeds: 4194303 is past `pid_max`, so no such process...
const DEAD: u64 = (1 << 22) - 1;
/// ... and pid 1 lives (start time 0: not checked).
const LIVE: u64 = 1;
/// What an `open_pipe` input that opens both ends and sees nothing else
/// reports.
const BOTH_ENDS: [&str; 2] = ["end0", "end1"];

/// [`BOTH_ENDS`], then `extra`.
fn both_and(extra: &[&'static str]) -> Vec<&'static str> {
    [&BOTH_ENDS[..], extra].concat()
}

/// An `open_pipe` seed of pipe `s` in the shaped encoding, mode `mode`.
fn pipe_seed(name: &str, mode: u8, s: &PipeState, opens_as: &[&'static str]) -> Seed {
    Seed { name: format!("seed-{name}"), bytes: pipe_shaped(mode, s), opens_as: opens_as.to_vec() }
}

/// An `open_pipe` seed of a raw payload, mode `mode`.
fn raw_pipe_seed(name: &str, mode: u8, payload: &[u8], opens_as: &[&'static str]) -> Seed {
    Seed { name: format!("seed-{name}"), bytes: [&[mode][..], payload].concat(), opens_as: opens_as.to_vec() }
}

/// `open_pipe` seeds: valid pipes holding whole, streamed and partial
/// messages, framing garbage, closed directions, locks and holder records
/// naming dead (pid 4194303) and live (pid 1) processes, and raw payloads of
/// the right and wrong sizes. The layout is checked against the crate first.
fn pipe_seeds() -> Vec<Seed> {
    check_pipe_layout();
    let mut out = pipe_message_seeds();
    out.extend(pipe_state_seeds());
    out.extend(pipe_raw_seeds());
    out
}

/// `open_pipe` seeds: messages whole and streamed, complete or not, and
/// garbage in their records.
fn pipe_message_seeds() -> Vec<Seed> {
    use open_pipe::at;
    use open_pipe::mode::{BOTH, BOTH_REVERSED, END0, END1, LONG};
    use open_pipe::tag::{FIRST, MSG, PAD};
    let message = both_and(&["message"]);
    let corrupt = both_and(&["corrupt"]);
    let streamed = both_and(&["streamed"]);
    let fresh = PipeState::new(256);
    let mut out = Vec::new();
    let mut seed = |name: &str, mode: u8, s: &PipeState, opens_as: &[&'static str]| {
        out.push(pipe_seed(name, mode, s, opens_as));
    };
    for size in 0..6u8 {
        seed(&format!("empty-{size}"), BOTH, &PipeState::new(64 << size), &BOTH_ENDS);
    }
    let hello = fresh.clone().whole(1, b"hello").whole(0, b"world!");
    seed("whole-message", BOTH, &hello, &message);
    seed("whole-message-reversed", BOTH_REVERSED, &hello, &message);
    // Only one end opened, and the other has no holder record (and a pipe
    // made by name no token): once the message is read, a read that times
    // out looks at the peer on its way out and finds it gone.
    seed("whole-message-end0", END0, &hello, &["end0", "message", "gone"]);
    seed("whole-message-end1-long", END1 | LONG, &hello, &["end1", "message", "gone"]);

    // Streamed: 600 bytes through a 1024-byte ring (a FIRST, two MOREs).
    let big: Vec<u8> = (0..600u32).map(|i| (i * 13 + 1) as u8).collect();
    let k = PipeState::new(1024);
    seed("streamed", BOTH, &k.clone().streamed(1, &big, 3), &streamed);
    seed("streamed-long", BOTH | LONG, &k.clone().streamed(1, &big, 3).streamed(0, &big[..300], 2), &streamed);
    // The writer died after two records, holding the writers' lock: kept
    // between timed-out reads, dropped once probed (long) or at the close.
    let partial = k.clone().streamed(1, &big, 2);
    let dead_writer = partial.clone().lock(1, at::WRITERS, DEAD as u32, DEAD);
    seed("stream-partial-dead-writer", BOTH, &dead_writer, &BOTH_ENDS);
    seed("stream-partial-dead-writer-long", BOTH | LONG, &dead_writer, &BOTH_ENDS);
    seed("stream-partial-writer-free", BOTH, &partial, &BOTH_ENDS);
    seed(
        "stream-partial-live-writer",
        BOTH | LONG,
        &partial.clone().lock(1, at::WRITERS, LIVE as u32, LIVE),
        &BOTH_ENDS,
    );
    seed("writers-lock-junk", BOTH, &partial.clone().lock(1, at::WRITERS, 0x7fc0_0000, u64::MAX), &BOTH_ENDS);
    // Another message begins after the partial one: that one is lost.
    seed("stream-partial-then-whole", BOTH, &dead_writer.clone().whole(1, b"next"), &message);
    seed("stream-partial-then-streamed", BOTH, &partial.clone().streamed(1, &big[..300], 2), &streamed);
    // MORE chunks whose FIRST a dead reader took: skipped.
    seed("orphan-more", BOTH, &k.clone().more(1, &big[..40]).more(1, &big[40..50]).whole(1, b"after"), &message);
    seed("orphan-more-only", BOTH, &k.clone().more(1, &big[..40]), &BOTH_ENDS);

    // Framing garbage.
    seed("first-short", BOTH, &fresh.clone().record(1, FIRST, &[1, 2, 3, 4]), &corrupt);
    seed("first-total-not-above-chunk", BOTH, &fresh.clone().first(1, 10, &[7; 10]).more(1, &[1]), &corrupt);
    seed("first-total-huge", BOTH, &fresh.clone().first(1, u64::MAX, &[7; 10]).more(1, &[1]), &corrupt);
    seed("first-total-over-isize", BOTH, &fresh.clone().first(1, 1 << 63, &[7; 10]), &corrupt);
    seed("chunks-past-total", BOTH, &fresh.clone().first(1, 20, &[7; 10]).more(1, &[8; 16]), &corrupt);
    let restarted = fresh.clone().first(1, 20, &[7; 10]).first(1, 12, &[5; 4]).more(1, &[6; 8]);
    seed("first-then-first", BOTH, &restarted, &streamed);
    seed("record-len-lies", BOTH, &fresh.clone().record_len(1, MSG, 200, b"short"), &corrupt);
    seed("record-tag-junk", BOTH, &fresh.clone().record(1, 0xdead, b"junk"), &corrupt);
    // Padding at the end of a 64-byte ring: a message at 40, padding at 56,
    // the next message from 0.
    let small = PipeState::new(64).positions(1, 40, 40);
    seed("pad-at-end", BOTH, &small.clone().whole(1, &[1; 8]).whole(1, &[2; 3]), &message);
    let pad_alone = small.clone().field(1, at::TAIL, 64).field(1, at::WRITER_OWN, 64);
    seed("pad-alone", BOTH, &pad_alone.at(open_pipe::data_at(1, 64) + 40, 16 | PAD << 32), &corrupt);
    seed("pad-short", BOTH, &small.clone().record(1, PAD, &[]).whole(1, &[3; 8]), &corrupt);
    // Half the ring and more in one MSG record: no writer makes one (the
    // largest is 24 bytes in 64), yet it lies inside the region.
    seed("whole-over-max-payload", BOTH, &PipeState::new(64).whole(1, &[9; 48]), &both_and(&["message", "oversized"]));
    seed("whole-past-region", BOTH, &PipeState::new(64).record_len(1, MSG, 60, &[9; 48]), &corrupt);
    out
}

/// `open_pipe` seeds: positions, closed flags, sleepers, locks and holder
/// records.
fn pipe_state_seeds() -> Vec<Seed> {
    use open_pipe::at;
    use open_pipe::mode::{BOTH, END0, END1, LONG};
    let message = both_and(&["message"]);
    let both_corrupt = both_and(&["message", "corrupt"]);
    let fresh = PipeState::new(256);
    let hello = fresh.clone().whole(1, b"hello").whole(0, b"world!");
    let mut out = Vec::new();
    let mut seed = |name: &str, mode: u8, s: &PipeState, opens_as: &[&'static str]| {
        out.push(pipe_seed(name, mode, s, opens_as));
    };
    // Positions (direction 1's; direction 0 still holds a message).
    seed("tail-unaligned", BOTH, &hello.clone().field(1, at::TAIL, 12), &both_corrupt);
    seed("tail-unaligned-seen", BOTH, &hello.clone().field(1, at::READER_SEEN, 12), &both_corrupt);
    seed("tail-far-ahead", BOTH, &fresh.clone().field(1, at::TAIL, 1000), &both_and(&["corrupt"]));
    seed("head-ahead-of-tail", BOTH, &hello.clone().field(1, at::READER_OWN, 64), &both_corrupt);
    seed("positions-wrap", BOTH, &fresh.clone().positions(1, u64::MAX - 7, u64::MAX - 7).whole(1, b"wrap"), &message);
    // Closed directions, with data left to drain.
    seed("closed-with-data", BOTH, &hello.clone().closed(1, 1), &message);
    seed("closed-junk", END0, &hello.clone().closed(1, 0xdead_beef).closed(0, 7), &["end0", "message"]);
    seed("closed-empty", BOTH, &fresh.clone().closed(0, 1).closed(1, 1), &BOTH_ENDS);
    seed("sleepers-junk", BOTH, &hello.clone().field(1, at::CLOSED + 16, u64::MAX), &message);
    // The readers' lock: held by a live process, a dead one (taken over
    // after a probe: long mode), junk (taken over at once).
    let read_locked = |word: u32, stamp: u64| fresh.clone().whole(1, b"hello").lock(1, at::READERS, word, stamp);
    seed("readers-lock-live", BOTH, &read_locked(LIVE as u32, LIVE), &BOTH_ENDS);
    seed("readers-lock-dead", BOTH, &read_locked(DEAD as u32, DEAD), &BOTH_ENDS);
    seed("readers-lock-dead-long", BOTH | LONG, &read_locked(DEAD as u32, DEAD), &message);
    seed("readers-lock-junk", BOTH, &read_locked(0x7fff_ffff, 0), &message);
    // A long wait probes the peer: no holder record at all (and no token for
    // a connection made by name), or only dead ones, is a peer gone.
    seed("empty-end0-long", END0 | LONG, &fresh, &["end0", "gone"]);
    let dead_peer = (0..open_pipe::SHAPED_HOLDERS).fold(fresh.clone(), |s, i| s.holder(1, i, DEAD - i as u64));
    seed("holders-dead-end0-long", END0 | LONG, &dead_peer, &["end0", "gone"]);
    seed("holders-live-end0-long", END0 | LONG, &dead_peer.clone().holder(1, 3, LIVE), &["end0"]);
    seed("holders-dead-end1-long", END1 | LONG, &fresh.clone().holder(0, 2, DEAD), &["end1", "gone"]);
    seed("holders-dead-both-long", BOTH | LONG, &dead_peer.clone().holder(0, 0, DEAD).whole(1, b"x"), &message);
    out
}

/// `open_pipe` seeds as raw payloads: every holder record of a table (a
/// shaped input reaches the first few only), and payload sizes.
fn pipe_raw_seeds() -> Vec<Seed> {
    use open_pipe::mode::{BOTH, END0, END1, LONG, SHAPED, SIMPLEX};
    use open_pipe::{HOLDERS, STATE};
    let message = both_and(&["message"]);
    let every = |e: usize, stamp: &dyn Fn(usize) -> u64| {
        (0..HOLDERS).fold(PipeState::new(64).whole(1, b"hi"), |s, i| s.holder(e, i, stamp(i)))
    };
    let dead = |i: usize| DEAD - i as u64;
    let junk = |i: usize| 0x2545_f491_4f6c_dd1d_u64.wrapping_mul(i as u64 + 3);
    let all_junk = (0..HOLDERS).fold(every(0, &junk), |s, i| s.holder(1, i, junk(i + HOLDERS)));
    let hello = PipeState::new(256).whole(1, b"hello").whole(0, b"world!");
    let p = &PipeState::new(256).p;
    vec![
        raw_pipe_seed("raw-valid", BOTH, &hello.p, &message),
        raw_pipe_seed("holders-end0-all-live", BOTH, &every(0, &|_| LIVE).p, &["end1", "overflow"]),
        raw_pipe_seed("holders-end0-all-dead", BOTH, &every(0, &dead).p, &message),
        raw_pipe_seed("holders-end0-all-dead-long", END1 | LONG, &every(0, &dead).p, &["end1", "gone"]),
        raw_pipe_seed("holders-end1-all-live-long", END0 | LONG, &every(1, &|_| LIVE).p, &["end0", "message"]),
        raw_pipe_seed("holders-all-junk", BOTH | LONG, &all_junk.p, &message),
        raw_pipe_seed("raw-simplex", SIMPLEX, p, &[]),
        raw_pipe_seed("raw-simplex-size", SIMPLEX, &p[..STATE + 256], &[]),
        raw_pipe_seed("raw-truncated", BOTH, &p[..p.len() - 8], &[]),
        raw_pipe_seed("raw-state-only", BOTH, &p[..STATE], &[]),
        raw_pipe_seed("raw-rings-not-power-of-two", BOTH, &[&p[..], &[0; 64]].concat(), &[]),
        // One byte past two rings: not a pipe's layout.
        raw_pipe_seed("raw-odd-tail", BOTH, &[&p[..], &[0]].concat(), &[]),
        raw_pipe_seed("raw-empty", BOTH, &[], &[]),
        Seed { name: "seed-empty".into(), bytes: Vec::new(), opens_as: vec![] },
        Seed { name: "seed-shaped-nothing".into(), bytes: vec![SHAPED], opens_as: BOTH_ENDS.to_vec() },
    ]
}

/// Seeds for `manager_request`: the example requests in order (every one
/// answered as a valid request would be), the same with a second client
/// that holds a key the first one then cannot, and garbage.
/// A valid message for each decoder, and values nested past the bound.
fn peer_seeds() -> Vec<Seed> {
    let expected = [
        ["pool: run", "pool: done", "pool: stop", "pool: ready", "pool: init failed", "pool: batch"].as_slice(),
        &["manager reply"; 6],
        &["result: read"; 2],
        &["serde: decoded"; 5],
    ]
    .concat();
    let examples = shmproc::fuzzing::peer_message_examples();
    assert_eq!(examples.len(), expected.len(), "one expectation per example");
    let mut seeds: Vec<Seed> = examples
        .into_iter()
        .zip(expected)
        .enumerate()
        .map(|(i, (bytes, opens))| Seed { name: format!("seed-example-{i:02}"), bytes, opens_as: vec![opens] })
        .collect();
    // A recursive value nested a thousand deep: an error, not a stack
    // overflow (the serde decoder's shape 2 is recursive: List is variant 3).
    let mut deep = vec![3u8, 2];
    for _ in 0..1000 {
        deep.extend_from_slice(&[3, 1]);
    }
    deep.push(0);
    seeds.push(Seed { name: "seed-nested-too-deep".to_owned(), bytes: deep, opens_as: vec!["serde: does not decode"] });
    seeds
}

fn manager_seeds() -> Vec<Seed> {
    let requests = shmproc::manager::FuzzServer::example_requests();
    let all: Vec<u8> = requests.iter().flat_map(|r| manager_request::record(0, r)).collect();
    let expected = vec![
        "created", "created", "created", "value", "value", "value", "done", "done", "pairs", "count", "done", "done",
        "error", "items", "value", "names", "error", "lent", "done", "lent", "done", "done", "count", "error", "error",
    ];
    let mut contended = Vec::new();
    for (client, i) in [(0, 0), (1, 3), (1, 5), (0, 5), (0x81, 4), (0, 5)] {
        contended.extend(manager_request::record(client, &requests[i]));
    }
    vec![
        Seed {
            name: "seed-every-request-served".to_owned(),
            bytes: [&[manager_request::SERVED][..], &all].concat(),
            opens_as: expected.clone(),
        },
        Seed { name: "seed-every-request".to_owned(), bytes: all, opens_as: expected },
        Seed {
            name: "seed-held-by-another".to_owned(),
            bytes: contended,
            opens_as: vec!["created", "value", "value", "busy", "value", "value"],
        },
        Seed {
            name: "seed-garbage".to_owned(),
            bytes: [manager_request::record(2, &[0xff; 9]), manager_request::record(3, &[])].concat(),
            opens_as: vec!["malformed", "malformed"],
        },
    ]
}

/// One seed per part of the `listener` target, each ending as named.
fn listener_seeds() -> Vec<Seed> {
    let expected = [
        "request: skipped",
        "request: skipped",
        "listener: refused",
        "listener: refused",
        "listener: greeted",
        "client: refused",
        "client: refused",
        "client: greeted",
        "client: refused",
        "client: refused",
        "client: greeted",
        "listener: refused",
        "client: refused",
    ];
    let examples = shmproc::fuzzing::listener_examples();
    assert_eq!(examples.len(), expected.len(), "one expectation per example");
    examples
        .into_iter()
        .zip(expected)
        .enumerate()
        .map(|(i, (bytes, opens))| Seed { name: format!("seed-example-{i:02}"), bytes, opens_as: vec![opens] })
        .collect()
}
