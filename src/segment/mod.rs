//! Mapped shared-memory segments: a validated header, then the object's payload.
//!
//! A [`Segment`] is a `MAP_SHARED` mapping of either an anonymous memfd (sealed
//! against shrinking; it has no name and cannot leak) or a named POSIX
//! shared-memory object under `/dev/shm` (created `O_CREAT|O_EXCL`, mode 0600).
//! Every segment starts with the 64-byte [`header`](HEADER_LEN) described in
//! `header.rs`; every shmproc object (a `Lock`, an `Event`, ...) lives in the
//! payload of its own segment and is reached through `Shared`, which is also
//! able to put the same state on the heap (how loom checks the algorithms).

mod header;
mod passing;

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use memmap2::MmapRaw;

pub(crate) use header::{Expect, Header, INIT_PENDING, INIT_READY};

pub use header::{HEADER_LEN, HeaderSnapshot, Kind};
pub(crate) use passing::{collect_fds, pass_fd, provide_fds, received_fd};

use crate::error::{Error, Result};
use crate::os::{self, Deadline};

/// Longest accepted segment name, in bytes (well under the 255 of `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 200;

/// Segments up to this many bytes are pre-faulted when opened (as when
/// created); larger ones fault their pages in as they are touched, so that
/// opening a peer's huge segment costs nothing before it is used.
const POPULATE_LIMIT: usize = 64 << 20;

/// How long [`Segment::open`] waits for a live creator to finish initialising.
const INIT_WAIT: Duration = if cfg!(fuzzing) { Duration::from_millis(3) } else { Duration::from_secs(2) };
/// How long it waits while the header does not even name its creator yet (the
/// creator writes it microseconds after sizing the file).
const INIT_WAIT_ANONYMOUS: Duration = if cfg!(fuzzing) { Duration::from_millis(2) } else { Duration::from_millis(100) };

