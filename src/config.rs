//! `RunConfig`: everything a training run needs, read from TOML.
//!
//! Sections mirror the components: `[model]`, `[integrator]`, `[optimizer]`, `[train]`.
//! Unknown keys are errors that name the key (`deny_unknown_fields`), and [`RunConfig::validate`]
//! names the field and the value of anything out of range. Every shipped preset lives in
//! `configs/*.toml`; [`RunConfig::paper_mnist`] is the seed paper's MNIST setting in code.
//! [`FinetuneConfig`] (in [`finetune`]) is the same for adapter fine-tuning of a ViT; the
//! `[optimizer]` section of both is [`OptimizerSection`] (in [`optimizer`]), and
//! [`Overrides`] (in [`overrides`]) are the command line's changes to either.
//!
//! The MLP's input and output widths are not in the config: they come from the data set
//! ([`RunConfig::widths`]), so `[model] hidden` lists only the hidden layers.

pub mod finetune;
pub mod optimizer;
pub mod overrides;

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::data::{DatasetName, DatasetSource};
use crate::integrators::{BatchedUpdate, Integrator, IntegratorKind};
use crate::layers::{Init, Precision};
use crate::linalg::TruncationConfig;
use crate::{Error, Result};

/// The widest MLP hidden layer: a 16 384 × 16 384 layer alone is 1 GiB in f32, so wider ones
/// are typos rather than models, and would exhaust memory.
pub const MAX_WIDTH: usize = 16_384;

pub use finetune::FinetuneConfig;
pub use optimizer::{OptimizerSection, Schedule};
pub use overrides::{FinetuneOverrides, Overrides};

/// Which layers of the MLP are low-rank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LowRankLayers {
    /// `"hidden"`: every layer but the output layer (the paper's choice); `"none"`: all dense.
    Named(String),
    /// One flag per layer.
    Flags(Vec<bool>),
}

/// Which network `[model]` describes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum ModelKind {
    /// `"mlp"`: the MLP of `hidden` widths.
    #[default]
    #[serde(rename = "mlp")]
    #[value(name = "mlp")]
    Mlp,
    /// `"lenet5"`: LeNet-5 as DLRT-Net benchmarks it (conv 20, conv 50, 500, classes; see
    /// `models::lenet5`), whose layers are fixed.
    #[serde(rename = "lenet5")]
    #[value(name = "lenet5")]
    LeNet5,
}

impl ModelKind {
    fn is_mlp(&self) -> bool {
        *self == ModelKind::Mlp
    }
}

/// The network: by default an MLP `inputs → hidden[0] → … → hidden[last] → classes` with ReLU
/// between layers, its inputs and classes those of the data set ([`RunConfig::widths`]); or
/// LeNet-5 (`kind = "lenet5"`), whose four layers are fixed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `"mlp"` (the default) or `"lenet5"`.
    #[serde(default, skip_serializing_if = "ModelKind::is_mlp")]
    pub kind: ModelKind,
    /// Widths of the MLP's hidden layers: `[500, 500]` for the paper's 784-500-500-10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<usize>,
    /// Which layers are low-rank (`"hidden"`: all but the output layer, `"none"`, or one flag
    /// per layer, the output layer included: `hidden.len() + 1` flags for the MLP, 4 for
    /// LeNet-5).
    #[serde(default = "default_low_rank")]
    pub low_rank: LowRankLayers,
    /// Initial rank r0 of each low-rank layer (clamped to min(n, m) in the MLP, to
    /// ⌊min(n, m)/2⌋ in LeNet-5, whose augmented bases need room for 2r).
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// Initialisation: `"he"` (variance-preserving, uses `init_gain`) or `"reference"` (the
    /// authors' unscaled N(0, 1), which the paper's numbers need); see [`Init`].
    #[serde(default)]
    pub init: Init,
    /// He gain: factors with ‖W‖_F² = gain²·m, dense entries N(0, gain²/n); √2 is He init.
    #[serde(default = "default_gain")]
    pub init_gain: f64,
    /// `"f32"` (the default) or `"bf16"`: every layer's products (convolutions included) in
    /// bf16, autocast style; parameters, optimizer state, loss and host linear algebra stay
    /// f32 ([`Precision`]).
    #[serde(default, skip_serializing_if = "is_f32")]
    pub precision: Precision,
}

