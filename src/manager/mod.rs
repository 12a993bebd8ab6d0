//! Managers (Python's `multiprocessing.Manager()`): a server process that
//! owns shared dicts, lists and namespaces, and proxies that reach it from
//! any process.
//!
//! # How it works
//! [`Manager::start`] starts the server (any start method), which listens at
//! a fresh address with a random authkey ([`crate::Listener`]: named
//! shared-memory pipes, not sockets) and answers each connection on a
//! thread of its own (the handshake too). Each process that uses a server's
//! proxies opens one connection to it on first use, which all of them share
//! while the server lives (a forked child opens its own: nothing of its
//! parent's client is used there). A proxy travels to other processes and
//! pool tasks as the address, the key and its object's id. Keys and values
//! travel encoded (postcard); the server stores and compares bytes, so any
//! serde type works and two keys are the same key when their encodings are.
//!
//! # Lifetimes
//! As in Python, a shared object lives while some process holds a proxy of
//! it: each process counts its proxies of each object, attaches its
//! connection to the object with the first and detaches with the last (a
//! process that dies detaches with its connection). A proxy being sent to
//! another process keeps its object alive until it arrives, even if the
//! sender exits first: serializing it asks the server for a lend (a round
//! trip), which the receiver's deserializing ends; a lend never claimed
//! expires after two minutes. A child forked by this crate holds copies of
//! its parent's proxies as its own, the same way. [`Manager::object_count`]
//! says how many objects the server keeps.
//!
//! [`SharedDict::update`] is an atomic read-modify-write of one entry: the
//! server holds the key for that call while the closure runs here (other
//! calls' updates of that key, from any thread or process, wait by retrying;
//! the server itself never waits), and a client whose connection ends
//! releases it. Native objects ([`Manager::lock`], [`Manager::queue`], ...)
//! are the crate's own shared-memory types, made by the server under names
//! it unlinks when it stops (their names stay until then: at most 4096 of
//! them, and 1 GiB of queues and arrays).
//!
//! When the server is gone, every proxy call fails with [`Error::Closed`].

mod server;
mod wire;

use std::cell::UnsafeCell;
use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[doc(hidden)]
pub use self::server::FuzzServer;
use self::server::ServerArgs;
use self::wire::{DictOp, Kind, ListOp, Native, NsOp, Reply, Request};

/// For the fuzz target `peer_messages`: decodes `bytes` as a client decodes
/// the server's reply; what it was.
pub(crate) fn fuzz_reply(bytes: &[u8]) -> &'static str {
    match codec::decode::<Reply>(bytes) {
        Ok(_) => "manager reply",
        Err(_) => "manager reply: does not decode",
    }
}

/// For the fuzz target's seeds: replies of every shape.
pub(crate) fn fuzz_example_replies() -> Vec<Vec<u8>> {
    let b = || crate::Bytes(vec![1, 2, 3]);
    [
        Reply::Done,
        Reply::Created(5),
        Reply::Value(Some(b())),
        Reply::Pairs(vec![(b(), b())]),
        Reply::Names(vec!["a".to_owned()]),
        Reply::Error("why".to_owned()),
    ]
    .iter()
    .map(|r| codec::encode(r).expect("a reply encodes"))
    .collect()
}
use crate::array::{Array, Element, Value};
use crate::channel::listener::listening;
use crate::channel::{Connection, JoinableQueue, ObjectQueue, client, client_timeout, pipe};
use crate::codec::{self, Bytes};
use crate::error::{Error, Result};
use crate::os::{self, Deadline};
use crate::process::{Process, StartMethod, get_start_method};
use crate::sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};

/// The largest request the server takes (its own limit); a client refuses
/// to send more.
const MAX_REQUEST: usize = 256 << 20;

/// How long a manager's server may take to start listening.
const START_WITHIN: Duration = Duration::from_secs(30);

/// A manager's default limit of connections served at once (one per client
/// process).
const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// A client of a manager's server in one process: its connection, and how
/// many proxies of each object live here.
struct Client {
    address: String,
    authkey: Vec<u8>,
    /// The process image this client belongs to ([`os::fork_generation`]):
    /// in a forked child, proxies copied from the parent use a client of the
    /// child's own, never this one's locks (another thread may have held
    /// them at the fork) or connection.
    generation: u64,
    link: Mutex<Link>,
    /// Set once connecting found no server listening: a server that stopped
    /// or died never comes back at this address, so later calls (a proxy's
    /// drop among them) fail at once instead of looking again.
    gone: std::sync::atomic::AtomicBool,
    /// Proxies alive in this process, per object: the first attaches this
    /// connection to the object, the last one gone detaches it.
    refs: Mutex<HashMap<u64, usize>>,
    /// How long a call waits for the server, in nanoseconds (0: as long as
    /// it takes, Python's way); [`Manager::set_call_timeout`].
    call_timeout: AtomicU64,
}

