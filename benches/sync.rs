//! Criterion benches (placeholder replaced by the bench work).
fn main() {}
