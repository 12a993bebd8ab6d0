//! The manager's server process: it owns the shared objects and answers
//! each client on a thread of its own.
//!
//! A client's request is untrusted: one that does not decode, names no
//! object or the wrong kind, or an index out of range gets
//! [`Reply::Error`], and the server goes on with that client and the others.
//! A message too large to take (above [`MAX_REQUEST`]) ends that client's
//! connection. A client that goes (closes, or dies) releases every key it
//! held for a read-modify-write, its hold on every object, and its lends.
//!
//! An object lives while a connection holds a proxy of it or a proxy of it
//! is on its way to another process (a lend): the client side counts its
//! proxies and attaches and detaches; see the module docs of
//! [`super`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::wire::{DictOp, Kind, ListOp, Native, NsOp, Reply, Request};
use crate::array::{DynArray, Typecode};
use crate::channel::listener::Unverified;
use crate::channel::object::create_queue_segment;
use crate::channel::{Connection, Listener};
use crate::codec::{self, Bytes};
use crate::error::{Error, Result};
use crate::os;
use crate::sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};

/// The largest request the server reads: a client's message size is its
/// word, and the server must not allocate what any client likes.
const MAX_REQUEST: usize = 256 << 20;

/// The largest queue or array a client may have the server make (a segment
/// in `/dev/shm` each).
const MAX_NATIVE_BYTES: usize = 64 << 20;

/// The most bytes of queues and arrays one server makes in all.
const MAX_NATIVE_TOTAL: usize = 1 << 30;

/// The most native objects one server makes (their names stay until it
/// stops).
const MAX_NATIVES: usize = 4096;

/// How long a lend keeps its objects alive if its proxy never arrives (it
/// was serialized more than once, its message was never read, its forked
/// child died first).
const LEND_LIFETIME: Duration = Duration::from_secs(120);

/// The most objects one connection may have lent at once (counted per
/// object in each lend).
const MAX_LENT_PER_CONNECTION: usize = 1 << 20;

/// The most connections waiting for their handshake (each has a thread
/// for up to 10 s a step): more are dropped untaken.
const MAX_GREETING: usize = 64;
/// How long the accept loop pauses after an error other than `Closed`
/// (none is expected: garbage on the board is skipped).
const ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// How long an over-limit connection's first request is waited for (to
/// answer it with the reason), and how much of it is read.
const REFUSE_WITHIN: Duration = Duration::from_secs(10);
const REFUSED_REQUEST: usize = 4096;

/// What the server process is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct ServerArgs {
    pub(crate) address: String,
    pub(crate) authkey: Bytes,
    /// The most connections served at once.
    pub(crate) max_connections: usize,
    /// Where the server says it listens (or why it cannot).
    pub(crate) ready: Connection,
}

enum Object {
    Dict {
        map: HashMap<Vec<u8>, Vec<u8>>,
        /// Keys held for a read-modify-write: by which connection and call.
        held: HashMap<Vec<u8>, (u64, u64)>,
    },
    List(Vec<Vec<u8>>),
    Namespace(BTreeMap<String, Vec<u8>>),
}

/// An object and what keeps it alive.
struct Slot {
    /// Locked on its own: a long copy of one object holds up no other.
    object: Arc<Mutex<Object>>,
    /// The connections holding a proxy of it.
    holders: HashSet<u64>,
    /// Its lends outstanding.
    lent: usize,
}

/// Proxies on their way: they keep their objects alive until they arrive
/// or the lend expires.
struct Lend {
    ids: Vec<u64>,
    lender: u64,
}

struct Objects {
    next: u64,
    slots: HashMap<u64, Slot>,
    /// Lends outstanding, by token.
    lends: HashMap<u64, Lend>,
    /// When each lend expires, in the order they were made (so in order of
    /// expiry).
    expiries: std::collections::VecDeque<(Instant, u64)>,
    /// Objects lent and outstanding, per lending connection.
    lent_by: HashMap<u64, usize>,
    next_lend: u64,
    /// The client process of each connection served through the listener
    /// (its stamp, from the pipe's holder records).
    process_of: HashMap<u64, u64>,
    /// Per client process, the lends made of what its ended connections
    /// held while it lived: its next connection's attaches end them.
    kept: HashMap<u64, Vec<u64>>,
}

impl Objects {
    fn slot(&mut self, id: u64) -> Result<&mut Slot> {
        self.slots.get_mut(&id).ok_or(NO_SUCH_OBJECT)
    }

