//! A vision transformer backbone (ViT, DINOv2) whose projections can carry low-rank adapters.
//!
//! ViT (Dosovitskiy et al., "An Image is Worth 16x16 Words", arXiv:2010.11929) cuts an image
//! into p×p patches, embeds each patch linearly, prepends a learned CLS token, adds position
//! embeddings and runs pre-norm transformer blocks; the CLS token after the final layer norm is
//! the image's feature vector. DINOv2 (Oquab et al., arXiv:2304.07193) is the same network with
//! a learned per-channel *layer scale* λ on both residual branches. Both follow HuggingFace's
//! `ViTModel` and `Dinov2Model` (`modeling_vit.py`, `modeling_dinov2.py`), whose `config.json`
//! and safetensors names this file reads and writes.
//!
//! # Shapes (D hidden size, H heads, d_h = D/H, I MLP width, p patch, N = (H_img/p)·(W_img/p))
//!
//! ```text
//! images                  [B, C, H_img, W_img]
//! patches · W_patch + b   [B, N, D]         a conv with stride = kernel = p, done as one matmul
//! [CLS; patches] + pos    [B, 1 + N, D]     pos interpolated when the grid is not the stored one
//! L × block:  x ← x + λ1 ⊙ Attn(LN1(x))     Attn: per head softmax(Q Kᵀ/√d_h) V, [B, H, T, d_h]
//!             x ← x + λ2 ⊙ W2 GELU(W1 LN2(x))   (λ = 1 for ViT; exact erf GELU)
//! LN(x)[:, 0]             [B, D]            the CLS features returned by `forward`
//! ```
//!
//! # Names in the safetensors file (prefix `vit.` optional for ViT; PyTorch `[out, in]` layout)
//!
//! | part | ViT | DINOv2 | shape |
//! |---|---|---|---|
//! | CLS token | `embeddings.cls_token` | same | `[1, 1, D]` |
//! | position | `embeddings.position_embeddings` | same | `[1, 1 + g², D]` |
//! | patch conv | `embeddings.patch_embeddings.projection.{weight,bias}` | same | `[D, C, p, p]`, `[D]` |
//! | layer `i` norm 1 | `encoder.layer.{i}.layernorm_before` | `….norm1` | `[D]` |
//! | Q, K, V | `….attention.attention.{query,key,value}` | same | `[D, D]` |
//! | attention out | `….attention.output.dense` | same | `[D, D]` |
//! | layer scale 1 | — | `….layer_scale1.lambda1` | `[D]` |
//! | norm 2 | `….layernorm_after` | `….norm2` | `[D]` |
//! | MLP in / out | `….intermediate.dense` / `….output.dense` | `….mlp.fc1` / `….mlp.fc2` | `[I, D]` / `[D, I]` |
//! | layer scale 2 | — | `….layer_scale2.lambda1` | `[D]` |
//! | final norm | `layernorm` | same | `[D]` |
//!
//! g = `image_size / patch_size` is the stored position grid. `mask_token`, `pooler.*` and
//! `classifier.*` are ignored. Linear weights are transposed once, on load, to this crate's
//! n×m orientation (`z = x W + b`); tensors are held in the file as f32.
//!
//! # Adapters
//!
//! Every projection (Q, K, V, attention output, MLP in and out) is a [`Projection`]: frozen
//! dense, or a [`LowRankLinear::adapter`] `z = x W0 + x U S Vᵀ + b` with W0 frozen and S = 0 at
//! the start, so adding adapters does not change the network. The adapter's bias is a leaf the
//! integrators step, as for every low-rank layer; W0 never changes.

use std::path::Path;

use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    module::interpolate,
    ops::{InterpolateMode, InterpolateOptions},
    DType, FloatDType, Tensor, TensorData,
};
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Deserialize;

use crate::io::{read_safetensors, write_safetensors, TensorMap};
use crate::layers::heads::{merge_heads, split_heads};
use crate::layers::{
    attention, gelu, softmax, AdapterTarget, Attention, DenseLinear, LowRankLinear, Network, Precision,
};
use crate::{Error, Result};

/// Which HuggingFace architecture, and so which tensor names and whether there is layer scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `ViTModel` (`model_type = "vit"`), e.g. `google/vit-base-patch16-224`.
    ViT,
    /// `Dinov2Model` (`model_type = "dinov2"`): layer scale on both residual branches.
    Dinov2,
}

/// The architecture, read from a HuggingFace `config.json` (unknown keys are ignored).
///
/// Mirrors `ViTConfig` / `Dinov2Config` of transformers. The variant is `model_type`, or
/// DINOv2 when only `layerscale_value` is there; DINOv2's MLP width is
/// `hidden_size · mlp_ratio` (it has no `intermediate_size`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "HfConfig")]
pub struct ViTConfig {
    /// ViT or DINOv2.
    pub variant: Variant,
    /// D, the width of every token.
    pub hidden_size: usize,
    /// L, the number of blocks.
    pub num_hidden_layers: usize,
    /// H; D must be a multiple of it.
    pub num_attention_heads: usize,
    /// I, the MLP width.
    pub intermediate_size: usize,
    /// Pretraining image side; `image_size / patch_size` is the stored position grid.
    pub image_size: usize,
    /// p, the patch side.
    pub patch_size: usize,
    /// C, channels of the input images.
    pub num_channels: usize,
    /// ε of every layer norm.
    pub layer_norm_eps: f64,
    /// The MLP activation; only `"gelu"` (exact, erf) is supported.
    pub hidden_act: String,
    /// Whether Q, K and V have biases.
    pub qkv_bias: bool,
    /// DINOv2: the value layer scales start at in [`ViT::random`]; unused by ViT.
    pub layerscale_value: f64,
}

