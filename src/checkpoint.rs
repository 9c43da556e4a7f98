//! Checkpoints and weight files: safetensors with the config and the run state as metadata.
//!
//! A checkpoint holds, under the layer paths of the network (`layers.{i}.…`, for the MLP or
//! LeNet-5, whose convolutions are stored as their matricised kernels, n = C_in·k·k):
//! - low-rank layers: `u` `[n, r]`, `s` `[r, r]`, `v` `[m, r]`, `bias` `[m]`;
//! - dense layers: `weight` `[n, m]` (Burn's orientation, z = x W + b), `bias` `[m]`;
//! - optimizer state: `opt.{role}.m1`, `.m2` and the bases `.left`, `.right` it is expressed in;
//!
//! and in the metadata the format version, the run config (TOML), the epoch, the step, the
//! integrator counters, the ranks, the optimizer step counts, the network's input width
//! (`inputs`) and image shape (`image`, `[C, H, W]`) and the class names in label order (`labels`, JSON). Tensors are stored as f32,
//! written atomically ([`crate::io`]).

pub mod adapters;
pub mod peft;
pub mod trainer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::config::{ModelKind, RunConfig};
use crate::data::DatasetSource;
use crate::integrators::{CounterSnapshot, FactorSlots, LayerState, TrainState};
use crate::io::{
    check_not_input, read_metadata, read_safetensors, write_safetensors, write_safetensors_as, FileDtype,
    TensorMap,
};
use crate::layers::{DenseLinear, LowRankLinear};
use crate::models::{lenet5, Layer, LeNet5, Mlp, Net};
use crate::optim::{DenseSlots, Slot, State};
use crate::{Error, Result};

/// The checkpoint format this code writes and reads.
pub const FORMAT: &str = "dlrt-checkpoint-1";
/// `metadata.format` of a dense export ([`export_dense`]).
pub const DENSE_FORMAT: &str = "dlrt-dense-1";

/// The run state stored next to the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The run's config.
    pub config: RunConfig,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// The integrator's counters at the checkpoint.
    pub counters: CounterSnapshot,
    /// The network's input width (channels·rows·cols of the data set's images).
    pub inputs: usize,
    /// The data set's image shape `[C, H, W]` (LeNet-5's layer sizes follow from it).
    pub image: [usize; 3],
    /// The class names in label order (the head's labels; their count is the output width).
    pub labels: Vec<String>,
}

impl RunState {
    /// The MLP's layer widths: `[inputs, hidden…, labels.len()]`.
    pub fn widths(&self) -> Vec<usize> {
        self.config.widths(self.inputs, self.labels.len())
    }

    /// The (n, m) of each layer of the configured network.
    pub fn layer_shapes(&self) -> Result<Vec<(usize, usize)>> {
        match self.config.model.kind {
            ModelKind::Mlp => Ok(self.widths().windows(2).map(|w| (w[0], w[1])).collect()),
            ModelKind::LeNet5 => Ok(lenet5::geometry(self.image, self.labels.len())?.shapes),
        }
    }
}

fn to_entry<B: Backend, const D: usize>(t: &Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let data = t.to_data().convert::<f32>();
    (data.shape.to_vec(), data.to_vec::<f32>().expect("converted to f32"))
}

/// Takes tensor `name` out of `tensors`, checking its shape; errors name the file and tensor.
fn take<B: Backend, const D: usize>(
    tensors: &mut TensorMap,
    path: &Path,
    name: &str,
    shape: Option<[usize; D]>,
    device: &B::Device,
) -> Result<Tensor<B, D>> {
    let (got, values) =
        tensors.remove(name).ok_or_else(|| Error::bad_file(path, name, "a tensor of this name", "none"))?;
    let ok = got.len() == D && shape.is_none_or(|s| s.as_slice() == got.as_slice());
    if !ok {
        let expected = shape.map_or(format!("{D} dimensions"), |s| format!("shape {s:?}"));
        return Err(Error::bad_file(path, name, expected, format!("shape {got:?}")));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::bad_file(path, name, "finite values", "NaN or infinity"));
    }
    Ok(Tensor::from_data(TensorData::new(values, got), device))
}