/// A mapped shared-memory segment: a shmproc header, then `len()` payload bytes.
///
/// This is the counterpart of Python's `multiprocessing.shared_memory.SharedMemory`;
/// the typed objects of this crate each own one. Dropping the last handle in the
/// process that created a named segment unlinks the name (unless
/// [`Segment::keep_name`] was called); a forked child dropping its inherited copy
/// never does. Anonymous segments vanish with their last mapping.
///
/// # Examples
///
/// ```
/// use shmproc::Segment;
///
/// let seg = Segment::create("shmproc-doc-segment", 4096)?;
/// seg.write_at(0, b"hello")?;
/// let other = Segment::open("shmproc-doc-segment")?; // any process of this user could
/// let mut buf = [0u8; 5];
/// other.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// # Ok::<(), shmproc::Error>(())
/// ```
pub struct Segment {
    map: MmapRaw,
    /// Kept open so that the segment can be handed to spawned children (and,
    /// for named segments, to hold the shared `flock` that marks it in use).
    fd: OwnedFd,
    name: Option<String>,
    kind: Kind,
    /// Payload length, validated against the file length at open.
    len: usize,
    /// Pid of the process that unlinks the name on drop; 0 for none.
    unlink_pid: std::sync::atomic::AtomicU32,
    /// Set by [`Segment::unlink`]: the name no longer leads here, so handles
    /// pass to children by descriptor.
    unlinked: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Checks a segment name: 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits,
/// `_`, `-` and `.`, not starting with `.` (so neither `.` nor `..`, the
/// directory and its parent, nor a hidden name) and never `..` (no `/` can
/// appear, so no name escapes `/dev/shm`).
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 200 bytes")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if name.contains("..") {
        Some("contains '..'")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        Some("only ASCII letters, digits, '_', '-' and '.' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName { name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

impl Segment {
    /// An anonymous segment of `len` zeroed payload bytes (a memfd sealed against
    /// shrinking). Shared with forked children; cannot leak.
    ///
    /// # Examples
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(100)?;
    /// assert_eq!(seg.len(), 100);
    /// assert_eq!(seg.name(), None);
    /// # Ok::<(), shmproc::Error>(())
    /// ```
    pub fn anonymous(len: usize) -> Result<Segment> {
        Self::create_object(None, Kind::Raw, 0, len, |_| {})
    }

    /// Creates the named segment `name` with `len` zeroed payload bytes; fails with
    /// [`Error::AlreadyExists`] if the name is taken.
    pub fn create(name: &str, len: usize) -> Result<Segment> {
        Self::create_object(Some(name), Kind::Raw, 0, len, |_| {})
    }

    /// Opens the named raw segment `name` (one made by [`Segment::create`]).
    pub fn open(name: &str) -> Result<Segment> {
        Self::open_object(name, &Expect { kind: Kind::Raw, type_fp: Some(0), payload_len: None })
    }

    /// The segment's name, `None` for anonymous segments.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The descriptor behind the mapping.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Payload length in bytes (the header is not counted).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The kind of object this segment holds.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Pointer to the first payload byte. Other processes may write the payload
    /// at any time: never form a `&`/`&mut` to it, use atomics or copies.
    pub fn as_ptr(&self) -> *mut u8 {
        // SAFETY: the mapping is at least HEADER_LEN + len bytes long (checked at
        // create/open), so the offset stays inside it.
        unsafe { self.map.as_mut_ptr().add(HEADER_LEN) }
    }

    /// Copies `buf.len()` payload bytes starting at `offset` into `buf`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the range leaves the payload.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        // SAFETY: the range is inside the payload (checked above); raw copies
        // form no reference to shared memory.
        unsafe { std::ptr::copy(self.as_ptr().add(offset), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into the payload starting at `offset`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the range leaves the payload.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        // SAFETY: as in `read_at`.
        unsafe { std::ptr::copy(data.as_ptr(), self.as_ptr().add(offset), data.len()) };
        Ok(())
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::InvalidArgument { what: "byte range outside the segment payload" }),
        }
    }

    /// Removes the segment's name now (mappings stay valid); a no-op for
    /// anonymous segments. After this, drop no longer unlinks.
    pub fn unlink(&self) -> Result<()> {
        self.unlink_pid.store(0, std::sync::atomic::Ordering::Relaxed);
        self.unlinked.store(true, std::sync::atomic::Ordering::Relaxed);
        match &self.name {
            Some(name) => os::shm_unlink(name).map_err(|e| Error::io("shm_unlink", e)),
            None => Ok(()),
        }
    }

    /// The name to pass this segment by: `None` if anonymous or unlinked
    /// here.
    pub(crate) fn passable_name(&self) -> Option<&str> {
        if self.unlinked.load(std::sync::atomic::Ordering::Relaxed) { None } else { self.name.as_deref() }
    }

    /// The process that created the segment, as its header names it.
    pub(crate) fn creator(&self) -> os::TaskId {
        let snap = self.header().snapshot();
        os::TaskId { tid: snap.creator_pid, start: snap.creator_start }
    }

    /// Leaves the name in place when the creating handle is dropped (Python's
    /// default): someone must later [`unlink`](Segment::unlink) it or run
    /// [`cleanup`].
    pub fn keep_name(&self) {
        self.unlink_pid.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    fn header(&self) -> &Header {
        #[allow(clippy::cast_ptr_alignment)] // mmap returns page-aligned memory
        let header = self.map.as_ptr().cast::<Header>();
        // SAFETY: the mapping is page-aligned and at least HEADER_LEN bytes long;
        // Header is repr(C), made only of atomics (any bit pattern is valid, and
        // concurrent writes by peers are atomic accesses).
        unsafe { &*header }
    }

    /// Creates a segment for an object: sizes and maps it, writes the header,
    /// runs `init` on the zeroed payload, then publishes `READY`.
    pub(crate) fn create_object(
        name: Option<&str>,
        kind: Kind,
        type_fp: u64,
        len: usize,
        init: impl FnOnce(*mut u8),
    ) -> Result<Segment> {
        let total = len
            .checked_add(HEADER_LEN)
            .filter(|t| isize::try_from(*t).is_ok())
            .ok_or(Error::InvalidArgument { what: "segment length too large" })?;
        // A named segment is made without a name where the file system
        // allows (`O_TMPFILE`) and named once whole (`shm_link`): a creator
        // killed half way leaves nothing (a name with no header would be no
        // shmproc segment to `cleanup`, and left for ever).
        let (fd, linked) = match name {
            None => (os::memfd("shmproc", total as u64).map_err(|e| Error::io("memfd_create", e))?, true),
            Some(name) => {
                validate_name(name)?;
                let nameless = NAMELESS_FIRST.load(std::sync::atomic::Ordering::Relaxed);
                match nameless.then(|| os::shm_create_unnamed(total as u64)).flatten() {
                    Some(fd) => (fd, false),
                    None => (os::shm_create(name, total as u64).map_err(|e| create_error(name, &e))?, true),
                }
            }
        };
        let creator = os::current_process();
        let map = match os::map_shared(&fd, total) {
            Ok(m) => m,
            Err(e) => {
                if let Some(name) = name
                    && linked
                {
                    let _ = os::shm_unlink(name);
                }
                return Err(Error::io("mmap", e));
            }
        };
        let mut seg = Segment {
            map,
            fd,
            // Not before it is linked: a drop must not unlink another
            // creator's segment of that name.
            name: name.filter(|_| linked).map(str::to_owned),
            kind,
            len,
            unlink_pid: std::sync::atomic::AtomicU32::new(if name.is_some() { creator.tid } else { 0 }),
            unlinked: std::sync::atomic::AtomicBool::new(false),
        };
        seg.header().write(kind, type_fp, len as u64, creator);
        init(seg.as_ptr());
        seg.header().publish();
        if let Some(name) = name
            && !linked
        {
            match os::shm_link(&seg.fd, name) {
                Ok(()) => seg.name = Some(name.to_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(create_error(name, &e)),
                // This system cannot name such a file: from now on, named
                // segments are made under their names (and this one moves).
                Err(_) => {
                    NAMELESS_FIRST.store(false, std::sync::atomic::Ordering::Relaxed);
                    return seg.moved_under(name);
                }
            }
        }
        Ok(seg)
    }

    /// A named segment with `self`'s bytes (made without a name, and seen by
    /// no one else yet: states hold no pointers, so a copy is the same
    /// object).
    fn moved_under(self, name: &str) -> Result<Segment> {
        let total = self.len + HEADER_LEN;
        let fd = os::shm_create(name, total as u64).map_err(|e| create_error(name, &e))?;
        let map = match os::map_shared(&fd, total) {
            Ok(m) => m,
            Err(e) => {
                let _ = os::shm_unlink(name);
                return Err(Error::io("mmap", e));
            }
        };
        let moved = Segment {
            map,
            fd,
            name: Some(name.to_owned()),
            kind: self.kind,
            len: self.len,
            // Its creator, this process, unlinks it.
            unlink_pid: std::sync::atomic::AtomicU32::new(os::pid()),
            unlinked: std::sync::atomic::AtomicBool::new(false),
        };
        // The name is visible from `shm_create` on: an opener may map it
        // while the bytes move. The new file is zeros, so its header says
        // "initialising" until the payload and then the header's fields are
        // copied, and `READY` is published last.
        // SAFETY: both payloads are `self.len` bytes past the header, in
        // distinct mappings; until READY no opener reads the new one, and
        // this thread alone writes it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(HEADER_LEN),
                moved.map.as_mut_ptr().add(HEADER_LEN),
                self.len,
            );
        }
        let h = self.header().snapshot();
        let creator = os::TaskId { tid: h.creator_pid, start: h.creator_start };
        moved.header().write(self.kind, h.type_fp, h.payload_len, creator);
        // Release: an opener that sees READY sees every byte copied above.
        moved.header().publish();
        Ok(moved)
    }

    /// Opens a named segment and validates its header against `expect`,
    /// waiting (bounded) for its creator to finish initialising.
    pub(crate) fn open_object(name: &str, expect: &Expect) -> Result<Segment> {
        validate_name(name)?;
        let fd = os::shm_open(name).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound { name: name.to_owned() },
            _ => Error::io("shm_open", e),
        })?;
        Self::open_fd(fd, Some(name.to_owned()), expect)
    }

    /// Maps and validates the segment behind `fd` (a descriptor handed over by a
    /// parent process, or one just opened by name).
    pub(crate) fn open_fd(fd: OwnedFd, name: Option<String>, expect: &Expect) -> Result<Segment> {
        let file_len = os::file_len(&fd).map_err(|e| Error::io("fstat", e))?;
        if file_len < HEADER_LEN as u64 {
            return Err(Error::mismatch(
                "segment length",
                format!("at least {HEADER_LEN} bytes"),
                format!("{file_len} bytes"),
            ));
        }
        // The header alone first, not pre-faulted: the file's length is the
        // peer's word, and a huge (sparse) file must not cost memory or time
        // before its header says how much of it is ours to map.
        let header = os::map_shared_lazily(&fd, HEADER_LEN).map_err(|e| Error::io("mmap", e))?;
        let mut seg = Segment {
            map: header,
            fd,
            name,
            kind: expect.kind,
            len: 0,
            unlink_pid: std::sync::atomic::AtomicU32::new(0),
            unlinked: std::sync::atomic::AtomicBool::new(false),
        };
        let snap = seg.wait_ready()?;
        snap.validate(file_len, expect)?;
        // validate() proved HEADER_LEN + payload_len <= file_len; the bytes
        // past them are never mapped. The header is read again through the
        // new mapping: what was validated is the snapshot, and every later
        // read of the header or the payload is checked where it is used.
        let total = HEADER_LEN + snap.payload_len as usize;
        seg.map = if total <= POPULATE_LIMIT {
            os::map_shared(&seg.fd, total)
        } else {
            os::map_shared_lazily(&seg.fd, total)
        }
        .map_err(|e| Error::io("mmap", e))?;
        seg.len = snap.payload_len as usize;
        Ok(seg)
    }

    /// Waits up to [`INIT_WAIT`] for `init_state == READY` (up to
    /// [`INIT_WAIT_ANONYMOUS`] while no creator is named); fails at once when
    /// the state is not one we know or the named creator is dead.
    fn wait_ready(&self) -> Result<HeaderSnapshot> {
        let start = Deadline::now();
        loop {
            match self.header().init_state() {
                INIT_READY => return Ok(self.header().snapshot()),
                INIT_PENDING => {}
                other => {
                    return Err(Error::corrupt("segment header", format!("init state {other} is not 0 or 1")));
                }
            }
            let snap = self.header().snapshot();
            let creator = os::TaskId { tid: snap.creator_pid, start: snap.creator_start };
            let bound = if snap.creator_pid == 0 { INIT_WAIT_ANONYMOUS } else { INIT_WAIT };
            let waited = Deadline::now().since(start);
            if waited >= bound || (snap.creator_pid != 0 && !os::task_alive(creator)) {
                return Err(Error::NotReady { waited, creator_pid: snap.creator_pid });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let owner = self.unlink_pid.load(std::sync::atomic::Ordering::Relaxed);
        if owner != 0
            && owner == os::pid()
            && let Some(name) = &self.name
        {
            let _ = os::shm_unlink(name);
        }
    }
}

/// Whether named segments are made without a name first (see
/// [`Segment::create_object`]); cleared the first time naming such a file
/// fails.
static NAMELESS_FIRST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn create_error(name: &str, e: &std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::AlreadyExists { name: name.to_owned() },
        _ => Error::io("shm_open(O_CREAT|O_EXCL)", std::io::Error::new(e.kind(), e.to_string())),
    }
}

