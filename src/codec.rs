//! The one seam for turning values into bytes and back (postcard today).
//!
//! Process arguments and results, and later queue and pipe messages, go through
//! these two functions only, so that the wire format can change in one place.
//! Decoding is a trust boundary: bytes may come from any peer, and a malformed
//! input gives [`Error::Codec`], never a panic.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

thread_local! {
    /// The message of the last custom (de)serialisation error raised by a
    /// shmproc type: postcard's error type keeps no message.
    static CUSTOM: RefCell<Option<String>> = const { RefCell::new(None) };
}

thread_local! {
    /// A scratch buffer per thread for messages on their way into or out of
    /// shared memory, kept between calls so that a stream of messages
    /// allocates nothing (see [`with_scratch`]).
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The most scratch capacity kept between calls: one huge message does not
/// pin its buffer for the rest of the thread's life.
const SCRATCH_KEEP: usize = 1 << 20;

/// Runs `f` with this thread's scratch buffer (empty, with whatever capacity
/// earlier calls left). Re-entrant: a nested call gets a fresh buffer.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = SCRATCH.take();
    buf.clear();
    let r = f(&mut buf);
    if buf.capacity() <= SCRATCH_KEEP {
        SCRATCH.set(buf);
    }
    r
}

/// Records `msg` as the reason of the custom serde error about to be returned.
pub(crate) fn note_custom(msg: &dyn std::fmt::Display) {
    CUSTOM.with(|c| *c.borrow_mut() = Some(msg.to_string()));
}

/// A serde error carrying `e`, recorded so that the codec's message names it
/// (for handles whose validation fails while they are decoded).
pub(crate) fn custom_error<E: serde::de::Error>(e: Error) -> E {
    note_custom(&e);
    E::custom(e)
}

/// Describes a postcard error, with the recorded reason of a custom one.
fn describe(e: &postcard::Error) -> String {
    let noted = CUSTOM.with(|c| c.borrow_mut().take());
    match (e, noted) {
        (postcard::Error::SerdeDeCustom | postcard::Error::SerdeSerCustom, Some(msg)) => msg,
        _ => e.to_string(),
    }
}

/// Encodes `value`.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Encodes `value` into `out`, which is cleared first and keeps its
/// allocation: callers that encode one message after another reuse one
/// buffer instead of growing a new one each time.
pub(crate) fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    /// A postcard output that appends to a vector (which always has room).
    struct Append<'a>(&'a mut Vec<u8>);
    impl postcard::ser_flavors::Flavor for Append<'_> {
        type Output = ();
        #[inline]
        fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
            append(self.0, data);
            Ok(())
        }
        #[inline]
        fn try_push(&mut self, data: u8) -> postcard::Result<()> {
            self.0.push(data);
            Ok(())
        }
        fn finalize(self) -> postcard::Result<()> {
            Ok(())
        }
    }
    out.clear();
    CUSTOM.with(|c| c.borrow_mut().take());
    postcard::serialize_with_flavor(value, Append(out))
        .map_err(|e| Error::Codec { detail: format!("encoding: {}", describe(&e)) })
}

/// Appends `bytes` to `out`. Most pieces postcard hands over are a varint or
/// a single byte: those go in by a loop the compiler inlines, not a call to
/// `memcpy` per piece (which was most of the cost of encoding a `Vec<u64>`).
#[inline]
pub(crate) fn append(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() <= 16 {
        out.reserve(bytes.len());
        for &b in bytes {
            out.push(b);
        }
    } else {
        out.extend_from_slice(bytes);
    }
}

