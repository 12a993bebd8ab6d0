//! Named connections between unrelated processes: Python's
//! `multiprocessing.connection.Listener` and `Client`.
//!
//! A [`Listener`] is a board of 64 request slots in a segment named after
//! its address (mode 0600, like every named segment: only the owning user
//! can connect). [`client`] makes a duplex pipe in a segment of its own with
//! a fresh name, records the listener's process as the holder of the pipe's
//! end 0 (so that the client sees end of file if the listener dies before it
//! accepts), and posts the pipe's name in a slot it claims: a client
//! stopped while it posts holds its own slot only, never the others' way in
//! (a shared queue's lock did). [`Listener::accept`] takes a request, opens
//! the pipe as end 0 (adopting
//! that record), and both sides remove the pipe's name once they have it
//! mapped: nothing is left in `/dev/shm` once a connection is made. A client
//! that dies before its request is accepted leaves its pipe's name until the
//! listener takes the request (and skips it) or [`cleanup`](crate::cleanup)
//! runs.
//!
//! Then comes a handshake over the new connection, Python's: without an
//! authkey the listener sends `#WELCOME#`; with one, each side sends the
//! other a random challenge (`#CHALLENGE#` and 32 bytes) and checks that the
//! answer is the challenge's HMAC-SHA256 under the key, and says
//! `#WELCOME#` or `#FAILURE#`. A side with a key refuses a peer without one
//! and the reverse ([`Error::Authentication`]). The client returns once the
//! listener has accepted it.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::pipe::{Connection, DEFAULT_CAPACITY};
use crate::error::{Error, Result};
use crate::loom::{self, AtomicU32, AtomicU64, Ordering};
use crate::os::{self, Deadline, TaskId};
use crate::segment::{Kind, MAX_NAME_LEN, Shared, SharedState};

/// Requests a listener holds at once (its backlog).
const BACKLOG: usize = 64;
/// Words of a request's pipe name (a segment name's longest).
const NAME_WORDS: usize = MAX_NAME_LEN.div_ceil(8);
/// A request slot's `posted` once its name is whole (any other nonzero
/// value is the stamp of the acceptor taking it).
const POSTED: u64 = u64::MAX;
/// The longest an idle acceptor sleeps before it looks at the slots again
/// (a post always wakes it; this is for a wake a peer scribbled away).
const IDLE_LOOK: Duration = Duration::from_secs(1);
/// How long a handshake step waits for the peer before giving up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a waiting client looks at a full board, and at whether the
/// listener still lives and listens.
const LOOK_EVERY: Duration = Duration::from_millis(20);

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in a challenge.
const NONCE_LEN: usize = 32;
/// The longest handshake message (Python reads at most 256 bytes there).
const HANDSHAKE_MAX: usize = 256;

/// One client's request: the name of the pipe it made. A slot is the
/// client's from its claim (`owner`) until an acceptor takes the request, so
/// a client stopped while it writes holds only its own slot; one that died
/// there leaves a slot that the next claim or take frees.
#[repr(C, align(64))]
#[derive(Debug)]
struct RequestSlot {
    /// The stamp of the client that claimed it; 0: free.
    owner: AtomicU64,
    /// 0 while the client writes; [`POSTED`] once the name is whole; else
    /// the stamp of the acceptor taking it.
    posted: AtomicU64,
    /// The name's length in bytes (checked: at most [`MAX_NAME_LEN`]).
    len: AtomicU64,
    name: [AtomicU64; NAME_WORDS],
}

/// A listener's segment: whether it is closed, a word acceptors sleep on,
/// and the request slots.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ListenerState {
    /// 0 while listening; anything else is closed.
    closed: AtomicU32,
    /// Bumped by every post and by `close`: acceptors sleep on it.
    posts: AtomicU32,
    slots: [RequestSlot; BACKLOG],
}

