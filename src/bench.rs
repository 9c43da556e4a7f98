//! `dlrt bench`: time per training step of every integrator at the paper's MNIST setting.
//!
//! The setting is [`RunConfig::paper_mnist_with`] for each method (the table's first line is
//! derived from it). Each method first trains `warmup` steps (so the ranks settle where
//! training takes them), then `steps` steps are timed one by one; the table gives the median.
//! Batches come from MNIST when it has been fetched, otherwise from Gaussian inputs (the ranks
//! then differ from real training). FLOPs are counted per method from its passes and factor
//! sizes at the final ranks ([`flops`]), and compared with this machine's measured rate for a
//! large matrix product.
//!
//! With `--model lenet5` the network is LeNet-5 ([`RunConfig::lenet5_with`]), and a second
//! table times single convolutions, low-rank against dense at the same shapes ([`conv`]).
//!
//! Also here: the ViT adapter step benchmark of `dlrt bench-vit` ([`vit`]) and the matrix
//! problem of `dlrt matrix` ([`mod@matrix`]).

pub mod conv;
pub mod flops;
pub mod matrix;
pub mod vit;

use std::fmt::Debug;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use burn::tensor::{backend::AutodiffBackend, Distribution, Int, Tensor, TensorData};
use rand::{rngs::StdRng, SeedableRng};

use crate::config::{ModelKind, RunConfig};
use crate::data::{self, DatasetName, Split};
use crate::integrators::batched::{batched_counts, BatchedCounts};
use crate::integrators::IntegratorKind;
use crate::linalg::{host_time, HostTime};
use crate::models::{lenet5, Classifier, Layer};
use crate::optim::OptimizerConfig;
use crate::train::{loss::cross_entropy, run::new_model, StepTimes, Trainer};
use crate::{Error, Result};

pub use crate::train::report::peak_memory_mib;
pub use conv::{run_conv, write_conv_table, ConvRow};
pub use matrix::{matrix, MatrixArgs};
pub use vit::{run_vit, VitBench, VitBenchRow, VitShape};

/// One row of the benchmark table.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// The method.
    pub method: IntegratorKind,
    /// Median wall time of one training step, in µs.
    pub median_us: f64,
    /// Passes per step.
    pub passes: f64,
    /// QR decompositions per step (all layers).
    pub qr: f64,
    /// SVDs per step (all layers).
    pub svd: f64,
    /// Ranks of the low-rank layers after the timed steps.
    pub ranks: Vec<usize>,
    /// Floating-point operations of one step (matrix products only, [`flops`]).
    pub flops: f64,
    /// Device→host reads per step ([`crate::linalg::host_reads`]).
    pub host_reads: f64,
    /// Bytes copied between device and host per step, both ways ([`crate::linalg::host_bytes`]).
    pub host_bytes: f64,
    /// Mean wall time of a timed step's parts, in µs.
    pub parts_us: StepTimes,
    /// Mean time per timed step in the host decompositions, in µs, summed over layers
    /// ([`crate::linalg::host_time`]).
    pub host_us: HostTime,
    /// Layer-phases of the batched update and its fallbacks to the per-layer path, over all
    /// steps ([`crate::integrators::batched`]; zero where the update is not batched).
    pub batched: BatchedCounts,
}

/// The result of [`run`]: the rows and what they were measured on.
#[derive(Clone, Debug)]
pub struct MlpBench {
    /// The setting (of abc-PSI; the other methods differ only in `integrator.method` and the
    /// initialisation, see [`RunConfig::paper_mnist_with`]).
    pub config: RunConfig,
    /// One row per method, in the order asked for.
    pub rows: Vec<BenchRow>,
    /// Whether the batches were MNIST's (otherwise Gaussian).
    pub mnist: bool,
    /// This machine's rate for a 1024³ matrix product, in GFLOP/s ([`matmul_rate`]).
    pub matmul_gflops: f64,
    /// Untimed steps per method.
    pub warmup: usize,
    /// Timed steps per method.
    pub steps: usize,
}