fn is_f32(p: &Precision) -> bool {
    *p == Precision::F32
}

fn default_low_rank() -> LowRankLayers {
    LowRankLayers::Named("hidden".into())
}
fn default_rank() -> usize {
    20
}
fn default_gain() -> f64 {
    std::f64::consts::SQRT_2
}

// The truncation keys repeat `TruncationConfig`'s fields on purpose: serde's `flatten`
// does not work together with `deny_unknown_fields`, and unknown keys must be errors.
/// The integrator and its truncation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegratorConfig {
    /// Which method (`abc_psi`, `abc_psi_one_pass`, `bc_psi`, `psi`, `bug`, `parallel_bug`,
    /// `lora`, `dense`).
    pub method: IntegratorKind,
    /// ϑ, the truncation tolerance of the rank-adaptive methods (relative unless `absolute`).
    #[serde(default = "default_tol")]
    pub tol: f64,
    /// Read `tol` as an absolute bound.
    #[serde(default)]
    pub absolute: bool,
    /// Smallest rank the truncation may choose.
    #[serde(default = "default_r_min")]
    pub r_min: usize,
    /// Largest rank (default: min(n, m) of each layer).
    #[serde(default)]
    pub r_max: Option<usize>,
    /// Rank bucket b: each pass multiplies with the factors zero-padded to widths that are
    /// multiples of b, so a GPU compiles kernels for few shapes while ranks change; the maths
    /// is unchanged. 1 (the default) pads nothing.
    #[serde(default = "default_rank_bucket", skip_serializing_if = "is_one")]
    pub rank_bucket: usize,
    /// `"auto"` (the default: on a GPU with f32), `"on"` (`true`) or `"off"` (`false`): whether
    /// the updates with decompositions run one phase for all layers at once with the tall
    /// factors on the device ([`BatchedUpdate`]); the step is the same to round-off.
    #[serde(default, skip_serializing_if = "is_auto")]
    pub batched_update: BatchedUpdate,
}

fn is_auto(b: &BatchedUpdate) -> bool {
    *b == BatchedUpdate::Auto
}

fn default_tol() -> f64 {
    0.01
}
fn default_r_min() -> usize {
    1
}
fn default_rank_bucket() -> usize {
    1
}
fn is_one(b: &usize) -> bool {
    *b == 1
}

impl IntegratorConfig {
    /// The truncation rule these values describe.
    pub fn truncation(&self) -> TruncationConfig {
        TruncationConfig { tol: self.tol, absolute: self.absolute, r_min: self.r_min, r_max: self.r_max }
    }

    /// The integrator these values describe, or `None` for dense training (its truncation
    /// checked by [`IntegratorKind::build`]; the rest by [`Self::validate`], with the config).
    pub fn build<B: AutodiffBackend>(&self) -> Result<Option<Box<dyn Integrator<B>>>> {
        self.method.build(&self.truncation(), self.batched_update)
    }

    /// Checks the truncation and the rank bucket; errors name `integrator.<key>`.
    pub fn validate(&self) -> Result<()> {
        self.truncation().validate().map_err(|e| prefix(e, "integrator."))?;
        toml_integer("integrator.rank_bucket", self.rank_bucket)?;
        toml_integer("integrator.r_min", self.r_min)?;
        toml_integer("integrator.r_max", self.r_max.unwrap_or(0))?;
        if self.rank_bucket == 0 {
            return Err(Error::config(
                "integrator.rank_bucket",
                self.rank_bucket,
                "a rank bucket ≥ 1 (1: no padding)",
            ));
        }
        Ok(())
    }
}

