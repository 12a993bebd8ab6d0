//! The requests a manager's clients send and the replies its server gives
//! (postcard). Keys, values and items travel encoded ([`Bytes`]): the server
//! never decodes a user's type, it stores and compares bytes.

use serde::{Deserialize, Serialize};

use crate::codec::Bytes;

/// What a new shared object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Dict,
    List,
    Namespace,
}

/// A native object the manager makes and names (it unlinks the names at
/// shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Native {
    Lock,
    RLock,
    Event,
    Semaphore(u32),
    /// An `ObjectQueue` (or `JoinableQueue`: the same segment) of this many
    /// bytes, for the message type with this fingerprint.
    Queue(u32, u64),
    BoundedSemaphore(u32),
    /// A `Condition` and its `RLock`.
    Condition,
    /// A `Barrier` of this many parties.
    Barrier(u32),
    /// A zeroed array of this typecode (its letter) and length; a `Value`
    /// is one of length 1.
    Array(char, u64),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// A new object: `Created(id)`.
    Create(Kind),
    /// A native object: `Named(name)`, to open by name.
    Make(Native),
    Dict(u64, DictOp),
    List(u64, ListOp),
    Namespace(u64, NsOp),
    /// Stop the server (after this reply).
    Shutdown,
    /// This connection holds a proxy of the object (`Done`); with a lend's
    /// token, the proxy sent under that lend has arrived (the lend ends).
    Attach(u64, Option<u64>),
    /// This connection holds no proxy of the object any more (`Done`). An
    /// object no connection holds and none was lent goes.
    Detach(u64),
    /// A proxy of the object is being sent on: it stays alive until the
    /// receiver attaches with the token (`Lent(token)`), or the lend
    /// expires (two minutes).
    Lend(u64),
    /// How many objects the server keeps: `Count`.
    Live,
    /// A lend of every object this connection holds (`Lent(token)`), for a
    /// child about to be forked with copies of its proxies.
    LendAll,
    /// The lend `token` (made by `LendAll`) ends, and this connection holds
    /// those of its objects listed (the ones the forked child counts):
    /// `Done`.
    AttachAll(u64, Vec<u64>),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum DictOp {
    Get(Bytes),
    Insert(Bytes, Bytes),
    Remove(Bytes),
    Contains(Bytes),
    Len,
    Keys,
    Values,
    Items,
    Clear,
    Extend(Vec<(Bytes, Bytes)>),
    /// Holds `key` for this connection and call (`token`) and returns its
    /// value, or `Busy` if another holds it (the first half of a
    /// read-modify-write; the client retries, never the server waits).
    Hold(Bytes, u64),
    /// Sets (or removes, with `None`) a key held under `token`, and lets it
    /// go.
    Release(Bytes, u64, Option<Bytes>),
    /// Lets go of a key held under `token`, unchanged.
    Unhold(Bytes, u64),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ListOp {
    Push(Bytes),
    Pop,
    Get(u64),
    Set(u64, Bytes),
    Len,
    Extend(Vec<Bytes>),
    Snapshot,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum NsOp {
    Get(String),
    Set(String, Bytes),
    Remove(String),
    Names,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Done,
    Created(u64),
    Named(String),
    Value(Option<Bytes>),
    Flag(bool),
    Count(u64),
    Items(Vec<Bytes>),
    Pairs(Vec<(Bytes, Bytes)>),
    Names(Vec<String>),
    /// The key is held by another call: try again.
    Busy,
    /// The request failed: why (a malformed request, an unknown object, an
    /// index out of range).
    Error(String),
    /// A lend's token.
    Lent(u64),
    /// The server serves no more connections: why (this connection ends).
    Refused(String),
}