/// `config.json` as transformers writes it; resolved into [`ViTConfig`].
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: Option<usize>,
    mlp_ratio: Option<f64>,
    image_size: usize,
    patch_size: usize,
    num_channels: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    qkv_bias: Option<bool>,
    layerscale_value: Option<f64>,
    #[serde(default)]
    use_swiglu_ffn: bool,
}

impl TryFrom<HfConfig> for ViTConfig {
    type Error = Error;
    fn try_from(hf: HfConfig) -> Result<Self> {
        let variant = match (hf.model_type.as_deref(), hf.layerscale_value) {
            (Some("vit"), _) | (None, None) => Variant::ViT,
            (Some("dinov2"), _) | (None, Some(_)) => Variant::Dinov2,
            (Some(other), _) => return Err(Error::config("model_type", other, "\"vit\" or \"dinov2\"")),
        };
        if hf.use_swiglu_ffn {
            return Err(Error::config("use_swiglu_ffn", true, "false (SwiGLU MLPs are not supported)"));
        }
        let intermediate_size = match variant {
            Variant::ViT => hf.intermediate_size.ok_or_else(|| {
                Error::config("intermediate_size", "missing", "the MLP width of a ViT config")
            })?,
            // transformers: int(hidden_size * mlp_ratio).
            Variant::Dinov2 => (hf.hidden_size as f64 * hf.mlp_ratio.unwrap_or(4.0)) as usize,
        };
        let config = ViTConfig {
            variant,
            hidden_size: hf.hidden_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            intermediate_size,
            image_size: hf.image_size,
            patch_size: hf.patch_size,
            num_channels: hf.num_channels.unwrap_or(3),
            // transformers' defaults differ between the two classes.
            layer_norm_eps: hf.layer_norm_eps.unwrap_or(if variant == Variant::ViT { 1e-12 } else { 1e-6 }),
            hidden_act: hf.hidden_act.unwrap_or_else(|| "gelu".into()),
            qkv_bias: hf.qkv_bias.unwrap_or(true),
            layerscale_value: hf.layerscale_value.unwrap_or(1.0),
        };
        config.validate()?;
        Ok(config)
    }
}

impl ViTConfig {
    /// `google/vit-base-patch16-224` (its `config.json` on the HF hub).
    pub fn vit_base_patch16_224() -> Self {
        Self {
            variant: Variant::ViT,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            image_size: 224,
            patch_size: 16,
            num_channels: 3,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
            qkv_bias: true,
            layerscale_value: 1.0,
        }
    }

    /// `facebook/dinov2-small` (ViT-S/14, 37×37 position grid).
    pub fn dinov2_small() -> Self {
        Self {
            variant: Variant::Dinov2,
            hidden_size: 384,
            num_attention_heads: 6,
            intermediate_size: 1536,
            image_size: 518,
            patch_size: 14,
            layer_norm_eps: 1e-6,
            ..Self::vit_base_patch16_224()
        }
    }

    /// Reads and validates a HuggingFace `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::bad_file(path, "config", "a ViT or DINOv2 config", e))
    }

    /// The config as a HuggingFace `config.json` that [`ViTConfig::from_file`] reads back.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::json!({
            "model_type": match self.variant { Variant::ViT => "vit", Variant::Dinov2 => "dinov2" },
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": self.num_channels,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": self.hidden_act,
            "qkv_bias": self.qkv_bias,
        });
        let extra = match self.variant {
            Variant::ViT => serde_json::json!({ "intermediate_size": self.intermediate_size }),
            // transformers 5 requires an integer ratio; a fractional one is written as it is.
            Variant::Dinov2 => serde_json::json!({
                "mlp_ratio": if self.intermediate_size.is_multiple_of(self.hidden_size) {
                    serde_json::json!(self.intermediate_size / self.hidden_size)
                } else {
                    serde_json::json!(self.intermediate_size as f64 / self.hidden_size as f64)
                },
                "layerscale_value": self.layerscale_value,
            }),
        };
        json.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
        serde_json::to_string_pretty(&json).expect("JSON values serialise")
    }

    /// Rejects sizes the network cannot have; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("patch_size", self.patch_size),
            ("num_channels", self.num_channels),
        ];
        if let Some((field, v)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::config(field, v, "≥ 1"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            let expected = format!("a divisor of hidden_size = {}", self.hidden_size);
            return Err(Error::config("num_attention_heads", self.num_attention_heads, &expected));
        }
        if self.image_size < self.patch_size {
            return Err(Error::config("image_size", self.image_size, "≥ patch_size"));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(Error::config("layer_norm_eps", self.layer_norm_eps, "a positive number"));
        }
        if self.hidden_act != "gelu" {
            return Err(Error::config("hidden_act", &self.hidden_act, "\"gelu\" (exact, erf-based)"));
        }
        Ok(())
    }

    /// g, the side of the stored position grid.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    fn describe(&self) -> String {
        let (d, l, i, g) = (self.hidden_size, self.num_hidden_layers, self.intermediate_size, self.grid());
        format!("the tensors of a {:?} with D = {d}, {l} layers, I = {i}, {g}×{g} grid", self.variant)
    }
}

/// Where the tensors of a model come from: a checkpoint, or random draws for tests.
enum Source<'a> {
    /// Tensors by name; each is removed when taken, so what is left at the end is unexpected.
    File {
        tensors: TensorMap,
        path: &'a Path,
    },
    Random(&'a mut StdRng),
}

/// How [`ViT::random`] draws a tensor: mean + std · N(0, 1).
#[derive(Clone, Copy)]
struct Init {
    mean: f64,
    std: f64,
}

/// Weights, biases, norm shifts: small but non-zero, so that a test sees each of them.
const SMALL: Init = Init { mean: 0.0, std: 0.1 };
/// Norm scales near 1.
const NEAR_ONE: Init = Init { mean: 1.0, std: 0.1 };

