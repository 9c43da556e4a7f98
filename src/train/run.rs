//! [`run`]: the MNIST training loop, the same for every integrator.
//!
//! nanoGPT's shape: helpers (`batch`, `evaluate`, `learning_rate`) above, then one linear
//! loop: per epoch shuffle, step through the batches with a progress bar, evaluate, record
//! the metrics, plot, and checkpoint. The batch order of epoch e depends only on (seed, e), so
//! a run resumed from the checkpoint of epoch e continues exactly as if never interrupted.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{backend::AutodiffBackend, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use super::metrics::{EpochRecord, MetricsWriter};
use super::{plot, prepare, step};
use crate::checkpoint::{self, RunState};
use crate::config::{OptimizerSection, RunConfig};
use crate::data::{self, Dataset, Split};
use crate::integrators::CounterSnapshot;
use crate::models::mlp::{correct, cross_entropy};
use crate::models::Mlp;
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

fn batch<B: AutodiffBackend>(
    data: &Dataset,
    idx: &[usize],
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let (pixels, labels) = data.gather(idx);
    let x = Tensor::from_data(TensorData::new(pixels, [idx.len(), data.rows * data.cols]), device);
    let y = Tensor::from_data(TensorData::new(labels, [idx.len()]), device);
    (x, y)
}

/// Mean cross-entropy and accuracy of `model` on `data`.
pub fn evaluate<B: AutodiffBackend>(model: &Mlp<B>, data: &Dataset, device: &B::Device) -> (f64, f64) {
    let (mut loss, mut hits) = (0.0, 0usize);
    let all: Vec<usize> = (0..data.len).collect();
    for idx in all.chunks(1000) {
        let (x, y) = batch::<B>(data, idx, device);
        let logits = model.forward(x);
        let l: f64 =
            burn::tensor::ElementConversion::elem(cross_entropy(logits.clone(), y.clone()).into_scalar());
        loss += l * idx.len() as f64;
        hits += correct(logits, y);
    }
    (loss / data.len.max(1) as f64, hits as f64 / data.len.max(1) as f64)
}

/// λ at `step` of `total` under the configured schedule.
pub fn learning_rate(optimizer: &OptimizerSection, step: u64, total: u64) -> f64 {
    super::schedule::learning_rate(optimizer.lr, optimizer.schedule, step, total)
}

fn add(a: CounterSnapshot, b: CounterSnapshot) -> CounterSnapshot {
    CounterSnapshot { passes: a.passes + b.passes, qr: a.qr + b.qr, svd: a.svd + b.svd }
}

