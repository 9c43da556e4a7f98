//! [`finetune`]: adapter fine-tuning of a pretrained ViT, the same for every integrator.
//!
//! The loop of [`run`](super::run::run) with a frozen backbone: load it, put zero adapters on
//! the configured projections and a fresh head on the CLS features, then per epoch shuffle,
//! step through the batches (images resized to `backbone.image` on the fly), evaluate, record,
//! plot and checkpoint the adapters and the head.
//!
//! The per-epoch [`EpochRecord`] is the MNIST one, read for adapters: `ranks` are the adapters'
//! (by block, then query, key, value, …), `compression_low_rank` is 1 − adapter parameters /
//! parameters of the adapted projections (what the adapters save against fully fine-tuning
//! those projections), `compression_network` is 1 − trainable / backbone parameters, and
//! `params` counts the trainable parameters (adapters and head).

use std::time::Instant;

use burn::tensor::{backend::AutodiffBackend, ElementConversion, Int, Tensor, TensorData};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use super::metrics::{EpochRecord, MetricsWriter};
use super::run::{checkpoint_path, learning_rate, progress_bar, RunOptions};
use super::{plot, prepare, step};
use crate::checkpoint;
use crate::config::FinetuneConfig;
use crate::data::{self, images::rgb_batch, Dataset, Split};
use crate::models::mlp::{correct, cross_entropy};
use crate::models::{ViT, ViTClassifier};
use crate::{Error, Result};

/// Classes of MNIST and Fashion-MNIST.
const CLASSES: usize = 10;

fn batch<B: AutodiffBackend>(
    data: &Dataset,
    idx: &[usize],
    size: usize,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    let (pixels, labels) = rgb_batch(data, idx, size);
    let x = Tensor::from_data(TensorData::new(pixels, [idx.len(), 3, size, size]), device);
    let y = Tensor::from_data(TensorData::new(labels, [idx.len()]), device);
    (x, y)
}

/// Mean cross-entropy and accuracy of `model` on `data` at `size`×`size` pixels.
pub fn evaluate<B: AutodiffBackend>(
    model: &ViTClassifier<B>,
    data: &Dataset,
    size: usize,
    device: &B::Device,
) -> (f64, f64) {
    let (mut loss, mut hits) = (0.0, 0usize);
    let all: Vec<usize> = (0..data.len).collect();
    for idx in all.chunks(64) {
        let (x, y) = batch::<B>(data, idx, size, device);
        let logits = model.forward(x);
        let l: f64 = cross_entropy(logits.clone(), y.clone()).into_scalar().elem();
        loss += l * idx.len() as f64;
        hits += correct(logits, y);
    }
    (loss / data.len.max(1) as f64, hits as f64 / data.len.max(1) as f64)
}

/// 1 − adapter parameters / parameters of the projections they adapt.
fn adapter_compression<B: AutodiffBackend>(model: &ViTClassifier<B>) -> f64 {
    let (mut low, mut dense) = (0usize, 0usize);
    for (_, _, l) in model.backbone.adapters() {
        let (n, m, r) = (l.n(), l.m(), l.rank());
        low += r * (n + m) + r * r;
        dense += n * m;
    }
    1.0 - low as f64 / dense.max(1) as f64
}