/// Hands out tensors by name, as candle's `VarBuilder`: each block asks for its own names, so a
/// name is spelled where its layer is built. Problems are collected, not returned at the first
/// one, so that one error can list all of them.
struct Weights<'a, B: Backend> {
    source: Source<'a>,
    device: &'a B::Device,
    missing: Vec<String>,
    misshaped: Vec<String>,
    non_finite: Vec<String>,
}

impl<'a, B: Backend> Weights<'a, B> {
    fn new(source: Source<'a>, device: &'a B::Device) -> Self {
        Self { source, device, missing: vec![], misshaped: vec![], non_finite: vec![] }
    }

    fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D], init: Init) -> Tensor<B, D> {
        let len = shape.iter().product();
        let values = match &mut self.source {
            // Drawn in f64, rounded to f32: the file stores f32, so a round trip is exact.
            Source::Random(rng) => (0..len)
                .map(|_| (init.mean + init.std * Distribution::<f64>::sample(&StandardNormal, rng)) as f32)
                .collect(),
            Source::File { tensors, .. } => match tensors.remove(name) {
                None => {
                    self.missing.push(name.to_string());
                    vec![0.0; len]
                }
                Some((got, _)) if got != shape => {
                    self.misshaped.push(format!("{name} (expected {shape:?}, got {got:?})"));
                    vec![0.0; len]
                }
                Some((_, values)) if values.iter().any(|v| !v.is_finite()) => {
                    self.non_finite.push(name.to_string());
                    vec![0.0; len]
                }
                Some((_, values)) => values,
            },
        };
        Tensor::from_data(TensorData::new(values, shape), self.device)
    }

    /// PyTorch's `nn.Linear` from n to m: `{name}.weight` is [m, n], transposed here, once.
    fn linear(&mut self, name: &str, n: usize, m: usize, bias: bool) -> Result<Projection<B>> {
        let weight_init = Init { mean: 0.0, std: 1.0 / (n as f64).sqrt() };
        let w = self.tensor(&format!("{name}.weight"), [m, n], weight_init);
        let b = bias.then(|| self.tensor(&format!("{name}.bias"), [m], SMALL));
        Ok(Projection::Frozen(DenseLinear::from_weights(transposed(w), b)?))
    }

    fn layer_norm(&mut self, name: &str, d: usize, eps: f64) -> LayerNorm<B> {
        let weight = self.tensor(&format!("{name}.weight"), [d], NEAR_ONE);
        LayerNorm { weight, bias: self.tensor(&format!("{name}.bias"), [d], SMALL), eps }
    }

    /// One error naming the file and every missing, unexpected, mis-shaped or non-finite tensor.
    fn finish(self, prefix: &str, expected: &str) -> Result<()> {
        let Source::File { tensors, path } = self.source else { return Ok(()) };
        let unexpected: Vec<_> = tensors.into_keys().filter(|n| !is_ignored(n, prefix)).collect();
        let lists = [
            ("missing", self.missing),
            ("unexpected", unexpected),
            ("mis-shaped", self.misshaped),
            ("non-finite", self.non_finite),
        ];
        let problems: Vec<_> = lists
            .into_iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(what, names)| format!("{} {what}: [{}]", names.len(), names.join(", ")))
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::bad_file(path, "tensors", expected, problems.join("; ")))
    }
}

/// Names a backbone does not use: DINOv2's mask token (masked pretraining), the pooler and
/// classification heads.
fn is_ignored(name: &str, prefix: &str) -> bool {
    let rest = name.strip_prefix(prefix).unwrap_or(name);
    rest == "embeddings.mask_token" || rest.starts_with("pooler.") || name.starts_with("classifier.")
}

/// `wᵀ`, stored row-major: the copy is made once, on load, not by every matmul with a strided view.
fn transposed<B: Backend>(w: Tensor<B, 2>) -> Tensor<B, 2> {
    let device = w.device();
    Tensor::from_data(w.transpose().into_data(), &device)
}

fn put<B: Backend, const D: usize>(out: &mut TensorMap, name: String, t: &Tensor<B, D>) {
    let data = t.to_data().convert::<f32>();
    out.insert(name, (data.shape.to_vec(), data.to_vec::<f32>().expect("converted to f32")));
}

/// Layer norm over the last axis, with the biased variance, as PyTorch.
#[derive(Clone, Debug)]
struct LayerNorm<B: Backend> {
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        layer_norm(x, self.weight.clone(), self.bias.clone(), self.eps)
    }

    fn save(&self, name: &str, out: &mut TensorMap) {
        put(out, format!("{name}.weight"), &self.weight);
        put(out, format!("{name}.bias"), &self.bias);
    }
}

/// Layer norm over the last axis of [B, T, D], with weight and bias of size D (fused on the
/// CPU backend: [`crate::layers::layer_norm()`]).
pub(crate) fn layer_norm<B: Backend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, 3> {
    crate::layers::layer_norm(x, weight, bias, eps)
}

/// `x ⊙ λ` with λ broadcast over the tokens; the identity without layer scale (ViT).
fn scale<B: Backend>(x: Tensor<B, 3>, lambda: &Option<Tensor<B, 1>>) -> Tensor<B, 3> {
    match lambda {
        Some(l) => x * l.clone().reshape([1, 1, l.dims()[0]]),
        None => x,
    }
}

/// A projection `z = x W + b`: frozen, or with a trainable low-rank adapter on the frozen W.
#[derive(Clone, Debug)]
// Burn parameters make a LowRankLinear large; a network holds one per layer, built once.
#[allow(clippy::large_enum_variant)]
pub enum Projection<B: Backend> {
    /// The pretrained W, not trained.
    Frozen(DenseLinear<B>),
    /// `x W0 + x U S Vᵀ + b`, trained by an integrator.
    Adapted(LowRankLinear<B>),
}

