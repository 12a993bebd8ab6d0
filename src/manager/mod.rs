//! Managers (Python's `multiprocessing.Manager()`): a server process that
//! owns shared dicts, lists and namespaces, and proxies that reach it from
//! any process.
//!
//! # How it works
//! [`Manager::start`] starts the server (any start method), which listens at
//! a fresh address with a random authkey ([`crate::Listener`]: named
//! shared-memory pipes, not sockets). Each process that uses a server's
//! proxies opens one connection to it on first use, which all of them share
//! (and keep for the life of the process); a proxy travels to other
//! processes and pool tasks as the address, the key and its object's id. Keys and values
//! travel encoded (postcard); the server stores and compares bytes, so any
//! serde type works and two keys are the same key when their encodings are.
//!
//! [`SharedDict::update`] is an atomic read-modify-write of one entry: the
//! server holds the key for that call while the closure runs here (other
//! calls' updates of that key, from any thread or process, wait by retrying;
//! the server itself never waits), and a client whose connection ends
//! releases it. Native objects ([`Manager::lock`], [`Manager::queue`], ...)
//! are the crate's own shared-memory types, made by the server under names
//! it unlinks when it stops.
//!
//! When the server is gone, every proxy call fails with [`Error::Closed`].

mod server;
mod wire;

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[doc(hidden)]
pub use self::server::FuzzServer;
use self::server::ServerArgs;
use self::wire::{DictOp, Kind, ListOp, Native, NsOp, Reply, Request};
use crate::channel::{Connection, ObjectQueue, client, pipe};
use crate::codec::{self, Bytes};
use crate::error::{Error, Result};
use crate::os;
use crate::process::{Process, StartMethod, get_start_method};
use crate::sync::{Event, Lock, RLock, Semaphore};

/// The largest request the server takes (its own limit); a client refuses
/// to send more.
const MAX_REQUEST: usize = 256 << 20;

/// How long a manager's server may take to start listening.
const START_WITHIN: Duration = Duration::from_secs(30);

/// A connection to a manager's server, one per process (a forked child
/// opens its own on first use).
struct Client {
    address: String,
    authkey: Vec<u8>,
    conn: Mutex<Option<(u32, Connection)>>,
}

impl Client {
    /// This process's client of the server at `address`: one for all the
    /// proxies of that server here, kept for the life of the process, so
    /// that proxies arriving in one task after another (a pool's) share one
    /// connection instead of opening one each.
    fn shared(address: String, authkey: Vec<u8>) -> Arc<Client> {
        static CLIENTS: Mutex<Vec<Arc<Client>>> = Mutex::new(Vec::new());
        let mut clients = CLIENTS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.iter().find(|c| c.address == address && c.authkey == authkey) {
            return c.clone();
        }
        let c = Arc::new(Client { address, authkey, conn: Mutex::new(None) });
        clients.push(c.clone());
        c
    }

    /// Sends `request` and waits for the reply.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone; the error the server gave.
    fn call(&self, request: &Request) -> Result<Reply> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = os::pid();
        if conn.as_ref().is_none_or(|(owner, _)| *owner != pid) {
            let c = client(&self.address, Some(&self.authkey)).map_err(|e| match e {
                Error::NotFound { .. } => Error::Closed,
                other => other,
            })?;
            *conn = Some((pid, c));
        }
        let Some((_, c)) = conn.as_ref() else { return Err(Error::Closed) };
        let bytes = codec::encode(request)?;
        if bytes.len() > MAX_REQUEST {
            return Err(Error::TooLarge { size: bytes.len(), limit: MAX_REQUEST });
        }
        let reply = c.send_bytes(&bytes).and_then(|()| c.recv::<Reply>());
        match reply {
            Ok(Reply::Error(why)) => Err(Error::Manager { reason: why }),
            Ok(reply) => Ok(reply),
            Err(e) => {
                // The connection is no good any more (a reply that did not
                // decode leaves the two out of step): the next call opens a
                // new one, or finds the server gone.
                *conn = None;
                Err(e)
            }
        }
    }
}

/// Configures a [`Manager`].
#[derive(Debug, Default)]
#[must_use]
pub struct ManagerBuilder {
    method: Option<StartMethod>,
}

impl ManagerBuilder {
    /// The server's start method (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
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
        let args = ServerArgs { address: address.clone(), authkey: Bytes(key.to_vec()), ready: there };
        let mut process = Process::builder()
            .name("Manager")
            .daemon(true)
            .start_method(self.method.unwrap_or_else(get_start_method))
            .target(server::server_main, args);
        process.start()?;
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
        Ok(Manager { client: Client::shared(address, key.to_vec()), process: Mutex::new(Some(process)) })
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
        Ok(SharedDict(Proxy::new(self.client.clone(), self.create(Kind::Dict)?), PhantomData))
    }

    /// A new shared list.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn list<T>(&self) -> Result<SharedList<T>> {
        Ok(SharedList(Proxy::new(self.client.clone(), self.create(Kind::List)?), PhantomData))
    }

    /// A new namespace (named attributes of any serde type).
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn namespace(&self) -> Result<Namespace> {
        Ok(Namespace(Proxy::new(self.client.clone(), self.create(Kind::Namespace)?)))
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

    /// An [`ObjectQueue`] made by the manager (as [`lock`](Self::lock)), of
    /// `capacity` bytes.
    ///
    /// # Errors
    /// [`Error::Closed`] if the server is gone.
    pub fn queue<T: Serialize + DeserializeOwned>(&self, capacity: usize) -> Result<ObjectQueue<T>> {
        let capacity =
            u32::try_from(capacity).map_err(|_| Error::InvalidArgument { what: "a queue capacity above 4 GiB" })?;
        ObjectQueue::open(&self.make(Native::Queue(capacity, crate::channel::type_fingerprint::<T>()))?)
    }

    /// Stops the server: every proxy call fails with [`Error::Closed`] from
    /// now on, and the names of the native objects are unlinked (open
    /// handles keep working).
    ///
    /// # Errors
    /// [`Error::ChildFailed`] if the server had died.
    pub fn shutdown(&self) -> Result<()> {
        let Some(mut process) = self.process.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return Ok(());
        };
        // On a connection of its own, with a deadline: the shared one may be
        // busy in another thread, and the server may be stuck.
        if let Ok(c) = client(&self.client.address, Some(&self.client.authkey))
            && c.send(&Request::Shutdown).is_ok()
        {
            let _ = c.recv_timeout::<Reply>(Duration::from_secs(5));
        }
        // This process's connection goes too (unless a call is using it).
        if let Ok(mut conn) = self.client.conn.try_lock() {
            *conn = None;
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

/// What every proxy holds: the server's client and the object's id.
struct Proxy {
    client: Arc<Client>,
    id: u64,
}

impl Clone for Proxy {
    fn clone(&self) -> Self {
        Proxy { client: self.client.clone(), id: self.id }
    }
}

impl Proxy {
    fn new(client: Arc<Client>, id: u64) -> Proxy {
        Proxy { client, id }
    }
}

/// How a proxy travels: the server's address and key, and the object's id.
#[derive(Serialize, Deserialize)]
struct Wire {
    address: String,
    authkey: Bytes,
    id: u64,
}

impl Serialize for Proxy {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        Wire { address: self.client.address.clone(), authkey: Bytes(self.client.authkey.clone()), id: self.id }
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Proxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(Proxy { client: Client::shared(w.address, w.authkey.0), id: w.id })
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