    /// Drops object `id` if nothing keeps it alive any more.
    fn drop_if_free(&mut self, id: u64) {
        if self.slots.get(&id).is_some_and(|s| s.holders.is_empty() && s.lent == 0) {
            self.slots.remove(&id);
        }
    }

    /// Ends lend `token`: its objects are held by `holder` from now on, if
    /// given, for those of them in `keep`.
    fn end_lend(&mut self, token: u64, holder: Option<(u64, &[u64])>) {
        let Some(lend) = self.lends.remove(&token) else { return };
        if let Some(n) = self.lent_by.get_mut(&lend.lender) {
            *n = n.saturating_sub(lend.ids.len());
            if *n == 0 {
                self.lent_by.remove(&lend.lender);
            }
        }
        for id in lend.ids {
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.lent = slot.lent.saturating_sub(1);
                if let Some((me, keep)) = holder
                    && keep.contains(&id)
                {
                    slot.holders.insert(me);
                }
            }
            self.drop_if_free(id);
        }
    }

    /// Lends `ids` (each of them here) for connection `me`, from `now`: the
    /// lend's token.
    fn lend(&mut self, me: u64, ids: Vec<u64>, now: Instant) -> u64 {
        for id in &ids {
            if let Some(slot) = self.slots.get_mut(id) {
                slot.lent += 1;
            }
        }
        *self.lent_by.entry(me).or_default() += ids.len();
        let token = self.next_lend;
        self.next_lend += 1;
        self.lends.insert(token, Lend { ids, lender: me });
        self.expiries.push_back((now + LEND_LIFETIME, token));
        token
    }

    /// The connections of the client process `process` being served.
    fn connections_of(&self, process: u64) -> HashSet<u64> {
        self.process_of.iter().filter(|&(_, &p)| p == process).map(|(&c, _)| c).collect()
    }

    /// Takes `id` out of every lend kept for `process` (two of its
    /// connections that ended at once may both have kept it).
    fn unlend_kept(&mut self, process: u64, id: u64) {
        let tokens = self.kept.get(&process).cloned().unwrap_or_default();
        for token in tokens {
            self.unlend(token, id);
        }
    }

    /// Takes `id` out of lend `token` (which then keeps it alive no more).
    fn unlend(&mut self, token: u64, id: u64) {
        let Some(lend) = self.lends.get_mut(&token) else { return };
        let Some(at) = lend.ids.iter().position(|&i| i == id) else { return };
        lend.ids.swap_remove(at);
        let (lender, empty) = (lend.lender, lend.ids.is_empty());
        if empty {
            self.lends.remove(&token);
        }
        if let Some(n) = self.lent_by.get_mut(&lender) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.lent_by.remove(&lender);
            }
        }
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.lent = slot.lent.saturating_sub(1);
        }
        self.drop_if_free(id);
    }

    /// Ends the lends whose time is up.
    fn expire(&mut self, now: Instant) {
        while let Some(&(when, token)) = self.expiries.front() {
            if when > now {
                break;
            }
            self.expiries.pop_front();
            self.end_lend(token, None);
        }
    }
}

/// The native objects made here (their names are unlinked when the server
/// ends and they drop).
#[derive(Default)]
struct Natives {
    made: Vec<Box<dyn std::any::Any + Send>>,
    /// Bytes of queues and arrays among them.
    bytes: usize,
}

struct Server {
    address: String,
    objects: Mutex<Objects>,
    natives: Mutex<Natives>,
    stop: AtomicBool,
    /// The listener, for a shutdown to close (which wakes the accept loop).
    listener: Mutex<Option<Arc<Listener>>>,
    /// Names made for native objects so far (each name is used once).
    named: AtomicU64,
    /// Connections being served, and the most allowed.
    connections: AtomicUsize,
    /// Connections in their handshake.
    greeting: AtomicUsize,
    max_connections: usize,
    /// Whether `Make` makes native objects (not in the fuzz harness: they
    /// would be named segments).
    natives_allowed: bool,
}