impl<B: Backend> Projection<B> {
    /// Applies the projection to every token, in the frozen weight's float type: x is cast to
    /// it and so is the output. An adapter's low-rank part runs in its factors' type (the
    /// casts at the adapter's boundary, [`LowRankLinear::forward`]).
    ///
    /// # Shapes
    /// - x: [batch, tokens, n]
    /// - output: [batch, tokens, m]
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, n] = x.dims();
        let (x, dtype) = (x.reshape([b * t, n]), self.dtype());
        let z = match self {
            Projection::Frozen(l) => l.forward(x.cast(dtype)),
            Projection::Adapted(l) => l.forward(x).cast(dtype),
        };
        let m = z.dims()[1];
        z.reshape([b, t, m])
    }

    /// The float type of the frozen weight (of an adapter's base W0): the projection's.
    pub fn dtype(&self) -> DType {
        match self {
            Projection::Frozen(l) => l.weight().dtype(),
            Projection::Adapted(l) => l.base().map_or(l.u().dtype(), |w0| w0.dtype()),
        }
    }

    /// Stores the frozen weight and bias (an adapter's W0 only) in `dtype`.
    fn cast_frozen(&mut self, dtype: FloatDType) -> Result<()> {
        match self {
            Projection::Frozen(l) => *l = cast_dense(l, dtype)?,
            Projection::Adapted(l) => l.cast_base(dtype),
        }
        Ok(())
    }

    /// (n, m).
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Projection::Frozen(l) => (l.weight().dims()[0], l.weight().dims()[1]),
            Projection::Adapted(l) => (l.n(), l.m()),
        }
    }

    /// The bias (an adapter's own, which it trains).
    pub fn bias(&self) -> Option<&Tensor<B, 1>> {
        match self {
            Projection::Frozen(l) => l.bias(),
            Projection::Adapted(l) => l.bias(),
        }
    }

    /// The effective n×m weight (`W0 + U S Vᵀ` for an adapter) and the bias.
    pub fn merged(&self) -> (Tensor<B, 2>, Option<Tensor<B, 1>>) {
        match self {
            Projection::Frozen(l) => (l.weight().clone(), l.bias().cloned()),
            Projection::Adapted(l) => l.merge(),
        }
    }

    /// Writes `{name}.weight` ([m, n], PyTorch's layout) and `{name}.bias`; adapters folded in.
    fn save(&self, name: &str, out: &mut TensorMap) {
        let (w, b) = self.merged();
        put(out, format!("{name}.weight"), &w.transpose());
        if let Some(b) = b {
            put(out, format!("{name}.bias"), &b);
        }
    }
}

/// `l` with its weight and bias stored in `dtype`.
fn cast_dense<B: Backend>(l: &DenseLinear<B>, dtype: FloatDType) -> Result<DenseLinear<B>> {
    DenseLinear::from_weights(l.weight().clone().cast(dtype), l.bias().map(|b| b.clone().cast(dtype)))
}

/// Patch embedding, CLS token and position embeddings.
#[derive(Clone, Debug)]
struct Embeddings<B: Backend> {
    /// [1, 1, D].
    cls_token: Tensor<B, 3>,
    /// [1, 1 + g², D], for the stored g×g grid.
    position_embeddings: Tensor<B, 3>,
    /// The conv kernel [D, C, p, p] flattened to [D, C·p·p] and transposed, and its bias.
    patch: DenseLinear<B>,
    patch_size: usize,
    grid: usize,
}

impl<B: Backend> Embeddings<B> {
    const CLS: &'static str = "embeddings.cls_token";
    const POSITION: &'static str = "embeddings.position_embeddings";
    const PATCH: &'static str = "embeddings.patch_embeddings.projection";

    fn new(cfg: &ViTConfig, prefix: &str, w: &mut Weights<B>) -> Result<Self> {
        let (d, c, p, g) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size, cfg.grid());
        let kernel = w.tensor(
            &format!("{prefix}{}.weight", Self::PATCH),
            [d, c, p, p],
            Init { mean: 0.0, std: 1.0 / ((c * p * p) as f64).sqrt() },
        );
        let bias = w.tensor(&format!("{prefix}{}.bias", Self::PATCH), [d], SMALL);
        Ok(Self {
            cls_token: w.tensor(&format!("{prefix}{}", Self::CLS), [1, 1, d], SMALL),
            position_embeddings: w.tensor(&format!("{prefix}{}", Self::POSITION), [1, 1 + g * g, d], SMALL),
            patch: DenseLinear::from_weights(transposed(kernel.reshape([d, c * p * p])), Some(bias))?,
            patch_size: p,
            grid: g,
        })
    }

    fn save(&self, prefix: &str, out: &mut TensorMap) {
        let [cpp, d] = self.patch.weight().dims();
        let p = self.patch_size;
        let kernel = self.patch.weight().clone().transpose().reshape([d, cpp / (p * p), p, p]);
        put(out, format!("{prefix}{}.weight", Self::PATCH), &kernel);
        if let Some(b) = self.patch.bias() {
            put(out, format!("{prefix}{}.bias", Self::PATCH), b);
        }
        put(out, format!("{prefix}{}", Self::CLS), &self.cls_token);
        put(out, format!("{prefix}{}", Self::POSITION), &self.position_embeddings);
    }

    /// [B, C, H, W] → [B, 1 + N, D].
    fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, c, h, w] = images.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        // A conv with stride = kernel = p: every patch flattened in the kernel's (c, i, j) order,
        // then one matmul. Like the conv, it drops the last h mod p rows and w mod p columns.
        let patches = images
            .narrow(2, 0, gh * p)
            .narrow(3, 0, gw * p)
            .reshape([b, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b * gh * gw, c * p * p]);
        // The patch matmul in the frozen weight's type, the tokens in the embeddings'.
        let patches = self.patch.forward(patches.cast(self.patch.weight().dtype()));
        let patches = patches.cast(self.cls_token.dtype());
        let d = patches.dims()[1];
        let tokens =
            Tensor::cat(vec![self.cls_token.clone().repeat_dim(0, b), patches.reshape([b, gh * gw, d])], 1);
        let position = if [gh, gw] == [self.grid, self.grid] {
            self.position_embeddings.clone()
        } else {
            interpolate_pos_encoding(self.position_embeddings.clone(), [self.grid, self.grid], [gh, gw])
        };
        tokens + position
    }
}

