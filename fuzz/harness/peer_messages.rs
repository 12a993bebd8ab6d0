//! The `peer_messages` fuzz harness: arbitrary bytes as a message another
//! process sent: by the first byte, a pool message (as the pool and its
//! workers read each other's), a manager reply (as a client reads its
//! server's), a child's result cell (as its parent reads it), or a serde
//! message of several shapes, a recursive one included (as queues, pipes
//! and managers decode values). Whatever the bytes, the decoder must
//! neither crash, nor panic, nor hang, nor overflow its stack (SPEC §3).
//!
//! Shared by the cargo-fuzz target (`fuzz/fuzz_targets/peer_messages.rs`)
//! and by the corpus replay test (`tests/fuzz_corpus.rs`), both through
//! `#[path]`.

/// Runs one input (the fuzz target's entry point).
#[allow(dead_code, reason = "the replay test calls `exercise` to see what the input decoded as")]
pub(crate) fn run(data: &[u8]) {
    exercise(data);
}

/// Runs one input; returns what it decoded as.
pub(crate) fn exercise(data: &[u8]) -> Vec<&'static str> {
    vec![shmproc::fuzzing::peer_message(data)]
}
