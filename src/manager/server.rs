//! The manager's server process: it owns the shared objects and answers
//! each client on a thread of its own.
//!
//! A client's request is untrusted: one that does not decode, names no
//! object or the wrong kind, or an index out of range gets
//! [`Reply::Error`], and the server goes on with that client and the others.
//! A message too large to take (above [`MAX_REQUEST`]) ends that client's
//! connection. A client that goes (closes, or dies) releases every key it
//! held for a read-modify-write.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::wire::{DictOp, Kind, ListOp, Native, NsOp, Reply, Request};
use crate::channel::object::create_queue_segment;
use crate::channel::{Connection, Listener};
use crate::codec::{self, Bytes};
use crate::error::{Error, Result};
use crate::sync::{Event, Lock, RLock, Semaphore};

/// The largest request the server reads: a client's message size is its
/// word, and the server must not allocate what any client likes.
const MAX_REQUEST: usize = 256 << 20;

/// The largest queue a client may have the server make (a segment in
/// `/dev/shm` each).
const MAX_QUEUE: usize = 64 << 20;

/// How often the accept loop looks whether it should stop: the time a
/// shutdown takes at most (an idle server wakes this often).
const ACCEPT_LOOK: Duration = Duration::from_millis(10);

/// What the server process is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct ServerArgs {
    pub(crate) address: String,
    pub(crate) authkey: Bytes,
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

struct Objects {
    next: u64,
    map: HashMap<u64, Object>,
}

struct Server {
    address: String,
    objects: Mutex<Objects>,
    /// The native objects made here (their names are unlinked when the
    /// server ends and they drop).
    natives: Mutex<Vec<Box<dyn std::any::Any + Send>>>,
    stop: AtomicBool,
    /// Names made for native objects so far (each name is used once).
    made: std::sync::atomic::AtomicU64,
}

/// The server process.
pub(crate) fn server_main(args: ServerArgs) {
    let ServerArgs { address, authkey, ready } = args;
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
    let server = Arc::new(Server::new(address));
    let mut client = 0u64;
    while !server.stop.load(Ordering::SeqCst) {
        match listener.accept_timeout(ACCEPT_LOOK) {
            Ok(conn) => {
                client += 1;
                let (server, me) = (server.clone(), client);
                let _ = std::thread::Builder::new()
                    .name(format!("shmproc-manager-{me}"))
                    .spawn(move || server.serve(&conn, me));
            }
            Err(Error::Closed) => break,
            // A client that vanished, stalled or had the wrong key: the
            // next one.
            Err(_) => {}
        }
    }
    // The listener's name and the native objects' go with the server (the
    // clients' threads die with the process: nothing else drops these).
    drop(listener);
    let natives = std::mem::take(&mut *server.natives.lock().unwrap_or_else(PoisonError::into_inner));
    drop(natives);
}