/// The server process.
pub(crate) fn server_main(args: ServerArgs) {
    let ServerArgs { address, authkey, max_connections, ready } = args;
    let listener = match Listener::bind(&address, Some(&authkey)) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(&Err::<(), String>(e.to_string()));
            return;
        }
    };
    if ready.send(&Ok::<(), String>(())).is_err() {
        return;
    }
    drop(ready);
    let server = Arc::new(Server::new(address, max_connections));
    let listener = Arc::new(listener);
    *server.listener.lock().unwrap_or_else(PoisonError::into_inner) = Some(listener.clone());
    let mut client = 0u64;
    while !server.stop.load(Ordering::SeqCst) {
        match listener.take() {
            Ok(unverified) => {
                // Too many waiting to prove they know the key (a flood by a
                // process that may not): this one is dropped untaken, and
                // its client sees it closed.
                if server.greeting.fetch_add(1, Ordering::Relaxed) >= MAX_GREETING {
                    server.greeting.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                client += 1;
                let me = client;
                // A thread that cannot start drops the connection: its
                // client sees it closed.
                let spawned = std::thread::Builder::new().name(format!("shmproc-manager-{me}")).spawn({
                    let server = server.clone();
                    move || server.welcome(unverified, me)
                });
                if spawned.is_err() {
                    server.greeting.fetch_sub(1, Ordering::Relaxed);
                }
            }
            // Closed by a shutdown.
            Err(Error::Closed) => break,
            // None is expected (a board's garbage is skipped); if one comes
            // again and again, the loop looks now and then, not in a busy
            // loop (the connections made go on being served).
            Err(_) => std::thread::sleep(ERROR_PAUSE),
        }
    }
    // The listener's name and the native objects' go with the server (the
    // clients' threads die with the process: nothing else drops these).
    drop(server.listener.lock().unwrap_or_else(PoisonError::into_inner).take());
    drop(listener);
    let natives = std::mem::take(&mut *server.natives.lock().unwrap_or_else(PoisonError::into_inner));
    drop(natives);
}

impl Server {
    fn new(address: String, max_connections: usize) -> Server {
        Server {
            address,
            objects: Mutex::new(Objects {
                next: 1,
                slots: HashMap::new(),
                lends: HashMap::new(),
                expiries: std::collections::VecDeque::new(),
                lent_by: HashMap::new(),
                next_lend: 1,
                process_of: HashMap::new(),
                kept: HashMap::new(),
            }),
            natives: Mutex::new(Natives::default()),
            stop: AtomicBool::new(false),
            listener: Mutex::new(None),
            named: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            greeting: AtomicUsize::new(0),
            max_connections,
            natives_allowed: true,
        }
    }