/// Resamples the patch part of position embeddings `[1, 1 + g0·g1, D]` from the `grid` g0×g1
/// to `new_grid`, keeping the CLS row: bicubic (a = −0.75) with half-pixel centres
/// (`align_corners = false`), as HF's `interpolate_pos_encoding`. Against transformers 5.17
/// in f64, whole forward passes at grids 6×5, 6×4 and 2×3 from a 4×4 grid agreed to 3e-15 for
/// ViT and 1.4e-7 for DINOv2 (which interpolates in f32).
///
/// # Panics
/// If the embeddings do not have 1 + g0·g1 rows.
#[track_caller]
pub fn interpolate_pos_encoding<B: Backend>(
    position_embeddings: Tensor<B, 3>,
    grid: [usize; 2],
    new_grid: [usize; 2],
) -> Tensor<B, 3> {
    let [_, t, d] = position_embeddings.dims();
    assert_eq!(t, 1 + grid[0] * grid[1], "position embeddings do not match the {grid:?} grid");
    let cls = position_embeddings.clone().narrow(1, 0, 1);
    // The grid as a D-channel image [1, D, g0, g1].
    let image =
        position_embeddings.narrow(1, 1, t - 1).reshape([1, grid[0], grid[1], d]).permute([0, 3, 1, 2]);
    let options = InterpolateOptions::new(InterpolateMode::Bicubic).with_align_corners(false);
    let resized = interpolate(image, new_grid, options).permute([0, 2, 3, 1]).reshape([
        1,
        new_grid[0] * new_grid[1],
        d,
    ]);
    Tensor::cat(vec![cls, resized], 1)
}

/// The tensor names of one block under `encoder.layer.{i}.`, per variant.
struct BlockKeys {
    norm1: &'static str,
    query: &'static str,
    key: &'static str,
    value: &'static str,
    attention_output: &'static str,
    layer_scale1: Option<&'static str>,
    norm2: &'static str,
    fc1: &'static str,
    fc2: &'static str,
    layer_scale2: Option<&'static str>,
}

impl Variant {
    fn block_keys(self) -> BlockKeys {
        let attention = BlockKeys {
            norm1: "layernorm_before",
            query: "attention.attention.query",
            key: "attention.attention.key",
            value: "attention.attention.value",
            attention_output: "attention.output.dense",
            layer_scale1: None,
            norm2: "layernorm_after",
            fc1: "intermediate.dense",
            fc2: "output.dense",
            layer_scale2: None,
        };
        match self {
            Variant::ViT => attention,
            Variant::Dinov2 => BlockKeys {
                norm1: "norm1",
                layer_scale1: Some("layer_scale1.lambda1"),
                norm2: "norm2",
                fc1: "mlp.fc1",
                fc2: "mlp.fc2",
                layer_scale2: Some("layer_scale2.lambda1"),
                ..attention
            },
        }
    }

    /// The HF module name of `target` inside a block (`attention.attention.query`, `mlp.fc1`, …):
    /// peft's module names are `{prefix}encoder.layer.{i}.{this}`.
    pub fn module_key(self, target: AdapterTarget) -> &'static str {
        let k = self.block_keys();
        match target {
            AdapterTarget::Query => k.query,
            AdapterTarget::Key => k.key,
            AdapterTarget::Value => k.value,
            AdapterTarget::AttentionOutput => k.attention_output,
            AdapterTarget::MlpFc1 => k.fc1,
            AdapterTarget::MlpFc2 => k.fc2,
        }
    }

    /// The backbone's attribute in transformers' classification model
    /// (`ViTForImageClassification.vit`, `Dinov2ForImageClassification.dinov2`), with its dot.
    pub fn classifier_prefix(self) -> &'static str {
        match self {
            Variant::ViT => "vit.",
            Variant::Dinov2 => "dinov2.",
        }
    }

    /// The prefix [`ViT::random`] uses: that of `ViTForImageClassification` and `Dinov2Model`.
    fn default_prefix(self) -> &'static str {
        match self {
            Variant::ViT => "vit.",
            Variant::Dinov2 => "",
        }
    }
}

/// Multi-head self-attention, `softmax(Q Kᵀ / √d_h) V` per head, then the output projection.
#[derive(Clone, Debug)]
struct SelfAttention<B: Backend> {
    query: Projection<B>,
    key: Projection<B>,
    value: Projection<B>,
    output: Projection<B>,
    num_heads: usize,
    kernel: Attention,
}

impl<B: Backend> SelfAttention<B> {
    /// [B, T, D] → [B, T, D], in the projections' float type; an explicit softmax runs in
    /// `softmax_dtype`.
    fn forward(&self, x: Tensor<B, 3>, softmax_dtype: DType) -> Tensor<B, 3> {
        // Head j owns columns j·d_h..(j+1)·d_h of Q, K and V: [B, T, D] → [B, H, T, d_h]
        // (contiguous copies on the CPU backend: `crate::layers::heads`).
        let heads = |p: &Projection<B>| split_heads(p.forward(x.clone()), self.num_heads);
        let (q, k, v) = (heads(&self.query), heads(&self.key), heads(&self.value));
        let context = merge_heads(attend(q, k, v, self.kernel, softmax_dtype));
        self.output.forward(context)
    }
}

