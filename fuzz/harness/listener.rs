//! The `listener` fuzz harness: what a hostile peer feeds a connection by
//! name. By the first byte: a request slot of arbitrary bytes on a
//! listener's board (an `accept` must skip or refuse it), the messages a
//! client sends the listener's handshake, or those a listener sends the
//! client's. Nothing may panic or hang, and a side with an authkey must
//! never accept a peer that cannot know it (SPEC §3).
//!
//! Shared by the cargo-fuzz target (`fuzz/fuzz_targets/listener.rs`) and by
//! the corpus replay test (`tests/fuzz_corpus.rs`), both through `#[path]`.

/// Runs one input (the fuzz target's entry point).
#[allow(dead_code, reason = "the replay test calls `exercise` to see how the exchange ended")]
pub(crate) fn run(data: &[u8]) {
    exercise(data);
}

/// Runs one input; returns how the exchange ended.
pub(crate) fn exercise(data: &[u8]) -> Vec<&'static str> {
    vec![shmproc::fuzzing::listener_exchange(data)]
}
