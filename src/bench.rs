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
mod shapes;
mod tables;
pub mod vit;

use std::fmt::Debug;
use std::path::Path;
use std::time::Instant;

use burn::tensor::{backend::AutodiffBackend, Distribution, Int, Tensor, TensorData};
use rand::{rngs::StdRng, SeedableRng};

use crate::config::overrides::{parse_name, parse_rank_bucket};
use crate::config::{ModelKind, RunConfig};
use crate::data::{self, DatasetName, Split};
use crate::integrators::batched::{batched_counts, BatchedCounts};
use crate::integrators::{BatchedUpdate, IntegratorKind};
use crate::layers::Precision;
use crate::linalg::{host_time, HostTime};
use crate::models::{lenet5, Classifier, Layer, Net};
use crate::optim::OptimizerConfig;
use crate::train::{loss::cross_entropy, run::new_model, StepTimes, Trainer};
use crate::{Error, Result};

pub use crate::train::report::peak_memory_mib;
pub use conv::{run_conv, write_conv_table, ConvRow};
pub use matrix::{matrix, MatrixArgs};
use shapes::{log_step, push_widths, rank_keys};
pub use shapes::{NewShapes, ShapeSummary};
pub use tables::write_table;
use tables::{bucket_note, write_batched_lines, write_parts_table, write_peak_memory, write_shapes_table};
pub use vit::{run_vit, VitBench, VitBenchRow, VitShape};

/// One row of the benchmark table.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// The method.
    pub method: IntegratorKind,
    /// Median wall time of one training step, in µs.
    pub median_us: f64,
    /// Passes per timed step.
    pub passes: f64,
    /// QR decompositions per timed step (all layers).
    pub qr: f64,
    /// SVDs per timed step (all layers).
    pub svd: f64,
    /// Ranks of the low-rank layers after the timed steps.
    pub ranks: Vec<usize>,
    /// Floating-point operations of one step (matrix products only, [`flops`]).
    pub flops: f64,
    /// Device→host reads per timed step ([`crate::linalg::host_reads`]).
    pub host_reads: f64,
    /// Bytes copied between device and host per timed step, both ways ([`crate::linalg::host_bytes`]).
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
    /// auto (on a GPU with f32), on or off: the updates with decompositions one phase for all
    /// layers at once, with the tall factors on the device.
    #[arg(long, default_value_t = BatchedUpdate::Auto, value_parser = parse_name::<BatchedUpdate>)]
    pub batched_update: BatchedUpdate,
    /// Print every step (time, its parts, the ranks, and whether its ranks and widths are new
    /// in the run) to stderr as it ends, so a run cut short by a timeout still shows how far it
    /// got.
    #[arg(long)]
    pub log_steps: bool,
}

impl Default for StepOptions {
    fn default() -> Self {
        Self { rank_bucket: 1, batched_update: BatchedUpdate::Auto, log_steps: false }
    }
}

/// The low-rank layers of a network `dlrt train` builds.
fn low_rank<B: AutodiffBackend>(net: &Net<B>) -> impl Iterator<Item = &crate::LowRankLinear<B>> {
    net.layers().iter().filter_map(|l| match l {
        Layer::LowRank(l) => Some(l),
        Layer::Dense(_) => None,
    })
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
        cfg.integrator.batched_update = options.batched_update;
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
    let mnist = data::load(dataset, Split::Train, data_dir).ok().filter(|d| d.len > 0);
    let matmul_gflops = matmul_rate::<B>(device);
    let mut rng = StdRng::seed_from_u64(0);
    let mut rows = Vec::new();
    for &method in methods {
        let cfg = preset(method);
        let mut net = new_model::<B>(&cfg, (image, classes), &mut rng, device)?;
        let mut trainer = Trainer::from_integrator(cfg.integrator.build()?, cfg.optimizer.build()?)?
            .with_rank_bucket(options.rank_bucket)?;
        trainer.prepare(&mut net)?;
        let mut new_shapes = NewShapes::default();
        let mut times = Vec::with_capacity(steps);
        let batched_before = batched_counts();
        // Restarted at the first timed step, so that warm-up steps are not counted.
        let mut breakdown = Breakdown::start();
        let mut before = trainer.counters();
        let mut moved = (crate::linalg::host_reads(), crate::linalg::host_bytes());
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
                before = trainer.counters();
                moved = (crate::linalg::host_reads(), crate::linalg::host_bytes());
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
        let per = |a: u64, b: u64| (a - b) as f64 / steps as f64;
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
            host_reads: per(crate::linalg::host_reads(), moved.0),
            host_bytes: per(crate::linalg::host_bytes(), moved.1),
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
}