/// What [`cleanup`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    /// Names removed: shmproc segments whose creator is dead and that no live
    /// process maps or holds open.
    pub removed: Vec<String>,
    /// shmproc segments left alone because their creator lives or a process
    /// still uses them.
    pub kept: Vec<String>,
}

/// Removes named shmproc segments that nobody can still be using.
///
/// A name under `/dev/shm` is removed only when all of these hold:
/// 1. it is a shmproc segment (its first 8 bytes are the magic `SHMPROC\0`;
///    anything else is never touched);
/// 2. its creator is dead: the pid in the header no longer exists, is a zombie,
///    or belongs to a later process (its start time differs from the one the
///    creator wrote);
/// 3. no process uses it: no shmproc handle holds it open (each holds a shared
///    `flock` on it, inherited by forked children), and no `/proc/<pid>/maps`
///    readable to us maps it (for users that are not shmproc, such as Python's
///    `SharedMemory`; some processes' maps are unreadable even to root, and
///    those are judged by the lock alone).
///
/// So a live segment is never removed: one whose creator lives is kept, and one
/// whose creator died but that a survivor still maps is kept. The remaining race:
/// a process that opens the name between the scan and the unlink keeps a working
/// mapping, but the name is gone for later openers.
///
/// # Examples
///
/// ```
/// let report = shmproc::cleanup()?;
/// assert!(report.removed.iter().all(|n| !n.is_empty()));
/// # Ok::<(), shmproc::Error>(())
/// ```
pub fn cleanup() -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    for name in os::shm_names().map_err(|e| Error::io("read_dir /dev/shm", e))? {
        if validate_name(&name).is_err() {
            continue;
        }
        let Some(creator) = read_creator(&name) else { continue };
        if os::task_alive(creator) || os::shm_in_use(&name) {
            report.kept.push(name);
        } else if os::shm_unlink(&name).is_ok() {
            report.removed.push(name);
        }
    }
    Ok(report)
}

