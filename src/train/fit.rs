//! [`fit`]: the training loop, the same for every integrator and every model.
//!
//! nanoGPT's shape: helpers (`batch`, [`evaluate`]) above, then one linear loop: per epoch
//! shuffle, step through the batches with a progress bar, evaluate, record the metrics, plot,
//! and checkpoint. The batch order of epoch e depends only on (seed, e), so a run resumed from
//! the checkpoint of epoch e continues exactly as if never interrupted. [`super::run`] and
//! [`super::finetune`] set a run up (data, model, trainer, checkpoint format) and call it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{backend::AutodiffBackend, ElementConversion, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use super::loss::{correct, cross_entropy};
use super::metrics::{self, EpochRecord, MetricsWriter};
use super::schedule::learning_rate;
use super::{plot, Trainer};
use crate::config::{OptimizerSection, Schedule, TrainSection};
use crate::data::{self, Dataset, DatasetSource, ImageFormat};
use crate::models::Classifier;
use crate::{Error, Result};

/// Where a run reads and writes, and how it reports.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The run folder: config.toml, metrics.{jsonl,csv}, plots, checkpoint.safetensors.
    pub run_dir: PathBuf,
    /// Where the fetched data sets are.
    pub data_dir: PathBuf,
    /// Continue from `run_dir/checkpoint.safetensors`.
    pub resume: bool,
    /// Show a progress bar and print one summary line per epoch.
    pub progress: bool,
}

/// The checkpoint file of a run folder.
pub fn checkpoint_path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint.safetensors")
}

/// `runs/<config file name without extension>`: where a run writes unless told otherwise.
pub fn default_run_dir(config: &Path) -> PathBuf {
    let stem = config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
    PathBuf::from("runs").join(stem)
}

impl RunOptions {
    /// Where fetch messages go: stderr when the run shows its progress, nowhere otherwise.
    pub(super) fn log(&self) -> Box<dyn std::io::Write> {
        if self.progress {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::sink())
        }
    }
}

/// The loop's settings, from a run's config.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Epochs in the whole run (a resumed run continues up to this many).
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Batches per epoch at most (0 = all).
    pub max_batches: usize,
    /// Seed of the batch order.
    pub seed: u64,
    /// λ at the start and its schedule over the run.
    pub lr: f64,
    /// How λ changes over the run.
    pub schedule: Schedule,
    /// Steps of linear warm-up before the schedule.
    pub warmup_steps: u64,
    /// How the model sees the images.
    pub format: ImageFormat,
    /// Images per evaluation batch.
    pub eval_batch: usize,
}

impl Plan {
    /// The plan of a run: its `[train]` and `[optimizer]` sections, and how its model sees the
    /// images, evaluated `eval_batch` at a time.
    pub fn new(
        train: &TrainSection,
        optimizer: &OptimizerSection,
        format: ImageFormat,
        eval_batch: usize,
    ) -> Self {
        Self {
            epochs: train.epochs,
            batch_size: train.batch_size,
            max_batches: train.max_batches,
            seed: train.seed,
            lr: optimizer.lr,
            schedule: optimizer.schedule,
            warmup_steps: optimizer.warmup_steps,
            format,
            eval_batch,
        }
    }
}

/// The training and test images of a run's `[train]` section (fetching a built-in data set
/// into `opts.data_dir` when it is missing, or reading an image folder), cut to its
/// `train_subset` and `test_subset`.
pub fn load_data(train: &TrainSection, opts: &RunOptions) -> Result<(Dataset, Dataset)> {
    if let DatasetSource::Named(name) = &train.dataset {
        data::fetch::ensure(*name, &opts.data_dir, &mut opts.log())?;
    }
    let (mut train_data, mut test_data) = train.dataset.load(&opts.data_dir, &mut opts.log())?;
    if train.train_subset > 0 {
        train_data.truncate(train.train_subset);
    }
    if train.test_subset > 0 {
        test_data.truncate(train.test_subset);
    }
    Ok((train_data, test_data))
}

