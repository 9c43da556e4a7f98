//! peft's LoRA adapter format: a fine-tuning checkpoint out as a peft adapter ([`export`]), and a
//! peft adapter in as the start of a fine-tuning run ([`init_adapters`]).
//!
//! # The layout (peft ≥ 0.14; checked with peft 0.21 + transformers 5.24 and peft 0.17 +
//! transformers 4.57, `bench/peft_roundtrip.py`)
//!
//! A folder that `PeftModel.from_pretrained(base, DIR)` reads, with `base` transformers'
//! classification model of the backbone (`ViTForImageClassification` or
//! `Dinov2ForImageClassification`, `num_labels` = the head's classes):
//!
//! - `adapter_config.json`: `peft_type = "LORA"`; `target_modules` lists the adapted modules by
//!   name: `dinov2.encoder.layer.{i}.attention.q_proj`, … as transformers ≥ 5 names them
//!   (`vit.layers.{i}.…` for ViT), or with [`ModuleNames::Transformers4`] as version 4 and the
//!   model files do, `{P}encoder.layer.{i}.{key}` (P = `vit.` or `dinov2.`, the key as in
//!   [`Variant::module_key`]); `rank_pattern` gives each its own rank r and `alpha_pattern`
//!   α = r, so peft's scale α/r is exactly 1; `lora_bias = true` (the change of the
//!   projection's bias rides on lora_B's bias); `modules_to_save = ["classifier"]` (the head).
//! - `adapter_model.safetensors` (f32), names under `base_model.model.`:
//!   `{module}.lora_A.weight` `[r, n]` = Uᵀ, `{module}.lora_B.weight` `[m, r]` = V Sᵀ,
//!   `{module}.lora_B.bias` `[m]` = b − b0, and `classifier.weight` / `classifier.bias`; the
//!   metadata holds the class names (`labels`, JSON).
//!
//! peft computes `base(x) + scale · lora_B(lora_A(x))`, i.e. (in this crate's orientation,
//! z = x W + b) `x W0 + b0 + x U S Vᵀ + (b − b0)`: the adapter's forward. transformers' DINOv2
//! head reads `[CLS, mean of the patch tokens]` (2D inputs) where ours reads the CLS token only,
//! so a DINOv2 export's head weight is `[W_headᵀ, 0]`.
//!
//! # Import
//!
//! Each module's ΔW = scale·(B A)ᵀ (n×m; scale α/r, or α/√r with `use_rslora`) becomes U S Vᵀ
//! by an SVD: from thin QRs Aᵀ = Q_A R_A, B = Q_B R_B and the SVD of the r×r core
//! scale·R_A R_Bᵀ, in f64. The import is exact: it keeps every singular value above the f32
//! round-off of the stored factors ([`IMPORT_TOL`]), within the run's r_min and r_max, so the
//! run starts from the adapter's own model; the run's ϑ acts from its first step on. The bias
//! becomes b0 + scale·lora_B.bias (peft scales lora_B's whole output). The head is taken from
//! `classifier` when the adapter saved it. Module names of both transformers generations are
//! read.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::{backend::Backend, Tensor, TensorData};
use faer::Mat;
use rand::{rngs::StdRng, SeedableRng};
use serde::Deserialize;

use super::to_entry;
use crate::io::{atomic_write, read_safetensors, write_safetensors_as, FileDtype, TensorMap};
use crate::layers::{AdapterTarget, DenseLinear, LowRankLinear};
use crate::linalg::{from_faer, thin_qr, thin_svd, TruncationConfig};
use crate::models::vit::{Projection, Variant, ViT};
use crate::models::ViTClassifier;
use crate::{Error, Result};

/// The adapter weights' file name in a peft folder.
pub const WEIGHTS: &str = "adapter_model.safetensors";
/// The adapter config's file name in a peft folder.
pub const CONFIG: &str = "adapter_config.json";
/// What peft puts before every name of the wrapped model.
const ROOT: &str = "base_model.model.";
/// The head's module name in transformers' classification models.
const HEAD: &str = "classifier";

