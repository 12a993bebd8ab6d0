//! Naming a function so that a freshly exec'd copy of this program can call it.
//!
//! A function pointer is not stable across `exec` (address-space layout
//! randomisation moves the executable), but its offset from another function of
//! the same executable is. A [`Entry`] holds two such offsets — the user's
//! `fn(A) -> R` and the monomorphised [`trampoline`] that decodes `A`, calls it,
//! and encodes `R` — plus the executable's identity ([`os::exe_identity`]: its
//! build-id). The child refuses an entry made by a different executable, so a
//! mismatched binary is an error, never a jump to garbage.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::os;

/// What a child's run of a target produced.
pub(crate) enum Outcome {
    /// The encoded return value.
    Returned(Vec<u8>),
    /// The target panicked, with this message.
    Panicked(String),
    /// The target could not be run (its arguments did not decode, say).
    Failed(String),
}

/// The signature every trampoline has, whatever `A` and `R` are.
type Trampoline = fn(usize, &[u8]) -> Outcome;

/// The fixed point offsets are measured from.
#[inline(never)]
fn anchor() -> usize {
    anchor as fn() -> usize as usize
}

/// A function of this executable, named so that a re-exec'd copy can call it.
///
/// Deserialising one is sound to act on only because its bytes come from the
/// parent (through a descriptor inherited across exec, or a pool's pipe to
/// its worker: memory shared only with processes of this same executable
/// and user, which could as well call anything by ptrace) and name this very
/// executable (checked in [`Entry::call`]).
#[allow(clippy::unsafe_derive_deserialize)] // see above
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Borrowed from this process's identity when made here (no allocation
    /// per entry), owned when decoded.
    exe: std::borrow::Cow<'static, [u8]>,
    trampoline: u64,
    target: u64,
}

fn offset(addr: usize) -> u64 {
    addr.wrapping_sub(anchor()) as u64
}

fn address(offset: u64) -> usize {
    anchor().wrapping_add(offset as usize)
}

impl Entry {
    /// Names `f`, to be called with encoded `A` and to return encoded `R`.
    pub(crate) fn new<A: DeserializeOwned, R: Serialize>(f: fn(A) -> R) -> Self {
        let trampoline: Trampoline = trampoline::<A, R>;
        Entry {
            exe: std::borrow::Cow::Borrowed(os::exe_identity()),
            trampoline: offset(trampoline as usize),
            target: offset(f as usize),
        }
    }

    /// Names `f` for a pool's chunks: called with an encoded `Vec<A>`, it
    /// returns the encoded `Vec<R>` of `f` applied to each (a panic on any
    /// item fails the chunk).
    pub(crate) fn chunked<A: DeserializeOwned, R: Serialize>(f: fn(A) -> R) -> Self {
        let trampoline: Trampoline = chunk_trampoline::<A, R>;
        Entry {
            exe: std::borrow::Cow::Borrowed(os::exe_identity()),
            trampoline: offset(trampoline as usize),
            target: offset(f as usize),
        }
    }

    /// Names the two-argument `f` for a pool's chunks of pairs (Python's
    /// `starmap`): called with an encoded `Vec<(A, B)>`, it returns the
    /// encoded `Vec<R>`.
    pub(crate) fn star_chunked<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(f: fn(A, B) -> R) -> Self {
        let trampoline: Trampoline = star_trampoline::<A, B, R>;
        Entry {
            exe: std::borrow::Cow::Borrowed(os::exe_identity()),
            trampoline: offset(trampoline as usize),
            target: offset(f as usize),
        }
    }

    /// What tells two entries apart in one executable: the trampoline (the
    /// types and the form) and the function.
    pub(crate) fn key(&self) -> (u64, u64) {
        (self.trampoline, self.target)
    }

    /// Refuses an entry made by another executable.
    fn check_exe(&self) -> Result<()> {
        if *self.exe != *os::exe_identity() {
            return Err(Error::InvalidArgument {
                what: "the spawned executable is not the one that named the target (build-id mismatch)",
            });
        }
        Ok(())
    }

    /// Calls the function with encoded arguments (in the child).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the entry was made by another executable.
    pub(crate) fn call(&self, args: &[u8]) -> Result<Outcome> {
        self.check_exe()?;
        // SAFETY: the entry was made by `Entry::new` in a process running this
        // very executable (identity checked above), where `trampoline` was the
        // address of a `Trampoline`-typed function; the same offset from the
        // same anchor names the same function here.
        let trampoline: Trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(address(self.trampoline)) };
        Ok(trampoline(address(self.target), args))
    }
}

/// Decodes `A`, calls the `fn(A) -> R` at `target`, encodes `R`.
fn trampoline<A: DeserializeOwned, R: Serialize>(target: usize, args: &[u8]) -> Outcome {
    // SAFETY: `target` is the address of an `fn(A) -> R` (see `Entry::call`:
    // this trampoline is only reached through the entry made for that `f`).
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(target) };
    let args: A = match codec::decode(args) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(format!("the target's arguments did not decode: {e}")),
    };
    run_caught(move || f(args))
}

