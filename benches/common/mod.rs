//! What every criterion bench here shares.
#![allow(dead_code, reason = "each bench uses some of these")]

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

/// Watchdog: a ping-pong still running after this many seconds is stuck; the
/// alarm kills the process (parent or child) instead of letting it hang.
pub(crate) const HANG_SECS: u32 = 60;

/// The first two CPUs this process may use, if it may use two.
pub(crate) fn two_cpus() -> Option<(usize, usize)> {
    let set = current_cpu_set();
    // SAFETY: every index is below CPU_SETSIZE, the bit count of `set`.
    let mut cpus = (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) });
    Some((cpus.next()?, cpus.next()?))
}

/// This thread's affinity mask.
pub(crate) fn current_cpu_set() -> libc::cpu_set_t {
    // SAFETY: `cpu_set_t` is plain bits; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) };
    assert_eq!(r, 0, "sched_getaffinity: {}", std::io::Error::last_os_error());
    set
}

/// The mask of `cpu` alone (below `CPU_SETSIZE`, as `two_cpus` returns).
pub(crate) fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: `cpu_set_t` is plain bits; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (it came from an affinity mask).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

/// Restricts this thread to `set`; `false` if the kernel refused. Never
/// panics: the forked child calls it too.
pub(crate) fn pin(set: &libc::cpu_set_t) -> bool {
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) == 0 }
}

/// Times `drive` (the parent's side of `iters` round trips) against a forked
/// echo running `echo` (its side, returning whether every answer went
/// well). With `cpus`, this thread runs on the first CPU while timing and
/// the echo on the second; a stuck round trip kills parent or child after
/// [`HANG_SECS`].
///
/// `echo` must only touch shared memory and make plain system calls: the
/// child `_exit`s right after it.
pub(crate) fn time_with_forked_echo(
    cpus: Option<(usize, usize)>,
    echo: impl FnOnce() -> bool,
    drive: impl FnOnce(),
) -> std::time::Duration {
    // SAFETY: criterion runs the benches on this one thread; the child only
    // runs `echo` (see above) and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: plain system calls: die with the parent, and die rather
        // than hang; `_exit` skips the parent's destructors and buffers.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::alarm(HANG_SECS);
        }
        // Answer every round trip whatever happens (the parent waits for
        // each), and report trouble through the exit status.
        let pinned = cpus.is_none_or(|(_, cpu)| pin(&cpu_set(cpu)));
        let ok = echo() && pinned;
        // SAFETY: see above.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    let saved = cpus.map(|(cpu, _)| {
        let saved = current_cpu_set();
        assert!(pin(&cpu_set(cpu)), "sched_setaffinity: {}", std::io::Error::last_os_error());
        saved
    });
    // SAFETY: plain system call; a stuck round trip kills the bench.
    unsafe { libc::alarm(HANG_SECS) };
    let start = std::time::Instant::now();
    drive();
    let elapsed = start.elapsed();
    // SAFETY: plain system call (cancels the alarm).
    unsafe { libc::alarm(0) };
    if let Some(saved) = saved {
        assert!(pin(&saved), "sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    let mut status = 0;
    // SAFETY: reaps our own child; `status` is writable.
    let reaped = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert!(reaped == pid && status == 0, "the echo child failed (wait status {status})");
    elapsed
}
