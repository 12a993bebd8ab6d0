//! Python reads and writes shmproc arrays with nothing but its standard
//! library (`multiprocessing.shared_memory`, `resource_tracker`, `struct`,
//! `memoryview`), following the byte layout and the resource-tracker advice
//! in the module docs of `src/array/mod.rs`.
//!
//! Rust creates named arrays and fills them; a `python3 -c` child (killed by a
//! watchdog after 30 s) validates each header (magic, version, kind 9,
//! typecode letter and element size, payload length, init state, lock flag),
//! checks the elements Rust wrote (exiting non-zero on any difference), writes
//! new ones, releases its views and closes without unlinking. Rust then reads
//! what Python wrote, opens every array by name again (the resource tracker
//! did not unlink it) and checks that Python printed no "leaked
//! `shared_memory`" warning. A last test shows the hazard the docs warn about:
//! without the workaround, Python's resource tracker unlinks the name.
//!
//! Without `python3` on `PATH` (or with a Python older than 3.8, which has no
//! `shared_memory`), each test prints why and passes without running.

mod common;

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{assert_no_leftovers, shm_path, unique_name};
use shmproc::{Array, ArrayBuilder, DynArray, Error, Scalar, Scalar as S, Typecode};

/// How long one Python run may take before it is killed.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(30);

/// The Python side. `argv[1]` is a JSON spec:
/// `{"mode": "careful" | "default", "arrays": [{"name", "code", "size", "len",
/// "lock", "expect": [...], "write": [[index, value], ...]}, ...]}`.
/// Element values travel as integers: the value itself for integer codes, the
/// byte for `c`, the code point for `u`, and the IEEE bits for `f` and `d`
/// (so that `-0.0`, infinities and NaN payloads compare exactly).
const SCRIPT: &str = r#"
import json, struct, sys
from multiprocessing import shared_memory, resource_tracker

def fail(msg):
    print("python: " + msg, file=sys.stderr, flush=True)
    sys.exit(3)

def attach(name, mode):
    if mode == "default":
        # What the docs warn against: the resource tracker will unlink it.
        return shared_memory.SharedMemory(name)
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)
    shm = shared_memory.SharedMemory(name)
    resource_tracker.unregister(shm._name, "shared_memory")
    return shm

def to_item(code, v):
    """A spec value as the memoryview item to store."""
    if code == "f":
        return struct.unpack("<f", struct.pack("<I", v))[0]
    if code == "d":
        return struct.unpack("<d", struct.pack("<Q", v))[0]
    if code == "c":
        return bytes([v])
    return v

def from_item(code, x):
    """A memoryview item as a spec value."""
    if code == "f":
        return struct.unpack("<I", struct.pack("<f", x))[0]
    if code == "d":
        return struct.unpack("<Q", struct.pack("<d", x))[0]
    if code == "c":
        return x[0]
    return x

def check_and_write(a, mode):
    name = a["name"]
    shm = attach(name, mode)
    try:
        buf = shm.buf
        magic, version, kind, fp, payload_len = struct.unpack_from("<8sIIQQ", buf, 0)
        (init_state,) = struct.unpack_from("<I", buf, 36)
        (flags,) = struct.unpack_from("<I", buf, 88)
        code, size = chr(fp & 0xFF), (fp >> 8) & 0xFF
        if magic != b"SHMPROC\0":
            fail(f"{name}: magic {magic!r}")
        if version != 2 or kind != 9 or init_state != 1:
            fail(f"{name}: version {version}, kind {kind}, init state {init_state}")
        if fp >> 16 != 0 or code != a["code"] or size != a["size"]:
            fail(f"{name}: fingerprint {fp:#x}: code {code!r} size {size}, expected {a['code']!r} {a['size']}")
        if payload_len < 64 or (payload_len - 64) % size != 0 or (payload_len - 64) // size != a["len"]:
            fail(f"{name}: payload length {payload_len} for {a['len']} elements of {size} bytes")
        if 64 + payload_len > shm.size:
            fail(f"{name}: payload length {payload_len} past the end of {shm.size} bytes")
        if (flags & 1) != int(a["lock"]):
            fail(f"{name}: flags {flags:#x}, expected lock={a['lock']}")
        n = (payload_len - 64) // size
        data = buf[128 : 128 + payload_len - 64].cast(code if code != "u" else "I")
        try:
            if len(data) != n:
                fail(f"{name}: {len(data)} items, expected {n}")
            got = [from_item(code, data[i]) for i in range(n)]
            if got != a["expect"]:
                fail(f"{name}: read {got}, expected {a['expect']}")
            for i, v in a["write"]:
                data[i] = to_item(code, v)
            print(json.dumps({"name": name, "code": code, "read": got}), flush=True)
        finally:
            data.release()
    finally:
        shm.close()  # never unlink: the Rust creator owns the name

