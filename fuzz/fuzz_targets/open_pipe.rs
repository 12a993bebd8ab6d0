//! Arbitrary state in a valid pipe segment, both ends opened by name and
//! read with bounded waits (see `fuzz/harness/open_pipe.rs`, which
//! `tests/fuzz_corpus.rs` also replays).
#![no_main]

#[path = "../harness/open_pipe.rs"]
mod harness;
#[path = "../harness/shm_file.rs"]
mod shm_file;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
