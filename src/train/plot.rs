//! Plots of a run's per-epoch metrics, as PNG and SVG files in the run folder.
//!
//! [`write_plots`] draws three charts against the epoch: `accuracy` (test accuracy in %),
//! `loss` (mean training and test loss) and `ranks` (one line per low-rank layer), each as
//! `<name>.png` and `<name>.svg`. It is called after every epoch and redraws from all records.
//!
//! Labels need a TrueType font: plotters' `ab_glyph` text renderer measures and rasterizes
//! text only with a font registered through [`register_font`], for the SVG files too (their
//! `<text>` elements are placed by the measured size). Without a font the charts are drawn
//! without text: the lines and the grid only.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::metrics::EpochRecord;
use crate::{Error, Result};

/// Pixel size of every chart.
const SIZE: (u32, u32) = (960, 600);
/// The family plotters asks for by default, so every text element finds the font.
const FONT: &str = "sans-serif";
/// More layers than this get no legend: a column of 48 entries would hide the lines.
const MAX_LEGEND_ENTRIES: usize = 12;
/// Tableau 10: ten colours that stay distinct on white; the eleventh layer reuses the first.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Writes `accuracy`, `loss` and `ranks` as PNG and SVG into `run_dir` (an existing folder).
///
/// With no records nothing is written; with one record each chart shows single points.
/// Failing to write a file is an [`Error::Io`] naming it.
pub fn write_plots(run_dir: &Path, records: &[EpochRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let text = font_registered();
    for chart in charts(records) {
        chart.write(run_dir, text)?;
    }
    Ok(())
}

/// One chart: lines of (epoch, value) points.
struct Chart {
    file: &'static str,
    title: String,
    y_desc: &'static str,
    legend: SeriesLabelPosition,
    /// First and last epoch of the records.
    epochs: (usize, usize),
    /// The y axis starts at zero (ranks), not just below the smallest value (losses).
    from_zero: bool,
    series: Vec<(String, Vec<(usize, f64)>)>,
}

fn charts(records: &[EpochRecord]) -> Vec<Chart> {
    let line = |f: &dyn Fn(&EpochRecord) -> f64| records.iter().map(|r| (r.epoch, f(r))).collect::<Vec<_>>();
    let epochs = records.iter().fold((usize::MAX, 0), |(a, b), r| (a.min(r.epoch), b.max(r.epoch)));
    let layers = records.iter().map(|r| r.ranks.len()).max().unwrap_or(0);
    let ranks = (0..layers)
        .map(|i| {
            let points = records.iter().filter_map(|r| Some((r.epoch, *r.ranks.get(i)? as f64))).collect();
            (format!("layer {i}"), points)
        })
        .collect();
    vec![
        Chart {
            file: "accuracy",
            title: "Test accuracy".into(),
            y_desc: "accuracy (%)",
            legend: SeriesLabelPosition::LowerRight,
            epochs,
            from_zero: false,
            series: vec![("test".into(), line(&|r| 100.0 * r.test_accuracy))],
        },
        Chart {
            file: "loss",
            title: "Loss".into(),
            y_desc: "mean loss",
            legend: SeriesLabelPosition::UpperRight,
            epochs,
            from_zero: false,
            series: vec![("train".into(), line(&|r| r.train_loss)), ("test".into(), line(&|r| r.test_loss))],
        },
        Chart {
            file: "ranks",
            title: match layers {
                0 => "Ranks (the network has no low-rank layer)".into(),
                n if n > MAX_LEGEND_ENTRIES => format!("Rank of each of the {n} low-rank layers"),
                _ => "Rank of each low-rank layer".into(),
            },
            y_desc: "rank",
            legend: SeriesLabelPosition::UpperRight,
            epochs,
            from_zero: true,
            series: ranks,
        },
    ]
}

impl Chart {
    /// Writes `<file>.png` and `<file>.svg`; the SVG goes through a string so that a write
    /// failure is an ordinary I/O error.
    fn write(&self, run_dir: &Path, text: bool) -> Result<()> {
        let png = run_dir.join(format!("{}.png", self.file));
        let area = BitMapBackend::new(&png, SIZE).into_drawing_area();
        self.draw(&area, text).and_then(|()| area.present()).map_err(|e| draw_error(&png, e))?;

        let svg = run_dir.join(format!("{}.svg", self.file));
        let mut content = String::new();
        {
            let area = SVGBackend::with_string(&mut content, SIZE).into_drawing_area();
            self.draw(&area, text).and_then(|()| area.present()).map_err(|e| draw_error(&svg, e))?;
        }
        std::fs::write(&svg, content).map_err(|e| Error::io(&svg, e))
    }

    /// Draws the chart; with `text` false, no element needs a font.
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        text: bool,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        area.fill(&WHITE)?;
        let (first, last) = self.epochs;
        // A single epoch gets a unit of room on each side.
        let epochs = if first < last { first..last } else { first.saturating_sub(1)..last + 1 };
        let mut builder = ChartBuilder::on(area);
        builder.margin(20);
        if text {
            builder.caption(&self.title, (FONT, 28)).x_label_area_size(50).y_label_area_size(80);
        }
        // Without text, no label areas: plotters draws tick labels (text) only inside them.
        let mut chart = builder.build_cartesian_2d(epochs, self.y_range())?;
        // One precision for every tick label, enough for ticks about a tenth of the range apart.
        let span = chart.y_range().end - chart.y_range().start;
        let decimals = (-(span / 10.0).log10().floor()).clamp(0.0, 6.0) as usize;
        let y_label = move |v: &f64| format!("{v:.decimals$}");
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(RGBColor(235, 235, 235));
        if text {
            mesh.x_desc("epoch").y_desc(self.y_desc).label_style((FONT, 16)).axis_desc_style((FONT, 18));
            mesh.y_label_formatter(&y_label);
        }
        mesh.draw()?;

        let legend = text && !self.series.is_empty() && self.series.len() <= MAX_LEGEND_ENTRIES;
        // Past 40 epochs the markers would merge into a thick line.
        let many_epochs = self.series.iter().map(|(_, p)| p.len()).max().unwrap_or(0) > 40;
        for (i, (label, points)) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            // A line needs two points; the markers keep a single epoch visible.
            let finite = points.iter().copied().filter(|(_, v)| v.is_finite());
            let line =
                LineSeries::new(finite, color.stroke_width(2)).point_size(if many_epochs { 0 } else { 3 });
            let drawn = chart.draw_series(line)?;
            if legend {
                drawn
                    .label(label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
            }
        }
        if legend {
            chart
                .configure_series_labels()
                .position(self.legend.clone())
                .label_font((FONT, 16))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()?;
        }
        Ok(())
    }

    /// The value range, padded so that no point sits on the frame.
    fn y_range(&self) -> Range<f64> {
        let values = self.series.iter().flat_map(|(_, p)| p.iter().map(|&(_, v)| v));
        let (lo, hi) = values
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if lo > hi {
            return 0.0..1.0; // nothing finite to show
        }
        if self.from_zero {
            return 0.0..hi + (0.05 * hi).max(1.0);
        }
        let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.1 * hi.abs().max(1e-3) };
        lo - pad..hi + pad
    }
}

