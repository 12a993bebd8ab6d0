//! Named connections between unrelated processes: Python's
//! `multiprocessing.connection.Listener` and `Client`.
//!
//! A [`Listener`] is an [`ObjectQueue`] of connection requests in a segment
//! named after its address (mode 0600, like every named segment: only the
//! owning user can connect). [`client`] makes a duplex pipe in a segment of
//! its own with a fresh name, records the listener's process as the holder
//! of the pipe's end 0 (so that the client sees end of file if the listener
//! dies before it accepts), and puts the pipe's name in the queue.
//! [`Listener::accept`] takes a request, opens the pipe as end 0 (adopting
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::pipe::{Connection, DEFAULT_CAPACITY};
use super::{GetError, ObjectQueue, PutError};
use crate::error::{Error, Result};
use crate::os::{self, Deadline};

/// A connection request: the name of the pipe segment the client made.
#[derive(Serialize, Deserialize, Debug)]
struct Request {
    pipe: String,
}

/// Bytes of a listener's request queue (a backlog of about 40 requests).
const BACKLOG_BYTES: usize = 4096;
/// How long a handshake step waits for the peer before giving up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a waiting client looks at the listener's queue.
const LOOK_EVERY: Duration = Duration::from_millis(20);

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in a challenge.
const NONCE_LEN: usize = 32;
/// The longest handshake message (Python reads at most 256 bytes there).
const HANDSHAKE_MAX: usize = 256;

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
    requests: ObjectQueue<Request>,
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
        let requests = ObjectQueue::create(address, BACKLOG_BYTES)?;
        let creator = requests.creator().ok_or(Error::Closed)?;
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
        loop {
            let request = match deadline {
                None => self.requests.get(),
                Some(d) => self.requests.get_timeout(d.since(Deadline::now())),
            };
            let request = match request {
                Ok(r) => r,
                Err(GetError::Timeout) => return Err(Error::Timeout),
                Err(GetError::Closed) => return Err(Error::Closed),
                Err(e) => return Err(e.into()),
            };
            // A client that gave up (or died and was swept) took its pipe's
            // name with it: nothing to accept there.
            let Ok(conn) = Connection::open_named_end_adopting(&request.pipe, 0, self.creator) else { continue };
            conn.unlink_name();
            return Ok(Unverified { conn, authkey: self.authkey.clone() });
        }
    }

    /// Stops listening: `accept` fails with [`Error::Closed`], clients whose
    /// requests were not accepted get `Closed`, and new clients find no
    /// listener. Dropping the listener does the same.
    pub fn close(&self) {
        self.requests.close();
        while let Ok(request) = self.requests.try_get() {
            if let Ok(conn) = Connection::open_named_end(&request.pipe, 0) {
                conn.unlink_name();
                conn.close();
            }
        }
    }
}

/// A client's connection taken from the queue, not yet greeted: nothing may
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

/// Whether a live listener is at `address` (its queue is there, open, and
/// made by a live process): a failed connection to a live one is worth
/// trying again, to a dead one not.
pub(crate) fn listening(address: &str) -> bool {
    ObjectQueue::<Request>::open(address).is_ok_and(|q| !q.is_closed() && q.creator().is_some_and(os::task_alive))
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
    let requests = ObjectQueue::<Request>::open(address)?;
    let listener = requests.creator().ok_or(Error::Closed)?;
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

/// Puts the request for `conn` in the listener's queue and waits for the
/// listener's first message, which says it accepted (until `deadline`, or
/// while the listener lives and listens).
fn request(
    requests: &ObjectQueue<Request>,
    conn: &Connection,
    listener: os::TaskId,
    deadline: Option<Deadline>,
) -> Result<Vec<u8>> {
    let mut request = Request { pipe: conn.name().map(str::to_owned).ok_or(Error::Closed)? };
    // A full backlog: wait for room while the listener lives and listens.
    loop {
        match requests.put_timeout(request, step(deadline, LOOK_EVERY)) {
            Ok(()) => break,
            Err(PutError::Timeout(_)) if passed(deadline) => return Err(Error::Timeout),
            Err(PutError::Timeout(r)) if !requests.is_closed() && os::task_alive(listener) => request = r,
            Err(PutError::Timeout(_) | PutError::Closed(_)) => return Err(Error::Closed),
            Err(e) => return Err(e.into()),
        }
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
    deadline.map_or(most, |d| d.since(Deadline::now()).min(most))
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
/// - a request record of arbitrary bytes in a listener's queue, then an
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

/// A request of the bytes `record` in a fresh listener's queue, then an
/// `accept` that must find nothing to accept.
fn fuzz_request(record: &[u8]) -> &'static str {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let address = format!("shmproc-fuzz-listener-{}-{}", os::pid(), NEXT.fetch_add(1, Ordering::Relaxed));
    let Ok(listener) = Listener::bind(&address, None) else { return "no listener" };
    if listener.requests.try_put_raw(record).is_err() {
        return "request: does not fit";
    }
    // (A fuzzed name could name a live client's pipe only by guessing its
    // pid, counter and 32 random bits.)
    match listener.accept_timeout(Duration::ZERO) {
        Ok(_) => panic!("accepted a request naming no pipe"),
        Err(Error::Timeout) => "request: skipped",
        Err(_) => "request: refused",
    }
}

/// Inputs the `listener` target starts from, one per part and key: two
/// well-formed requests naming no pipe, a client that answers with a wrong digest, one that answers
/// `#FAILURE#`, a listener that welcomes a client with a key, one that
/// challenges, and one that sends junk.
pub(crate) fn fuzz_examples() -> Vec<Vec<u8>> {
    let request = |pipe: &str| crate::codec::encode(&Request { pipe: pipe.to_owned() }).expect("a request encodes");
    let message = |m: &[u8]| [&[m.len() as u8][..], m].concat();
    let challenge = [CHALLENGE, &[7u8; NONCE_LEN][..]].concat();
    vec![
        [&[0u8][..], &request("shmproc-fuzz-no-such-pipe")].concat(),
        [&[0u8][..], &request("shmproc-fuzz-listener-0-0")].concat(),
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