/// A client's connection, and the objects this process holds through it.
#[derive(Default)]
struct Link {
    conn: Option<Connection>,
    /// Objects this process holds (attached or created): a new connection
    /// (after a failed one, or a refused one) attaches them again, since
    /// the server lets go of what an ended connection held.
    held: HashSet<u64>,
}

/// This process's clients, one per server.
///
/// Behind a lock a forked child can take even if a thread of its parent held
/// it at the fork (a thread the child does not have): its word is the fork
/// generation of the process image whose thread holds it, so a child finds
/// another generation there and takes the lock over. The list may then be
/// half changed, and its clients are the parent's anyway: the child starts
/// from an empty one and leaks the old (dropping a parent's connection in
/// the child would change its shared state under the parent).
struct Registry {
    /// 0: free; else the holder's fork generation (never 0).
    word: AtomicU64,
    clients: UnsafeCell<Vec<Arc<Client>>>,
}

// SAFETY: `clients` is only reached through `Registry::lock`, which gives
// one thread at a time a guard (the word's compare-exchange).
unsafe impl Sync for Registry {}

static CLIENTS: Registry = Registry { word: AtomicU64::new(0), clients: UnsafeCell::new(Vec::new()) };

impl Registry {
    fn lock(&self) -> RegistryGuard<'_> {
        let me = os::fork_generation();
        let mut tries = 0u32;
        loop {
            let word = self.word.load(Ordering::Relaxed);
            // Free, or held by a thread of another process image (a parent,
            // before the fork that made this one): take it. `Acquire` pairs
            // with the `Release` of the last unlock here, so the list is as
            // that holder left it.
            if word != me && self.word.compare_exchange_weak(word, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                let mut guard = RegistryGuard(self);
                if word == 0 {
                    // A forked child's clients from its parent: leaked, not
                    // dropped (see the type's docs).
                    guard.retain_mine(me);
                } else {
                    // SAFETY: the lock is ours; the old list may be torn, so
                    // it is overwritten without being dropped.
                    unsafe { std::ptr::write(self.clients.get(), Vec::new()) };
                }
                return guard;
            }
            // Held by another thread of this process, for a few
            // instructions.
            tries += 1;
            if tries < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

struct RegistryGuard<'a>(&'a Registry);

impl RegistryGuard<'_> {
    fn clients(&mut self) -> &mut Vec<Arc<Client>> {
        // SAFETY: this guard holds the lock, and the borrow is tied to it.
        unsafe { &mut *self.0.clients.get() }
    }

    /// Keeps the clients of this process image; leaks the others.
    fn retain_mine(&mut self, me: u64) {
        let clients = self.clients();
        if clients.iter().any(|c| c.generation != me) {
            for c in std::mem::take(clients) {
                if c.generation == me {
                    clients.push(c);
                } else {
                    std::mem::forget(c);
                }
            }
        }
    }
}

impl Drop for RegistryGuard<'_> {
    fn drop(&mut self) {
        // `Release`: the next holder sees the list as left here.
        self.0.word.store(0, Ordering::Release);
    }
}

impl Client {
    /// This process's client of the server at `address`: one for all the
    /// proxies of that server here, kept while the server lives, so that
    /// proxies arriving in one task after another (a pool's) share one
    /// connection instead of opening one each.
    fn shared(address: &str, authkey: &[u8]) -> Arc<Client> {
        let mut registry = CLIENTS.lock();
        let clients = registry.clients();
        if let Some(c) = clients.iter().find(|c| c.address == address && c.authkey == authkey) {
            return c.clone();
        }
        let c = Arc::new(Client {
            address: address.to_owned(),
            authkey: authkey.to_vec(),
            generation: os::fork_generation(),
            link: Mutex::new(Link::default()),
            gone: std::sync::atomic::AtomicBool::new(false),
            refs: Mutex::new(HashMap::new()),
            call_timeout: AtomicU64::new(0),
        });
        clients.push(c.clone());
        c
    }

    /// `self` if it belongs to this process image, else this process's own
    /// client of the same server.
    fn here(self: &Arc<Self>) -> Arc<Client> {
        if self.generation == os::fork_generation() {
            self.clone()
        } else {
            Client::shared(&self.address, &self.authkey)
        }
    }

    /// Sends `request` and waits for the reply.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone; the error the server gave.
    fn call(self: &Arc<Self>, request: &Request) -> Result<Reply> {
        let nanos = self.call_timeout.load(Ordering::Relaxed);
        self.call_within(request, (nanos != 0).then(|| Duration::from_nanos(nanos)))
    }

