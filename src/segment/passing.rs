//! How a handle travels to another process: as a reference to its segment.
//!
//! A handle serialises as [`Place::Named`] (the segment's name: any process can
//! open it) or, for an anonymous segment, as [`Place::Fd`]: an index into the
//! list of descriptors that the process layer hands to the child along with the
//! encoded bytes (inherited across exec for spawn, sent with `SCM_RIGHTS` to the
//! fork server). While the parent encodes, [`collect_fds`] gathers those
//! descriptors; while the child decodes, [`provide_fds`] makes them available.
//! Outside those two scopes an anonymous handle cannot be serialised (there is
//! no descriptor to refer to) and decoding `Place::Fd` fails. A state embedded
//! in another object's (an array's lock) travels with the outer segment's kind
//! and its offset: the receiver checks the outer header and that the state lies
//! inside the payload.
//!
//! The child's handle maps the same segment and validates its header exactly as
//! `open(name)` would (SPEC §3): the bytes and the descriptor are untrusted.
//!
//! **How a new type joins**: give its state `SharedState`, keep it in a
//! `Shared<S>`, and implement `Serialize`/`Deserialize` for the handle by
//! delegating to that `Shared<S>` (see `sync::passable!`). Nothing else.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Expect, Kind, Layout, Segment, Shared, SharedState};

#[derive(Serialize, Deserialize)]
struct Wire {
    /// The segment.
    at: Place,
    /// Set for a state projected out of another object's (an array's lock):
    /// the segment's kind code, and the state's offset in its payload.
    within: Option<(u32, u64)>,
}

#[derive(Serialize, Deserialize)]
enum Place {
    /// A named segment.
    Named(String),
    /// The `n`-th descriptor handed to the child.
    Fd(u32),
}

enum Passing {
    /// Parent side: descriptors to hand over, in `Wire::Fd` order.
    Collect(Vec<RawFd>),
    /// Child side: the descriptors received.
    Provide(Vec<OwnedFd>),
}

thread_local! {
    static PASSING: RefCell<Option<Passing>> = const { RefCell::new(None) };
}

/// Runs `f` (which serialises handles) and returns what it returned together
/// with the descriptors that anonymous handles referred to. The descriptors are
/// borrowed from the handles: keep them alive until the child has its copies.
pub(crate) fn collect_fds<T>(f: impl FnOnce() -> T) -> (T, Vec<RawFd>) {
    let previous = PASSING.with(|p| p.replace(Some(Passing::Collect(Vec::new()))));
    let out = f();
    let fds = match PASSING.with(|p| p.replace(previous)) {
        Some(Passing::Collect(fds)) => fds,
        _ => Vec::new(),
    };
    (out, fds)
}

/// Runs `f` (which deserialises handles) with `fds` as the descriptors that
/// `Wire::Fd` indices refer to.
pub(crate) fn provide_fds<T>(fds: Vec<OwnedFd>, f: impl FnOnce() -> T) -> T {
    let previous = PASSING.with(|p| p.replace(Some(Passing::Provide(fds))));
    let out = f();
    PASSING.with(|p| p.replace(previous));
    out
}

/// While handles are being serialised for a child ([`collect_fds`]): the
/// index under which descriptor `raw` travels (added to the list if new).
/// `None` outside that scope: there is no child to hand it to.
pub(crate) fn pass_fd(raw: RawFd) -> Option<u32> {
    PASSING.with(|p| match &mut *p.borrow_mut() {
        Some(Passing::Collect(fds)) => Some(fds.iter().position(|f| *f == raw).unwrap_or_else(|| {
            fds.push(raw);
            fds.len() - 1
        }) as u32),
        _ => None,
    })
}

/// While handles are being deserialised in a child ([`provide_fds`]): a new
/// descriptor (close-on-exec) for the `i`-th one handed over.
pub(crate) fn received_fd(i: u32) -> std::io::Result<OwnedFd> {
    PASSING
        .with(|p| match &*p.borrow() {
            Some(Passing::Provide(fds)) => fds.get(i as usize).map(crate::os::dup),
            _ => None,
        })
        .unwrap_or_else(|| {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no descriptor #{i} was handed to this process"),
            ))
        })
}

impl<S: SharedState> Serialize for Shared<S> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        use serde::ser::Error as _;
        let custom = |msg: &str| {
            crate::codec::note_custom(&msg);
            Z::Error::custom(msg)
        };
        let Some(seg) = self.segment() else {
            return Err(custom("a heap-backed object cannot leave its process"));
        };
        let within = (seg.kind() != S::KIND || self.offset() != 0).then(|| (seg.kind() as u32, self.offset() as u64));
        if let Some(name) = seg.passable_name() {
            return Wire { at: Place::Named(name.to_owned()), within }.serialize(s);
        }
        match pass_fd(seg.fd().as_raw_fd()) {
            Some(i) => Wire { at: Place::Fd(i), within }.serialize(s),
            None => Err(custom(
                "an anonymous shmproc object travels only in a new process's arguments (a Process target's, \
                 or a pool's initializer), not in a message to a running one (create it with a name for that)",
            )),
        }
    }
}

impl<'de, S: SharedState> Deserialize<'de> for Shared<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fn custom<E: serde::de::Error>(msg: impl std::fmt::Display) -> E {
            crate::codec::note_custom(&msg);
            E::custom(msg)
        }
        let wire = Wire::deserialize(d)?;
        let expect = match wire.within {
            None => Shared::<S>::expect(),
            Some((code, _)) => {
                let kind = Kind::from_code(code).ok_or_else(|| custom(format!("unknown segment kind {code}")))?;
                Expect { kind, type_fp: None, payload_len: None }
            }
        };
        let seg = match wire.at {
            Place::Named(name) => Segment::open_object(&name, &expect),
            Place::Fd(i) => Segment::open_fd(received_fd(i).map_err(custom)?, None, &expect),
        }
        .map_err(custom)?;
        match wire.within {
            None => Shared::from_segment(seg),
            Some((_, offset)) => {
                // Only fixed-size states are embedded in others (an array's
                // lock): a state with a tail must travel as itself.
                S::check_layout(Layout::FIXED).map_err(custom)?;
                let offset = usize::try_from(offset).map_err(|_| custom("state offset out of range"))?;
                Shared::from_segment_at(seg, offset, Layout::FIXED)
            }
        }
        .map_err(custom)
    }
}
