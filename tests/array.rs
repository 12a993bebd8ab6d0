//! `Array`, `Value` and `DynArray` (Python's `multiprocessing.Array`, `Value`
//! and their typecodes).
//!
//! - every typecode round-trips its extremes through typed arrays, the bytes
//!   of the segment file, and `DynArray` opened by name;
//! - atomic (`fetch_add`, `fetch_sub`, `compare_exchange`) and locked updates
//!   from several processes give exact totals under every start method;
//! - `c` arrays behave as ctypes `c_char` arrays (`value`, `raw`);
//! - handles, and the array's lock on its own, travel to children;
//! - garbage in the segment is an error or an interpretation, never a panic
//!   or a hang.
//!
//! Every cross-process wait is bounded (`join_ok`, `join_all_ok`, `in_child`
//! and timed event waits use the watchdog). Named segments come from
//! `unique_name`, and every test that makes them checks `/dev/shm` for
//! leftovers once its handles are dropped.

// Process targets are `fn(A) -> R`: they take their arguments by value.
#![allow(clippy::needless_pass_by_value)]
// Float elements are compared exactly: they are copied bit for bit, and the
// sums are of small integers, exact in an f64.
#![allow(clippy::float_cmp)]

mod common;

use std::ffi::{c_long, c_ulong};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use common::{
    METHODS, Proc, WATCHDOG, XorShift, assert_no_leftovers, fork_child, in_child, join_all_ok, join_ok, kill_and_reap,
    read_shm, scribble, start, start_fn, unique_name,
};
use shmproc::{
    Array, ArrayBuilder, DATA_OFFSET, DynArray, Element, Error, Event, LockError, Process, RLock, Scalar,
    StartMethod::{self, Fork, Spawn},
    Typecode, Value,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// File offsets of the fields this file scribbles on (see `src/array/mod.rs`).
const KIND_AT: u64 = 12;
const TYPE_FP_AT: u64 = 16;
const PAYLOAD_LEN_AT: u64 = 24;
const INIT_STATE_AT: u64 = 36;
const LOCK_WORD_AT: u64 = 64;
const LOCK_STAMP_AT: u64 = 72;
const FLAGS_AT: u64 = 88;

/// An element type under test, compared bit for bit (NaN payloads included)
/// through its little-endian bytes: what the segment file holds.
trait Probe: Element {
    fn le(self) -> Vec<u8>;
}

macro_rules! probe_numbers {
    ($($t:ty),*) => {$(
        impl Probe for $t {
            fn le(self) -> Vec<u8> {
                self.to_le_bytes().to_vec()
            }
        }
    )*};
}
probe_numbers!(i8, u8, i16, u16, i32, u32, i64, u64, f32, f64);

impl Probe for char {
    fn le(self) -> Vec<u8> {
        u32::from(self).to_le_bytes().to_vec()
    }
}

/// A scalar's little-endian bytes.
fn scalar_le(s: Scalar) -> Vec<u8> {
    match s {
        Scalar::Char(v) | Scalar::U8(v) => v.le(),
        Scalar::I8(v) => v.le(),
        Scalar::I16(v) => v.le(),
        Scalar::U16(v) => v.le(),
        Scalar::I32(v) => v.le(),
        Scalar::U32(v) => v.le(),
        Scalar::I64(v) => v.le(),
        Scalar::U64(v) => v.le(),
        Scalar::F32(v) => v.le(),
        Scalar::F64(v) => v.le(),
        Scalar::WChar(v) => v.le(),
        other => panic!("a Scalar variant this test does not know: {other:?}"),
    }
}

fn bits_of<T: Probe>(values: &[T]) -> Vec<Vec<u8>> {
    values.iter().map(|v| v.le()).collect()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Uses a value (an element read only for its panic).
fn discard<T>(value: T) {
    std::hint::black_box(value);
}

/// Runs `f`, which must panic, and returns its panic message.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "<a panic payload that is no string>".to_owned()
    }
}

/// Asserts that `e` is `Error::Mismatch` of `field` and that its message
/// contains every one of `needles`.
fn assert_mismatch(e: &Error, field: &str, needles: &[&str]) {
    assert!(matches!(e, Error::Mismatch { field: f, .. } if *f == field), "expected a {field} mismatch, got {e:?}");
    let msg = e.to_string();
    for needle in needles {
        assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
    }
}