    /// [`call`](Self::call) within `timeout` in all: a new connection (its
    /// handshake and attaches), room to send, and the reply
    /// ([`Error::Timeout`]; the connection is then dropped, out of step).
    fn call_within(self: &Arc<Self>, request: &Request, timeout: Option<Duration>) -> Result<Reply> {
        if self.generation != os::fork_generation() {
            return self.here().call_within(request, timeout);
        }
        let bytes = codec::encode(request)?;
        if bytes.len() > MAX_REQUEST {
            return Err(Error::TooLarge { size: bytes.len(), limit: MAX_REQUEST });
        }
        let mut link = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        let link = &mut *link;
        // From here: the wait for the link (another thread's call) does not
        // count.
        let deadline = timeout.map(Deadline::after);
        // Counted before anything is sent, even before a new connection
        // (which may fail): a refused attach, or one whose connection
        // failed, is tried again on the next connection, and a detach is
        // never attached again.
        match request {
            Request::Attach(id, _) => {
                link.held.insert(*id);
            }
            Request::Detach(id) => {
                link.held.remove(id);
            }
            Request::AttachAll(_, ids) => link.held.extend(ids),
            _ => {}
        }
        if link.conn.is_none() {
            link.conn = Some(self.connect(&link.held, deadline)?);
        }
        let Some(c) = link.conn.as_ref() else { return Err(Error::Closed) };
        let reply = match deadline {
            None => c.send_bytes(&bytes).and_then(|()| c.recv::<Reply>()),
            Some(d) => c.send_bytes_until(&bytes, Some(d)).and_then(|()| c.recv_timeout::<Reply>(d.left())),
        };
        match reply {
            Ok(Reply::Created(id)) => {
                link.held.insert(id);
                Ok(Reply::Created(id))
            }
            Ok(Reply::Error(why)) => {
                if let Request::Attach(id, _) = request {
                    // Gone: nothing to hold.
                    link.held.remove(id);
                }
                Err(Error::Manager { reason: why })
            }
            Ok(Reply::Refused(why)) => {
                // The server ended this connection: the next call tries
                // again.
                link.conn = None;
                Err(Error::Manager { reason: why })
            }
            Ok(reply) => Ok(reply),
            Err(e) => {
                // The connection is no good any more (a reply that did not
                // decode, or did not come in time, leaves the two out of
                // step): the next call opens a new one, or finds the
                // server gone.
                link.conn = None;
                Err(e)
            }
        }
    }

    /// A new connection, holding `held` again (by `deadline`).
    fn connect(self: &Arc<Self>, held: &HashSet<u64>, deadline: Option<Deadline>) -> Result<Connection> {
        if self.gone.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        let left = || deadline.map(Deadline::left);
        let connected = match left() {
            None => client(&self.address, Some(&self.authkey)),
            Some(t) => client_timeout(&self.address, Some(&self.authkey), t),
        };
        let conn = match connected {
            Ok(c) => c,
            Err(Error::NotFound { .. } | Error::Closed) if !listening(&self.address) => {
                // The server is gone: this client goes from the registry
                // (its proxies keep it).
                self.gone.store(true, Ordering::Relaxed);
                CLIENTS.lock().clients().retain(|c| !Arc::ptr_eq(c, self));
                return Err(Error::Closed);
            }
            Err(e) => return Err(e),
        };
        for &id in held {
            conn.send(&Request::Attach(id, None))?;
            // Done, an object gone meanwhile, or refused.
            let reply = match left() {
                None => conn.recv::<Reply>()?,
                Some(t) => conn.recv_timeout::<Reply>(t)?,
            };
            if let Reply::Refused(why) = reply {
                return Err(Error::Manager { reason: why });
            }
        }
        Ok(conn)
    }

    /// One more proxy of object `id` here; the first attaches this
    /// connection to it, and one that arrived under a lend always does (the
    /// lend ends). A failure is the proxy's calls' to report.
    fn retain(self: &Arc<Self>, id: u64, lend: Option<u64>) {
        if self.generation != os::fork_generation() {
            return self.here().retain(id, lend);
        }
        // The count's lock is held over the round trip: a detach by the
        // last proxy and an attach by a new one reach the server in the
        // order of their counts.
        let mut refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
        let n = refs.entry(id).or_insert(0);
        if *n == 0 || lend.is_some() {
            let _ = self.call(&Request::Attach(id, lend));
        }
        *n += 1;
    }

    /// One proxy of object `id` fewer here; the last detaches.
    fn release(self: &Arc<Self>, id: u64) {
        if self.generation != os::fork_generation() {
            return self.here().release(id);
        }
        let mut refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(n) = refs.get_mut(&id) else { return };
        *n -= 1;
        if *n == 0 {
            refs.remove(&id);
            let _ = self.call(&Request::Detach(id));
        }
    }
}

/// How long a fork waits for a manager's server: the lend before it, and
/// the child's attach.
const FORK_CALL_WITHIN: Duration = Duration::from_secs(5);