/// Encodes `value` through `sink`, which takes the encoding's bytes in order
/// and says whether it had room for them: `Ok(true)` once all of it went in,
/// `Ok(false)` as soon as the sink is out of room (what it took is then a
/// truncated encoding, to be thrown away). For writers that encode straight
/// into their destination, with no buffer between.
pub(crate) fn encode_to<T: Serialize + ?Sized>(value: &T, mut sink: impl FnMut(&[u8]) -> bool) -> Result<bool> {
    /// A postcard output that hands everything to the sink.
    struct Sink<F>(F);
    impl<F: FnMut(&[u8]) -> bool> postcard::ser_flavors::Flavor for Sink<F> {
        type Output = ();
        #[inline]
        fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
            if (self.0)(data) { Ok(()) } else { Err(postcard::Error::SerializeBufferFull) }
        }
        #[inline]
        fn try_push(&mut self, data: u8) -> postcard::Result<()> {
            self.try_extend(&[data])
        }
        fn finalize(self) -> postcard::Result<()> {
            Ok(())
        }
    }
    CUSTOM.with(|c| c.borrow_mut().take());
    // Once the sink has refused, everything after is refused too, and the
    // outcome is "out of room" whatever postcard returns: a `Serialize` impl
    // may swallow the error, and postcard turns it into another in
    // `collect_str`, so its error alone does not say the sink ran out (nor
    // its success that nothing was left out).
    let mut refused = false;
    let outcome = postcard::serialize_with_flavor(
        value,
        Sink(|data: &[u8]| {
            refused = refused || !sink(data);
            !refused
        }),
    );
    match outcome {
        _ if refused => Ok(false),
        Ok(()) => Ok(true),
        Err(e) => Err(Error::Codec { detail: format!("encoding: {}", describe(&e)) }),
    }
}

/// How deep a decoded value may nest (sequences, maps, options, structs,
/// newtypes, enums: each a level, so a linked list of `Option<Box<Node>>`
/// takes two per node). Decoding recurses once per level, so without a
/// bound a peer's bytes that nest a recursive type a million deep would
/// overflow the stack: an abort, not an error (found by the
/// `peer_messages` fuzz target). 1024 levels, about Python's recursion
/// limit, decode within 2 MiB of stack (a thread's default) even in a
/// debug build; a value nested deeper encodes, but its receiver gets
/// `Error::Codec`.
pub(crate) const MAX_DEPTH: u32 = 1024;

/// Decodes a `T` that must fill `bytes` exactly, nested at most
/// [`MAX_DEPTH`] deep.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    CUSTOM.with(|c| c.borrow_mut().take());
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let decoded = T::deserialize(depth::Limited { de: &mut de, left: MAX_DEPTH }).and_then(|v| Ok((v, de.finalize()?)));
    match decoded {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Error::Codec { detail: format!("{} trailing bytes after the value", rest.len()) }),
        Err(e) => Err(Error::Codec {
            detail: format!("decoding {} from {} bytes: {}", std::any::type_name::<T>(), bytes.len(), describe(&e)),
        }),
    }
}

/// A deserializer that counts how deep the value nests and refuses to go
/// past a bound: it wraps every nested deserializer, visitor and access a
/// value's decoding goes through, so each level it enters costs one of
/// `left`. Scalars pass straight through.
mod depth {
    use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

    /// A deserializer with `left` levels of nesting still allowed.
    pub(super) struct Limited<D> {
        pub(super) de: D,
        pub(super) left: u32,
    }

    /// A visitor whose nested values get `left` levels.
    struct Wrap<V> {
        v: V,
        left: u32,
    }

    /// A seed whose value gets `left` levels.
    struct Seed<S> {
        seed: S,
        left: u32,
    }

    /// Sequence, map, enum and variant accesses whose values get `left`.
    struct Access<A> {
        a: A,
        left: u32,
    }

    impl<D> Limited<D> {
        /// One level down, or an error at the bound.
        #[inline]
        fn enter<'de, V>(self, v: V) -> Result<(D, Wrap<V>), D::Error>
        where
            D: Deserializer<'de>,
        {
            if self.left == 0 {
                let msg = format!("the value nests deeper than {} levels", super::MAX_DEPTH);
                super::note_custom(&msg);
                return Err(de::Error::custom(msg));
            }
            Ok((self.de, Wrap { v, left: self.left - 1 }))
        }
    }

