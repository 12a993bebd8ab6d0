//! Opens arbitrary bytes as every kind of shmproc segment (see
//! `fuzz/harness/open_segment.rs`, which `tests/fuzz_corpus.rs` also replays).
#![no_main]

#[path = "../harness/open_segment.rs"]
mod harness;
#[path = "../harness/shm_file.rs"]
mod shm_file;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
