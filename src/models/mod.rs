//! Models, one file each, and the one trait the training loop sees them through.

pub mod mlp;
pub mod onnx;
pub mod vit;
pub mod vit_classifier;

use burn::tensor::{backend::AutodiffBackend, Tensor};

use crate::layers::Network;

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