/// The creator recorded in `name`'s header, if it is a shmproc segment. The
/// mapping and descriptor are closed again before returning, so that our own
/// scan of `/proc/self` does not count them as a user.
fn read_creator(name: &str) -> Option<os::TaskId> {
    let fd = os::shm_open_to_look(name).ok()?;
    if os::file_len(&fd).ok()? < HEADER_LEN as u64 {
        return None;
    }
    let map = os::map_read_only(&fd, HEADER_LEN).ok()?;
    #[allow(clippy::cast_ptr_alignment)] // mmap returns page-aligned memory
    let header = map.as_ptr().cast::<Header>();
    // SAFETY: the mapping is page-aligned and HEADER_LEN long; Header is repr(C)
    // and all atomics, valid for any bytes.
    let snap = unsafe { &*header }.snapshot();
    (snap.magic == header::MAGIC).then_some(os::TaskId { tid: snap.creator_pid, start: snap.creator_start })
}

/// State of a shmproc object that can live in a segment or on the heap.
///
/// A state may be followed by a *tail*: bytes of a length fixed at creation
/// (an array's elements, a ring's slots) that belong to the same object. The
/// segment's payload is then the state, then the tail; its header's type
/// fingerprint and payload length describe both (see [`SharedState::layout`]).
///
/// # Safety
///
/// Implementors must be `#[repr(C)]`, consist only of atomics (and arrays and
/// `#[repr(C)]` structs of them) so that every bit pattern is a valid value and
/// peers' concurrent writes are atomic accesses, hold no pointers (offsets
/// only), have alignment at most 64, and treat every value read from the state
/// as untrusted.
pub(crate) unsafe trait SharedState: Send + Sync + Sized + 'static {
    /// The kind written to, and checked in, the header.
    const KIND: Kind;
    /// Creation parameters.
    type Params: Copy;
    /// All-zero state, as a fresh segment holds it (heap backing starts here).
    fn zeroed() -> Self;
    /// Initialises a zeroed state; runs before the segment is published.
    fn init(&self, params: Self::Params);
    /// The type fingerprint and tail length an object made with `params`
    /// has. Fixed-size states keep the default: fingerprint 0, no tail.
    fn layout(_params: &Self::Params) -> Result<Layout> {
        Ok(Layout::FIXED)
    }
    /// Whether an opener accepts the layout a segment's header declares (read
    /// from shared memory: untrusted). The default accepts only
    /// [`Layout::FIXED`].
    fn check_layout(found: Layout) -> Result<()> {
        if found.type_fp != 0 {
            return Err(Error::mismatch(
                "element type",
                "fingerprint 0x0",
                format!("fingerprint {:#x}", found.type_fp),
            ));
        }
        if found.tail_len != 0 {
            let len = size_of::<Self>();
            return Err(Error::mismatch("payload length", len, len.saturating_add(found.tail_len)));
        }
        Ok(())
    }
}