/// Which transformers generation's module names an export uses: peft names the adapter's
/// tensors after the modules of the model it wraps, and transformers 5 renamed them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModuleNames {
    /// transformers ≥ 5: `…attention.q_proj`, ViT's blocks `vit.layers.{i}`.
    #[default]
    Transformers5,
    /// transformers 4 (and the names in the model files): `…attention.attention.query`.
    Transformers4,
}

/// The peft module name of the adapter on `target` of block `layer`: transformers' name in
/// its files and before version 5 (`…encoder.layer.{i}.attention.attention.query`).
fn module_name(variant: Variant, layer: usize, target: AdapterTarget) -> String {
    format!("{}encoder.layer.{layer}.{}", variant.classifier_prefix(), variant.module_key(target))
}

/// The same module's name in transformers ≥ 5, which renamed the modules (not the files):
/// `…attention.q_proj`, …, and ViT's blocks `vit.layers.{i}`.
fn module_name_v5(variant: Variant, layer: usize, target: AdapterTarget) -> String {
    let block = match variant {
        Variant::ViT => format!("vit.layers.{layer}"),
        Variant::Dinov2 => format!("dinov2.encoder.layer.{layer}"),
    };
    let key = match target {
        AdapterTarget::Query => "attention.q_proj",
        AdapterTarget::Key => "attention.k_proj",
        AdapterTarget::Value => "attention.v_proj",
        AdapterTarget::AttentionOutput => "attention.o_proj",
        AdapterTarget::MlpFc1 => "mlp.fc1",
        AdapterTarget::MlpFc2 => "mlp.fc2",
    };
    format!("{block}.{key}")
}

/// Every name peft may give the adapter on `target` of block `layer`: both transformers
/// generations, in the classification model and (without its `vit.` / `dinov2.`) the bare one.
fn module_names(variant: Variant, layer: usize, target: AdapterTarget) -> [String; 4] {
    let (old, new) = (module_name(variant, layer, target), module_name_v5(variant, layer, target));
    let bare = |name: &str| name.strip_prefix(variant.classifier_prefix()).unwrap_or(name).to_string();
    [bare(&old), bare(&new), old, new]
}

/// Writes the adapters and the head of `model` as a peft LoRA adapter into the folder `dir`
/// (created if missing): [`WEIGHTS`] and [`CONFIG`] (module docs), modules named as `names`
/// says. `base` is the backbone as loaded, without adapters (its biases are peft's b0),
/// `base_path` is written as `base_model_name_or_path`, `labels` are the class names in label
/// order. The tensors are stored as `dtype`; peft casts them to the base model's type on load.
pub fn export<B: Backend>(
    dir: &Path,
    model: &ViTClassifier<B>,
    base: &ViT<B>,
    base_path: &Path,
    labels: &[String],
    names: ModuleNames,
    dtype: FileDtype,
) -> Result<()> {
    let variant = model.backbone.config().variant;
    let module_name = match names {
        ModuleNames::Transformers5 => module_name_v5,
        ModuleNames::Transformers4 => module_name,
    };
    let mut tensors = TensorMap::new();
    let (mut targets, mut ranks) = (Vec::new(), BTreeMap::new());
    let mut with_bias = Vec::new();
    for (i, t, l) in model.backbone.adapters() {
        let name = module_name(variant, i, t);
        let (u, s, v) = (l.u().clone(), l.s().clone(), l.v().clone());
        tensors.insert(format!("{ROOT}{name}.lora_A.weight"), to_entry(&u.transpose()));
        tensors.insert(format!("{ROOT}{name}.lora_B.weight"), to_entry(&v.matmul(s.transpose())));
        let base_bias = base.projection(i, t).and_then(|p| p.bias().cloned());
        with_bias.push(l.bias().is_some());
        if let Some(b) = l.bias() {
            let delta = match base_bias {
                Some(b0) => b.clone() - b0,
                None => b.clone(),
            };
            tensors.insert(format!("{ROOT}{name}.lora_B.bias"), to_entry(&delta));
        }
        ranks.insert(name.clone(), l.u().dims()[1]);
        targets.push(name);
    }
    let lora_bias = with_bias.iter().any(|&b| b);
    if with_bias.iter().any(|&b| b != lora_bias) {
        // peft's `lora_bias` is one switch for all modules, and it refuses a module without a bias.
        return Err(Error::Unsupported(
            "a peft export of adapters of which some have a bias and some do not".into(),
        ));
    }
    tensors.insert(format!("{ROOT}{HEAD}.weight"), to_entry(&super::adapters::hf_head_weight(model)));
    if let Some(b) = model.head.bias() {
        tensors.insert(format!("{ROOT}{HEAD}.bias"), to_entry(b));
    }
    let r_max = ranks.values().copied().max().unwrap_or(1);
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": null,
        "base_model_name_or_path": base_path.display().to_string(),
        "r": r_max,
        "lora_alpha": r_max,
        "target_modules": targets,
        "rank_pattern": ranks,
        "alpha_pattern": ranks,
        "lora_dropout": 0.0,
        "bias": "none",
        "lora_bias": lora_bias,
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "modules_to_save": [HEAD],
        "inference_mode": true,
    });
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let labels_json = serde_json::to_string(labels).expect("strings serialise");
    let meta = HashMap::from([("format".to_string(), "pt".to_string()), ("labels".to_string(), labels_json)]);
    write_safetensors_as(&dir.join(WEIGHTS), &tensors, meta, dtype)?;
    let text = serde_json::to_string_pretty(&config).expect("JSON values serialise");
    atomic_write(&dir.join(CONFIG), text.as_bytes())
}

