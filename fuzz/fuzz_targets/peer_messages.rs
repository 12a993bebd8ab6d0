//! Arbitrary bytes as a message from another process: a pool message, a
//! manager reply, a child's result cell or a serde value (see
//! `fuzz/harness/peer_messages.rs`, which `tests/fuzz_corpus.rs` also
//! replays).
#![no_main]

#[path = "../harness/peer_messages.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
