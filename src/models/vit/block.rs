//! One pre-norm transformer block: layer norm, multi-head self-attention, MLP, layer scale.

use burn::tensor::{backend::Backend, DType, Tensor};

use super::weights::{put, BlockKeys, Init, Weights};
use super::{Projection, ViTConfig};
use crate::io::TensorMap;
use crate::layers::{attention, cast, gelu, matmul, permute_contiguous, softmax, AdapterTarget, Attention};
use crate::Result;

/// Layer norm over the last axis, with the biased variance, as PyTorch.
#[derive(Clone, Debug)]
pub(super) struct LayerNorm<B: Backend> {
    pub(super) weight: Tensor<B, 1>,
    pub(super) bias: Tensor<B, 1>,
    pub(super) eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    pub(super) fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        layer_norm(x, self.weight.clone(), self.bias.clone(), self.eps)
    }

    pub(super) fn save(&self, name: &str, out: &mut TensorMap) {
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
        let [b, t, d] = x.dims();
        let (h, d_h) = (self.num_heads, d / self.num_heads);
        // Head j owns columns j·d_h..(j+1)·d_h of Q, K and V: [B, T, D] → [B, H, T, d_h]. The
        // permutations copy (and so do their gradients), so that no op walks a strided view.
        let heads = |p: &Projection<B>| {
            permute_contiguous(p.forward(x.clone()).reshape([b, t, h, d_h]), [0, 2, 1, 3])
        };
        let (q, k, v) = (heads(&self.query), heads(&self.key), heads(&self.value));
        let context = attend(q, k, v, self.kernel, softmax_dtype);
        let context = permute_contiguous(context, [0, 2, 1, 3]).reshape([b, t, d]);
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
            let scores = cast(matmul(q, k.swap_dims(2, 3)), softmax_dtype);
            // Each query's weights over the keys (the last axis) sum to one.
            let dtype = v.dtype();
            matmul(cast(softmax(scores, 1.0 / (d_h as f64).sqrt()), dtype), v)
        }
    }
}

/// A pre-norm transformer block: `x + λ1 ⊙ Attn(LN1 x)`, then `+ λ2 ⊙ MLP(LN2 ·)`.
#[derive(Clone, Debug)]
pub(super) struct Block<B: Backend> {
    norm1: LayerNorm<B>,
    attention: SelfAttention<B>,
    layer_scale1: Option<Tensor<B, 1>>,
    norm2: LayerNorm<B>,
    fc1: Projection<B>,
    fc2: Projection<B>,
    layer_scale2: Option<Tensor<B, 1>>,
}

impl<B: Backend> Block<B> {
    pub(super) fn new(cfg: &ViTConfig, prefix: &str, w: &mut Weights<B>) -> Result<Self> {
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

    pub(super) fn save(&self, keys: &BlockKeys, prefix: &str, out: &mut TensorMap) {
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
    /// The norms' outputs go to the projections in x's type: each frozen product casts them
    /// (a cast its backward does not keep), and the adapters, which keep their input for
    /// their factors' gradients, share the one norm output instead of keeping a copy each.
    pub(super) fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let residual = x.dtype();
        let attention = self.attention.forward(self.norm1.forward(x.clone()), residual);
        let x = x + scale(cast(attention, residual), &self.layer_scale1);
        let mlp = self.fc2.forward(gelu(self.fc1.forward(self.norm2.forward(x.clone()))));
        x + scale(cast(mlp, residual), &self.layer_scale2)
    }

    pub(super) fn projection(&self, target: AdapterTarget) -> &Projection<B> {
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
    /// Computes the attention with `kernel` from now on.
    pub(super) fn set_attention(&mut self, kernel: Attention) {
        self.attention.kernel = kernel;
    }

    pub(super) fn projections_mut(&mut self) -> [&mut Projection<B>; 6] {
        let a = &mut self.attention;
        [&mut a.query, &mut a.key, &mut a.value, &mut a.output, &mut self.fc1, &mut self.fc2]
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
}
