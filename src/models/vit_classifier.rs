//! A frozen ViT backbone with low-rank adapters and a linear classification head.
//!
//! `logits = head(ViT(images)[CLS])`: what `dlrt finetune` trains. The backbone's dense
//! weights never change; an integrator trains the adapters (the low-rank layers of this
//! network) and the optimizer steps the head (its one dense layer) in the first pass of each
//! step, like the MLP's output layer.

use burn::tensor::{backend::AutodiffBackend, backend::Backend, Tensor};
use rand::rngs::StdRng;

use super::vit::ViT;
use crate::layers::AdapterTarget;
use crate::layers::{DenseLinear, LowRankLinear, Network};
use crate::Result;

/// A ViT with adapters and a classification head on its CLS features.
#[derive(Clone, Debug)]
pub struct ViTClassifier<B: Backend> {
    /// The backbone; its adapters are the trainable low-rank layers.
    pub backbone: ViT<B>,
    /// D → classes, `z = x W + b`.
    pub head: DenseLinear<B>,
    /// Parameters of the backbone as loaded (adapters excluded).
    backbone_params: usize,
}

impl<B: Backend> ViTClassifier<B> {
    /// Puts rank-`rank` adapters (S = 0) on `targets` of every block of `backbone` and a
    /// `classes`-way head with N(0, 1/D) weights and a zero bias.
    pub fn new(
        mut backbone: ViT<B>,
        targets: &[AdapterTarget],
        rank: usize,
        classes: usize,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<Self> {
        let backbone_params = backbone.to_tensors().values().map(|(_, v)| v.len()).sum();
        backbone.add_adapters(targets, rank, rng)?;
        let head = DenseLinear::random(backbone.config().hidden_size, classes, true, 1.0, rng, device);
        Ok(Self { backbone, head, backbone_params })
    }

    /// Class scores.
    ///
    /// # Shapes
    /// - images: [batch, C, H, W]
    /// - output: [batch, classes]
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head.forward(self.backbone.forward(images))
    }

    /// The adapters' ranks, by block, then in [`AdapterTarget::ALL`]'s order.
    pub fn ranks(&self) -> Vec<usize> {
        self.backbone.adapters().map(|(_, _, l)| l.rank()).collect()
    }

    /// Trainable parameters: the adapters' U, S, V and biases, plus the head.
    pub fn trainable_params(&self) -> usize {
        self.backbone.adapter_params() + self.head.num_params()
    }

    /// Parameters of the frozen backbone.
    pub fn backbone_params(&self) -> usize {
        self.backbone_params
    }
}

/// The metrics read for adapters: `ranks` are the adapters' (by block, then query, key, value,
/// …); the low-rank compression is 1 − adapter parameters / parameters of the adapted
/// projections (what the adapters save against fully fine-tuning those projections), the
/// network's is 1 − trainable / backbone parameters; `params` counts the trainable parameters.
impl<B: AutodiffBackend> super::Classifier<B> for ViTClassifier<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }
    fn ranks(&self) -> Vec<usize> {
        ViTClassifier::ranks(self)
    }
    fn compression(&self) -> (f64, f64) {
        let (mut low, mut dense) = (0usize, 0usize);
        for (_, _, l) in self.backbone.adapters() {
            let (n, m, r) = (l.n(), l.m(), l.rank());
            low += r * (n + m) + r * r;
            dense += n * m;
        }
        let trainable = self.trainable_params() as f64;
        (1.0 - low as f64 / dense.max(1) as f64, 1.0 - trainable / self.backbone_params().max(1) as f64)
    }
    fn params(&self) -> usize {
        self.trainable_params()
    }
}

impl<B: AutodiffBackend> Network<B> for ViTClassifier<B> {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        self.backbone.low_rank_layers_mut()
    }
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        vec![&mut self.head]
    }
}