impl Server {
    fn new(address: String) -> Server {
        Server {
            address,
            objects: Mutex::new(Objects { next: 1, map: HashMap::new() }),
            natives: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            made: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers one client until it goes.
    fn serve(&self, conn: &Connection, me: u64) {
        /// Lets go of the client's keys however serving ends.
        struct LetGo<'a>(&'a Server, u64);
        impl Drop for LetGo<'_> {
            fn drop(&mut self) {
                self.0.let_go(self.1);
            }
        }
        let _let_go = LetGo(self, me);
        let mut buf = vec![0; 4096];
        // Until the client is gone, closed, or sends a message too large to
        // take.
        while let Ok(len) = conn.recv_bytes_growing(&mut buf, None, MAX_REQUEST) {
            let reply = match codec::decode::<Request>(&buf[..len]) {
                Ok(Request::Shutdown) => {
                    // The accept loop sees it within one look (`ACCEPT_LOOK`).
                    // (Waking it by connecting to ourselves left that
                    // connection's name behind when the process ended
                    // first.)
                    self.stop.store(true, Ordering::SeqCst);
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

    /// Lets go of every key client `me` held.
    fn let_go(&self, me: u64) {
        let mut objects = self.objects();
        for object in objects.map.values_mut() {
            if let Object::Dict { held, .. } = object {
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
                objects.map.insert(id, object);
                Ok(Reply::Created(id))
            }
            Request::Make(native) => self.make(native),
            Request::Dict(id, op) => self.dict(me, id, op),
            Request::List(id, op) => self.list(id, op),
            Request::Namespace(id, op) => self.namespace(id, op),
            Request::Shutdown => Ok(Reply::Done),
        };
        result.unwrap_or_else(|e| Reply::Error(e.to_string()))
    }

    fn make(&self, native: Native) -> Result<Reply> {
        let mut natives = self.natives.lock().unwrap_or_else(PoisonError::into_inner);
        let name = format!("{}-n{}", self.address, self.made.fetch_add(1, Ordering::Relaxed));
        let made: Box<dyn std::any::Any + Send> = match native {
            Native::Lock => Box::new(Lock::create(&name)?),
            Native::RLock => Box::new(RLock::create(&name)?),
            Native::Event => Box::new(Event::create(&name)?),
            Native::Semaphore(value) => Box::new(Semaphore::create(&name, value)?),
            Native::Queue(capacity, fp) => {
                if capacity as usize > MAX_QUEUE {
                    return Err(Error::TooLarge { size: capacity as usize, limit: MAX_QUEUE });
                }
                create_queue_segment(&name, capacity as usize, fp)?
            }
        };
        natives.push(made);
        Ok(Reply::Named(name))
    }

    fn dict(&self, me: u64, id: u64, op: DictOp) -> Result<Reply> {
        let mut objects = self.objects();
        let Some(Object::Dict { map, held }) = objects.map.get_mut(&id) else {
            return Err(NO_SUCH_OBJECT);
        };
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
            // Never waits: a busy key is the client's to retry, so a
            // connection is never stuck here (its process's other calls
            // would be stuck behind it).
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

    fn list(&self, id: u64, op: ListOp) -> Result<Reply> {
        let mut objects = self.objects();
        let Some(Object::List(items)) = objects.map.get_mut(&id) else { return Err(NO_SUCH_OBJECT) };
        let index = |i: u64, len: usize| {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < len)
                .ok_or(Error::InvalidArgument { what: "list index out of range" })
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

    fn namespace(&self, id: u64, op: NsOp) -> Result<Reply> {
        let mut objects = self.objects();
        let Some(Object::Namespace(attrs)) = objects.map.get_mut(&id) else {
            return Err(NO_SUCH_OBJECT);
        };
        Ok(match op {
            NsOp::Get(name) => Reply::Value(attrs.get(&name).cloned().map(Bytes)),
            NsOp::Set(name, v) => Reply::Value(attrs.insert(name, v.0).map(Bytes)),
            NsOp::Remove(name) => Reply::Value(attrs.remove(&name).map(Bytes)),
            NsOp::Names => Reply::Names(attrs.keys().cloned().collect()),
        })
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
        FuzzServer(Server::new(format!("shmproc-mgr-fuzz-{}", crate::os::pid())))
    }
}

impl FuzzServer {
    /// Answers `bytes` as one request from client `client`: what the reply
    /// was (`"malformed"` if the bytes are not a request). Requests for
    /// native objects are refused (they would make named segments).
    pub fn answer(&self, client: u64, bytes: &[u8]) -> &'static str {
        let reply = match codec::decode::<Request>(bytes) {
            Ok(Request::Make(_)) => Reply::Error("no native objects here".to_owned()),
            Ok(Request::Shutdown) => Reply::Done,
            Ok(request) => self.0.answer(client, request),
            Err(_) => return "malformed",
        };
        // Every reply must encode (it goes back to the client).
        assert!(codec::encode(&reply).is_ok(), "a reply that does not encode: {reply:?}");
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
        }
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
        ];
        requests.iter().map(|r| codec::encode(r).unwrap_or_default()).collect()
    }
}
