//! Shared typed arrays: [`Array`], [`Value`] and [`DynArray`] (Python's
//! `multiprocessing.Array`, `Value` and their typecodes).
//!
//! # Segment layout (Python can read it)
//!
//! An array lives in its own segment, a file under `/dev/shm/<name>` for a
//! named one. All integers are little-endian (the only byte order shmproc runs
//! on), elements in this platform's native C representation:
//!
//! | file offset | size | what |
//! |---:|---:|---|
//! | 0 | 64 | the segment header (`segment/header.rs`): magic `b"SHMPROC\0"`, version `u32` = 2, kind `u32` = 9 (array), type fingerprint `u64` (byte 16: the typecode's ASCII letter; byte 17: the element size), payload length `u64` (= 64 + len × size), creator pid, init state `u32` (1 once ready), creator start time |
//! | 64 | 64 | the array state: the array's `RLock` (24 bytes), then `flags` `u32` (bit 0: the array has a lock), then zeroes |
//! | [`DATA_OFFSET`] (128) | len × size | the elements, 64-byte aligned, each aligned to its size |
//!
//! So a reader that knows nothing but this table finds the typecode at byte
//! 16, the element count as `(payload_len − 64) / size`, and element `i` at
//! `128 + i × size`. `tests/python_interop.rs` does exactly that from Python
//! (stdlib only).
//!
//! ## From Python
//!
//! ```python
//! from multiprocessing import shared_memory, resource_tracker
//! import struct
//!
//! shm = shared_memory.SharedMemory("my-array")          # Python 3.13+: track=False
//! resource_tracker.unregister(shm._name, "shared_memory")  # see below
//! magic, version, kind, fp, payload_len = struct.unpack_from("<8sIIQQ", shm.buf, 0)
//! assert magic == b"SHMPROC\0" and kind == 9
//! code, size = chr(fp & 0xFF), (fp >> 8) & 0xFF
//! data = shm.buf[128 : 128 + payload_len - 64].cast(code if code != "u" else "I")
//! print(data[0]); data[1] = 42
//! data.release(); shm.close()    # never shm.unlink(): the Rust creator owns the name
//! ```
//!
//! **Python's resource tracker.** Before Python 3.13, `SharedMemory(name)`
//! registers the segment with the resource tracker even when it only attaches
//! to it, and the tracker *unlinks* every registered segment when the Python
//! program exits (printing a "leaked `shared_memory` objects" warning): the Rust
//! side's name would vanish. Unregister right after opening, as above, or on
//! Python 3.13 and later pass `track=False`. Python must not write elements
//! while Rust processes update them without the lock: Python's stores are
//! plain, not atomic; hold the array's lock on the Rust side and hand over
//! with any shmproc primitive, or let Python write only while Rust waits.
//!
//! # Atomicity
//!
//! Every element access is one atomic operation on the element's memory (SPEC
//! §3: no `&`/`&mut` to shared data): `load` is `Acquire`, `store` `Release`,
//! read-modify-writes `AcqRel`; no element is ever seen half-written. Bulk copies
//! ([`Array::to_vec`], [`Array::copy_from_slice`], a locked [`ArrayGuard`])
//! take the array's lock, so other lock holders see them whole; each element
//! of them is still copied atomically (`Relaxed`: the lock orders them), so a
//! peer that ignores the lock can make a copy mix old and new elements, never
//! tear one.

mod dynamic;
mod element;
mod value;

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use dynamic::DynArray;
pub use element::{Element, Integer, Scalar, Typecode};
pub use value::{Value, ValueGuard};

use crate::error::{Error, Result};
use crate::loom::{AtomicU32, Ordering};
use crate::os::Deadline;
use crate::segment::{HEADER_LEN, Kind, Layout, Shared, SharedState};
use crate::sync::{LockError, LockResult, RLock, RLockGuard, RLockState};
use element::atomic;

/// Bytes from the start of an array's segment file to its first element.
pub const DATA_OFFSET: usize = HEADER_LEN + size_of::<ArrayState>();

/// `flags` bit: the array has a lock (Python's `lock=True`).
const HAS_LOCK: u32 = 1;

