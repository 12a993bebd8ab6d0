//! What a hostile peer feeds a connection by name: a garbage request in a
//! listener's queue, or hostile handshake messages to either side (see
//! `fuzz/harness/listener.rs`, which `tests/fuzz_corpus.rs` also replays).
#![no_main]

#[path = "../harness/listener.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
