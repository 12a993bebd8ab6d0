//! [`DynArray`]: a shared array whose typecode is chosen, or discovered, at
//! run time.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Array, ArrayBuilder, Core, Element, Scalar, Typecode};
use crate::error::{Error, Result};
use crate::loom::Ordering;
use crate::sync::RLock;

/// A shared array typed at run time: made from a typecode in a config, or
/// opened with whatever typecode its segment holds. Elements are [`Scalar`]s;
/// [`DynArray::typed`] gives the [`Array<T>`] for fast typed access, after
/// checking that the typecode holds `T`.
///
/// # Examples
///
/// ```
/// use shmproc::{Array, DynArray, Scalar, Typecode};
///
/// let a = Array::<f32>::create("shmproc-doc-dynarray", 2)?;
/// let d = DynArray::open("shmproc-doc-dynarray")?;
/// assert_eq!(d.typecode(), Typecode::Float);
/// d.store(1, Scalar::F32(0.5))?;
/// assert_eq!(a.load(1), 0.5);
/// assert!(d.store(0, Scalar::I32(1)).is_err()); // not an f32
/// assert!(d.typed::<f64>().is_err());
/// assert_eq!(d.typed::<f32>()?.to_vec()?, [0.0, 0.5]);
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Clone)]
pub struct DynArray {
    core: Core,
}

impl fmt::Debug for DynArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.core, f)
    }
}

impl DynArray {
    pub(crate) fn from_core(core: Core) -> Self {
        DynArray { core }
    }

    /// A new zeroed array of `len` elements of `code`, with a lock, in an
    /// anonymous segment.
    pub fn new(code: Typecode, len: usize) -> Result<Self> {
        ArrayBuilder::new().typecode(code).dynamic(len)
    }

    /// A new zeroed array with a lock in the named segment `name`, which must
    /// not exist.
    pub fn create(name: &str, code: Typecode, len: usize) -> Result<Self> {
        ArrayBuilder::new().typecode(code).name(name).dynamic(len)
    }

    /// Opens the array in the named segment `name`, whatever its typecode.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the segment is no array or its typecode or
    /// length is impossible, and the errors of [`Segment::open`](crate::Segment::open).
    pub fn open(name: &str) -> Result<Self> {
        Core::open(name).map(DynArray::from_core)
    }

    /// The typecode.
    pub fn typecode(&self) -> Typecode {
        self.core.code
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.core.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.core.len == 0
    }

    /// The name of the segment (`None` if anonymous).
    pub fn name(&self) -> Option<&str> {
        self.core.name()
    }

    /// The array's lock, `None` if made with `lock(false)`.
    pub fn get_lock(&self) -> Option<&RLock> {
        self.core.lock.as_ref()
    }

    /// Element `i`, or `None` if out of range.
    pub fn get(&self, i: usize) -> Option<Scalar> {
        (i < self.core.len).then(|| self.load(i))
    }

    /// Element `i` (`Acquire`).
    ///
    /// # Panics
    /// If `i >= len`.
    #[track_caller]
    pub fn load(&self, i: usize) -> Scalar {
        Scalar::from_bits(self.core.code, self.core.load(i, Ordering::Acquire))
    }

    /// Sets element `i` (`Release`).
    ///
    /// # Errors
    /// [`Error::Mismatch`] naming both if `value` does not fit the typecode
    /// ([`Scalar::fits`]); the element is unchanged.
    ///
    /// # Panics
    /// If `i >= len`.
    #[track_caller]
    pub fn store(&self, i: usize, value: impl Into<Scalar>) -> Result<()> {
        let value = value.into();
        self.check_fits(value)?;
        self.core.store(i, value.to_bits(), Ordering::Release);
        Ok(())
    }

    /// A copy of every element, under the lock if there is one.
    ///
    /// # Errors
    /// As [`Array::to_vec`].
    pub fn to_vec(&self) -> Result<Vec<Scalar>> {
        let _guard = self.core.bulk()?;
        let mut out = Vec::with_capacity(self.core.len);
        self.core.read_all(Ordering::Relaxed, |b| out.push(Scalar::from_bits(self.core.code, b)));
        Ok(out)
    }

    /// Overwrites every element, under the lock if there is one.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if any value does not fit (nothing is written).
    ///
    /// # Panics
    /// If `values.len() != len`.
    #[track_caller]
    pub fn copy_from_slice(&self, values: &[Scalar]) -> Result<()> {
        for v in values {
            self.check_fits(*v)?;
        }
        let _guard = self.core.bulk()?;
        self.core.write_all(values.len(), Ordering::Relaxed, |i| values[i].to_bits());
        Ok(())
    }

    /// The same array as an [`Array<T>`].
    ///
    /// # Errors
    /// [`Error::Mismatch`] naming both types if the typecode does not hold `T`.
    pub fn typed<T: Element>(&self) -> Result<Array<T>> {
        Array::from_core(self.core.clone())
    }

    fn check_fits(&self, value: Scalar) -> Result<()> {
        if value.fits(self.core.code) {
            Ok(())
        } else {
            Err(Error::mismatch("element type", self.core.code, format!("{value:?}")))
        }
    }
}

impl<T: Element> From<Array<T>> for DynArray {
    fn from(array: Array<T>) -> Self {
        DynArray { core: array.core }
    }
}

impl<T: Element> TryFrom<DynArray> for Array<T> {
    type Error = Error;
    fn try_from(array: DynArray) -> Result<Self> {
        Array::from_core(array.core)
    }
}

impl Serialize for DynArray {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        self.core.serialize(s)
    }
}

impl<'de> Deserialize<'de> for DynArray {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Core::deserialize(d).map(DynArray::from_core)
    }
}
