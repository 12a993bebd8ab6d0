//! Element types of shared arrays: Python's typecodes, the Rust types that
//! match them, run-time typed values ([`Scalar`]), and atomic access to one
//! element of shared memory.

use std::ffi::{c_long, c_ulong};
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::loom::raw::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

/// A Python `array`/`ctypes` typecode, with this platform's C sizes.
///
/// | code | C type | size here | Rust element |
/// |---|---|---:|---|
/// | `c` | `char` (Python `bytes` of length 1) | 1 | `u8` |
/// | `b` / `B` | `signed char` / `unsigned char` | 1 | `i8` / `u8` |
/// | `h` / `H` | `short` / `unsigned short` | 2 | `i16` / `u16` |
/// | `i` / `I` | `int` / `unsigned int` | 4 | `i32` / `u32` |
/// | `l` / `L` | `long` / `unsigned long` | `size_of::<c_long>()` (8 on 64-bit Linux) | `c_long` / `c_ulong` |
/// | `q` / `Q` | `long long` / `unsigned long long` | 8 | `i64` / `u64` |
/// | `f` / `d` | `float` / `double` | 4 / 8 | `f32` / `f64` |
/// | `u` | `wchar_t` (Python `str` of length 1) | 4 | `char` |
///
/// # Examples
///
/// ```
/// use shmproc::Typecode;
///
/// let code: Typecode = "d".parse()?;
/// assert_eq!(code, Typecode::Double);
/// assert_eq!((code.as_char(), code.size()), ('d', 8));
/// assert!(Typecode::from_char('z').is_err());
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Typecode {
    /// `c`: C `char`, a byte (Python shows it as a 1-byte `bytes`).
    Char,
    /// `b`: C `signed char`.
    SignedChar,
    /// `B`: C `unsigned char`.
    UnsignedChar,
    /// `h`: C `short`.
    Short,
    /// `H`: C `unsigned short`.
    UnsignedShort,
    /// `i`: C `int`.
    Int,
    /// `I`: C `unsigned int`.
    UnsignedInt,
    /// `l`: C `long`.
    Long,
    /// `L`: C `unsigned long`.
    UnsignedLong,
    /// `q`: C `long long`.
    LongLong,
    /// `Q`: C `unsigned long long`.
    UnsignedLongLong,
    /// `f`: C `float`.
    Float,
    /// `d`: C `double`.
    Double,
    /// `u`: C `wchar_t`, a UTF-32 code unit on Linux.
    WChar,
}

pub(crate) use sealed::Class;

const _: () = assert!(size_of::<libc::wchar_t>() == 4, "'u' elements are Rust chars: wchar_t must be 4 bytes");

impl Typecode {
    /// Every typecode, in the order of the table above.
    pub const ALL: [Typecode; 14] = [
        Typecode::Char,
        Typecode::SignedChar,
        Typecode::UnsignedChar,
        Typecode::Short,
        Typecode::UnsignedShort,
        Typecode::Int,
        Typecode::UnsignedInt,
        Typecode::Long,
        Typecode::UnsignedLong,
        Typecode::LongLong,
        Typecode::UnsignedLongLong,
        Typecode::Float,
        Typecode::Double,
        Typecode::WChar,
    ];

    /// The typecode written as `c`, or [`Error::UnknownTypecode`].
    pub fn from_char(c: char) -> Result<Typecode> {
        Typecode::ALL.into_iter().find(|t| t.as_char() == c).ok_or(Error::UnknownTypecode { found: c.to_string() })
    }

    /// The code's letter, as Python writes it.
    pub const fn as_char(self) -> char {
        match self {
            Typecode::Char => 'c',
            Typecode::SignedChar => 'b',
            Typecode::UnsignedChar => 'B',
            Typecode::Short => 'h',
            Typecode::UnsignedShort => 'H',
            Typecode::Int => 'i',
            Typecode::UnsignedInt => 'I',
            Typecode::Long => 'l',
            Typecode::UnsignedLong => 'L',
            Typecode::LongLong => 'q',
            Typecode::UnsignedLongLong => 'Q',
            Typecode::Float => 'f',
            Typecode::Double => 'd',
            Typecode::WChar => 'u',
        }
    }

