//! The latency chart beside the table: for every row timed per round trip
//! (unit `ns`, with percentiles), the subject's and the baseline's p50, p99
//! and p99.9 on one logarithmic axis, so that a reader sees the
//! distributions at a glance. SVG, drawn with plotters (text is left to the
//! viewer: no font library).

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Row, Unit};

/// The default place of the chart, beside cargo's build output: under
/// `CARGO_TARGET_DIR` if set, else `target/` in the current directory.
pub(crate) fn default_path() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), std::path::PathBuf::from);
    target.join("shmproc-bench").join("latency.svg")
}

/// Pixels per row of the chart, and around the plot.
const ROW_HEIGHT: u32 = 26;
const TOP_AND_BOTTOM: u32 = 110;
const WIDTH: u32 = 1400;
const LABEL_WIDTH: u32 = 520;

/// The subject's colour, and the baseline's.
const SUBJECT: RGBColor = RGBColor(0x1f, 0x5f, 0xbf);
const BASELINE: RGBColor = RGBColor(0xd9, 0x6c, 0x06);

/// One charted row: its label, and (p50, p99, p99.9) of subject and baseline.
struct Line {
    label: String,
    subject: [f64; 3],
    baseline: [f64; 3],
}

/// The rows the chart shows: measured, timed per round trip, with all three
/// percentiles on both sides.
fn lines(rows: &[Row]) -> Vec<Line> {
    rows.iter()
        .filter(|r| r.spec.unit == Unit::Ns)
        .filter_map(|r| {
            let c = r.outcome.comparison()?;
            let three = |f: &crate::kit::Figures| Some([f.p50, f.p99?, f.p999?]);
            Some(Line {
                label: format!("{} · {} · baseline: {}", r.spec.name, r.spec.placement, r.spec.baseline),
                subject: three(&c.subject)?,
                baseline: three(&c.baseline)?,
            })
        })
        .filter(|l| l.subject.iter().chain(&l.baseline).all(|v| v.is_finite() && *v > 0.0))
        .collect()
}

/// Writes the chart of `rows` to `path` (its directory made if missing);
/// returns how many rows it shows (none: no file is written).
///
/// # Errors
/// What failed, as text: making the directory, drawing, writing.
pub(crate) fn write(rows: &[Row], path: &Path) -> Result<usize, String> {
    let lines = lines(rows);
    if lines.is_empty() {
        return Ok(0);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("making {}: {e}", dir.display()))?;
    }
    draw(&lines, path).map_err(|e| format!("drawing {}: {e}", path.display()))?;
    Ok(lines.len())
}

fn draw(lines: &[Line], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let n = lines.len();
    let height = TOP_AND_BOTTOM + ROW_HEIGHT * u32::try_from(n)?;
    let all = lines.iter().flat_map(|l| l.subject.iter().chain(&l.baseline));
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = (n as f64) - 0.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "shmproc-bench round trips: shmproc (blue) and its baseline (orange), p50 ● p99 ▲ p99.9 ■, log scale",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(LABEL_WIDTH)
        .build_cartesian_2d((lo / 1.5..hi * 1.5).log_scale(), -0.5..top)?;
    // Row i is drawn at y = n - 1 - i, so the first row is at the top.
    let y_of = |i: usize| (n - 1 - i) as f64;
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| {
            let i = n as f64 - 1.0 - y.round();
            if (y - y.round()).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                lines[i as usize].label.clone()
            } else {
                String::new()
            }
        })
        .x_label_formatter(&|x| duration(*x))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .x_desc("time per round trip")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (colour, offset, pick) in
        [(SUBJECT, 0.15, (|l: &Line| l.subject) as fn(&Line) -> [f64; 3]), (BASELINE, -0.15, |l: &Line| l.baseline)]
    {
        let at = |i: usize| y_of(i) + offset;
        // The spread, p50 to p99.9, as a line; the three percentiles as marks.
        chart.draw_series(lines.iter().enumerate().map(|(i, l)| {
            let p = pick(l);
            PathElement::new(vec![(p[0], at(i)), (p[2], at(i))], colour.stroke_width(2))
        }))?;
        chart
            .draw_series(lines.iter().enumerate().map(|(i, l)| Circle::new((pick(l)[0], at(i)), 4, colour.filled())))?;
        chart.draw_series(
            lines.iter().enumerate().map(|(i, l)| TriangleMarker::new((pick(l)[1], at(i)), 5, colour.filled())),
        )?;
        chart.draw_series(lines.iter().enumerate().map(|(i, l)| {
            let (x, y) = (pick(l)[2], at(i));
            EmptyElement::at((x, y)) + Rectangle::new([(-3, -3), (3, 3)], colour.filled())
        }))?;
    }
    root.present()?;
    Ok(())
}

/// An axis label: `ns` in the unit that reads best (`250 ns`, `4 µs`,
/// `1.5 ms`).
fn duration(ns: f64) -> String {
    let (v, unit) = if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    let text = format!("{v:.1}");
    format!("{} {unit}", text.strip_suffix(".0").unwrap_or(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::{Comparison, Figures};
    use crate::report::{Outcome, RowSpec};

    fn row(name: &str, unit: Unit, p99: Option<f64>) -> Row {
        let figures = |p50: f64| Figures { p50, p99: p99.map(|p| p * p50), p999: p99.map(|p| p * p50 * 2.0) };
        Row {
            spec: RowSpec {
                group: "pipe",
                name: name.to_owned(),
                placement: "cross_core",
                unit,
                baseline: "raw spin".to_owned(),
                target: Some(2.0),
            },
            outcome: Outcome::Measured(Comparison {
                subject: figures(300.0),
                baseline: figures(100.0),
                ratio: 3.0,
                floor: None,
                samples: 9,
                same_cpu: None,
            }),
        }
    }

    #[test]
    fn axis_labels_read_in_their_unit() {
        assert_eq!(duration(100.0), "100 ns");
        assert_eq!(duration(1000.0), "1 µs");
        assert_eq!(duration(1500.0), "1.5 µs");
        assert_eq!(duration(2e6), "2 ms");
    }

    #[test]
    fn the_chart_shows_each_round_trip_row_with_percentiles() {
        let rows = [
            row("Connection 64 B round trip", Unit::Ns, Some(2.0)),
            row("no percentiles", Unit::Ns, None),
            row("a throughput", Unit::NsPerMsg, Some(2.0)),
            row("Event ping-pong", Unit::Ns, Some(3.0)),
        ];
        let path = std::env::temp_dir().join(format!("shmproc-bench-chart-{}.svg", std::process::id()));
        assert_eq!(write(&rows, &path).unwrap(), 2, "only timed rows with percentiles");
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg:.200}");
        for shown in ["Connection 64 B round trip · cross_core · baseline: raw spin", "Event ping-pong"] {
            assert!(svg.contains(shown), "{shown} missing");
        }
        assert!(!svg.contains("no percentiles") && !svg.contains("a throughput"));
        assert_eq!(write(&rows[1..3], &path).unwrap(), 0, "nothing to chart: no file");
        assert!(!path.exists());
    }
}
