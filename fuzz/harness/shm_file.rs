//! What every harness shares: an input written as a named `/dev/shm` file.
//! Each user (a fuzz target, the replay test) declares it once as `crate::shm_file`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of the names harnesses write under `/dev/shm` (then this process's
/// pid): the replay test removes leftovers by it.
pub(crate) const NAME_PREFIX: &str = "shmproc-fuzz-";

/// A file `/dev/shm/<name>` holding an input; removed on drop (also when an
/// assertion fails).
pub(crate) struct ShmFile {
    pub(crate) name: String,
    path: String,
}

impl ShmFile {
    /// Writes `data` as a fresh, uniquely named file.
    pub(crate) fn write(data: &[u8]) -> ShmFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("{NAME_PREFIX}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = format!("/dev/shm/{name}");
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        ShmFile { name, path }
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