    /// Bytes per element: this platform's `sizeof` of the C type.
    pub const fn size(self) -> usize {
        match self {
            Typecode::Char | Typecode::SignedChar | Typecode::UnsignedChar => 1,
            Typecode::Short | Typecode::UnsignedShort => 2,
            Typecode::Int | Typecode::UnsignedInt | Typecode::Float | Typecode::WChar => 4,
            Typecode::Long => size_of::<c_long>(),
            Typecode::UnsignedLong => size_of::<c_ulong>(),
            Typecode::LongLong | Typecode::UnsignedLongLong | Typecode::Double => 8,
        }
    }

    /// The ctypes name of the element type (`c_int`, `c_double`, ...).
    pub const fn c_type(self) -> &'static str {
        match self {
            Typecode::Char => "c_char",
            Typecode::SignedChar => "c_byte",
            Typecode::UnsignedChar => "c_ubyte",
            Typecode::Short => "c_short",
            Typecode::UnsignedShort => "c_ushort",
            Typecode::Int => "c_int",
            Typecode::UnsignedInt => "c_uint",
            Typecode::Long => "c_long",
            Typecode::UnsignedLong => "c_ulong",
            Typecode::LongLong => "c_longlong",
            Typecode::UnsignedLongLong => "c_ulonglong",
            Typecode::Float => "c_float",
            Typecode::Double => "c_double",
            Typecode::WChar => "c_wchar",
        }
    }

    pub(crate) const fn class(self) -> Class {
        match self {
            Typecode::Char => Class::Bytes,
            Typecode::WChar => Class::Wide,
            Typecode::SignedChar | Typecode::Short | Typecode::Int | Typecode::Long | Typecode::LongLong => {
                Class::Signed
            }
            Typecode::UnsignedChar
            | Typecode::UnsignedShort
            | Typecode::UnsignedInt
            | Typecode::UnsignedLong
            | Typecode::UnsignedLongLong => Class::Unsigned,
            Typecode::Float | Typecode::Double => Class::Float,
        }
    }

    /// The header's type fingerprint for arrays of this code: the ASCII letter
    /// in byte 0, the element size in byte 1, zero above.
    pub(crate) const fn fingerprint(self) -> u64 {
        self.as_char() as u64 | (self.size() as u64) << 8
    }

    /// The code a header's type fingerprint names (read from shared memory:
    /// anything else is an error naming what was found).
    pub(crate) fn from_fingerprint(fp: u64) -> Result<Typecode> {
        Typecode::ALL.into_iter().find(|t| t.fingerprint() == fp).ok_or_else(|| {
            let letter = char::from(fp as u8);
            let shown = if letter.is_ascii_graphic() {
                format!(" ('{letter}', {} bytes)", (fp >> 8) as u8)
            } else {
                String::new()
            };
            Error::mismatch("element type", "an array typecode", format!("fingerprint {fp:#x}{shown}"))
        })
    }
}

impl fmt::Display for Typecode {
    /// `'i' (c_int, 4 bytes)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' ({}, {} bytes)", self.as_char(), self.c_type(), self.size())
    }
}

impl TryFrom<char> for Typecode {
    type Error = Error;
    fn try_from(c: char) -> Result<Typecode> {
        Typecode::from_char(c)
    }
}

impl FromStr for Typecode {
    type Err = Error;
    /// A one-letter string, as Python takes it.
    fn from_str(s: &str) -> Result<Typecode> {
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Typecode::from_char(c),
            _ => Err(Error::UnknownTypecode { found: s.to_owned() }),
        }
    }
}

/// A Rust type that can be the element of an [`Array`](crate::Array): one for
/// each typecode's class and size (see [`Typecode`]). Sealed.
pub trait Element: sealed::Repr + Copy + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// The typecode arrays of this type get unless another one is asked for
    /// (`u8` can also be `c`, `i64` also `l`, `u64` also `L`).
    const TYPECODE: Typecode;

    /// Whether arrays of `code` hold this type.
    fn accepts(code: Typecode) -> bool {
        code.size() == size_of::<Self>()
            && (code.class() == Self::CLASS || (code.class() == Class::Bytes && Self::CLASS == Class::Unsigned))
    }
}

/// Integer elements, which have `fetch_add`, `fetch_sub` and
/// `compare_exchange`. Sealed.
pub trait Integer: Element {}

pub(crate) mod sealed {
    use super::Scalar;

    /// What kind of value an element holds; with the size it decides which
    /// Rust types and [`Scalar`]s fit a typecode.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Class {
        Signed,
        Unsigned,
        Float,
        /// `c`: a byte that Python shows as `bytes`.
        Bytes,
        /// `u`: a character.
        Wide,
    }

    /// How an element is stored: its class, and its bits (zero-extended to 64).
    pub trait Repr: Sized {
        const CLASS: Class;
        fn to_bits(self) -> u64;
        /// Any bits are some value (a peer may write anything).
        fn from_bits(bits: u64) -> Self;
        fn to_scalar(self) -> Scalar;
    }
}

