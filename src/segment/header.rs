//! The header at the start of every shmproc segment, and its validation.
//!
//! # Layout (64 bytes, little-endian on every platform shmproc runs on)
//!
//! | offset | size | field | meaning |
//! |---:|---:|---|---|
//! | 0 | 8 | `magic` | `b"SHMPROC\0"` |
//! | 8 | 4 | `version` | layout version, [`LAYOUT_VERSION`] |
//! | 12 | 4 | `kind` | object kind, a [`Kind`] code |
//! | 16 | 8 | `type_fp` | element type fingerprint (0 for untyped objects) |
//! | 24 | 8 | `payload_len` | bytes after the header that belong to the object |
//! | 32 | 4 | `creator_pid` | pid of the creating process |
//! | 36 | 4 | `init_state` | 0 = being initialised, 1 = ready; anything else is corrupt |
//! | 40 | 8 | `creator_start` | creator's start time (clock ticks since boot) |
//! | 48 | 16 | reserved | zero |
//!
//! The payload starts at [`HEADER_LEN`] (64), so a payload aligned to a cache line
//! in the file is aligned to one in memory (mappings are page-aligned).
//!
//! # Initialisation protocol
//!
//! The creator sizes the file (zero-filled), writes every header field but
//! `init_state` and initialises the payload, then stores `init_state = READY`
//! with `Release`. An opener loads `init_state` with `Acquire` (pairs with that
//! store) and only then reads the other fields, so it sees them complete. It waits
//! a bounded time for `READY` and gives up early if the creator died.

use std::fmt;

use crate::error::{Error, Result};
use crate::loom::{AtomicU32, AtomicU64, Ordering};

/// `b"SHMPROC\0"` read as a little-endian `u64`.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SHMPROC\0");
/// Bumped whenever the header or any object's layout changes incompatibly.
/// 2: the MPMC queue's claim records and 16-byte slots.
pub(crate) const LAYOUT_VERSION: u32 = 2;
/// Size of the header; the payload starts here.
pub const HEADER_LEN: usize = 64;

/// `init_state` while the creator is still writing.
pub(crate) const INIT_PENDING: u32 = 0;
/// `init_state` once the segment may be used.
pub(crate) const INIT_READY: u32 = 1;

/// What kind of object a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum Kind {
    /// Raw bytes ([`Segment::create`](crate::Segment::create)).
    Raw = 1,
    /// [`Lock`](crate::Lock).
    Lock = 2,
    /// [`RLock`](crate::RLock).
    RLock = 3,
    /// [`Semaphore`](crate::Semaphore).
    Semaphore = 4,
    /// [`Event`](crate::Event).
    Event = 5,
    /// [`Condition`](crate::Condition).
    Condition = 6,
    /// [`Barrier`](crate::Barrier).
    Barrier = 7,
    /// [`BoundedSemaphore`](crate::BoundedSemaphore).
    BoundedSemaphore = 8,
    /// [`Array`](crate::Array), [`Value`](crate::Value) and
    /// [`DynArray`](crate::DynArray) (the type fingerprint holds the typecode).
    Array = 9,
    /// [`SpscQueue`](crate::SpscQueue).
    SpscQueue = 10,
    /// [`Queue`](crate::Queue).
    Queue = 11,
    /// [`ObjectQueue`](crate::ObjectQueue) and [`JoinableQueue`](crate::JoinableQueue).
    ObjectQueue = 12,
    /// The two ends of a [`pipe`](crate::pipe) ([`Connection`](crate::Connection)).
    Pipe = 13,
    /// A [`Listener`](crate::Listener)'s requests.
    Listener = 14,
}

impl Kind {
    const ALL: [Kind; 14] = [
        Kind::Raw,
        Kind::Lock,
        Kind::RLock,
        Kind::Semaphore,
        Kind::Event,
        Kind::Condition,
        Kind::Barrier,
        Kind::BoundedSemaphore,
        Kind::Array,
        Kind::SpscQueue,
        Kind::Queue,
        Kind::ObjectQueue,
        Kind::Pipe,
        Kind::Listener,
    ];

    /// The kind with this code, if any.
    pub fn from_code(code: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u32 == code)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} (kind {})", *self as u32)
    }
}