spec = json.loads(sys.argv[1])
for a in spec["arrays"]:
    check_and_write(a, spec["mode"])
print("python ok %d.%d" % sys.version_info[:2], flush=True)
"#;

/// What a Python run left behind.
struct PyRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl PyRun {
    fn describe(&self) -> String {
        format!("status {}\n--- stdout ---\n{}--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }

    /// Asserts a clean run: exit 0, the script's last line, no traceback, and
    /// no resource-tracker warning.
    fn assert_clean(&self) {
        assert!(self.status.success(), "python failed: {}", self.describe());
        assert!(self.stdout.contains("python ok"), "{}", self.describe());
        assert!(!self.stderr.contains("Traceback"), "{}", self.describe());
        assert!(
            !self.stderr.contains("leaked shared_memory"),
            "the resource tracker still tracked a segment: {}",
            self.describe()
        );
    }
}

/// Runs `python3 args...` under the watchdog and collects its output. The
/// output pipes close only when Python *and* its resource tracker (which
/// inherits stderr and prints its warnings and unlinks at its own exit) are
/// gone, so a collected run is a finished one.
fn run_python(args: &[&str]) -> std::io::Result<PyRun> {
    let mut child = Command::new("python3")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (tx, rx) = mpsc::channel();
    let pipes: [(usize, Box<dyn Read + Send>); 2] = [
        (0, Box::new(child.stdout.take().expect("piped stdout"))),
        (1, Box::new(child.stderr.take().expect("piped stderr"))),
    ];
    for (which, mut pipe) in pipes {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = tx.send((which, String::from_utf8_lossy(&bytes).into_owned()));
        });
    }
    drop(tx);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > PYTHON_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("watchdog: python3 still running after {PYTHON_TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut out = [String::new(), String::new()];
    for _ in 0..2 {
        let left = PYTHON_TIMEOUT.saturating_sub(start.elapsed()).max(Duration::from_secs(5));
        match rx.recv_timeout(left) {
            Ok((which, text)) => out[which] = text,
            Err(e) => panic!("watchdog: python3 exited ({status}) but its output stayed open ({e}); resource tracker?"),
        }
    }
    let [stdout, stderr] = out;
    Ok(PyRun { status, stdout, stderr })
}

/// Whether the tests can run: `python3` on `PATH`, 3.8 or later. Prints why
/// not otherwise.
fn python_available() -> bool {
    let probe = "import sys; print('%d %d' % sys.version_info[:2])";
    let run = match run_python(&["-c", probe]) {
        Ok(run) => run,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipping: python3 is not on PATH ({e})");
            return false;
        }
        Err(e) => panic!("running python3: {e}"),
    };
    assert!(run.status.success(), "python3 -c failed: {}", run.describe());
    let mut parts = run.stdout.split_whitespace().map(|p| p.parse::<u32>().expect("a version number"));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version < (3, 8) {
        eprintln!("skipping: python3 is {}.{}, multiprocessing.shared_memory needs 3.8", version.0, version.1);
        return false;
    }
    true
}

/// A scalar as the spec's integer (see [`SCRIPT`]).
fn spec_value(s: Scalar) -> String {
    match s {
        Scalar::Char(v) | Scalar::U8(v) => v.to_string(),
        Scalar::I8(v) => v.to_string(),
        Scalar::I16(v) => v.to_string(),
        Scalar::U16(v) => v.to_string(),
        Scalar::I32(v) => v.to_string(),
        Scalar::U32(v) => v.to_string(),
        Scalar::I64(v) => v.to_string(),
        Scalar::U64(v) => v.to_string(),
        Scalar::F32(v) => v.to_bits().to_string(),
        Scalar::F64(v) => v.to_bits().to_string(),
        Scalar::WChar(v) => u32::from(v).to_string(),
        other => panic!("a Scalar variant this test does not know: {other:?}"),
    }
}

/// One array for Python: what it must read, and what it writes.
struct Case {
    name: String,
    code: Typecode,
    lock: bool,
    values: Vec<Scalar>,
    writes: Vec<(usize, Scalar)>,
}

impl Case {
    fn new(tag: &str, code: Typecode, values: Vec<Scalar>, writes: Vec<(usize, Scalar)>) -> Case {
        Case { name: unique_name(tag), code, lock: true, values, writes }
    }