/// The keys of peft's `adapter_config.json` that the import reads (others are ignored).
#[derive(Debug, Deserialize)]
struct PeftConfig {
    peft_type: String,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    rank_pattern: BTreeMap<String, usize>,
    #[serde(default)]
    alpha_pattern: BTreeMap<String, f64>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    modules_to_save: Option<Vec<String>>,
}

/// peft's pattern lookup (`get_pattern_key`): the first key equal to `module` or ending it
/// after a dot. Keys are compared literally; peft reads them as regular expressions, which
/// only differs for keys with regex syntax, rejected on load.
fn pattern<'a, T>(patterns: &'a BTreeMap<String, T>, module: &str) -> Option<&'a T> {
    patterns.iter().find(|(k, _)| module == *k || module.ends_with(&format!(".{k}"))).map(|(_, v)| v)
}

/// A tensor as read: shape and values.
type Entry = (Vec<usize>, Vec<f32>);

/// One LoRA module of a peft file, checked against its projection: A `[r, n]`, B `[m, r]`,
/// lora_B's bias, peft's scale.
struct LoraModule {
    a: Mat<f64>,
    b: Mat<f64>,
    bias: Option<Vec<f32>>,
    scale: f64,
}

fn mat(shape: &[usize], values: &[f32]) -> Mat<f64> {
    Mat::from_fn(shape[0], shape[1], |i, j| f64::from(values[i * shape[1] + j]))
}

