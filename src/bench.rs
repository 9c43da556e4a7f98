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
//! Every step (warm-up included) is also classed by whether its shapes are new in the run
//! ([`NewShapes`]): the ranks at its start, and the widths its passes multiplied with (those of
//! the rank bucket, `--rank-bucket`). A third table gives the median time of the steps at new
//! and at seen shapes, which is what a new rank costs where kernels are compiled or tuned per
//! shape (a GPU); `--log-steps` prints every step with its ranks as it ends.
//!
//! With `--model lenet5` the network is LeNet-5 ([`RunConfig::lenet5_with`]), and a second
//! table times single convolutions, low-rank against dense at the same shapes ([`conv`]).
//!
//! Also here: the ViT adapter step benchmark of `dlrt bench-vit` ([`vit`]) and the matrix
//! problem of `dlrt matrix` ([`mod@matrix`]).

pub mod conv;
pub mod flops;
pub mod matrix;
pub mod ops;
pub mod vit;

use std::collections::HashSet;
use std::fmt::Debug;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use burn::tensor::{backend::AutodiffBackend, Distribution, Int, Tensor, TensorData};
use rand::{rngs::StdRng, SeedableRng};

use crate::config::overrides::parse_rank_bucket;
use crate::config::{ModelKind, RunConfig};
use crate::data::{self, DatasetName, Split};
use crate::integrators::batched::{batched_counts, BatchedCounts};
use crate::integrators::IntegratorKind;
use crate::layers::Precision;
use crate::linalg::{host_time, HostTime};
use crate::models::{lenet5, Classifier, Layer, Net};
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
    /// Step times, in µs, at new and at seen shapes.
    pub shapes: ShapeSummary,
    /// Layer-phases of the batched update and its fallbacks to the per-layer path, over all
    /// steps ([`crate::integrators::batched`]; zero where the update is not batched).
    pub batched: BatchedCounts,
}

/// Options of both step benchmarks (`dlrt bench`, `dlrt bench-vit`).
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct StepOptions {
    /// Pad the factors each pass multiplies with to widths that are multiples of N (rank
    /// buckets: few kernel shapes on a GPU while ranks change; 1 = no padding).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_rank_bucket)]
    pub rank_bucket: usize,
    /// Print every step (time, its parts, the ranks, and whether its ranks and widths are new
    /// in the run) to stderr as it ends, so a run cut short by a timeout still shows how far it
    /// got.
    #[arg(long)]
    pub log_steps: bool,
}

impl Default for StepOptions {
    fn default() -> Self {
        Self { rank_bucket: 1, log_steps: false }
    }
}

/// Steps classed by whether their shapes are new in the run (module docs). Kernels are
/// compiled per operation's shape, and layers of the same n×m share them, so a step is at new
/// ranks when some low-rank layer is at an (n, m, r) no layer was at before in the run, and at
/// new widths when some pass multiplied with an (n, m, U width, V width) not seen before. The
/// first step is left out: it compiles and allocates everything, whatever the ranks.
#[derive(Clone, Debug, Default)]
pub struct NewShapes {
    seen_ranks: HashSet<[usize; 3]>,
    seen_widths: HashSet<[usize; 4]>,
    recorded: usize,
    /// Times of steps at new ranks, at seen ones, at new widths, at seen widths.
    times: [Vec<f64>; 4],
}

/// What [`NewShapes`] found: counts and median step times (`None` where no step was).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ShapeSummary {
    /// Steps classed (all but the first).
    pub steps: usize,
    /// Steps at new ranks ([`NewShapes`]).
    pub new_ranks: usize,
    /// Steps whose passes multiplied with new widths.
    pub new_widths: usize,
    /// Median time of the steps at new ranks, at seen ones, at new widths, at seen widths.
    pub medians: [Option<f64>; 4],
}

impl NewShapes {
    /// Records a step that started with its layers at `ranks` (n, m, r) and whose passes
    /// multiplied with `widths` (n, m, U width, V width); returns whether either was new.
    pub fn add(&mut self, ranks: Vec<[usize; 3]>, widths: Vec<[usize; 4]>, time: f64) -> (bool, bool) {
        // `fold`, not `any`: every shape of the step is remembered.
        let new_ranks = ranks.into_iter().fold(false, |new, k| self.seen_ranks.insert(k) | new);
        let new_widths = widths.into_iter().fold(false, |new, k| self.seen_widths.insert(k) | new);
        if self.recorded > 0 {
            self.times[if new_ranks { 0 } else { 1 }].push(time);
            self.times[if new_widths { 2 } else { 3 }].push(time);
        }
        self.recorded += 1;
        (new_ranks, new_widths)
    }