    /// Scalar methods: no nesting, forwarded as they are.
    macro_rules! scalars {
        ($($method:ident)*) => {$(
            #[inline]
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.de.$method(visitor)
            }
        )*};
    }

    /// Compound methods: one level down.
    macro_rules! nested {
        ($($method:ident($($arg:ident: $t:ty),*))*) => {$(
            #[inline]
            fn $method<V: Visitor<'de>>(self, $($arg: $t,)* visitor: V) -> Result<V::Value, D::Error> {
                let (de, v) = self.enter(visitor)?;
                de.$method($($arg,)* v)
            }
        )*};
    }

    impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<D> {
        type Error = D::Error;

        scalars! {
            deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
            deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128 deserialize_f32
            deserialize_f64 deserialize_char deserialize_str deserialize_string deserialize_bytes
            deserialize_byte_buf deserialize_unit deserialize_identifier
        }
        nested! {
            deserialize_any() deserialize_option() deserialize_seq() deserialize_map() deserialize_ignored_any()
            deserialize_newtype_struct(name: &'static str)
            deserialize_tuple(len: usize)
            deserialize_tuple_struct(name: &'static str, len: usize)
            deserialize_struct(name: &'static str, fields: &'static [&'static str])
            deserialize_enum(name: &'static str, variants: &'static [&'static str])
        }

        #[inline]
        fn deserialize_unit_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.de.deserialize_unit_struct(name, visitor)
        }

        #[inline]
        fn is_human_readable(&self) -> bool {
            self.de.is_human_readable()
        }
    }

    /// Scalar visits: forwarded as they are.
    macro_rules! visits {
        ($($method:ident($t:ty))*) => {$(
            #[inline]
            fn $method<E: de::Error>(self, value: $t) -> Result<V::Value, E> {
                self.v.$method(value)
            }
        )*};
    }

    impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
        type Value = V::Value;

        #[inline]
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.v.expecting(f)
        }

        visits! {
            visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64) visit_i128(i128)
            visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64) visit_u128(u128) visit_f32(f32)
            visit_f64(f64) visit_char(char) visit_str(&str) visit_borrowed_str(&'de str) visit_string(String)
            visit_bytes(&[u8]) visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
        }

        #[inline]
        fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
            self.v.visit_none()
        }

        #[inline]
        fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
            self.v.visit_unit()
        }

        #[inline]
        fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
            self.v.visit_some(Limited { de, left: self.left })
        }

        #[inline]
        fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
            self.v.visit_newtype_struct(Limited { de, left: self.left })
        }

        #[inline]
        fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
            self.v.visit_seq(Access { a, left: self.left })
        }

        #[inline]
        fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
            self.v.visit_map(Access { a, left: self.left })
        }

        #[inline]
        fn visit_enum<A: EnumAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
            self.v.visit_enum(Access { a, left: self.left })
        }
    }

    impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
        type Value = S::Value;

        #[inline]
        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
            self.seed.deserialize(Limited { de, left: self.left })
        }
    }

    impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Access<A> {
        type Error = A::Error;

        #[inline]
        fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
            self.a.next_element_seed(Seed { seed, left: self.left })
        }

        #[inline]
        fn size_hint(&self) -> Option<usize> {
            self.a.size_hint()
        }
    }

    impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<A> {
        type Error = A::Error;

        #[inline]
        fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
            self.a.next_key_seed(Seed { seed, left: self.left })
        }

        #[inline]
        fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
            self.a.next_value_seed(Seed { seed, left: self.left })
        }

        #[inline]
        fn size_hint(&self) -> Option<usize> {
            self.a.size_hint()
        }
    }

    impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Access<A> {
        type Error = A::Error;
        type Variant = Access<A::Variant>;

        #[inline]
        fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self::Variant), A::Error> {
            let left = self.left;
            let (value, variant) = self.a.variant_seed(Seed { seed, left })?;
            Ok((value, Access { a: variant, left }))
        }
    }

    impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Access<A> {
        type Error = A::Error;

        #[inline]
        fn unit_variant(self) -> Result<(), A::Error> {
            self.a.unit_variant()
        }

        #[inline]
        fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
            self.a.newtype_variant_seed(Seed { seed, left: self.left })
        }

        #[inline]
        fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
            self.a.tuple_variant(len, Wrap { v: visitor, left: self.left })
        }

        #[inline]
        fn struct_variant<V: Visitor<'de>>(
            self,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, A::Error> {
            self.a.struct_variant(fields, Wrap { v: visitor, left: self.left })
        }
    }
}