/// What a segment's header says about its object beyond the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The header's `type_fp`.
    pub(crate) type_fp: u64,
    /// Payload bytes after the state.
    pub(crate) tail_len: usize,
}

impl Layout {
    /// A fixed-size, untyped state.
    pub(crate) const FIXED: Layout = Layout { type_fp: 0, tail_len: 0 };
}

/// A handle to a [`SharedState`], in a segment or on the heap. Cloning shares.
pub(crate) struct Shared<S: SharedState> {
    backing: Backing,
    ptr: NonNull<S>,
    /// Bytes from the payload's start to the state: 0, except for a state
    /// projected out of another object's (an array's lock, see [`Shared::project`]).
    offset: usize,
    /// The tail's first byte (dangling when `layout.tail_len` is 0).
    tail: NonNull<u8>,
    /// Checked by `S::check_layout` at open; fixed for the handle's life (a
    /// peer changing the header later changes nothing here).
    layout: Layout,
    _state: PhantomData<S>,
}

#[derive(Clone)]
enum Backing {
    Segment(Arc<Segment>),
    #[allow(dead_code)] // used by the loom build and by in-process unit tests
    Heap(Arc<dyn Send + Sync>),
}

// SAFETY: `ptr` and `tail` point into memory kept alive by `backing` (an Arc),
// and S is Send + Sync (all atomics), so the handle may move to and be shared
// with other threads.
unsafe impl<S: SharedState> Send for Shared<S> {}
// SAFETY: see Send.
unsafe impl<S: SharedState> Sync for Shared<S> {}