    /// Counts and medians.
    pub fn summary(&self) -> ShapeSummary {
        let medians = self.times.clone().map(|t| median(t).ok());
        ShapeSummary {
            steps: self.recorded.saturating_sub(1),
            new_ranks: self.times[0].len(),
            new_widths: self.times[2].len(),
            medians,
        }
    }
}

/// The low-rank layers of a network `dlrt train` builds.
fn low_rank<B: AutodiffBackend>(net: &Net<B>) -> impl Iterator<Item = &crate::LowRankLinear<B>> {
    net.layers().iter().filter_map(|l| match l {
        Layer::LowRank(l) => Some(l),
        Layer::Dense(_) => None,
    })
}

/// The (n, m, r) of every low-rank layer.
fn rank_keys<'a, B: AutodiffBackend>(
    layers: impl Iterator<Item = &'a crate::LowRankLinear<B>>,
) -> Vec<[usize; 3]> {
    layers.map(|l| [l.n(), l.m(), l.rank()]).collect()
}

/// The (n, m, U width, V width) every low-rank layer's current pass multiplies with, appended
/// to `out`.
fn push_widths<'a, B: AutodiffBackend>(
    layers: impl Iterator<Item = &'a crate::LowRankLinear<B>>,
    out: &mut Vec<[usize; 4]>,
) {
    for l in layers {
        let (u, v) = l.pass_widths();
        out.push([l.n(), l.m(), u, v]);
    }
}