/// Decodes a `Vec<A>`, applies the `fn(A) -> R` at `target` to each item,
/// encodes the `Vec<R>`.
fn chunk_trampoline<A: DeserializeOwned, R: Serialize>(target: usize, args: &[u8]) -> Outcome {
    // SAFETY: `target` is the address of an `fn(A) -> R` (this trampoline is
    // only reached through the entry `Entry::chunked` made for that `f`).
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(target) };
    let items: Vec<A> = match codec::decode(args) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(format!("the task's arguments did not decode: {e}")),
    };
    run_caught(move || items.into_iter().map(f).collect::<Vec<R>>())
}

/// Decodes a `Vec<(A, B)>`, applies the `fn(A, B) -> R` at `target` to each
/// pair, encodes the `Vec<R>`.
fn star_trampoline<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(target: usize, args: &[u8]) -> Outcome {
    // SAFETY: `target` is the address of an `fn(A, B) -> R` (this trampoline
    // is only reached through the entry `Entry::star_chunked` made for it).
    let f = unsafe { std::mem::transmute::<usize, fn(A, B) -> R>(target) };
    let items: Vec<(A, B)> = match codec::decode(args) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(format!("the task's arguments did not decode: {e}")),
    };
    run_caught(move || items.into_iter().map(|(a, b)| f(a, b)).collect::<Vec<R>>())
}

/// An `fn(A) -> R` named as an [`Entry`] is, for a caller that holds the
/// argument as a value and calls the function directly: a pool's
/// initializer, whose arguments may hold handles that only the process start
/// can pass (encoding them again in the child would fail).
#[allow(clippy::unsafe_derive_deserialize)] // as `Entry`'s, plus the types: see `get`
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct TypedEntry<A, R> {
    entry: Entry,
    /// A fingerprint of `fn(A) -> R`'s type name, checked by `get`: the
    /// encoding of an entry does not say its types.
    signature: u64,
    #[serde(skip)]
    types: std::marker::PhantomData<fn(A) -> R>,
}

impl<A, R> Clone for TypedEntry<A, R> {
    fn clone(&self) -> Self {
        TypedEntry { entry: self.entry.clone(), signature: self.signature, types: std::marker::PhantomData }
    }
}

/// FNV-1a of the type name of `fn(A) -> R`.
fn signature<A, R>() -> u64 {
    std::any::type_name::<fn(A) -> R>()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl<A: DeserializeOwned, R: Serialize> TypedEntry<A, R> {
    /// Names `f`.
    pub(crate) fn new(f: fn(A) -> R) -> Self {
        TypedEntry { entry: Entry::new(f), signature: signature::<A, R>(), types: std::marker::PhantomData }
    }

    /// The function, in this process.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the entry was made by another executable
    /// or for other types.
    pub(crate) fn get(&self) -> Result<fn(A) -> R> {
        self.entry.check_exe()?;
        if self.signature != signature::<A, R>() {
            return Err(Error::InvalidArgument { what: "a function entry made for other types" });
        }
        // SAFETY: a `TypedEntry<A, R>` is only made by `new` from an
        // `fn(A) -> R` (the signature, checked above, names those types),
        // and the same offset from the same anchor in the same executable
        // (checked above) is that function.
        Ok(unsafe { std::mem::transmute::<usize, fn(A) -> R>(address(self.entry.target)) })
    }
}

/// Runs `f`, catching a panic, and encodes what it returns.
pub(crate) fn run_caught<R: Serialize>(f: impl FnOnce() -> R) -> Outcome {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => match codec::encode(&r) {
            Ok(bytes) => Outcome::Returned(bytes),
            Err(e) => Outcome::Failed(format!("the target's result did not encode: {e}")),
        },
        Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
    }
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> u32 {
        x * 2
    }

    #[test]
    fn an_entry_calls_its_function_through_offsets() {
        let e = Entry::new(double);
        match e.call(&codec::encode(&21u32).unwrap()).unwrap() {
            Outcome::Returned(bytes) => assert_eq!(codec::decode::<u32>(&bytes).unwrap(), 42),
            _ => panic!("expected a return value"),
        }
        match e.call(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap() {
            Outcome::Failed(msg) => assert!(msg.contains("did not decode"), "{msg}"),
            _ => panic!("garbage arguments must fail to decode"),
        }
    }

    #[test]
    fn an_entry_from_another_executable_is_refused_not_called() {
        let mut e = Entry::new(double);
        e.exe = b"some other build".to_vec().into();
        e.target = u64::MAX; // would be garbage if it were ever used
        let err = e.call(&[]).err().expect("a foreign entry must be refused");
        assert!(err.to_string().contains("build-id mismatch"), "{err}");
    }

    #[test]
    fn this_executable_has_an_identity() {
        assert!(!os::exe_identity().is_empty());
    }
}