    /// Stops taking clients: the accept loop wakes and ends (closing the
    /// listener, not connecting to it: that connection's name was left
    /// behind when the process ended first).
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(listener) = &*self.listener.lock().unwrap_or_else(PoisonError::into_inner) {
            listener.close();
        }
    }

    fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handshake, on this client's own thread (a client stalling in it
    /// holds up no other), then serving it, unless too many are served.
    fn welcome(&self, unverified: Unverified, me: u64) {
        /// Counts a connection for as long as it is served.
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let greeted = unverified.greet();
        self.greeting.fetch_sub(1, Ordering::Relaxed);
        // A wrong key or a client that went: nothing was served.
        let Ok(conn) = greeted else { return };
        let before = self.connections.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(&self.connections);
        if before >= self.max_connections {
            // Not counted while it is refused. Its first request gets the
            // reason (its client waits for a reply), then the connection
            // ends; but a shutdown is done.
            drop(counted);
            let mut buf = Vec::new();
            let first = conn.recv_bytes_growing(&mut buf, Some(REFUSE_WITHIN), REFUSED_REQUEST);
            if first.is_ok_and(|len| matches!(codec::decode::<Request>(&buf[..len]), Ok(Request::Shutdown))) {
                self.stop();
                let _ = conn.send(&Reply::Done);
            } else {
                let why = format!("the manager serves at most {} connections at once", self.max_connections);
                let _ = conn.send(&Reply::Refused(why));
            }
            return;
        }
        self.serve(&conn, me, true);
        drop(counted);
    }

    /// Answers one client until it goes. A client that `reconnects` (one
    /// that came through the listener, and will again) has its process
    /// recorded, as its end's holder record names it: see [`let_go`](Self::let_go).
    fn serve(&self, conn: &Connection, me: u64, reconnects: bool) {
        /// Lets go of what the client held however serving ends.
        struct LetGo<'a>(&'a Server, u64);
        impl Drop for LetGo<'_> {
            fn drop(&mut self) {
                self.0.let_go(self.1);
            }
        }
        if reconnects && let Some(process) = conn.peer_holders().first() {
            self.objects().process_of.insert(me, process.stamp());
        }
        let _let_go = LetGo(self, me);
        let mut buf = vec![0; 4096];
        // Until the client is gone, closed, or sends a message too large to
        // take.
        while let Ok(len) = conn.recv_bytes_growing(&mut buf, None, MAX_REQUEST) {
            let reply = match codec::decode::<Request>(&buf[..len]) {
                Ok(Request::Shutdown) => {
                    self.stop();
                    let _ = conn.send(&Reply::Done);
                    break;
                }
                Ok(request) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.answer(me, request)))
                    .unwrap_or_else(|_| Reply::Error("the server failed on this request".to_owned())),
                Err(e) => Reply::Error(format!("malformed request: {e}")),
            };
            if conn.send(&reply).is_err() {
                break;
            }
            if buf.len() > 1 << 20 {
                buf = vec![0; 4096];
            }
        }
    }

    /// Lets go of what connection `me` held: its keys and its proxies; the
    /// objects nothing keeps alive any more go. (Its lends stay until they
    /// arrive or expire: a process that sends a proxy and exits, a child
    /// returning one, must not take the object with it.)
    ///
    /// If its process still lives (a call that timed out, a connection it
    /// found corrupt: it connects again, and attaches what it holds), the
    /// objects it held that no other connection of that process holds are
    /// lent first: each stays until that process's next connection attaches
    /// it (which ends that part of the lend), or the lend expires.
    fn let_go(&self, me: u64) {
        let process = self.objects().process_of.remove(&me);
        // Looked at outside the objects lock (it reads `/proc`).
        let alive = process.filter(|&p| os::task_alive(os::TaskId::from_stamp(p)));
        let dicts: Vec<Arc<Mutex<Object>>> = {
            let mut objects = self.objects();
            let now = Instant::now();
            objects.expire(now);
            if let Some(process) = alive {
                let siblings = objects.connections_of(process);
                let held: Vec<u64> = objects
                    .slots
                    .iter()
                    .filter(|(_, s)| s.holders.contains(&me) && s.holders.is_disjoint(&siblings))
                    .map(|(&id, _)| id)
                    .collect();
                if !held.is_empty() {
                    let token = objects.lend(me, held, now);
                    objects.kept.entry(process).or_default().push(token);
                }
            }
            // Tokens of lends that ended go from `kept`.
            let Objects { kept, lends, .. } = &mut *objects;
            kept.retain(|_, tokens| {
                tokens.retain(|t| lends.contains_key(t));
                !tokens.is_empty()
            });
            for slot in objects.slots.values_mut() {
                slot.holders.remove(&me);
            }
            objects.slots.retain(|_, s| !s.holders.is_empty() || s.lent > 0);
            objects.slots.values().map(|s| s.object.clone()).collect()
        };
        // Each object on its own, the objects lock let go: a copy of a
        // large one in another thread holds up no other request.
        for object in dicts {
            if let Object::Dict { held, .. } = &mut *lock(&object) {
                held.retain(|_, (owner, _)| *owner != me);
            }
        }
    }

    fn answer(&self, me: u64, request: Request) -> Reply {
        let result = match request {
            Request::Create(kind) => {
                let mut objects = self.objects();
                let id = objects.next;
                objects.next += 1;
                let object = match kind {
                    Kind::Dict => Object::Dict { map: HashMap::new(), held: HashMap::new() },
                    Kind::List => Object::List(Vec::new()),
                    Kind::Namespace => Object::Namespace(BTreeMap::new()),
                };
                let slot = Slot { object: Arc::new(Mutex::new(object)), holders: HashSet::from([me]), lent: 0 };
                objects.slots.insert(id, slot);
                Ok(Reply::Created(id))
            }
            Request::Attach(id, lend) => self.attach(me, id, lend),
            Request::Detach(id) => {
                let mut objects = self.objects();
                // The process no longer holds it: nor through its other
                // connections (ended ones not yet noticed), nor through what
                // was kept for it.
                let siblings = objects.process_of.get(&me).map(|&p| (p, objects.connections_of(p)));
                if let Some((process, siblings)) = siblings {
                    if let Some(slot) = objects.slots.get_mut(&id) {
                        slot.holders.retain(|h| !siblings.contains(h));
                    }
                    objects.unlend_kept(process, id);
                }
                if let Ok(slot) = objects.slot(id) {
                    slot.holders.remove(&me);
                    objects.drop_if_free(id);
                }
                Ok(Reply::Done)
            }
            Request::Lend(id) => self.lend(me, vec![id]),
            Request::LendAll => {
                let ids =
                    self.objects().slots.iter().filter(|(_, s)| s.holders.contains(&me)).map(|(&id, _)| id).collect();
                self.lend(me, ids)
            }
            Request::AttachAll(token, keep) => {
                let mut objects = self.objects();
                objects.expire(Instant::now());
                // Each object the lend kept alive is there.
                objects.end_lend(token, Some((me, &keep)));
                Ok(Reply::Done)
            }
            Request::Live => {
                let mut objects = self.objects();
                objects.expire(Instant::now());
                Ok(Reply::Count(objects.slots.len() as u64))
            }
            Request::Make(native) => self.make(native),
            Request::Dict(id, op) => self.object(id).and_then(|o| dict(&mut lock(&o), me, op)),
            Request::List(id, op) => self.object(id).and_then(|o| list(&mut lock(&o), op)),
            Request::Namespace(id, op) => self.object(id).and_then(|o| namespace(&mut lock(&o), op)),
            Request::Shutdown => Ok(Reply::Done),
        };
        result.unwrap_or_else(|e| Reply::Error(e.to_string()))
    }

    /// Object `id` (to lock on its own, the objects lock let go).
    fn object(&self, id: u64) -> Result<Arc<Mutex<Object>>> {
        self.objects().slot(id).map(|s| s.object.clone())
    }

    /// Connection `me` holds a proxy of `id`; the lend `lend`, if it is one
    /// of `id`'s, has arrived.
    fn attach(&self, me: u64, id: u64, lend: Option<u64>) -> Result<Reply> {
        let mut objects = self.objects();
        objects.expire(Instant::now());
        // Held from now on (the lend kept it alive, if it is one of `id`'s:
        // the object is there).
        objects.slot(id)?.holders.insert(me);
        if let Some(token) = lend
            && objects.lends.get(&token).is_some_and(|l| l.ids == [id])
        {
            objects.end_lend(token, None);
        }
        // A process attaching again what an ended connection of it held:
        // that part of what was kept for it ends.
        if lend.is_none()
            && let Some(process) = objects.process_of.get(&me).copied()
        {
            objects.unlend_kept(process, id);
        }
        Ok(Reply::Done)
    }

    /// Proxies of `ids` are being sent on by connection `me` (or copied
    /// into a forked child): a lend, which keeps them alive until they
    /// arrive or `me` ends.
    fn lend(&self, me: u64, ids: Vec<u64>) -> Result<Reply> {
        let mut objects = self.objects();
        let now = Instant::now();
        objects.expire(now);
        let lent = objects.lent_by.get(&me).copied().unwrap_or(0) + ids.len();
        if lent > MAX_LENT_PER_CONNECTION {
            return Err(Error::TooLarge { size: lent, limit: MAX_LENT_PER_CONNECTION });
        }
        for &id in &ids {
            objects.slot(id)?;
        }
        Ok(Reply::Lent(objects.lend(me, ids, now)))
    }

    fn make(&self, native: Native) -> Result<Reply> {
        if !self.natives_allowed {
            return Err(Error::InvalidArgument { what: "no native objects here" });
        }
        let mut natives = self.natives.lock().unwrap_or_else(PoisonError::into_inner);
        if natives.made.len() >= MAX_NATIVES {
            return Err(Error::InvalidArgument {
                what: "the manager has made as many native objects as it makes (4096)",
            });
        }
        let bytes = match native {
            Native::Queue(capacity, _) => capacity as usize,
            Native::Array(code, len) => {
                let size = Typecode::from_char(code)?.size();
                usize::try_from(len).ok().and_then(|n| n.checked_mul(size)).unwrap_or(usize::MAX)
            }
            _ => 0,
        };
        if bytes > MAX_NATIVE_BYTES {
            return Err(Error::TooLarge { size: bytes, limit: MAX_NATIVE_BYTES });
        }
        if natives.bytes + bytes > MAX_NATIVE_TOTAL {
            return Err(Error::TooLarge { size: natives.bytes + bytes, limit: MAX_NATIVE_TOTAL });
        }
        let name = format!("{}-n{}", self.address, self.named.fetch_add(1, Ordering::Relaxed));
        let made: Box<dyn std::any::Any + Send> = match native {
            Native::Lock => Box::new(Lock::create(&name)?),
            Native::RLock => Box::new(RLock::create(&name)?),
            Native::Event => Box::new(Event::create(&name)?),
            Native::Semaphore(value) => Box::new(Semaphore::create(&name, value)?),
            Native::BoundedSemaphore(value) => Box::new(BoundedSemaphore::create(&name, value)?),
            Native::Condition => Box::new(Condition::create(&name)?),
            Native::Barrier(parties) => Box::new(Barrier::create(&name, parties)?),
            Native::Queue(capacity, fp) => create_queue_segment(&name, capacity as usize, fp)?,
            Native::Array(code, len) => {
                let len = usize::try_from(len).map_err(|_| Error::InvalidArgument { what: "array length" })?;
                Box::new(DynArray::create(&name, Typecode::from_char(code)?, len)?)
            }
        };
        natives.made.push(made);
        natives.bytes += bytes;
        Ok(Reply::Named(name))
    }
}