/// `softmax(Q Kᵀ / √d_h) V` per head, [B, H, T, d_h] each, by `kernel`. Both kernels compute
/// the same function. The fused one runs the backend's kernel, so the [B, H, T, T] scores
/// never leave it; on the training backends it is also differentiable there
/// ([`attention::fused`]: the backward recomputes the probabilities block by block instead of
/// storing them). The explicit softmax runs in `softmax_dtype` (f32 when Q, K, V are bf16, as
/// the fused CPU kernel and flash attention accumulate in f32).
pub(crate) fn attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    kernel: Attention,
    softmax_dtype: DType,
) -> Tensor<B, 4> {
    match kernel {
        // The default scale of the op is 1/√d_h, d_h the last axis of Q.
        Attention::Fused => attention::fused(q, k, v),
        Attention::Explicit => {
            // A product with 1/√d_h, not a division: Burn 0.21's backward of `div_scalar`
            // rounds the divisor to f32, which f64 gradient tests would see. The softmax applies
            // it (fused on the CPU backend: `crate::layers::softmax`).
            let d_h = q.dims()[3];
            let scores = q.matmul(k.swap_dims(2, 3)).cast(softmax_dtype);
            // Each query's weights over the keys (the last axis) sum to one.
            let dtype = v.dtype();
            softmax(scores, 1.0 / (d_h as f64).sqrt()).cast(dtype).matmul(v)
        }
    }
}

/// A pre-norm transformer block: `x + λ1 ⊙ Attn(LN1 x)`, then `+ λ2 ⊙ MLP(LN2 ·)`.
#[derive(Clone, Debug)]
struct Block<B: Backend> {
    norm1: LayerNorm<B>,
    attention: SelfAttention<B>,
    layer_scale1: Option<Tensor<B, 1>>,
    norm2: LayerNorm<B>,
    fc1: Projection<B>,
    fc2: Projection<B>,
    layer_scale2: Option<Tensor<B, 1>>,
}

impl<B: Backend> Block<B> {
    fn new(cfg: &ViTConfig, prefix: &str, w: &mut Weights<B>) -> Result<Self> {
        let (d, i, eps, k) =
            (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps, cfg.variant.block_keys());
        let name = |key: &str| format!("{prefix}{key}");
        let lambda = Init { mean: cfg.layerscale_value, std: 0.1 * cfg.layerscale_value };
        Ok(Self {
            norm1: w.layer_norm(&name(k.norm1), d, eps),
            attention: SelfAttention {
                query: w.linear(&name(k.query), d, d, cfg.qkv_bias)?,
                key: w.linear(&name(k.key), d, d, cfg.qkv_bias)?,
                value: w.linear(&name(k.value), d, d, cfg.qkv_bias)?,
                output: w.linear(&name(k.attention_output), d, d, true)?,
                num_heads: cfg.num_attention_heads,
                kernel: Attention::default(),
            },
            layer_scale1: k.layer_scale1.map(|key| w.tensor(&name(key), [d], lambda)),
            norm2: w.layer_norm(&name(k.norm2), d, eps),
            fc1: w.linear(&name(k.fc1), d, i, true)?,
            fc2: w.linear(&name(k.fc2), i, d, true)?,
            layer_scale2: k.layer_scale2.map(|key| w.tensor(&name(key), [d], lambda)),
        })
    }

    fn save(&self, keys: &BlockKeys, prefix: &str, out: &mut TensorMap) {
        let name = |key: &str| format!("{prefix}{key}");
        self.norm1.save(&name(keys.norm1), out);
        let a = &self.attention;
        let projections = [
            (keys.query, &a.query),
            (keys.key, &a.key),
            (keys.value, &a.value),
            (keys.attention_output, &a.output),
            (keys.fc1, &self.fc1),
            (keys.fc2, &self.fc2),
        ];
        for (key, p) in projections {
            p.save(&name(key), out);
        }
        self.norm2.save(&name(keys.norm2), out);
        for (key, lambda) in
            [(keys.layer_scale1, &self.layer_scale1), (keys.layer_scale2, &self.layer_scale2)]
        {
            if let (Some(key), Some(lambda)) = (key, lambda) {
                put(out, name(key), lambda);
            }
        }
    }

    /// The residual stream x, the norms and the layer scales keep x's float type; the
    /// projections, the attention and GELU run in the frozen weights' (as bf16 autocast does).
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let (residual, frozen) = (x.dtype(), self.fc1.dtype());
        let attention = self.attention.forward(self.norm1.forward(x.clone()).cast(frozen), residual);
        let x = x + scale(attention.cast(residual), &self.layer_scale1);
        let mlp = self.fc2.forward(gelu(self.fc1.forward(self.norm2.forward(x.clone()).cast(frozen))));
        x + scale(mlp.cast(residual), &self.layer_scale2)
    }

    fn projection(&self, target: AdapterTarget) -> &Projection<B> {
        match target {
            AdapterTarget::Query => &self.attention.query,
            AdapterTarget::Key => &self.attention.key,
            AdapterTarget::Value => &self.attention.value,
            AdapterTarget::AttentionOutput => &self.attention.output,
            AdapterTarget::MlpFc1 => &self.fc1,
            AdapterTarget::MlpFc2 => &self.fc2,
        }
    }

    /// The six projections in [`AdapterTarget::ALL`]'s order.
    fn projections_mut(&mut self) -> [&mut Projection<B>; 6] {
        let a = &mut self.attention;
        [&mut a.query, &mut a.key, &mut a.value, &mut a.output, &mut self.fc1, &mut self.fc2]
    }
}

/// The ViT / DINOv2 backbone: images in, CLS features out.
#[derive(Clone, Debug)]
pub struct ViT<B: Backend> {
    config: ViTConfig,
    /// The file's name prefix (`vit.`, `dinov2.` or none), kept so `save` writes it back.
    prefix: String,
    embeddings: Embeddings<B>,
    layers: Vec<Block<B>>,
    layernorm: LayerNorm<B>,
}