/// Reads `adapter_config.json` of `dir`; rejects what the import cannot reproduce.
fn read_config(dir: &Path) -> Result<PeftConfig> {
    let path = dir.join(CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let cfg: PeftConfig = serde_json::from_str(&text)
        .map_err(|e| Error::bad_file(&path, "adapter_config.json", "a peft adapter config", e))?;
    if cfg.peft_type != "LORA" {
        return Err(Error::bad_file(&path, "peft_type", "\"LORA\"", &cfg.peft_type));
    }
    for (flag, on) in [("use_dora", cfg.use_dora), ("fan_in_fan_out", cfg.fan_in_fan_out)] {
        if on {
            return Err(Error::bad_file(&path, flag, "false (not supported by dlrt)", "true"));
        }
    }
    let regex = |k: &String| k.contains(|c: char| "*+?()[]{}|^$\\".contains(c));
    if let Some(k) = cfg.rank_pattern.keys().chain(cfg.alpha_pattern.keys()).find(|k| regex(k)) {
        return Err(Error::bad_file(&path, "rank_pattern / alpha_pattern", "module names", k));
    }
    Ok(cfg)
}

/// The tensors of a peft weights file by module (`[lora_A.weight, lora_B.weight,
/// lora_B.bias]`), and the head's `[weight, bias]`.
type Tensors = (BTreeMap<String, [Option<Entry>; 3]>, [Option<Entry>; 2]);

fn read_tensors(path: &Path) -> Result<Tensors> {
    let (tensors, _) = read_safetensors(path)?;
    let (mut modules, mut head) = (BTreeMap::<String, [Option<Entry>; 3]>::new(), [None, None]);
    for (name, entry) in tensors {
        let Some(rest) = name.strip_prefix(ROOT) else {
            return Err(Error::bad_file(path, &name, "a name under `base_model.model.`", "another name"));
        };
        if let Some(i) = ["weight", "bias"].iter().position(|p| rest == format!("{HEAD}.{p}")) {
            head[i] = Some(entry);
            continue;
        }
        let Some(slot) =
            [".lora_A.weight", ".lora_B.weight", ".lora_B.bias"].iter().position(|s| rest.ends_with(s))
        else {
            let expected = "LoRA factors (lora_A / lora_B) or the classifier";
            return Err(Error::bad_file(path, &name, expected, "another tensor"));
        };
        let module = rest.rsplitn(3, '.').nth(2).unwrap_or_default().to_string();
        modules.entry(module).or_default()[slot] = Some(entry);
    }
    Ok((modules, head))
}

/// Checks the factors of `module` against the adapter `layer` of `model` and reads peft's
/// scale for it.
fn lora_module<B: Backend>(
    path: &Path,
    cfg: &PeftConfig,
    module: &str,
    [a, b, bias]: [Option<Entry>; 3],
    layer: Option<&Projection<B>>,
) -> Result<LoraModule> {
    let what = |part: &str| format!("{ROOT}{module}.{part}");
    let bad =
        |part: &str, expected: String, got: String| Err(Error::bad_file(path, what(part), expected, got));
    let (Some(a), Some(b)) = (a, b) else {
        return bad("lora_A.weight", "both lora_A and lora_B".into(), "one of them".into());
    };
    let Some(Projection::Adapted(layer)) = layer else {
        return bad(
            "lora_A.weight",
            "an adapter of the config's `backbone.targets`".into(),
            "none there".into(),
        );
    };
    let (n, m) = (layer.n(), layer.m());
    let r = a.0.first().copied().unwrap_or(0);
    if a.0.len() != 2 || a.0[1] != n || r == 0 {
        return bad("lora_A.weight", format!("shape [r, {n}]"), format!("{:?}", a.0));
    }
    if b.0 != [m, r] {
        return bad("lora_B.weight", format!("shape [{m}, {r}]"), format!("{:?}", b.0));
    }
    if let Some((shape, _)) = &bias {
        if layer.bias().is_none() {
            return bad("lora_B.bias", "no bias (the projection has none)".into(), "a bias".into());
        }
        if shape.as_slice() != [m] {
            return bad("lora_B.bias", format!("shape [{m}]"), format!("{shape:?}"));
        }
    }
    let r_config = pattern(&cfg.rank_pattern, module).copied().unwrap_or(cfg.r);
    if r_config != r {
        return bad(
            "lora_A.weight",
            format!("rank {r_config} (adapter_config.json's r / rank_pattern)"),
            format!("rank {r}"),
        );
    }
    if !a.1.iter().chain(&b.1).chain(bias.iter().flat_map(|b| &b.1)).all(|x| x.is_finite()) {
        return Err(Error::NonFinite { context: format!("{} in {}", what("lora_A/B"), path.display()) });
    }
    let alpha = pattern(&cfg.alpha_pattern, module).copied().unwrap_or(cfg.lora_alpha);
    let scale = if cfg.use_rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 };
    Ok(LoraModule { a: mat(&a.0, &a.1), b: mat(&b.0, &b.1), bias: bias.map(|(_, v)| v), scale })
}

