//! [`Value`]: one shared element (Python's `multiprocessing.Value`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Array, ArrayBuilder, ArrayGuard, Element, Integer, Typecode, custom_error};
use crate::error::{Error, Result};
use crate::sync::{LockResult, RLock};

/// One shared value of `T` (Python's `multiprocessing.Value`): an
/// [`Array`] of length 1, with the same atomicity, lock and layout.
///
/// # Examples
///
/// Python's `with v.get_lock(): v.value += 1`, and the atomic way:
///
/// ```
/// use shmproc::Value;
///
/// let v = Value::new(0.5f64)?;
/// {
///     let g = v.lock()?;
///     g.set(g.get() + 1.0);
/// }
/// assert_eq!(v.get(), 1.5);
///
/// let n = Value::new(0i64)?;
/// n.fetch_add(5);
/// assert_eq!(n.get(), 5);
/// # Ok::<(), shmproc::Error>(())
/// ```
pub struct Value<T: Element> {
    array: Array<T>,
}

impl<T: Element> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value { array: self.array.clone() }
    }
}

impl<T: Element> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("name", &self.name())
            .field("typecode", &self.typecode().as_char())
            .field("value", &self.get())
            .finish()
    }
}

impl<T: Element> Value<T> {
    /// Views a one-element array as a value.
    pub(crate) fn from_array(array: Array<T>) -> Result<Self> {
        if array.len() != 1 {
            return Err(Error::mismatch("array length", "1 element (a Value)", format!("{} elements", array.len())));
        }
        Ok(Value { array })
    }

    /// A new value with a lock, in an anonymous segment.
    pub fn new(value: T) -> Result<Self> {
        ArrayBuilder::new().value(value)
    }

    /// A new value with a lock in the named segment `name`, which must not
    /// exist.
    pub fn create(name: &str, value: T) -> Result<Self> {
        ArrayBuilder::new().name(name).value(value)
    }

    /// Opens the value in the named segment `name`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] naming both if the segment holds another element
    /// type or more than one element, and the errors of [`Array::open`].
    pub fn open(name: &str) -> Result<Self> {
        Array::open(name).and_then(Self::from_array)
    }

    /// The value (`Acquire`).
    #[inline]
    pub fn get(&self) -> T {
        self.array.load(0)
    }

    /// Sets the value (`Release`).
    #[inline]
    pub fn set(&self, value: T) {
        self.array.store(0, value);
    }

    /// Sets the value and returns the previous one.
    #[inline]
    pub fn swap(&self, value: T) -> T {
        self.array.swap(0, value)
    }

    /// The typecode.
    pub fn typecode(&self) -> Typecode {
        self.array.typecode()
    }

    /// The name of the segment (`None` if anonymous).
    pub fn name(&self) -> Option<&str> {
        self.array.name()
    }

    /// The lock (Python's `get_lock()`), `None` if made with `lock(false)`.
    pub fn get_lock(&self) -> Option<&RLock> {
        self.array.get_lock()
    }

    /// The value as a one-element array (Python's `get_obj()`).
    pub fn as_array(&self) -> &Array<T> {
        &self.array
    }

    /// Takes the lock and returns a view to read and update the value under it.
    ///
    /// # Errors
    /// As [`Array::lock`].
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        self.array.lock().map(ValueGuard).map_err(|e| e.map(ValueGuard))
    }

    /// [`Value::lock`], waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<ValueGuard<'_, T>> {
        self.array.lock_timeout(timeout).map(ValueGuard).map_err(|e| e.map(ValueGuard))
    }
}

impl<T: Integer> Value<T> {
    /// Adds `value` (wrapping); returns the previous value.
    #[inline]
    pub fn fetch_add(&self, value: T) -> T {
        self.array.fetch_add(0, value)
    }

    /// Subtracts `value` (wrapping); returns the previous value.
    #[inline]
    pub fn fetch_sub(&self, value: T) -> T {
        self.array.fetch_sub(0, value)
    }

    /// Stores `new` if the value is `current`: `Ok(current)` or `Err(actual)`.
    #[inline]
    pub fn compare_exchange(&self, current: T, new: T) -> Result<T, T> {
        self.array.compare_exchange(0, current, new)
    }
}

impl<T: Element> Serialize for Value<T> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        self.array.serialize(s)
    }
}

impl<'de, T: Element> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::from_array(Array::deserialize(d)?).map_err(custom_error::<D::Error>)
    }
}

/// The value of a [`Value`] while holding its lock; releases it on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Element>(ArrayGuard<'a, T>);

impl<T: Element> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&self.get()).finish()
    }
}

impl<T: Element> ValueGuard<'_, T> {
    /// The value.
    pub fn get(&self) -> T {
        self.0.load(0)
    }

    /// Sets the value.
    pub fn set(&self, value: T) {
        self.0.store(0, value);
    }
}