/// The 64 bytes between the segment header and the elements.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ArrayState {
    /// The array's lock, used only when `flags & HAS_LOCK`.
    lock: RLockState,
    /// [`HAS_LOCK`] or 0, written before the segment is published; read once
    /// at open (any value is harmless: other bits are ignored).
    flags: AtomicU32,
    _reserved: [AtomicU32; 9],
}

const _: () = assert!(size_of::<ArrayState>() == 64, "elements start at file offset 128 (documented for Python)");

/// Creation parameters of an array.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArrayParams {
    code: Typecode,
    len: usize,
    lock: bool,
}

// SAFETY: repr(C), atomics only (RLockState is repr(C) atomics), align 8, no
// pointers; `flags` is read once and any value is harmless; the tail
// (elements) is accessed only atomically or by copies under the lock.
unsafe impl SharedState for ArrayState {
    const KIND: Kind = Kind::Array;
    type Params = ArrayParams;

    fn zeroed() -> Self {
        ArrayState { lock: RLockState::zeroed(), flags: AtomicU32::new(0), _reserved: Default::default() }
    }

    fn init(&self, params: ArrayParams) {
        self.flags.store(if params.lock { HAS_LOCK } else { 0 }, Ordering::Relaxed);
    }

    fn layout(params: &ArrayParams) -> Result<Layout> {
        let tail_len = params
            .len
            .checked_mul(params.code.size())
            .filter(|n| isize::try_from(*n).is_ok())
            .ok_or(Error::InvalidArgument { what: "array length too large for a segment" })?;
        Ok(Layout { type_fp: params.code.fingerprint(), tail_len })
    }

    fn check_layout(found: Layout) -> Result<()> {
        let code = Typecode::from_fingerprint(found.type_fp)?;
        if found.tail_len % code.size() != 0 {
            return Err(Error::mismatch(
                "payload length",
                format!("64 + a multiple of {} bytes (elements of {code})", code.size()),
                64 + found.tail_len,
            ));
        }
        Ok(())
    }
}

/// What every array handle holds: the state, and what was validated at open.
#[derive(Clone)]
pub(crate) struct Core {
    state: Shared<ArrayState>,
    /// From the header's type fingerprint, checked at open; fixed for the
    /// handle's life.
    code: Typecode,
    /// Elements, `tail_len / code.size()`, checked at open.
    len: usize,
    /// The lock in the segment, if the array has one.
    lock: Option<RLock>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("name", &self.name())
            .field("typecode", &self.code.as_char())
            .field("len", &self.len)
            .field("lock", &self.lock.is_some())
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A new array; `fill` writes the zeroed elements (a pointer to the first)
    /// before the segment is published.
    fn create(name: Option<&str>, code: Typecode, len: usize, lock: bool, fill: impl FnOnce(*mut u8)) -> Result<Core> {
        Core::from_state(Shared::create_filled(name, ArrayParams { code, len, lock }, fill)?)
    }

    fn open(name: &str) -> Result<Core> {
        Core::from_state(Shared::open(name)?)
    }

    fn from_state(state: Shared<ArrayState>) -> Result<Core> {
        // The layout was checked by `ArrayState::check_layout` when the
        // handle was made (every `Shared` comes through it).
        let layout = state.layout();
        let code = Typecode::from_fingerprint(layout.type_fp)?;
        let len = layout.tail_len / code.size();
        let has_lock = state.flags.load(Ordering::Relaxed) & HAS_LOCK != 0;
        let lock = has_lock.then(|| RLock::from_state(state.project(|s| &s.lock)));
        Ok(Core { state, code, len, lock })
    }

    fn name(&self) -> Option<&str> {
        self.state.segment().and_then(crate::Segment::name)
    }

    /// Element `i`'s memory; panics like a slice when `i` is out of range.
    #[inline]
    #[track_caller]
    fn slot(&self, i: usize) -> *mut u8 {
        assert!(i < self.len, "index out of bounds: the len is {} but the index is {i}", self.len);
        // SAFETY: i < len and the tail holds len * size bytes (checked at
        // open), so the offset stays inside the mapping.
        unsafe { self.state.tail().add(i * self.code.size()) }
    }