impl<B: Backend> ViT<B> {
    fn build(config: ViTConfig, prefix: &str, w: &mut Weights<B>) -> Result<Self> {
        config.validate()?;
        let embeddings = Embeddings::new(&config, prefix, w)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Block::new(&config, &format!("{prefix}encoder.layer.{i}."), w))
            .collect::<Result<_>>()?;
        let layernorm =
            w.layer_norm(&format!("{prefix}layernorm"), config.hidden_size, config.layer_norm_eps);
        Ok(Self { config, prefix: prefix.to_string(), embeddings, layers, layernorm })
    }

    /// A model with every tensor random (values rounded to f32, so that `save` and `load`
    /// round-trip exactly): linear weights N(0, 1/n), norm scales and layer scales near their
    /// usual values, biases and embeddings N(0, 0.1²). For tests and benchmarks, not training
    /// from scratch.
    pub fn random(config: ViTConfig, rng: &mut StdRng, device: &B::Device) -> Result<Self> {
        let prefix = config.variant.default_prefix();
        Self::build(config, prefix, &mut Weights::new(Source::Random(rng), device))
    }

    /// Loads HuggingFace weights (`model.safetensors`, f32 or f64) with their `config.json`.
    ///
    /// Every expected name and shape is checked; one [`Error::BadFile`] names the file and
    /// lists all missing, unexpected, mis-shaped and non-finite tensors.
    pub fn load(
        safetensors: impl AsRef<Path>,
        config_json: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<Self> {
        let config = ViTConfig::from_file(config_json)?;
        let (tensors, _) = read_safetensors(safetensors.as_ref())?;
        Self::from_tensors(config, tensors, safetensors.as_ref(), device)
    }

    /// [`ViT::load`] from tensors already in memory (HF names); `path` names them in errors.
    pub fn from_tensors(
        config: ViTConfig,
        tensors: TensorMap,
        path: &Path,
        device: &B::Device,
    ) -> Result<Self> {
        let prefix = ["vit.", "dinov2.", ""]
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}{}", Embeddings::<B>::CLS)))
            .unwrap_or(config.variant.default_prefix());
        let expected = config.describe();
        let mut w = Weights::new(Source::File { tensors, path }, device);
        let model = Self::build(config, prefix, &mut w)?;
        w.finish(prefix, &expected)?;
        Ok(model)
    }

    /// The weights under HF names in PyTorch's layout, adapters folded into their base.
    pub fn to_tensors(&self) -> TensorMap {
        let mut out = TensorMap::new();
        let prefix = &self.prefix;
        self.embeddings.save(prefix, &mut out);
        let keys = self.config.variant.block_keys();
        for (i, block) in self.layers.iter().enumerate() {
            block.save(&keys, &format!("{prefix}encoder.layer.{i}."), &mut out);
        }
        self.layernorm.save(&format!("{prefix}layernorm"), &mut out);
        out
    }

    /// Writes [`ViT::to_tensors`] as safetensors (atomically); with [`ViTConfig::to_json`] as
    /// `config.json` next to it, [`ViT::load`] and transformers' `ViTModel` / `Dinov2Model`
    /// read it (checked with transformers 5.17).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let metadata = [("format".to_string(), "pt".to_string())].into();
        write_safetensors(path.as_ref(), &self.to_tensors(), metadata)
    }

    /// The architecture.
    pub fn config(&self) -> &ViTConfig {
        &self.config
    }

    /// Computes every block's attention with `kernel` from now on (the default is
    /// [`Attention::Explicit`]); the outputs agree to round-off.
    pub fn set_attention(&mut self, kernel: Attention) {
        for block in &mut self.layers {
            block.attention.kernel = kernel;
        }
    }

    /// Stores the frozen weights (projections, adapters' W0, the patch embedding) in the type
    /// `precision` names (`F32`: the backend's float type); the backbone then computes in it
    /// ([`Precision`]). Norms, layer scales, embeddings and everything an integrator trains
    /// keep the backend's float type. Going back from bf16 keeps the bf16-rounded weights.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        let float = FloatDType::from(self.layernorm.weight.dtype());
        let dtype = precision.frozen_dtype().unwrap_or(float);
        self.embeddings.patch = cast_dense(&self.embeddings.patch, dtype)?;
        for p in self.layers.iter_mut().flat_map(|b| b.projections_mut()) {
            p.cast_frozen(dtype)?;
        }
        Ok(())
    }

    /// The projection `target` of block `layer`, if there is such a block.
    pub fn projection(&self, layer: usize, target: AdapterTarget) -> Option<&Projection<B>> {
        self.layers.get(layer).map(|b| b.projection(target))
    }

    /// The projection `target` of block `layer`, to replace it (e.g. by an imported adapter).
    pub fn projection_mut(&mut self, layer: usize, target: AdapterTarget) -> Option<&mut Projection<B>> {
        let j = AdapterTarget::ALL.iter().position(|&t| t == target)?;
        let block = self.layers.get_mut(layer)?;
        block.projections_mut().into_iter().nth(j)
    }

    /// Puts a rank-`rank` adapter (S = 0, so the outputs do not change) on the projections
    /// `targets` of every block. Checks first, so an error leaves the model unchanged: the rank
    /// must fit every target, and no target may have an adapter already.
    pub fn add_adapters(&mut self, targets: &[AdapterTarget], rank: usize, rng: &mut StdRng) -> Result<()> {
        let chosen: Vec<usize> = (0..6).filter(|&j| targets.contains(&AdapterTarget::ALL[j])).collect();
        for (i, block) in self.layers.iter().enumerate() {
            for &j in &chosen {
                let target = AdapterTarget::ALL[j];
                let p = block.projection(target);
                if matches!(p, Projection::Adapted(_)) {
                    let what = format!("`{}` of layer {i} already has an adapter", target.name());
                    return Err(Error::Unsupported(what));
                }
                let (n, m) = p.shape();
                if rank == 0 || rank > n.min(m) {
                    let expected = format!("1 ≤ rank ≤ {} (`{}` is {n}×{m})", n.min(m), target.name());
                    return Err(Error::config("rank", rank, &expected));
                }
            }
        }
        let float = FloatDType::from(self.layernorm.weight.dtype());
        for block in &mut self.layers {
            let projections = block.projections_mut();
            for &j in &chosen {
                let p = &mut *projections[j];
                if let Projection::Frozen(dense) = p {
                    // The bias trains, so it is kept in the float type of the factors.
                    let bias = dense.bias().map(|b| b.clone().cast(float));
                    let adapter = LowRankLinear::adapter(dense.weight().clone(), rank, bias, rng)?;
                    *p = Projection::Adapted(adapter);
                }
            }
        }
        Ok(())
    }

    /// Folds every adapter into its base (`W0 + U S Vᵀ`), leaving frozen dense projections.
    pub fn merge_adapters(&mut self) -> Result<()> {
        for p in self.layers.iter_mut().flat_map(|b| b.projections_mut()) {
            if let Projection::Adapted(l) = p {
                let (w, b) = l.merge();
                *p = Projection::Frozen(DenseLinear::from_weights(w, b)?);
            }
        }
        Ok(())
    }

    /// The adapters, by block, then in [`AdapterTarget::ALL`]'s order: what an integrator
    /// trains.
    pub fn low_rank_layers_mut(&mut self) -> Vec<&mut LowRankLinear<B>> {
        let adapters = self.layers.iter_mut().flat_map(|b| b.projections_mut());
        adapters
            .filter_map(|p| match p {
                Projection::Adapted(l) => Some(l),
                Projection::Frozen(_) => None,
            })
            .collect()
    }

    /// Every adapter with its block and target, in the order of [`ViT::low_rank_layers_mut`].
    pub fn adapters(&self) -> impl Iterator<Item = (usize, AdapterTarget, &LowRankLinear<B>)> {
        self.layers.iter().enumerate().flat_map(|(i, block)| {
            AdapterTarget::ALL.into_iter().filter_map(move |t| match block.projection(t) {
                Projection::Adapted(l) => Some((i, t, l)),
                Projection::Frozen(_) => None,
            })
        })
    }

    /// Trainable parameters of the adapters: Σ r(n + m) + r² + m (U, S, V, bias).
    pub fn adapter_params(&self) -> usize {
        self.adapters().map(|(_, _, l)| l.num_params()).sum()
    }

    /// Every token after the final layer norm (HF's `last_hidden_state`).
    ///
    /// # Shapes
    /// - images: [batch, C, H, W], any H, W ≥ p (position embeddings are interpolated)
    /// - output: [batch, 1 + ⌊H/p⌋·⌊W/p⌋, D], the CLS token first, then the patches row by row
    ///
    /// # Panics
    /// If the images do not have C channels or are smaller than one patch.
    #[track_caller]
    pub fn forward_tokens(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let [_, c, h, w] = images.dims();
        let (p, channels) = (self.config.patch_size, self.config.num_channels);
        assert!(
            c == channels && h >= p && w >= p,
            "ViT expects [batch, {channels}, ≥{p}, ≥{p}] images, got {:?}",
            images.dims()
        );
        let x = self.embeddings.forward(images);
        let x = self.layers.iter().fold(x, |x, block| block.forward(x));
        self.layernorm.forward(x)
    }

    /// The CLS features: the first token of [`ViT::forward_tokens`].
    ///
    /// # Shapes
    /// - images: [batch, C, H, W]
    /// - output: [batch, D]
    #[track_caller]
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let tokens = self.forward_tokens(images);
        let [b, _, d] = tokens.dims();
        tokens.narrow(1, 0, 1).reshape([b, d])
    }
}

