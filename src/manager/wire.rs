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
    /// An `ObjectQueue` of this many bytes, for the message type with this
    /// fingerprint.
    Queue(u32, u64),
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
}