// SAFETY: repr(C), atomics only, no pointers; every value read from the
// board is checked before use (a name's length is bounded and its bytes
// must be a valid name; stamps are only compared and probed for life).
unsafe impl SharedState for ListenerState {
    const KIND: Kind = Kind::Listener;
    type Params = ();
    fn zeroed() -> Self {
        ListenerState {
            closed: AtomicU32::new(0),
            posts: AtomicU32::new(0),
            slots: std::array::from_fn(|_| RequestSlot {
                owner: AtomicU64::new(0),
                posted: AtomicU64::new(0),
                len: AtomicU64::new(0),
                name: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
        }
    }
    fn init(&self, (): ()) {}
}

impl ListenerState {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) != 0
    }

    /// Closes the board and wakes every acceptor.
    fn close(&self) {
        self.closed.store(1, Ordering::Release);
        self.wake();
    }

    fn wake(&self) {
        // Release: an acceptor that reads the new count sees the post.
        self.posts.fetch_add(1, Ordering::Release);
        loom::futex_wake(&self.posts, u32::MAX);
    }

    /// Posts the name `pipe` (at most [`MAX_NAME_LEN`] bytes) for the client
    /// `me` (a stamp) in a free slot; false if every slot is taken. (Only
    /// acceptors free the slots of clients that died before they posted,
    /// so a claim is only ever from 0.)
    fn post(&self, me: u64, pipe: &str) -> bool {
        let bytes = pipe.as_bytes();
        if bytes.len() > MAX_NAME_LEN {
            return false;
        }
        for slot in &self.slots {
            // Acquire: pairs with the Release that freed it (after its
            // `posted` went back to 0).
            if slot.owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
                continue;
            }
            slot.write(bytes);
            // Release: an acceptor that sees POSTED sees the whole name.
            slot.posted.store(POSTED, Ordering::Release);
            self.wake();
            return true;
        }
        false
    }

    /// Takes a posted request for the acceptor `me` (a stamp): its pipe's
    /// name, or None if none is posted. On the way it frees the slots of
    /// clients that died before they posted, and puts back requests whose
    /// acceptor died taking them. A request whose name is garbage is
    /// freed and skipped.
    fn take(&self, me: u64) -> Option<String> {
        for slot in &self.slots {
            let owner = slot.owner.load(Ordering::Acquire);
            if owner == 0 {
                continue;
            }
            let posted = slot.posted.load(Ordering::Acquire);
            if posted == 0 {
                // Its client writes, or died writing: `posted` is read
                // again after `owner` was seen dead, and a dead client
                // posts no more, so the slot is free to take back (from
                // that owner only: a CAS).
                if !os::task_alive(TaskId::from_stamp(owner)) && slot.posted.load(Ordering::Acquire) == 0 {
                    let _ = slot.owner.compare_exchange(owner, 0, Ordering::Release, Ordering::Relaxed);
                }
                continue;
            }
            if posted != POSTED {
                // An acceptor died taking it: put back, and say so.
                if !os::task_alive(TaskId::from_stamp(posted))
                    && slot.posted.compare_exchange(posted, POSTED, Ordering::AcqRel, Ordering::Relaxed).is_ok()
                {
                    self.wake();
                }
                continue;
            }
            if slot.posted.compare_exchange(POSTED, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
                continue;
            }
            let name = slot.read();
            // Freed: `posted` first, then `owner` (Release: a claim, which
            // is from 0, then sees `posted` at 0), from the owner seen only
            // (a CAS, as the take-back of a dead client's slot).
            slot.posted.store(0, Ordering::Release);
            let _ = slot.owner.compare_exchange(owner, 0, Ordering::Release, Ordering::Relaxed);
            if name.is_some() {
                return name;
            }
        }
        None
    }
}

impl RequestSlot {
    /// Writes `bytes` (at most [`MAX_NAME_LEN`]) as the name.
    fn write(&self, bytes: &[u8]) {
        self.len.store(bytes.len() as u64, Ordering::Relaxed);
        for (word, chunk) in self.name.iter().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
    }

    /// The name, if its length is in bounds and its bytes are UTF-8.
    fn read(&self) -> Option<String> {
        let len = usize::try_from(self.len.load(Ordering::Relaxed)).ok().filter(|&n| n <= MAX_NAME_LEN)?;
        let bytes: Vec<u8> = self.name.iter().flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes()).take(len).collect();
        String::from_utf8(bytes).ok()
    }
}

