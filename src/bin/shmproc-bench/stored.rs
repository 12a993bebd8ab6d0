//! Figures stored by the baselines runner (`baselines/run_baselines.sh`), read
//! from its `baselines-<UTC stamp>.jsonl` files: one flat JSON object per line,
//! `{"bench", "metric", "value" (the median of its repetitions), "unit", …}`.
//!
//! Rows that compare with `CPython` use them: there is no `CPython` in this
//! binary to run next to the subject, so its figure is the stored one.

use std::path::{Path, PathBuf};

/// The figures of one baselines run.
#[derive(Debug)]
pub(crate) struct Stored {
    /// The run's UTC stamp (from the file name), `YYYYMMDDTHHMMSSZ`.
    pub(crate) stamp: String,
    records: Vec<Record>,
}

/// One figure of a run.
#[derive(Debug)]
struct Record {
    bench: String,
    metric: String,
    unit: String,
    value: f64,
}

impl Stored {
    /// The value of `bench`'s `metric`, if the run has it in `unit`.
    pub(crate) fn value(&self, bench: &str, metric: &str, unit: &str) -> Option<f64> {
        self.records.iter().find(|r| r.bench == bench && r.metric == metric && r.unit == unit).map(|r| r.value)
    }

    /// Whether the run has any figure of `bench`.
    fn has(&self, bench: &str) -> bool {
        self.records.iter().any(|r| r.bench == bench)
    }
}

/// The folders that may hold the baselines' results: beside the crate's
/// repository (as built), then beside the working directory's parent.
fn results_dirs() -> Vec<PathBuf> {
    vec![
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/baselines/results"),
        PathBuf::from("../shared/baselines/results"),
    ]
}

/// The newest stored run that has figures of `bench` (such as
/// `py/process_start`); `Err` says where it looked.
pub(crate) fn newest(bench: &str) -> Result<Stored, String> {
    newest_in(&results_dirs(), bench)
}

/// [`newest`] from the first of `dirs` that has such a run.
pub(crate) fn newest_in(dirs: &[PathBuf], bench: &str) -> Result<Stored, String> {
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut files: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stamp = name.strip_prefix("baselines-")?.strip_suffix(".jsonl")?.to_owned();
                Some((stamp, e.path()))
            })
            .collect();
        // The stamps are UTC `YYYYMMDDTHHMMSSZ`: newest last by name.
        files.sort();
        for (stamp, path) in files.into_iter().rev() {
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let run = parse(&text, stamp);
            if run.has(bench) {
                return Ok(run);
            }
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(format!("CPython figures not found (no baselines-*.jsonl with {bench} in {})", looked.join(" or ")))
}

/// The figures of a JSON-lines file of flat objects (lines without a bench,
/// metric, unit and numeric value are skipped).
pub(crate) fn parse(text: &str, stamp: String) -> Stored {
    let records = text
        .lines()
        .filter_map(|line| {
            Some(Record {
                bench: field(line, "bench")?.to_owned(),
                metric: field(line, "metric")?.to_owned(),
                unit: field(line, "unit")?.to_owned(),
                value: field(line, "value")?.parse().ok()?,
            })
        })
        .collect();
    Stored { stamp, records }
}

/// The value of `"key"` in a one-line flat JSON object: a string's contents
/// (these hold no escapes) or a number's text.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = line[at..].trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        s.split('"').next()
    } else {
        rest.split([',', '}']).next().map(str::trim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::float_cmp)] // parsed from the same decimal text
    fn reads_flat_json_lines() {
        let text = "{\"bench\": \"py/array_lock_increment\", \"metric\": \"incr_per_s_2proc\", \"value\": 365852.0, \
                    \"unit\": \"incr/s\", \"min\": 300156.0, \"samples\": [1.0, 2.0]}\n\
                    {\"bench\": \"py/process_start\", \"metric\": \"fork_ms\", \"value\": 1.77938, \"unit\": \"ms\"}\n\
                    {\"bench\": \"os/memcpy_bw\", \"metric\": \"copy_1MiB\"}\n\
                    not json\n";
        let run = parse(text, "T".into());
        assert_eq!(run.value("py/array_lock_increment", "incr_per_s_2proc", "incr/s"), Some(365_852.0));
        assert_eq!(run.value("py/process_start", "fork_ms", "ms"), Some(1.779_38));
        assert_eq!(run.value("py/process_start", "fork_ms", "s"), None);
        assert!(!run.has("os/memcpy_bw"));
    }

    #[test]
    fn the_newest_file_with_the_bench_wins() {
        let dir = std::env::temp_dir().join(format!("shmproc-bench-stored-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = |ms| {
            format!("{{\"bench\": \"py/process_start\", \"metric\": \"fork_ms\", \"value\": {ms}, \"unit\": \"ms\"}}\n")
        };
        let missing = newest_in(std::slice::from_ref(&dir), "py/process_start").unwrap_err();
        assert!(missing.contains("CPython figures not found"), "{missing}");
        std::fs::write(dir.join("baselines-20260101T000000Z.jsonl"), line(1.5)).unwrap();
        std::fs::write(dir.join("baselines-20270101T000000Z.jsonl"), line(2.5)).unwrap();
        std::fs::write(dir.join("baselines-20280101T000000Z.jsonl"), "{\"bench\": \"os/pipe\"}\n").unwrap();
        let run = newest_in(&[dir.join("absent"), dir.clone()], "py/process_start");
        std::fs::remove_dir_all(&dir).unwrap();
        let run = run.unwrap();
        assert_eq!(
            (run.stamp.as_str(), run.value("py/process_start", "fork_ms", "ms")),
            ("20270101T000000Z", Some(2.5))
        );
    }
}