impl<S: SharedState> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared {
            backing: self.backing.clone(),
            ptr: self.ptr,
            offset: self.offset,
            tail: self.tail,
            layout: self.layout,
            _state: PhantomData,
        }
    }
}

impl<S: SharedState> fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backing {
            Backing::Segment(seg) => fmt::Debug::fmt(seg, f),
            Backing::Heap(_) => f.write_str("Heap"),
        }
    }
}

impl<S: SharedState> Deref for Shared<S> {
    type Target = S;
    fn deref(&self) -> &S {
        // SAFETY: `ptr` is valid and aligned for S while `backing` lives (see
        // `from_segment_at` and `heap`), and S's only contents are atomics.
        unsafe { self.ptr.as_ref() }
    }
}

/// A cache line of zeroes: the unit of a heap-backed tail (64-aligned, as a
/// tail in a segment is when the state's size is a multiple of 64).
#[repr(C, align(64))]
struct TailLine([u8; 64]);

impl<S: SharedState> Shared<S> {
    /// A new state in an anonymous segment (or on the heap under loom, which
    /// cannot model memory shared between processes).
    pub(crate) fn anonymous(params: S::Params) -> Result<Self> {
        #[cfg(loom)]
        return Self::heap(params);
        #[cfg(not(loom))]
        Self::in_segment(None, params, |_| {})
    }