fn factor_slots<B: Backend>(s: &FactorSlots<B>) -> [(&'static str, &Slot<B>); 6] {
    [("k", &s.k), ("l", &s.l), ("s", &s.s), ("u", &s.u), ("v", &s.v), ("bias", &s.bias)]
}

fn put_slot<B: Backend>(
    prefix: &str,
    slot: &Slot<B>,
    tensors: &mut TensorMap,
    times: &mut BTreeMap<String, usize>,
) {
    let Some(state) = &slot.state else { return };
    times.insert(prefix.to_string(), state.time);
    let parts =
        [("m1", &state.moment_1), ("m2", &state.moment_2), ("left", &slot.left), ("right", &slot.right)];
    for (part, t) in parts {
        if let Some(t) = t {
            tensors.insert(format!("{prefix}.{part}"), to_entry(t));
        }
    }
}

/// The shapes a slot's tensors must have: the parameter's `[rows, cols]` in ambient
/// coordinates, and the row count of each basis its state may be recorded in (`None`: it has
/// none). A moment has the basis' width in place of a dimension that has a basis.
#[derive(Clone, Copy)]
struct SlotShape {
    param: [usize; 2],
    left_rows: Option<usize>,
    right_rows: Option<usize>,
}

fn get_slot<B: Backend>(
    prefix: &str,
    shape: SlotShape,
    tensors: &mut TensorMap,
    times: &BTreeMap<String, usize>,
    path: &Path,
    device: &B::Device,
) -> Result<Slot<B>> {
    let Some(&time) = times.get(prefix) else { return Ok(Slot::default()) };
    let mut part = |p: &str, rows: Option<usize>| -> Result<Option<Tensor<B, 2>>> {
        let name = format!("{prefix}.{p}");
        if !tensors.contains_key(&name) {
            return Ok(None);
        }
        let Some(rows) = rows else {
            return Err(Error::bad_file(path, name, "no such basis for this parameter", "a tensor"));
        };
        let t: Tensor<B, 2> = take(tensors, path, &name, None, device)?;
        let [n, r] = t.dims();
        if n != rows || r == 0 || r > rows {
            return Err(Error::bad_file(
                path,
                name,
                format!("shape [{rows}, r], 1 ≤ r ≤ {rows}"),
                format!("{:?}", [n, r]),
            ));
        }
        Ok(Some(t))
    };
    let left = part("left", shape.left_rows)?;
    let right = part("right", shape.right_rows)?;
    let width =
        |basis: &Option<Tensor<B, 2>>, ambient: usize| basis.as_ref().map_or(ambient, |b| b.dims()[1]);
    let moment = [width(&left, shape.param[0]), width(&right, shape.param[1])];
    let mut moment_part = |p: &str| -> Result<Option<Tensor<B, 2>>> {
        let name = format!("{prefix}.{p}");
        match tensors.contains_key(&name) {
            true => take(tensors, path, &name, Some(moment), device).map(Some),
            false => Ok(None),
        }
    };
    let (moment_1, moment_2) = (moment_part("m1")?, moment_part("m2")?);
    Ok(Slot { state: Some(State { time, moment_1, moment_2 }), left, right })
}

/// The optimizer state of a low-rank layer with n×r `u` and m×r `v` (module docs of
/// [`crate::optim`]: K in V, L in U, S in both).
fn get_factor_slots<B: Backend>(
    prefix: &str,
    [n, m, r]: [usize; 3],
    tensors: &mut TensorMap,
    times: &BTreeMap<String, usize>,
    path: &Path,
    device: &B::Device,
) -> Result<FactorSlots<B>> {
    let shape = |param, left_rows, right_rows| SlotShape { param, left_rows, right_rows };
    let mut get =
        |role: &str, s: SlotShape| get_slot(&format!("{prefix}.opt.{role}"), s, tensors, times, path, device);
    Ok(FactorSlots {
        k: get("k", shape([n, r], None, Some(m)))?,
        l: get("l", shape([m, r], None, Some(n)))?,
        s: get("s", shape([r, r], Some(n), Some(m)))?,
        u: get("u", shape([n, r], None, None))?,
        v: get("v", shape([m, r], None, None))?,
        bias: get("bias", shape([1, m], None, None))?,
    })
}

/// The optimizer state of a dense n×m layer and its bias.
fn get_dense_slots<B: Backend>(
    prefix: &str,
    [n, m]: [usize; 2],
    tensors: &mut TensorMap,
    times: &BTreeMap<String, usize>,
    path: &Path,
    device: &B::Device,
) -> Result<DenseSlots<B>> {
    let ambient = |param| SlotShape { param, left_rows: None, right_rows: None };
    Ok(DenseSlots {
        weight: get_slot(&format!("{prefix}.opt.weight"), ambient([n, m]), tensors, times, path, device)?,
        bias: get_slot(&format!("{prefix}.opt.bias"), ambient([1, m]), tensors, times, path, device)?,
    })
}

/// Saves the network, its optimizer state (`train`, in the network's layer order) and the run
/// state to `path` (atomically).
pub fn save<B: Backend>(path: &Path, model: &Net<B>, train: &TrainState<B>, state: &RunState) -> Result<()> {
    let mut tensors = TensorMap::new();
    let mut times = BTreeMap::new();
    let (mut low_rank, mut dense) = (train.low_rank.iter(), train.dense.iter());
    for (i, layer) in model.layers().iter().enumerate() {
        let p = format!("layers.{i}");
        match layer {
            Layer::LowRank(l) => {
                tensors.insert(format!("{p}.u"), to_entry(l.u()));
                tensors.insert(format!("{p}.s"), to_entry(l.s()));
                tensors.insert(format!("{p}.v"), to_entry(l.v()));
                if let Some(b) = l.bias() {
                    tensors.insert(format!("{p}.bias"), to_entry(b));
                }
                if let Some(layer_state) = low_rank.next() {
                    for (role, slot) in factor_slots(&layer_state.slots) {
                        put_slot(&format!("{p}.opt.{role}"), slot, &mut tensors, &mut times);
                    }
                }
            }
            Layer::Dense(l) => {
                tensors.insert(format!("{p}.weight"), to_entry(l.weight()));
                if let Some(b) = l.bias() {
                    tensors.insert(format!("{p}.bias"), to_entry(b));
                }
                if let Some(slots) = dense.next() {
                    put_slot(&format!("{p}.opt.weight"), &slots.weight, &mut tensors, &mut times);
                    put_slot(&format!("{p}.opt.bias"), &slots.bias, &mut tensors, &mut times);
                }
            }
        }
    }
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("config".to_string(), state.config.to_toml()?),
        ("epoch".to_string(), state.epoch.to_string()),
        ("step".to_string(), state.step.to_string()),
        ("counters".to_string(), to_json(&state.counters)),
        ("ranks".to_string(), to_json(&model.ranks())),
        ("optimizer_steps".to_string(), to_json(&times)),
        ("inputs".to_string(), state.inputs.to_string()),
        ("image".to_string(), to_json(&state.image)),
        ("labels".to_string(), to_json(&state.labels)),
    ]);
    write_safetensors(path, &tensors, meta)
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