/// Starts a new run in `run_dir` (an existing folder) when the folder holds no earlier run
/// (no config.toml, metrics or checkpoint): writes its config and empty metrics at once, so
/// `dlrt report` lists the run during its first epoch. A folder with an earlier run keeps all
/// of it until the new run's first epoch ends, when `save` writes the config and `writer` the
/// metrics ([`fit`]).
pub fn start_run_dir(run_dir: &Path, config_toml: &str, writer: &mut MetricsWriter) -> Result<()> {
    let earlier = ["config.toml", metrics::JSONL_FILE, metrics::CSV_FILE, "checkpoint.safetensors"];
    if earlier.iter().any(|name| run_dir.join(name).exists()) {
        // Nothing is written before the first epoch ends: find out now, not an epoch later,
        // whether anything can be.
        let probe = run_dir.join(format!(".dlrt-write-check-{}", std::process::id()));
        std::fs::File::create_new(&probe).map_err(|e| Error::io(&probe, e))?;
        return std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e));
    }
    crate::io::atomic_write(&run_dir.join("config.toml"), config_toml.as_bytes())?;
    writer.start()
}

/// Where a run starts: epochs and steps already done, and their records (empty for a new run).
#[derive(Clone, Debug, Default)]
pub struct Start {
    /// Epochs completed.
    pub epoch: usize,
    /// Steps taken.
    pub step: u64,
    /// The records of the completed epochs.
    pub records: Vec<EpochRecord>,
}

fn batch<B: AutodiffBackend>(
    data: &Dataset,
    idx: &[usize],
    format: ImageFormat,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    let (pixels, shape, labels) = data.batch(idx, format);
    let x = Tensor::from_data(TensorData::new(pixels, shape), device);
    let y = Tensor::from_data(TensorData::new(labels, [idx.len()]), device);
    (x, y)
}

/// Mean cross-entropy and accuracy of `model` on `data`, `chunk` images at a time.
pub fn evaluate<B: AutodiffBackend, M: Classifier<B> + ?Sized>(
    model: &M,
    data: &Dataset,
    format: ImageFormat,
    chunk: usize,
    device: &B::Device,
) -> (f64, f64) {
    let (mut loss, mut hits) = (0.0, 0usize);
    let all: Vec<usize> = (0..data.len).collect();
    for idx in all.chunks(chunk.max(1)) {
        let (x, y) = batch::<B>(data, idx, format, device);
        let logits = model.logits(x);
        let l: f64 = cross_entropy(logits.clone(), y.clone()).into_scalar().elem();
        loss += l * idx.len() as f64;
        hits += correct(logits, y);
    }
    (loss / data.len.max(1) as f64, hits as f64 / data.len.max(1) as f64)
}

/// `[a, b]`, or `min..max (mean over n)` for many layers.
pub fn ranks_summary(ranks: &[usize]) -> String {
    match ranks {
        r if r.len() > 4 => format!(
            "{}..{} (mean {:.1} over {})",
            r.iter().min().unwrap_or(&0),
            r.iter().max().unwrap_or(&0),
            r.iter().sum::<usize>() as f64 / r.len() as f64,
            r.len()
        ),
        r => format!("{r:?}"),
    }
}