    /// A new state in the named segment `name`.
    pub(crate) fn create(name: &str, params: S::Params) -> Result<Self> {
        Self::in_segment(Some(name), params, |_| {})
    }

    /// A new state in an anonymous (`name` `None`) or named segment; `fill`
    /// writes the zeroed tail (given as a pointer to its first byte) before
    /// the segment is published.
    pub(crate) fn create_filled(name: Option<&str>, params: S::Params, fill: impl FnOnce(*mut u8)) -> Result<Self> {
        Self::in_segment(name, params, fill)
    }

    /// The state in the existing named segment `name`.
    pub(crate) fn open(name: &str) -> Result<Self> {
        Self::from_segment(Segment::open_object(name, &Self::expect())?)
    }

    /// What the header of a segment holding S must say; the type fingerprint
    /// and payload length are judged by `S::check_layout` in `from_segment`.
    pub(crate) fn expect() -> Expect {
        Expect { kind: S::KIND, type_fp: None, payload_len: None }
    }

    /// A new state on the heap, with a zeroed tail.
    #[allow(dead_code)] // used by the loom build
    pub(crate) fn heap(params: S::Params) -> Result<Self> {
        let layout = S::layout(&params)?;
        let state =
            Arc::new((S::zeroed(), (0..layout.tail_len.div_ceil(64)).map(|_| TailLine([0; 64])).collect::<Vec<_>>()));
        state.0.init(params);
        let ptr = NonNull::from(&state.0);
        let tail = NonNull::new(state.1.as_ptr().cast_mut().cast::<u8>()).unwrap_or(NonNull::dangling());
        Ok(Shared { backing: Backing::Heap(state), ptr, offset: 0, tail, layout, _state: PhantomData })
    }

    fn in_segment(name: Option<&str>, params: S::Params, fill: impl FnOnce(*mut u8)) -> Result<Self> {
        let layout = S::layout(&params)?;
        let len = size_of::<S>()
            .checked_add(layout.tail_len)
            .ok_or(Error::InvalidArgument { what: "object too large for a segment" })?;
        let seg = Segment::create_object(name, S::KIND, layout.type_fp, len, |p| {
            // SAFETY: `p` is the zeroed, 64-aligned payload of size_of::<S>()
            // + tail_len bytes; all-zero is a valid S (atomics only), and the
            // tail starts right after the state.
            unsafe {
                (*p.cast::<S>()).init(params);
                fill(p.add(size_of::<S>()));
            }
        })?;
        Self::from_segment(seg)
    }

    /// A handle on the state at the start of `seg`'s payload, after checking
    /// the layout its header declares.
    pub(crate) fn from_segment(seg: Segment) -> Result<Self> {
        let tail_len = seg
            .len()
            .checked_sub(size_of::<S>())
            .ok_or_else(|| Error::mismatch("payload length", format!("at least {}", size_of::<S>()), seg.len()))?;
        let layout = Layout { type_fp: seg.header().snapshot().type_fp, tail_len };
        S::check_layout(layout)?;
        Self::from_segment_at(seg, 0, layout)
    }

    /// A handle on the S at `offset` bytes into `seg`'s payload (the offset
    /// comes from another process: checked here).
    pub(crate) fn from_segment_at(seg: Segment, offset: usize, layout: Layout) -> Result<Self> {
        let end = offset.checked_add(size_of::<S>()).and_then(|e| e.checked_add(layout.tail_len));
        if end.is_none_or(|e| e > seg.len()) || offset % align_of::<S>() != 0 {
            return Err(Error::mismatch(
                "payload length",
                format!("room for a {}-byte state at offset {offset}", size_of::<S>()),
                seg.len(),
            ));
        }
        // SAFETY: offset + size_of::<S>() + tail_len <= seg.len() (checked above).
        let (ptr, tail) = unsafe { (seg.as_ptr().add(offset), seg.as_ptr().add(offset + size_of::<S>())) };
        let ptr = NonNull::new(ptr.cast::<S>()).ok_or(Error::InvalidArgument { what: "null mapping" })?;
        let tail = NonNull::new(tail).ok_or(Error::InvalidArgument { what: "null mapping" })?;
        // The payload starts HEADER_LEN (64) bytes into a page-aligned mapping
        // and `offset` is a multiple of S's alignment.
        debug_assert!(align_of::<S>() <= HEADER_LEN && ptr.as_ptr() as usize % align_of::<S>() == 0);
        Ok(Shared { backing: Backing::Segment(Arc::new(seg)), ptr, offset, tail, layout, _state: PhantomData })
    }

