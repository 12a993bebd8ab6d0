//! Command-line options, parsed by hand.

use std::fmt::Write as _;

/// What the user asked for on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools, reason = "each is one command-line flag")]
pub(crate) struct Options {
    /// `--quick`: fewer and shorter runs (the whole table in well under a minute).
    pub(crate) quick: bool,
    /// `--filter S`: only rows whose id (`group/name/placement`) contains `S`,
    /// ignoring ASCII case.
    pub(crate) filter: Option<String>,
    /// `--json`: print the rows as a JSON array instead of the table.
    pub(crate) json: bool,
    /// `--pin A,B`: the CPUs of the `same_core` (A) and `cross_core` (A and B)
    /// placements. `None`: the first two CPUs this process may use.
    pub(crate) pin: Option<(usize, usize)>,
    /// `--chart PATH`: where the latency chart (SVG) goes; `None`: the
    /// default, [`crate::chart::default_path`].
    pub(crate) chart: Option<String>,
    /// `--no-chart`: write no chart.
    pub(crate) no_chart: bool,
    /// `--no-python`: the `CPython` rows use stored figures, never a live run.
    pub(crate) no_python: bool,
}

/// What `main` should do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Run the benchmarks.
    Run(Options),
    /// Print [`usage`] and exit successfully.
    Help,
    /// `--list`: print the ids of the rows (those `--filter` selects), one
    /// per line, without measuring.
    List(Options),
}

/// The help text.
pub(crate) fn usage() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "usage: shmproc-bench [--quick] [--filter SUBSTRING] [--json] [--pin CPU,CPU] [--chart PATH | --no-chart] [--no-python] [--list]"
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "Measures shmproc against baselines run in the same run and placement, and");
    let _ = writeln!(s, "prints one side-by-side table with the targets of SPEC section 6.");
    let _ = writeln!(s);
    let _ = writeln!(s, "  --quick          fewer, shorter runs (under a minute in all)");
    let _ = writeln!(s, "  --filter S       only rows whose group/name/placement contains S (any case)");
    let _ = writeln!(s, "  --json           print a JSON array of rows instead of the table");
    let _ = writeln!(s, "  --pin A,B        same_core runs both processes on CPU A, cross_core on A and B");
    let _ = writeln!(s, "                   (default: the first two CPUs this process may use)");
    let _ = writeln!(
        s,
        "  --chart PATH     write the latency chart (SVG) there (default: shmproc-bench/latency.svg in\n                   $CARGO_TARGET_DIR, or else in ./target)"
    );
    let _ = writeln!(s, "  --no-chart       write no chart");
    let _ = writeln!(s, "  --no-python      use the stored CPython figures, never run python3");
    let _ = writeln!(s, "  --list           print the ids of the rows (group/name/placement) and exit");
    let _ = writeln!(s, "  -h, --help       print this text");
    s
}

/// Parses the arguments that follow the program name.
///
/// # Errors
/// A message naming the offending argument.
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut opts = Options::default();
    let mut list = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // `--flag=value` and `--flag value` are both accepted.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value =
            |name: &str| inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--list" => list = true,
            "--chart" => opts.chart = Some(value("--chart")?),
            "--no-chart" => opts.no_chart = true,
            "--no-python" => opts.no_python = true,
            "--quick" => opts.quick = true,
            "--json" => opts.json = true,
            "--filter" => opts.filter = Some(value("--filter")?),
            "--pin" => opts.pin = Some(parse_pin(&value("--pin")?)?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if opts.no_chart && opts.chart.is_some() {
        return Err("--chart and --no-chart: choose one".to_owned());
    }
    Ok(if list { Command::List(opts) } else { Command::Run(opts) })
}

/// Parses `A,B`: two different CPU numbers.
fn parse_pin(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--pin wants two different CPU numbers like 0,1, not {s:?}");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let a: usize = a.trim().parse().map_err(|_| bad())?;
    let b: usize = b.trim().parse().map_err(|_| bad())?;
    if a == b {
        return Err(bad());
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn flags_and_values() {
        let got = run(&["--quick", "--filter", "Event", "--json", "--pin=2,3"]).unwrap();
        let want =
            Options { quick: true, filter: Some("Event".into()), json: true, pin: Some((2, 3)), ..Options::default() };
        assert_eq!(got, Command::Run(want));
        assert_eq!(run(&["-h"]).unwrap(), Command::Help);
        let chart = Options { chart: Some("c.svg".into()), ..Options::default() };
        assert_eq!(run(&["--chart", "c.svg"]).unwrap(), Command::Run(chart));
        let listed = Options { filter: Some("pipe".into()), no_chart: true, ..Options::default() };
        assert_eq!(run(&["--list", "--filter=pipe", "--no-chart"]).unwrap(), Command::List(listed));
    }

    #[test]
    fn errors_name_the_argument() {
        assert!(run(&["--pin", "1,1"]).unwrap_err().contains("1,1"));
        assert!(run(&["--pin", "x"]).is_err());
        assert!(run(&["--filter"]).unwrap_err().contains("needs a value"));
        assert!(run(&["--fast"]).unwrap_err().contains("--fast"));
        assert!(run(&["--chart=a.svg", "--no-chart"]).unwrap_err().contains("choose one"));
    }
}