    fn json(&self) -> String {
        let list = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>().join(", ");
        format!(
            r#"{{"name": "{}", "code": "{}", "size": {}, "len": {}, "lock": {}, "expect": [{}], "write": [{}]}}"#,
            self.name,
            self.code.as_char(),
            self.code.size(),
            self.values.len(),
            self.lock,
            list(&mut self.values.iter().map(|s| spec_value(*s))),
            list(&mut self.writes.iter().map(|(i, s)| format!("[{i}, {}]", spec_value(*s)))),
        )
    }

    /// The elements once Python has written.
    fn after(&self) -> Vec<String> {
        let mut v = self.values.clone();
        for (i, s) in &self.writes {
            v[*i] = *s;
        }
        v.into_iter().map(spec_value).collect()
    }
}

fn spec(mode: &str, cases: &[&Case]) -> String {
    let arrays: Vec<String> = cases.iter().map(|c| c.json()).collect();
    format!(r#"{{"mode": "{mode}", "arrays": [{}]}}"#, arrays.join(", "))
}

fn run_script(spec: &str) -> PyRun {
    run_python(&["-c", SCRIPT, spec]).expect("python3 ran a moment ago")
}

#[test]
fn python_reads_and_writes_f64_and_i32_arrays() {
    const TAG: &str = "py-f64-i32";
    if !python_available() {
        return;
    }
    let doubles = [1.5, -0.0, f64::MAX, f64::MIN_POSITIVE, f64::NEG_INFINITY, f64::from_bits(0x7FF8_0000_0000_BEEF)];
    let ints = [i32::MIN, -1, 0, 7, i32::MAX];
    let dname = unique_name(TAG);
    let iname = unique_name(TAG);
    let darr = Array::<f64>::create(&dname, doubles.len()).unwrap();
    darr.copy_from_slice(&doubles).unwrap();
    let iarr = Array::<i32>::create(&iname, ints.len()).unwrap();
    for (i, v) in ints.iter().enumerate() {
        iarr.store(i, *v);
    }

    let dcase = Case {
        name: dname.clone(),
        code: Typecode::Double,
        lock: true,
        values: doubles.iter().map(|v| Scalar::F64(*v)).collect(),
        writes: vec![(1, Scalar::F64(42.25)), (3, Scalar::F64(-1e300))],
    };
    let icase = Case {
        name: iname.clone(),
        code: Typecode::Int,
        lock: true,
        values: ints.iter().map(|v| Scalar::I32(*v)).collect(),
        writes: vec![(0, Scalar::I32(123_456)), (4, Scalar::I32(-99))],
    };
    let run = run_script(&spec("careful", &[&dcase, &icase]));
    run.assert_clean();
    assert!(run.stdout.contains(&dname) && run.stdout.contains(&iname), "{}", run.describe());

    // What Python wrote, through the creator's handles.
    let d = darr.to_vec().unwrap();
    let mut want_d = doubles;
    want_d[1] = 42.25;
    want_d[3] = -1e300;
    assert_eq!(
        d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want_d.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(iarr.to_vec().unwrap(), [123_456, -1, 0, 7, -99]);

    // The names survived Python's exit: its resource tracker left them alone.
    assert!(shm_path(&dname).exists() && shm_path(&iname).exists());
    let reopened = Array::<f64>::open(&dname).expect("the f64 array's name vanished after Python exited");
    assert_eq!(reopened.load(1).to_bits(), 42.25f64.to_bits());
    let reopened_i = Array::<i32>::open(&iname).expect("the i32 array's name vanished after Python exited");
    assert_eq!(reopened_i.load(4), -99);
    // The lock still works (Python never touched it).
    drop(reopened_i.lock().unwrap());

    drop((darr, iarr, reopened, reopened_i));
    assert_no_leftovers(TAG);
}

#[test]
fn python_reads_and_writes_every_typecode() {
    const TAG: &str = "py-codes";
    if !python_available() {
        return;
    }
    let mut cases = vec![
        Case::new(
            TAG,
            Typecode::Char,
            vec![S::Char(b'h'), S::Char(b'i'), S::Char(0), S::Char(0xFF)],
            vec![(2, S::Char(b'!'))],
        ),
        Case::new(TAG, Typecode::SignedChar, vec![S::I8(i8::MIN), S::I8(-1), S::I8(i8::MAX)], vec![(1, S::I8(5))]),
        Case::new(TAG, Typecode::UnsignedChar, vec![S::U8(0), S::U8(u8::MAX)], vec![(0, S::U8(200))]),
        Case::new(TAG, Typecode::Short, vec![S::I16(i16::MIN), S::I16(i16::MAX)], vec![(1, S::I16(-300))]),
        Case::new(TAG, Typecode::UnsignedShort, vec![S::U16(u16::MAX), S::U16(1)], vec![(1, S::U16(60_000))]),
        Case::new(TAG, Typecode::Int, vec![S::I32(i32::MIN), S::I32(i32::MAX)], vec![(0, S::I32(-70_000))]),
        Case::new(TAG, Typecode::UnsignedInt, vec![S::U32(u32::MAX), S::U32(0)], vec![(1, S::U32(4_000_000_000))]),
        Case::new(TAG, Typecode::Long, vec![S::I64(i64::MIN), S::I64(-2)], vec![(1, S::I64(1 << 40))]),
        Case::new(TAG, Typecode::UnsignedLong, vec![S::U64(u64::MAX), S::U64(3)], vec![(1, S::U64(1 << 63))]),
        Case::new(TAG, Typecode::LongLong, vec![S::I64(i64::MAX), S::I64(i64::MIN)], vec![(0, S::I64(-(1 << 50)))]),
        Case::new(TAG, Typecode::UnsignedLongLong, vec![S::U64(0), S::U64(u64::MAX)], vec![(0, S::U64(u64::MAX - 1))]),
        Case::new(
            TAG,
            Typecode::Float,
            vec![S::F32(-0.0), S::F32(f32::MAX), S::F32(f32::from_bits(1)), S::F32(f32::INFINITY)],
            vec![(0, S::F32(0.1)), (3, S::F32(f32::MIN))],
        ),
        Case::new(
            TAG,
            Typecode::Double,
            vec![S::F64(0.1), S::F64(f64::MIN), S::F64(f64::INFINITY)],
            vec![(2, S::F64(-2.5e-310))],
        ),
        Case::new(
            TAG,
            Typecode::WChar,
            vec![S::WChar('a'), S::WChar('é'), S::WChar('😀'), S::WChar(char::MAX)],
            vec![(0, S::WChar('€')), (3, S::WChar('𝄞'))],
        ),
        // A zero-length array, and one without a lock.
        Case::new(TAG, Typecode::Double, vec![], vec![]),
    ];
    let mut unlocked = Case::new(TAG, Typecode::Int, vec![S::I32(1), S::I32(2)], vec![(1, S::I32(3))]);
    unlocked.lock = false;
    cases.push(unlocked);

    let arrays: Vec<DynArray> = cases
        .iter()
        .map(|c| {
            let d = ArrayBuilder::new().typecode(c.code).lock(c.lock).name(&c.name).dynamic(c.values.len()).unwrap();
            d.copy_from_slice(&c.values).unwrap();
            d
        })
        .collect();
    let refs: Vec<&Case> = cases.iter().collect();
    let run = run_script(&spec("careful", &refs));
    run.assert_clean();

    for (case, arr) in cases.iter().zip(&arrays) {
        let got: Vec<String> = arr.to_vec().unwrap().into_iter().map(spec_value).collect();
        assert_eq!(got, case.after(), "{}: what Python wrote", case.code);
        assert!(run.stdout.contains(&case.name), "{}: Python never reported it: {}", case.code, run.describe());
        // Still there by name, with the same typecode and length.
        let reopened = DynArray::open(&case.name).expect("the name vanished after Python exited");
        assert_eq!((reopened.typecode(), reopened.len()), (case.code, case.values.len()));
        assert_eq!(reopened.get_lock().is_some(), case.lock);
    }
    drop(arrays);
    assert_no_leftovers(TAG);
}

/// The hazard the module docs describe: attaching with a plain
/// `SharedMemory(name)` (tracked, before 3.13 always) lets Python's resource
/// tracker unlink the Rust creator's name when Python exits, with a "leaked
/// `shared_memory`" warning. Mappings stay valid; only the name is gone.
#[test]
fn without_the_workaround_the_resource_tracker_unlinks_the_name() {
    const TAG: &str = "py-hazard";
    if !python_available() {
        return;
    }
    let name = unique_name(TAG);
    let arr = Array::<i32>::create(&name, 2).unwrap();
    arr.store(0, 11);
    let case = Case {
        name: name.clone(),
        code: Typecode::Int,
        lock: true,
        values: vec![Scalar::I32(11), Scalar::I32(0)],
        writes: vec![(1, Scalar::I32(22))],
    };
    let run = run_script(&spec("default", &[&case]));
    assert!(run.status.success(), "{}", run.describe());
    assert!(run.stderr.contains("leaked shared_memory"), "no tracker warning: {}", run.describe());
    assert!(matches!(Array::<i32>::open(&name), Err(Error::NotFound { .. })), "the tracker did not unlink the name");
    // The creator's mapping is unaffected, and dropping it is harmless.
    assert_eq!(arr.to_vec().unwrap(), [11, 22]);
    drop(arr);
    assert_no_leftovers(TAG);
}