fn meta_field<T: std::str::FromStr>(meta: &HashMap<String, String>, path: &Path, key: &str) -> Result<T> {
    let raw = meta
        .get(key)
        .ok_or_else(|| Error::bad_file(path, format!("metadata.{key}"), "present", "missing"))?;
    raw.parse().map_err(|_| Error::bad_file(path, format!("metadata.{key}"), "a number", raw))
}

fn meta_json<T: serde::de::DeserializeOwned>(
    meta: &HashMap<String, String>,
    path: &Path,
    key: &str,
) -> Result<T> {
    let raw = meta
        .get(key)
        .ok_or_else(|| Error::bad_file(path, format!("metadata.{key}"), "present", "missing"))?;
    serde_json::from_str(raw).map_err(|e| Error::bad_file(path, format!("metadata.{key}"), "valid JSON", e))
}

/// The run config stored in a checkpoint written by [`save`], from its header alone.
pub fn load_config(path: &Path) -> Result<RunConfig> {
    config_of(&read_metadata(path)?, path)
}

/// Checks that a safetensors file's `metadata.format` is `expected`; the error says what the
/// file is instead where dlrt wrote it.
pub(crate) fn require_format(path: &Path, meta: &HashMap<String, String>, expected: &str) -> Result<()> {
    let got = meta.get("format").map(String::as_str);
    if got == Some(expected) {
        return Ok(());
    }
    let got = match got {
        None => "none (not a file dlrt wrote)".to_string(),
        Some(FORMAT) => format!("{FORMAT} (a `dlrt train` checkpoint)"),
        Some(adapters::FORMAT) => format!("{} (a `dlrt finetune` checkpoint)", adapters::FORMAT),
        Some(DENSE_FORMAT) => format!("{DENSE_FORMAT} (a `dlrt export`, not a checkpoint)"),
        Some(trainer::FORMAT) => format!("{} (a trainer state)", trainer::FORMAT),
        Some(other) => format!("{other} (not a file dlrt wrote)"),
    };
    Err(Error::bad_file(path, "metadata.format", expected, got))
}