macro_rules! elements {
    ($($ty:ty => $code:ident, $class:ident, $scalar:ident, $int:tt, |$b:ident| $from:expr, |$v:ident| $to:expr;)*) => {$(
        impl sealed::Repr for $ty {
            const CLASS: Class = Class::$class;
            #[inline]
            fn to_bits(self) -> u64 {
                let $v = self;
                $to
            }
            #[inline]
            fn from_bits($b: u64) -> Self {
                $from
            }
            fn to_scalar(self) -> Scalar {
                Scalar::$scalar(self)
            }
        }
        impl Element for $ty {
            const TYPECODE: Typecode = Typecode::$code;
        }
        elements!(@int $int $ty);
    )*};
    (@int int $ty:ty) => { impl Integer for $ty {} };
    (@int - $ty:ty) => {};
}

elements! {
    i8 => SignedChar, Signed, I8, int, |b| b as u8 as i8, |v| v as u8 as u64;
    u8 => UnsignedChar, Unsigned, U8, int, |b| b as u8, |v| v as u64;
    i16 => Short, Signed, I16, int, |b| b as u16 as i16, |v| v as u16 as u64;
    u16 => UnsignedShort, Unsigned, U16, int, |b| b as u16, |v| v as u64;
    i32 => Int, Signed, I32, int, |b| b as u32 as i32, |v| v as u32 as u64;
    u32 => UnsignedInt, Unsigned, U32, int, |b| b as u32, |v| v as u64;
    i64 => LongLong, Signed, I64, int, |b| b as i64, |v| v as u64;
    u64 => UnsignedLongLong, Unsigned, U64, int, |b| b, |v| v;
    f32 => Float, Float, F32, -, |b| f32::from_bits(b as u32), |v| v.to_bits() as u64;
    f64 => Double, Float, F64, -, |b| f64::from_bits(b), |v| v.to_bits();
    // A peer may write a value that is no char (a surrogate, > 0x10FFFF):
    // it reads as U+FFFD, in-bounds wrong data (SPEC §3).
    char => WChar, Wide, WChar, -, |b| char::from_u32(b as u32).unwrap_or(char::REPLACEMENT_CHARACTER), |v| v as u64;
}

/// One element of a [`DynArray`](crate::DynArray), typed at run time.
///
/// # Examples
///
/// ```
/// use shmproc::{Scalar, Typecode};
///
/// assert_eq!(Scalar::from(7i32).typecode(), Typecode::Int);
/// assert_eq!(Scalar::F64(2.5).as_f64(), 2.5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Scalar {
    /// `c`.
    Char(u8),
    /// `b`.
    I8(i8),
    /// `B`.
    U8(u8),
    /// `h`.
    I16(i16),
    /// `H`.
    U16(u16),
    /// `i`.
    I32(i32),
    /// `I`.
    U32(u32),
    /// `q`, and `l` where C `long` is 64 bits.
    I64(i64),
    /// `Q`, and `L` where C `unsigned long` is 64 bits.
    U64(u64),
    /// `f`.
    F32(f32),
    /// `d`.
    F64(f64),
    /// `u`.
    WChar(char),
}

impl Scalar {
    /// The value of `code` whose bits are `bits` (zero-extended).
    pub(crate) fn from_bits(code: Typecode, bits: u64) -> Scalar {
        use sealed::Repr;
        match (code.class(), code.size()) {
            (Class::Bytes, _) => Scalar::Char(u8::from_bits(bits)),
            (Class::Signed, 1) => Scalar::I8(i8::from_bits(bits)),
            (Class::Signed, 2) => Scalar::I16(i16::from_bits(bits)),
            (Class::Signed, 4) => Scalar::I32(i32::from_bits(bits)),
            (Class::Signed, _) => Scalar::I64(i64::from_bits(bits)),
            (Class::Unsigned, 1) => Scalar::U8(u8::from_bits(bits)),
            (Class::Unsigned, 2) => Scalar::U16(u16::from_bits(bits)),
            (Class::Unsigned, 4) => Scalar::U32(u32::from_bits(bits)),
            (Class::Unsigned, _) => Scalar::U64(u64::from_bits(bits)),
            (Class::Float, 4) => Scalar::F32(<f32 as Repr>::from_bits(bits)),
            (Class::Float, _) => Scalar::F64(<f64 as Repr>::from_bits(bits)),
            (Class::Wide, _) => Scalar::WChar(char::from_bits(bits)),
        }
    }

