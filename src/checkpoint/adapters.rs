//! Fine-tuning checkpoints: only the adapters and the head, never the frozen backbone.
//!
//! Tensors (f32, Burn's orientation z = x W + b):
//! - `encoder.layer.{L}.{target}.u` `[n, r]`, `.s` `[r, r]`, `.v` `[m, r]`, `.bias` `[m]` for
//!   each adapter (`target` as in the config: `query`, `key`, …);
//! - `head.weight` `[D, classes]`, `head.bias` `[classes]`;
//!
//! metadata: the format, the fine-tuning config (TOML, which names the backbone's files), the
//! epoch, the ranks, the class names in label order (`labels`, JSON; also written into the
//! export's `config.json` as `id2label` / `label2id`) and the training images' stored shape
//! (`image`, `[C, H, W]`). [`load`] reads the backbone from the config's paths and puts the
//! adapters back on it; [`export_merged`] folds them in and writes a HuggingFace-layout
//! backbone plus `classifier.*` that `ViT::load` (and transformers) read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Tensor};
use rand::{rngs::StdRng, SeedableRng};

use super::{meta_field, take, to_entry, to_json};
use crate::config::FinetuneConfig;
use crate::data::DatasetSource;
use crate::io::{
    atomic_write, read_metadata, read_safetensors, write_safetensors, write_safetensors_as, FileDtype,
    TensorMap,
};
use crate::layers::AdapterTarget;
use crate::layers::{DenseLinear, LowRankLinear};
use crate::models::vit::{Variant, ViT};
use crate::models::ViTClassifier;
use crate::{Error, Result};

/// The adapter checkpoint format this code writes and reads.
pub const FORMAT: &str = "dlrt-adapters-1";

/// The checkpoint name of an adapter.
fn adapter_name(layer: usize, target: AdapterTarget) -> String {
    format!("encoder.layer.{layer}.{}", target.name())
}

/// Saves the adapters and the head of `model` (atomically), with the class names `labels` and
/// the shape `[C, H, W]` the run stored its training images in (`image`, which `predict` gives
/// new images before resizing them to the backbone's input, as training did).
pub fn save<B: Backend>(
    path: &Path,
    model: &ViTClassifier<B>,
    config: &FinetuneConfig,
    epoch: usize,
    labels: &[String],
    image: [usize; 3],
) -> Result<()> {
    let mut tensors = TensorMap::new();
    for (i, t, l) in model.backbone.adapters() {
        let name = adapter_name(i, t);
        tensors.insert(format!("{name}.u"), to_entry(l.u()));
        tensors.insert(format!("{name}.s"), to_entry(l.s()));
        tensors.insert(format!("{name}.v"), to_entry(l.v()));
        if let Some(b) = l.bias() {
            tensors.insert(format!("{name}.bias"), to_entry(b));
        }
    }
    tensors.insert("head.weight".into(), to_entry(model.head.weight()));
    if let Some(b) = model.head.bias() {
        tensors.insert("head.bias".into(), to_entry(b));
    }
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("config".to_string(), config.to_toml()?),
        ("epoch".to_string(), epoch.to_string()),
        ("ranks".to_string(), to_json(&model.ranks())),
        ("labels".to_string(), to_json(&labels)),
        ("image".to_string(), to_json(&image)),
    ]);
    write_safetensors(path, &tensors, meta)
}

/// Whether `path` is an adapter checkpoint (by its metadata); `false` for other safetensors.
pub fn is_adapter_checkpoint(path: &Path) -> Result<bool> {
    Ok(read_metadata(path)?.get("format").is_some_and(|f| f == FORMAT))
}

/// The backbone files (`model.safetensors`, `config.json`) a fine-tuning checkpoint's model is
/// built from, or `None` for another file: outputs must not overwrite them.
pub fn backbone_files(path: &Path) -> Result<Option<[PathBuf; 2]>> {
    let meta = read_metadata(path)?;
    if meta.get("format").is_none_or(|f| f != FORMAT) {
        return Ok(None);
    }
    let config = meta.get("config").and_then(|text| FinetuneConfig::from_toml(text, path).ok());
    Ok(config.map(|c| [c.backbone.weights(), c.backbone.config_json()]))
}