fn config_of(meta: &HashMap<String, String>, path: &Path) -> Result<RunConfig> {
    require_format(path, meta, FORMAT)?;
    let text =
        meta.get("config").ok_or_else(|| Error::bad_file(path, "metadata.config", "a run config", "none"))?;
    RunConfig::from_toml(text, &path.join("<metadata.config>"))
}

/// What `dlrt export` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Dense weights: W = U S Vᵀ of a trained network, or the backbone with the adapters merged
    /// and the head (HF layout).
    #[default]
    Dense,
    /// A peft LoRA adapter folder (fine-tuning checkpoints only), with transformers 5's module
    /// names (the `peft` module says how).
    Peft,
    /// The same with transformers 4's module names.
    PeftTransformers4,
}

/// Writes a checkpoint in `format`, next to the checkpoint unless `out` says where, and returns
/// the path written:
/// - [`ExportFormat::Dense`]: W = U S Vᵀ of a trained network ([`export_dense`], default
///   `dense.safetensors`), or a fine-tuned backbone with its adapters merged and the head
///   ([`adapters::export_merged`], a folder, default `merged/`);
/// - [`ExportFormat::Peft`], [`ExportFormat::PeftTransformers4`]: a fine-tuning checkpoint's
///   adapters and head as a peft LoRA adapter ([`peft::export`], default the folder `peft/`).
///
/// `dtype` is the float type of the tensors written ([`FileDtype::Bf16`]: each rounded to the
/// nearest bf16).
pub fn export(path: &Path, out: Option<PathBuf>, format: ExportFormat, dtype: FileDtype) -> Result<PathBuf> {
    let device = Default::default();
    if adapters::is_adapter_checkpoint(path)? {
        let (model, config, _) = adapters::load::<crate::CpuBackend>(path, &device)?;
        let labels = adapters::labels(path, model.head.weight().dims()[1])?;
        let names = match format {
            ExportFormat::Dense => None,
            ExportFormat::Peft => Some(peft::ModuleNames::Transformers5),
            ExportFormat::PeftTransformers4 => Some(peft::ModuleNames::Transformers4),
        };
        let b = &config.backbone;
        if let Some(names) = names {
            let out = out.unwrap_or_else(|| path.with_file_name("peft"));
            folder_out(
                &out,
                "the peft export writes adapter_model.safetensors and adapter_config.json into it",
            )?;
            for file in [peft::WEIGHTS, peft::CONFIG] {
                check_not_input(&out.join(file), "--out", &[path, &b.weights(), &b.config_json()])?;
            }
            let weights = b.weights();
            let base = crate::models::ViT::load(&weights, b.config_json(), &device)?;
            let base_dir = weights.parent().unwrap_or(Path::new("."));
            peft::export(&out, &model, &base, base_dir, &labels, names, dtype)?;
            return Ok(out);
        }
        let out = out.unwrap_or_else(|| path.with_file_name("merged"));
        let what = "the merged export writes model.safetensors and config.json into it, as transformers' \
                    from_pretrained reads them";
        folder_out(&out, what)?;
        for file in [adapters::MERGED_WEIGHTS, "config.json"] {
            check_not_input(&out.join(file), "--out", &[path, &b.weights(), &b.config_json()])?;
        }
        adapters::export_merged(&out, &model, &labels, dtype)?;
        return Ok(out);
    }
    let (model, _, state) = load::<crate::CpuBackend>(path, &device)?;
    if format != ExportFormat::Dense {
        let what = format!(
            "--format peft of {}: a network trained from scratch has no base model; peft adapters \
             come from `dlrt finetune` checkpoints",
            path.display()
        );
        return Err(Error::Unsupported(what));
    }
    let out = out.unwrap_or_else(|| path.with_file_name("dense.safetensors"));
    if out.is_dir() {
        let expected = "a file: a network trained from scratch exports one safetensors file";
        return Err(Error::config("--out", out.display(), expected));
    }
    check_not_input(&out, "--out", &[path])?;
    create_parent(&out)?;
    export_dense(&out, &model, &state, dtype)?;
    Ok(out)
}

