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
    CUSTOM.with(|c| c.borrow_mut().take());
    postcard::to_stdvec(value).map_err(|e| Error::Codec { detail: format!("encoding: {}", describe(&e)) })
}

/// Encodes `value` into `out`, which is cleared first and keeps its
/// allocation: callers that encode one message after another reuse one
/// buffer instead of growing a new one each time.
pub(crate) fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    CUSTOM.with(|c| c.borrow_mut().take());
    out.clear();
    let taken = std::mem::take(out);
    match postcard::to_extend(value, taken) {
        Ok(bytes) => {
            *out = bytes;
            Ok(())
        }
        Err(e) => Err(Error::Codec { detail: format!("encoding: {}", describe(&e)) }),
    }
}

/// Decodes a `T` that must fill `bytes` exactly.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    CUSTOM.with(|c| c.borrow_mut().take());
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Error::Codec { detail: format!("{} trailing bytes after the value", rest.len()) }),
        Err(e) => Err(Error::Codec {
            detail: format!("decoding {} from {} bytes: {}", std::any::type_name::<T>(), bytes.len(), describe(&e)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let v = (1u32, String::from("x"), vec![1.5f64]);
        assert_eq!(decode::<(u32, String, Vec<f64>)>(&encode(&v).unwrap()).unwrap(), v);
        assert!(matches!(decode::<String>(&[200, 200, 200]), Err(Error::Codec { .. })));
        assert!(matches!(decode::<u8>(&[1, 2]), Err(Error::Codec { .. })));
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