/// Loads the backbone of `config`, fine-tunes adapters and a head on its data set, and returns
/// every epoch's record. A non-finite loss stops the run with an error; the checkpoint of the
/// last finished epoch stays as it was.
pub fn finetune<B: AutodiffBackend>(
    config: &FinetuneConfig,
    opts: &RunOptions,
    device: &B::Device,
) -> Result<Vec<EpochRecord>> {
    config.validate()?;
    if opts.resume {
        return Err(Error::Unsupported("resuming a fine-tuning run (start it again)".into()));
    }
    let (b, t) = (&config.backbone, &config.train);
    std::fs::create_dir_all(&opts.run_dir).map_err(|e| Error::io(&opts.run_dir, e))?;
    let mut train = data::load(t.dataset, Split::Train, &opts.data_dir)?;
    let mut test = data::load(t.dataset, Split::Test, &opts.data_dir)?;
    if t.train_subset > 0 {
        train.truncate(t.train_subset);
    }
    if t.test_subset > 0 {
        test.truncate(t.test_subset);
    }
    let backbone = ViT::<B>::load(&b.weights, b.config_json(), device)?;
    let patch = backbone.config().patch_size;
    if b.image < patch {
        return Err(Error::config("backbone.image", b.image, &format!("at least the patch size {patch}")));
    }
    let mut rng = StdRng::seed_from_u64(t.seed);
    let mut model = ViTClassifier::new(backbone, &b.targets, b.rank, CLASSES, &mut rng, device)?;
    let integrator = config.integrator.method.build::<B>(&config.integrator.truncation())?;
    prepare(&mut model, integrator.as_ref())?;
    let ckpt = checkpoint_path(&opts.run_dir);
    checkpoint::atomic_write(&opts.run_dir.join("config.toml"), config.to_toml().as_bytes())?;
    let mut writer = MetricsWriter::create(&opts.run_dir)?;
    if opts.progress {
        println!(
            "{}: {} adapters on {:?}, r0 = {}; trainable parameters {} = {:.2} % of the backbone's {}",
            config.integrator.method,
            model.ranks().len(),
            b.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
            b.rank,
            model.trainable_params(),
            100.0 * model.trainable_params() as f64 / model.backbone_params() as f64,
            model.backbone_params()
        );
    }
    let mut opt = config.optimizer.build()?;
    let full = train.len.div_ceil(t.batch_size);
    let per_epoch = if t.max_batches > 0 { full.min(t.max_batches) } else { full };
    let total_steps = (per_epoch * t.epochs) as u64;
    let (mut records, mut steps) = (Vec::new(), 0u64);

    for epoch in 1..=t.epochs {
        let mut order: Vec<usize> = (0..train.len).collect();
        order
            .shuffle(&mut StdRng::seed_from_u64(t.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let bar = progress_bar(opts.progress, per_epoch as u64, epoch, t.epochs);
        let (started, mut loss_sum, mut seen) = (Instant::now(), 0.0, 0usize);
        for (i, idx) in order.chunks(t.batch_size).take(per_epoch).enumerate() {
            opt.lr = learning_rate(&config.optimizer, steps, total_steps);
            let (x, y) = batch::<B>(&train, idx, b.image, device);
            let report = step(&mut model, integrator.as_ref(), &opt, |m| {
                cross_entropy(m.forward(x.clone()), y.clone())
            })
            .map_err(|e| match e {
                Error::NonFinite { context } => Error::NonFinite {
                    context: format!(
                        "{context} at epoch {epoch}, step {}: fine-tuning stopped; the last good checkpoint is {}",
                        steps + 1,
                        if epoch > 1 { ckpt.display().to_string() } else { "none (first epoch)".into() }
                    ),
                },
                other => other,
            })?;
            steps += 1;
            loss_sum += report.loss;
            seen += idx.len();
            bar.set_position(i as u64 + 1);
            bar.set_message(format!(
                "loss {:.4}  {:.1} images/s",
                loss_sum / (i + 1) as f64,
                seen as f64 / started.elapsed().as_secs_f64()
            ));
        }
        let wall = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let (test_loss, test_accuracy) = evaluate(&model, &test, b.image, device);
        let counters = integrator.counters().snapshot();
        let trainable = model.trainable_params();
        let record = EpochRecord {
            epoch,
            step: steps,
            train_loss: loss_sum / per_epoch.max(1) as f64,
            test_loss,
            test_accuracy,
            ranks: model.ranks(),
            compression_low_rank: adapter_compression(&model),
            compression_network: 1.0 - trainable as f64 / model.backbone_params().max(1) as f64,
            params: trainable,
            wall_seconds: wall,
            samples_per_second: seen as f64 / wall,
            passes: counters.passes,
            qr: counters.qr,
            svd: counters.svd,
        };
        if opts.progress {
            let ranks = &record.ranks;
            println!(
                "epoch {epoch}/{}: test accuracy {:.2} %, test loss {test_loss:.4}, adapter ranks {}..{} (mean {:.1}), trainable parameters {trainable}, {wall:.1} s",
                t.epochs,
                100.0 * test_accuracy,
                ranks.iter().min().unwrap_or(&0),
                ranks.iter().max().unwrap_or(&0),
                ranks.iter().sum::<usize>() as f64 / ranks.len().max(1) as f64,
            );
        }
        writer.append(&record)?;
        records.push(record);
        plot::write_plots(&opts.run_dir, &records)?;
        checkpoint::adapters::save(&ckpt, &model, config, epoch)?;
    }
    Ok(records)
}