/// GFLOP/s of a 1024×1024×1024 matrix product on the backend (median of 5).
pub fn matmul_rate<B: AutodiffBackend>(device: &B::Device) -> f64 {
    let n = 1024;
    let a = Tensor::<B::InnerBackend, 2>::random([n, n], Distribution::Default, device);
    let b = Tensor::<B::InnerBackend, 2>::random([n, n], Distribution::Default, device);
    let mut times: Vec<f64> = (0..6)
        .map(|_| {
            let t = Instant::now();
            let c = a.clone().matmul(b.clone());
            let _ = c.slice([0..1, 0..1]).into_data();
            t.elapsed().as_secs_f64()
        })
        .skip(1)
        .collect();
    times.sort_by(f64::total_cmp);
    2.0 * (n * n * n) as f64 / times[times.len() / 2] / 1e9
}

/// The median of `times` (sorted here); `steps ≥ 1` is checked before any timing, so it has one.
fn median(mut times: Vec<f64>) -> Result<f64> {
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied().ok_or_else(|| Error::Internal("a benchmark timed no step".into()))
}

/// Checks the step counts of a benchmark: at least one timed step, and a total that fits.
fn check_steps(warmup: usize, steps: usize) -> Result<usize> {
    if steps == 0 {
        return Err(Error::config("steps", steps, "at least 1 timed step (the table shows their median)"));
    }
    warmup
        .checked_add(steps)
        .ok_or_else(|| Error::config("warmup", warmup, "warmup + steps that fit a usize"))
}

/// The parts of the timed steps ([`StepTimes`]) and the host decompositions' time during them.
struct Breakdown {
    parts: StepTimes,
    host_before: HostTime,
    steps: usize,
}

impl Breakdown {
    /// Starts counting; call it before the first timed step.
    fn start() -> Self {
        Self { parts: StepTimes::default(), host_before: host_time(), steps: 0 }
    }

    /// Adds one timed step.
    fn add(&mut self, times: StepTimes) {
        self.parts += times;
        self.steps += 1;
    }

    /// Means per timed step, in seconds × `unit` (1e6 for µs, 1e3 for ms).
    fn means(&self, unit: f64) -> (StepTimes, HostTime) {
        let (host, p) = (host_time(), &self.parts);
        let mean = |seconds: f64| seconds * unit / self.steps.max(1) as f64;
        (
            StepTimes { forward: mean(p.forward), backward: mean(p.backward), update: mean(p.update) },
            HostTime { qr: mean(host.qr - self.host_before.qr), svd: mean(host.svd - self.host_before.svd) },
        )
    }
}

/// Waits for the device's queued work, so a step's time includes it (a no-op on the CPU).
fn sync<B: AutodiffBackend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| Error::Device(format!("device sync failed: {e:?}")))
}

