//! Arbitrary requests from several clients to a manager's request handling
//! (see `fuzz/harness/manager_request.rs`, which `tests/fuzz_corpus.rs` also
//! replays).
#![no_main]

#[path = "../harness/manager_request.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
