//! The `open_array` fuzz harness: typecode parsing, and arbitrary array
//! segments opened as `DynArray`, every `Array<T>` and every `Value<T>`.
//!
//! The first input byte picks what the rest is (modulo 4):
//! - 0: text for `Typecode::from_str` and `Typecode::from_char`, which must
//!   accept exactly Python's fourteen codes;
//! - 1: a whole `/dev/shm` file;
//! - 2: an array segment with a valid header (magic, version, kind 9, ready)
//!   whose type fingerprint is the next 8 bytes and whose payload is the rest,
//!   with the payload length it really has;
//! - 3: the same with the next 8 bytes after the fingerprint as the header's
//!   payload length, whatever it says.
//!
//! Whatever opens is exercised: every element read, a few written and read
//! back, bulk copies, the lock with a 1 ms timeout, every typed view (which
//! must open exactly when the element type fits the typecode). Nothing may
//! crash, panic, read out of bounds (`AddressSanitizer` watches) or hang (SPEC §3).
//!
//! Shared by the cargo-fuzz target (`fuzz/fuzz_targets/open_array.rs`) and the
//! corpus replay test (`tests/fuzz_corpus.rs`).

use std::time::Duration;

use shmproc::segment::HEADER_LEN;
use shmproc::{Array, DATA_OFFSET, DynArray, Element, LockError, Scalar, Typecode, Value};

use crate::shm_file::ShmFile;

/// Every timed operation waits this long at most.
const TICK: Duration = Duration::from_millis(1);

/// Elements read and written per opened array at most (inputs may claim
/// millions; the bounds checks are what matter, not the count).
const TOUCH: usize = 64;

/// Python's typecodes.
const CODES: &str = "cbBhHiIlLqQfdu";

/// Runs one input (the fuzz target's entry point).
#[allow(dead_code, reason = "the replay test calls `exercise` to see what opened")]
pub(crate) fn run(data: &[u8]) {
    exercise(data);
}

/// Runs one input; returns what it opened as.
pub(crate) fn exercise(data: &[u8]) -> Vec<&'static str> {
    let Some((&mode, rest)) = data.split_first() else { return Vec::new() };
    match mode % 4 {
        0 => {
            typecode_text(rest);
            Vec::new()
        }
        1 => open_file(rest),
        2 => open_file(&forge(rest, false)),
        _ => open_file(&forge(rest, true)),
    }
}

/// `text` parses as a typecode exactly when it is one of Python's letters.
fn typecode_text(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let parsed = text.parse::<Typecode>();
    let single = text.chars().count() == 1 && CODES.contains(text.as_ref());
    assert_eq!(parsed.is_ok(), single, "{text:?} parsed as {parsed:?}");
    if let Ok(code) = parsed {
        assert_eq!(code.as_char().to_string(), text);
    }
    for c in text.chars().take(TOUCH) {
        match Typecode::from_char(c) {
            Ok(code) => assert!(CODES.contains(c) && code.as_char() == c && code.size() > 0, "{c:?}"),
            Err(e) => assert!(!CODES.contains(c) && e.to_string().contains("unknown typecode"), "{c:?}: {e}"),
        }
    }
}

/// An array segment file: a ready header naming kind 9, the fingerprint from
/// `rest[..8]`, and (if `claimed_len`) the payload length from `rest[8..16]`.
fn forge(rest: &[u8], claimed_len: bool) -> Vec<u8> {
    let word = |at: usize| {
        let mut b = [0u8; 8];
        let src = rest.get(at..).unwrap_or_default();
        let n = src.len().min(8);
        b[..n].copy_from_slice(&src[..n]);
        b
    };
    let fingerprint = word(0);
    let skip = if claimed_len { 16 } else { 8 };
    let payload = rest.get(skip..).unwrap_or_default();
    let payload_len = if claimed_len { word(8) } else { (payload.len() as u64).to_le_bytes() };
    let mut file = Vec::with_capacity(HEADER_LEN + payload.len());
    file.extend_from_slice(b"SHMPROC\0");
    file.extend_from_slice(&2u32.to_le_bytes()); // layout version
    file.extend_from_slice(&9u32.to_le_bytes()); // kind: array
    file.extend_from_slice(&fingerprint);
    file.extend_from_slice(&payload_len);
    file.extend_from_slice(&0u32.to_le_bytes()); // creator pid: none
    file.extend_from_slice(&1u32.to_le_bytes()); // init state: ready
    file.resize(HEADER_LEN, 0);
    file.extend_from_slice(payload);
    file
}

