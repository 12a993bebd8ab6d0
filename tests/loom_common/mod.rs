//! What the loom models share: the model runner and a loom-checked cell for
//! data that a primitive under test guards.

use loom::sync::Arc;

/// Runs `f` under loom, exploring schedules with at most `bound` preemptions
/// unless `LOOM_MAX_PREEMPTIONS` says otherwise.
pub(crate) fn model(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(bound);
    builder.check(f);
}

/// Data guarded by the primitive under test (a lock, or a semaphore of value
/// 1): loom reports any two accesses that are not ordered by happens-before,
/// so the critical sections must really exclude each other and the primitive
/// must really publish what the previous holder wrote.
#[allow(dead_code, reason = "not every model file uses it")]
#[derive(Debug)]
pub(crate) struct Cell(loom::cell::UnsafeCell<u32>);

// SAFETY: only accessed inside critical sections of the primitive under test,
// or after joining every other thread; loom checks that claim on every access.
unsafe impl Sync for Cell {}

#[allow(dead_code, reason = "not every model file uses it")]
impl Cell {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Cell(loom::cell::UnsafeCell::new(0)))
    }

    /// Increments the value (the caller holds the primitive).
    pub(crate) fn bump(&self) {
        // SAFETY: the caller holds the primitive guarding this cell.
        self.0.with_mut(|p| unsafe { *p += 1 });
    }

    /// The value (the caller holds the primitive, or every writer was joined).
    pub(crate) fn get(&self) -> u32 {
        // SAFETY: as in `bump`.
        self.0.with(|p| unsafe { *p })
    }
}