/// The training loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Which data set: `"mnist"`, `"fashion_mnist"` or an image folder,
    /// `{ path = "DIR", test_fraction = 0.2, split_seed = 0, image_size = 32 }` (see
    /// [`crate::data::folder`]).
    #[serde(default = "default_dataset")]
    pub dataset: DatasetSource,
    /// Batch size.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Number of epochs.
    pub epochs: usize,
    /// Seed of the initialisation and the shuffling.
    #[serde(default)]
    pub seed: u64,
    /// Train on the first `train_subset` examples only (0 = all).
    #[serde(default)]
    pub train_subset: usize,
    /// Evaluate on the first `test_subset` test images only (0 = all 10 000).
    #[serde(default)]
    pub test_subset: usize,
    /// Stop each epoch after this many batches (0 = a full epoch); for quick checks.
    #[serde(default)]
    pub max_batches: usize,
}

fn default_dataset() -> DatasetSource {
    DatasetSource::Named(DatasetName::Mnist)
}

impl TrainSection {
    /// The MLP's input width and number of classes when they are known without reading any
    /// images (a built-in data set); an image folder's come from its images.
    pub fn known_shape(&self) -> Option<(usize, usize)> {
        match &self.dataset {
            DatasetSource::Named(d) => Some((d.features(), d.classes())),
            DatasetSource::Folder(_) => None,
        }
    }

    /// Checks the values of the section (names the key and the value).
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::config("train.batch_size", self.batch_size, "at least 1"));
        }
        if self.epochs == 0 {
            return Err(Error::config("train.epochs", self.epochs, "at least 1"));
        }
        if i64::try_from(self.seed).is_err() {
            return Err(Error::config("train.seed", self.seed, &format!("a seed from 0 to {}", i64::MAX)));
        }
        let counts = [
            ("train.batch_size", self.batch_size),
            ("train.epochs", self.epochs),
            ("train.train_subset", self.train_subset),
            ("train.test_subset", self.test_subset),
            ("train.max_batches", self.max_batches),
        ];
        for (field, value) in counts {
            toml_integer(field, value)?;
        }
        self.dataset.validate()
    }
}
fn default_batch() -> usize {
    64
}

/// A whole training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The network.
    pub model: ModelConfig,
    /// The integrator.
    pub integrator: IntegratorConfig,
    /// The optimizer.
    pub optimizer: OptimizerSection,
    /// The loop.
    pub train: TrainSection,
}

impl RunConfig {
    /// The seed paper's MNIST experiment: 784-500-500-10, hidden layers low-rank, abc-PSI,
    /// plain SGD λ = 0.01, batch 64, r0 = 20, ϑ = 0.01, 3 epochs, the authors' initialisation.
    pub fn paper_mnist() -> Self {
        Self::paper_mnist_with(IntegratorKind::AbcPsi)
    }

    /// [`RunConfig::paper_mnist`] with another method. Plain factorization and dense training
    /// start from the He init: from the authors' unscaled N(0, 1) they diverge at SGD λ = 0.01
    /// (NaN within 10 steps), while the integrators' rank growth needs it.
    pub fn paper_mnist_with(method: IntegratorKind) -> Self {
        let init = match method {
            IntegratorKind::Lora | IntegratorKind::Dense => Init::He,
            _ => Init::Reference,
        };
        RunConfig {
            model: ModelConfig {
                kind: ModelKind::Mlp,
                hidden: vec![500, 500],
                low_rank: default_low_rank(),
                rank: 20,
                init,
                init_gain: default_gain(),
                precision: Precision::F32,
            },
            integrator: IntegratorConfig {
                method,
                tol: 0.01,
                absolute: false,
                r_min: 1,
                r_max: None,
                rank_bucket: 1,
                batched_update: BatchedUpdate::Auto,
            },
            optimizer: OptimizerSection::sgd(0.01),
            train: TrainSection {
                dataset: DatasetName::Mnist.into(),
                batch_size: 64,
                epochs: 3,
                seed: 0,
                train_subset: 0,
                test_subset: 0,
                max_batches: 0,
            },
        }
    }