thread_local! {
    /// Set while this thread starts a manager's server: it inherits no
    /// proxy (it would hold every object of every other manager for its
    /// whole life).
    static NO_INHERIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What a forked child holds of its parent's proxies: per server, a client
/// of its own with the parent's counts, and the lend that keeps those
/// objects alive until [`Inherited::attach`].
#[must_use]
pub(crate) struct Inherited(Vec<(Arc<Client>, u64)>);

impl Inherited {
    /// Attaches the child's connections to the objects it holds copies of
    /// (each ends its lend; at most 5 s a server). Nothing in the parent.
    pub(crate) fn attach(self) {
        for (client, token) in self.0 {
            let ids: Vec<u64> = client.refs.lock().unwrap_or_else(PoisonError::into_inner).keys().copied().collect();
            let _ = client.call_within(&Request::AttachAll(token, ids), Some(FORK_CALL_WITHIN));
        }
    }
}

/// Runs `fork` (which forks this process) so that a forked child holds the
/// copies of this process's proxies as its own, as a spawned one holds the
/// proxies it is sent.
///
/// Before the fork, every client's count of proxies is locked (and stays
/// locked across the fork, so the child's copies are whole), and each
/// client with proxies lends the server every object its connection holds
/// (at most 5 s a server). In the child (`in_child`), a client of its own
/// per server takes the parent's counts; [`Inherited::attach`] then ends
/// the lends, holding what the child counts. Without it, a parent dropping
/// its last proxy right after the fork (say, the one moved into the child's
/// arguments) could make the object go before the child used it. A lend
/// the child never takes expires.
pub(crate) fn around_fork<R>(fork: impl FnOnce() -> R, in_child: impl FnOnce(&R) -> bool) -> (R, Inherited) {
    if NO_INHERIT.get() {
        return (fork(), Inherited(Vec::new()));
    }
    let clients: Vec<Arc<Client>> = {
        let mut registry = CLIENTS.lock();
        registry.clients().clone()
    };
    let mut held = Vec::new();
    for c in &clients {
        let refs = c.refs.lock().unwrap_or_else(PoisonError::into_inner);
        // A server that is gone lends nothing (the child's calls say so).
        let token = if refs.is_empty() {
            None
        } else {
            match c.call_within(&Request::LendAll, Some(FORK_CALL_WITHIN)) {
                Ok(Reply::Lent(token)) => Some(token),
                _ => None,
            }
        };
        held.push((c, token, refs));
    }
    let forked = fork();
    let mut inherited = Vec::new();
    let child = in_child(&forked);
    for (c, token, refs) in held {
        if child && let Some(token) = token {
            let mine = Client::shared(&c.address, &c.authkey);
            mine.refs.lock().unwrap_or_else(PoisonError::into_inner).clone_from(&refs);
            inherited.push((mine, token));
        }
        // In the child, the parent's lock, held by this very thread: let go.
        drop(refs);
    }
    (forked, Inherited(inherited))
}

/// Configures a [`Manager`].
#[derive(Debug, Default)]
#[must_use]
pub struct ManagerBuilder {
    method: Option<StartMethod>,
    max_connections: Option<usize>,
}

impl ManagerBuilder {
    /// The server's start method (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// The most connections the server serves at once (default 1024). Each
    /// process using the manager's proxies holds one, and the server a
    /// thread for each; a process beyond the limit gets [`Error::Manager`]
    /// from its calls. At least 1.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// Starts the server and waits until it listens.
    ///
    /// # Errors
    /// [`Error::ChildFailed`] if the server died or could not listen;
    /// [`Error::Io`] if the system refuses a process.
    pub fn start(self) -> Result<Manager> {
        let mut key = [0u8; 32];
        os::random_bytes(&mut key).map_err(|e| Error::io("getrandom", e))?;
        let mut tag = [0u8; 8];
        os::random_bytes(&mut tag).map_err(|e| Error::io("getrandom", e))?;
        let address = format!("shmproc-mgr-{}-{:016x}", os::pid(), u64::from_le_bytes(tag));
        let (here, there) = pipe()?;
        let args = ServerArgs {
            address: address.clone(),
            authkey: Bytes(key.to_vec()),
            max_connections: self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS).max(1),
            ready: there,
        };
        let mut process = Process::builder()
            .name("Manager")
            .daemon(true)
            .start_method(self.method.unwrap_or_else(get_start_method))
            .target(server::server_main, args);
        // The server inherits no proxy of another manager.
        NO_INHERIT.set(true);
        let started = process.start();
        NO_INHERIT.set(false);
        started?;
        let failed = |reason: String| Error::ChildFailed { reason, exitcode: None };
        match here.recv_timeout::<std::result::Result<(), String>>(START_WITHIN) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                let _ = process.join();
                return Err(failed(format!("the manager could not listen: {why}")));
            }
            Err(e) => {
                let _ = process.kill();
                let _ = process.join();
                return Err(failed(format!("the manager did not start: {e}")));
            }
        }
        Ok(Manager { client: Client::shared(&address, &key), process: Mutex::new(Some(process)) })
    }
}