    #[inline]
    #[track_caller]
    fn load(&self, i: usize, order: Ordering) -> u64 {
        // SAFETY: `slot` is in bounds and aligned to the element size (the
        // tail is 64-aligned); element memory is only accessed atomically or
        // by copies under the lock (module docs).
        unsafe { atomic::load(self.slot(i), self.code.size(), order) }
    }

    #[inline]
    #[track_caller]
    fn store(&self, i: usize, bits: u64, order: Ordering) {
        // SAFETY: as in `load`.
        unsafe { atomic::store(self.slot(i), self.code.size(), bits, order) }
    }

    #[inline]
    #[track_caller]
    fn swap(&self, i: usize, bits: u64) -> u64 {
        // SAFETY: as in `load`.
        unsafe { atomic::swap(self.slot(i), self.code.size(), bits, Ordering::AcqRel) }
    }

    #[inline]
    #[track_caller]
    fn fetch_add(&self, i: usize, bits: u64) -> u64 {
        // SAFETY: as in `load`.
        unsafe { atomic::fetch_add(self.slot(i), self.code.size(), bits, Ordering::AcqRel) }
    }

    #[inline]
    #[track_caller]
    fn fetch_sub(&self, i: usize, bits: u64) -> u64 {
        // SAFETY: as in `load`.
        unsafe { atomic::fetch_sub(self.slot(i), self.code.size(), bits, Ordering::AcqRel) }
    }

    #[inline]
    #[track_caller]
    fn compare_exchange(&self, i: usize, current: u64, new: u64) -> Result<u64, u64> {
        // SAFETY: as in `load`.
        unsafe { atomic::compare_exchange(self.slot(i), self.code.size(), current, new) }
    }

    /// Takes the lock (if the array has one) for a bulk copy. A previous
    /// owner's death does not stop the copy (as in Python); a lock that
    /// cannot be taken ([`Error::Corrupt`]) does.
    fn bulk(&self) -> Result<Option<RLockGuard<'_>>> {
        match self.lock.as_ref().map(RLock::lock) {
            None => Ok(None),
            Some(Ok(g) | Err(LockError::OwnerDied(g))) => Ok(Some(g)),
            Some(Err(LockError::Failed(e))) => Err(e),
        }
    }

    /// Every element's bits, in order, to `each`.
    fn read_all(&self, order: Ordering, mut each: impl FnMut(u64)) {
        for i in 0..self.len {
            each(self.load(i, order));
        }
    }

    /// Stores `bits(i)` into every element; panics unless `n == len` (as
    /// `slice::copy_from_slice`).
    #[track_caller]
    fn write_all(&self, n: usize, order: Ordering, mut bits: impl FnMut(usize) -> u64) {
        assert_eq!(n, self.len, "source slice length ({n}) does not match the array length ({})", self.len);
        for i in 0..n {
            self.store(i, bits(i), order);
        }
    }

    /// The lock, or the error a locking call on a lockless array gets.
    #[inline]
    fn lock_ref(&self) -> Result<&RLock> {
        // A match, not `ok_or`: an eagerly built `Error` costs a drop on the fast path.
        match &self.lock {
            Some(lock) => Ok(lock),
            None => Err(Error::InvalidArgument { what: "the array was created without a lock (lock(false))" }),
        }
    }

    #[inline]
    fn lock_until<'a, G>(
        &'a self,
        deadline: Option<Deadline>,
        wrap: impl FnOnce(RLockGuard<'a>) -> G,
    ) -> LockResult<G> {
        let lock = self.lock_ref().map_err(LockError::Failed)?;
        match lock.lock_until(deadline) {
            Ok(g) => Ok(wrap(g)),
            Err(e) => Err(e.map(wrap)),
        }
    }
}

impl Serialize for Core {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        self.state.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Core {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let state = Shared::<ArrayState>::deserialize(d)?;
        Core::from_state(state).map_err(custom_error::<D::Error>)
    }
}

pub(crate) use crate::codec::custom_error;

