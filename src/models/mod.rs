//! Models, one file each, the one trait the training loop sees them through, and [`Net`]: the
//! networks `dlrt train` builds from a config (the MLP or LeNet-5).

pub mod lenet5;
pub mod mlp;
pub mod onnx;
pub mod vit;
pub mod vit_classifier;

use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    Tensor,
};

use crate::layers::{DenseLinear, LowRankLinear, Network, Precision};

pub use lenet5::LeNet5;
pub use mlp::{Layer, Mlp};
pub use vit::{ViT, ViTConfig};
pub use vit_classifier::ViTClassifier;

/// A network that classifies images: what the training loop trains and evaluates.
pub trait Classifier<B: AutodiffBackend>: Network<B> {
    /// Class scores.
    ///
    /// # Shapes
    /// - images: `[batch, C, H, W]`
    /// - output: `[batch, classes]`
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;
    /// The ranks of the low-rank layers, in [`Network::low_rank_layers`]'s order.
    fn ranks(&self) -> Vec<usize>;
    /// Compression `(of the low-rank layers, of the network)`, as the metrics record it.
    fn compression(&self) -> (f64, f64);
    /// Parameters the metrics report: what inference needs (a network trained from scratch)
    /// or what training changes (adapters and head).
    fn params(&self) -> usize;
}

/// A network `dlrt train` builds (`[model] kind`): both keep their layers as one list of
/// [`Layer`]s, which is what checkpoints store.
#[derive(Clone, Debug)]
pub enum Net<B: Backend> {
    /// The MLP.
    Mlp(Mlp<B>),
    /// LeNet-5.
    LeNet5(LeNet5<B>),
}

impl<B: Backend> Net<B> {
    /// The layers, input first (LeNet-5's convolutions as their matricised kernels).
    pub fn layers(&self) -> &[Layer<B>] {
        match self {
            Net::Mlp(n) => &n.layers,
            Net::LeNet5(n) => &n.layers,
        }
    }

    fn layers_mut(&mut self) -> &mut [Layer<B>] {
        match self {
            Net::Mlp(n) => &mut n.layers,
            Net::LeNet5(n) => &mut n.layers,
        }
    }

    /// The rank of each low-rank layer, in order.
    pub fn ranks(&self) -> Vec<usize> {
        mlp::ranks(self.layers())
    }

    /// Runs every layer's products in the type `precision` names, autocast style
    /// ([`Precision`]): parameters, optimizer state and the logits stay f32.
    pub fn set_precision(&mut self, precision: Precision) {
        for layer in self.layers_mut() {
            layer.set_autocast(precision.frozen_dtype());
        }
    }
}

impl<B: AutodiffBackend> Classifier<B> for Net<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            Net::Mlp(n) => n.logits(images),
            Net::LeNet5(n) => n.logits(images),
        }
    }
    fn ranks(&self) -> Vec<usize> {
        mlp::ranks(self.layers())
    }
    fn compression(&self) -> (f64, f64) {
        mlp::compression(self.layers())
    }
    fn params(&self) -> usize {
        self.layers().iter().map(Layer::num_params).sum()
    }
}

impl<B: AutodiffBackend> Network<B> for Net<B> {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        mlp::low_rank_layers(self.layers_mut())
    }
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        mlp::dense_layers(self.layers_mut())
    }
}