/// Loads the backbone named by the checkpoint's config and puts the checkpoint's adapters and
/// head on it; returns the model, the config and the epoch. Every tensor's name and shape is
/// checked, and tensors left over are reported.
pub fn load<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(ViTClassifier<B>, FinetuneConfig, usize)> {
    let (mut tensors, meta) = read_safetensors(path)?;
    super::require_format(path, &meta, FORMAT)?;
    let text = meta
        .get("config")
        .ok_or_else(|| Error::bad_file(path, "metadata.config", "a fine-tuning config", "none"))?;
    let config = FinetuneConfig::from_toml(text, &path.join("<metadata.config>"))?;
    let epoch = meta_field(&meta, path, "epoch")?;
    let b = &config.backbone;
    let backbone = ViT::<B>::load(b.weights(), b.config_json(), device).map_err(|e| match e {
        // The stored paths are as the fine-tuning run was given them.
        Error::Io { path: missing, source } if source.kind() == std::io::ErrorKind::NotFound => Error::bad_file(
            path,
            "metadata.config: backbone.weights",
            "a backbone at the stored path (runs store absolute paths; an older run's relative paths are read from the current folder)",
            format!("{}: {source}", missing.display()),
        ),
        other => other,
    })?;
    backbone.require_rgb(&b.config_json())?;
    let head_w: burn::tensor::Tensor<B, 2> = take(&mut tensors, path, "head.weight", None, device)?;
    let [d, classes] = head_w.dims();
    if d != backbone.config().hidden_size || classes == 0 {
        let expected = format!("shape [{}, classes ≥ 1]", backbone.config().hidden_size);
        return Err(Error::bad_file(path, "head.weight", expected, format!("{:?}", [d, classes])));
    }
    let head_b = take(&mut tensors, path, "head.bias", Some([classes]), device)?;
    // Rank 1 placeholders, replaced by the stored factors below (their rank may differ).
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = ViTClassifier::new(backbone, &b.targets, 1, classes, &mut rng, device)?;
    model.head = DenseLinear::from_weights(head_w, Some(head_b))?;
    let names: Vec<String> = model.backbone.adapters().map(|(i, t, _)| adapter_name(i, t)).collect();
    for (name, layer) in names.iter().zip(model.backbone.low_rank_layers_mut()) {
        let (n, m) = (layer.n(), layer.m());
        let u: burn::tensor::Tensor<B, 2> = take(&mut tensors, path, &format!("{name}.u"), None, device)?;
        let r = u.dims()[1];
        if u.dims()[0] != n || r == 0 || r > n.min(m) {
            let expected = format!("shape [{n}, r], 1 ≤ r ≤ {}", n.min(m));
            return Err(Error::bad_file(path, format!("{name}.u"), expected, format!("{:?}", u.dims())));
        }
        let s = take(&mut tensors, path, &format!("{name}.s"), Some([r, r]), device)?;
        let v = take(&mut tensors, path, &format!("{name}.v"), Some([m, r]), device)?;
        let bias = match layer.bias() {
            Some(_) => Some(take(&mut tensors, path, &format!("{name}.bias"), Some([m]), device)?),
            None => None,
        };
        let base = layer.base().cloned().expect("an adapter has a base");
        *layer = LowRankLinear::adapter(base, 1, bias, &mut rng)?;
        layer.set_factors(u, s, v)?;
    }
    if let Some(name) = tensors.keys().next() {
        return Err(Error::bad_file(
            path,
            name,
            "only the adapters and head of the configured targets",
            "an unexpected tensor",
        ));
    }
    Ok((model, config, epoch))
}

/// [`load`], with the backbone computing as the run did (its `precision` and `attention`), for
/// evaluating and predicting; [`load`] leaves the frozen weights f32, as the exports merge them.
pub fn load_as_trained<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(ViTClassifier<B>, FinetuneConfig, usize)> {
    let (mut model, config, epoch) = load(path, device)?;
    model.backbone.set_precision(config.backbone.precision)?;
    model.backbone.set_attention(config.backbone.attention);
    Ok((model, config, epoch))
}

/// The shape `[C, H, W]` (C = 1 or 3) of the training images of the run that wrote the
/// adapter checkpoint at `path` ([`save`]); `None` for a checkpoint written before it was stored.
pub fn stored_image(path: &Path) -> Result<Option<[usize; 3]>> {
    let Some(raw) = read_metadata(path)?.remove("image") else {
        return Ok(None);
    };
    match serde_json::from_str::<[usize; 3]>(&raw) {
        Ok(shape @ [1 | 3, h, w]) if h > 0 && w > 0 => Ok(Some(shape)),
        _ => Err(Error::bad_file(path, "metadata.image", "[C, H, W] with C = 1 or 3 and H, W ≥ 1", raw)),
    }
}