fn draw_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io(path, std::io::Error::other(format!("cannot draw the chart: {e}")))
}

/// Registers the label font with plotters once per process; false when there is none.
fn font_registered() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        font_bytes().is_some_and(|bytes| register_font(FONT, FontStyle::Normal, bytes).is_ok())
    })
}

/// DejaVu Sans, read once from the system's font folder and kept for the process.
///
/// Interim: the crate is meant to embed the font from a registry crate (`dejavu`), after which
/// this is `Some(dejavu::sans::regular())`. Until then a missing font file only drops the text.
fn font_bytes() -> Option<&'static [u8]> {
    // DejaVu Sans from the `dejavu` crate (Bitstream Vera licence): no system font needed.
    Some(dejavu::sans::regular())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize) -> EpochRecord {
        let e = epoch as f64;
        EpochRecord {
            epoch,
            step: 100 * epoch as u64,
            train_loss: 1.0 / e,
            test_loss: 1.2 / e,
            test_accuracy: 0.8 + 0.05 * e,
            ranks: vec![20 - 2 * epoch, 10 - epoch, 5],
            compression_low_rank: 0.9,
            compression_network: 0.8,
            params: 5000,
            wall_seconds: 1.0,
            samples_per_second: 1000.0,
            passes: 200 * epoch as u64,
            qr: 10,
            svd: 5,
        }
    }

    const FILES: [&str; 6] =
        ["accuracy.png", "accuracy.svg", "loss.png", "loss.svg", "ranks.png", "ranks.svg"];

    #[test]
    fn writes_six_non_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<_> = (1..=3).map(record).collect();
        write_plots(dir.path(), &records).unwrap();
        for f in FILES {
            let bytes = std::fs::read(dir.path().join(f)).unwrap();
            assert!(!bytes.is_empty(), "{f} is empty");
            if f.ends_with(".png") {
                assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{f} is not a PNG");
            } else {
                assert!(String::from_utf8(bytes).unwrap().contains("<svg"), "{f} is not an SVG");
            }
        }
    }

    #[test]
    fn no_records_write_nothing_and_one_record_draws_points() {
        let dir = tempfile::tempdir().unwrap();
        write_plots(dir.path(), &[]).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut one = record(1);
        one.test_loss = f64::NAN;
        write_plots(dir.path(), &[one]).unwrap();
        assert!(FILES.iter().all(|f| dir.path().join(f).exists()));
    }

    #[test]
    fn a_network_without_low_rank_layers_gets_an_empty_rank_chart() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<_> = (1..=2).map(|e| EpochRecord { ranks: vec![], ..record(e) }).collect();
        write_plots(dir.path(), &records).unwrap();
        assert!(dir.path().join("ranks.png").exists());
    }

    #[test]
    fn charts_draw_without_text() {
        // The path taken when no font is found; it must not ask plotters for one.
        let dir = tempfile::tempdir().unwrap();
        for chart in charts(&[record(1), record(2)]) {
            chart.write(dir.path(), false).unwrap();
        }
        assert!(FILES.iter().all(|f| dir.path().join(f).exists()));
    }

    #[test]
    fn an_unwritable_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"").unwrap();
        let err = write_plots(&not_a_dir, &[record(1)]).unwrap_err();
        assert!(matches!(&err, Error::Io { path, .. } if path.ends_with("accuracy.png")), "{err}");
    }
}