    /// The value's bits, zero-extended.
    pub(crate) fn to_bits(self) -> u64 {
        use sealed::Repr;
        match self {
            Scalar::Char(v) | Scalar::U8(v) => Repr::to_bits(v),
            Scalar::I8(v) => Repr::to_bits(v),
            Scalar::I16(v) => Repr::to_bits(v),
            Scalar::U16(v) => Repr::to_bits(v),
            Scalar::I32(v) => Repr::to_bits(v),
            Scalar::U32(v) => Repr::to_bits(v),
            Scalar::I64(v) => Repr::to_bits(v),
            Scalar::U64(v) => Repr::to_bits(v),
            Scalar::F32(v) => Repr::to_bits(v),
            Scalar::F64(v) => Repr::to_bits(v),
            Scalar::WChar(v) => Repr::to_bits(v),
        }
    }

    /// The typecode this value is an element of by default.
    pub fn typecode(self) -> Typecode {
        match self {
            Scalar::Char(_) => Typecode::Char,
            Scalar::I8(_) => i8::TYPECODE,
            Scalar::U8(_) => u8::TYPECODE,
            Scalar::I16(_) => i16::TYPECODE,
            Scalar::U16(_) => u16::TYPECODE,
            Scalar::I32(_) => i32::TYPECODE,
            Scalar::U32(_) => u32::TYPECODE,
            Scalar::I64(_) => i64::TYPECODE,
            Scalar::U64(_) => u64::TYPECODE,
            Scalar::F32(_) => f32::TYPECODE,
            Scalar::F64(_) => f64::TYPECODE,
            Scalar::WChar(_) => char::TYPECODE,
        }
    }

    /// Whether this value can be stored in an array of `code`: same class and
    /// size (a `U8` and a `Char` fit both `B` and `c`).
    pub fn fits(self, code: Typecode) -> bool {
        let own = self.typecode();
        own.size() == code.size()
            && (own.class() == code.class()
                || matches!(
                    (own.class(), code.class()),
                    (Class::Bytes, Class::Unsigned) | (Class::Unsigned, Class::Bytes)
                ))
    }

    /// The value as an `f64` (rounded for integers beyond 2^53; a character's
    /// code point).
    #[allow(clippy::cast_precision_loss)]
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::Char(v) | Scalar::U8(v) => f64::from(v),
            Scalar::I8(v) => f64::from(v),
            Scalar::I16(v) => f64::from(v),
            Scalar::U16(v) => f64::from(v),
            Scalar::I32(v) => f64::from(v),
            Scalar::U32(v) => f64::from(v),
            Scalar::I64(v) => v as f64,
            Scalar::U64(v) => v as f64,
            Scalar::F32(v) => f64::from(v),
            Scalar::F64(v) => v,
            Scalar::WChar(v) => f64::from(u32::from(v)),
        }
    }
}

impl<T: Element> From<T> for Scalar {
    fn from(v: T) -> Scalar {
        v.to_scalar()
    }
}

/// Atomic access to one element of shared memory, by size.
///
/// # Safety (of every function here)
///
/// `p` must point to `size` bytes (1, 2, 4 or 8) aligned to `size`, inside a
/// mapping that outlives the call, which other threads and processes access
/// only atomically (or by copies under the array's lock, see `mod.rs`).
// `u64::from` widens the 1-, 2- and 4-byte arms; on the 8-byte arm it is the
// identity, which clippy flags.
#[allow(clippy::useless_conversion)]
pub(crate) mod atomic {
    use super::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

    macro_rules! by_size {
        ($size:expr, $p:expr, |$a:ident| $op:expr) => {
            // SAFETY: the caller guarantees `p` is valid, aligned to `size`
            // and only accessed atomically (module docs); each arm reads
            // exactly `size` bytes.
            unsafe {
                match $size {
                    1 => {
                        let $a = AtomicU8::from_ptr($p);
                        $op
                    }
                    2 => {
                        let $a = AtomicU16::from_ptr($p.cast());
                        $op
                    }
                    4 => {
                        let $a = AtomicU32::from_ptr($p.cast());
                        $op
                    }
                    _ => {
                        let $a = AtomicU64::from_ptr($p.cast());
                        $op
                    }
                }
            }
        };
    }

