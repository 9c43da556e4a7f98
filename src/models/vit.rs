//! A vision transformer backbone (ViT, DINOv2) whose projections can carry low-rank adapters.
//!
//! ViT (Dosovitskiy et al., "An Image is Worth 16x16 Words", arXiv:2010.11929) cuts an image
//! into p×p patches, embeds each patch linearly, prepends a learned CLS token, adds position
//! embeddings and runs pre-norm transformer blocks; the CLS token after the final layer norm is
//! the image's feature vector. DINOv2 (Oquab et al., arXiv:2304.07193) is the same network with
//! a learned per-channel *layer scale* λ on both residual branches. Both follow HuggingFace's
//! `ViTModel` and `Dinov2Model` (`modeling_vit.py`, `modeling_dinov2.py`), whose `config.json`
//! and safetensors names this module reads and writes. Its files, in reading order: `config`,
//! `weights` (the safetensors names), `projection`, `embeddings`, `block`, then [`ViT`] here.
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

mod block;
mod config;
mod embeddings;
mod projection;
mod weights;

use std::path::Path;

use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    FloatDType, Tensor,
};
use rand::rngs::StdRng;

use crate::io::{read_safetensors, write_safetensors, TensorMap};
use crate::layers::{cast, AdapterTarget, Attention, DenseLinear, LowRankLinear, Network, Precision};
use crate::{Error, Result};

pub use config::{Variant, ViTConfig};
pub use embeddings::interpolate_pos_encoding;
pub use projection::Projection;

pub(crate) use block::{attend, layer_norm};
use block::{Block, LayerNorm};
use embeddings::Embeddings;
use projection::cast_dense;
use weights::{Source, Weights};

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
        // Named first: a missing weights file is the likelier slip, and config.json is found
        // next to it.
        let weights = safetensors.as_ref();
        if !weights.is_file() {
            let what = if weights.is_dir() { "a folder, not a file" } else { "no such file" };
            return Err(Error::not_found(weights, format!("{what}: the backbone's weights (safetensors)")));
        }
        let config = ViTConfig::from_file(config_json)?;
        let (tensors, _) = read_safetensors(weights)?;
        Self::from_tensors(config, tensors, weights, device)
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
        if self.config.variant == Variant::Dinov2 {
            // transformers' Dinov2Model holds one (only masked-image pre-training reads it),
            // starts it at zero and warns when a file lacks it; `load` ignores it.
            let d = self.config.hidden_size;
            out.insert(format!("{prefix}embeddings.mask_token"), (vec![1, d], vec![0.0; d]));
        }
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

    /// Refuses a backbone for other than 3-channel images: fine-tuning and prediction feed it
    /// RGB (`config_json` is the file the error names).
    pub fn require_rgb(&self, config_json: &Path) -> Result<()> {
        match self.config.num_channels {
            3 => Ok(()),
            c => Err(Error::bad_file(config_json, "num_channels", "3 (images are fed as RGB)", c)),
        }
    }

    /// Computes every block's attention with `kernel` from now on (the default is
    /// [`Attention::Explicit`]); the outputs agree to round-off.
    pub fn set_attention(&mut self, kernel: Attention) {
        for block in &mut self.layers {
            block.set_attention(kernel);
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
                    let bias = dense.bias().map(|b| cast(b.clone(), float));
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
