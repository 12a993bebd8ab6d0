//! The `manager_request` fuzz harness: arbitrary bytes as a stream of
//! requests from several clients to a manager's server.
//!
//! [`run`] splits the input into records (a client number byte, a `u16`
//! length, then that many bytes, the request) and hands each to the
//! server's request handling, run in this process
//! ([`shmproc::manager::FuzzServer`]: no server process, no listener), with
//! a client going now and then. An input whose first byte is [`SERVED`]
//! sends its records' requests over a real connection (an anonymous pipe)
//! to the server's loop instead, which decodes them itself. Whatever the bytes, that must neither
//! crash, nor panic, nor hang (SPEC §3; issue 8: a malformed request gets an
//! error reply and the server goes on), and every reply must encode.
//!
//! Shared by the cargo-fuzz target (`fuzz/fuzz_targets/manager_request.rs`)
//! and by the corpus replay test (`tests/fuzz_corpus.rs`), both through
//! `#[path]`.

use shmproc::manager::FuzzServer;

/// Runs one input (the fuzz target's entry point).
#[allow(dead_code, reason = "the replay test calls `exercise` to see the replies")]
pub(crate) fn run(data: &[u8]) {
    exercise(data);
}

/// The first byte of an input sent over a connection.
pub(crate) const SERVED: u8 = 0xff;

/// Runs one input; returns the kinds of reply it got, in order (for the
/// replay test's report and its checks on the seeds).
pub(crate) fn exercise(data: &[u8]) -> Vec<&'static str> {
    let server = FuzzServer::default();
    if let [SERVED, records @ ..] = data {
        let requests: Vec<&[u8]> = split(records).map(|(_, request)| request).collect();
        return server.serve(0, &requests);
    }
    let mut replies = Vec::new();
    for (client, request) in split(data) {
        // A client number with the top bit set goes after its request.
        replies.push(server.answer(u64::from(client % 4), request));
        if client & 0x80 != 0 {
            server.client_gone(u64::from(client % 4));
        }
    }
    replies
}

/// The records of `data`: (client byte, request).
fn split(mut rest: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let [client, lo, hi, tail @ ..] = rest else { return None };
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (request, after) = tail.split_at(len);
        rest = after;
        Some((*client, request))
    })
}

/// A record for client `client` carrying `request` (for the seeds).
#[allow(dead_code, reason = "the seeds are made by the replay test")]
pub(crate) fn record(client: u8, request: &[u8]) -> Vec<u8> {
    let len = u16::try_from(request.len()).expect("a seed request fits a u16 length");
    [&[client][..], &len.to_le_bytes(), request].concat()
}