/// A shared array of `T` (Python's `multiprocessing.Array`).
///
/// Fixed length, zeroed or filled at creation, with an optional lock in the
/// same segment (on by default, as Python's `lock=True`). Every element access
/// is atomic, so elements may be read and written from any number of processes
/// without the lock and never tear; integer arrays have `fetch_add`,
/// `fetch_sub` and `compare_exchange`. Bulk copies take the lock. Out-of-range
/// indices panic, as slice indexing does; [`Array::get`] returns `None`.
/// [`ArrayBuilder`] makes arrays with another typecode (`c` for bytes, `l` for
/// C `long`), without a lock, or from a slice into a named segment.
/// See the [module docs](crate::array) for the byte layout Python can read.
///
/// # Examples
///
/// Python's `Array('i', [1, 2, 3, 4])` with ten processes adding 100 to
/// element 0:
///
/// ```
/// use shmproc::{Array, Process};
///
/// fn add_100(temp: Array<i32>) {
///     temp.fetch_add(0, 100);
/// }
///
/// let temp = Array::<i32>::from_slice(&[1, 2, 3, 4])?;
/// let mut children = Vec::new();
/// for _ in 0..10 {
///     let mut p = Process::new(add_100, temp.clone());
///     p.start()?;
///     children.push(p);
/// }
/// for mut p in children {
///     p.join()?;
/// }
/// assert_eq!(temp.to_vec()?, [1001, 2, 3, 4]);
/// # Ok::<(), shmproc::Error>(())
/// ```
pub struct Array<T: Element> {
    core: Core,
    _elements: PhantomData<fn() -> T>,
}

impl<T: Element> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array { core: self.core.clone(), _elements: PhantomData }
    }
}

impl<T: Element> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.core, f)
    }
}

impl<T: Element> Array<T> {
    /// Views `core` as an array of `T`, if its typecode holds `T`.
    pub(crate) fn from_core(core: Core) -> Result<Self> {
        if !T::accepts(core.code) {
            return Err(Error::mismatch(
                "element type",
                format!("a typecode for {} such as {}", std::any::type_name::<T>(), T::TYPECODE),
                core.code,
            ));
        }
        Ok(Array { core, _elements: PhantomData })
    }

    /// A new zeroed array of `len` elements with a lock, in an anonymous
    /// segment (shared with child processes).
    pub fn new(len: usize) -> Result<Self> {
        ArrayBuilder::new().zeroed(len)
    }

    /// A new array holding a copy of `values`, with a lock, in an anonymous
    /// segment.
    pub fn from_slice(values: &[T]) -> Result<Self> {
        ArrayBuilder::new().from_slice(values)
    }

    /// A new zeroed array of `len` elements with a lock, in the named segment
    /// `name`, which must not exist.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmproc::Array;
    ///
    /// let a = Array::<f64>::create("shmproc-doc-array", 3)?;
    /// let b = Array::<f64>::open("shmproc-doc-array")?; // e.g. in an unrelated process
    /// b.store(2, 1.5);
    /// assert_eq!(a.load(2), 1.5);
    /// assert!(Array::<i32>::open("shmproc-doc-array").is_err()); // wrong element type
    /// # Ok::<(), shmproc::Error>(())
    /// ```
    pub fn create(name: &str, len: usize) -> Result<Self> {
        ArrayBuilder::new().name(name).zeroed(len)
    }

    /// Opens the array in the named segment `name`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] naming both types if its typecode does not hold `T`,
    /// and the errors of [`Segment::open`](crate::Segment::open).
    pub fn open(name: &str) -> Result<Self> {
        Core::open(name).and_then(Self::from_core)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.core.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.core.len == 0
    }

    /// The array's typecode.
    pub fn typecode(&self) -> Typecode {
        self.core.code
    }

    /// The name of the segment holding the array (`None` if anonymous).
    pub fn name(&self) -> Option<&str> {
        self.core.name()
    }

    /// The array's lock (Python's `get_lock()`), `None` for an array made with
    /// `lock(false)`. It is an [`RLock`]: a thread holding it may still call
    /// the bulk methods, which take it again.
    pub fn get_lock(&self) -> Option<&RLock> {
        self.core.lock.as_ref()
    }