/// Trains `model` on `train` from `start` up to `plan.epochs`, evaluating on `test` after each
/// epoch; returns every epoch's record (those of `start` first). After each epoch it appends
/// the record to `writer`, redraws the plots and calls `save(model, trainer, epoch, step)`.
///
/// A non-finite training or test loss stops the run with an error; the checkpoint of the last
/// finished epoch stays as it was. A new run's first epoch is the first to write the run
/// folder's files (`save` writes its config), so a run that fails before leaves the folder as
/// it was.
#[allow(clippy::too_many_arguments)]
pub fn fit<B: AutodiffBackend, M: Classifier<B>>(
    model: &mut M,
    trainer: &mut Trainer<B>,
    (train, test): (&Dataset, &Dataset),
    plan: &Plan,
    opts: &RunOptions,
    start: Start,
    writer: &mut MetricsWriter,
    mut save: impl FnMut(&M, &Trainer<B>, usize, u64) -> Result<()>,
    device: &B::Device,
) -> Result<Vec<EpochRecord>> {
    let full = train.len.div_ceil(plan.batch_size);
    let per_epoch = if plan.max_batches > 0 { full.min(plan.max_batches) } else { full };
    let total_steps = (per_epoch * plan.epochs) as u64;
    let Start { epoch: done, mut step, mut records } = start;
    let mut last_good = if done > 0 {
        checkpoint_path(&opts.run_dir).display().to_string()
    } else {
        "none: it stopped in the run's first epoch (an earlier run in the folder is as it was)".into()
    };

    for epoch in done + 1..=plan.epochs {
        let mut order: Vec<usize> = (0..train.len).collect();
        let key = plan.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        order.shuffle(&mut StdRng::seed_from_u64(key));
        let bar = progress_bar(opts.progress, per_epoch as u64, epoch, plan.epochs);
        let (started, mut loss_sum, mut seen) = (Instant::now(), 0.0, 0usize);
        for (b, idx) in order.chunks(plan.batch_size).take(per_epoch).enumerate() {
            trainer.opt.lr = learning_rate(plan.lr, plan.schedule, plan.warmup_steps, step, total_steps);
            let (x, y) = batch::<B>(train, idx, plan.format, device);
            let report = trainer.step(model, |m| cross_entropy(m.logits(x.clone()), y.clone())).map_err(|e| match e {
                Error::NonFinite { context } => Error::NonFinite {
                    context: format!(
                        "{context} at epoch {epoch}, step {}: training stopped; the last good checkpoint is {last_good}",
                        step + 1
                    ),
                },
                other => other,
            })?;
            step += 1;
            loss_sum += report.loss;
            seen += idx.len();
            if opts.progress {
                let rate = seen as f64 / started.elapsed().as_secs_f64();
                bar.set_position(b as u64 + 1);
                bar.set_message(format!(
                    "loss {:.4}  {rate:.1} images/s  ranks {}",
                    loss_sum / (b + 1) as f64,
                    ranks_summary(&model.ranks())
                ));
            }
        }
        let wall = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let (test_loss, test_accuracy) = evaluate(model, test, plan.format, plan.eval_batch, device);
        if !test_loss.is_finite() {
            // A diverged network can keep a finite training loss while its test logits overflow.
            return Err(Error::NonFinite {
                context: format!(
                    "the test loss ({test_loss}) after epoch {epoch}: training stopped; the last good checkpoint is {last_good}"
                ),
            });
        }
        let (compression_low_rank, compression_network) = model.compression();
        let counters = trainer.counters();
        let record = EpochRecord {
            epoch,
            step,
            train_loss: loss_sum / per_epoch.max(1) as f64,
            test_loss,
            test_accuracy,
            ranks: model.ranks(),
            compression_low_rank,
            compression_network,
            params: model.params(),
            wall_seconds: wall,
            samples_per_second: seen as f64 / wall,
            passes: counters.passes,
            qr: counters.qr,
            svd: counters.svd,
        };
        if opts.progress {
            progress_line(format_args!(
                "epoch {epoch}/{}: test accuracy {:.2} %, test loss {test_loss:.4}, ranks {}, compression {:.1} % (low-rank layers) / {:.1} % (network), {} parameters, {wall:.1} s",
                plan.epochs,
                100.0 * test_accuracy,
                ranks_summary(&record.ranks),
                100.0 * compression_low_rank,
                100.0 * compression_network,
                record.params
            ));
        }
        writer.append(&record)?;
        records.push(record);
        plot::write_plots(&opts.run_dir, &records)?;
        save(model, trainer, epoch, step)?;
        last_good = checkpoint_path(&opts.run_dir).display().to_string();
    }
    Ok(records)
}

fn progress_bar(show: bool, len: u64, epoch: usize, epochs: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {elapsed} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

/// Prints one line of a run's progress to standard output. A closed output (`dlrt train … |
/// head -1`) does not stop the run: its files are what it is for, so the line is dropped.
pub(crate) fn progress_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn a_folder_with_an_earlier_run_is_kept_but_must_be_writable() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("config.toml"), "earlier").unwrap();
        start_run_dir(dir, "new", &mut MetricsWriter::create(dir)).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("config.toml")).unwrap(), "earlier");
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1, "the check leaves nothing behind");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let writable = std::fs::File::create(dir.join("probe")).is_ok();
        let result = start_run_dir(dir, "new", &mut MetricsWriter::create(dir));
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if writable {
            eprintln!("skipped the read-only half: this user writes to read-only folders (root)");
            return;
        }
        let err = result.unwrap_err().to_string();
        assert!(err.contains(".dlrt-write-check"), "{err}");
    }
}