/// A manager: a server process owning shared objects (Python's
/// `Manager()`). Dropping it shuts the server down.
///
/// # Examples
///
/// ```
/// use shmproc::Manager;
///
/// let manager = Manager::start()?;
/// let scores = manager.dict::<String, u32>()?;
/// scores.insert("ada".into(), 3)?;
/// scores.update("ada".into(), |n| n.unwrap_or(0) + 1)?;
/// assert_eq!(scores.get(&"ada".into())?, Some(4));
/// manager.shutdown()?;
/// # Ok::<(), shmproc::Error>(())
/// ```
pub struct Manager {
    client: Arc<Client>,
    process: Mutex<Option<Process<()>>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").field("address", &self.client.address).finish_non_exhaustive()
    }
}

impl Manager {
    /// Starts a manager with the default start method.
    ///
    /// # Errors
    /// As [`ManagerBuilder::start`].
    pub fn start() -> Result<Manager> {
        ManagerBuilder::default().start()
    }

    /// A builder (for the start method).
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// The server's address.
    pub fn address(&self) -> &str {
        &self.client.address
    }

    /// The key clients prove they know (Python's `authkey`): with the
    /// address, what [`crate::client`] needs to talk to the server directly.
    pub fn authkey(&self) -> &[u8] {
        &self.client.authkey
    }