/// A named endpoint that unrelated processes of the same user connect to:
/// Python's `multiprocessing.connection.Listener`.
///
/// # Examples
///
/// ```
/// use shmproc::{Listener, client};
///
/// let name = format!("doc-listener-{}", std::process::id());
/// let listener = Listener::bind(&name, Some(b"secret"))?;
/// let server = std::thread::spawn(move || -> shmproc::Result<()> {
///     let conn = listener.accept()?;
///     let n: u32 = conn.recv()?;
///     conn.send(&(n + 1))
/// });
/// let conn = client(&name, Some(b"secret"))?;
/// conn.send(&41u32)?;
/// assert_eq!(conn.recv::<u32>()?, 42);
/// server.join().unwrap()?;
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Debug)]
pub struct Listener {
    requests: Shared<ListenerState>,
    address: String,
    authkey: Option<Vec<u8>>,
    /// The process that bound it: clients record it as the holder of their
    /// pipe's end 0 until it is accepted (by it or a forked child).
    creator: os::TaskId,
}

impl Listener {
    /// Listens at `address` (a segment name: letters, digits, `_`, `-`, `.`),
    /// which must not be in use. With an `authkey`, only clients that know it
    /// are accepted.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if the address is taken (a listener that died
    /// leaves it until [`cleanup`](crate::cleanup)); [`Error::InvalidName`].
    pub fn bind(address: &str, authkey: Option<&[u8]>) -> Result<Listener> {
        let requests = Shared::<ListenerState>::create(address, ())?;
        let creator = requests.segment().map(crate::Segment::creator).ok_or(Error::Closed)?;
        Ok(Listener { requests, address: address.to_owned(), authkey: authkey.map(<[u8]>::to_vec), creator })
    }

    /// The address clients connect to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Accepts the next client, waiting as long as it takes.
    ///
    /// # Errors
    /// [`Error::Closed`] once the listener is closed; [`Error::Authentication`]
    /// if the client's authkey differs (the client is refused, and the next
    /// `accept` goes on with the next one); [`Error::Closed`] or
    /// [`Error::Timeout`] if the client vanished or stalled in the handshake.
    pub fn accept(&self) -> Result<Connection> {
        self.accept_until(None)
    }

    /// [`accept`](Self::accept), waiting at most `timeout` for a client
    /// ([`Error::Timeout`]).
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        self.accept_until(Some(Deadline::after(timeout)))
    }

    fn accept_until(&self, deadline: Option<Deadline>) -> Result<Connection> {
        self.take_until(deadline)?.greet()
    }

    /// The next client's connection before the handshake, waiting as long
    /// as it takes: a server that answers each client on a thread of its
    /// own greets there ([`Unverified::greet`]), so that a client stalling
    /// in the handshake holds up no other.
    ///
    /// # Errors
    /// As [`accept`](Self::accept), without the handshake's.
    pub(crate) fn take(&self) -> Result<Unverified> {
        self.take_until(None)
    }

    fn take_until(&self, deadline: Option<Deadline>) -> Result<Unverified> {
        let me = os::current_process().stamp();
        loop {
            let seen = self.requests.posts.load(Ordering::Acquire);
            if self.requests.is_closed() {
                return Err(Error::Closed);
            }
            let Some(pipe) = self.requests.take(me) else {
                if deadline.is_some_and(Deadline::has_passed) {
                    return Err(Error::Timeout);
                }
                let look = Deadline::after(IDLE_LOOK);
                let _ = loom::futex_wait(&self.requests.posts, seen, Some(deadline.map_or(look, |d| d.min(look))));
                continue;
            };
            // A client that gave up (or died and was swept) took its pipe's
            // name with it: nothing to accept there.
            let Ok(conn) = Connection::open_named_end_adopting(&pipe, 0, self.creator) else {
                if deadline.is_some_and(Deadline::has_passed) {
                    return Err(Error::Timeout);
                }
                continue;
            };
            conn.unlink_name();
            return Ok(Unverified { conn, authkey: self.authkey.clone() });
        }
    }

    /// Stops listening: `accept` fails with [`Error::Closed`], clients whose
    /// requests were not accepted get `Closed`, and new clients find no
    /// listener. Dropping the listener does the same.
    pub fn close(&self) {
        self.requests.close();
        let me = os::current_process().stamp();
        while let Some(pipe) = self.requests.take(me) {
            if let Ok(conn) = Connection::open_named_end(&pipe, 0) {
                conn.unlink_name();
                conn.close();
            }
        }
    }
}

