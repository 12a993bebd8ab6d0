//! Atomic words in shared memory, for the raw baselines and the kit's control block.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shmproc::Segment;

/// Bytes in a cache line; words that different processes write live this far apart.
pub(crate) const LINE: usize = 64;

/// An anonymous shared segment (`MAP_SHARED`, survives `fork`) seen as atomic
/// words. Cloning shares the mapping; threads may share it too (the threads
/// of the in-process baselines write their results through it).
///
/// Every access is atomic, so processes may read and write any word at any
/// time; no `&` to non-atomic shared data is ever formed.
#[derive(Clone, Debug)]
pub(crate) struct SharedWords {
    seg: Arc<Segment>,
}

impl SharedWords {
    /// `len` zeroed bytes. The first byte is cache-line aligned.
    pub(crate) fn new(len: usize) -> shmproc::Result<Self> {
        let seg = Segment::anonymous(len)?;
        assert_eq!(seg.as_ptr() as usize % LINE, 0, "segment payloads start cache-line aligned");
        Ok(SharedWords { seg: Arc::new(seg) })
    }

    /// The `AtomicU32` at byte `offset`.
    ///
    /// # Panics
    /// If the word is misaligned or outside the segment.
    pub(crate) fn u32_at(&self, offset: usize) -> &AtomicU32 {
        &self.u32_slice(offset, 1)[0]
    }

    /// The `AtomicU64` at byte `offset`.
    ///
    /// # Panics
    /// If the word is misaligned or outside the segment.
    pub(crate) fn u64_at(&self, offset: usize) -> &AtomicU64 {
        self.check::<AtomicU64>(offset, 1);
        #[allow(clippy::cast_ptr_alignment)] // alignment checked above
        let ptr = self.seg.as_ptr().wrapping_add(offset).cast::<AtomicU64>();
        // SAFETY: in bounds and aligned (checked; the payload is line aligned);
        // the bytes were zeroed at creation, a valid `AtomicU64`, and every
        // process only touches them atomically; the mapping lives as long as
        // `self.seg`, which outlives the borrow.
        unsafe { &*ptr }
    }

    /// `n` consecutive `AtomicU32`s starting at byte `offset`.
    ///
    /// # Panics
    /// If the words are misaligned or leave the segment.
    pub(crate) fn u32_slice(&self, offset: usize, n: usize) -> &[AtomicU32] {
        self.check::<AtomicU32>(offset, n);
        #[allow(clippy::cast_ptr_alignment)] // alignment checked above
        let ptr = self.seg.as_ptr().wrapping_add(offset).cast::<AtomicU32>();
        // SAFETY: as in `u64_at`, for `n` words.
        unsafe { std::slice::from_raw_parts(ptr, n) }
    }

    /// Stores `msg`, cut to `cap` bytes (a multiple of 4) at a character
    /// boundary, at byte `offset`: its length in the first word, then its
    /// bytes packed into words. Read it back with [`get_str`](Self::get_str).
    ///
    /// # Panics
    /// If the `4 + cap` bytes at `offset` are misaligned or leave the segment.
    pub(crate) fn put_str(&self, offset: usize, cap: usize, msg: &str) {
        let mut end = msg.len().min(cap);
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        let bytes = &msg.as_bytes()[..end];
        let slots = self.u32_slice(offset + 4, cap / 4);
        for (slot, chunk) in slots.iter().zip(bytes.chunks(4)) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            slot.store(u32::from_le_bytes(word), Ordering::Relaxed);
        }
        self.u32_at(offset).store(end as u32, Ordering::Relaxed);
    }

    /// The message [`put_str`](Self::put_str) stored at `offset` with `cap`.
    pub(crate) fn get_str(&self, offset: usize, cap: usize) -> String {
        let len = (self.u32_at(offset).load(Ordering::Relaxed) as usize).min(cap);
        let bytes: Vec<u8> = self
            .u32_slice(offset + 4, cap / 4)
            .iter()
            .flat_map(|w: &AtomicU32| w.load(Ordering::Relaxed).to_le_bytes())
            .take(len)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn check<T>(&self, offset: usize, n: usize) {
        let end = n.checked_mul(size_of::<T>()).and_then(|b| b.checked_add(offset));
        assert!(
            offset % align_of::<T>() == 0 && end.is_some_and(|e| e <= self.seg.len()),
            "word at {offset} (x{n}) misaligned or outside a {}-byte segment",
            self.seg.len()
        );
    }
}