    /// LeNet-5 (DLRT-Net's benchmark, `models::lenet5`) on MNIST with `method`, as the shipped
    /// `configs/lenet5_<method>.toml`: every layer but the last low-rank, r0 = 20 (conv1 starts
    /// at 10, half its size), ϑ = 0.01, r_max = 40 (which keeps the low-rank layers ≥ 80 %
    /// compressed), He init, AdamW λ = 4e-3 (weight decay 0.1, cosine decay), batch 64,
    /// 2 epochs: the MLP's Adam recipe (`configs/mnist_abc_psi_adam.toml`).
    pub fn lenet5_with(method: IntegratorKind) -> Self {
        let mut cfg = Self::paper_mnist_with(method);
        cfg.model = ModelConfig {
            kind: ModelKind::LeNet5,
            hidden: Vec::new(),
            low_rank: default_low_rank(),
            rank: 20,
            init: Init::He,
            init_gain: default_gain(),
            precision: Precision::F32,
        };
        (cfg.integrator.tol, cfg.integrator.r_max) = (0.01, Some(40));
        let rule = crate::optim::OptimizerConfig::adamw(0.1);
        cfg.optimizer = OptimizerSection { rule, lr: 4e-3, schedule: Schedule::Cosine, warmup_steps: 0 };
        cfg.train.epochs = 2;
        cfg
    }

    /// Parses TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: RunConfig = parse_toml(text, origin, "a valid dlrt run config")?;
        cfg.validate().map_err(|e| in_file(e, origin))?;
        Ok(cfg)
    }

    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_toml(&read(path)?, path)
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> Result<String> {
        to_toml(self)
    }

    /// The MLP's layer widths for a data set of `inputs` features and `classes` classes:
    /// `[inputs, hidden…, classes]`.
    pub fn widths(&self, inputs: usize, classes: usize) -> Vec<usize> {
        let mut widths = Vec::with_capacity(self.model.hidden.len() + 2);
        widths.push(inputs);
        widths.extend(&self.model.hidden);
        widths.push(classes);
        widths
    }

    /// Which layers are low-rank, one flag per layer (`hidden.len() + 1` layers for the MLP,
    /// 4 for LeNet-5).
    pub fn low_rank_flags(&self) -> Result<Vec<bool>> {
        let layers = match self.model.kind {
            ModelKind::Mlp => self.model.hidden.len() + 1,
            ModelKind::LeNet5 => 4,
        };
        if self.integrator.method == IntegratorKind::Dense {
            return Ok(vec![false; layers]);
        }
        match &self.model.low_rank {
            LowRankLayers::Named(s) if s == "hidden" => Ok((0..layers).map(|i| i + 1 < layers).collect()),
            LowRankLayers::Named(s) if s == "none" => Ok(vec![false; layers]),
            LowRankLayers::Named(s) => {
                Err(Error::config("model.low_rank", s, "\"hidden\", \"none\" or a list of flags"))
            }
            LowRankLayers::Flags(f) if f.len() == layers => Ok(f.clone()),
            LowRankLayers::Flags(f) => Err(Error::config(
                "model.low_rank",
                format!("{f:?}"),
                &format!("one flag per layer ({layers} layers)"),
            )),
        }
    }

    /// Checks every value's range and the combinations (names the field and the value).
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        if m.hidden.iter().any(|&w| w == 0 || w > MAX_WIDTH) {
            let expected = format!("widths from 1 to {MAX_WIDTH}");
            return Err(Error::config("model.hidden", format!("{:?}", m.hidden), &expected));
        }
        if m.kind == ModelKind::LeNet5 && !m.hidden.is_empty() {
            return Err(Error::config(
                "model.hidden",
                format!("{:?}", m.hidden),
                "no hidden widths with kind = \"lenet5\" (its layers are fixed: conv 20, conv 50, 500)",
            ));
        }
        if m.kind == ModelKind::LeNet5 && m.init != Init::He {
            return Err(Error::config(
                "model.init",
                "\"reference\"",
                "\"he\" with kind = \"lenet5\" (the authors' initialisation is the MLP's)",
            ));
        }
        if m.rank == 0 {
            return Err(Error::config("model.rank", m.rank, "an initial rank ≥ 1"));
        }
        toml_integer("model.rank", m.rank)?;
        if !(m.init_gain > 0.0 && m.init_gain.is_finite()) {
            return Err(Error::config("model.init_gain", m.init_gain, "a finite gain > 0"));
        }
        self.low_rank_flags()?;
        self.integrator.validate()?;
        self.optimizer.validate()?;
        self.train.validate()
    }
}