    /// A handle on a state embedded in this one (an array's lock): it shares
    /// the backing, and travels to other processes as "the T at this offset
    /// in that segment".
    pub(crate) fn project<T: SharedState>(&self, field: impl for<'a> FnOnce(&'a S) -> &'a T) -> Shared<T> {
        let inner = NonNull::from(field(self));
        let offset = (inner.as_ptr() as usize)
            .checked_sub(self.ptr.as_ptr() as usize)
            .filter(|o| o + size_of::<T>() <= size_of::<S>())
            .expect("a projection stays inside its state");
        Shared {
            backing: self.backing.clone(),
            ptr: inner,
            offset: self.offset + offset,
            tail: NonNull::dangling(),
            layout: Layout::FIXED,
            _state: PhantomData,
        }
    }

    /// The segment holding the state; `None` when it is on the heap.
    pub(crate) fn segment(&self) -> Option<&Segment> {
        match &self.backing {
            Backing::Segment(seg) => Some(seg),
            Backing::Heap(_) => None,
        }
    }

    /// Bytes from the payload's start to the state (0 unless projected).
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    /// The layout checked at open (or made at creation).
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// The tail's first byte; `layout().tail_len` bytes follow. Peers may
    /// write them at any time: access them only atomically or by copies.
    pub(crate) fn tail(&self) -> *mut u8 {
        self.tail.as_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for bad in ["", "a/b", "..", ".", ".hidden", "a..b", "sp ace", "nul\0", &"x".repeat(201)] {
            assert!(matches!(validate_name(bad), Err(Error::InvalidName { .. })), "{bad:?}");
        }
        for good in ["a", "shmproc-test_1.x", &"x".repeat(200)] {
            validate_name(good).unwrap();
        }
    }

    #[test]
    fn a_named_segment_is_named_only_once_whole_and_moves_where_it_cannot_be() {
        let name = format!("shmproc-unit-nameless-{}", os::pid());
        let seg = Segment::create(&name, 100).unwrap();
        seg.write_at(0, b"whole").unwrap();
        assert!(matches!(Segment::create(&name, 100), Err(Error::AlreadyExists { .. })), "O_EXCL kept");
        let mut back = [0; 5];
        Segment::open(&name).unwrap().read_at(0, &mut back).unwrap();
        assert_eq!(&back, b"whole");
        drop(seg);
        assert!(matches!(Segment::open(&name), Err(Error::NotFound { .. })), "unlinked by its creator");

        // The way taken where a nameless file cannot be named: its bytes
        // move to a segment made under the name.
        let nameless = Segment::create_object(None, Kind::Raw, 0, 100, |_| {}).unwrap();
        nameless.write_at(0, b"moved").unwrap();
        let seg = nameless.moved_under(&name).unwrap();
        Segment::open(&name).unwrap().read_at(0, &mut back).unwrap();
        assert_eq!(&back, b"moved");
        drop(seg);
        assert!(Segment::open(&name).is_err());
    }

    #[test]
    fn out_of_range_copies_are_refused() {
        let seg = Segment::anonymous(8).unwrap();
        assert!(seg.write_at(4, &[0; 5]).is_err());
        assert!(seg.read_at(usize::MAX, &mut [0; 1]).is_err());
        seg.write_at(4, &[1; 4]).unwrap();
    }
}
