//! `dlrt bench`: time per training step of every integrator at the paper's MNIST setting.
//!
//! 784-500-500-10, batch 64, r0 = 20, ϑ = 0.01, plain SGD λ = 0.01. Each method first trains
//! `warmup` steps (so the ranks settle where training takes them), then `steps` steps are
//! timed one by one; the table gives the median. Batches come from MNIST when it has been
//! fetched, otherwise from Gaussian inputs (the ranks then differ from real training).
//! FLOPs are counted from the layer shapes at the final ranks (a backward pass costs twice
//! its forward), and compared with this machine's measured rate for a large matrix product.

use std::path::Path;
use std::time::Instant;

use burn::tensor::{backend::AutodiffBackend, Distribution, Int, Tensor, TensorData};
use rand::{rngs::StdRng, SeedableRng};

use crate::config::RunConfig;
use crate::data::{self, Split};
use crate::integrators::IntegratorKind;
use crate::layers::Pass;
use crate::linalg::{host_time, HostTime};
use crate::models::{Layer, Mlp};
use crate::optim::Optimizer;
use crate::train::{loss::cross_entropy, StepTimes, Trainer};
use crate::Result;

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
    /// Floating-point operations of one step (matrix products only).
    pub flops: f64,
    /// Device→host reads per step ([`crate::linalg::host_reads`]).
    pub host_reads: f64,
    /// Mean wall time of a timed step's parts, in µs.
    pub parts_us: StepTimes,
    /// Mean time per timed step in the host decompositions, in µs, summed over layers
    /// ([`crate::linalg::host_time`]).
    pub host_us: HostTime,
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

/// Matrix-product FLOPs of one step of `method` on `model` at batch size `b`.
fn step_flops<B: AutodiffBackend>(model: &Mlp<B>, passes: &[Pass], b: usize) -> f64 {
    let mut total = 0.0;
    for &pass in passes {
        for layer in &model.layers {
            let (n, m) = layer.shape();
            let (n, m, bf) = (n as f64, m as f64, b as f64);
            let forward = match layer {
                Layer::Dense(_) => 2.0 * bf * n * m,
                Layer::LowRank(l) => {
                    let r = l.rank() as f64;
                    // Between passes abc-PSI's basis is 2r wide: use r_u = 2r for L and S passes.
                    let ru = if matches!(pass, Pass::L | Pass::S) && passes.len() > 1 { 2.0 * r } else { r };
                    match pass {
                        Pass::Tangent => 2.0 * bf * (2.0 * n * r + 2.0 * r * m + r * r),
                        // Forward and input gradient (no factor leaf), then the integrator's
                        // xᵀ(δ V0) and δᵀ(x Û) with Û 2r wide: 5 forwards' worth in all.
                        Pass::Activations => 2.0 * bf * (n * r + r * m) * 5.0 / 3.0,
                        _ => 2.0 * bf * (n * ru + ru * m),
                    }
                }
            };
            total += 3.0 * forward;
        }
    }
    total
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
    B::sync(device).map_err(|e| crate::Error::Unsupported(format!("device sync failed: {e:?}")))
}

/// Peak resident memory of this process in MiB (VmHWM), where the OS reports it.
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Benchmarks `methods` with `warmup` untimed and `steps` timed steps each.
pub fn run<B: AutodiffBackend>(
    methods: &[IntegratorKind],
    warmup: usize,
    steps: usize,
    data_dir: &Path,
    device: &B::Device,
) -> Result<(Vec<BenchRow>, bool)> {
    let base = RunConfig::paper_mnist();
    let batch = base.train.batch_size;
    let mnist = data::load(base.train.dataset, Split::Train, data_dir).ok();
    let mut rng = StdRng::seed_from_u64(0);
    let mut rows = Vec::new();
    for &method in methods {
        let cfg = RunConfig::paper_mnist_with(method);
        let m = &cfg.model;
        let mut model =
            Mlp::<B>::new(&m.widths, &cfg.low_rank_flags()?, m.rank, m.init, m.init_gain, &mut rng, device)?;
        let mut trainer =
            Trainer::new(method, &cfg.integrator.truncation(), Optimizer::sgd(cfg.optimizer.lr))?;
        trainer.prepare(&mut model)?;
        let mut times = Vec::with_capacity(steps);
        let before = trainer.counters();
        let reads_before = crate::linalg::host_reads();
        // Restarted at the first timed step, so that warm-up decompositions are not counted.
        let mut breakdown = Breakdown::start();
        for k in 0..warmup + steps {
            let (x, y) = match &mnist {
                Some(d) => {
                    let idx: Vec<usize> = (0..batch).map(|i| (k * batch + i) % d.len).collect();
                    let (px, lb) = d.gather(&idx);
                    (
                        Tensor::<B, 2>::from_data(TensorData::new(px, [batch, 784]), device),
                        Tensor::<B, 1, Int>::from_data(TensorData::new(lb, [batch]), device),
                    )
                }
                None => (
                    Tensor::<B, 2>::random([batch, 784], Distribution::Normal(0.0, 1.0), device),
                    Tensor::<B, 1, Int>::from_data(
                        TensorData::new((0..batch as i64).map(|i| i % 10).collect(), [batch]),
                        device,
                    ),
                ),
            };
            if k == warmup {
                breakdown = Breakdown::start();
            }
            let started = Instant::now();
            let report = trainer.step(&mut model, |net| cross_entropy(net.forward(x.clone()), y.clone()))?;
            sync::<B>(device)?;
            if k >= warmup {
                times.push(started.elapsed().as_secs_f64() * 1e6);
                breakdown.add(report.times);
            }
        }
        let (parts_us, host_us) = breakdown.means(1e6);
        let c = trainer.counters();
        let per = |a: u64, b: u64| (a - b) as f64 / (warmup + steps) as f64;
        times.sort_by(f64::total_cmp);
        rows.push(BenchRow {
            method,
            median_us: times[times.len() / 2],
            passes: per(c.passes, before.passes),
            qr: per(c.qr, before.qr),
            svd: per(c.svd, before.svd),
            ranks: model.ranks(),
            flops: step_flops(&model, trainer.spec().passes, batch),
            host_reads: per(crate::linalg::host_reads(), reads_before),
            parts_us,
            host_us,
        });
    }
    Ok((rows, mnist.is_some()))
}