/// A config as TOML text; a path that is not UTF-8 (TOML holds only text) is an error.
pub(crate) fn to_toml(config: &impl Serialize) -> Result<String> {
    toml::to_string(config)
        .map_err(|e| Error::Unsupported(format!("writing the config as TOML: {e} (paths must be UTF-8)")))
}

/// TOML integers are i64: a larger count could not be written to config.toml or a checkpoint,
/// so it is refused with the other range errors, before any work.
pub(crate) fn toml_integer<T: Copy + std::fmt::Display + TryInto<i64>>(field: &str, value: T) -> Result<()> {
    match value.try_into() {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::config(field, value, &format!("at most {} (a TOML integer)", i64::MAX))),
    }
}

/// A range error of a config read from `origin`, as an error naming the file too.
fn in_file(e: Error, origin: &Path) -> Error {
    match e {
        Error::InvalidConfig { field, value, expected } => {
            Error::BadFile { path: origin.to_path_buf(), field, expected, got: value }
        }
        other => other,
    }
}

fn prefix(e: Error, section: &str) -> Error {
    match e {
        Error::InvalidConfig { field, value, expected } => {
            Error::InvalidConfig { field: format!("{section}{field}"), value, expected }
        }
        other => other,
    }
}

/// Parses TOML into `T`; an error names `origin`, the line and what was `expected`.
fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, origin: &Path, expected: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        Error::bad_file(origin, "config", expected, e.message().to_string() + &span(text, e.span()))
    })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

