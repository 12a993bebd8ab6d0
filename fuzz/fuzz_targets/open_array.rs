//! Typecode text and arbitrary array segments (see `fuzz/harness/open_array.rs`,
//! which `tests/fuzz_corpus.rs` also replays).
#![no_main]

#[path = "../harness/open_array.rs"]
mod harness;
#[path = "../harness/shm_file.rs"]
mod shm_file;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