/// The backbone alone as a network: its adapters train, its dense weights stay frozen.
impl<B: AutodiffBackend> Network<B> for ViT<B> {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        self.low_rank_layers_mut()
    }
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f64>;

    #[test]
    fn gelu_and_layer_norm_on_known_values() {
        let device = Default::default();
        let x = Tensor::<B, 3>::from_data([[[-1.0, 0.0, 1.0, 2.0]]], &device);
        // x·Φ(x), Φ(1) = 0.841344746068543, Φ(2) = 0.977249868051821.
        let expected = [-0.158655253931457, 0.0, 0.841344746068543, 1.954499736103642];
        let got = gelu(x.clone()).into_data().to_vec::<f64>().unwrap();
        assert!(got.iter().zip(expected).all(|(g, e)| (g - e).abs() < 1e-14), "{got:?}");
        // mean 0.5, biased variance 1.25: (x − 0.5)/√1.25 · 2 + 1.
        let norm =
            LayerNorm { weight: Tensor::full([4], 2.0, &device), bias: Tensor::ones([4], &device), eps: 0.0 };
        let got = norm.forward(x).into_data().to_vec::<f64>().unwrap();
        let expected = [-1.5f64, -0.5, 0.5, 1.5].map(|v| v / 1.25f64.sqrt() * 2.0 + 1.0);
        assert!(got.iter().zip(expected).all(|(g, e)| (g - e).abs() < 1e-14), "{got:?}");
    }

    #[test]
    fn heads_poolers_and_the_mask_token_are_ignored_other_names_are_not() {
        assert!(is_ignored("vit.pooler.dense.weight", "vit."));
        assert!(is_ignored("classifier.bias", "vit."));
        assert!(is_ignored("embeddings.mask_token", ""));
        assert!(!is_ignored("vit.encoder.layer.0.extra", "vit."));
        assert!(!is_ignored("decoder.weight", ""));
    }
}
