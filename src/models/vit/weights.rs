//! The backbone's tensors by their safetensors names: read from a checkpoint (each name taken
//! once, so that what is left over is reported) or drawn at random for tests and benchmarks.

use std::path::Path;

use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use super::{LayerNorm, Projection, Variant};
use crate::io::TensorMap;
use crate::layers::{AdapterTarget, DenseLinear};
use crate::{Error, Result};

/// Where the tensors of a model come from: a checkpoint, or random draws for tests.
pub(super) enum Source<'a> {
    /// Tensors by name; each is removed when taken, so what is left at the end is unexpected.
    File {
        tensors: TensorMap,
        path: &'a Path,
    },
    Random(&'a mut StdRng),
}

/// How [`ViT::random`] draws a tensor: mean + std · N(0, 1).
#[derive(Clone, Copy)]
pub(super) struct Init {
    pub(super) mean: f64,
    pub(super) std: f64,
}

/// Weights, biases, norm shifts: small but non-zero, so that a test sees each of them.
pub(super) const SMALL: Init = Init { mean: 0.0, std: 0.1 };
/// Norm scales near 1.
pub(super) const NEAR_ONE: Init = Init { mean: 1.0, std: 0.1 };

/// Hands out tensors by name, as candle's `VarBuilder`: each block asks for its own names, so a
/// name is spelled where its layer is built. Problems are collected, not returned at the first
/// one, so that one error can list all of them.
pub(super) struct Weights<'a, B: Backend> {
    source: Source<'a>,
    device: &'a B::Device,
    missing: Vec<String>,
    misshaped: Vec<String>,
    non_finite: Vec<String>,
}

impl<'a, B: Backend> Weights<'a, B> {
    pub(super) fn new(source: Source<'a>, device: &'a B::Device) -> Self {
        Self { source, device, missing: vec![], misshaped: vec![], non_finite: vec![] }
    }

    pub(super) fn tensor<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Tensor<B, D> {
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
    pub(super) fn linear(&mut self, name: &str, n: usize, m: usize, bias: bool) -> Result<Projection<B>> {
        let weight_init = Init { mean: 0.0, std: 1.0 / (n as f64).sqrt() };
        let w = self.tensor(&format!("{name}.weight"), [m, n], weight_init);
        let b = bias.then(|| self.tensor(&format!("{name}.bias"), [m], SMALL));
        Ok(Projection::Frozen(DenseLinear::from_weights(transposed(w), b)?))
    }

    pub(super) fn layer_norm(&mut self, name: &str, d: usize, eps: f64) -> LayerNorm<B> {
        let weight = self.tensor(&format!("{name}.weight"), [d], NEAR_ONE);
        LayerNorm { weight, bias: self.tensor(&format!("{name}.bias"), [d], SMALL), eps }
    }

    /// One error naming the file and every missing, unexpected, mis-shaped or non-finite tensor.
    pub(super) fn finish(self, prefix: &str, expected: &str) -> Result<()> {
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
pub(super) fn is_ignored(name: &str, prefix: &str) -> bool {
    let rest = name.strip_prefix(prefix).unwrap_or(name);
    rest == "embeddings.mask_token" || rest.starts_with("pooler.") || name.starts_with("classifier.")
}

/// `wᵀ`, stored row-major: the copy is made once, on load, not by every matmul with a strided view.
pub(super) fn transposed<B: Backend>(w: Tensor<B, 2>) -> Tensor<B, 2> {
    let device = w.device();
    Tensor::from_data(w.transpose().into_data(), &device)
}

pub(super) fn put<B: Backend, const D: usize>(out: &mut TensorMap, name: String, t: &Tensor<B, D>) {
    let data = t.to_data().convert::<f32>();
    out.insert(name, (data.shape.to_vec(), data.to_vec::<f32>().expect("converted to f32")));
}

/// The tensor names of one block under `encoder.layer.{i}.`, per variant.
pub(super) struct BlockKeys {
    pub(super) norm1: &'static str,
    pub(super) query: &'static str,
    pub(super) key: &'static str,
    pub(super) value: &'static str,
    pub(super) attention_output: &'static str,
    pub(super) layer_scale1: Option<&'static str>,
    pub(super) norm2: &'static str,
    pub(super) fc1: &'static str,
    pub(super) fc2: &'static str,
    pub(super) layer_scale2: Option<&'static str>,
}

impl Variant {
    pub(super) fn block_keys(self) -> BlockKeys {
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
    pub(super) fn default_prefix(self) -> &'static str {
        match self {
            Variant::ViT => "vit.",
            Variant::Dinov2 => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_poolers_and_the_mask_token_are_ignored_other_names_are_not() {
        assert!(is_ignored("vit.pooler.dense.weight", "vit."));
        assert!(is_ignored("classifier.bias", "vit."));
        assert!(is_ignored("embeddings.mask_token", ""));
        assert!(!is_ignored("vit.encoder.layer.0.extra", "vit."));
        assert!(!is_ignored("decoder.weight", ""));
    }
}