/// Refuses an `--out` of a folder export that names a file (an existing one, or a
/// `.safetensors` name); `what` says what goes into the folder.
fn folder_out(out: &Path, what: &str) -> Result<()> {
    if out.extension().is_some_and(|e| e == "safetensors") || out.is_file() {
        return Err(Error::config("--out", out.display(), &format!("a folder: {what}")));
    }
    Ok(())
}

/// Creates the folder a file is written into, as the peft export creates its own.
fn create_parent(file: &Path) -> Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
        }
        _ => Ok(()),
    }
}

/// Loads a checkpoint written by [`save`]; every tensor's name and shape is checked against
/// the config stored with it, and unexpected tensors are reported.
///
/// A checkpoint's ranks are its own: each low-rank layer takes the rank of its stored `u`
/// (any 1 ≤ r ≤ min(n, m)), whatever rank the config starts new runs at.
pub fn load<B: Backend>(path: &Path, device: &B::Device) -> Result<(Net<B>, TrainState<B>, RunState)> {
    let (mut tensors, meta) = read_safetensors(path)?;
    let config = config_of(&meta, path)?;
    // Checkpoints of a built-in data set written before `inputs` and `labels` were stored.
    let (inputs, labels) = match (meta.contains_key("inputs"), &config.train.dataset) {
        (false, DatasetSource::Named(d)) => {
            (d.features(), d.class_names().iter().map(|c| c.to_string()).collect::<Vec<String>>())
        }
        _ => (meta_field(&meta, path, "inputs")?, meta_json(&meta, path, "labels")?),
    };
    if labels.is_empty() {
        return Err(Error::bad_file(path, "metadata.labels", "at least one class name", "[]"));
    }
    // Checkpoints written before `image` was stored: a built-in data set's images are 1×28×28,
    // and only the MLP (which flattens its input) existed.
    let image = match (meta.contains_key("image"), &config.train.dataset) {
        (true, _) => {
            let image: [usize; 3] = meta_json(&meta, path, "image")?;
            let [c, h, w] = image;
            let sides = 1..=crate::data::MAX_IMAGE_SIDE;
            let pixels = c.checked_mul(h).and_then(|x| x.checked_mul(w));
            if !(matches!(c, 1 | 3) && sides.contains(&h) && sides.contains(&w) && pixels == Some(inputs)) {
                let expected = format!(
                    "[C, H, W] with C = 1 or 3, H and W from 1 to {} and C·H·W = {inputs} (metadata.inputs)",
                    crate::data::MAX_IMAGE_SIDE
                );
                return Err(Error::bad_file(path, "metadata.image", expected, format!("{image:?}")));
            }
            image
        }
        (false, DatasetSource::Named(_)) => [1, 28, 28],
        (false, DatasetSource::Folder(_)) => [inputs, 1, 1],
    };
    if config.model.kind == ModelKind::LeNet5 {
        let sides = lenet5::MIN_SIDE..=lenet5::MAX_SIDE;
        if !(sides.contains(&image[1]) && sides.contains(&image[2])) {
            let expected =
                format!("LeNet-5 images of {} to {} pixels a side", lenet5::MIN_SIDE, lenet5::MAX_SIDE);
            return Err(Error::bad_file(path, "metadata.image", expected, format!("{image:?}")));
        }
    }
    let state = RunState {
        image,
        epoch: meta_field(&meta, path, "epoch")?,
        step: meta_field(&meta, path, "step")?,
        counters: meta_json(&meta, path, "counters")?,
        config,
        inputs,
        labels,
    };
    let times: BTreeMap<String, usize> = meta_json(&meta, path, "optimizer_steps")?;
    let flags = state.config.low_rank_flags()?;
    let (mut layers, mut train) = (Vec::new(), TrainState::default());
    for (i, (&(n, m), &low_rank)) in state.layer_shapes()?.iter().zip(&flags).enumerate() {
        let p = format!("layers.{i}");
        let bias = Some(take(&mut tensors, path, &format!("{p}.bias"), Some([m]), device)?);
        if low_rank {
            let u: Tensor<B, 2> = take(&mut tensors, path, &format!("{p}.u"), None, device)?;
            let r = u.dims()[1];
            if u.dims()[0] != n || r == 0 || r > n.min(m) {
                return Err(Error::bad_file(
                    path,
                    format!("{p}.u"),
                    format!("shape [{n}, r], 1 ≤ r ≤ {}", n.min(m)),
                    format!("{:?}", u.dims()),
                ));
            }
            let s = take(&mut tensors, path, &format!("{p}.s"), Some([r, r]), device)?;
            let v = take(&mut tensors, path, &format!("{p}.v"), Some([m, r]), device)?;
            let layer = LowRankLinear::from_factors(u, s, v, bias)?;
            let slots = get_factor_slots(&p, [n, m, r], &mut tensors, &times, path, device)?;
            train.low_rank.push(LayerState { slots, pending: None });
            layers.push(Layer::LowRank(layer));
        } else {
            let w = take(&mut tensors, path, &format!("{p}.weight"), Some([n, m]), device)?;
            let layer = DenseLinear::from_weights(w, bias)?;
            train.dense.push(get_dense_slots(&p, [n, m], &mut tensors, &times, path, device)?);
            layers.push(Layer::Dense(layer));
        }
    }
    if let Some(name) = tensors.keys().next() {
        return Err(Error::bad_file(
            path,
            name,
            "only the tensors of the configured network",
            "an unexpected tensor",
        ));
    }
    let mut model = match state.config.model.kind {
        ModelKind::Mlp => Net::Mlp(Mlp { layers }),
        ModelKind::LeNet5 => Net::LeNet5(LeNet5::from_layers(state.image, state.labels.len(), layers)?),
    };
    // The stored parameters are f32 either way; the run computed in its precision.
    model.set_precision(state.config.model.precision);
    Ok((model, train, state))
}

