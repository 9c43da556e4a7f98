//! Command-line overrides of a config: [`Overrides`] for the values both kinds of run have,
//! [`FinetuneOverrides`] for the backbone and subsets of fine-tuning.
//!
//! Each field is `None` (keep the config's value) or the new value, and is also the clap
//! argument of `dlrt train` / `dlrt finetune` (its doc line is the `--help` text). Applying
//! overrides validates the result, so a bad value is named like a bad config key. A resumed
//! run may change only `train.epochs` (and not under a cosine schedule): anything else would not
//! continue the same run.

use std::path::PathBuf;

use super::{FinetuneConfig, IntegratorConfig, OptimizerSection, RunConfig, Schedule, TrainSection};
use crate::data::{DatasetName, DatasetSource, FolderSpec};
use crate::integrators::{BatchedUpdate, IntegratorKind};
use crate::layers::{Attention, Precision};
use crate::{Error, Result};

/// Overrides of the values `dlrt train` and `dlrt finetune` share; `None` keeps the config's.
#[derive(Clone, Debug, Default, PartialEq, clap::Args)]
pub struct Overrides {
    /// Override train.epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override train.seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override train.dataset with a built-in data set.
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetName>,
    /// Override train.dataset with an image folder (DIR/train/CLASS/*.png|jpg and
    /// DIR/test/CLASS/…; a folder the config names keeps its other keys).
    #[arg(long, value_name = "DIR", conflicts_with = "dataset")]
    pub data: Option<PathBuf>,
    /// Override train.dataset.test_fraction: the share of each class an image folder without
    /// train/ and test/ puts in the test split.
    #[arg(long, value_name = "F", conflicts_with = "dataset")]
    pub test_fraction: Option<f64>,
    /// Override integrator.method (`dense`: `train` only).
    #[arg(long, value_enum)]
    pub method: Option<IntegratorKind>,
    /// Override integrator.tol (ϑ).
    #[arg(long = "tau")]
    pub tol: Option<f64>,
    /// Override optimizer.lr (λ).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override optimizer.warmup_steps: steps of linear warm-up to λ before the schedule.
    #[arg(long, value_name = "N")]
    pub warmup_steps: Option<u64>,
    /// Override train.max_batches (batches per epoch; 0 = all).
    #[arg(long)]
    pub max_batches: Option<usize>,
    /// Override integrator.rank_bucket: pad the factors each pass multiplies with to widths
    /// that are multiples of N (few kernel shapes on a GPU; 1 = no padding).
    #[arg(long, value_name = "N", value_parser = parse_rank_bucket)]
    pub rank_bucket: Option<usize>,
    /// Override integrator.batched_update: auto (on a GPU with f32), on or off (the updates with
    /// decompositions one phase for all layers at once, the tall factors on the device).
    #[arg(long, value_parser = parse_name::<BatchedUpdate>)]
    pub batched_update: Option<BatchedUpdate>,
    /// Override model.precision (train) or backbone.precision (finetune): f32, or bf16
    /// (matrix products, or the frozen backbone, in bf16; trained parameters in f32).
    #[arg(long, value_parser = parse_name::<Precision>)]
    pub precision: Option<Precision>,
}

/// Overrides of `dlrt finetune`: the shared ones and those of the backbone and the subsets.
#[derive(Clone, Debug, Default, PartialEq, clap::Args)]
pub struct FinetuneOverrides {
    /// Override backbone.weights (HF model.safetensors, or its folder; config.json next to it
    /// unless the config names one).
    #[arg(long)]
    pub backbone: Option<PathBuf>,
    /// Override backbone.rank (r0).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Override backbone.image (pixels).
    #[arg(long)]
    pub image: Option<usize>,
    /// Override backbone.attention: explicit (scores, softmax, product) or fused (the backend's fused kernel).
    #[arg(long, value_parser = parse_name::<Attention>)]
    pub attention: Option<Attention>,
    /// Override train.train_subset (0 = all).
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Override train.test_subset (0 = all).
    #[arg(long)]
    pub test_subset: Option<usize>,
    /// Override backbone.init_adapters: start from the peft LoRA adapter in DIR
    /// (adapter_config.json + adapter_model.safetensors), truncated at integrator.tol.
    #[arg(long, value_name = "DIR")]
    pub init_adapters: Option<PathBuf>,
    /// The overrides `dlrt train` has too.
    #[command(flatten)]
    pub common: Overrides,
}

/// A clap value parser from `FromStr`, with dlrt's error text (it lists the valid names).
pub fn parse_name<T: std::str::FromStr<Err = Error>>(s: &str) -> std::result::Result<T, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

