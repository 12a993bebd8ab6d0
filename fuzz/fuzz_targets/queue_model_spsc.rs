//! A `SpscQueue<u32>` driven by an operation stream against a `VecDeque` model (see
//! `fuzz/harness/queue_model.rs`, which `tests/fuzz_corpus.rs` also
//! replays).
#![no_main]

#[path = "../harness/queue_model.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run_as(harness::kind::SPSC, data));