/// The head saved as `classifier` ([classes, D], or DINOv2's [classes, 2D] with nothing on the
/// mean patch token) as a D → classes layer.
fn read_head<B: Backend>(
    path: &Path,
    [weight, bias]: [Option<Entry>; 2],
    variant: Variant,
    d: usize,
    classes: usize,
    device: &B::Device,
) -> Result<DenseLinear<B>> {
    let name = format!("{ROOT}{HEAD}.weight");
    let Some((shape, w)) = weight else {
        return Err(Error::bad_file(path, name, "the head that modules_to_save lists", "none"));
    };
    let inputs = shape.get(1).copied().unwrap_or(0);
    let fits = shape.len() == 2 && (inputs == d || (variant == Variant::Dinov2 && inputs == 2 * d));
    if !fits || shape[0] != classes {
        let expected = format!("shape [{classes}, {d}] (the data set's classes × the CLS features)");
        return Err(Error::bad_file(path, name, expected, format!("{shape:?}")));
    }
    if w.chunks(inputs).any(|row| row[d..].iter().any(|&x| x != 0.0)) {
        let expected = "zero weights on the mean patch token (dlrt's head reads the CLS token only)";
        return Err(Error::bad_file(path, name, expected, "non-zero weights"));
    }
    let w_cls: Vec<f32> = w.chunks(inputs).flat_map(|row| row[..d].to_vec()).collect();
    // [classes, D] → this crate's [D, classes], stored row-major.
    let weight = Tensor::<B, 2>::from_data(TensorData::new(w_cls, [classes, d]), device).transpose();
    let weight = Tensor::from_data(weight.into_data(), device);
    let bias = match bias {
        Some((s, v)) if s.as_slice() == [classes] => {
            Some(Tensor::from_data(TensorData::new(v, [classes]), device))
        }
        Some((s, _)) => {
            let name = format!("{ROOT}{HEAD}.bias");
            return Err(Error::bad_file(path, name, format!("shape [{classes}]"), format!("{s:?}")));
        }
        None => None,
    };
    DenseLinear::from_weights(weight, bias)
}

/// Relative tolerance of the import's truncation: singular values whose tail is below it are
/// the f32 round-off of the stored A and B, not part of the adapter.
pub const IMPORT_TOL: f64 = 1e-6;

/// U, S = diag(σ), V of ΔW = scale·(B A)ᵀ (n×m) to [`IMPORT_TOL`], within the rank bounds of
/// `truncation`: ΔW = Q_A (scale·R_A R_Bᵀ) Q_Bᵀ, so the SVD of the r×r core gives the factors.
fn truncate(
    lora: &LoraModule,
    n: usize,
    m: usize,
    truncation: &TruncationConfig,
    context: &str,
) -> Result<[Mat<f64>; 3]> {
    let qa = thin_qr(lora.a.transpose());
    let qb = thin_qr(lora.b.as_ref());
    let core = faer::Scale(lora.scale) * (&qa.R * qb.R.transpose());
    let svd = thin_svd(core.as_ref(), context)?;
    let exact = TruncationConfig { tol: IMPORT_TOL, absolute: false, ..truncation.clone() };
    let r1 = exact.rank(&svd.sigma, n, m).max(1);
    let u = &qa.Q * svd.U.as_ref().subcols(0, r1);
    let v = &qb.Q * svd.V.as_ref().subcols(0, r1);
    let s = Mat::from_fn(r1, r1, |i, j| if i == j { svd.sigma[i] } else { 0.0 });
    Ok([u, s, v])
}

/// Checks that a peft adapter in `dir` whose file names its classes (the `labels` metadata
/// that [`export`] writes; peft itself stores none) was trained for `labels`, the classes of
/// the data set it is to continue on: a head for other classes with the same count would
/// otherwise pass [`init_adapters`]'s shape checks.
pub fn check_labels(dir: &Path, labels: &[String]) -> Result<()> {
    let path = dir.join(WEIGHTS);
    let Some(stored) = super::adapters::stored_labels(&crate::io::read_metadata(&path)?, &path)? else {
        return Ok(());
    };
    if stored != labels {
        let expected = format!("the data set's classes {labels:?}");
        return Err(Error::bad_file(&path, "metadata.labels", expected, format!("{stored:?}")));
    }
    Ok(())
}

