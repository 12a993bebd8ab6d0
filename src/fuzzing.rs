//! Entry points for the fuzz targets (not part of the API): decoders of
//! bytes that come from another process, which the public API reaches only
//! through that process. `fuzz/harness/peer_messages.rs` drives them, and
//! `tests/fuzz_corpus.rs` replays its corpus.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Bytes;

/// The decoders, chosen by an input's first byte (modulo their number).
const DECODERS: u8 = 4;

/// Decodes `data[1..]` with the decoder `data[0]` chooses: a pool message
/// (as the pool and its workers read each other's), a manager reply (as a
/// client reads the server's), a child's result cell (as its parent reads
/// it), or a serde message of several shapes (as every queue and pipe
/// decodes values). Whatever the bytes, none may panic, hang or read out of
/// bounds; the answer says what they decoded as.
pub fn peer_message(data: &[u8]) -> &'static str {
    let Some((&which, rest)) = data.split_first() else { return "empty" };
    match which % DECODERS {
        0 => crate::pool::fuzz_parse(rest),
        1 => crate::manager::fuzz_reply(rest),
        2 => crate::process::fuzz_result_cell(rest),
        _ => serde_message(rest),
    }
}

/// Valid inputs for every decoder (the fuzz target's seeds), each with the
/// decoder's byte in front.
pub fn peer_message_examples() -> Vec<Vec<u8>> {
    let tagged = |which: u8, examples: Vec<Vec<u8>>| {
        examples.into_iter().map(move |e| [&[which][..], &e].concat()).collect::<Vec<_>>()
    };
    let value = Shape::Record { name: "x".to_owned(), data: Bytes(vec![1, 2]), next: Some(Box::new(Shape::Unit)) };
    let mut map = BTreeMap::new();
    map.insert("k".to_owned(), vec![1u8, 2]);
    let serde = vec![
        [&[0u8][..], &crate::codec::encode("text").expect("encodes")].concat(),
        [&[1u8][..], &crate::codec::encode(&vec![1u64, 2, 3]).expect("encodes")].concat(),
        [&[2u8][..], &crate::codec::encode(&value).expect("encodes")].concat(),
        [&[3u8][..], &crate::codec::encode(&map).expect("encodes")].concat(),
        [&[4u8][..], &crate::codec::encode(&(1.5f64, 'x', true, -3i64)).expect("encodes")].concat(),
    ];
    [
        tagged(0, crate::pool::fuzz_examples()),
        tagged(1, crate::manager::fuzz_example_replies()),
        tagged(2, crate::process::result_cell_examples()),
        tagged(3, serde),
    ]
    .concat()
}

/// A nested serde shape, for the decoder to walk.
#[derive(Serialize, Deserialize)]
enum Shape {
    Unit,
    Number(u64),
    Record { name: String, data: Bytes, next: Option<Box<Shape>> },
    List(Vec<Shape>),
}

/// Decodes `data[1..]` as the type `data[0]` chooses.
fn serde_message(data: &[u8]) -> &'static str {
    let Some((&which, rest)) = data.split_first() else { return "serde: empty" };
    let decoded = match which % 5 {
        0 => crate::codec::decode::<String>(rest).is_ok(),
        1 => crate::codec::decode::<Vec<u64>>(rest).is_ok(),
        2 => crate::codec::decode::<Shape>(rest).is_ok(),
        3 => crate::codec::decode::<BTreeMap<String, Vec<u8>>>(rest).is_ok(),
        _ => crate::codec::decode::<(f64, char, bool, i64)>(rest).is_ok(),
    };
    if decoded { "serde: decoded" } else { "serde: does not decode" }
}

/// The `listener` target: by `data[0]`, a request slot of arbitrary bytes
/// on a listener's board, or the handshake's messages a hostile client
/// sends a listener, or a hostile listener sends a client. None may panic
/// or hang, an `accept` must not accept a request that names no pipe, and
/// a side with an authkey must never accept its peer (which cannot know
/// the key); the answer says how the exchange ended.
pub fn listener_exchange(data: &[u8]) -> &'static str {
    crate::channel::listener::fuzz_exchange(data)
}

/// Inputs for every part of [`listener_exchange`] (the target's seeds).
pub fn listener_examples() -> Vec<Vec<u8>> {
    crate::channel::listener::fuzz_examples()
}
