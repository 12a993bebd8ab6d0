//! Arbitrary ring state in a valid queue segment, opened as every queue type
//! (see `fuzz/harness/open_queue.rs`, which `tests/fuzz_corpus.rs` also
//! replays).
#![no_main]

#[path = "../harness/open_queue.rs"]
mod harness;
#[path = "../harness/shm_file.rs"]
mod shm_file;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