/// Starts the adapters (and, when the file saved it, the head) of `model` from the peft LoRA
/// adapter in the folder `dir` (module docs): each module's ΔW exactly, within the rank
/// bounds of `truncation`.
/// Modules of the file must be adapters of `model` (the config's targets); adapters the file
/// does not have keep S = 0. Everything is checked first, so an error leaves `model` as it
/// was. Returns the imported ranks, by block and target.
pub fn init_adapters<B: Backend>(
    dir: &Path,
    model: &mut ViTClassifier<B>,
    truncation: &TruncationConfig,
) -> Result<Vec<(usize, AdapterTarget, usize)>> {
    let cfg = read_config(dir)?;
    let path = dir.join(WEIGHTS);
    let (by_module, head) = read_tensors(&path)?;
    let config = model.backbone.config();
    let (variant, d, blocks) = (config.variant, config.hidden_size, config.num_hidden_layers);
    let known: HashMap<String, (usize, AdapterTarget)> = (0..blocks)
        .flat_map(|i| AdapterTarget::ALL.map(|t| (i, t)))
        .flat_map(|(i, t)| module_names(variant, i, t).map(|name| (name, (i, t))))
        .collect();
    let device = model.head.weight().device();
    let mut factors = Vec::new();
    for (module, entries) in by_module {
        let Some(&(layer, target)) = known.get(&module) else {
            let expected = format!(
                "a projection of this {blocks}-block {variant:?} backbone, e.g. `{}`",
                module_name_v5(variant, 0, AdapterTarget::Query)
            );
            let name = format!("{ROOT}{module}.lora_A.weight");
            return Err(Error::bad_file(&path, name, expected, format!("module `{module}`")));
        };
        let projection = model.backbone.projection(layer, target);
        let lora = lora_module(&path, &cfg, &module, entries, projection)?;
        let (n, m) = projection.map_or((0, 0), |p| p.shape());
        let [u, s, v] = truncate(&lora, n, m, truncation, &format!("ΔW of `{module}`"))?;
        // Just built by `ViTClassifier::new`, the adapter's bias is still the base's b0; peft
        // scales lora_B's whole output, its bias included.
        let b0 = projection.and_then(|p| p.bias().cloned());
        let bias = match (b0, &lora.bias) {
            (Some(b0), Some(delta)) => Some(
                b0 + Tensor::from_data(TensorData::new(delta.clone(), [m]), &device).mul_scalar(lora.scale),
            ),
            (b0, _) => b0,
        };
        factors.push((layer, target, [u, s, v], bias));
    }
    let head_saved = cfg.modules_to_save.as_ref().is_some_and(|m| m.iter().any(|n| n == HEAD));
    let classes = model.head.weight().dims()[1];
    let new_head =
        if head_saved { Some(read_head(&path, head, variant, d, classes, &device)?) } else { None };

    let mut rng = StdRng::seed_from_u64(0);
    let mut adapters = Vec::new();
    for (layer, target, [u, s, v], bias) in factors {
        let Some(Projection::Adapted(old)) = model.backbone.projection(layer, target) else {
            return Err(Error::Internal(format!("block {layer} lost its `{}` adapter", target.name())));
        };
        let base = old.base().cloned().ok_or_else(|| Error::Internal("an adapter without a base".into()))?;
        let mut adapter = LowRankLinear::adapter(base, 1, bias, &mut rng)?;
        adapter.set_factors(
            from_faer(u.as_ref(), &device),
            from_faer(s.as_ref(), &device),
            from_faer(v.as_ref(), &device),
        )?;
        adapters.push((layer, target, adapter));
    }
    // By block, then target in the model's order (the file's modules come sorted by name).
    adapters.sort_by_key(|(layer, target, _)| (*layer, *target));
    let mut ranks = Vec::new();
    for (layer, target, adapter) in adapters {
        ranks.push((layer, target, adapter.rank()));
        if let Some(p) = model.backbone.projection_mut(layer, target) {
            *p = Projection::Adapted(adapter);
        }
    }
    if let Some(head) = new_head {
        model.head = head;
    }
    Ok(ranks)
}