/// Writes the dense weights `layers.{i}.weight` = U S Vᵀ ([n, m], z = x W + b; a convolution's
/// matricised kernel, n = C_in·k·k) and biases, with the run's config and class names
/// (`labels`) as metadata.
pub fn export_dense<B: Backend>(
    path: &Path,
    model: &Net<B>,
    state: &RunState,
    dtype: FileDtype,
) -> Result<()> {
    let mut tensors = TensorMap::new();
    for (i, layer) in model.layers().iter().enumerate() {
        let (w, b) = match layer {
            Layer::LowRank(l) => l.merge(),
            Layer::Dense(l) => (l.weight().clone(), l.bias().cloned()),
        };
        tensors.insert(format!("layers.{i}.weight"), to_entry(&w));
        if let Some(b) = b {
            tensors.insert(format!("layers.{i}.bias"), to_entry(&b));
        }
    }
    let orientation = match state.config.model.kind {
        ModelKind::Mlp => "weight is [fan_in, fan_out]: z = x W + b",
        // As layers::conv2d keeps them; PyTorch's kernel is W transposed and reshaped.
        ModelKind::LeNet5 => {
            "weight is [fan_in, fan_out]: z = x W + b; layers 0 and 1 are convolutions, their \
             weight [C_in·k_h·k_w, C_out] with W[c·k_h·k_w + i·k_w + j, o] = kernel[o, c, i, j], \
             so PyTorch's kernel is weight.T.reshape(C_out, C_in, k_h, k_w)"
        }
    };
    let meta = HashMap::from([
        ("format".to_string(), DENSE_FORMAT.to_string()),
        ("orientation".to_string(), orientation.to_string()),
        ("config".to_string(), state.config.to_toml()?),
        ("labels".to_string(), to_json(&state.labels)),
    ]);
    write_safetensors_as(path, &tensors, meta, dtype)
}