/// Benchmarks `methods` (all when empty) on `model` (the paper's MLP or LeNet-5, at the
/// settings of [`RunConfig::paper_mnist_with`] and [`RunConfig::lenet5_with`]) with `warmup`
/// untimed and `steps` timed steps each.
pub fn run<B: AutodiffBackend>(
    model: ModelKind,
    methods: &[IntegratorKind],
    warmup: usize,
    steps: usize,
    data_dir: &Path,
    device: &B::Device,
) -> Result<MlpBench> {
    let total = check_steps(warmup, steps)?;
    let methods = if methods.is_empty() { &IntegratorKind::ALL[..] } else { methods };
    let preset = |method| match model {
        ModelKind::Mlp => RunConfig::paper_mnist_with(method),
        ModelKind::LeNet5 => RunConfig::lenet5_with(method),
    };
    let base = preset(IntegratorKind::AbcPsi);
    let (batch, dataset) = (base.train.batch_size, DatasetName::Mnist);
    let classes = dataset.classes();
    let image = [1, 28, 28];
    let positions = match model {
        ModelKind::Mlp => vec![1; base.model.hidden.len() + 1],
        ModelKind::LeNet5 => lenet5::geometry(image, classes)?.positions,
    };
    let mnist = data::load(dataset, Split::Train, data_dir).ok();
    let matmul_gflops = matmul_rate::<B>(device);
    let mut rng = StdRng::seed_from_u64(0);
    let mut rows = Vec::new();
    for &method in methods {
        let cfg = preset(method);
        let mut net = new_model::<B>(&cfg, (image, classes), &mut rng, device)?;
        let mut trainer = Trainer::new(method, &cfg.integrator.truncation(), cfg.optimizer.build()?)?;
        trainer.prepare(&mut net)?;
        let mut times = Vec::with_capacity(steps);
        let before = trainer.counters();
        let (reads_before, bytes_before) = (crate::linalg::host_reads(), crate::linalg::host_bytes());
        let batched_before = batched_counts();
        // Restarted at the first timed step, so that warm-up decompositions are not counted.
        let mut breakdown = Breakdown::start();
        for k in 0..total {
            let (x, y) = match &mnist {
                Some(d) => {
                    let idx: Vec<usize> = (0..batch).map(|i| (k * batch + i) % d.len).collect();
                    let (px, lb) = d.gather(&idx);
                    (
                        Tensor::<B, 4>::from_data(TensorData::new(px, [batch, 1, 28, 28]), device),
                        Tensor::<B, 1, Int>::from_data(TensorData::new(lb, [batch]), device),
                    )
                }
                None => (
                    Tensor::<B, 4>::random([batch, 1, 28, 28], Distribution::Normal(0.0, 1.0), device),
                    Tensor::<B, 1, Int>::from_data(
                        TensorData::new((0..batch as i64).map(|i| i % classes as i64).collect(), [batch]),
                        device,
                    ),
                ),
            };
            if k == warmup {
                breakdown = Breakdown::start();
            }
            let started = Instant::now();
            let report = trainer.step(&mut net, |net| cross_entropy(net.logits(x.clone()), y.clone()))?;
            sync::<B>(device)?;
            if k >= warmup {
                times.push(started.elapsed().as_secs_f64() * 1e6);
                breakdown.add(report.times);
            }
        }
        let (parts_us, host_us) = breakdown.means(1e6);
        let c = trainer.counters();
        let per = |a: u64, b: u64| (a - b) as f64 / total as f64;
        let shapes: Vec<flops::LayerShape> = net
            .layers()
            .iter()
            .zip(&positions)
            .map(|(layer, &positions)| {
                let (n, m) = layer.shape();
                let rank = match layer {
                    Layer::Dense(_) => None,
                    Layer::LowRank(l) => Some(l.rank()),
                };
                flops::LayerShape { positions, n, m, rank }
            })
            .collect();
        rows.push(BenchRow {
            method,
            median_us: median(times)?,
            passes: per(c.passes, before.passes),
            qr: per(c.qr, before.qr),
            svd: per(c.svd, before.svd),
            ranks: net.ranks(),
            flops: flops::step_flops(method, &shapes, batch),
            host_reads: per(crate::linalg::host_reads(), reads_before),
            host_bytes: per(crate::linalg::host_bytes(), bytes_before),
            parts_us,
            host_us,
            batched: batched_counts() - batched_before,
        });
    }
    Ok(MlpBench { config: base, rows, mnist: mnist.is_some(), matmul_gflops, warmup, steps })
}

/// The setting line of a run config: `784-500-500-10, batch 64, r0 = 20, tol = 0.01, SGD lr = 0.01`.
pub fn setting(cfg: &RunConfig) -> String {
    let (inputs, classes) = cfg.train.known_shape().unwrap_or((0, 0));
    let widths: Vec<String> = match cfg.model.kind {
        ModelKind::Mlp => cfg.widths(inputs, classes).iter().map(|w| w.to_string()).collect(),
        ModelKind::LeNet5 => vec![format!("LeNet-5 conv20-conv50-500-{classes}")],
    };
    let optimizer = match cfg.optimizer.rule {
        OptimizerConfig::Sgd => "SGD",
        OptimizerConfig::Momentum { .. } => "momentum",
        OptimizerConfig::Adam { .. } => "Adam",
    };
    format!(
        "{}, batch {}, r0 = {}, tol = {}, {optimizer} lr = {}",
        widths.join("-"),
        cfg.train.batch_size,
        cfg.model.rank,
        cfg.integrator.tol,
        cfg.optimizer.lr
    )
}