    /// Takes the array's lock and returns a view for indexed and bulk access
    /// under it (Python's `with arr.get_lock(): ...`).
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] with the guard if the previous holder died
    /// holding the lock; `Failed(InvalidArgument)` if the array has no lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let arr = shmproc::Array::<i32>::from_slice(&[10])?;
    /// {
    ///     let g = arr.lock()?;
    ///     g.store(0, g.load(0) - 1); // no other lock holder sees 10 - 1 half done
    /// }
    /// assert_eq!(arr.load(0), 9);
    /// # Ok::<(), shmproc::Error>(())
    /// ```
    #[inline]
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        self.core.lock_until(None, |g| ArrayGuard::new(self, g))
    }

    /// [`Array::lock`], waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<ArrayGuard<'_, T>> {
        self.core.lock_until(Some(Deadline::after(timeout)), |g| ArrayGuard::new(self, g))
    }

    /// Element `i`, or `None` if out of range.
    #[inline]
    pub fn get(&self, i: usize) -> Option<T> {
        (i < self.core.len).then(|| self.load(i))
    }

    /// Element `i` (`Acquire`).
    ///
    /// # Panics
    /// If `i >= len`, as `slice[i]`.
    #[inline]
    #[track_caller]
    pub fn load(&self, i: usize) -> T {
        T::from_bits(self.core.load(i, Ordering::Acquire))
    }

    /// Sets element `i` (`Release`).
    ///
    /// # Panics
    /// If `i >= len`.
    #[inline]
    #[track_caller]
    pub fn store(&self, i: usize, value: T) {
        self.core.store(i, value.to_bits(), Ordering::Release);
    }

    /// Sets element `i` and returns what it held.
    ///
    /// # Panics
    /// If `i >= len`.
    #[inline]
    #[track_caller]
    pub fn swap(&self, i: usize, value: T) -> T {
        T::from_bits(self.core.swap(i, value.to_bits()))
    }

    /// A copy of every element, taken under the lock if the array has one.
    ///
    /// # Errors
    /// Only if the lock is corrupt; a dead previous holder does not stop the
    /// copy (the elements may then be half-updated, as in Python).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let _guard = self.core.bulk()?;
        Ok(self.read_relaxed())
    }

    /// Overwrites every element with `values`, under the lock if the array
    /// has one.
    ///
    /// # Panics
    /// If `values.len() != len`, as `slice::copy_from_slice`.
    #[track_caller]
    pub fn copy_from_slice(&self, values: &[T]) -> Result<()> {
        let _guard = self.core.bulk()?;
        self.core.write_all(values.len(), Ordering::Relaxed, |i| values[i].to_bits());
        Ok(())
    }

    fn read_relaxed(&self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.core.len);
        self.core.read_all(Ordering::Relaxed, |b| out.push(T::from_bits(b)));
        out
    }
}

impl<T: Integer> Array<T> {
    /// Adds `value` to element `i` (wrapping) and returns the previous value:
    /// one atomic instruction, exact under any contention.
    ///
    /// # Panics
    /// If `i >= len`.
    #[inline]
    #[track_caller]
    pub fn fetch_add(&self, i: usize, value: T) -> T {
        T::from_bits(self.core.fetch_add(i, value.to_bits()))
    }

    /// Subtracts `value` from element `i` (wrapping); returns the previous value.
    ///
    /// # Panics
    /// If `i >= len`.
    #[inline]
    #[track_caller]
    pub fn fetch_sub(&self, i: usize, value: T) -> T {
        T::from_bits(self.core.fetch_sub(i, value.to_bits()))
    }

    /// Stores `new` into element `i` if it holds `current`: `Ok(current)`, or
    /// `Err(actual)` with what it held instead.
    ///
    /// # Panics
    /// If `i >= len`.
    #[inline]
    #[track_caller]
    pub fn compare_exchange(&self, i: usize, current: T, new: T) -> Result<T, T> {
        self.core.compare_exchange(i, current.to_bits(), new.to_bits()).map(T::from_bits).map_err(T::from_bits)
    }
}