/// A kind code as found in a header, printed by name when it is a known one.
struct KindCode(u32);

impl fmt::Display for KindCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Kind::from_code(self.0) {
            Some(k) => k.fmt(f),
            None => write!(f, "unknown kind {}", self.0),
        }
    }
}

/// The header as it lives in the segment. Every field is atomic: a peer may
/// write any of them at any time, and we never form a reference to non-atomic
/// shared data.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    kind: AtomicU32,
    type_fp: AtomicU64,
    payload_len: AtomicU64,
    creator_pid: AtomicU32,
    /// [`INIT_PENDING`] or [`INIT_READY`]; the `Release` store of `READY`
    /// publishes every other field and the payload.
    init_state: AtomicU32,
    creator_start: AtomicU64,
    reserved: [AtomicU64; 2],
}

const _: () = assert!(size_of::<Header>() == HEADER_LEN || cfg!(loom));

/// What an opener expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Expect {
    pub(crate) kind: Kind,
    /// Exact element type fingerprint, or `None` for "any" (the state's
    /// `SharedState::check_layout` then judges it).
    pub(crate) type_fp: Option<u64>,
    /// Exact payload length, or `None` for "any" (raw segments).
    pub(crate) payload_len: Option<u64>,
}

/// A copy of the header's fields, taken with atomic loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HeaderSnapshot {
    /// `magic` field.
    pub magic: u64,
    /// `version` field.
    pub version: u32,
    /// `kind` field.
    pub kind: u32,
    /// `type_fp` field.
    pub type_fp: u64,
    /// `payload_len` field.
    pub payload_len: u64,
    /// `creator_pid` field.
    pub creator_pid: u32,
    /// `init_state` field.
    pub init_state: u32,
    /// `creator_start` field.
    pub creator_start: u64,
}

impl HeaderSnapshot {
    /// Decodes the first [`HEADER_LEN`] bytes of a segment (little-endian);
    /// `None` if `bytes` is shorter. Used by the fuzz target and by tests that
    /// forge headers.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let b = bytes.get(..HEADER_LEN)?;
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        Some(HeaderSnapshot {
            magic: u64_at(0),
            version: u32_at(8),
            kind: u32_at(12),
            type_fp: u64_at(16),
            payload_len: u64_at(24),
            creator_pid: u32_at(32),
            init_state: u32_at(36),
            creator_start: u64_at(40),
        })
    }

    /// Checks a ready header against what the opener expects and against the
    /// file's real length. Every field that can be wrong gets an error naming
    /// what was expected and what was found; nothing here can overflow or panic.
    pub(crate) fn validate(&self, file_len: u64, expect: &Expect) -> Result<()> {
        if self.magic != MAGIC {
            return Err(Error::mismatch(
                "magic",
                format!("{MAGIC:#018x} (\"SHMPROC\")"),
                format!("{:#018x} (not a shmproc segment)", self.magic),
            ));
        }
        if self.version != LAYOUT_VERSION {
            return Err(Error::mismatch("layout version", LAYOUT_VERSION, self.version));
        }
        if self.init_state != INIT_READY {
            return Err(Error::corrupt("segment header", format!("init state {} is not 0 or 1", self.init_state)));
        }
        if self.kind != expect.kind as u32 {
            return Err(Error::mismatch("kind", expect.kind, KindCode(self.kind)));
        }
        if let Some(fp) = expect.type_fp
            && self.type_fp != fp
        {
            return Err(Error::mismatch(
                "element type",
                format!("fingerprint {fp:#x}"),
                format!("fingerprint {:#x}", self.type_fp),
            ));
        }
        if let Some(len) = expect.payload_len
            && self.payload_len != len
        {
            return Err(Error::mismatch("payload length", len, self.payload_len));
        }
        let needed = self.payload_len.checked_add(HEADER_LEN as u64);
        if needed.is_none_or(|n| n > file_len) {
            return Err(Error::mismatch(
                "segment length",
                format!("at least {HEADER_LEN} + {} bytes", self.payload_len),
                format!("{file_len} bytes"),
            ));
        }
        Ok(())
    }
}