/// A client's connection taken from the board, not yet greeted: nothing may
/// be read from or sent to it before [`greet`](Unverified::greet).
pub(crate) struct Unverified {
    conn: Connection,
    authkey: Option<Vec<u8>>,
}

impl Unverified {
    /// The handshake (each step waits at most 10 s for the client): the
    /// connection, once the client has proved it knows the key.
    ///
    /// # Errors
    /// [`Error::Authentication`] if the client's authkey differs; an I/O
    /// error (never [`Error::Closed`], which says the listener is closed) if
    /// it went away or stalled.
    pub(crate) fn greet(self) -> Result<Connection> {
        self.greet_until(None)
    }

    /// [`greet`](Self::greet), not waiting past `deadline`.
    fn greet_until(self, deadline: Option<Deadline>) -> Result<Connection> {
        let Unverified { conn, authkey } = self;
        let greeted = match &authkey {
            None => send(&conn, WELCOME, deadline),
            Some(key) => deliver_challenge(&conn, key, deadline).and_then(|()| answer_challenge(&conn, key, deadline)),
        };
        match greeted {
            Ok(()) => Ok(conn),
            // Not `Closed`, which says the listener is: a client that went
            // away must not end an accept loop.
            Err(Error::Closed) => Err(Error::io(
                "accept: the client went away during the handshake",
                std::io::Error::from(std::io::ErrorKind::ConnectionAborted),
            )),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// Whether a live listener is at `address` (its board is there, open, and
/// made by a live process): a failed connection to a live one is worth
/// trying again, to a dead one not.
pub(crate) fn listening(address: &str) -> bool {
    Shared::<ListenerState>::open(address).is_ok_and(|board| {
        !board.is_closed() && board.segment().map(crate::Segment::creator).is_some_and(os::task_alive)
    })
}

/// Connects to the listener at `address`: Python's
/// `multiprocessing.connection.Client`. Returns once the listener has
/// accepted the connection (and both sides proved they know the `authkey`,
/// if one is given); like Python's, it waits as long as the listener lives
/// and listens ([`client_timeout`] bounds the wait).
///
/// # Errors
/// [`Error::NotFound`] if nothing listens at `address`; [`Error::Closed`] if
/// the listener closes or dies before it accepts; [`Error::Authentication`]
/// if the authkeys differ (or one side has none).
pub fn client(address: &str, authkey: Option<&[u8]>) -> Result<Connection> {
    connect(address, authkey, None)
}

/// [`client`], giving up with [`Error::Timeout`] if the connection is not
/// accepted and greeted within `timeout` (a listener that is busy, stalled,
/// or lost the request).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmproc::{Error, Listener, client_timeout};
///
/// let name = format!("doc-client-timeout-{}", std::process::id());
/// let listener = Listener::bind(&name, None)?;
/// // Nobody accepts: the client gives up, and leaves nothing behind.
/// let refused = client_timeout(&name, None, Duration::from_millis(50));
/// assert!(matches!(refused, Err(Error::Timeout)));
/// # drop(listener);
/// # Ok::<(), shmproc::Error>(())
/// ```
///
/// # Errors
/// [`Error::Timeout`], and those of [`client`].
pub fn client_timeout(address: &str, authkey: Option<&[u8]>, timeout: Duration) -> Result<Connection> {
    connect(address, authkey, Some(Deadline::after(timeout)))
}

fn connect(address: &str, authkey: Option<&[u8]>, deadline: Option<Deadline>) -> Result<Connection> {
    let requests = Shared::<ListenerState>::open(address)?;
    let listener = requests.segment().map(crate::Segment::creator).ok_or(Error::Closed)?;
    let conn = Connection::create_named(&pipe_name()?, DEFAULT_CAPACITY, listener)?;
    // A client that gives up drops `conn`, which takes the pipe's name with
    // it (the creator's handle does): a listener that takes the request
    // later finds nothing there, and skips it.
    let first = request(&requests, &conn, listener, deadline)?;
    // The listener has the pipe mapped: the name has done its job.
    conn.unlink_name();
    client_handshake(&conn, authkey, &first, deadline)?;
    Ok(conn)
}

/// Posts the request for `conn` on the listener's board and waits for the
/// listener's first message, which says it accepted (until `deadline`, or
/// while the listener lives and listens).
fn request(
    requests: &ListenerState,
    conn: &Connection,
    listener: TaskId,
    deadline: Option<Deadline>,
) -> Result<Vec<u8>> {
    let pipe = conn.name().ok_or(Error::Closed)?;
    if pipe.len() > MAX_NAME_LEN {
        return Err(Error::InvalidArgument { what: "a pipe name too long for a listener's request" });
    }
    let me = os::current_process().stamp();
    // A full backlog: look again now and then while the listener lives and
    // listens.
    loop {
        if requests.is_closed() || !os::task_alive(listener) {
            return Err(Error::Closed);
        }
        if requests.post(me, pipe) {
            break;
        }
        if passed(deadline) {
            return Err(Error::Timeout);
        }
        std::thread::sleep(step(deadline, LOOK_EVERY));
    }
    loop {
        match recv_small(conn, step(deadline, LOOK_EVERY)) {
            Ok(m) => return Ok(m),
            Err(Error::Timeout) if passed(deadline) => return Err(Error::Timeout),
            Err(Error::Timeout) if !requests.is_closed() => {}
            Err(Error::Timeout) => return Err(Error::Closed),
            Err(e) => return Err(e),
        }
    }
}

/// The client's side of the handshake, after the listener's `first`
/// message (each step waits at most 10 s, and not past `deadline`).
fn client_handshake(conn: &Connection, authkey: Option<&[u8]>, first: &[u8], deadline: Option<Deadline>) -> Result<()> {
    match authkey {
        None if first == WELCOME => Ok(()),
        None if first.starts_with(CHALLENGE) => {
            // Refused out loud, so that the listener's accept says why.
            let _ = send(conn, FAILURE, deadline);
            Err(Error::Authentication { detail: "the listener requires an authkey" })
        }
        None => Err(Error::Authentication { detail: "unexpected greeting from the listener" }),
        Some(key) => {
            answer_challenge_to(conn, key, first, deadline)?;
            deliver_challenge(conn, key, deadline)
        }
    }
}

/// How long the next wait may last: `most`, cut to what is left until
/// `deadline` (zero once it has passed: one look, no wait).
fn step(deadline: Option<Deadline>, most: Duration) -> Duration {
    deadline.map_or(most, |d| d.left().min(most))
}

/// Whether `deadline` has passed.
fn passed(deadline: Option<Deadline>) -> bool {
    deadline.is_some_and(Deadline::has_passed)
}

/// A fresh segment name for a client's pipe.
fn pipe_name() -> Result<String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut salt = [0u8; 4];
    os::random_bytes(&mut salt).map_err(|e| Error::io("getrandom", e))?;
    Ok(format!("shmproc-conn-{}-{}-{:08x}", os::pid(), NEXT.fetch_add(1, Ordering::Relaxed), u32::from_le_bytes(salt)))
}

fn digest(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Receives one handshake message, waiting at most [`HANDSHAKE_TIMEOUT`]
/// (and not past `deadline`);
/// a message longer than any the handshake sends is refused unread.
fn handshake_recv(conn: &Connection, deadline: Option<Deadline>) -> Result<Vec<u8>> {
    recv_small(conn, step(deadline, HANDSHAKE_TIMEOUT))
}

/// Receives one handshake message of at most [`HANDSHAKE_MAX`] bytes,
/// waiting at most `timeout`.
fn recv_small(conn: &Connection, timeout: Duration) -> Result<Vec<u8>> {
    let mut buf = [0u8; HANDSHAKE_MAX];
    match conn.recv_bytes_into_within(&mut buf, timeout) {
        Ok(n) => Ok(buf[..n].to_vec()),
        Err(Error::BufferTooShort { .. }) => {
            Err(Error::Authentication { detail: "the peer sent a handshake message longer than any there is" })
        }
        Err(e) => Err(e),
    }
}

/// Sends one handshake message, waiting at most [`HANDSHAKE_TIMEOUT`], and
/// not past `deadline` (a peer may hold the pipe's writers' lock, or fill
/// its ring, and never read).
fn send(conn: &Connection, message: &[u8], deadline: Option<Deadline>) -> Result<()> {
    let step = Deadline::after(HANDSHAKE_TIMEOUT);
    conn.send_bytes_until(message, Some(deadline.map_or(step, |d| d.min(step))))
}

/// Challenges the peer to prove it knows `key`.
fn deliver_challenge(conn: &Connection, key: &[u8], deadline: Option<Deadline>) -> Result<()> {
    let mut challenge = CHALLENGE.to_vec();
    let mut nonce = [0u8; NONCE_LEN];
    os::random_bytes(&mut nonce).map_err(|e| Error::io("getrandom", e))?;
    challenge.extend_from_slice(&nonce);
    send(conn, &challenge, deadline)?;
    let answer = handshake_recv(conn, deadline)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(&challenge);
    // Compared in constant time.
    if mac.verify_slice(&answer).is_ok() {
        send(conn, WELCOME, deadline)
    } else {
        send(conn, FAILURE, deadline)?;
        Err(Error::Authentication {
            detail: "the peer's answer to the challenge is wrong: a different authkey, or none",
        })
    }
}

/// Answers the peer's challenge with `key`.
fn answer_challenge(conn: &Connection, key: &[u8], deadline: Option<Deadline>) -> Result<()> {
    let challenge = handshake_recv(conn, deadline)?;
    answer_challenge_to(conn, key, &challenge, deadline)
}

/// Answers `challenge` (already received) with `key`, then reads the
/// verdict.
fn answer_challenge_to(conn: &Connection, key: &[u8], challenge: &[u8], deadline: Option<Deadline>) -> Result<()> {
    if !challenge.starts_with(CHALLENGE) {
        return Err(Error::Authentication { detail: "the peer sent no challenge: it has no authkey" });
    }
    send(conn, &digest(key, challenge), deadline)?;
    match handshake_recv(conn, deadline)?.as_slice() {
        WELCOME => Ok(()),
        _ => Err(Error::Authentication { detail: "the peer refused our answer: a different authkey" }),
    }
}

/// For the fuzz target `listener`: the low two bits of `data[0]` pick the
/// part of a connection a hostile peer feeds, and the rest is what it
/// sends:
/// - a request slot of arbitrary bytes on a listener's board, then an
///   `accept` (which must fail: no such pipe is there);
/// - the listener's side of the handshake, with the client's messages from
///   the input;
/// - the client's side, with the listener's messages from the input.
///
/// Bit 2 of `data[0]` drops the authkey, and bit 3 closes the peer once it
/// has sent its messages (else it stays silent; the side under test's
/// deadline has passed, so each of its reads is a look, not a wait). A
/// side with a key never accepts the peer (which cannot answer a fresh
/// random challenge), and a client without one accepts only `#WELCOME#`:
/// anything else is an authentication bypass, and panics.
pub(crate) fn fuzz_exchange(data: &[u8]) -> &'static str {
    let Some((&mode, rest)) = data.split_first() else { return "empty" };
    let key: Option<&[u8]> = if mode & 4 == 0 { Some(b"fuzz-authkey") } else { None };
    let part = (mode & 3) % 3;
    if part == 0 {
        return fuzz_request(rest);
    }
    // The messages: each a length byte and its bytes (255 says 300 bytes,
    // longer than any handshake message).
    let mut messages = Vec::new();
    let mut left = rest;
    while let Some((&n, tail)) = left.split_first() {
        let n = if n == u8::MAX { 300 } else { usize::from(n) }.min(tail.len());
        messages.push(&tail[..n]);
        left = &tail[n..];
    }
    let Ok((ours, peer)) = super::pipe() else { return "no pipe" };
    let first = if part == 2 { messages.first().copied() } else { None };
    for m in messages.iter().skip(usize::from(first.is_some())) {
        // Never a wait: what does not fit is not sent.
        if peer.send_bytes_until(m, Some(Deadline::now())).is_err() {
            break;
        }
    }
    if mode & 8 != 0 {
        peer.close();
    }
    let now = Some(Deadline::now());
    if part == 1 {
        let greeted = Unverified { conn: ours, authkey: key.map(<[u8]>::to_vec) }.greet_until(now);
        assert!(!(greeted.is_ok() && key.is_some()), "the listener accepted a client that cannot know its key");
        if greeted.is_ok() { "listener: greeted" } else { "listener: refused" }
    } else {
        let Some(first) = first else { return "client: no greeting" };
        let greeted = client_handshake(&ours, key, first, now);
        assert!(!(greeted.is_ok() && key.is_some()), "the client accepted a listener that cannot know its key");
        assert!(!(greeted.is_ok() && first != WELCOME), "the client accepted a greeting other than #WELCOME#");
        if greeted.is_ok() { "client: greeted" } else { "client: refused" }
    }
}

/// A request slot written with `record` in a fresh listener's board (as a
/// peer that writes the board itself can: its first byte `0xff` makes the
/// length word the next eight bytes, else it is the rest's length and the
/// rest the name), then an `accept` that must find nothing to accept.
fn fuzz_request(record: &[u8]) -> &'static str {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let address = format!("shmproc-fuzz-listener-{}-{n}", os::pid());
    let Ok(listener) = Listener::bind(&address, None) else { return "no listener" };
    let slot = &listener.requests.slots[(n % BACKLOG as u64) as usize];
    let (len, name) = match record.split_first() {
        Some((0xff, rest)) if rest.len() >= 8 => {
            (u64::from_le_bytes(rest[..8].try_into().expect("eight bytes")), &rest[8..])
        }
        Some((_, rest)) => (rest.len() as u64, rest),
        None => (0, record),
    };
    slot.owner.store(os::current_process().stamp(), Ordering::Relaxed);
    slot.write(&name[..name.len().min(MAX_NAME_LEN)]);
    slot.len.store(len, Ordering::Relaxed);
    slot.posted.store(POSTED, Ordering::Release);
    // (A fuzzed name could name a live client's pipe only by guessing its
    // pid, counter and 32 random bits.)
    match listener.accept_timeout(Duration::ZERO) {
        Ok(_) => panic!("accepted a request naming no pipe"),
        Err(Error::Timeout) => "request: skipped",
        Err(_) => "request: refused",
    }
}

/// Inputs the `listener` target starts from, one per part and key: a
/// request naming no pipe, one whose length is garbage, a client that answers with a wrong digest, one that answers
/// `#FAILURE#`, a listener that welcomes a client with a key, one that
/// challenges, and one that sends junk.
pub(crate) fn fuzz_examples() -> Vec<Vec<u8>> {
    let request = |pipe: &str| [&[0u8][..], pipe.as_bytes()].concat();
    let message = |m: &[u8]| [&[m.len() as u8][..], m].concat();
    let challenge = [CHALLENGE, &[7u8; NONCE_LEN][..]].concat();
    vec![
        [&[0u8][..], &request("shmproc-fuzz-no-such-pipe")].concat(),
        [&[0u8][..], &[0xff], &u64::MAX.to_le_bytes(), b"shmproc-fuzz-no-such-pipe"].concat(),
        [&[1u8][..], &message(&[9u8; 32])].concat(),
        [&[1u8][..], &message(&[1u8; 32]), &message(FAILURE)].concat(),
        vec![5u8],
        [&[2u8][..], &message(WELCOME)].concat(),
        [&[2u8][..], &message(&challenge), &message(WELCOME)].concat(),
        [&[6u8][..], &message(WELCOME)].concat(),
        [&[6u8][..], &message(&challenge)].concat(),
        [&[6u8][..], &message(b"junk")].concat(),
        [&[14u8][..], &message(WELCOME)].concat(),
        [&[9u8][..], &message(&[1u8; 32]), &message(WELCOME)].concat(),
        [&[10u8][..], &message(&challenge), &[u8::MAX], &[0u8; 300]].concat(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stamp naming a thread that lives until `stop` is dropped.
    fn live_stamp() -> (u64, std::sync::mpsc::Sender<()>) {
        let (stop, parked) = std::sync::mpsc::channel::<()>();
        let (tell, stamp) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tell.send(os::current_task().stamp()).unwrap();
            let _ = parked.recv();
        });
        (stamp.recv().unwrap(), stop)
    }

    fn address(tag: &str) -> String {
        format!("shmproc-unit-listener-{tag}-{}", os::pid())
    }

    /// Connects (on a thread) and accepts; whether both sides got there.
    fn connects(listener: &Listener, within: Duration) -> bool {
        std::thread::scope(|s| {
            let c = s.spawn(|| client_timeout(listener.address(), None, within));
            let accepted = listener.accept_timeout(within);
            c.join().unwrap().is_ok() && accepted.is_ok()
        })
    }

    #[test]
    fn a_client_stalled_while_it_posts_holds_up_no_other() {
        let listener = Listener::bind(&address("stalled"), None).unwrap();
        let (stalled, _alive) = live_stamp();
        // A client stopped between its claim and its post.
        listener.requests.slots[0].owner.store(stalled, Ordering::Relaxed);
        assert!(connects(&listener, Duration::from_secs(10)), "a stalled poster held up the next client");
        assert_eq!(listener.requests.slots[0].owner.load(Ordering::Relaxed), stalled, "its slot was taken from it");
    }

    #[test]
    fn dead_posters_slots_are_reused_and_a_full_board_makes_clients_wait() {
        let listener = Listener::bind(&address("full"), None).unwrap();
        // Every slot claimed by clients that died before they posted: an
        // acceptor takes them back, and the next client gets one.
        let ghost = os::exited_thread_stamp();
        for slot in &listener.requests.slots {
            slot.owner.store(ghost, Ordering::Relaxed);
        }
        assert!(connects(&listener, Duration::from_secs(10)), "dead posters' slots were not reused");
        // Every slot held by a live client that stalls: a new one waits
        // for room, until its timeout.
        let (stalled, _alive) = live_stamp();
        for slot in &listener.requests.slots {
            slot.owner.store(stalled, Ordering::Relaxed);
        }
        let started = std::time::Instant::now();
        assert!(matches!(client_timeout(listener.address(), None, Duration::from_millis(100)), Err(Error::Timeout)));
        assert!(started.elapsed() >= Duration::from_millis(100));
        // Room again: it gets in.
        listener.requests.slots[5].owner.store(0, Ordering::Release);
        assert!(connects(&listener, Duration::from_secs(10)));
    }

    #[test]
    fn a_request_whose_acceptor_died_is_put_back_and_garbage_is_skipped() {
        let listener = Listener::bind(&address("taker"), None).unwrap();
        let me = os::current_process().stamp();
        // Garbage: a length past any name.
        let slot = &listener.requests.slots[3];
        slot.owner.store(me, Ordering::Relaxed);
        slot.write(b"whatever");
        slot.len.store(u64::MAX, Ordering::Relaxed);
        slot.posted.store(POSTED, Ordering::Release);
        assert_eq!(listener.requests.take(me), None);
        assert_eq!(slot.owner.load(Ordering::Relaxed), 0, "a garbage request's slot is freed");
        // A request an acceptor that died was taking: put back, then taken.
        slot.owner.store(me, Ordering::Relaxed);
        slot.write(b"shmproc-some-pipe");
        slot.posted.store(os::exited_thread_stamp(), Ordering::Release);
        assert_eq!(listener.requests.take(me), None, "put back on this look");
        assert_eq!(listener.requests.take(me).as_deref(), Some("shmproc-some-pipe"));
    }
}