    /// Bounds each call of this process's proxies of this manager's objects
    /// to `timeout` in all (a new connection if one is needed, the send,
    /// the reply); `None`, the default, waits as long as it takes, as in
    /// Python. A server that is stalled, or a peer that scribbled over the
    /// connection, then gives [`Error::Timeout`] instead of a wait for ever.
    /// A call that timed out leaves the connection out of step: the next
    /// call makes a new one, and the objects this process holds are kept
    /// for it. Proxies in other processes keep their own setting.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use shmproc::Manager;
    ///
    /// let manager = Manager::start()?;
    /// let stock = manager.dict::<String, u32>()?;
    /// manager.set_call_timeout(Some(Duration::from_secs(2)));
    /// stock.insert("apples".into(), 3)?; // Error::Timeout if the server stalls
    /// assert_eq!(stock.get(&"apples".into())?, Some(3));
    /// manager.shutdown()?;
    /// # Ok::<(), shmproc::Error>(())
    /// ```
    pub fn set_call_timeout(&self, timeout: Option<Duration>) {
        let nanos = timeout.map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1));
        self.client.call_timeout.store(nanos, Ordering::Relaxed);
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.lock().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(Process::pid)
    }

    fn create(&self, kind: Kind) -> Result<u64> {
        match self.client.call(&Request::Create(kind))? {
            Reply::Created(id) => Ok(id),
            other => Err(unexpected(&other)),
        }
    }

    /// A new shared dict.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn dict<K, V>(&self) -> Result<SharedDict<K, V>> {
        Ok(SharedDict(Proxy::created(&self.client, self.create(Kind::Dict)?), PhantomData))
    }

    /// A new shared list.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn list<T>(&self) -> Result<SharedList<T>> {
        Ok(SharedList(Proxy::created(&self.client, self.create(Kind::List)?), PhantomData))
    }

    /// A new namespace (named attributes of any serde type).
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn namespace(&self) -> Result<Namespace> {
        Ok(Namespace(Proxy::created(&self.client, self.create(Kind::Namespace)?)))
    }

    fn make(&self, native: Native) -> Result<String> {
        match self.client.call(&Request::Make(native))? {
            Reply::Named(name) => Ok(name),
            other => Err(unexpected(&other)),
        }
    }

    /// A [`Lock`] made by the manager: the native shared-memory lock, named
    /// (so it travels to pool tasks), its name unlinked when the manager
    /// stops.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn lock(&self) -> Result<Lock> {
        Lock::open(&self.make(Native::Lock)?)
    }

    /// An [`RLock`] made by the manager (as [`lock`](Self::lock)).
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn rlock(&self) -> Result<RLock> {
        RLock::open(&self.make(Native::RLock)?)
    }

    /// An [`Event`] made by the manager (as [`lock`](Self::lock)).
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn event(&self) -> Result<Event> {
        Event::open(&self.make(Native::Event)?)
    }

    /// A [`Semaphore`] made by the manager (as [`lock`](Self::lock)).
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn semaphore(&self, value: u32) -> Result<Semaphore> {
        Semaphore::open(&self.make(Native::Semaphore(value))?)
    }

    /// A [`BoundedSemaphore`] made by the manager (as [`lock`](Self::lock)).
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphore> {
        BoundedSemaphore::open(&self.make(Native::BoundedSemaphore(value))?)
    }

    /// A [`Condition`] with its own [`RLock`], made by the manager (as
    /// [`lock`](Self::lock)).
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn condition(&self) -> Result<Condition> {
        Condition::open(&self.make(Native::Condition)?)
    }

    /// A [`Barrier`] for `parties` made by the manager (as
    /// [`lock`](Self::lock)).
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone; [`Error::Manager`] if
    /// `parties` is 0.
    pub fn barrier(&self, parties: u32) -> Result<Barrier> {
        Barrier::open(&self.make(Native::Barrier(parties))?)
    }

    /// A [`Value`] holding `value`, made by the manager (as
    /// [`lock`](Self::lock); Python's `Manager().Value(typecode, value)`).
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn value<T: Element>(&self, value: T) -> Result<Value<T>> {
        let v = Value::open(&self.make(Native::Array(T::TYPECODE.as_char(), 1))?)?;
        v.set(value);
        Ok(v)
    }

    /// An [`Array`] holding a copy of `values`, made by the manager (as
    /// [`lock`](Self::lock); Python's `Manager().Array(typecode,
    /// sequence)`). At most 64 MiB.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone; [`Error::Manager`] if it is
    /// too large.
    pub fn array<T: Element>(&self, values: &[T]) -> Result<Array<T>> {
        let a = Array::open(&self.make(Native::Array(T::TYPECODE.as_char(), values.len() as u64))?)?;
        a.copy_from_slice(values)?;
        Ok(a)
    }

    /// An [`ObjectQueue`] made by the manager (as [`lock`](Self::lock)),
    /// with a ring of `capacity` bytes (rounded up to a power of two): its
    /// bound is in bytes, not items as Python's `maxsize` (a message may
    /// take up to half of it). At most 64 MiB.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone; [`Error::Manager`] if it is
    /// too large.
    pub fn queue<T: Serialize + DeserializeOwned>(&self, capacity: usize) -> Result<ObjectQueue<T>> {
        ObjectQueue::open(&self.make_queue::<T>(capacity)?)
    }

    /// A [`JoinableQueue`] made by the manager (as [`queue`](Self::queue)).
    ///
    /// # Errors
    /// As [`queue`](Self::queue).
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(&self, capacity: usize) -> Result<JoinableQueue<T>> {
        JoinableQueue::open(&self.make_queue::<T>(capacity)?)
    }

    fn make_queue<T: Serialize + DeserializeOwned>(&self, capacity: usize) -> Result<String> {
        let capacity =
            u32::try_from(capacity).map_err(|_| Error::InvalidArgument { what: "a queue capacity above 4 GiB" })?;
        self.make(Native::Queue(capacity, crate::channel::type_fingerprint::<T>()))
    }

    /// How many shared objects (dicts, lists, namespaces) the server keeps:
    /// each lives while some process holds a proxy of it or one is on its
    /// way, as in Python.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn object_count(&self) -> Result<usize> {
        count(self.client.call(&Request::Live)?)
    }

    /// Stops the server: every proxy call fails with [`Error::Closed`] from
    /// now on, and the names of the native objects are unlinked (open
    /// handles keep working).
    ///
    /// # Errors
    /// [`Error::ChildFailed`] if the server had died.
    pub fn shutdown(&self) -> Result<()> {
        // A forked child's copy of the manager is its parent's to stop.
        if self.client.generation != os::fork_generation() {
            return Ok(());
        }
        let Some(mut process) = self.process.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return Ok(());
        };
        // On a connection of its own, with a deadline: the shared one may be
        // busy in another thread, and the server may be stuck.
        if let Ok(c) = client_timeout(&self.client.address, Some(&self.client.authkey), Duration::from_secs(5))
            && c.send(&Request::Shutdown).is_ok()
        {
            let _ = c.recv_timeout::<Reply>(Duration::from_secs(5));
        }
        // This process's connection goes too (unless a call is using it).
        if let Ok(mut link) = self.client.link.try_lock() {
            link.conn = None;
        }
        match process.join_timeout(Duration::from_secs(10)) {
            Ok(Some(())) => Ok(()),
            Ok(None) => {
                let _ = process.kill();
                process.join()
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn unexpected(reply: &Reply) -> Error {
    Error::Manager { reason: format!("an unexpected reply: {reply:?}") }
}

/// What every proxy holds: the server's client and the object's id. Each
/// one counts in its client's `refs`: the object lives while some process
/// holds a proxy of it, or one is on its way (see [`Request::Lend`]).
struct Proxy {
    client: Arc<Client>,
    id: u64,
}

impl Clone for Proxy {
    fn clone(&self) -> Self {
        self.client.retain(self.id, None);
        Proxy { client: self.client.clone(), id: self.id }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.client.release(self.id);
    }
}

impl Proxy {
    /// The proxy of an object just created (which the server attached to
    /// this connection).
    fn created(client: &Arc<Client>, id: u64) -> Proxy {
        // In a forked child with its parent's manager, the child's own
        // client made it.
        let client = client.here();
        *client.refs.lock().unwrap_or_else(PoisonError::into_inner).entry(id).or_insert(0) += 1;
        Proxy { client, id }
    }
}

/// How a proxy travels: the server's address and key, the object's id, and
/// the lend that keeps the object alive until the proxy arrives.
#[derive(Serialize, Deserialize)]
struct Wire {
    address: String,
    authkey: Bytes,
    id: u64,
    lend: Option<u64>,
}

impl Serialize for Proxy {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // No lend if the server or the object is gone: the receiver's calls
        // will say so.
        let lend = match self.client.call(&Request::Lend(self.id)) {
            Ok(Reply::Lent(token)) => Some(token),
            _ => None,
        };
        Wire { address: self.client.address.clone(), authkey: Bytes(self.client.authkey.clone()), id: self.id, lend }
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Proxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let client = Client::shared(&w.address, &w.authkey.0);
        client.retain(w.id, w.lend);
        Ok(Proxy { client, id: w.id })
    }
}

fn enc<T: Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    codec::encode(value).map(Bytes)
}