fn open_file(data: &[u8]) -> Vec<&'static str> {
    let file = ShmFile::write(data);
    let mut opened = Vec::new();
    if let Ok(array) = DynArray::open(&file.name) {
        opened.push("DynArray");
        dynamic(&array, data);
        typed_views(&array, &file.name);
    }
    drop(file);
    opened
}

/// The elements must lie inside the file; every access stays in bounds.
fn dynamic(array: &DynArray, data: &[u8]) {
    let code = array.typecode();
    let len = array.len();
    let end = len.checked_mul(code.size()).and_then(|n| n.checked_add(DATA_OFFSET));
    assert!(end.is_some_and(|e| e <= data.len()), "{len} elements of {code} in a {}-byte file", data.len());
    let _ = (array.is_empty(), array.name(), format!("{array:?}"));
    for i in 0..len.min(TOUCH) {
        let v = array.load(i);
        assert!(v.fits(code), "element {i} read as {v:?} from an array of {code}");
        array.store(i, v).expect("a value read back fits");
    }
    assert!(array.get(len).is_none(), "an element past the end");
    if code != Typecode::Double {
        // Refused before the index is even looked at (so also on 0 elements).
        assert!(array.store(0, Scalar::F64(1.0)).is_err(), "an f64 stored into an array of {code}");
    }
    // Bulk copies take the lock without a timeout, and a garbage lock word may
    // name a live process: take it with a timeout first (it is recursive, so
    // the copies then need no waiting).
    let guard = match array.get_lock().map(|l| (l.is_locked(), l.depth(), l.lock_timeout(TICK))) {
        None => None,
        Some((_, _, Ok(g) | Err(LockError::OwnerDied(g)))) => Some(Some(g)),
        Some((_, _, Err(LockError::Failed(_)))) => return,
    };
    if len <= TOUCH * 16 {
        let all = array.to_vec().expect("a lock we hold cannot fail");
        assert_eq!(all.len(), len);
        array.copy_from_slice(&all).expect("values read back fit");
    }
    drop(guard);
}

/// Every typed view opens exactly when the element type fits the typecode,
/// and a `Value` only on one element.
fn typed_views(array: &DynArray, name: &str) {
    fn check<T: Element>(array: &DynArray, name: &str) {
        let fits = T::accepts(array.typecode());
        let typed = array.typed::<T>();
        assert_eq!(typed.is_ok(), fits, "{} on {}", std::any::type_name::<T>(), array.typecode());
        if let Ok(a) = typed {
            for i in 0..a.len().min(4) {
                a.store(i, a.load(i));
            }
            assert!(a.get(a.len()).is_none());
        }
        assert_eq!(Array::<T>::open(name).is_ok(), fits);
        let value = Value::<T>::open(name);
        assert_eq!(value.is_ok(), fits && array.len() == 1);
        if let Ok(v) = value {
            v.set(v.get());
            let _ = format!("{v:?}");
        }
    }
    check::<i8>(array, name);
    check::<u8>(array, name);
    check::<i16>(array, name);
    check::<u16>(array, name);
    check::<i32>(array, name);
    check::<u32>(array, name);
    check::<i64>(array, name);
    check::<u64>(array, name);
    check::<f32>(array, name);
    check::<f64>(array, name);
    check::<char>(array, name);
}
