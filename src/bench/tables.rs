//! The tables `dlrt bench` prints, and the parts of them `dlrt bench-vit` shares.

use std::fmt::Display;
use std::io::Write;

use super::{peak_memory_mib, setting, MlpBench, ShapeSummary};
use crate::integrators::batched::BatchedCounts;
use crate::integrators::IntegratorKind;
use crate::linalg::HostTime;
use crate::train::StepTimes;
use crate::{Error, Result};
/// `dlrt bench`'s tables: the setting, the matrix-product rate, one row per method, then
/// where a step's time goes. `device` is shown as it prints with `{:?}`.
pub fn write_table(out: &mut impl Write, bench: &MlpBench, device: impl Display) -> Result<()> {
    let io = Error::Output;
    let (rate, batches) = (bench.matmul_gflops, if bench.mnist { "MNIST" } else { "Gaussian" });
    writeln!(
        out,
        "{}{}; {batches} batches; median of {} steps after {} warm-up",
        setting(&bench.config),
        bucket_note(bench.options.rank_bucket),
        bench.steps,
        bench.warmup
    )
    .map_err(io)?;
    writeln!(out, "matrix-product rate (1024^3 f32): {rate:.1} GFLOP/s").map_err(io)?;
    writeln!(out, "device: {device}").map_err(io)?;
    writeln!(out, "| method | µs/step | passes | QR | SVD | host reads | host KiB | ranks | MFLOP/step | GFLOP/s | % of matmul rate | vs dense |").map_err(io)?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|").map_err(io)?;
    let dense = bench.rows.iter().find(|r| r.method == IntegratorKind::Dense).map(|r| r.median_us);
    for r in &bench.rows {
        let gflops = r.flops / (r.median_us * 1e-6) / 1e9;
        let ratio = dense.map_or("-".to_string(), |d| format!("{:.2}", r.median_us / d));
        writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:?} | {:.1} | {:.1} | {:.0} % | {ratio} |",
            r.method,
            r.median_us,
            r.passes,
            r.qr,
            r.svd,
            r.host_reads,
            r.host_bytes / 1024.0,
            r.ranks,
            r.flops / 1e6,
            gflops,
            100.0 * gflops / rate
        )
        .map_err(io)?;
    }
    write_batched_lines(out, bench.warmup + bench.steps, bench.rows.iter().map(|r| (r.method, r.batched)))?;
    write_parts_table(out, "µs", bench.rows.iter().map(|r| (r.method, r.parts_us, r.host_us)))?;
    write_shapes_table(out, "µs", bench.rows.iter().map(|r| (r.method, r.shapes)))?;
    write_peak_memory(out)
}

/// The process's peak resident memory, where the OS reports it.
pub(super) fn write_peak_memory(out: &mut impl Write) -> Result<()> {
    match peak_memory_mib() {
        Some(mib) => {
            writeln!(out, "peak resident memory of this process: {mib:.0} MiB").map_err(Error::Output)
        }
        None => Ok(()),
    }
}

/// `, rank bucket b` for a bucket other than 1.
pub(super) fn bucket_note(bucket: usize) -> String {
    if bucket == 1 {
        String::new()
    } else {
        format!(", rank bucket {bucket}")
    }
}