/// Asserts that `r` (an open of a scribbled segment) is `Mismatch` or
/// `Corrupt`; returns the error.
fn assert_refused<T: std::fmt::Debug>(what: &str, r: shmproc::Result<T>) -> Error {
    match r {
        Err(e @ (Error::Mismatch { .. } | Error::Corrupt { .. })) => e,
        other => panic!("{what}: expected Mismatch or Corrupt, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Typecodes
// ---------------------------------------------------------------------------

/// Python's table: letter, code, size here, ctypes name.
const TABLE: [(char, Typecode, usize, &str); 14] = [
    ('c', Typecode::Char, 1, "c_char"),
    ('b', Typecode::SignedChar, 1, "c_byte"),
    ('B', Typecode::UnsignedChar, 1, "c_ubyte"),
    ('h', Typecode::Short, 2, "c_short"),
    ('H', Typecode::UnsignedShort, 2, "c_ushort"),
    ('i', Typecode::Int, 4, "c_int"),
    ('I', Typecode::UnsignedInt, 4, "c_uint"),
    ('l', Typecode::Long, size_of::<c_long>(), "c_long"),
    ('L', Typecode::UnsignedLong, size_of::<c_ulong>(), "c_ulong"),
    ('q', Typecode::LongLong, 8, "c_longlong"),
    ('Q', Typecode::UnsignedLongLong, 8, "c_ulonglong"),
    ('f', Typecode::Float, 4, "c_float"),
    ('d', Typecode::Double, 8, "c_double"),
    ('u', Typecode::WChar, 4, "c_wchar"),
];

#[test]
fn typecodes_parse_from_their_letters() {
    assert_eq!(Typecode::ALL.len(), TABLE.len());
    for (i, (letter, code, size, c_type)) in TABLE.into_iter().enumerate() {
        assert_eq!(Typecode::ALL[i], code, "Typecode::ALL is in Python's order");
        assert_eq!(Typecode::from_char(letter).unwrap(), code);
        assert_eq!(letter.to_string().parse::<Typecode>().unwrap(), code);
        assert_eq!(Typecode::try_from(letter).unwrap(), code);
        assert_eq!(code.as_char(), letter);
        assert_eq!(code.size(), size, "{code}");
        assert_eq!(code.c_type(), c_type);
        let shown = code.to_string();
        assert!(shown.contains(&format!("'{letter}'")) && shown.contains(c_type), "{shown}");
    }
}

#[test]
fn unknown_typecodes_are_a_clear_error() {
    for bad in ['z', 'x', 'C', 'U', 'D', 'F', 'Z', '?', ' ', '\0', 'é', '€'] {
        for e in [Typecode::from_char(bad).unwrap_err(), Typecode::try_from(bad).unwrap_err()] {
            assert!(matches!(&e, Error::UnknownTypecode { found } if *found == bad.to_string()), "{e:?}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("{:?}", bad.to_string())), "{msg}");
            assert!(msg.contains("c b B h H i I l L q Q f d u"), "{msg} does not list the valid codes");
        }
    }
    for bad in ["", "ii", "dd", " i", "i ", "int", "double", "zz"] {
        let e = bad.parse::<Typecode>().unwrap_err();
        assert!(matches!(&e, Error::UnknownTypecode { found } if found == bad), "{bad:?}: {e:?}");
        assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
    }
}

/// Every path an element of `code` can take, with `values` (at least two).
fn round_trip<T: Probe>(tag: &str, code: Typecode, values: &[T]) {
    let n = values.len();
    let size = code.size();
    assert!(n >= 2);
    assert_eq!(size, size_of::<T>(), "{code}");
    let want = bits_of(values);
    let rev: Vec<T> = values.iter().rev().copied().collect();
    let want_rev = bits_of(&rev);

    // Anonymous, zeroed: store/load/get each element, bulk copies, swap.
    let arr = ArrayBuilder::new().typecode(code).zeroed::<T>(n).unwrap();
    assert_eq!((arr.typecode(), arr.len(), arr.is_empty(), arr.name()), (code, n, false, None));
    assert!(arr.get_lock().is_some());
    assert!(format!("{arr:?}").contains(&format!("'{}'", code.as_char())), "{arr:?}");
    for i in 0..n {
        assert_eq!(arr.load(i).le(), vec![0; size], "{code}: not zeroed");
    }
    for (i, &v) in values.iter().enumerate() {
        arr.store(i, v);
        assert_eq!(arr.load(i).le(), v.le(), "{code} [{i}]: stored {v:?}, loaded {:?}", arr.load(i));
        assert_eq!(arr.get(i).map(Probe::le), Some(v.le()), "{code} [{i}]");
    }
    assert!(arr.get(n).is_none());
    assert_eq!(bits_of(&arr.to_vec().unwrap()), want, "{code}: to_vec");
    arr.copy_from_slice(&rev).unwrap();
    assert_eq!(bits_of(&arr.to_vec().unwrap()), want_rev, "{code}: copy_from_slice");
    {
        let g = arr.lock().unwrap();
        assert_eq!(bits_of(&g.to_vec()), want_rev);
        g.copy_from_slice(values);
        for (i, v) in values.iter().enumerate() {
            assert_eq!(g.load(i).le(), v.le(), "{code} [{i}] under the lock");
            assert_eq!(g.get(i).map(Probe::le), Some(v.le()));
        }
        assert!(g.get(n).is_none());
        assert_eq!((g.len(), g.is_empty()), (n, false));
    }
    assert_eq!(arr.swap(0, values[n - 1]).le(), values[0].le(), "{code}: swap returns the old value");
    assert_eq!(arr.load(0).le(), values[n - 1].le());

    // The same through a Value.
    let v = ArrayBuilder::new().typecode(code).value(values[1]).unwrap();
    assert_eq!((v.typecode(), v.get().le()), (code, values[1].le()));
    v.set(values[0]);
    assert_eq!(v.swap(values[1]).le(), values[0].le());
    assert_eq!(v.as_array().to_vec().unwrap().len(), 1);

    // Named, from a slice: the file holds the documented layout.
    let name = unique_name(tag);
    let named = ArrayBuilder::new().typecode(code).name(&name).from_slice(values).unwrap();
    assert_eq!(named.name(), Some(name.as_str()));
    let file = read_shm(&name);
    assert_eq!(file.len(), DATA_OFFSET + n * size, "{code}: file length");
    assert_eq!(&file[..8], b"SHMPROC\0");
    assert_eq!(u32_at(&file, 8), 2, "layout version");
    assert_eq!(u32_at(&file, KIND_AT as usize), 9, "kind (array)");
    assert_eq!(file[TYPE_FP_AT as usize], code.as_char() as u8, "fingerprint byte 0: the letter");
    assert_eq!(usize::from(file[TYPE_FP_AT as usize + 1]), size, "fingerprint byte 1: the size");
    assert_eq!(&file[TYPE_FP_AT as usize + 2..PAYLOAD_LEN_AT as usize], &[0; 6]);
    assert_eq!(u64_at(&file, PAYLOAD_LEN_AT as usize), (64 + n * size) as u64, "payload length");
    assert_eq!(u32_at(&file, INIT_STATE_AT as usize), 1, "init state");
    assert_eq!(u32_at(&file, FLAGS_AT as usize) & 1, 1, "flags: has a lock");
    for (i, v) in values.iter().enumerate() {
        assert_eq!(&file[DATA_OFFSET + i * size..][..size], v.le().as_slice(), "{code}: element {i} in the file");
    }

    // Opened by name as the same type.
    let opened = Array::<T>::open(&name).unwrap();
    assert_eq!((opened.typecode(), opened.len(), opened.name()), (code, n, Some(name.as_str())));
    assert_eq!(bits_of(&opened.to_vec().unwrap()), want);

    // Opened by name as a DynArray: Scalars with the same bits.
    let d = DynArray::open(&name).unwrap();
    assert_eq!((d.typecode(), d.len(), d.is_empty(), d.name()), (code, n, false, Some(name.as_str())));
    assert!(d.get_lock().is_some());
    for (i, v) in values.iter().enumerate() {
        let s = d.load(i);
        assert_eq!(scalar_le(s), v.le(), "{code} [{i}]: {s:?}");
        assert!(s.fits(code), "{s:?} does not fit {code}");
        assert_eq!(matches!(s, Scalar::Char(_)), code == Typecode::Char, "{s:?}");
        assert_eq!(d.get(i).map(scalar_le), Some(v.le()));
    }
    assert!(d.get(n).is_none());
    assert_eq!(d.to_vec().unwrap().into_iter().map(scalar_le).collect::<Vec<_>>(), want);
    for (i, &v) in rev.iter().enumerate() {
        d.store(i, v).unwrap();
    }
    assert_eq!(bits_of(&named.to_vec().unwrap()), want_rev, "{code}: DynArray::store");
    let scalars: Vec<Scalar> = values.iter().map(|&v| Scalar::from(v)).collect();
    d.copy_from_slice(&scalars).unwrap();
    assert_eq!(bits_of(&opened.to_vec().unwrap()), want, "{code}: DynArray::copy_from_slice");
    assert_eq!(bits_of(&d.typed::<T>().unwrap().to_vec().unwrap()), want);
    assert_eq!(DynArray::from(opened.clone()).typecode(), code);
    assert_eq!(bits_of(&Array::<T>::try_from(d.clone()).unwrap().to_vec().unwrap()), want);

    // A value of another class or size is refused and writes nothing.
    let wrong = if size == 4 { Scalar::F64(1.0) } else { Scalar::F32(1.0) };
    assert!(!wrong.fits(code));
    assert_mismatch(&d.store(0, wrong).unwrap_err(), "element type", &[&format!("'{}'", code.as_char())]);
    let mut mixed: Vec<Scalar> = rev.iter().map(|&v| Scalar::from(v)).collect();
    mixed[n - 1] = wrong;
    assert!(matches!(d.copy_from_slice(&mixed), Err(Error::Mismatch { .. })));
    assert_eq!(bits_of(&named.to_vec().unwrap()), want, "{code}: a refused copy wrote something");

    drop((arr, v, named, opened, d));
}

#[test]
fn every_typecode_round_trips() {
    const TAG: &str = "array-codes";
    round_trip::<u8>(TAG, Typecode::Char, &[0, 1, b'A', 0x7F, 0x80, 0xFF]);
    round_trip::<i8>(TAG, Typecode::SignedChar, &[i8::MIN, -1, 0, 1, i8::MAX]);
    round_trip::<u8>(TAG, Typecode::UnsignedChar, &[0, 1, 0x80, u8::MAX]);
    round_trip::<i16>(TAG, Typecode::Short, &[i16::MIN, -2, 0, 3, i16::MAX]);
    round_trip::<u16>(TAG, Typecode::UnsignedShort, &[0, 1, 0x8000, u16::MAX]);
    round_trip::<i32>(TAG, Typecode::Int, &[i32::MIN, -1, 0, 1, i32::MAX]);
    round_trip::<u32>(TAG, Typecode::UnsignedInt, &[0, 1, 0x8000_0000, u32::MAX]);
    round_trip::<c_long>(TAG, Typecode::Long, &[c_long::MIN, -1, 0, 1, c_long::MAX]);
    round_trip::<c_ulong>(TAG, Typecode::UnsignedLong, &[0, 1, 1 << (c_ulong::BITS - 1), c_ulong::MAX]);
    round_trip::<i64>(TAG, Typecode::LongLong, &[i64::MIN, -1, 0, 1, i64::MAX]);
    round_trip::<u64>(TAG, Typecode::UnsignedLongLong, &[0, 1, 1 << 63, u64::MAX]);
    round_trip::<f32>(
        TAG,
        Typecode::Float,
        &[
            f32::MIN,
            f32::MAX,
            -0.0,
            f32::NAN,
            f32::from_bits(0x7FC0_1234), // quiet NaN with a payload
            f32::from_bits(0xFFC0_0001), // negative NaN
            f32::from_bits(0x7F80_0001), // signalling NaN
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            f32::from_bits(1), // the smallest subnormal
            -1.5,
        ],
    );
    round_trip::<f64>(
        TAG,
        Typecode::Double,
        &[
            f64::MIN,
            f64::MAX,
            -0.0,
            f64::NAN,
            f64::from_bits(0x7FF8_0000_DEAD_BEEF),
            f64::from_bits(0xFFF8_0000_0000_0001),
            f64::from_bits(0x7FF0_0000_0000_0001),
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::from_bits(1),
            -1.5,
        ],
    );
    round_trip::<char>(TAG, Typecode::WChar, &['\0', 'a', 'é', '€', '𝄞', '😀', char::MAX]);
    assert_no_leftovers(TAG);
}

#[test]
fn default_typecodes_and_the_types_each_code_holds() {
    assert_eq!(Array::<i8>::new(1).unwrap().typecode(), Typecode::SignedChar);
    assert_eq!(Array::<u8>::new(1).unwrap().typecode(), Typecode::UnsignedChar);
    assert_eq!(Array::<i16>::new(1).unwrap().typecode(), Typecode::Short);
    assert_eq!(Array::<u16>::new(1).unwrap().typecode(), Typecode::UnsignedShort);
    assert_eq!(Array::<i32>::new(1).unwrap().typecode(), Typecode::Int);
    assert_eq!(Array::<u32>::new(1).unwrap().typecode(), Typecode::UnsignedInt);
    assert_eq!(Array::<i64>::new(1).unwrap().typecode(), Typecode::LongLong);
    assert_eq!(Array::<u64>::new(1).unwrap().typecode(), Typecode::UnsignedLongLong);
    assert_eq!(Array::<f32>::new(1).unwrap().typecode(), Typecode::Float);
    assert_eq!(Array::<f64>::new(1).unwrap().typecode(), Typecode::Double);
    assert_eq!(Array::<char>::new(1).unwrap().typecode(), Typecode::WChar);
    // Other codes of the same class and size.
    assert!(ArrayBuilder::new().typecode(Typecode::Char).zeroed::<u8>(1).is_ok());
    assert!(ArrayBuilder::new().typecode(Typecode::Long).zeroed::<i64>(1).is_ok());
    assert!(ArrayBuilder::new().typecode(Typecode::UnsignedLong).zeroed::<u64>(1).is_ok());
    // Scalars: their default codes, and which codes they fit.
    assert_eq!(Scalar::from(7i32).typecode(), Typecode::Int);
    assert_eq!(Scalar::from('x').typecode(), Typecode::WChar);
    assert!(Scalar::U8(1).fits(Typecode::Char) && Scalar::Char(1).fits(Typecode::UnsignedChar));
    assert!(Scalar::I64(1).fits(Typecode::Long) && Scalar::U64(1).fits(Typecode::UnsignedLong));
    assert!(!Scalar::I8(1).fits(Typecode::Char) && !Scalar::U32(1).fits(Typecode::WChar));
    assert!(!Scalar::I32(1).fits(Typecode::Float) && !Scalar::F32(1.0).fits(Typecode::Int));
    assert_eq!(Scalar::WChar('A').as_f64(), 65.0);
    assert_eq!(Scalar::I16(-3).as_f64(), -3.0);
}

#[test]
fn wchar_bits_that_are_no_char_read_as_the_replacement_character() {
    let name = unique_name("array-wchar");
    let arr = Array::<char>::create(&name, 3).unwrap();
    arr.store(2, 'z');
    // A peer (Python, say) writes a surrogate and a value above U+10FFFF.
    scribble(&name, DATA_OFFSET as u64, &0xD800u32.to_le_bytes());
    scribble(&name, DATA_OFFSET as u64 + 4, &0x0011_0000u32.to_le_bytes());
    assert_eq!(arr.to_vec().unwrap(), [char::REPLACEMENT_CHARACTER, char::REPLACEMENT_CHARACTER, 'z']);
    let d = DynArray::open(&name).unwrap();
    assert_eq!(d.load(0), Scalar::WChar(char::REPLACEMENT_CHARACTER));
    drop((arr, d));
    assert_no_leftovers("array-wchar");
}

#[test]
fn zero_length_arrays() {
    let arr = Array::<i32>::new(0).unwrap();
    assert!(arr.is_empty());
    assert_eq!(arr.to_vec().unwrap(), Vec::<i32>::new());
    assert!(arr.get(0).is_none());
    arr.copy_from_slice(&[]).unwrap();
    let name = unique_name("array-empty");
    let named = DynArray::create(&name, Typecode::Double, 0).unwrap();
    let opened = DynArray::open(&name).unwrap();
    assert_eq!((opened.len(), opened.is_empty(), opened.typecode()), (0, true, Typecode::Double));
    assert!(opened.to_vec().unwrap().is_empty());
    // A Value is exactly one element.
    assert_mismatch(&Value::<f64>::open(&name).unwrap_err(), "array length", &["1 element", "0 elements"]);
    drop((named, opened));
    assert_no_leftovers("array-empty");
}

// ---------------------------------------------------------------------------
// Exact totals from several processes
// ---------------------------------------------------------------------------

const PROCS: usize = 4;
const ADDS: i64 = 100_000;

/// Adds 1 to element 0 and subtracts 1 from element 1, `n` times each.
fn add_and_sub((arr, n): (Array<i64>, i64)) -> usize {
    for _ in 0..n {
        arr.fetch_add(0, 1);
        arr.fetch_sub(1, 1);
    }
    arr.len()
}

#[test]
fn fetch_add_and_fetch_sub_from_processes_are_exact() {
    for m in METHODS {
        let arr = Array::<i64>::from_slice(&[0, 0, 7]).unwrap();
        let mut procs: Vec<Proc<usize>> = (0..PROCS).map(|_| start_fn(m, add_and_sub, (arr.clone(), ADDS))).collect();
        assert_eq!(join_all_ok(&mut procs), vec![3; PROCS], "{m:?}: the child's array length");
        let total = PROCS as i64 * ADDS;
        assert_eq!(arr.to_vec().unwrap(), [total, -total, 7], "{m:?}");
    }
}

#[test]
fn fetch_add_from_forked_closures_is_exact_anonymous_and_by_name() {
    let name = unique_name("array-fetch-named");
    let named = Array::<u32>::create(&name, 1).unwrap();
    let anon = Array::<u32>::new(1).unwrap();
    let mut procs: Vec<Proc<()>> = (0..PROCS)
        .map(|_| {
            let (anon, name) = (anon.clone(), name.clone());
            start(Fork, move || {
                let named = Array::<u32>::open(&name).unwrap();
                for _ in 0..ADDS {
                    anon.fetch_add(0, 3);
                    named.fetch_add(0, 1);
                }
            })
        })
        .collect();
    join_all_ok(&mut procs);
    assert_eq!(anon.load(0), 3 * PROCS as u32 * ADDS as u32);
    assert_eq!(named.load(0), PROCS as u32 * ADDS as u32);
    drop(named);
    assert_no_leftovers("array-fetch-named");
}

/// Adds 1 to each of four adjacent one-byte and two-byte elements, `n` times.
fn small_adds((bytes, shorts, n): (Array<u8>, Array<i16>, u32)) {
    for _ in 0..n {
        for i in 0..4 {
            bytes.fetch_add(i, 1);
            shorts.fetch_sub(i, 1);
        }
    }
}

#[test]
fn sub_word_elements_wrap_and_never_disturb_their_neighbours() {
    // Wrapping, in one process.
    let b = Array::<u8>::from_slice(&[255, 0]).unwrap();
    assert_eq!(b.fetch_add(0, 1), 255);
    assert_eq!(b.fetch_sub(1, 1), 0);
    assert_eq!(b.to_vec().unwrap(), [0, 255]);
    let s = Array::<i8>::from_slice(&[i8::MIN]).unwrap();
    assert_eq!(s.fetch_sub(0, 1), i8::MIN);
    assert_eq!(s.load(0), i8::MAX);
    // Across processes: adjacent elements share a word; each stays exact.
    let n = 10_000u32;
    let bytes = Array::<u8>::new(4).unwrap();
    let shorts = Array::<i16>::new(4).unwrap();
    let mut procs: Vec<Proc<()>> =
        (0..PROCS).map(|_| start_fn(Spawn, small_adds, (bytes.clone(), shorts.clone(), n))).collect();
    join_all_ok(&mut procs);
    let total = PROCS as u32 * n;
    assert_eq!(bytes.to_vec().unwrap(), [(total % 256) as u8; 4]);
    assert_eq!(shorts.to_vec().unwrap(), [(total as i32).wrapping_neg() as i16; 4]);
}

const LOCKED: u32 = 2000;
const LOCK_PROCS: usize = 3;

/// Python's `with arr.get_lock(): arr[0] += 1; arr[1] += 2`, `n` times: plain
/// read-then-write pairs that only the lock makes exact.
fn locked_increments((arr, n): (Array<i64>, u32)) {
    for _ in 0..n {
        let g = arr.lock().expect("no lock holder dies in this test");
        let v = g.load(0);
        std::hint::black_box(v);
        g.store(0, v + 1);
        g.store(1, g.load(1) + 2);
    }
}

#[test]
fn locked_increments_from_processes_are_exact() {
    for m in METHODS {
        let arr = Array::<i64>::new(2).unwrap();
        let mut procs: Vec<Proc<()>> =
            (0..LOCK_PROCS).map(|_| start_fn(m, locked_increments, (arr.clone(), LOCKED))).collect();
        // The parent competes through its own handle.
        locked_increments((arr.clone(), LOCKED));
        join_all_ok(&mut procs);
        let total = (LOCK_PROCS as i64 + 1) * i64::from(LOCKED);
        assert_eq!(arr.to_vec().unwrap(), [total, 2 * total], "{m:?}");
        assert!(!arr.get_lock().unwrap().is_locked());
    }
}

/// Python's `with v.get_lock(): v.value += 1`, `n` times.
fn value_increments((v, n): (Value<f64>, u32)) {
    for _ in 0..n {
        let g = v.lock().expect("no lock holder dies in this test");
        g.set(g.get() + 1.0);
    }
}

#[test]
fn locked_value_increments_from_processes_are_exact() {
    for m in METHODS {
        let v = Value::new(0.5f64).unwrap();
        let mut procs: Vec<Proc<()>> =
            (0..LOCK_PROCS).map(|_| start_fn(m, value_increments, (v.clone(), LOCKED))).collect();
        join_all_ok(&mut procs);
        assert_eq!(v.get(), 0.5 + f64::from(LOCK_PROCS as u32 * LOCKED), "{m:?}");
    }
    // By name, from forked closures.
    let name = unique_name("array-value-named");
    let v = Value::create(&name, 0.0f64).unwrap();
    assert_eq!(v.name(), Some(name.as_str()));
    let mut procs: Vec<Proc<()>> = (0..LOCK_PROCS)
        .map(|_| {
            let name = name.clone();
            start(Fork, move || value_increments((Value::open(&name).unwrap(), LOCKED)))
        })
        .collect();
    join_all_ok(&mut procs);
    assert_eq!(v.get(), f64::from(LOCK_PROCS as u32 * LOCKED));
    drop(v);
    assert_no_leftovers("array-value-named");
}

// ---------------------------------------------------------------------------
// compare_exchange, swap, get, and out-of-range indices
// ---------------------------------------------------------------------------

#[test]
fn compare_exchange_and_swap_semantics() {
    let arr = Array::<i32>::from_slice(&[5, -1]).unwrap();
    assert_eq!(arr.compare_exchange(0, 5, 6), Ok(5));
    assert_eq!(arr.load(0), 6);
    assert_eq!(arr.compare_exchange(0, 5, 7), Err(6), "a failed exchange reports the actual value");
    assert_eq!(arr.load(0), 6, "a failed exchange writes nothing");
    assert_eq!(arr.compare_exchange(1, -1, i32::MIN), Ok(-1));
    assert_eq!(arr.swap(1, 9), i32::MIN);
    assert_eq!(arr.to_vec().unwrap(), [6, 9]);

    // Sign and width: a negative i8 compares by its bits, not widened.
    let small = Array::<i8>::from_slice(&[-1]).unwrap();
    assert_eq!(small.compare_exchange(0, -1, -128), Ok(-1));
    assert_eq!(small.compare_exchange(0, -1, 0), Err(-128));
    let wide = Array::<u64>::from_slice(&[u64::MAX]).unwrap();
    assert_eq!(wide.compare_exchange(0, u64::MAX, 1 << 63), Ok(u64::MAX));
    assert_eq!(wide.fetch_add(0, 1 << 63), 1 << 63);
    assert_eq!(wide.load(0), 0, "wrapping add");

    let v = Value::new(10u16).unwrap();
    assert_eq!(v.compare_exchange(10, 11), Ok(10));
    assert_eq!(v.compare_exchange(10, 12), Err(11));
    assert_eq!((v.fetch_add(4), v.fetch_sub(5), v.get()), (11, 15, 10));
    assert_eq!(v.swap(3), 10);
    assert_eq!(v.get(), 3);
    assert!(format!("{v:?}").contains('3'), "{v:?}");
}

/// Claims the value with `id` if it is still 0.
fn claim((v, id): (Value<i32>, i32)) -> bool {
    v.compare_exchange(0, id).is_ok()
}

/// Increments element 0 `n` times with a compare-exchange loop.
fn cas_increments((arr, n): (Array<u64>, u32)) {
    for _ in 0..n {
        let mut current = arr.load(0);
        while let Err(actual) = arr.compare_exchange(0, current, current + 1) {
            current = actual;
        }
    }
}

#[test]
fn compare_exchange_from_processes() {
    for m in [Fork, Spawn] {
        let v = Value::new(0i32).unwrap();
        let mut procs: Vec<Proc<bool>> = (1..=PROCS as i32).map(|id| start_fn(m, claim, (v.clone(), id))).collect();
        let won = join_all_ok(&mut procs);
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{m:?}: exactly one claim wins: {won:?}");
        let winner = won.iter().position(|w| *w).unwrap() as i32 + 1;
        assert_eq!(v.get(), winner, "{m:?}");

        let arr = Array::<u64>::new(1).unwrap();
        let mut procs: Vec<Proc<()>> = (0..PROCS).map(|_| start_fn(m, cas_increments, (arr.clone(), 10_000))).collect();
        join_all_ok(&mut procs);
        assert_eq!(arr.load(0), PROCS as u64 * 10_000, "{m:?}");
    }
}

#[test]
#[should_panic(expected = "index out of bounds: the len is 4 but the index is 4")]
fn load_out_of_range_panics_like_a_slice() {
    let arr = Array::<i32>::from_slice(&[1, 2, 3, 4]).unwrap();
    discard(arr.load(4));
}

#[test]
fn every_indexed_access_out_of_range_panics_like_a_slice() {
    let arr = Array::<i32>::from_slice(&[1, 2, 3, 4]).unwrap();
    let at4 = "index out of bounds: the len is 4 but the index is 4";
    let cases: [(&str, &dyn Fn()); 6] = [
        ("load", &|| discard(arr.load(4))),
        ("store", &|| arr.store(4, 0)),
        ("swap", &|| discard(arr.swap(4, 0))),
        ("fetch_add", &|| discard(arr.fetch_add(4, 1))),
        ("fetch_sub", &|| discard(arr.fetch_sub(4, 1))),
        ("compare_exchange", &|| discard(arr.compare_exchange(4, 0, 1))),
    ];
    for (what, f) in cases {
        assert_eq!(panic_message(f), at4, "{what}");
    }
    let huge = panic_message(|| discard(arr.load(usize::MAX)));
    assert_eq!(huge, format!("index out of bounds: the len is 4 but the index is {}", usize::MAX));

    // Under the lock: the panic releases it.
    assert_eq!(panic_message(|| discard(arr.lock().unwrap().load(4))), at4);
    assert_eq!(panic_message(|| arr.lock().unwrap().store(7, 0)), at4.replace("index is 4", "index is 7"));
    assert!(!arr.get_lock().unwrap().is_locked(), "a panic under the guard left the lock held");

    // Bulk copies of the wrong length panic as slice::copy_from_slice, and
    // release the lock they took.
    let wrong_len = "source slice length (3) does not match the array length (4)";
    for msg in [
        panic_message(|| drop(arr.copy_from_slice(&[0, 0, 0]))),
        panic_message(|| arr.lock().unwrap().copy_from_slice(&[0, 0, 0])),
    ] {
        assert!(msg.contains(wrong_len), "{msg}");
    }
    assert!(!arr.get_lock().unwrap().is_locked(), "a panicking copy left the lock held");

    let d = DynArray::from(arr.clone());
    assert_eq!(panic_message(|| discard(d.load(4))), at4);
    assert_eq!(panic_message(|| drop(d.store(4, 1i32))), at4);
    let msg = panic_message(|| drop(d.copy_from_slice(&[Scalar::I32(0); 5])));
    assert!(msg.contains(&wrong_len.replace('3', "5")), "{msg}");
    assert!(!arr.get_lock().unwrap().is_locked());

    // `get` is the non-panicking form.
    assert_eq!((arr.get(3), arr.get(4), arr.get(usize::MAX)), (Some(4), None, None));
    assert_eq!((d.get(4), d.get(usize::MAX)), (None, None));
    assert_eq!(arr.lock().unwrap().get(4), None);
    // Nothing was written by any of the above.
    assert_eq!(arr.to_vec().unwrap(), [1, 2, 3, 4]);
}

// ---------------------------------------------------------------------------
// Opening with the wrong type
// ---------------------------------------------------------------------------

#[test]
fn wrong_type_open_is_a_mismatch_naming_both() {
    let name = unique_name("array-wrongtype");
    let arr = Array::<f64>::create(&name, 4).unwrap();

    let e = Array::<i32>::open(&name).unwrap_err();
    assert_mismatch(&e, "element type", &["i32", "'i'", "'d'"]);
    if let Error::Mismatch { expected, found, .. } = &e {
        assert!(expected.contains("i32") && expected.contains("'i'"), "expected: {expected}");
        assert!(found.contains("'d'") && found.contains("c_double"), "found: {found}");
    }
    // Same size, other class; same class, other size.
    assert_mismatch(&Array::<i64>::open(&name).unwrap_err(), "element type", &["i64", "'d'"]);
    assert_mismatch(&Array::<f32>::open(&name).unwrap_err(), "element type", &["f32", "'f'", "'d'"]);
    assert_eq!(Array::<f64>::open(&name).unwrap().len(), 4);

    // A Value is one element.
    let e = Value::<f64>::open(&name).unwrap_err();
    assert_mismatch(&e, "array length", &["1 element", "4 elements"]);
    assert_mismatch(&Value::<i32>::open(&name).unwrap_err(), "element type", &["'d'"]);

    // DynArray::typed and TryFrom check the same way.
    let d = DynArray::open(&name).unwrap();
    assert_mismatch(&d.typed::<i32>().unwrap_err(), "element type", &["i32", "'d'"]);
    assert_mismatch(&d.typed::<u64>().unwrap_err(), "element type", &["u64", "'d'"]);
    assert_eq!(d.typed::<f64>().unwrap().len(), 4);
    assert_mismatch(&Array::<char>::try_from(d.clone()).unwrap_err(), "element type", &["char", "'d'"]);
    assert!(Array::<f64>::try_from(d.clone()).is_ok());

    // The c/B/u distinctions.
    let cname = unique_name("array-wrongtype");
    let c = ArrayBuilder::new().typecode(Typecode::Char).name(&cname).zeroed::<u8>(2).unwrap();
    assert_eq!(Array::<u8>::open(&cname).unwrap().typecode(), Typecode::Char, "u8 holds 'c'");
    assert_mismatch(&Array::<i8>::open(&cname).unwrap_err(), "element type", &["i8", "'c'"]);
    let uname = unique_name("array-wrongtype");
    let u = Array::<char>::create(&uname, 2).unwrap();
    assert_mismatch(&Array::<u32>::open(&uname).unwrap_err(), "element type", &["u32", "'u'"]);

    // Other kinds of segment, and no segment.
    let lname = unique_name("array-wrongtype");
    let lock = shmproc::Lock::create(&lname).unwrap();
    assert_mismatch(&Array::<f64>::open(&lname).unwrap_err(), "kind", &["Array", "Lock"]);
    assert_mismatch(&DynArray::open(&lname).unwrap_err(), "kind", &["Array", "Lock"]);
    assert_mismatch(&Value::<f64>::open(&lname).unwrap_err(), "kind", &["Array", "Lock"]);
    assert_mismatch(&shmproc::Lock::open(&name).unwrap_err(), "kind", &["Lock", "Array"]);
    assert_mismatch(&shmproc::Segment::open(&name).unwrap_err(), "kind", &["Raw", "Array"]);
    let gone = unique_name("array-wrongtype");
    assert!(matches!(Array::<f64>::open(&gone), Err(Error::NotFound { .. })));
    assert!(matches!(DynArray::open("no/slash"), Err(Error::InvalidName { .. })));

    drop((arr, d, c, u, lock));
    assert!(matches!(Array::<f64>::open(&name), Err(Error::NotFound { .. })), "the creator's drop unlinks");
    assert_no_leftovers("array-wrongtype");
}

// ---------------------------------------------------------------------------
// Garbage in the segment
// ---------------------------------------------------------------------------

/// A named `f64` array of four elements holding 1.0, 2.0, 3.0, 4.0.
fn victim(tag: &str) -> (String, Array<f64>) {
    let name = unique_name(tag);
    let arr = Array::<f64>::create(&name, 4).unwrap();
    arr.copy_from_slice(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    (name, arr)
}

/// Opens `name` every way; each must be refused. Returns the `DynArray` error.
fn assert_all_opens_refused(what: &str, name: &str) -> Error {
    assert_refused(&format!("{what}: Array<f64>"), Array::<f64>::open(name));
    assert_refused(&format!("{what}: Value<f64>"), Value::<f64>::open(name));
    assert_refused(&format!("{what}: DynArray"), DynArray::open(name))
}

#[test]
fn garbage_type_fingerprint_is_refused() {
    const TAG: &str = "array-garbage-fp";
    let fp = |letter: u8, size: u8| u64::from(letter) | u64::from(size) << 8;
    let cases: [(&str, u64, &[&str]); 6] = [
        ("unknown letter", fp(b'z', 8), &["'z'"]),
        ("right letter, wrong size", fp(b'd', 3), &["'d', 3 bytes"]),
        ("zero", 0, &["0x0"]),
        ("letter and size of 'i' swapped", fp(4, b'i'), &["fingerprint"]),
        ("junk above the size byte", fp(b'd', 8) | 0xFF << 16, &["fingerprint"]),
        ("all ones", u64::MAX, &["fingerprint"]),
    ];
    for (what, bad, needles) in cases {
        let (name, arr) = victim(TAG);
        scribble(&name, TYPE_FP_AT, &bad.to_le_bytes());
        let e = assert_all_opens_refused(what, &name);
        assert_mismatch(&e, "element type", needles);
        // The creator's handle checked its fingerprint when it was made.
        assert_eq!(arr.to_vec().unwrap(), [1.0, 2.0, 3.0, 4.0], "{what}");
    }
    assert_no_leftovers(TAG);
}

#[test]
fn another_valid_fingerprint_is_interpreted_in_bounds() {
    const TAG: &str = "array-garbage-refp";
    // 'd' -> 'q': same size; a typed f64 open is refused, a DynArray reads i64s.
    let (name, arr) = victim(TAG);
    scribble(&name, TYPE_FP_AT, &[b'q', 8]);
    assert_mismatch(&Array::<f64>::open(&name).unwrap_err(), "element type", &["f64", "'q'"]);
    let d = DynArray::open(&name).unwrap();
    assert_eq!((d.typecode(), d.len()), (Typecode::LongLong, 4));
    assert_eq!(d.load(0), Scalar::I64(1.0f64.to_bits() as i64));
    drop((arr, d));
    // 'd' -> 'i': the same 32 payload bytes are eight i32s.
    let (name, arr) = victim(TAG);
    scribble(&name, TYPE_FP_AT, &[b'i', 4]);
    let ints = Array::<i32>::open(&name).unwrap();
    assert_eq!(ints.len(), 8);
    assert_eq!(ints.load(1), (1.0f64.to_bits() >> 32) as i32);
    assert_eq!(ints.get(8), None);
    drop((arr, ints));
    // 'd' -> 'c': 32 bytes.
    let (name, arr) = victim(TAG);
    scribble(&name, TYPE_FP_AT, &[b'c', 1]);
    let bytes = Array::<u8>::open(&name).unwrap();
    assert_eq!(bytes.raw().unwrap().len(), 32);
    drop((arr, bytes));
    assert_no_leftovers(TAG);
}

#[test]
fn garbage_payload_length_is_refused() {
    const TAG: &str = "array-garbage-len";
    // The file holds 64 (header) + 64 (state) + 4 × 8 bytes: payload_len 96.
    let cases: [(&str, u64, &str); 7] = [
        ("not 64 + a multiple of 8", 95, "payload length"),
        ("one byte more than a multiple", 89, "payload length"),
        ("past the end of the file", 104, "segment length"),
        ("far past the end", 1 << 40, "segment length"),
        ("u64::MAX", u64::MAX, "segment length"),
        ("shorter than the array state", 10, "payload length"),
        ("zero", 0, "payload length"),
    ];
    for (what, bad, field) in cases {
        let (name, arr) = victim(TAG);
        scribble(&name, PAYLOAD_LEN_AT, &bad.to_le_bytes());
        let e = assert_all_opens_refused(what, &name);
        assert!(matches!(e, Error::Mismatch { field: f, .. } if f == field), "{what}: {e:?}");
        assert_eq!(arr.load(3), 4.0, "{what}: the creator's handle is unaffected");
    }
    // A shorter multiple is a shorter array (in bounds); 64 is an empty one.
    for (len, elements) in [(80u64, 2usize), (64, 0)] {
        let (name, arr) = victim(TAG);
        scribble(&name, PAYLOAD_LEN_AT, &len.to_le_bytes());
        let d = DynArray::open(&name).unwrap();
        assert_eq!(d.len(), elements);
        assert_eq!(d.to_vec().unwrap().len(), elements);
        assert!(d.get(elements).is_none());
        drop((arr, d));
    }
    assert_no_leftovers(TAG);
}

#[test]
fn garbage_kind_version_magic_and_init_state_are_refused() {
    const TAG: &str = "array-garbage-hdr";
    let cases: [(&str, u64, Vec<u8>, &[&str]); 7] = [
        ("kind Lock", KIND_AT, 2u32.to_le_bytes().to_vec(), &["kind", "Lock"]),
        ("kind 0", KIND_AT, 0u32.to_le_bytes().to_vec(), &["kind", "unknown kind 0"]),
        ("kind 999", KIND_AT, 999u32.to_le_bytes().to_vec(), &["kind", "unknown kind 999"]),
        ("kind u32::MAX", KIND_AT, u32::MAX.to_le_bytes().to_vec(), &["kind"]),
        ("version 1", 8, 1u32.to_le_bytes().to_vec(), &["version"]),
        ("magic", 0, b"PYTHON\0\0".to_vec(), &["magic"]),
        ("init state 7", INIT_STATE_AT, 7u32.to_le_bytes().to_vec(), &["init state 7"]),
    ];
    for (what, at, bytes, needles) in cases {
        let (name, arr) = victim(TAG);
        scribble(&name, at, &bytes);
        let e = assert_all_opens_refused(what, &name);
        let msg = e.to_string();
        for needle in needles {
            assert!(msg.contains(needle), "{what}: {msg:?} does not mention {needle:?}");
        }
        assert_eq!(arr.load(0), 1.0);
    }
    assert_no_leftovers(TAG);
}

#[test]
fn random_header_garbage_is_an_error_or_an_in_bounds_array() {
    const TAG: &str = "array-garbage-rand";
    let valid: Vec<u64> = Typecode::ALL.iter().map(|c| u64::from(c.as_char() as u8) | (c.size() as u64) << 8).collect();
    let (mut opened, mut refused) = (0, 0);
    for seed in 1..=64u64 {
        let mut rng = XorShift::new(seed);
        let (name, arr) = victim(TAG);
        // Half the seeds keep a valid fingerprint, so that the length is judged.
        let code_index = (rng.next_u64() % 14) as usize;
        let code = Typecode::ALL[code_index];
        let (fp, len) = match seed % 4 {
            // A valid fingerprint and a whole number of its elements, inside
            // the file or past its end.
            0 => (valid[code_index], 64 + (rng.next_u64() % (64 / code.size() as u64 + 1)) * code.size() as u64),
            1 => (rng.next_u64(), rng.next_u64() % 200),
            2 => (valid[(rng.next_u64() % 14) as usize], rng.next_u64() % 200),
            _ => (valid[(rng.next_u64() % 14) as usize], rng.next_u64()),
        };
        scribble(&name, TYPE_FP_AT, &fp.to_le_bytes());
        scribble(&name, PAYLOAD_LEN_AT, &len.to_le_bytes());
        match DynArray::open(&name) {
            Ok(d) => {
                // Every element the handle admits lies inside the file.
                assert!(DATA_OFFSET + d.len() * d.typecode().size() <= read_shm(&name).len(), "seed {seed}");
                let all = d.to_vec().unwrap();
                assert_eq!(all.len(), d.len());
                if let Some(last) = d.len().checked_sub(1) {
                    d.store(last, d.load(last)).unwrap();
                }
                opened += 1;
            }
            Err(e) => {
                assert!(matches!(e, Error::Mismatch { .. } | Error::Corrupt { .. }), "seed {seed}: {e:?}");
                refused += 1;
            }
        }
        drop(arr);
    }
    assert!(opened > 0 && refused > 0, "opened {opened}, refused {refused}: the cases should cover both");
    assert_no_leftovers(TAG);
}

#[test]
fn junk_flags_word_is_harmless() {
    const TAG: &str = "array-garbage-flags";
    for junk in [0xFFFF_FFFFu32, 0xFFFF_FFFE, 0x8000_0001, 2, 0] {
        let (name, arr) = victim(TAG);
        scribble(&name, FLAGS_AT, &junk.to_le_bytes());
        let opened = Array::<f64>::open(&name).unwrap();
        // Bit 0 is "has a lock"; other bits are ignored.
        assert_eq!(opened.get_lock().is_some(), junk & 1 == 1, "flags {junk:#x}");
        assert_eq!(opened.to_vec().unwrap(), [1.0, 2.0, 3.0, 4.0]);
        opened.copy_from_slice(&[5.0, 6.0, 7.0, 8.0]).unwrap();
        if opened.get_lock().is_some() {
            let g = opened.lock().unwrap();
            g.store(0, g.load(0) + 1.0);
        } else {
            assert!(matches!(opened.lock(), Err(LockError::Failed(Error::InvalidArgument { .. }))));
        }
        assert_eq!(arr.load(0), if junk & 1 == 1 { 6.0 } else { 5.0 });
        drop((arr, opened));
    }
    assert_no_leftovers(TAG);
}

/// A pid that no process has: a child that already exited and was reaped.
fn dead_pid() -> u32 {
    let mut child = fork_child(|| 0);
    assert_eq!(child.wait_timeout(WATCHDOG), Some(0));
    child.pid() as u32
}

#[test]
fn junk_lock_word_is_taken_over_never_hangs() {
    const TAG: &str = "array-garbage-lock";
    let dead = dead_pid();
    // A stamp naming the dead pid with a start time no process has, so that a
    // recycled pid is not mistaken for the owner.
    let dead_stamp = (1u64 << 22) | u64::from(dead);
    let mut rng = XorShift::new(7);
    let mut words: Vec<(u32, Option<u64>)> = vec![
        (0xFFFF_FFFF, None),
        (0xDEAD_BEEF, None),
        (0x7FC0_0000, None),
        (0x8000_0000, None), // "someone may sleep", no owner: free
        (dead, Some(dead_stamp)),
        (dead | 0x8000_0000, Some(dead_stamp)),
        (0x003F_FFFF, None), // tid 4194303: above pid_max
    ];
    // Random words with at least one of the bits no valid word has.
    words.extend((0..4).map(|_| ((rng.next_u64() as u32) | 1 << 22, None)));
    // And the whole lock state (word, stamp, depth) as random bytes.
    for (word, stamp) in words {
        let (name, arr) = victim(TAG);
        scribble(&name, LOCK_WORD_AT, &word.to_le_bytes());
        if let Some(stamp) = stamp {
            scribble(&name, LOCK_STAMP_AT, &stamp.to_le_bytes());
        }
        in_child(|| {
            for handle in [arr.clone(), Array::<f64>::open(&name).unwrap()] {
                match handle.lock() {
                    Ok(g) | Err(LockError::OwnerDied(g)) => g.store(1, g.load(1) + 1.0),
                    Err(LockError::Failed(e)) => panic!("word {word:#x}: lock failed: {e}"),
                }
                // Taken over and released: the lock works normally again.
                drop(handle.lock().unwrap());
                assert_eq!(handle.to_vec().unwrap().len(), 4);
            }
        });
        assert_eq!(arr.load(1), 4.0, "word {word:#x}: both increments landed");
        assert!(!arr.get_lock().unwrap().is_locked());
        drop(arr);
    }
    for seed in 1..=4u64 {
        let (name, arr) = victim(TAG);
        let mut junk = XorShift::new(seed).bytes(24);
        junk[2] |= 0x40; // bit 22 of the word: names no thread
        scribble(&name, LOCK_WORD_AT, &junk);
        in_child(|| {
            // to_vec takes the lock too, and does not stop for a dead holder.
            assert_eq!(arr.to_vec().unwrap(), [1.0, 2.0, 3.0, 4.0]);
            assert!(arr.lock().is_ok());
        });
        drop(arr);
    }
    assert_no_leftovers(TAG);
}

#[test]
fn lock_word_naming_the_caller_at_depth_zero_is_corrupt_not_a_hang() {
    let (name, arr) = victim("array-garbage-self");
    in_child(|| {
        // A forked child's only thread has tid == pid.
        let me = std::process::id();
        scribble(&name, LOCK_WORD_AT, &me.to_le_bytes());
        let lock = arr.get_lock().unwrap();
        assert_eq!(lock.depth(), 0, "the scribbled word names us, at depth 0");
        assert!(matches!(arr.lock(), Err(LockError::Failed(Error::Corrupt { .. }))));
        assert!(matches!(arr.to_vec(), Err(Error::Corrupt { .. })), "bulk copies report the corrupt lock");
        // release() clears a word that names the caller.
        lock.release().unwrap();
        assert_eq!(arr.to_vec().unwrap(), [1.0, 2.0, 3.0, 4.0]);
        drop(arr.lock().unwrap());
    });
    drop(arr);
    assert_no_leftovers("array-garbage-self");
}

// ---------------------------------------------------------------------------
// 'c' arrays: Python's ctypes c_char array `value` and `raw`
// ---------------------------------------------------------------------------

fn char_array(len: usize) -> Array<u8> {
    ArrayBuilder::new().typecode(Typecode::Char).zeroed::<u8>(len).unwrap()
}

#[test]
fn char_array_value_and_raw_behave_as_ctypes() {
    let a = char_array(8);
    assert_eq!(a.value().unwrap(), b"");
    assert_eq!(a.raw().unwrap(), [0; 8]);

    a.set_value(b"hello").unwrap();
    assert_eq!(a.raw().unwrap(), b"hello\0\0\0");
    assert_eq!(a.value().unwrap(), b"hello");

    // A shorter value writes a NUL after itself and leaves the rest.
    a.set_value(b"hi").unwrap();
    assert_eq!(a.raw().unwrap(), b"hi\0lo\0\0\0");
    assert_eq!(a.value().unwrap(), b"hi");

    // Exactly the length: no room for a NUL, and value is every byte.
    a.set_value(b"12345678").unwrap();
    assert_eq!(a.raw().unwrap(), b"12345678");
    assert_eq!(a.value().unwrap(), b"12345678");

    // One short of the length: the NUL goes in the last byte.
    a.set_value(b"abcdefg").unwrap();
    assert_eq!(a.raw().unwrap(), b"abcdefg\0");
    a.set_value(b"12345678").unwrap();

    // Too long: an error, the array unchanged.
    let e = a.set_value(b"123456789").unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    assert!(e.to_string().contains("too long"), "{e}");
    assert_eq!(a.raw().unwrap(), b"12345678");

    // raw = bytes copies over the first bytes only, no NUL.
    a.set_raw(b"ab").unwrap();
    assert_eq!(a.raw().unwrap(), b"ab345678");
    assert_eq!(a.value().unwrap(), b"ab345678");
    a.set_raw(b"xy\0z").unwrap();
    assert_eq!(a.raw().unwrap(), b"xy\0z5678");
    assert_eq!(a.value().unwrap(), b"xy", "value stops at the first NUL");
    assert!(matches!(a.set_raw(&[1; 9]), Err(Error::InvalidArgument { .. })));
    assert_eq!(a.raw().unwrap(), b"xy\0z5678");

    // An embedded NUL in a value; an empty value.
    a.set_value(b"a\0b").unwrap();
    assert_eq!(a.raw().unwrap(), b"a\0b\x005678");
    assert_eq!(a.value().unwrap(), b"a");
    a.set_value(b"").unwrap();
    assert_eq!(a.raw().unwrap(), b"\0\0b\x005678");
    assert_eq!(a.value().unwrap(), b"");

    // Elements are bytes too.
    a.store(0, b'Z');
    assert_eq!(a.value().unwrap(), b"Z");
    assert_eq!(DynArray::from(a.clone()).load(0), Scalar::Char(b'Z'));

    // An empty 'c' array.
    let empty = char_array(0);
    assert_eq!(empty.value().unwrap(), b"");
    empty.set_value(b"").unwrap();
    empty.set_raw(b"").unwrap();
    assert!(matches!(empty.set_value(b"x"), Err(Error::InvalidArgument { .. })));

    // Without a lock it works the same.
    let unlocked = ArrayBuilder::new().typecode(Typecode::Char).lock(false).from_slice(b"abc").unwrap();
    assert_eq!(unlocked.value().unwrap(), b"abc");
    unlocked.set_value(b"d").unwrap();
    assert_eq!(unlocked.raw().unwrap(), b"d\0c");
}

#[test]
fn byte_string_methods_on_a_b_array_are_a_mismatch() {
    let b = Array::<u8>::from_slice(b"abcd").unwrap();
    assert_eq!(b.typecode(), Typecode::UnsignedChar);
    let errors =
        [b.value().unwrap_err(), b.raw().unwrap_err(), b.set_value(b"x").unwrap_err(), b.set_raw(b"x").unwrap_err()];
    for e in &errors {
        assert_mismatch(e, "element type", &["'c'", "'B'"]);
    }
    assert!(matches!(b.set_value(b"too long for four"), Err(Error::Mismatch { .. })), "the type is checked first");
    assert_eq!(b.to_vec().unwrap(), b"abcd", "nothing written");
}

/// Sets the 'c' array's value, and returns what it held.
fn char_child(a: Array<u8>) -> Vec<u8> {
    let before = a.value().unwrap();
    a.set_value(b"from child").unwrap();
    before
}

#[test]
fn char_array_across_processes() {
    for m in METHODS {
        let a = char_array(16);
        a.set_value(b"from parent").unwrap();
        let mut p = start_fn(m, char_child, a.clone());
        assert_eq!(join_ok(&mut p), b"from parent", "{m:?}");
        assert_eq!(a.value().unwrap(), b"from child", "{m:?}");
    }
}

// ---------------------------------------------------------------------------
// Arrays without a lock
// ---------------------------------------------------------------------------

fn unlocked_child((arr, v): (Array<i32>, Value<f64>)) -> (bool, bool, Vec<i32>) {
    arr.fetch_add(0, 10);
    v.set(v.get() * 2.0);
    (arr.get_lock().is_some(), v.get_lock().is_some(), arr.to_vec().unwrap())
}

#[test]
fn arrays_without_a_lock() {
    let arr = ArrayBuilder::new().lock(false).from_slice(&[1i32, 2, 3]).unwrap();
    assert!(arr.get_lock().is_none());
    assert!(matches!(arr.lock(), Err(LockError::Failed(Error::InvalidArgument { .. }))));
    assert!(matches!(
        arr.lock_timeout(Duration::from_millis(1)),
        Err(LockError::Failed(Error::InvalidArgument { .. }))
    ));
    assert_eq!(arr.to_vec().unwrap(), [1, 2, 3]);
    arr.copy_from_slice(&[4, 5, 6]).unwrap();
    assert_eq!(arr.fetch_add(0, 1), 4);
    assert_eq!(arr.to_vec().unwrap(), [5, 5, 6]);

    let v = ArrayBuilder::new().lock(false).value(1.5f64).unwrap();
    assert!(v.get_lock().is_none());
    assert!(matches!(v.lock(), Err(LockError::Failed(Error::InvalidArgument { .. }))));
    assert!(matches!(v.lock_timeout(Duration::from_millis(1)), Err(LockError::Failed(Error::InvalidArgument { .. }))));

    let d = ArrayBuilder::new().lock(false).typecode(Typecode::Int).dynamic(3).unwrap();
    assert!(d.get_lock().is_none());
    assert_eq!(d.to_vec().unwrap(), [Scalar::I32(0); 3]);
    d.copy_from_slice(&[Scalar::I32(1); 3]).unwrap();

    // The absence of a lock is in the segment: an opener sees it too.
    let name = unique_name("array-unlocked");
    let named = ArrayBuilder::new().lock(false).name(&name).zeroed::<u16>(2).unwrap();
    let opened = Array::<u16>::open(&name).unwrap();
    assert!(opened.get_lock().is_none());
    assert!(DynArray::open(&name).unwrap().get_lock().is_none());
    assert!(matches!(opened.lock(), Err(LockError::Failed(Error::InvalidArgument { .. }))));
    drop((named, opened));

    // And a child.
    for m in METHODS {
        let mut p = start_fn(m, unlocked_child, (arr.clone(), v.clone()));
        let (arr_lock, v_lock, seen) = join_ok(&mut p);
        assert!(!arr_lock && !v_lock, "{m:?}: the child's handles have a lock");
        assert_eq!(seen[0], arr.load(0), "{m:?}");
    }
    assert_eq!(arr.load(0), 5 + 10 * METHODS.len() as i32);
    assert_eq!(v.get(), 1.5 * f64::from(1u32 << METHODS.len()));
    assert_no_leftovers("array-unlocked");
}

// ---------------------------------------------------------------------------
// Passing handles to children
// ---------------------------------------------------------------------------

/// What the child saw of its arguments.
type Seen = (Vec<i32>, f64, char, usize, Option<String>, bool);

/// Checks what it got, then writes to each: element 1 of the array, the
/// value, element 0 of the `DynArray`.
fn handles_child((arr, v, d): (Array<i32>, Value<f64>, DynArray)) -> Seen {
    let name = arr.name().map(str::to_owned);
    let seen = (arr.to_vec().unwrap(), v.get(), d.typecode().as_char(), d.len(), name, arr.get_lock().is_some());
    arr.store(1, -20);
    {
        let g = v.lock().unwrap();
        g.set(g.get() + 0.25);
    }
    d.store(0, Scalar::F32(2.5)).unwrap();
    seen
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    Anonymous,
    Named,
}

#[test]
fn handles_passed_as_arguments_are_shared() {
    const TAG: &str = "array-pass";
    for m in METHODS {
        for how in [How::Anonymous, How::Named] {
            let (arr, v, d, name) = match how {
                How::Anonymous => (
                    Array::from_slice(&[1, 2, 3]).unwrap(),
                    Value::new(1.0).unwrap(),
                    DynArray::new(Typecode::Float, 2).unwrap(),
                    None,
                ),
                How::Named => {
                    let name = unique_name(TAG);
                    let arr = ArrayBuilder::new().name(&name).from_slice(&[1, 2, 3]).unwrap();
                    (
                        arr,
                        Value::create(&unique_name(TAG), 1.0).unwrap(),
                        DynArray::create(&unique_name(TAG), Typecode::Float, 2).unwrap(),
                        Some(name),
                    )
                }
            };
            let mut p = start_fn(m, handles_child, (arr.clone(), v.clone(), d.clone()));
            let seen = join_ok(&mut p);
            assert_eq!(seen, (vec![1, 2, 3], 1.0, 'f', 2, name, true), "{m:?} {how:?}");
            assert_eq!(arr.to_vec().unwrap(), [1, -20, 3], "{m:?} {how:?}");
            assert_eq!(v.get(), 1.25, "{m:?} {how:?}");
            assert_eq!(d.load(0), Scalar::F32(2.5), "{m:?} {how:?}");
        }
    }
    assert_no_leftovers(TAG);
}

#[test]
fn handles_captured_by_forked_closures_are_shared() {
    let name = unique_name("array-capture");
    let named = Array::<i32>::create(&name, 3).unwrap();
    let (arr, v, d) =
        (Array::from_slice(&[1, 2, 3]).unwrap(), Value::new(1.0).unwrap(), DynArray::new(Typecode::Float, 2).unwrap());
    let mut p = start(Fork, {
        let (arr, v, d, named) = (arr.clone(), v.clone(), d.clone(), named.clone());
        move || {
            named.store(2, 99);
            handles_child((arr, v, d))
        }
    });
    assert_eq!(join_ok(&mut p), (vec![1, 2, 3], 1.0, 'f', 2, None, true));
    assert_eq!((arr.load(1), v.get(), d.load(0), named.load(2)), (-20, 1.25, Scalar::F32(2.5), 99));
    // The child's copy of the creating handle did not unlink the name.
    assert!(Array::<i32>::open(&name).is_ok());
    drop(named);
    assert_no_leftovers("array-capture");
}

/// Takes the array's lock (passed on its own), says so, waits for `release`,
/// then, still holding it, writes the array (passed too) and lets go.
fn hold_array_lock((lock, arr, held, release): (RLock, Array<i64>, Event, Event)) -> u32 {
    let g = lock.lock().unwrap();
    let depth = lock.depth();
    held.set();
    assert!(release.wait_timeout(WATCHDOG).unwrap(), "never released");
    for i in 0..arr.len() {
        arr.store(i, 100 + i as i64);
    }
    drop(g);
    depth
}

#[test]
fn the_arrays_own_lock_passed_to_a_child_is_the_same_lock() {
    const TAG: &str = "array-pass-lock";
    for m in METHODS {
        for how in [How::Anonymous, How::Named] {
            let arr = match how {
                How::Anonymous => Array::<i64>::new(4).unwrap(),
                How::Named => Array::<i64>::create(&unique_name(TAG), 4).unwrap(),
            };
            let lock: RLock = arr.get_lock().unwrap().clone();
            let (held, release) = (Event::new().unwrap(), Event::new().unwrap());
            let mut p = start_fn(m, hold_array_lock, (lock, arr.clone(), held.clone(), release.clone()));
            assert!(held.wait_timeout(WATCHDOG).unwrap(), "{m:?} {how:?}: the child never took the lock");

            // The child holds the array's lock: every way in sees it held.
            let mine = arr.get_lock().unwrap();
            assert!(mine.is_locked(), "{m:?} {how:?}");
            assert!(matches!(mine.try_lock(), Err(LockError::Failed(Error::WouldBlock))), "{m:?} {how:?}");
            assert!(
                matches!(arr.lock_timeout(Duration::from_millis(30)), Err(LockError::Failed(Error::Timeout))),
                "{m:?} {how:?}"
            );
            if let Some(name) = arr.name() {
                let opened = Array::<i64>::open(name).unwrap();
                assert!(matches!(opened.get_lock().unwrap().try_lock(), Err(LockError::Failed(Error::WouldBlock))));
            }

            // Once released, our lock() waits for the child's writes under it.
            release.set();
            let g = arr.lock().unwrap();
            assert_eq!(g.to_vec(), [100, 101, 102, 103], "{m:?} {how:?}: the lock did not cover the child's writes");
            drop(g);
            assert_eq!(join_ok(&mut p), 1, "{m:?} {how:?}: depth in the child");
            assert!(!arr.get_lock().unwrap().is_locked());
        }
    }
    assert_no_leftovers(TAG);
}

/// Takes the value's lock, updates it half-way, says so, and never lets go.
fn die_holding_the_lock((lock, v, held): (RLock, Value<i64>, Event)) {
    let _g = lock.lock().unwrap();
    v.set(-1);
    held.set();
    std::thread::sleep(WATCHDOG);
}

#[test]
fn a_child_killed_holding_the_arrays_lock() {
    for m in [Fork, Spawn] {
        let v = Value::new(5i64).unwrap();
        let held = Event::new().unwrap();

        // to_vec does not stop for the dead holder (as in Python).
        let mut p = start_fn(m, die_holding_the_lock, (v.get_lock().unwrap().clone(), v.clone(), held.clone()));
        assert!(held.wait_timeout(WATCHDOG).unwrap(), "{m:?}");
        kill_and_reap(&mut p);
        assert_eq!(v.as_array().to_vec().unwrap(), [-1], "{m:?}");
        drop(v.lock().unwrap());

        // lock() reports it.
        held.clear();
        let mut p = start_fn(m, die_holding_the_lock, (v.get_lock().unwrap().clone(), v.clone(), held.clone()));
        assert!(held.wait_timeout(WATCHDOG).unwrap(), "{m:?}");
        kill_and_reap(&mut p);
        match v.lock() {
            Err(LockError::OwnerDied(g)) => {
                assert_eq!(g.get(), -1, "{m:?}: the half-done update is visible");
                g.set(5);
            }
            other => panic!("{m:?}: expected OwnerDied, got {other:?}"),
        }
        drop(v.lock().unwrap());
        assert_eq!(v.get(), 5);
    }
}

/// Copies the array; says so once done.
fn copy_then_signal((arr, done): (Array<i32>, Event)) -> Vec<i32> {
    let all = arr.to_vec().unwrap();
    done.set();
    all
}

#[test]
fn bulk_copies_wait_for_the_lock_holder() {
    let arr = Array::<i32>::from_slice(&[1, 2, 3]).unwrap();
    let done = Event::new().unwrap();
    let g = arr.lock().unwrap();
    let mut p = start_fn(Spawn, copy_then_signal, (arr.clone(), done.clone()));
    // While we hold the lock the child's copy cannot finish.
    assert!(!done.wait_timeout(Duration::from_millis(100)).unwrap(), "to_vec did not wait for the lock");
    g.copy_from_slice(&[7, 8, 9]);
    drop(g);
    assert_eq!(join_ok(&mut p), [7, 8, 9], "the copy saw a half-written array");
}

#[test]
fn the_lock_is_recursive_for_bulk_methods() {
    let arr = Array::<i32>::from_slice(&[1, 2, 3]).unwrap();
    let chars = ArrayBuilder::new().typecode(Typecode::Char).from_slice(b"abc").unwrap();
    let v = Value::new(1.0f64).unwrap();
    let d = DynArray::from(arr.clone());
    // In a child under the watchdog: a deadlock fails instead of hanging.
    in_child(|| {
        let lock = arr.get_lock().unwrap();
        let g = arr.lock().unwrap();
        assert_eq!(lock.depth(), 1);
        assert_eq!(arr.to_vec().unwrap(), [1, 2, 3]);
        arr.copy_from_slice(&[4, 5, 6]).unwrap();
        assert_eq!(d.to_vec().unwrap(), [Scalar::I32(4), Scalar::I32(5), Scalar::I32(6)]);
        d.copy_from_slice(&[Scalar::I32(7); 3]).unwrap();
        assert_eq!(lock.depth(), 1, "the bulk methods left a level behind");
        {
            let inner = arr.lock().unwrap();
            assert_eq!(lock.depth(), 2);
            inner.store(0, inner.load(0) + 1);
        }
        assert_eq!(g.to_vec(), [8, 7, 7]);
        drop(g);
        assert_eq!(lock.depth(), 0);

        let g = chars.lock().unwrap();
        chars.set_value(b"x").unwrap();
        assert_eq!(chars.value().unwrap(), b"x");
        assert_eq!(chars.raw().unwrap(), b"x\0c");
        drop(g);

        let g = v.lock().unwrap();
        assert_eq!(v.as_array().to_vec().unwrap(), [1.0]);
        g.set(2.0);
        drop(g);
    });
    assert_eq!(arr.to_vec().unwrap(), [8, 7, 7]);
    assert_eq!(chars.value().unwrap(), b"x");
    assert_eq!(v.get(), 2.0);
}

// ---------------------------------------------------------------------------
// ArrayBuilder
// ---------------------------------------------------------------------------

#[test]
fn builder_checks_and_names() {
    const TAG: &str = "array-builder";
    // A typecode that does not hold the element type.
    assert_mismatch(
        &ArrayBuilder::new().typecode(Typecode::Int).zeroed::<f64>(3).unwrap_err(),
        "element type",
        &["f64", "'i'"],
    );
    assert_mismatch(
        &ArrayBuilder::new().typecode(Typecode::Char).from_slice(&[1i8]).unwrap_err(),
        "element type",
        &["i8", "'c'"],
    );
    assert!(matches!(ArrayBuilder::new().typecode(Typecode::WChar).zeroed::<u32>(1), Err(Error::Mismatch { .. })));
    assert!(matches!(ArrayBuilder::new().typecode(Typecode::Double).value(1.0f32), Err(Error::Mismatch { .. })));
    // A DynArray needs a typecode.
    let e = ArrayBuilder::new().dynamic(3).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    assert!(e.to_string().contains("typecode"), "{e}");
    // Lengths too large for a segment are refused before any allocation.
    for e in [Array::<u64>::new(usize::MAX).unwrap_err(), Array::<u8>::new(isize::MAX as usize).unwrap_err()] {
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    }
    assert!(matches!(DynArray::new(Typecode::Double, usize::MAX / 4), Err(Error::InvalidArgument { .. })));

    // Named: found by open, refused twice, unlinked on drop.
    let name = unique_name(TAG);
    let arr = ArrayBuilder::default().name(&name).from_slice(&[1.5f32, 2.5]).unwrap();
    assert_eq!(arr.name(), Some(name.as_str()));
    assert_eq!(Array::<f32>::open(&name).unwrap().to_vec().unwrap(), [1.5, 2.5]);
    assert!(matches!(ArrayBuilder::new().name(&name).zeroed::<f32>(2), Err(Error::AlreadyExists { .. })));
    assert!(matches!(Array::<f32>::create(&name, 1), Err(Error::AlreadyExists { .. })));
    assert!(matches!(ArrayBuilder::new().name("a/b").zeroed::<f32>(2), Err(Error::InvalidName { .. })));
    let vname = unique_name(TAG);
    let v = ArrayBuilder::new().name(&vname).typecode(Typecode::Long).value(-7i64).unwrap();
    assert_eq!((v.typecode(), Value::<i64>::open(&vname).unwrap().get()), (Typecode::Long, -7));
    let dname = unique_name(TAG);
    let d = ArrayBuilder::new().name(&dname).typecode(Typecode::UnsignedShort).lock(false).dynamic(5).unwrap();
    let opened = DynArray::open(&dname).unwrap();
    assert_eq!((opened.typecode(), opened.len(), opened.get_lock().is_none()), (Typecode::UnsignedShort, 5, true));
    let builder = ArrayBuilder::new().typecode(Typecode::Short);
    assert_eq!(builder.clone().zeroed::<i16>(2).unwrap().typecode(), Typecode::Short);
    assert!(format!("{builder:?}").contains("Short"));
    drop((arr, v, d, opened));
    assert_no_leftovers(TAG);
}

// ---------------------------------------------------------------------------
// The seed scenario
// ---------------------------------------------------------------------------

fn add_100(temp: Array<i32>) {
    temp.fetch_add(0, 100);
}

fn seed_scenario(method: Option<StartMethod>) {
    let temp = Array::<i32>::from_slice(&[1, 2, 3, 4]).unwrap();
    let mut children: Vec<Proc<()>> = (0..10)
        .map(|_| {
            let mut p = Proc(match method {
                None => Process::new(add_100, temp.clone()),
                Some(m) => Process::builder().start_method(m).target(add_100, temp.clone()),
            });
            p.start().unwrap();
            p
        })
        .collect();
    join_all_ok(&mut children);
    assert_eq!(temp.to_vec().unwrap(), [1001, 2, 3, 4], "{method:?}");
}

#[test]
fn seed_ten_processes_add_100() {
    seed_scenario(None);
    seed_scenario(Some(Spawn));
}
