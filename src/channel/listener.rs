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
        let Unverified { conn, authkey } = self;
        let greeted = match &authkey {
            None => send(&conn, WELCOME),
            Some(key) => deliver_challenge(&conn, key).and_then(|()| answer_challenge(&conn, key)),
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
/// if one is given).
///
/// # Errors
/// [`Error::NotFound`] if nothing listens at `address`; [`Error::Closed`] if
/// the listener closes or dies before it accepts; [`Error::Authentication`]
/// if the authkeys differ (or one side has none).
pub fn client(address: &str, authkey: Option<&[u8]>) -> Result<Connection> {
    let requests = ObjectQueue::<Request>::open(address)?;
    let listener = requests.creator().ok_or(Error::Closed)?;
    let conn = Connection::create_named(&pipe_name()?, DEFAULT_CAPACITY, listener)?;
    let name = conn.name().map(str::to_owned).ok_or(Error::Closed)?;
    let mut request = Request { pipe: name };
    // A full backlog: wait for room while the listener lives and listens.
    loop {
        match requests.put_timeout(request, LOOK_EVERY) {
            Ok(()) => break,
            Err(PutError::Timeout(r)) if !requests.is_closed() && os::task_alive(listener) => request = r,
            Err(PutError::Timeout(_) | PutError::Closed(_)) => return Err(Error::Closed),
            Err(e) => return Err(e.into()),
        }
    }
    // The listener's first message says it accepted us.
    let first = loop {
        match recv_small(&conn, LOOK_EVERY) {
            Ok(m) => break m,
            Err(Error::Timeout) if !requests.is_closed() => {}
            Err(Error::Timeout) => return Err(Error::Closed),
            Err(e) => return Err(e),
        }
    };
    conn.unlink_name();
    match authkey {
        None if first == WELCOME => {}
        None if first.starts_with(CHALLENGE) => {
            // Refused out loud, so that the listener's accept says why.
            let _ = send(&conn, FAILURE);
            return Err(Error::Authentication { detail: "the listener requires an authkey" });
        }
        None => return Err(Error::Authentication { detail: "unexpected greeting from the listener" }),
        Some(key) => {
            answer_challenge_to(&conn, key, &first)?;
            deliver_challenge(&conn, key)?;
        }
    }
    Ok(conn)
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

/// Receives one handshake message, waiting at most [`HANDSHAKE_TIMEOUT`];
/// a message longer than any the handshake sends is refused unread.
fn handshake_recv(conn: &Connection) -> Result<Vec<u8>> {
    recv_small(conn, HANDSHAKE_TIMEOUT)
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

/// Sends one handshake message, waiting at most [`HANDSHAKE_TIMEOUT`] (a
/// peer may hold the pipe's writers' lock, or fill its ring, and never read).
fn send(conn: &Connection, message: &[u8]) -> Result<()> {
    conn.send_bytes_until(message, Some(Deadline::after(HANDSHAKE_TIMEOUT)))
}

/// Challenges the peer to prove it knows `key`.
fn deliver_challenge(conn: &Connection, key: &[u8]) -> Result<()> {
    let mut challenge = CHALLENGE.to_vec();
    let mut nonce = [0u8; NONCE_LEN];
    os::random_bytes(&mut nonce).map_err(|e| Error::io("getrandom", e))?;
    challenge.extend_from_slice(&nonce);
    send(conn, &challenge)?;
    let answer = handshake_recv(conn)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(&challenge);
    // Compared in constant time.
    if mac.verify_slice(&answer).is_ok() {
        send(conn, WELCOME)
    } else {
        send(conn, FAILURE)?;
        Err(Error::Authentication {
            detail: "the peer's answer to the challenge is wrong: a different authkey, or none",
        })
    }
}

/// Answers the peer's challenge with `key`.
fn answer_challenge(conn: &Connection, key: &[u8]) -> Result<()> {
    let challenge = handshake_recv(conn)?;
    answer_challenge_to(conn, key, &challenge)
}

/// Answers `challenge` (already received) with `key`, then reads the
/// verdict.
fn answer_challenge_to(conn: &Connection, key: &[u8], challenge: &[u8]) -> Result<()> {
    if !challenge.starts_with(CHALLENGE) {
        return Err(Error::Authentication { detail: "the peer sent no challenge: it has no authkey" });
    }
    send(conn, &digest(key, challenge))?;
    match handshake_recv(conn)?.as_slice() {
        WELCOME => Ok(()),
        _ => Err(Error::Authentication { detail: "the peer refused our answer: a different authkey" }),
    }
}
