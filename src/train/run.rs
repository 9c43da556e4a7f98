//! [`run`]: training an MLP from scratch on MNIST, Fashion-MNIST or an image folder (what
//! `dlrt train` does).
//!
//! Sets the run up (data, model or checkpoint, trainer, metrics files) and hands it to
//! [`fit`]; each epoch's checkpoint holds the network, the optimizer state and the counters,
//! so `resume` continues a run bit for bit.

use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use rand::{rngs::StdRng, SeedableRng};

use super::fit::{checkpoint_path, default_run_dir, fit, load_data, start_run_dir, Plan, RunOptions, Start};
use super::metrics::{EpochRecord, MetricsWriter};
use super::Trainer;
use crate::checkpoint::{self, RunState};
use crate::config::{ModelKind, Overrides, RunConfig};
use crate::data::ImageFormat;
use crate::io::atomic_write;
use crate::models::{LeNet5, Mlp, Net};
use crate::{Error, Result};

/// Images per evaluation batch.
pub const EVAL_BATCH: usize = 1000;

/// The config and run folder of `dlrt train`: a new run's config file with `overrides` (and
/// [`default_run_dir`]), or a resumed run's checkpoint config, where only the epochs may
/// change, and its folder.
pub fn run_config(
    config: Option<&Path>,
    resume: Option<&Path>,
    overrides: &Overrides,
) -> Result<(RunConfig, PathBuf)> {
    match (resume, config) {
        (Some(dir), Some(path)) => Err(Error::config(
            "config",
            path.display(),
            &format!(
                "no config file with --resume {} (a resumed run keeps its checkpoint's config; only --epochs may change)",
                dir.display()
            ),
        )),
        (Some(dir), None) => {
            if !checkpoint_path(dir).is_file() {
                let expected = "the folder of a `dlrt train` run, holding its checkpoint.safetensors";
                return Err(Error::config("--resume", dir.display(), expected));
            }
            if crate::checkpoint::adapters::is_adapter_checkpoint(&checkpoint_path(dir))? {
                let what = format!("--resume {}: resuming a fine-tuning run (start it again)", dir.display());
                return Err(Error::Unsupported(what));
            }
            let mut cfg = checkpoint::load_config(&checkpoint_path(dir))?;
            cfg.apply_on_resume(overrides)?;
            Ok((cfg, dir.to_path_buf()))
        }
        (None, Some(path)) => {
            let mut cfg = RunConfig::load(path)?;
            cfg.apply(overrides)?;
            Ok((cfg, default_run_dir(path)))
        }
        (None, None) => Err(Error::config("config", "none", "a config file or --resume RUN_DIR")),
    }
}

/// The untrained network of `config` for a data set of `[C, H, W]` images and `classes`
/// classes, low-rank where the config says, initialised from `rng`: the MLP (`C·H·W` inputs,
/// the hidden widths, `classes` outputs) or LeNet-5, computing in the config's precision.
pub fn new_model<B: Backend>(
    config: &RunConfig,
    (image, classes): ([usize; 3], usize),
    rng: &mut StdRng,
    device: &B::Device,
) -> Result<Net<B>> {
    let m = &config.model;
    let flags = config.low_rank_flags()?;
    let mut net = match m.kind {
        ModelKind::Mlp => {
            let widths = config.widths(image.iter().product(), classes);
            Net::Mlp(Mlp::new(&widths, &flags, m.rank, m.init, m.init_gain, rng, device)?)
        }
        ModelKind::LeNet5 => {
            Net::LeNet5(LeNet5::new(image, classes, &flags, m.rank, m.init_gain, rng, device)?)
        }
    };
    net.set_precision(m.precision);
    Ok(net)
}

/// Trains (or resumes) the run described by `config`, fetching its data set if it is missing;
/// returns every epoch's record.
///
/// On resume the network, the optimizer state and the counters come from the checkpoint, and
/// `config` must equal the checkpoint's config except for `train.epochs`.
pub fn run<B: AutodiffBackend>(
    config: &RunConfig,
    opts: &RunOptions,
    device: &B::Device,
) -> Result<Vec<EpochRecord>> {
    config.validate()?;
    // Written to the run folder; an error (a path that is not UTF-8) comes before any work.
    let config_toml = config.to_toml()?;
    let t = &config.train;
    std::fs::create_dir_all(&opts.run_dir).map_err(|e| Error::io(&opts.run_dir, e))?;
    let ckpt = checkpoint_path(&opts.run_dir);
    let (train, test) = load_data(t, opts)?;
    let opt = config.optimizer.build()?;
    let mut trainer = Trainer::from_integrator(config.integrator.build()?, opt)?
        .with_rank_bucket(config.integrator.rank_bucket)?;
    let (mut model, start, mut writer) = if opts.resume {
        let (model, train_state, state) = checkpoint::load::<B>(&ckpt, device)?;
        if (state.inputs, &state.labels) != (train.features(), &train.classes) {
            return Err(Error::config(
                "train.dataset",
                &t.dataset,
                &format!("images of the checkpoint's size and classes {:?}", state.labels),
            ));
        }
        if t.epochs < state.epoch {
            return Err(Error::config(
                "train.epochs",
                t.epochs,
                &format!("at least the {} epochs the checkpoint {} has done", state.epoch, ckpt.display()),
            ));
        }
        let mut same = state.config.clone();
        same.train.epochs = t.epochs;
        if &same != config {
            return Err(Error::config(
                "config",
                ckpt.display(),
                "the checkpoint's config (only train.epochs may change on resume)",
            ));
        }
        let (writer, records) = MetricsWriter::resume(&opts.run_dir, state.epoch, state.step)?;
        trainer = trainer.resume(train_state, state.counters);
        (model, Start { epoch: state.epoch, step: state.step, records }, writer)
    } else {
        let shape = ([train.channels, train.rows, train.cols], train.classes.len());
        let mut model = new_model(config, shape, &mut StdRng::seed_from_u64(t.seed), device)?;
        trainer.prepare(&mut model)?;
        let mut writer = MetricsWriter::create(&opts.run_dir);
        start_run_dir(&opts.run_dir, &config_toml, &mut writer)?;
        (model, Start::default(), writer)
    };
    let plan = Plan::new(t, &config.optimizer, ImageFormat::AsStored, EVAL_BATCH);
    let save = |model: &Net<B>, trainer: &Trainer<B>, epoch, step| {
        let (inputs, labels) = (train.features(), train.classes.clone());
        let image = [train.channels, train.rows, train.cols];
        let counters = trainer.counters();
        let state = RunState { config: config.clone(), epoch, step, counters, inputs, image, labels };
        // The run folder's files change only from the first epoch's end on (`fit`).
        atomic_write(&opts.run_dir.join("config.toml"), config_toml.as_bytes())?;
        checkpoint::save(&ckpt, model, &trainer.state, &state)
    };
    fit(&mut model, &mut trainer, (&train, &test), &plan, opts, start, &mut writer, save, device)
}