/// Trains (or resumes) the run described by `config`; returns every epoch's record.
///
/// On resume the network, the optimizer state and the counters come from the checkpoint, and
/// `config` must equal the checkpoint's config except for `train.epochs`. A non-finite loss
/// stops the run with an error; the checkpoint of the last finished epoch stays as it was.
pub fn run<B: AutodiffBackend>(
    config: &RunConfig,
    opts: &RunOptions,
    device: &B::Device,
) -> Result<Vec<EpochRecord>> {
    config.validate()?;
    let t = &config.train;
    std::fs::create_dir_all(&opts.run_dir).map_err(|e| Error::io(&opts.run_dir, e))?;
    let ckpt = checkpoint_path(&opts.run_dir);
    let mut train = data::load(t.dataset, Split::Train, &opts.data_dir)?;
    if t.train_subset > 0 {
        train.truncate(t.train_subset);
    }
    let test = data::load(t.dataset, Split::Test, &opts.data_dir)?;
    let integrator = config.integrator.method.build::<B>(&config.integrator.truncation())?;
    let (mut model, mut state, mut writer, mut records) = if opts.resume {
        let (model, state) = checkpoint::load::<B>(&ckpt, device)?;
        let mut same = state.config.clone();
        same.train.epochs = t.epochs;
        if &same != config {
            return Err(Error::config(
                "config",
                ckpt.display(),
                "the checkpoint's config (only train.epochs may change on resume)",
            ));
        }
        let (writer, records) = MetricsWriter::resume(&opts.run_dir, state.epoch)?;
        (model, state, writer, records)
    } else {
        let mut rng = StdRng::seed_from_u64(t.seed);
        let (m, widths) = (&config.model, config.dataset_widths());
        let mut model =
            Mlp::new(&widths, &config.low_rank_flags()?, m.rank, m.init, m.init_gain, &mut rng, device)?;
        prepare(&mut model, integrator.as_ref())?;
        let state =
            RunState { config: config.clone(), epoch: 0, step: 0, counters: CounterSnapshot::default() };
        (model, state, MetricsWriter::create(&opts.run_dir)?, Vec::new())
    };
    state.config = config.clone();
    checkpoint::atomic_write(&opts.run_dir.join("config.toml"), config.to_toml().as_bytes())?;
    let counters_before = state.counters;
    let mut opt = config.optimizer.build()?;
    let per_epoch = {
        let full = train.len.div_ceil(t.batch_size);
        if t.max_batches > 0 {
            full.min(t.max_batches)
        } else {
            full
        }
    };
    let total_steps = (per_epoch * t.epochs) as u64;

    for epoch in state.epoch + 1..=t.epochs {
        let mut order: Vec<usize> = (0..train.len).collect();
        order
            .shuffle(&mut StdRng::seed_from_u64(t.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let bar = progress_bar(opts.progress, per_epoch as u64, epoch, t.epochs);
        let (started, mut loss_sum, mut seen) = (Instant::now(), 0.0, 0usize);
        for (b, idx) in order.chunks(t.batch_size).take(per_epoch).enumerate() {
            opt.lr = learning_rate(&config.optimizer, state.step, total_steps);
            let (x, y) = batch::<B>(&train, idx, device);
            let report = step(&mut model, integrator.as_ref(), &opt, |m| cross_entropy(m.forward(x.clone()), y.clone()))
                .map_err(|e| match e {
                    Error::NonFinite { context } => Error::NonFinite {
                        context: format!(
                            "{context} at epoch {epoch}, step {}: training stopped; the last good checkpoint is {}",
                            state.step + 1,
                            if state.epoch > 0 { ckpt.display().to_string() } else { "none (first epoch)".into() }
                        ),
                    },
                    other => other,
                })?;
            state.step += 1;
            loss_sum += report.loss;
            seen += idx.len();
            let rate = seen as f64 / started.elapsed().as_secs_f64();
            bar.set_position(b as u64 + 1);
            bar.set_message(format!(
                "loss {:.4}  {rate:.0} samples/s  ranks {:?}",
                loss_sum / (b + 1) as f64,
                model.ranks()
            ));
        }
        let wall = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let (test_loss, test_accuracy) = evaluate(&model, &test, device);
        let (compression_low_rank, compression_network) = model.compression();
        let counters = add(counters_before, integrator.counters().snapshot());
        let record = EpochRecord {
            epoch,
            step: state.step,
            train_loss: loss_sum / per_epoch.max(1) as f64,
            test_loss,
            test_accuracy,
            ranks: model.ranks(),
            compression_low_rank,
            compression_network,
            params: model.num_params(),
            wall_seconds: wall,
            samples_per_second: seen as f64 / wall,
            passes: counters.passes,
            qr: counters.qr,
            svd: counters.svd,
        };
        if opts.progress {
            println!(
                "epoch {epoch}/{}: test accuracy {:.2} %, test loss {test_loss:.4}, ranks {:?}, compression {:.1} % (low-rank layers) / {:.1} % (network), {wall:.1} s",
                t.epochs,
                100.0 * test_accuracy,
                record.ranks,
                100.0 * compression_low_rank,
                100.0 * compression_network
            );
        }
        writer.append(&record)?;
        records.push(record);
        plot::write_plots(&opts.run_dir, &records)?;
        state.epoch = epoch;
        state.counters = counters;
        checkpoint::save(&ckpt, &model, &state)?;
    }
    Ok(records)
}

pub(super) fn progress_bar(show: bool, len: u64, epoch: usize, epochs: usize) -> ProgressBar {
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
