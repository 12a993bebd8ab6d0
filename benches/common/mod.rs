//! What every criterion bench here shares.

use std::time::Duration;

use criterion::Criterion;

/// Short settings (10 samples, about a second each): these benches track
/// regressions; the SPEC figures come from `shmproc-bench`.
pub(crate) fn quick() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}
