//! Cheap timestamps for timing single round trips.
//!
//! On x86-64 a tick is one time-stamp-counter step (`rdtsc`, ~10 ns on these
//! machines' reads, no system call); elsewhere it is a nanosecond of the
//! monotonic clock. A run converts ticks to nanoseconds with the ratio it
//! measured over its own timed loop, so the TSC's frequency never has to be
//! known.

/// The current tick count. Only differences within one process mean anything.
#[inline]
pub(crate) fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` is part of the x86-64 baseline and has no
        // preconditions; it reads a counter and touches no memory.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}