/// A line per method whose update ran batched: how many layer-phases took the per-layer path.
pub(super) fn write_batched_lines(
    out: &mut impl Write,
    steps: usize,
    rows: impl Iterator<Item = (IntegratorKind, BatchedCounts)>,
) -> Result<()> {
    for (method, BatchedCounts { layer_phases, fallbacks }) in rows.filter(|(_, c)| c.layer_phases > 0) {
        writeln!(
            out,
            "{method}: {fallbacks} of {layer_phases} batched layer-phases took the per-layer path (all {steps} steps)"
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

/// The "what a new shape costs" table of `dlrt bench` and `dlrt bench-vit`, after a blank line.
pub(super) fn write_shapes_table(
    out: &mut impl Write,
    unit: &str,
    rows: impl Iterator<Item = (IntegratorKind, ShapeSummary)>,
) -> Result<()> {
    let io = Error::Output;
    writeln!(out).map_err(io)?;
    writeln!(out, "What a new shape costs (median {unit} per step, warm-up included, the first step left out; a step is at new ranks when a low-rank layer starts it at an (n, m, r) not seen before in the run, at new widths when a pass multiplies with an (n, m, width) not seen before; widths are the rank bucket's):").map_err(io)?;
    writeln!(out, "| method | steps | new ranks | at new ranks | at seen ranks | new widths | at new widths | at seen widths |").map_err(io)?;
    writeln!(out, "|---|---|---|---|---|---|---|---|").map_err(io)?;
    let show = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{t:.0}"));
    for (method, s) in rows {
        let [a, b, c, d] = s.medians.map(show);
        writeln!(
            out,
            "| {method} | {} | {} | {a} | {b} | {} | {c} | {d} |",
            s.steps, s.new_ranks, s.new_widths
        )
        .map_err(io)?;
    }
    Ok(())
}

/// The "where a step's time goes" table of `dlrt bench` and `dlrt bench-vit`, after a blank
/// line.
pub(super) fn write_parts_table(
    out: &mut impl Write,
    unit: &str,
    rows: impl Iterator<Item = (IntegratorKind, StepTimes, HostTime)>,
) -> Result<()> {
    let io = Error::Output;
    writeln!(out).map_err(io)?;
    writeln!(out, "Where a step's time goes (mean {unit} per timed step; host QR and SVD are the host decompositions with their copies, summed over layers, which update side by side on the CPU):").map_err(io)?;
    writeln!(out, "| method | forward | backward | update | host QR | host SVD |").map_err(io)?;
    writeln!(out, "|---|---|---|---|---|---|").map_err(io)?;
    for (method, p, h) in rows {
        writeln!(
            out,
            "| {method} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            p.forward, p.backward, p.update, h.qr, h.svd
        )
        .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{BenchRow, StepOptions};
    use crate::config::RunConfig;

    #[test]
    fn the_table_has_a_row_per_method_and_compares_with_dense() {
        let parts = StepTimes { forward: 1.0, backward: 2.0, update: 3.0 };
        let row = |method, median_us| BenchRow {
            method,
            median_us,
            passes: 2.0,
            qr: 2.0,
            svd: 2.0,
            ranks: vec![20, 18],
            flops: 4e6,
            host_reads: 4.0,
            host_bytes: 2048.0,
            parts_us: parts,
            host_us: HostTime { qr: 5.0, svd: 6.0 },
            shapes: ShapeSummary {
                steps: 3,
                new_ranks: 2,
                new_widths: 1,
                medians: [Some(30.0), Some(10.0), Some(40.0), None],
            },
            batched: match method {
                IntegratorKind::Dense => BatchedCounts::default(),
                _ => BatchedCounts { layer_phases: 16, fallbacks: 1 },
            },
        };
        let bench = MlpBench {
            config: RunConfig::paper_mnist(),
            rows: vec![row(IntegratorKind::AbcPsi, 2000.0), row(IntegratorKind::Dense, 1000.0)],
            mnist: false,
            matmul_gflops: 10.0,
            warmup: 1,
            steps: 3,
            options: StepOptions::default(),
        };
        let mut out = Vec::new();
        write_table(&mut out, &bench, "cpu").unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "784-500-500-10, batch 64, r0 = 20, tol = 0.01, SGD lr = 0.01; Gaussian batches; median of 3 steps after 1 warm-up"
        );
        assert_eq!(lines[2], "device: cpu");
        // 4 MFLOP in 2 ms: 2 GFLOP/s, 20 % of 10 GFLOP/s; twice dense's time.
        assert_eq!(
            lines[5],
            "| abc_psi | 2000 | 2 | 2.0 | 2.0 | 4.0 | 2.0 | [20, 18] | 4.0 | 2.0 | 20 % | 2.00 |"
        );
        assert!(text.contains("| abc_psi | 1 | 2 | 3 | 5 | 6 |"), "{text}");
        assert!(text.contains("| abc_psi | 3 | 2 | 30 | 10 | 1 | 40 | - |"), "{text}");
        assert!(
            text.contains("\nabc_psi: 1 of 16 batched layer-phases took the per-layer path (all 4 steps)\n"),
            "{text}"
        );
        assert!(!text.contains("dense: "), "no batched line for dense training: {text}");
    }
}