fn dec<T: DeserializeOwned>(bytes: &Bytes) -> Result<T> {
    codec::decode(&bytes.0)
}

fn value<T: DeserializeOwned>(reply: Reply) -> Result<Option<T>> {
    match reply {
        Reply::Value(v) => v.as_ref().map(dec).transpose(),
        other => Err(unexpected(&other)),
    }
}

fn count(reply: Reply) -> Result<usize> {
    match reply {
        Reply::Count(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        other => Err(unexpected(&other)),
    }
}

fn items<T: DeserializeOwned>(reply: Reply) -> Result<Vec<T>> {
    match reply {
        Reply::Items(items) => items.iter().map(dec).collect(),
        other => Err(unexpected(&other)),
    }
}

fn done(reply: Reply) -> Result<()> {
    match reply {
        Reply::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}

macro_rules! proxy_type {
    ($name:ident < $($t:ident),* >) => {
        impl<$($t),*> Clone for $name<$($t),*> {
            fn clone(&self) -> Self {
                $name(self.0.clone(), PhantomData)
            }
        }

        impl<$($t),*> std::fmt::Debug for $name<$($t),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).field("id", &self.0.id).finish_non_exhaustive()
            }
        }

        impl<$($t),*> Serialize for $name<$($t),*> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de, $($t),*> Deserialize<'de> for $name<$($t),*> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Ok($name(Proxy::deserialize(d)?, PhantomData))
            }
        }
    };
}

/// A dict served by a [`Manager`] (Python's `Manager().dict()`): keys and
/// values of any serde types. `Clone`, and passable to processes and pool
/// tasks. Every call is a round trip to the server; [`Error::Closed`] once
/// it is gone.
pub struct SharedDict<K, V>(Proxy, PhantomData<fn(K) -> V>);
proxy_type!(SharedDict<K, V>);

#[allow(clippy::needless_pass_by_value, reason = "HashMap's signatures: a dict takes its keys and values")]
impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> SharedDict<K, V> {
    fn call(&self, op: DictOp) -> Result<Reply> {
        self.0.client.call(&Request::Dict(self.0.id, op))
    }

    /// The value of `key`, if any.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone; [`Error::Codec`] if a value
    /// does not decode as `V`.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        value(self.call(DictOp::Get(enc(key)?))?)
    }

    /// Sets `key` to `value`; the value it had.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>> {
        self::value(self.call(DictOp::Insert(enc(&key)?, enc(&value)?))?)
    }

    /// Removes `key`; its value.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        value(self.call(DictOp::Remove(enc(key)?))?)
    }

    /// Whether `key` is there.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        match self.call(DictOp::Contains(enc(key)?))? {
            Reply::Flag(b) => Ok(b),
            other => Err(unexpected(&other)),
        }
    }

    /// The number of entries.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn len(&self) -> Result<usize> {
        count(self.call(DictOp::Len)?)
    }

    /// Whether it has no entry.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The keys (a snapshot, in no particular order).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn keys(&self) -> Result<Vec<K>> {
        items(self.call(DictOp::Keys)?)
    }

    /// The values (a snapshot).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn values(&self) -> Result<Vec<V>> {
        items(self.call(DictOp::Values)?)
    }

    /// The entries (a snapshot).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        match self.call(DictOp::Items)? {
            Reply::Pairs(pairs) => pairs.iter().map(|(k, v)| Ok((dec(k)?, dec(v)?))).collect(),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes every entry.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn clear(&self) -> Result<()> {
        done(self.call(DictOp::Clear)?)
    }

    /// Inserts every pair (one round trip).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn extend(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let pairs = pairs.into_iter().map(|(k, v)| Ok((enc(&k)?, enc(&v)?))).collect::<Result<Vec<_>>>()?;
        done(self.call(DictOp::Extend(pairs))?)
    }

    /// Sets `key` to `f(its value)`, atomically against other updates of
    /// `key` (from any thread or process: theirs wait; plain `insert`,
    /// `remove` and `clear` do not). `f` runs here; if it panics, or its
    /// old value does not decode, the key is let go untouched. Returns the
    /// new value.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn update(&self, key: K, f: impl FnOnce(Option<V>) -> V) -> Result<V> {
        /// Lets the key go untouched unless the update completed.
        struct Unhold<'a>(&'a Proxy, Option<(Bytes, u64)>);
        impl Drop for Unhold<'_> {
            fn drop(&mut self) {
                if let Some((k, token)) = self.1.take() {
                    let _ = self.0.client.call(&Request::Dict(self.0.id, DictOp::Unhold(k, token)));
                }
            }
        }
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let token = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let k = enc(&key)?;
        // A key another call holds: try again, backing off (the server
        // never waits, so this process's other calls go on meanwhile).
        let mut pause = Duration::from_micros(20);
        let old = loop {
            match self.call(DictOp::Hold(k.clone(), token))? {
                Reply::Busy => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                reply => break reply,
            }
        };
        let mut guard = Unhold(&self.0, Some((k.clone(), token)));
        let new = f(value(old)?);
        let bytes = enc(&new)?;
        guard.1 = None;
        done(self.call(DictOp::Release(k, token, Some(bytes)))?)?;
        Ok(new)
    }
}