impl Header {
    /// Loads every field (`Relaxed`; call after an `Acquire` load of
    /// `init_state` returned `READY`).
    pub(crate) fn snapshot(&self) -> HeaderSnapshot {
        HeaderSnapshot {
            magic: self.magic.load(Ordering::Relaxed),
            version: self.version.load(Ordering::Relaxed),
            kind: self.kind.load(Ordering::Relaxed),
            type_fp: self.type_fp.load(Ordering::Relaxed),
            payload_len: self.payload_len.load(Ordering::Relaxed),
            creator_pid: self.creator_pid.load(Ordering::Relaxed),
            init_state: self.init_state.load(Ordering::Relaxed),
            creator_start: self.creator_start.load(Ordering::Relaxed),
        }
    }

    /// The init state (`Acquire`: pairs with the `Release` in [`Header::publish`]).
    pub(crate) fn init_state(&self) -> u32 {
        self.init_state.load(Ordering::Acquire)
    }

    /// Writes every field but `init_state` (the creator, before initialising
    /// the payload).
    pub(crate) fn write(&self, kind: Kind, type_fp: u64, payload_len: u64, creator: crate::os::TaskId) {
        self.magic.store(MAGIC, Ordering::Relaxed);
        self.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        self.kind.store(kind as u32, Ordering::Relaxed);
        self.type_fp.store(type_fp, Ordering::Relaxed);
        self.payload_len.store(payload_len, Ordering::Relaxed);
        self.creator_pid.store(creator.tid, Ordering::Relaxed);
        self.creator_start.store(creator.start, Ordering::Relaxed);
    }

    /// Marks the segment ready: `Release`, pairs with [`Header::init_state`].
    pub(crate) fn publish(&self) {
        self.init_state.store(INIT_READY, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> HeaderSnapshot {
        HeaderSnapshot {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            kind: Kind::Lock as u32,
            type_fp: 0,
            payload_len: 64,
            creator_pid: 1,
            init_state: INIT_READY,
            creator_start: 1,
        }
    }
    const EXPECT: Expect = Expect { kind: Kind::Lock, type_fp: Some(0), payload_len: Some(64) };

    #[test]
    fn a_good_header_validates() {
        good().validate(128, &EXPECT).unwrap();
    }

    #[test]
    fn each_bad_field_is_named_with_expected_and_found() {
        type Case = (fn(&mut HeaderSnapshot), &'static str, &'static str);
        let cases: [Case; 6] = [
            (|h| h.magic = 7, "magic", "not a shmproc segment"),
            (|h| h.version = 9, "layout version", "found 9"),
            (|h| h.kind = Kind::Event as u32, "kind", "expected Lock (kind 2), found Event (kind 5)"),
            (|h| h.kind = 999, "kind", "unknown kind 999"),
            (|h| h.type_fp = 3, "element type", "fingerprint 0x3"),
            (|h| h.payload_len = 65, "payload length", "expected 64, found 65"),
        ];
        for (mutate, field, text) in cases {
            let mut h = good();
            mutate(&mut h);
            let e = h.validate(128, &EXPECT).unwrap_err();
            assert!(matches!(e, Error::Mismatch { field: f, .. } if f == field), "{e}");
            assert!(e.to_string().contains(text), "{e} lacks {text}");
        }
    }

    #[test]
    fn a_short_file_or_a_huge_length_is_rejected_without_overflow() {
        let e = good().validate(100, &EXPECT).unwrap_err();
        assert!(e.to_string().contains("segment length"), "{e}");
        let mut h = good();
        h.payload_len = u64::MAX;
        let any = Expect { payload_len: None, ..EXPECT };
        assert!(h.validate(u64::MAX, &any).is_err());
    }

    #[test]
    fn unknown_init_state_is_corrupt() {
        let mut h = good();
        h.init_state = 77;
        assert!(matches!(h.validate(128, &EXPECT), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn snapshot_decodes_little_endian_bytes() {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(b"SHMPROC\0");
        b[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        b[24..32].copy_from_slice(&64u64.to_le_bytes());
        let h = HeaderSnapshot::from_bytes(&b).unwrap();
        assert_eq!((h.magic, h.version, h.payload_len), (MAGIC, LAYOUT_VERSION, 64));
        assert!(HeaderSnapshot::from_bytes(&b[..10]).is_none());
    }
}