fn lock(object: &Mutex<Object>) -> MutexGuard<'_, Object> {
    object.lock().unwrap_or_else(PoisonError::into_inner)
}

fn dict(object: &mut Object, me: u64, op: DictOp) -> Result<Reply> {
    let Object::Dict { map, held } = object else { return Err(NO_SUCH_OBJECT) };
    Ok(match op {
        DictOp::Get(k) => Reply::Value(map.get(&k.0).cloned().map(Bytes)),
        DictOp::Insert(k, v) => Reply::Value(map.insert(k.0, v.0).map(Bytes)),
        DictOp::Remove(k) => Reply::Value(map.remove(&k.0).map(Bytes)),
        DictOp::Contains(k) => Reply::Flag(map.contains_key(&k.0)),
        DictOp::Len => Reply::Count(map.len() as u64),
        DictOp::Keys => Reply::Items(map.keys().cloned().map(Bytes).collect()),
        DictOp::Values => Reply::Items(map.values().cloned().map(Bytes).collect()),
        DictOp::Items => Reply::Pairs(map.iter().map(|(k, v)| (Bytes(k.clone()), Bytes(v.clone()))).collect()),
        DictOp::Clear => {
            map.clear();
            Reply::Done
        }
        DictOp::Extend(pairs) => {
            map.extend(pairs.into_iter().map(|(k, v)| (k.0, v.0)));
            Reply::Done
        }
        // Never waits: a busy key is the client's to retry, so a connection
        // is never stuck here (its process's other calls would be stuck
        // behind it).
        DictOp::Hold(k, token) => {
            if held.contains_key(&k.0) {
                return Ok(Reply::Busy);
            }
            held.insert(k.0.clone(), (me, token));
            Reply::Value(map.get(&k.0).cloned().map(Bytes))
        }
        DictOp::Release(k, token, v) => {
            if held.get(&k.0) != Some(&(me, token)) {
                return Err(Error::InvalidArgument { what: "releasing a key this call does not hold" });
            }
            held.remove(&k.0);
            match v {
                Some(v) => map.insert(k.0, v.0),
                None => map.remove(&k.0),
            };
            Reply::Done
        }
        DictOp::Unhold(k, token) => {
            if held.get(&k.0) == Some(&(me, token)) {
                held.remove(&k.0);
            }
            Reply::Done
        }
    })
}