/// The class names stored in the adapter checkpoint at `path`, in label order: its `labels`
/// metadata, or for a checkpoint written before it was stored, the names of its built-in data
/// set (else `"0"`, `"1"`, … for `classes` classes). Stored names that are not one per class
/// (the head's `classes` rows) are an error.
pub fn labels(path: &Path, classes: usize) -> Result<Vec<String>> {
    let meta = read_metadata(path)?;
    if let Some(labels) = stored_labels(&meta, path)? {
        if labels.len() != classes {
            let expected = format!("one class name per row of the head ({classes})");
            return Err(Error::bad_file(
                path,
                "metadata.labels",
                expected,
                format!("{} names", labels.len()),
            ));
        }
        return Ok(labels);
    }
    let named =
        meta.get("config").and_then(|text| FinetuneConfig::from_toml(text, path).ok()).and_then(|cfg| {
            match cfg.train.dataset {
                DatasetSource::Named(d) if d.classes() == classes => Some(d.class_names().to_vec()),
                _ => None,
            }
        });
    Ok(match named {
        Some(names) => names.iter().map(|c| c.to_string()).collect(),
        None => (0..classes).map(|i| i.to_string()).collect(),
    })
}

/// The class names in the `labels` metadata of the file at `path` (a JSON list), if it has them.
pub(crate) fn stored_labels(meta: &HashMap<String, String>, path: &Path) -> Result<Option<Vec<String>>> {
    meta.get("labels")
        .map(|raw| {
            serde_json::from_str(raw)
                .map_err(|e| Error::bad_file(path, "metadata.labels", "a JSON list of class names", e))
        })
        .transpose()
}

/// The head's weight as transformers' classification model of the backbone stores
/// `classifier.weight`: `[classes, D]` (`ViTForImageClassification`), or for
/// `Dinov2ForImageClassification`, whose head reads `[CLS, mean of the patch tokens]`,
/// `[classes, 2D]` with zeros on the mean (this crate's head reads the CLS token only).
pub(super) fn hf_head_weight<B: Backend>(model: &ViTClassifier<B>) -> Tensor<B, 2> {
    let w = model.head.weight().clone().transpose();
    match model.backbone.config().variant {
        Variant::ViT => w,
        Variant::Dinov2 => Tensor::cat(vec![w.clone(), w.zeros_like()], 1),
    }
}

/// The weights file of a merged export, in its folder (HF's name).
pub const MERGED_WEIGHTS: &str = "model.safetensors";

/// Folds the adapters into the backbone and writes it in HuggingFace's layout into the folder
/// `dir` (created if missing): `model.safetensors` with the head as `classifier.weight`
/// (`[classes, D]`; for DINOv2 `[classes, 2D]`, zero on the mean patch token its transformers
/// head also reads) and `classifier.bias`, stored as `dtype`, and the backbone's `config.json`
/// with the class names `labels` as `id2label` and `label2id` and `torch_dtype` naming `dtype`:
/// a folder that transformers' `AutoModelForImageClassification.from_pretrained` loads.
pub fn export_merged<B: Backend>(
    dir: &Path,
    model: &ViTClassifier<B>,
    labels: &[String],
    dtype: FileDtype,
) -> Result<()> {
    let mut backbone = model.backbone.clone();
    backbone.merge_adapters()?;
    let mut tensors = backbone.to_tensors();
    tensors.insert("classifier.weight".into(), to_entry(&hf_head_weight(model)));
    if let Some(b) = model.head.bias() {
        tensors.insert("classifier.bias".into(), to_entry(b));
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_safetensors_as(&dir.join(MERGED_WEIGHTS), &tensors, meta, dtype)?;
    let json = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&backbone.config().to_json())
        .map_err(|e| Error::Internal(format!("the backbone's config.json does not parse: {e}")))?;
    if let Some(obj) = config.as_object_mut() {
        let id2label: serde_json::Map<String, serde_json::Value> =
            labels.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone().into())).collect();
        let label2id: serde_json::Map<String, serde_json::Value> =
            labels.iter().enumerate().map(|(i, l)| (l.clone(), i.into())).collect();
        obj.insert("id2label".into(), id2label.into());
        obj.insert("label2id".into(), label2id.into());
        obj.insert("torch_dtype".into(), dtype.torch_name().into());
    }
    let text = serde_json::to_string_pretty(&config).expect("JSON values serialise");
    atomic_write(&json, text.as_bytes())
}
