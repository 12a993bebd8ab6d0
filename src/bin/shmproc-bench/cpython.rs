//! Runs one of the baselines' `CPython` scripts (`baselines/python/*.py`) now,
//! for figures that should be measured in the same session as the subject:
//! `python3` from the `PATH`, `ANCHORS_SCALE` for shorter runs, the script's
//! JSON lines read as they come (it `emit()`s one flushed line per figure), and
//! the script stopped (its process group killed) once the wanted figures are
//! in or the time is up. Nothing is written to disk.

use std::cell::RefCell;
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::stored::{self, Stored};

/// The figures of one baselines script for a set of rows: run now (once, by
/// the first row that asks; `ANCHORS_SCALE` [`QUICK_SCALE`] and at most 30 s
/// with `--quick`, else full length and at most 120 s) when `python3` and the
/// script are there, else the newest stored run's.
#[derive(Debug)]
pub(crate) struct Baseline {
    /// Every figure the rows use, as (benchmark, metric, unit):
    /// `py/queue_throughput`, `msgs_per_s_bytes64B_cross_core`, `msg/s`. The
    /// script is stopped once it has printed them all.
    wanted: Vec<(&'static str, String, &'static str)>,
    /// Where to get them: the script to run, or the stored run.
    source: Source,
    /// The figures, once measured (or why not).
    measured: RefCell<Option<Result<Stored, String>>>,
}

/// `ANCHORS_SCALE` of a `--quick` run: the scripts' counts times this (rows
/// that want the same counts as the script scale theirs by it too).
pub(crate) const QUICK_SCALE: f64 = 0.2;

/// A script's count `n` as the script runs it (`quick`: with `ANCHORS_SCALE`
/// [`QUICK_SCALE`]), as `_common.scaled` computes it: `max(1, int(n * scale))`.
pub(crate) fn scaled(n: u64, quick: bool) -> u64 {
    if quick { ((n as f64 * QUICK_SCALE) as u64).max(1) } else { n }
}

#[derive(Debug)]
enum Source {
    Live(PathBuf),
    Stored(Result<Stored, String>),
}

impl Baseline {
    /// The figures `wanted` (benchmark, metric) of `script` (in the
    /// baselines' python folder), all in `unit`. Stored figures come from the
    /// newest run that has the first wanted benchmark.
    pub(crate) fn new(script_name: &str, unit: &'static str, wanted: Vec<(&'static str, String)>) -> Self {
        Baseline::in_units(script_name, wanted.into_iter().map(|(bench, metric)| (bench, metric, unit)).collect())
    }

    /// As [`new`](Self::new), for a script whose figures come in different
    /// units: `wanted` as (benchmark, metric, unit).
    pub(crate) fn in_units(script_name: &str, wanted: Vec<(&'static str, String, &'static str)>) -> Self {
        let live = (!NO_PYTHON.load(std::sync::atomic::Ordering::Relaxed)).then(python).flatten();
        let source = if let (Some(_), Some(path)) = (live, script(script_name)) {
            Source::Live(path)
        } else {
            let bench = wanted.first().map_or("", |w| w.0);
            Source::Stored(stored::newest(bench))
        };
        Baseline { wanted, source, measured: RefCell::new(None) }
    }

    /// The baseline column for figures of `what`, the `CPython` object
    /// measured (`mp.Queue`): where they come from.
    pub(crate) fn label(&self, what: &str) -> String {
        match &self.source {
            Source::Live(_) => format!("CPython {what}, run now"),
            Source::Stored(Ok(run)) => format!("CPython {what} {} (stored)", run.stamp),
            Source::Stored(Err(_)) => "CPython: not run, no stored figures".to_owned(),
        }
    }

    /// The figure of `bench`'s `metric` (one of the wanted ones, in its
    /// unit), running the script first if it has not run yet (`quick`: the
    /// short run). NaN when the stored run lacks it (the row shows no ratio).
    ///
    /// # Errors
    /// The figure is not a wanted one, the script failed, or it did not
    /// print `metric`.
    pub(crate) fn value(&self, quick: bool, bench: &str, metric: &str) -> Result<f64, String> {
        let unit = self
            .wanted
            .iter()
            .find(|(b, m, _)| *b == bench && m == metric)
            .map(|w| w.2)
            .ok_or_else(|| format!("CPython baseline: {bench} {metric} is not among the figures asked for"))?;
        let of = |run: &Stored| run.value(bench, metric, unit);
        match &self.source {
            Source::Stored(run) => Ok(run.as_ref().ok().and_then(of).unwrap_or(f64::NAN)),
            Source::Live(script) => {
                let mut measured = self.measured.borrow_mut();
                let run = measured.get_or_insert_with(|| {
                    let (scale, timeout) = if quick { (QUICK_SCALE, 30) } else { (1.0, 120) };
                    run(script, scale, &self.wanted, Duration::from_secs(timeout))
                });
                let run = run.as_ref().map_err(|e| format!("CPython baseline: {e}"))?;
                of(run).ok_or_else(|| format!("CPython baseline: no {bench} {metric}"))
            }
        }
    }
}

/// The script `name` in the baselines' python folder, if it exists (beside the
/// crate's repository as built, or beside the working directory's parent).
pub(crate) fn script(name: &str) -> Option<PathBuf> {
    [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/baselines/python"),
        PathBuf::from("../shared/baselines/python"),
    ]
    .into_iter()
    .map(|dir| dir.join(name))
    .find(|p| p.is_file())
}

/// Set by `--no-python`: stored figures only.
pub(crate) static NO_PYTHON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `python3` on the `PATH`, if any.
pub(crate) fn python() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("python3")).find(|p| p.is_file())
}