fn list(object: &mut Object, op: ListOp) -> Result<Reply> {
    let Object::List(items) = object else { return Err(NO_SUCH_OBJECT) };
    let index = |i: u64, len: usize| {
        usize::try_from(i).ok().filter(|&i| i < len).ok_or(Error::InvalidArgument { what: "list index out of range" })
    };
    Ok(match op {
        ListOp::Push(v) => {
            items.push(v.0);
            Reply::Done
        }
        ListOp::Pop => Reply::Value(items.pop().map(Bytes)),
        ListOp::Get(i) => Reply::Value(Some(Bytes(items[index(i, items.len())?].clone()))),
        ListOp::Set(i, v) => {
            let i = index(i, items.len())?;
            items[i] = v.0;
            Reply::Done
        }
        ListOp::Len => Reply::Count(items.len() as u64),
        ListOp::Extend(vs) => {
            items.extend(vs.into_iter().map(|v| v.0));
            Reply::Done
        }
        ListOp::Snapshot => Reply::Items(items.iter().cloned().map(Bytes).collect()),
    })
}

fn namespace(object: &mut Object, op: NsOp) -> Result<Reply> {
    let Object::Namespace(attrs) = object else { return Err(NO_SUCH_OBJECT) };
    Ok(match op {
        NsOp::Get(name) => Reply::Value(attrs.get(&name).cloned().map(Bytes)),
        NsOp::Set(name, v) => Reply::Value(attrs.insert(name, v.0).map(Bytes)),
        NsOp::Remove(name) => Reply::Value(attrs.remove(&name).map(Bytes)),
        NsOp::Names => Reply::Names(attrs.keys().cloned().collect()),
    })
}