    /// Loads the element's bits, zero-extended.
    #[inline]
    pub(crate) unsafe fn load(p: *mut u8, size: usize, order: Ordering) -> u64 {
        by_size!(size, p, |a| u64::from(a.load(order)))
    }

    /// Stores the low `size` bytes of `bits`.
    #[inline]
    pub(crate) unsafe fn store(p: *mut u8, size: usize, bits: u64, order: Ordering) {
        by_size!(size, p, |a| a.store(bits as _, order));
    }

    /// Swaps in the low `size` bytes of `bits`; returns the old bits.
    #[inline]
    pub(crate) unsafe fn swap(p: *mut u8, size: usize, bits: u64, order: Ordering) -> u64 {
        by_size!(size, p, |a| u64::from(a.swap(bits as _, order)))
    }

    /// Wrapping add of the low `size` bytes of `bits` (two's complement: the
    /// same bits for signed and unsigned elements); returns the old bits.
    #[inline]
    pub(crate) unsafe fn fetch_add(p: *mut u8, size: usize, bits: u64, order: Ordering) -> u64 {
        by_size!(size, p, |a| u64::from(a.fetch_add(bits as _, order)))
    }

    /// Wrapping subtract, as [`fetch_add`].
    #[inline]
    pub(crate) unsafe fn fetch_sub(p: *mut u8, size: usize, bits: u64, order: Ordering) -> u64 {
        by_size!(size, p, |a| u64::from(a.fetch_sub(bits as _, order)))
    }

    /// Compare-and-exchange of the element's bits (`AcqRel` on success,
    /// `Acquire` on failure); `Ok(old)` if it held `current`, else `Err(actual)`.
    #[inline]
    pub(crate) unsafe fn compare_exchange(p: *mut u8, size: usize, current: u64, new: u64) -> Result<u64, u64> {
        by_size!(size, p, |a| a
            .compare_exchange(current as _, new as _, Ordering::AcqRel, Ordering::Acquire)
            .map(u64::from)
            .map_err(u64::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_from_its_letter_and_has_its_c_size() {
        for code in Typecode::ALL {
            assert_eq!(Typecode::from_char(code.as_char()).unwrap(), code);
            assert_eq!(code.as_char().to_string().parse::<Typecode>().unwrap(), code);
            assert_eq!(Typecode::from_fingerprint(code.fingerprint()).unwrap(), code);
        }
        assert_eq!(Typecode::Long.size(), size_of::<c_long>());
        assert_eq!(Typecode::Int.size(), size_of::<std::ffi::c_int>());
        assert_eq!(Typecode::WChar.size(), size_of::<libc::wchar_t>());
    }

    #[test]
    fn unknown_codes_are_named_in_the_error() {
        for bad in ["z", "", "ii", "é"] {
            let e = bad.parse::<Typecode>().unwrap_err();
            assert!(matches!(e, Error::UnknownTypecode { .. }), "{e}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let e = Typecode::from_fingerprint(u64::from(b'z') | 1 << 8).unwrap_err();
        assert!(e.to_string().contains("'z'"), "{e}");
        // The right letter with the wrong size is refused too.
        assert!(Typecode::from_fingerprint(u64::from(b'i') | 8 << 8).is_err());
    }

    #[test]
    fn rust_types_accept_the_codes_of_their_class_and_size() {
        assert!(u8::accepts(Typecode::Char) && u8::accepts(Typecode::UnsignedChar));
        assert!(!u8::accepts(Typecode::SignedChar));
        assert!(i64::accepts(Typecode::LongLong) && i64::accepts(Typecode::Long) == (size_of::<c_long>() == 8));
        assert!(!i32::accepts(Typecode::Float) && !f32::accepts(Typecode::Int));
        assert!(char::accepts(Typecode::WChar) && !u32::accepts(Typecode::WChar));
        for code in Typecode::ALL {
            assert!(Scalar::from_bits(code, 0).fits(code), "{code}");
        }
    }

    #[test]
    fn bits_round_trip_and_any_bits_are_a_value() {
        use sealed::Repr;
        assert_eq!(<i8 as Repr>::from_bits(Repr::to_bits(-5i8)), -5);
        assert_eq!(<f32 as Repr>::from_bits(Repr::to_bits(1.5f32)).to_bits(), 1.5f32.to_bits());
        assert_eq!(<char as Repr>::from_bits(0xD800), char::REPLACEMENT_CHARACTER);
        assert_eq!(Scalar::from_bits(Typecode::Short, Scalar::I16(-2).to_bits()), Scalar::I16(-2));
    }
}