/// A byte string that encodes as one: a length and the bytes, copied in one
/// go (Python's `bytes` in a message).
///
/// serde encodes a `Vec<u8>` as a sequence, one element at a time; for a
/// 64-byte message through an [`ObjectQueue`](crate::ObjectQueue) that was
/// more than half the cost of a put and a get. `Bytes` (or any type that
/// serialises with `serialize_bytes`, such as `serde_bytes::ByteBuf`) is
/// encoded with one copy. The two encodings differ: a queue of `Bytes` and a
/// queue of `Vec<u8>` are different types and do not open each other.
///
/// # Examples
///
/// ```
/// use shmproc::{Bytes, ObjectQueue};
///
/// let q = ObjectQueue::<Bytes>::new(4096)?;
/// q.put(Bytes::from(&b"x"[..]))?;
/// assert_eq!(&*q.get()?, b"x");
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// The bytes, as a `Vec`.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl std::ops::Deref for Bytes {
    type Target = Vec<u8>;
    #[inline]
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Bytes {
    #[inline]
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl AsRef<[u8]> for Bytes {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for Bytes {
    #[inline]
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl From<Vec<u8>> for Bytes {
    #[inline]
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl From<&[u8]> for Bytes {
    #[inline]
    fn from(v: &[u8]) -> Self {
        Bytes(v.to_vec())
    }
}

impl From<Bytes> for Vec<u8> {
    #[inline]
    fn from(b: Bytes) -> Self {
        b.0
    }
}

impl Serialize for Bytes {
    #[inline]
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Bytes {
    #[inline]
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Bytes;
            #[inline]
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            #[inline]
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            #[inline]
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> std::result::Result<Bytes, E> {
                Ok(Bytes(v))
            }
            #[inline]
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Bytes, A::Error> {
                // Self-describing formats may hand bytes over as a sequence.
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recursive type, as a user's message type may be.
    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    enum Tree {
        Leaf,
        Node(Vec<Tree>),
    }

    /// A tree `depth` nodes deep, as its encoding.
    fn nested(depth: usize) -> Vec<u8> {
        // Node is variant 1; a one-element vector; ...; then a Leaf (0).
        let mut bytes = [1u8, 1].repeat(depth);
        bytes.push(0);
        bytes
    }

    #[test]
    fn values_nested_past_the_bound_are_an_error_not_a_stack_overflow() {
        // Each Node is two levels (the enum, the vector).
        let deepest = (MAX_DEPTH / 2) as usize - 1;
        let tree = decode::<Tree>(&nested(deepest)).unwrap();
        assert_eq!(encode(&tree).unwrap(), nested(deepest), "the deepest allowed value round-trips");
        for depth in [deepest + 1, 10_000, 1_000_000] {
            match decode::<Tree>(&nested(depth)) {
                Err(Error::Codec { detail }) => {
                    assert!(detail.contains(&format!("nests deeper than {MAX_DEPTH}")), "{detail}");
                }
                other => panic!("{depth} deep: {other:?}"),
            }
        }
        // Scalars and flat containers are untouched by the bound.
        let flat: Vec<Vec<u8>> = vec![vec![1; 1000]; 300];
        assert_eq!(decode::<Vec<Vec<u8>>>(&encode(&flat).unwrap()).unwrap(), flat);
    }

    #[test]
    fn round_trip_and_garbage() {
        let v = (1u32, String::from("x"), vec![1.5f64]);
        assert_eq!(decode::<(u32, String, Vec<f64>)>(&encode(&v).unwrap()).unwrap(), v);
        assert!(matches!(decode::<String>(&[200, 200, 200]), Err(Error::Codec { .. })));
        assert!(matches!(decode::<u8>(&[1, 2]), Err(Error::Codec { .. })));
    }

    #[test]
    fn bytes_encode_as_one_byte_string() {
        let b = Bytes(vec![7u8; 100]);
        let enc = encode(&b).unwrap();
        // postcard: a varint length (100 fits in one byte), then the bytes.
        assert_eq!(enc.len(), 101);
        assert_eq!((enc[0], &enc[1..]), (100, &b.0[..]));
        assert_eq!(decode::<Bytes>(&enc).unwrap(), b);
        assert_eq!(decode::<Bytes>(&encode(&Bytes::default()).unwrap()).unwrap(), Bytes::default());
        // A length past the input is a Codec error, not a panic.
        assert!(matches!(decode::<Bytes>(&[200, 1, 1]), Err(Error::Codec { .. })));
        let v: Vec<u8> = Bytes::from(&b"ab"[..]).into();
        assert_eq!(v, b"ab");
    }

    #[test]
    fn encode_to_gives_the_same_bytes_and_stops_when_the_sink_is_full() {
        let v = (7u32, Bytes::from(vec![9u8; 100]), "text".to_owned());
        let mut got = Vec::new();
        assert!(
            encode_to(&v, |d| {
                got.extend_from_slice(d);
                true
            })
            .unwrap()
        );
        assert_eq!(got, encode(&v).unwrap());
        let mut room = 50;
        assert!(
            !encode_to(&v, |d| d.len() <= room && {
                room -= d.len();
                true
            })
            .unwrap(),
            "out of room"
        );
    }

    /// A value that postcard writes through `collect_str` (which turns the
    /// sink's refusal into another error), and one whose `Serialize`
    /// swallows the refusal and goes on.
    struct Shown(u64);
    impl Serialize for Shown {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.collect_str(&format_args!("value {:020}", self.0))
        }
    }
    struct Stubborn;
    impl Serialize for Stubborn {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            use serde::ser::SerializeTuple;
            let mut t = s.serialize_tuple(3)?;
            t.serialize_element(&[7u8; 16])?;
            let _ = t.serialize_element(&Bytes(vec![8u8; 64])); // swallowed
            t.serialize_element(&9u8)?;
            t.end()
        }
    }

    #[test]
    fn a_refused_sink_is_out_of_room_whatever_the_serializer_makes_of_it() {
        let mut room = 10;
        let fits = |d: &[u8]| {
            d.len() <= room && {
                room -= d.len();
                true
            }
        };
        assert!(!encode_to(&Shown(5), fits).unwrap(), "collect_str out of room");
        let mut got = Vec::new();
        assert!(
            encode_to(&Shown(5), |d| {
                got.extend_from_slice(d);
                true
            })
            .unwrap()
        );
        assert_eq!(got, encode(&Shown(5)).unwrap());
        let mut room = 40;
        let mut taken = 0;
        let r = encode_to(&Stubborn, |d| {
            let ok = d.len() <= room;
            if ok {
                room -= d.len();
                taken += d.len();
            }
            ok
        });
        assert!(!r.unwrap(), "a refusal the value swallowed still means out of room");
        assert_eq!(taken, 17, "16 bytes and the length prefix; nothing after the refusal");
    }

    #[test]
    fn encode_into_reuses_the_buffer_and_matches_encode() {
        let mut buf = Vec::with_capacity(256);
        let at = buf.as_ptr();
        for v in [vec![1u8; 100], vec![], vec![7; 3]] {
            encode_into(&v, &mut buf).unwrap();
            assert_eq!(buf, encode(&v).unwrap());
            assert_eq!(buf.as_ptr(), at, "no new allocation");
        }
    }
}