/// A list served by a [`Manager`] (Python's `Manager().list()`).
pub struct SharedList<T>(Proxy, PhantomData<fn(T) -> T>);
proxy_type!(SharedList<T>);

#[allow(clippy::needless_pass_by_value, reason = "Vec's signatures: a list takes its items")]
impl<T: Serialize + DeserializeOwned> SharedList<T> {
    fn call(&self, op: ListOp) -> Result<Reply> {
        self.0.client.call(&Request::List(self.0.id, op))
    }

    /// Appends `item`.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn push(&self, item: T) -> Result<()> {
        done(self.call(ListOp::Push(enc(&item)?))?)
    }

    /// Removes and returns the last item.
    ///
    /// # Errors
    /// As [`push`](Self::push); [`Error::Codec`] if it does not decode.
    pub fn pop(&self) -> Result<Option<T>> {
        value(self.call(ListOp::Pop)?)
    }

    /// Item `i`.
    ///
    /// # Errors
    /// As [`pop`](Self::pop); [`Error::Manager`] if `i` is out of range.
    pub fn get(&self, i: usize) -> Result<T> {
        value(self.call(ListOp::Get(i as u64))?)?.ok_or(Error::Manager { reason: "no item".to_owned() })
    }

    /// Sets item `i`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn set(&self, i: usize, item: T) -> Result<()> {
        done(self.call(ListOp::Set(i as u64, enc(&item)?))?)
    }

    /// The number of items.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn len(&self) -> Result<usize> {
        count(self.call(ListOp::Len)?)
    }

    /// Whether it has no item.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Appends every item (one round trip).
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items = items.into_iter().map(|i| enc(&i)).collect::<Result<Vec<_>>>()?;
        done(self.call(ListOp::Extend(items))?)
    }

    /// A copy of the whole list.
    ///
    /// # Errors
    /// As [`pop`](Self::pop).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        items(self.call(ListOp::Snapshot)?)
    }
}

/// A namespace served by a [`Manager`] (Python's `Manager().Namespace()`):
/// named attributes, each of any serde type.
#[derive(Clone)]
pub struct Namespace(Proxy);

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("id", &self.0.id).finish_non_exhaustive()
    }
}

impl Serialize for Namespace {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Namespace(Proxy::deserialize(d)?))
    }
}

impl Namespace {
    fn call(&self, op: NsOp) -> Result<Reply> {
        self.0.client.call(&Request::Namespace(self.0.id, op))
    }

    /// Attribute `name`, if set.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone; [`Error::Codec`] if it does
    /// not decode as `T`.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        value(self.call(NsOp::Get(name.to_owned()))?)
    }

    /// Sets attribute `name`.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn set<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        self.call(NsOp::Set(name.to_owned(), enc(value)?)).map(drop)
    }

    /// Removes attribute `name`; whether it was set.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn remove(&self, name: &str) -> Result<bool> {
        match self.call(NsOp::Remove(name.to_owned()))? {
            Reply::Value(v) => Ok(v.is_some()),
            other => Err(unexpected(&other)),
        }
    }

    /// The names of the attributes set, sorted.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn names(&self) -> Result<Vec<String>> {
        match self.call(NsOp::Names)? {
            Reply::Names(names) => Ok(names),
            other => Err(unexpected(&other)),
        }
    }
}