/// A reply's kind, for the fuzz harness's report.
fn reply_kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Done => "done",
        Reply::Created(_) => "created",
        Reply::Named(_) => "named",
        Reply::Value(_) => "value",
        Reply::Flag(_) => "flag",
        Reply::Count(_) => "count",
        Reply::Items(_) => "items",
        Reply::Pairs(_) => "pairs",
        Reply::Names(_) => "names",
        Reply::Busy => "busy",
        Reply::Error(_) => "error",
        Reply::Lent(_) => "lent",
        Reply::Refused(_) => "refused",
    }
}

/// A request naming no object of the kind it asks for.
const NO_SUCH_OBJECT: Error = Error::InvalidArgument { what: "no object of that id and kind in this manager" };

/// The manager's request handling in this process, without a server process
/// or a listener: for the `manager_request` fuzz target and its corpus
/// replay. Not part of the API.
#[doc(hidden)]
pub struct FuzzServer(Server);

impl std::fmt::Debug for FuzzServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuzzServer").finish_non_exhaustive()
    }
}

impl Default for FuzzServer {
    fn default() -> Self {
        let mut server = Server::new(format!("shmproc-mgr-fuzz-{}", crate::os::pid()), usize::MAX);
        server.natives_allowed = false;
        FuzzServer(server)
    }
}

