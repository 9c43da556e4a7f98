//! Fine-tuning checkpoints: only the adapters and the head, never the frozen backbone.
//!
//! Tensors (f32, Burn's orientation z = x W + b):
//! - `encoder.layer.{L}.{target}.u` `[n, r]`, `.s` `[r, r]`, `.v` `[m, r]`, `.bias` `[m]` for
//!   each adapter (`target` as in the config: `query`, `key`, …);
//! - `head.weight` `[D, classes]`, `head.bias` `[classes]`;
//!
//! metadata: the format, the fine-tuning config (TOML, which names the backbone's files), the
//! epoch and the ranks. [`load`] reads the backbone from the config's paths and puts the
//! adapters back on it; [`export_merged`] folds them in and writes a HuggingFace-layout
//! backbone plus `classifier.*` that `ViT::load` (and transformers) read.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use rand::{rngs::StdRng, SeedableRng};

use super::{meta_field, take, to_entry, to_json};
use crate::config::FinetuneConfig;
use crate::io::{atomic_write, read_metadata, read_safetensors, write_safetensors, TensorMap};
use crate::layers::AdapterTarget;
use crate::layers::{DenseLinear, LowRankLinear};
use crate::models::vit::ViT;
use crate::models::ViTClassifier;
use crate::{Error, Result};

/// The adapter checkpoint format this code writes and reads.
pub const FORMAT: &str = "dlrt-adapters-1";

/// The checkpoint name of an adapter.
fn adapter_name(layer: usize, target: AdapterTarget) -> String {
    format!("encoder.layer.{layer}.{}", target.name())
}

/// Saves the adapters and the head of `model` (atomically).
pub fn save<B: Backend>(
    path: &Path,
    model: &ViTClassifier<B>,
    config: &FinetuneConfig,
    epoch: usize,
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
        ("config".to_string(), config.to_toml()),
        ("epoch".to_string(), epoch.to_string()),
        ("ranks".to_string(), to_json(&model.ranks())),
    ]);
    write_safetensors(path, &tensors, meta)
}

/// Whether `path` is an adapter checkpoint (by its metadata); `false` for other safetensors.
pub fn is_adapter_checkpoint(path: &Path) -> Result<bool> {
    Ok(read_metadata(path)?.get("format").is_some_and(|f| f == FORMAT))
}

/// Loads the backbone named by the checkpoint's config and puts the checkpoint's adapters and
/// head on it; returns the model, the config and the epoch. Every tensor's name and shape is
/// checked, and tensors left over are reported.
pub fn load<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(ViTClassifier<B>, FinetuneConfig, usize)> {
    let (mut tensors, meta) = read_safetensors(path)?;
    match meta.get("format") {
        Some(f) if f == FORMAT => {}
        other => return Err(Error::bad_file(path, "metadata.format", FORMAT, format!("{other:?}"))),
    }
    let text = meta
        .get("config")
        .ok_or_else(|| Error::bad_file(path, "metadata.config", "a fine-tuning config", "none"))?;
    let config = FinetuneConfig::from_toml(text, &path.join("<metadata.config>"))?;
    let epoch = meta_field(&meta, path, "epoch")?;
    let b = &config.backbone;
    let backbone = ViT::<B>::load(&b.weights, b.config_json(), device)?;
    let head_w: burn::tensor::Tensor<B, 2> = take(&mut tensors, path, "head.weight", None, device)?;
    let [d, classes] = head_w.dims();
    if d != backbone.config().hidden_size {
        let expected = format!("shape [{}, classes]", backbone.config().hidden_size);
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

/// Folds the adapters into the backbone and writes it in HuggingFace's layout to `path`, with
/// the head as `classifier.weight` `[classes, D]` / `classifier.bias` (as in
/// `ViTForImageClassification`), and the backbone's `config.json` next to it.
pub fn export_merged<B: Backend>(path: &Path, model: &ViTClassifier<B>) -> Result<()> {
    let mut backbone = model.backbone.clone();
    backbone.merge_adapters()?;
    let mut tensors = backbone.to_tensors();
    tensors.insert("classifier.weight".into(), to_entry(&model.head.weight().clone().transpose()));
    if let Some(b) = model.head.bias() {
        tensors.insert("classifier.bias".into(), to_entry(b));
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(path, &tensors, meta)?;
    let json = path.with_file_name("config.json");
    atomic_write(&json, backbone.config().to_json().as_bytes())
}