/// The per-step line of `--log-steps` for step `k` of `total` (`warmup`: an untimed one).
fn log_step(
    method: IntegratorKind,
    (k, total, warmup): (usize, usize, bool),
    (time, unit): (f64, &str),
    parts: StepTimes,
    ranks: &[usize],
    (new_ranks, new_widths): (bool, bool),
) {
    let scale = if unit == "ms" { 1e3 } else { 1e6 };
    let new = |b: bool| if b { "new" } else { "seen" };
    eprintln!(
        "{method} step {}/{total} ({}): {time:.1} {unit} (forward {:.1}, backward {:.1}, update {:.1}); ranks {ranks:?} {}, widths {}",
        k + 1,
        if warmup { "warm-up" } else { "timed" },
        parts.forward * scale,
        parts.backward * scale,
        parts.update * scale,
        new(new_ranks),
        new(new_widths)
    );
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
    /// The rank bucket and the step log.
    pub options: StepOptions,
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
/// untimed and `steps` timed steps each, with `options`' rank bucket, the layers' products in
/// `precision`.
pub fn run<B: AutodiffBackend>(
    model: ModelKind,
    methods: &[IntegratorKind],
    (warmup, steps): (usize, usize),
    options: &StepOptions,
    precision: Precision,
    data_dir: &Path,
    device: &B::Device,
) -> Result<MlpBench> {
    let total = check_steps(warmup, steps)?;
    let methods = if methods.is_empty() { &IntegratorKind::ALL[..] } else { methods };
    let preset = |method| {
        let mut cfg = match model {
            ModelKind::Mlp => RunConfig::paper_mnist_with(method),
            ModelKind::LeNet5 => RunConfig::lenet5_with(method),
        };
        cfg.model.precision = precision;
        cfg
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
        let mut trainer = Trainer::new(method, &cfg.integrator.truncation(), cfg.optimizer.build()?)?
            .with_rank_bucket(options.rank_bucket)?;
        trainer.prepare(&mut net)?;
        let mut new_shapes = NewShapes::default();
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
            let (start, ranks, mut widths) = (net.ranks(), rank_keys(low_rank(&net)), Vec::new());
            let started = Instant::now();
            let report = trainer.step(&mut net, |net| {
                push_widths(low_rank(net), &mut widths);
                cross_entropy(net.logits(x.clone()), y.clone())
            })?;
            sync::<B>(device)?;
            let us = started.elapsed().as_secs_f64() * 1e6;
            let new = new_shapes.add(ranks, widths, us);
            if options.log_steps {
                log_step(method, (k, total, k < warmup), (us, "µs"), report.times, &start, new);
            }
            if k >= warmup {
                times.push(us);
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
            shapes: new_shapes.summary(),
            batched: batched_counts() - batched_before,
        });
    }
    Ok(MlpBench {
        config: base,
        rows,
        mnist: mnist.is_some(),
        matmul_gflops,
        warmup,
        steps,
        options: options.clone(),
    })
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
    let products = match cfg.model.precision {
        Precision::F32 => "",
        Precision::Bf16 => ", bf16 products",
    };
    format!(
        "{}, batch {}, r0 = {}, tol = {}, {optimizer} lr = {}{products}",
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
        "{}{}; {batches} batches; median of {} steps after {} warm-up",
        setting(&bench.config),
        bucket_note(bench.options.rank_bucket),
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
    write_batched_lines(out, bench.warmup + bench.steps, bench.rows.iter().map(|r| (r.method, r.batched)))?;
    write_parts_table(out, "µs", bench.rows.iter().map(|r| (r.method, r.parts_us, r.host_us)))?;
    write_shapes_table(out, "µs", bench.rows.iter().map(|r| (r.method, r.shapes)))?;
    if let Some(mib) = peak_memory_mib() {
        writeln!(out, "peak resident memory of this process: {mib:.0} MiB").map_err(io)?;
    }
    Ok(())
}

/// `, rank bucket b` for a bucket other than 1.
fn bucket_note(bucket: usize) -> String {
    if bucket == 1 {
        String::new()
    } else {
        format!(", rank bucket {bucket}")
    }
}

/// A line per method whose update ran batched: how many layer-phases took the per-layer path.
fn write_batched_lines(
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
fn write_shapes_table(
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
        cfg.model.precision = Precision::Bf16;
        assert!(setting(&cfg).ends_with("lr = 0.001, bf16 products"));
    }

    #[test]
    fn zero_timed_steps_are_an_error_not_a_panic() {
        let device = Default::default();
        let err = run::<crate::TrainBackend>(
            ModelKind::Mlp,
            &[IntegratorKind::Dense],
            (0, 0),
            &StepOptions::default(),
            Precision::F32,
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
        assert!(text.contains("| abc_psi | 3 | 2 | 30 | 10 | 1 | 40 | - |"), "{text}");
        assert!(
            text.contains("\nabc_psi: 1 of 16 batched layer-phases took the per-layer path (all 4 steps)\n"),
            "{text}"
        );
        assert!(!text.contains("dense: "), "no batched line for dense training: {text}");
    }

    #[test]
    fn new_shapes_are_told_from_seen_ones_and_the_first_step_is_left_out() {
        let mut shapes = NewShapes::default();
        let (a, b) = ([784, 500], [500, 500]);
        let step = |r: [usize; 2], w: [usize; 2]| {
            (
                vec![[a[0], a[1], r[0]], [b[0], b[1], r[1]]],
                vec![[a[0], a[1], w[0], w[0]], [b[0], b[1], w[1], w[1]]],
            )
        };
        let mut add = |r, w, t| {
            let (ranks, widths) = step(r, w);
            shapes.add(ranks, widths, t)
        };
        assert_eq!(add([20, 20], [24, 24], 1000.0), (true, true));
        assert_eq!(add([21, 20], [24, 24], 9.0), (true, false));
        assert_eq!(add([20, 20], [24, 24], 3.0), (false, false));
        assert_eq!(add([26, 20], [32, 24], 11.0), (true, true));
        // 26 and 32 are new for the second layer's shape, though the first had them.
        assert_eq!(add([21, 26], [24, 32], 5.0), (true, true));
        // Each layer's shape was seen before, if never together: nothing is new.
        assert_eq!(add([26, 26], [32, 32], 4.0), (false, false));
        let s = shapes.summary();
        assert_eq!((s.steps, s.new_ranks, s.new_widths), (5, 3, 2));
        assert_eq!(s.medians, [Some(9.0), Some(4.0), Some(11.0), Some(4.0)]);
        assert_eq!(NewShapes::default().summary(), ShapeSummary::default());
    }
}