impl Array<u8> {
    /// Python's `arr.value` for a `c` array: the bytes before the first NUL
    /// (all of them if there is none), read under the lock.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the typecode is not `c`.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmproc::{ArrayBuilder, Typecode};
    ///
    /// // Python's Array('c', 8)
    /// let arr = ArrayBuilder::new().typecode(Typecode::Char).zeroed::<u8>(8)?;
    /// arr.set_value(b"hi")?;
    /// assert_eq!(arr.value()?, b"hi");
    /// assert_eq!(arr.raw()?, b"hi\0\0\0\0\0\0");
    /// assert!(arr.set_value(b"too long!").is_err());
    /// # Ok::<(), shmproc::Error>(())
    /// ```
    pub fn value(&self) -> Result<Vec<u8>> {
        let mut raw = self.raw()?;
        if let Some(nul) = raw.iter().position(|&b| b == 0) {
            raw.truncate(nul);
        }
        Ok(raw)
    }

    /// Python's `arr.value = bytes` for a `c` array: copies `bytes` and, if
    /// they are shorter than the array, a NUL after them.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the typecode is not `c`;
    /// [`Error::InvalidArgument`] if `bytes` is longer than the array (Python:
    /// "byte string too long"), leaving the array unchanged.
    pub fn set_value(&self, bytes: &[u8]) -> Result<()> {
        self.set_bytes(bytes, true)
    }

    /// Python's `arr.raw` for a `c` array: every byte.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the typecode is not `c`.
    pub fn raw(&self) -> Result<Vec<u8>> {
        self.require_char()?;
        self.to_vec()
    }

    /// Python's `arr.raw = bytes` for a `c` array: copies `bytes` over the
    /// first bytes, leaving the rest as it was.
    ///
    /// # Errors
    /// As [`Array::set_value`].
    pub fn set_raw(&self, bytes: &[u8]) -> Result<()> {
        self.set_bytes(bytes, false)
    }

    fn set_bytes(&self, bytes: &[u8], terminate: bool) -> Result<()> {
        self.require_char()?;
        if bytes.len() > self.len() {
            return Err(Error::InvalidArgument { what: "byte string too long for the array" });
        }
        let _guard = self.core.bulk()?;
        for (i, &b) in bytes.iter().enumerate() {
            self.core.store(i, u64::from(b), Ordering::Relaxed);
        }
        if terminate && bytes.len() < self.len() {
            self.core.store(bytes.len(), 0, Ordering::Relaxed);
        }
        Ok(())
    }

    fn require_char(&self) -> Result<()> {
        if self.core.code == Typecode::Char {
            Ok(())
        } else {
            Err(Error::mismatch("element type", Typecode::Char, self.core.code))
        }
    }
}

impl<T: Element> Serialize for Array<T> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        self.core.serialize(s)
    }
}

impl<'de, T: Element> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Array::from_core(Core::deserialize(d)?).map_err(custom_error::<D::Error>)
    }
}

/// Indexed and bulk access to an [`Array`] while holding its lock; releases
/// the lock on drop. Not `Send`.
///
/// Accesses under the guard are `Relaxed` atomics: the lock orders them for
/// every other holder.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Element> {
    array: &'a Array<T>,
    _guard: RLockGuard<'a>,
}

impl<T: Element> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayGuard").field("array", self.array).finish_non_exhaustive()
    }
}

impl<'a, T: Element> ArrayGuard<'a, T> {
    fn new(array: &'a Array<T>, guard: RLockGuard<'a>) -> Self {
        ArrayGuard { array, _guard: guard }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.array.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.array.is_empty()
    }

    /// Element `i`, or `None` if out of range.
    pub fn get(&self, i: usize) -> Option<T> {
        (i < self.len()).then(|| self.load(i))
    }

    /// Element `i`.
    ///
    /// # Panics
    /// If `i >= len`.
    #[inline]
    #[track_caller]
    pub fn load(&self, i: usize) -> T {
        T::from_bits(self.array.core.load(i, Ordering::Relaxed))
    }

    /// Sets element `i`.
    ///
    /// # Panics
    /// If `i >= len`.
    #[inline]
    #[track_caller]
    pub fn store(&self, i: usize, value: T) {
        self.array.core.store(i, value.to_bits(), Ordering::Relaxed);
    }

    /// A copy of every element.
    pub fn to_vec(&self) -> Vec<T> {
        self.array.read_relaxed()
    }