/// `dlrt bench`'s tables: the setting, the matrix-product rate, one row per method, then
/// where a step's time goes. `device` is shown as it prints with `{:?}`.
pub fn write_table(out: &mut impl Write, bench: &MlpBench, device: impl Debug) -> Result<()> {
    let io = Error::Output;
    let (rate, batches) = (bench.matmul_gflops, if bench.mnist { "MNIST" } else { "Gaussian" });
    writeln!(
        out,
        "{}; {batches} batches; median of {} steps after {} warm-up",
        setting(&bench.config),
        bench.steps,
        bench.warmup
    )
    .map_err(io)?;
    writeln!(out, "matrix-product rate (1024^3 f32): {rate:.1} GFLOP/s").map_err(io)?;
    writeln!(out, "device: {device:?}").map_err(io)?;
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
    for r in bench.rows.iter().filter(|r| r.batched.layer_phases > 0) {
        let BatchedCounts { layer_phases, fallbacks } = r.batched;
        writeln!(
            out,
            "{}: {fallbacks} of {layer_phases} batched layer-phases took the per-layer path (all {} steps)",
            r.method,
            bench.warmup + bench.steps
        )
        .map_err(io)?;
    }
    write_parts_table(out, "µs", bench.rows.iter().map(|r| (r.method, r.parts_us, r.host_us)))?;
    if let Some(mib) = peak_memory_mib() {
        writeln!(out, "peak resident memory of this process: {mib:.0} MiB").map_err(io)?;
    }
    Ok(())
}

/// The "where a step's time goes" table of `dlrt bench` and `dlrt bench-vit`, after a blank
/// line.
fn write_parts_table(
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

    #[test]
    fn the_setting_line_is_derived_from_the_paper_config() {
        assert_eq!(
            setting(&RunConfig::paper_mnist()),
            "784-500-500-10, batch 64, r0 = 20, tol = 0.01, SGD lr = 0.01"
        );
        let mut cfg = RunConfig::paper_mnist();
        (cfg.model.hidden, cfg.optimizer.rule, cfg.optimizer.lr) =
            (vec![8], OptimizerConfig::adamw(0.0), 1e-3);
        assert_eq!(setting(&cfg), "784-8-10, batch 64, r0 = 20, tol = 0.01, Adam lr = 0.001");
    }

    #[test]
    fn zero_timed_steps_are_an_error_not_a_panic() {
        let device = Default::default();
        let err = run::<crate::TrainBackend>(
            ModelKind::Mlp,
            &[IntegratorKind::Dense],
            0,
            0,
            Path::new("/nowhere"),
            &device,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("steps") && err.contains("at least 1"), "{err}");
        assert!(check_steps(usize::MAX, 1).is_err());
        assert_eq!(check_steps(2, 3).unwrap(), 5);
        assert!(matches!(median(Vec::new()), Err(Error::Internal(_))));
        assert_eq!(median(vec![3.0, 1.0, 2.0]).unwrap(), 2.0);
    }

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
        };
        let mut out = Vec::new();
        write_table(&mut out, &bench, "Cpu").unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "784-500-500-10, batch 64, r0 = 20, tol = 0.01, SGD lr = 0.01; Gaussian batches; median of 3 steps after 1 warm-up"
        );
        assert_eq!(lines[2], "device: \"Cpu\"");
        // 4 MFLOP in 2 ms: 2 GFLOP/s, 20 % of 10 GFLOP/s; twice dense's time.
        assert_eq!(
            lines[5],
            "| abc_psi | 2000 | 2 | 2.0 | 2.0 | 4.0 | 2.0 | [20, 18] | 4.0 | 2.0 | 20 % | 2.00 |"
        );
        assert!(text.contains("| abc_psi | 1 | 2 | 3 | 5 | 6 |"), "{text}");
        assert_eq!(lines[7], "abc_psi: 1 of 16 batched layer-phases took the per-layer path (all 4 steps)");
        assert!(!text.contains("dense: "), "no batched line for dense training: {text}");
    }
}
