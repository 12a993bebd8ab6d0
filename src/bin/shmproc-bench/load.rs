//! How much of the machine other processes used while we measured: the
//! machine's busy time (`/proc/stat`) minus our own and our reaped children's
//! (`getrusage`), as `baselines/run_baselines.sh` reports it.

use std::time::Instant;

/// A snapshot of busy CPU time: the machine's, and ours.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuUse {
    at: Instant,
    /// Seconds all CPUs spent busy since boot.
    machine: f64,
    /// CPUs of the machine.
    cpus: usize,
    /// Seconds this process and its reaped children spent on CPUs.
    own: f64,
}

impl CpuUse {
    /// Now; `None` where `/proc/stat` cannot be read.
    pub(crate) fn now() -> Option<Self> {
        let (machine, cpus) = machine_busy()?;
        Some(CpuUse { at: Instant::now(), machine, cpus, own: own_busy() })
    }

    /// The share of the machine's CPU time since `self` that other processes
    /// used (0 to 1; hypervisor steal not counted).
    pub(crate) fn foreign_share(&self) -> Option<f64> {
        let later = CpuUse::now()?;
        let wall = later.at.duration_since(self.at).as_secs_f64() * self.cpus as f64;
        let foreign = (later.machine - self.machine) - (later.own - self.own);
        (wall > 0.0).then(|| (foreign / wall).clamp(0.0, 1.0))
    }
}

/// Busy seconds of all CPUs since boot (user, nice, system, irq, softirq),
/// and the number of CPUs.
fn machine_busy() -> Option<(f64, usize)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).map_while(|f| f.parse().ok()).collect();
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
    let cpus =
        stat.lines().filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).count();
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0 && cpus > 0).then(|| (busy as f64 / hz as f64, cpus))
}

/// User + system seconds of this process and its reaped children.
fn own_busy() -> f64 {
    [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN]
        .into_iter()
        .map(|who| {
            // SAFETY: `rusage` is plain data; all zeros is a valid value.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: `usage` is a valid, writable `rusage`.
            if unsafe { libc::getrusage(who, &raw mut usage) } != 0 {
                return 0.0;
            }
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            secs(usage.ru_utime) + secs(usage.ru_stime)
        })
        .sum()
}