impl FuzzServer {
    /// Answers `bytes` as one request from client `client`: what the reply
    /// was (`"malformed"` if the bytes are not a request). Requests for
    /// native objects are refused (they would make named segments).
    pub fn answer(&self, client: u64, bytes: &[u8]) -> &'static str {
        let reply = match codec::decode::<Request>(bytes) {
            Ok(Request::Shutdown) => Reply::Done,
            Ok(request) => self.0.answer(client, request),
            Err(_) => return "malformed",
        };
        // Every reply must encode (it goes back to the client).
        assert!(codec::encode(&reply).is_ok(), "a reply that does not encode: {reply:?}");
        reply_kind(&reply)
    }

    /// Sends each of `requests` as client `client` over a real connection
    /// (an anonymous pipe) to the server's loop serving it on a thread, and
    /// waits for each reply; then closes the connection, which lets go of
    /// what the client held. The kinds of reply, in order; the loop ends
    /// at a shutdown request or a message it will not take.
    pub fn serve(&self, client: u64, requests: &[&[u8]]) -> Vec<&'static str> {
        let Ok((here, there)) = crate::channel::pipe_with_capacity(4096, true) else { return Vec::new() };
        std::thread::scope(|s| {
            s.spawn(move || self.0.serve(&there, client, false));
            let mut kinds = Vec::new();
            for request in requests {
                // The loop ended (a shutdown): nothing answers any more.
                if here.send_bytes(request).is_err() {
                    break;
                }
                match here.recv::<Reply>() {
                    Ok(reply) => kinds.push(reply_kind(&reply)),
                    Err(_) => break,
                }
            }
            // Closed, not only dropped: the loop wakes at once (a drop is
            // seen by a periodic look).
            here.close();
            kinds
        })
    }

    /// Client `client` went: its held keys go.
    pub fn client_gone(&self, client: u64) {
        self.0.let_go(client);
    }

    /// Valid requests, encoded, for seeds: create a dict, a list and a
    /// namespace (ids 1, 2, 3), then use each.
    pub fn example_requests() -> Vec<Vec<u8>> {
        let b = |v: &[u8]| Bytes(v.to_vec());
        let requests = [
            Request::Create(Kind::Dict),
            Request::Create(Kind::List),
            Request::Create(Kind::Namespace),
            Request::Dict(1, DictOp::Insert(b(b"k"), b(b"v"))),
            Request::Dict(1, DictOp::Get(b(b"k"))),
            Request::Dict(1, DictOp::Hold(b(b"k"), 7)),
            Request::Dict(1, DictOp::Release(b(b"k"), 7, Some(b(b"w")))),
            Request::Dict(1, DictOp::Extend(vec![(b(b"a"), b(b"1")), (b(b"b"), b(b"2"))])),
            Request::Dict(1, DictOp::Items),
            Request::Dict(1, DictOp::Len),
            Request::List(2, ListOp::Push(b(b"x"))),
            Request::List(2, ListOp::Set(0, b(b"y"))),
            Request::List(2, ListOp::Get(5)),
            Request::List(2, ListOp::Snapshot),
            Request::Namespace(3, NsOp::Set("n".to_owned(), b(b"1"))),
            Request::Namespace(3, NsOp::Names),
            Request::Dict(2, DictOp::Len),
            Request::Lend(1),
            Request::Attach(1, Some(1)),
            Request::LendAll,
            Request::AttachAll(2, vec![1, 2]),
            Request::Detach(3),
            Request::Live,
            Request::Make(Native::Lock),
            Request::Namespace(3, NsOp::Names),
        ];
        requests.iter().map(|r| codec::encode(r).unwrap_or_default()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The objects the server keeps (what `Live` answers).
    fn live(server: &Server) -> u64 {
        match server.answer(0, Request::Live) {
            Reply::Count(n) => n,
            other => panic!("Live: {other:?}"),
        }
    }

    /// A server whose connections `conns` are this (live) process's, as
    /// `serve` records them for connections through the listener.
    fn with_connections(conns: &[u64]) -> (Server, u64) {
        let server = Server::new("shmproc-unit-server".to_owned(), 8);
        let process = os::current_process().stamp();
        for &c in conns {
            server.objects().process_of.insert(c, process);
        }
        (server, process)
    }

    fn create(server: &Server, me: u64) -> u64 {
        match server.answer(me, Request::Create(Kind::Dict)) {
            Reply::Created(id) => id,
            other => panic!("Create: {other:?}"),
        }
    }

    #[test]
    fn a_live_process_keeps_what_an_ended_connection_held_until_it_attaches_again() {
        let (server, process) = with_connections(&[1, 2]);
        let id = create(&server, 1);
        // Connection 1 ends while its process lives: the dict is kept.
        server.let_go(1);
        assert_eq!(live(&server), 1);
        assert_eq!(server.objects().kept.get(&process).map(Vec::len), Some(1));
        // The next connection attaches it again: the keeping ends, and its
        // detach frees it at once (not two minutes on).
        assert!(matches!(server.answer(2, Request::Attach(id, None)), Reply::Done));
        assert!(server.objects().lends.is_empty(), "the kept lend ended");
        assert!(matches!(server.answer(2, Request::Detach(id)), Reply::Done));
        assert_eq!(live(&server), 0);
    }

    #[test]
    fn a_detach_lets_go_of_what_ended_connections_of_the_process_hold() {
        // Connection 1 ended but is not noticed yet; 2 attached and
        // detaches: nothing of the process holds the dict any more.
        let (server, _) = with_connections(&[1, 2]);
        let id = create(&server, 1);
        assert!(matches!(server.answer(2, Request::Attach(id, None)), Reply::Done));
        assert!(matches!(server.answer(2, Request::Detach(id)), Reply::Done));
        assert_eq!(live(&server), 0, "held by the process's ended connection");
        server.let_go(1);
        assert_eq!(live(&server), 0);
        assert!(server.objects().lends.is_empty());
    }

    #[test]
    fn two_ended_connections_keeping_one_object_are_both_ended_by_an_attach() {
        let (server, _) = with_connections(&[1, 2, 3]);
        let id = create(&server, 1);
        assert!(matches!(server.answer(2, Request::Attach(id, None)), Reply::Done));
        // Both end at once: each keeps it (neither sees the other).
        let process = server.objects().process_of[&1];
        {
            let mut objects = server.objects();
            objects.process_of.remove(&1);
            objects.process_of.remove(&2);
        }
        for me in [1, 2] {
            let mut objects = server.objects();
            objects.slots.get_mut(&id).unwrap().holders.remove(&me);
            let token = objects.lend(me, vec![id], Instant::now());
            objects.kept.entry(process).or_default().push(token);
        }
        assert!(matches!(server.answer(3, Request::Attach(id, None)), Reply::Done));
        assert!(server.objects().lends.is_empty(), "a kept lend outlived the attach");
        assert!(matches!(server.answer(3, Request::Detach(id)), Reply::Done));
        assert_eq!(live(&server), 0);
    }

    #[test]
    fn a_dead_process_keeps_nothing() {
        let server = Server::new("shmproc-unit-server".to_owned(), 8);
        // A stamp that names no live task.
        server.objects().process_of.insert(1, os::exited_thread_stamp());
        create(&server, 1);
        server.let_go(1);
        assert_eq!(live(&server), 0);
    }
}