    /// Overwrites every element with `values`.
    ///
    /// # Panics
    /// If `values.len() != len`.
    #[track_caller]
    pub fn copy_from_slice(&self, values: &[T]) {
        self.array.core.write_all(values.len(), Ordering::Relaxed, |i| values[i].to_bits());
    }
}

/// Options for a new [`Array`], [`Value`] or [`DynArray`]: typecode, lock, name.
///
/// # Examples
///
/// ```
/// use shmproc::{ArrayBuilder, Typecode};
///
/// // Python's Array('l', [1, 2], lock=False)
/// let arr = ArrayBuilder::new().typecode(Typecode::Long).lock(false).from_slice(&[1i64, 2])?;
/// assert_eq!(arr.typecode(), Typecode::Long);
/// assert!(arr.get_lock().is_none());
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ArrayBuilder {
    typecode: Option<Typecode>,
    lock: bool,
    name: Option<String>,
}

impl Default for ArrayBuilder {
    fn default() -> Self {
        ArrayBuilder::new()
    }
}

impl ArrayBuilder {
    /// Defaults: the element type's own typecode, a lock, an anonymous segment.
    pub fn new() -> Self {
        ArrayBuilder { typecode: None, lock: true, name: None }
    }

    /// The typecode; it must hold the element type (checked when building).
    #[must_use]
    pub fn typecode(mut self, code: Typecode) -> Self {
        self.typecode = Some(code);
        self
    }

    /// Whether the array gets a lock in its segment (Python's `lock=`; default
    /// true).
    #[must_use]
    pub fn lock(mut self, on: bool) -> Self {
        self.lock = on;
        self
    }

    /// Creates the array in the named segment `name` (which must not exist)
    /// instead of an anonymous one.
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// A zeroed array of `len` elements of `T`.
    pub fn zeroed<T: Element>(&self, len: usize) -> Result<Array<T>> {
        let code = self.code_for::<T>()?;
        Array::from_core(Core::create(self.name.as_deref(), code, len, self.lock, |_| {})?)
    }

    /// An array holding a copy of `values`.
    pub fn from_slice<T: Element>(&self, values: &[T]) -> Result<Array<T>> {
        let code = self.code_for::<T>()?;
        let made = Core::create(self.name.as_deref(), code, values.len(), self.lock, |tail| {
            // The tail is fresh and unpublished: no other process sees it yet,
            // so plain copies would do, but the atomic path costs nothing here.
            for (i, v) in values.iter().enumerate() {
                // SAFETY: `tail` holds values.len() elements of code.size() ==
                // size_of::<T>() bytes, 64-aligned.
                unsafe { atomic::store(tail.add(i * code.size()), code.size(), v.to_bits(), Ordering::Relaxed) };
            }
        })?;
        Array::from_core(made)
    }

    /// A [`Value`] holding `value`.
    pub fn value<T: Element>(&self, value: T) -> Result<Value<T>> {
        self.from_slice(&[value]).and_then(Value::from_array)
    }

    /// A zeroed run-time typed array; the typecode must have been set.
    pub fn dynamic(&self, len: usize) -> Result<DynArray> {
        let code = self.typecode.ok_or(Error::InvalidArgument { what: "a DynArray needs a typecode" })?;
        Core::create(self.name.as_deref(), code, len, self.lock, |_| {}).map(DynArray::from_core)
    }

    fn code_for<T: Element>(&self) -> Result<Typecode> {
        let code = self.typecode.unwrap_or(T::TYPECODE);
        if T::accepts(code) {
            Ok(code)
        } else {
            Err(Error::mismatch(
                "element type",
                format!("a typecode for {} such as {}", std::any::type_name::<T>(), T::TYPECODE),
                code,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_start_at_the_documented_offset() {
        assert_eq!(DATA_OFFSET, 128);
        let arr = Array::<u16>::from_slice(&[1, 2, 3]).unwrap();
        let seg = arr.core.state.segment().unwrap();
        let mut bytes = [0u8; 6];
        seg.read_at(DATA_OFFSET - HEADER_LEN, &mut bytes).unwrap();
        assert_eq!(bytes, [1, 0, 2, 0, 3, 0]);
    }
}