fn span(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => {
            let line = text[..r.start.min(text.len())].matches('\n').count() + 1;
            match text.lines().nth(line - 1).map(str::trim).filter(|l| !l.is_empty()) {
                // The line itself names the key (a value's type error names only the type).
                Some(l) if l.chars().count() <= 80 => format!(" (line {line}: {l})"),
                _ => format!(" (line {line})"),
            }
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_preset_round_trips_through_toml() {
        let cfg = RunConfig::paper_mnist();
        let back = RunConfig::from_toml(&cfg.to_toml().unwrap(), Path::new("x.toml")).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(cfg.low_rank_flags().unwrap(), vec![true, true, false]);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let text = RunConfig::paper_mnist().to_toml().unwrap().replace("[train]", "[train]\nbatchsize = 3");
        let err = RunConfig::from_toml(&text, Path::new("cfg.toml")).unwrap_err().to_string();
        assert!(err.contains("batchsize") && err.contains("cfg.toml"), "{err}");
        let text = RunConfig::paper_mnist().to_toml().unwrap().replace("tol = 0.01", "tol = 1.5");
        let err = RunConfig::from_toml(&text, Path::new("cfg.toml")).unwrap_err().to_string();
        assert!(err.contains("integrator.tol") && err.contains("1.5"), "{err}");
        let mut cfg = RunConfig::paper_mnist();
        cfg.optimizer.lr = -1.0;
        assert!(cfg.validate().unwrap_err().to_string().contains("optimizer.lr"));
        cfg = RunConfig::paper_mnist();
        cfg.model.low_rank = LowRankLayers::Flags(vec![true]);
        assert!(cfg.validate().unwrap_err().to_string().contains("model.low_rank"));
    }

    #[test]
    fn lenet5_with_the_reference_init_and_a_path_that_is_not_utf8_are_errors() {
        let mut cfg = RunConfig::lenet5_with(IntegratorKind::AbcPsi);
        cfg.model.init = Init::Reference;
        assert!(cfg.validate().unwrap_err().to_string().contains("model.init"));
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::OsStr::from_bytes(b"images-\xff");
        cfg.train.dataset = DatasetSource::Folder(crate::data::folder::FolderSpec::new(path));
        let err = cfg.to_toml().unwrap_err().to_string();
        assert!(err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn the_rank_bucket_defaults_to_one_and_zero_is_named() {
        let text = RunConfig::paper_mnist().to_toml().unwrap();
        assert!(!text.contains("rank_bucket"), "a bucket of 1 is not written: {text}");
        let with = |b: &str| text.replace("[integrator]", &format!("[integrator]\nrank_bucket = {b}"));
        let cfg = RunConfig::from_toml(&with("8"), Path::new("c.toml")).unwrap();
        assert_eq!(cfg.integrator.rank_bucket, 8);
        assert_eq!(RunConfig::from_toml(&cfg.to_toml().unwrap(), Path::new("c.toml")).unwrap(), cfg);
        let err = RunConfig::from_toml(&with("0"), Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("integrator.rank_bucket") && err.contains("≥ 1"), "{err}");
        let err = RunConfig::from_toml(&with("-1"), Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("c.toml") && err.contains("-1") && err.contains("line 9"), "{err}");
    }

    #[test]
    fn the_batched_update_defaults_to_auto_and_a_bad_value_is_named() {
        let text = RunConfig::paper_mnist().to_toml().unwrap();
        assert!(!text.contains("batched_update"), "auto is not written: {text}");
        let with = |v: &str| text.replace("[integrator]", &format!("[integrator]\nbatched_update = {v}"));
        for (value, expected) in [
            ("\"on\"", BatchedUpdate::On),
            ("\"off\"", BatchedUpdate::Off),
            ("true", BatchedUpdate::On),
            ("false", BatchedUpdate::Off),
            ("\"auto\"", BatchedUpdate::Auto),
        ] {
            let cfg = RunConfig::from_toml(&with(value), Path::new("c.toml")).unwrap();
            assert_eq!(cfg.integrator.batched_update, expected);
            assert_eq!(RunConfig::from_toml(&cfg.to_toml().unwrap(), Path::new("c.toml")).unwrap(), cfg);
        }
        for bad in ["\"yes\"", "1"] {
            let err = RunConfig::from_toml(&with(bad), Path::new("c.toml")).unwrap_err().to_string();
            assert!(err.contains("batched_update") && err.contains("c.toml"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_precision_defaults_to_f32_and_a_bad_name_is_named() {
        let text = RunConfig::paper_mnist().to_toml().unwrap();
        assert!(!text.contains("precision"), "f32 is not written, so older configs read the same: {text}");
        let with = |p: &str| text.replace("[model]", &format!("[model]\nprecision = {p}"));
        let cfg = RunConfig::from_toml(&with("\"bf16\""), Path::new("c.toml")).unwrap();
        assert_eq!(cfg.model.precision, Precision::Bf16);
        assert_eq!(RunConfig::from_toml(&cfg.to_toml().unwrap(), Path::new("c.toml")).unwrap(), cfg);
        let err = RunConfig::from_toml(&with("\"fp8\""), Path::new("c.toml")).unwrap_err().to_string();
        for part in ["c.toml", "precision", "fp8", "\"f32\", \"bf16\"", "line 2"] {
            assert!(err.contains(part), "{part} not in: {err}");
        }
    }

    #[test]
    fn widths_come_from_the_data_set_and_flags_count_the_output_layer() {
        let mut cfg = RunConfig::paper_mnist();
        assert_eq!(cfg.widths(784, 10), vec![784, 500, 500, 10]);
        assert_eq!(cfg.train.known_shape(), Some((784, 10)));
        assert_eq!(cfg.widths(3, 2), vec![3, 500, 500, 2]);
        cfg.model.hidden = vec![];
        assert_eq!(cfg.widths(784, 10), vec![784, 10]);
        assert_eq!(cfg.low_rank_flags().unwrap(), vec![false]);
        cfg.model.low_rank = LowRankLayers::Flags(vec![true]);
        assert_eq!(cfg.low_rank_flags().unwrap(), vec![true]);
        cfg.model.hidden = vec![8, 0];
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("model.hidden") && err.contains("[8, 0]"), "{err}");
        cfg.model.hidden = vec![8, 99_999_999_999];
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("model.hidden") && err.contains("16384"), "{err}");
    }

    #[test]
    fn the_data_set_is_a_name_or_an_image_folder() {
        use crate::data::FolderSpec;
        let base = RunConfig::paper_mnist().to_toml().unwrap();
        let with = |value: &str| base.replace("dataset = \"mnist\"", &format!("dataset = {value}"));
        let cfg = |value: &str| RunConfig::from_toml(&with(value), Path::new("c.toml"));
        assert_eq!(cfg("\"fashion_mnist\"").unwrap().train.dataset, DatasetName::FashionMnist.into());
        let folder =
            cfg("{ path = \"imgs\", test_fraction = 0.2, split_seed = 3, image_size = 32 }").unwrap();
        let spec = FolderSpec {
            test_fraction: Some(0.2),
            split_seed: 3,
            image_size: Some(32),
            ..FolderSpec::new("imgs")
        };
        assert_eq!(folder.train.dataset, DatasetSource::Folder(spec));
        assert_eq!(RunConfig::from_toml(&folder.to_toml().unwrap(), Path::new("c.toml")).unwrap(), folder);
        let err = cfg("{ path = \"imgs\", test_fraction = 2.0 }").unwrap_err().to_string();
        assert!(err.contains("train.dataset.test_fraction") && err.contains('2'), "{err}");
        // A bad name or key is named (not "no variant of an untagged enum matched").
        for (bad, named) in [
            ("\"cifar\"", "unknown variant `cifar`"),
            ("{ path = \"imgs\", fraction = 0.2 }", "unknown field `fraction`"),
            ("{ test_fraction = 0.2 }", "missing field `path`"),
        ] {
            let err = cfg(bad).unwrap_err().to_string();
            assert!(err.contains("c.toml") && err.contains(named), "{bad}: {err}");
        }
    }

    #[test]
    fn lenet5_has_four_layers_and_no_hidden_widths() {
        let mut cfg = RunConfig::lenet5_with(IntegratorKind::AbcPsi);
        assert_eq!(cfg.low_rank_flags().unwrap(), vec![true, true, true, false]);
        let text = cfg.to_toml().unwrap();
        assert!(text.contains("kind = \"lenet5\"") && !text.contains("\nhidden ="), "{text}");
        assert_eq!(RunConfig::from_toml(&text, Path::new("l.toml")).unwrap(), cfg);
        // An MLP config keeps its old form: no `kind` key.
        assert!(!RunConfig::paper_mnist().to_toml().unwrap().contains("kind = \"mlp\""));
        cfg.model.hidden = vec![100];
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("model.hidden") && err.contains("lenet5"), "{err}");
        cfg.model.hidden = vec![];
        cfg.model.low_rank = LowRankLayers::Flags(vec![true, false]);
        assert!(cfg.validate().unwrap_err().to_string().contains("4 layers"));
        let bad = text.replace("kind = \"lenet5\"", "kind = \"lenet6\"");
        let err = RunConfig::from_toml(&bad, Path::new("l.toml")).unwrap_err().to_string();
        assert!(err.contains("lenet6") && err.contains("l.toml"), "{err}");
    }

    #[test]
    fn the_paper_config_file_is_the_paper_preset() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs").join("mnist_abc_psi.toml");
        assert_eq!(RunConfig::load(&path).unwrap(), RunConfig::paper_mnist());
    }

    #[test]
    fn shipped_configs_load_and_match_the_paper_setting() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let (mut seen, mut lenet5) = (0, 0);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue; // configs/finetune/ holds FinetuneConfigs, checked in config::finetune
            }
            let cfg = RunConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            // configs/mnist_<method>.toml is the paper setting for that method, and
            // configs/lenet5_<method>.toml the LeNet-5 preset.
            let preset = |prefix: &str, build: fn(IntegratorKind) -> RunConfig| {
                let method = name.strip_prefix(prefix)?;
                IntegratorKind::ALL.iter().find(|k| k.name() == method).map(|k| build(*k))
            };
            if let Some(expected) = preset("mnist_", RunConfig::paper_mnist_with) {
                assert_eq!(cfg, expected, "{name}");
            }
            if let Some(expected) = preset("lenet5_", RunConfig::lenet5_with) {
                assert_eq!(cfg, expected, "{name}");
                lenet5 += 1;
            }
            seen += 1;
        }
        // mnist_<method> and mnist4_<method> (four hidden layers) for the 8 methods, and the
        // Adam recipe.
        assert!(seen >= 20, "expected the 8 + 8 paper configs, the recipe and LeNet-5's, found {seen}");
        assert_eq!(lenet5, 3, "abc_psi, parallel_bug and dense");
    }
}
