//! The one seam for turning values into bytes and back (postcard today).
//!
//! Process arguments and results, and later queue and pipe messages, go through
//! these two functions only, so that the wire format can change in one place.
//! Decoding is a trust boundary: bytes may come from any peer, and a malformed
//! input gives [`Error::Codec`], never a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Encodes `value`.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::Codec { detail: format!("encoding: {e}") })
}

/// Decodes a `T` that must fill `bytes` exactly.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Error::Codec { detail: format!("{} trailing bytes after the value", rest.len()) }),
        Err(e) => Err(Error::Codec {
            detail: format!("decoding {} from {} bytes: {e}", std::any::type_name::<T>(), bytes.len()),
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
}
