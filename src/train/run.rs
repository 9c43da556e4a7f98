//! [`run`]: training an MLP from scratch on MNIST or Fashion-MNIST (what `dlrt train` does).
//!
//! Sets the run up (data, model or checkpoint, trainer, metrics files) and hands it to
//! [`fit`]; each epoch's checkpoint holds the network, the optimizer state and the counters,
//! so `resume` continues a run bit for bit.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use rand::{rngs::StdRng, SeedableRng};

use super::fit::{checkpoint_path, default_run_dir, fit, Plan, RunOptions, Start};
use super::metrics::{EpochRecord, MetricsWriter};
use super::Trainer;
use crate::checkpoint::{self, RunState};
use crate::config::{Overrides, RunConfig};
use crate::data::{self, ImageFormat, Split};
use crate::io::atomic_write;
use crate::models::Mlp;
use crate::{Error, Result};

/// The config and run folder of `dlrt train`: a new run's config file with `overrides` (its
/// folder `out`, or [`default_run_dir`]), or a resumed run's checkpoint config, where only
/// the epochs may change.
pub fn run_config(
    config: Option<&Path>,
    resume: Option<&Path>,
    overrides: &Overrides,
    out: Option<PathBuf>,
) -> Result<(RunConfig, PathBuf)> {
    match (resume, config) {
        (Some(dir), _) => {
            let mut cfg = checkpoint::load_config(&checkpoint_path(dir))?;
            cfg.apply_on_resume(overrides)?;
            Ok((cfg, dir.to_path_buf()))
        }
        (None, Some(path)) => {
            let mut cfg = RunConfig::load(path)?;
            cfg.apply(overrides)?;
            Ok((cfg, out.unwrap_or_else(|| default_run_dir(path))))
        }
        (None, None) => Err(Error::config("config", "none", "a config file or --resume RUN_DIR")),
    }
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
    let t = &config.train;
    std::fs::create_dir_all(&opts.run_dir).map_err(|e| Error::io(&opts.run_dir, e))?;
    let ckpt = checkpoint_path(&opts.run_dir);
    data::fetch::ensure(t.dataset, &opts.data_dir, &mut opts.log())?;
    let mut train = data::load(t.dataset, Split::Train, &opts.data_dir)?;
    if t.train_subset > 0 {
        train.truncate(t.train_subset);
    }
    let test = data::load(t.dataset, Split::Test, &opts.data_dir)?;
    let opt = config.optimizer.build()?;
    let mut trainer = Trainer::new(config.integrator.method, &config.integrator.truncation(), opt)?;
    let (mut model, start, mut writer) = if opts.resume {
        let (model, train_state, state) = checkpoint::load::<B>(&ckpt, device)?;
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
        trainer = trainer.resume(train_state, state.counters);
        (model, Start { epoch: state.epoch, step: state.step, records }, writer)
    } else {
        let mut rng = StdRng::seed_from_u64(t.seed);
        let (m, widths) = (&config.model, config.dataset_widths());
        let mut model =
            Mlp::new(&widths, &config.low_rank_flags()?, m.rank, m.init, m.init_gain, &mut rng, device)?;
        trainer.prepare(&mut model)?;
        (model, Start::default(), MetricsWriter::create(&opts.run_dir)?)
    };
    atomic_write(&opts.run_dir.join("config.toml"), config.to_toml().as_bytes())?;
    let plan = Plan {
        epochs: t.epochs,
        batch_size: t.batch_size,
        max_batches: t.max_batches,
        seed: t.seed,
        lr: config.optimizer.lr,
        schedule: config.optimizer.schedule,
        format: ImageFormat::AsStored,
        eval_batch: 1000,
    };
    let save = |model: &Mlp<B>, trainer: &Trainer<B>, epoch, step| {
        let state = RunState { config: config.clone(), epoch, step, counters: trainer.counters() };
        checkpoint::save(&ckpt, model, &trainer.state, &state)
    };
    fit(&mut model, &mut trainer, (&train, &test), &plan, opts, start, &mut writer, save, device)
}