/// One row of the ViT adapter benchmark.
#[derive(Clone, Debug)]
pub struct VitBenchRow {
    /// The method driving the adapters.
    pub method: IntegratorKind,
    /// Median wall time of one training step, in ms.
    pub median_ms: f64,
    /// Adapter parameters (U, S, V and biases) after the timed steps.
    pub adapter_params: usize,
    /// Smallest and largest adapter rank after the timed steps.
    pub ranks: (usize, usize),
    /// Mean wall time of a timed step's parts, in ms.
    pub parts_ms: StepTimes,
    /// Mean time per timed step in the host decompositions, in ms, summed over layers.
    pub host_ms: HostTime,
}

/// Times adapter fine-tuning steps of a randomly initialised ViT (`config`, images of
/// `image`×`image` pixels, position embeddings interpolated) with adapters of initial rank
/// `rank` on query, key and value, AdamW-free plain SGD λ = 1e-3, ϑ = 0.15 and r_max = `rank`
/// (the paper's ViT setting). The loss is the cross-entropy of a frozen random 10-class head on
/// the CLS features with random labels: the timing needs the backbone's forward and backward
/// passes and the integrator's work, not a trained head.
#[allow(clippy::too_many_arguments)]
pub fn run_vit<B: AutodiffBackend>(
    config: crate::models::vit::ViTConfig,
    image: usize,
    batch: usize,
    rank: usize,
    methods: &[IntegratorKind],
    warmup: usize,
    steps: usize,
    device: &B::Device,
) -> Result<Vec<VitBenchRow>> {
    use crate::models::vit::{AdapterTarget, ViT};
    let mut rows = Vec::new();
    for &method in methods {
        let mut rng = StdRng::seed_from_u64(0);
        let mut vit = ViT::<B>::random(config.clone(), &mut rng, device)?;
        vit.add_adapters(&AdapterTarget::DEFAULT, rank, &mut rng)?;
        let d = config.hidden_size;
        let channels = config.num_channels;
        let x =
            Tensor::<B, 4>::random([batch, channels, image, image], Distribution::Normal(0.0, 1.0), device);
        let head =
            Tensor::<B, 2>::random([d, 10], Distribution::Normal(0.0, (1.0 / d as f64).sqrt()), device);
        let labels = Tensor::<B, 1, Int>::from_data(
            TensorData::new((0..batch as i64).map(|i| i % 10).collect(), [batch]),
            device,
        );
        let truncation = crate::linalg::TruncationConfig::relative(0.15).with_bounds(1, Some(rank));
        let mut trainer = Trainer::new(method, &truncation, Optimizer::sgd(1e-3))?;
        trainer.prepare(&mut vit)?;
        let mut times = Vec::with_capacity(steps);
        // Restarted at the first timed step, so that warm-up decompositions are not counted.
        let mut breakdown = Breakdown::start();
        for k in 0..warmup + steps {
            if k == warmup {
                breakdown = Breakdown::start();
            }
            let started = Instant::now();
            let report = trainer.step(&mut vit, |v| {
                cross_entropy(v.forward(x.clone()).matmul(head.clone()), labels.clone())
            })?;
            sync::<B>(device)?;
            if k >= warmup {
                times.push(started.elapsed().as_secs_f64() * 1e3);
                breakdown.add(report.times);
            }
        }
        let (parts_ms, host_ms) = breakdown.means(1e3);
        times.sort_by(f64::total_cmp);
        let layers = vit.low_rank_layers_mut();
        let ranks = layers.iter().map(|l| l.rank());
        let ranks = (ranks.clone().min().unwrap_or(0), ranks.max().unwrap_or(0));
        rows.push(VitBenchRow {
            method,
            median_ms: times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
            adapter_params: vit.adapter_params(),
            ranks,
            parts_ms,
            host_ms,
        });
    }
    Ok(rows)
}
