//! Models, one file each.

pub mod mlp;
pub mod onnx;
pub mod vit;
pub mod vit_classifier;

pub use mlp::{Init, Layer, Mlp};
pub use vit::{AdapterTarget, ViT, ViTConfig};
pub use vit_classifier::ViTClassifier;