/// A clap value parser for `--rank-bucket`: an integer ≥ 1.
pub fn parse_rank_bucket(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(b) if b >= 1 => Ok(b),
        _ => Err(format!("expected a rank bucket ≥ 1 (1: no padding), got {s:?}")),
    }
}

/// `*slot = value` if there is a value.
fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *slot = v.clone();
    }
}

impl Overrides {
    /// The config keys these overrides change, with their new values, in field order.
    pub fn keys(&self) -> Vec<(&'static str, String)> {
        let show = |v: Option<String>, key| v.map(|v| (key, v));
        [
            show(self.epochs.map(|v| v.to_string()), "train.epochs"),
            show(self.seed.map(|v| v.to_string()), "train.seed"),
            show(self.dataset.map(|v| v.to_string()), "train.dataset"),
            show(self.data.as_ref().map(|v| v.display().to_string()), "train.dataset"),
            show(self.test_fraction.map(|v| v.to_string()), "train.dataset.test_fraction"),
            show(self.method.map(|v| v.to_string()), "integrator.method"),
            show(self.tol.map(|v| v.to_string()), "integrator.tol"),
            show(self.lr.map(|v| v.to_string()), "optimizer.lr"),
            show(self.warmup_steps.map(|v| v.to_string()), "optimizer.warmup_steps"),
            show(self.max_batches.map(|v| v.to_string()), "train.max_batches"),
            show(self.rank_bucket.map(|v| v.to_string()), "integrator.rank_bucket"),
            show(self.batched_update.map(|v| v.to_string()), "integrator.batched_update"),
            show(self.precision.map(|v| v.to_string()), "model.precision"),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The data set these overrides choose, given the config's `current` one.
    fn dataset(&self, current: &DatasetSource) -> Result<Option<DatasetSource>> {
        let mut spec = match (&self.data, current) {
            (Some(path), DatasetSource::Folder(spec)) => FolderSpec { path: path.clone(), ..spec.clone() },
            (Some(path), DatasetSource::Named(_)) => FolderSpec::new(path.clone()),
            (None, DatasetSource::Folder(spec)) if self.test_fraction.is_some() => spec.clone(),
            (None, _) if self.test_fraction.is_some() => {
                let expected = "an image folder to split (--data DIR, or a folder in train.dataset)";
                return Err(Error::config(
                    "--test-fraction",
                    self.test_fraction.unwrap_or_default(),
                    expected,
                ));
            }
            (None, _) => return Ok(self.dataset.map(DatasetSource::Named)),
        };
        if self.test_fraction.is_some() {
            spec.test_fraction = self.test_fraction;
        }
        Ok(Some(DatasetSource::Folder(spec)))
    }

    /// Sets the keys both commands share.
    fn apply_to(
        &self,
        t: &mut TrainSection,
        integrator: &mut IntegratorConfig,
        optimizer: &mut OptimizerSection,
    ) -> Result<()> {
        set(&mut t.epochs, &self.epochs);
        set(&mut t.seed, &self.seed);
        let dataset = self.dataset(&t.dataset)?;
        set(&mut t.dataset, &dataset);
        set(&mut t.max_batches, &self.max_batches);
        set(&mut integrator.method, &self.method);
        set(&mut integrator.tol, &self.tol);
        set(&mut integrator.rank_bucket, &self.rank_bucket);
        set(&mut integrator.batched_update, &self.batched_update);
        set(&mut optimizer.lr, &self.lr);
        set(&mut optimizer.warmup_steps, &self.warmup_steps);
        Ok(())
    }
}

impl RunConfig {
    /// Applies `overrides` and validates the result; on an error the config is unchanged.
    pub fn apply(&mut self, overrides: &Overrides) -> Result<()> {
        let mut cfg = self.clone();
        overrides.apply_to(&mut cfg.train, &mut cfg.integrator, &mut cfg.optimizer)?;
        set(&mut cfg.model.precision, &overrides.precision);
        cfg.validate()?;
        *self = cfg;
        Ok(())
    }

    /// Applies `overrides` to the config of a run being resumed: only `train.epochs` may
    /// change, and not under a cosine schedule; any other override is an error naming its key.
    pub fn apply_on_resume(&mut self, overrides: &Overrides) -> Result<()> {
        if let Some((key, value)) = overrides.keys().into_iter().find(|(key, _)| *key != "train.epochs") {
            return Err(Error::config(
                key,
                value,
                "the checkpoint's value: only train.epochs may change when resuming a run",
            ));
        }
        // A cosine schedule decays λ to 0 over the epochs the run was started with: continued to
        // another count, λ would jump back up, which no uninterrupted run does.
        let planned = self.train.epochs;
        if let Some(epochs) = overrides.epochs.filter(|&e| e != planned) {
            if self.optimizer.schedule == Schedule::Cosine {
                return Err(Error::config(
                    "train.epochs",
                    epochs,
                    &format!(
                        "the checkpoint's {planned}: this run's cosine schedule decays λ to 0 over its {planned} \
                         planned epochs, so continuing it to {epochs} would not give the numbers of a \
                         {epochs}-epoch run (start a new run with --epochs {epochs})"
                    ),
                ));
            }
        }
        self.apply(overrides)
    }
}

impl FinetuneConfig {
    /// Applies `overrides` and validates the result; on an error the config is unchanged.
    pub fn apply(&mut self, overrides: &FinetuneOverrides) -> Result<()> {
        let (o, mut cfg) = (overrides, self.clone());
        let (b, t) = (&mut cfg.backbone, &mut cfg.train);
        if let Some(weights) = &o.backbone {
            b.weights = Some(weights.clone());
        }
        set(&mut b.rank, &o.rank);
        set(&mut b.image, &o.image);
        set(&mut b.precision, &o.common.precision);
        set(&mut b.attention, &o.attention);
        set(&mut t.train_subset, &o.train_subset);
        set(&mut t.test_subset, &o.test_subset);
        if let Some(dir) = &o.init_adapters {
            b.init_adapters = Some(dir.clone());
        }
        o.common.apply_to(t, &mut cfg.integrator, &mut cfg.optimizer)?;
        cfg.validate()?;
        *self = cfg;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_exactly_their_keys() {
        let mut cfg = RunConfig::paper_mnist();
        cfg.apply(&Overrides::default()).unwrap();
        assert_eq!(cfg, RunConfig::paper_mnist());
        let o = Overrides {
            epochs: Some(7),
            seed: Some(3),
            dataset: Some(DatasetName::FashionMnist),
            data: None,
            test_fraction: None,
            method: Some(IntegratorKind::Bug),
            tol: Some(0.2),
            lr: Some(0.5),
            warmup_steps: Some(40),
            max_batches: Some(10),
            rank_bucket: Some(8),
            batched_update: Some(BatchedUpdate::Off),
            precision: Some(Precision::Bf16),
        };
        cfg.apply(&o).unwrap();
        let mut expected = RunConfig::paper_mnist();
        (expected.train.epochs, expected.train.seed, expected.train.max_batches) = (7, 3, 10);
        expected.train.dataset = DatasetName::FashionMnist.into();
        (expected.integrator.method, expected.integrator.tol, expected.optimizer.lr) =
            (IntegratorKind::Bug, 0.2, 0.5);
        expected.optimizer.warmup_steps = 40;
        (expected.integrator.rank_bucket, expected.integrator.batched_update) = (8, BatchedUpdate::Off);
        expected.model.precision = Precision::Bf16;
        assert_eq!(cfg, expected);
        assert_eq!(o.keys().len(), 11);
        // --data makes the data set a folder, keeping the keys of a folder the config names.
        cfg.apply(&Overrides { data: Some("imgs".into()), ..Default::default() }).unwrap();
        assert_eq!(cfg.train.dataset, DatasetSource::Folder(FolderSpec::new("imgs")));
        cfg.train.dataset =
            DatasetSource::Folder(FolderSpec { test_fraction: Some(0.25), ..FolderSpec::new("a") });
        cfg.apply(&Overrides { data: Some("b".into()), ..Default::default() }).unwrap();
        let expected = FolderSpec { test_fraction: Some(0.25), ..FolderSpec::new("b") };
        assert_eq!(cfg.train.dataset, DatasetSource::Folder(expected));
        // --test-fraction sets the split of the folder, given or named; a built-in data set has
        // none to split.
        cfg.apply(&Overrides { data: Some("c".into()), test_fraction: Some(0.1), ..Default::default() })
            .unwrap();
        let expected = FolderSpec { test_fraction: Some(0.1), ..FolderSpec::new("c") };
        assert_eq!(cfg.train.dataset, DatasetSource::Folder(expected));
        cfg.apply(&Overrides { test_fraction: Some(0.3), ..Default::default() }).unwrap();
        let expected = FolderSpec { test_fraction: Some(0.3), ..FolderSpec::new("c") };
        assert_eq!(cfg.train.dataset, DatasetSource::Folder(expected));
        let mut mnist = RunConfig::paper_mnist();
        let err = mnist.apply(&Overrides { test_fraction: Some(0.3), ..Default::default() }).unwrap_err();
        assert!(
            err.to_string().contains("--test-fraction") && err.to_string().contains("--data DIR"),
            "{err}"
        );
        assert_eq!(mnist, RunConfig::paper_mnist());
    }

    #[test]
    fn a_bad_override_is_named_like_a_bad_key() {
        let mut cfg = RunConfig::paper_mnist();
        let err = cfg.apply(&Overrides { tol: Some(1.5), ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains("integrator.tol") && err.contains("1.5"), "{err}");
        assert_eq!(cfg, RunConfig::paper_mnist(), "a failed apply changes nothing");
        let err = cfg.apply(&Overrides { epochs: Some(0), ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains("train.epochs"), "{err}");
    }

    #[test]
    fn the_rank_bucket_flag_takes_integers_from_one() {
        assert_eq!(parse_rank_bucket("8"), Ok(8));
        for bad in ["0", "-1", "eight"] {
            let err = parse_rank_bucket(bad).unwrap_err();
            assert!(err.contains("rank bucket ≥ 1") && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn a_resumed_run_may_change_only_its_epochs() {
        let mut cfg = RunConfig::paper_mnist();
        cfg.apply_on_resume(&Overrides { epochs: Some(5), ..Default::default() }).unwrap();
        assert_eq!(cfg.train.epochs, 5);
        for o in [
            Overrides { seed: Some(1), ..Default::default() },
            Overrides { epochs: Some(6), lr: Some(0.1), ..Default::default() },
            Overrides { max_batches: Some(3), ..Default::default() },
            Overrides { rank_bucket: Some(8), ..Default::default() },
            Overrides { warmup_steps: Some(8), ..Default::default() },
            Overrides { batched_update: Some(BatchedUpdate::On), ..Default::default() },
            Overrides { precision: Some(Precision::Bf16), ..Default::default() },
            Overrides { test_fraction: Some(0.2), ..Default::default() },
            Overrides { data: Some("imgs".into()), ..Default::default() },
            Overrides { method: Some(IntegratorKind::Bug), ..Default::default() },
        ] {
            let err = cfg.clone().apply_on_resume(&o).unwrap_err().to_string();
            let key = o.keys().into_iter().find(|(k, _)| *k != "train.epochs").unwrap().0;
            assert!(err.contains(key) && err.contains("only train.epochs"), "{err}");
        }
        // Under a cosine schedule the epochs stay too (restating them is fine): λ's decay is
        // planned over them.
        let mut cosine = RunConfig::paper_mnist();
        cosine.optimizer.schedule = Schedule::Cosine;
        let err = cosine.clone().apply_on_resume(&Overrides { epochs: Some(5), ..Default::default() });
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("train.epochs") && err.contains("cosine") && err.contains("--epochs 5"),
            "{err}"
        );
        let planned = cosine.train.epochs;
        cosine.apply_on_resume(&Overrides { epochs: Some(planned), ..Default::default() }).unwrap();
    }

    #[test]
    fn finetune_overrides_reach_every_section() {
        let weights = PathBuf::from("w/model.safetensors");
        let mut cfg = FinetuneConfig::paper_vit(weights, IntegratorKind::AbcPsi);
        let o = FinetuneOverrides {
            backbone: Some("b/model.safetensors".into()),
            rank: Some(8),
            image: Some(28),
            attention: Some(Attention::Explicit),
            train_subset: Some(100),
            test_subset: Some(50),
            init_adapters: Some("lora".into()),
            common: Overrides {
                method: Some(IntegratorKind::Lora),
                lr: Some(0.01),
                rank_bucket: Some(4),
                precision: Some(Precision::Bf16),
                ..Default::default()
            },
        };
        cfg.apply(&o).unwrap();
        assert_eq!(cfg.backbone.weights, Some(PathBuf::from("b/model.safetensors")));
        assert_eq!((cfg.backbone.rank, cfg.backbone.image), (8, 28));
        assert_eq!((cfg.backbone.precision, cfg.backbone.attention), (Precision::Bf16, Attention::Explicit));
        assert_eq!((cfg.train.train_subset, cfg.train.test_subset), (100, 50));
        assert_eq!(cfg.backbone.init_adapters, Some(PathBuf::from("lora")));
        assert_eq!((cfg.integrator.method, cfg.optimizer.lr), (IntegratorKind::Lora, 0.01));
        assert_eq!(cfg.integrator.rank_bucket, 4);
        let err = cfg.apply(&FinetuneOverrides { rank: Some(0), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("backbone.rank"), "{err}");
    }
}