/// What a script is asked for: `(bench, metric, unit)` triples.
pub(crate) type Wanted = [(&'static str, String, &'static str)];

/// Runs `script` with `ANCHORS_SCALE=scale` until it has printed every
/// `wanted` figure (then stops it) or `timeout` passes; its figures, stamped
/// `now`.
///
/// # Errors
/// No `python3`, a script that failed or ended without the wanted figures
/// (with the end of its stderr), or the timeout.
pub(crate) fn run(script: &Path, scale: f64, wanted: &Wanted, timeout: Duration) -> Result<Stored, String> {
    let python = python().ok_or("python3 is not on the PATH")?;
    run_with(&python, script, scale, wanted, timeout)
}

/// [`run`] with `interpreter` instead of `python3`.
fn run_with(
    interpreter: &Path,
    script: &Path,
    scale: f64,
    wanted: &Wanted,
    timeout: Duration,
) -> Result<Stored, String> {
    let mut child = Command::new(interpreter)
        .arg(script)
        .env("ANCHORS_SCALE", scale.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: the script forks workers, and stopping it
        // stops them too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", interpreter.display()))?;
    let group = child.id() as libc::pid_t;
    let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let (mut text, mut errors) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + timeout;
    let has_all = |text: &[u8]| {
        let got = stored::parse(&String::from_utf8_lossy(text), String::new());
        wanted.iter().all(|(bench, metric, unit)| got.value(bench, metric, unit).is_some())
    };
    let mut open = [true, true];
    let outcome = loop {
        if has_all(&text) {
            break Ok(());
        }
        if open == [false, false] {
            break Err("it ended without them".to_owned());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(format!("timed out after {:.0} s", timeout.as_secs_f64()));
        }
        let mut fds =
            [out.as_raw_fd(), err.as_raw_fd()].map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        for (fd, open) in fds.iter_mut().zip(open) {
            if !open {
                fd.fd = -1; // poll skips negative descriptors
            }
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of two pollfd structures.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) } <= 0 {
            continue; // timeout (re-checked above) or EINTR
        }
        let mut buf = [0u8; 4096];
        for (i, fd) in fds.iter().enumerate() {
            if fd.fd < 0 || fd.revents == 0 {
                continue;
            }
            let (reader, sink): (&mut dyn std::io::Read, &mut Vec<u8>) =
                if i == 0 { (&mut out, &mut text) } else { (&mut err, &mut errors) };
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => open[i] = false,
                Ok(n) => sink.extend_from_slice(&buf[..n]),
            }
        }
    };
    // Stop the script and its workers (a no-op if they are done) and reap it.
    // SAFETY: signals the process group we created, whose leader we have not
    // reaped yet (so the group id cannot be reused).
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.wait();
    match outcome {
        Ok(()) => Ok(stored::parse(&String::from_utf8_lossy(&text), "now".to_owned())),
        Err(why) => {
            let stderr = String::from_utf8_lossy(&errors);
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!(
                "{} (ANCHORS_SCALE={scale}) gave no {}: {why}{}",
                script.file_name().map_or_else(|| script.display().to_string(), |n| n.to_string_lossy().into_owned()),
                wanted.iter().map(|(b, m, _)| format!("{b} {m}")).collect::<Vec<_>>().join(", "),
                if tail.is_empty() { String::new() } else { format!("; stderr: {}", tail.join(" | ")) },
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for a baselines script: `sh` prints figures like `emit()`,
    /// then would run on for a minute.
    fn script(dir: &Path, lines: &str) -> PathBuf {
        let path = dir.join("fake.sh");
        std::fs::write(&path, format!("{lines}\nsleep 60\n")).unwrap();
        path
    }

    #[test]
    fn counts_scale_as_the_scripts_do() {
        assert_eq!([scaled(5000, false), scaled(5000, true), scaled(2, true)], [5000, 1000, 1]);
    }

    #[test]
    fn figures_in_their_own_units_and_only_those_asked_for() {
        // No such script: the stored figures, of which there are none for `py/none`.
        let b = Baseline::in_units("no-such-script.py", vec![("py/none", "start_ms".to_owned(), "ms")]);
        assert!(b.value(true, "py/none", "start_ms").unwrap().is_nan());
        let err = b.value(true, "py/none", "other").unwrap_err();
        assert!(err.contains("py/none other") && err.contains("not among"), "{err}");
    }

    fn wanted(metric: &str) -> Vec<(&'static str, String, &'static str)> {
        vec![("py/queue_throughput", metric.to_owned(), "msg/s")]
    }

    #[test]
    #[allow(clippy::float_cmp)] // parsed from the same decimal text
    fn stops_the_script_once_the_wanted_figures_are_in() {
        let dir = std::env::temp_dir().join(format!("shmproc-bench-cpython-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line =
            r#"echo '{"bench": "py/queue_throughput", "metric": "m_cross_core", "value": 144913.0, "unit": "msg/s"}'"#;
        let fake = script(&dir, &format!("echo $ANCHORS_SCALE >&2\n{line}"));
        let sh = Path::new("/bin/sh");
        let started = Instant::now();
        let got = run_with(sh, &fake, 0.2, &wanted("m_cross_core"), Duration::from_secs(30));
        let quick = started.elapsed() < Duration::from_secs(20);
        let missing = run_with(sh, &fake, 0.2, &wanted("other"), Duration::from_millis(300));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got.unwrap().value("py/queue_throughput", "m_cross_core", "msg/s"), Some(144_913.0));
        assert!(quick, "the script was not stopped early");
        let missing = missing.unwrap_err();
        assert!(missing.contains("timed out") && missing.contains("other") && missing.contains("0.2"), "{missing}");
    }
}
